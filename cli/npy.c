/* SPDX-License-Identifier: MIT */
/* Strict .npy float32 reader and writer (see npy.h).
 *
 * Format (numpy.lib.format): the magic "\x93NUMPY", a major and minor
 * version byte, the header length (2 bytes little-endian for version 1.0, 4
 * bytes for 2.0 and 3.0), then that many bytes of a Python dict literal
 * {'descr': ..., 'fortran_order': ..., 'shape': (...), } padded with spaces
 * and ended by a newline, then the raw data. Every field is checked before a
 * size taken from the file is used, so a hostile file can make us reject it
 * but never read out of bounds or allocate more than the file holds. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include "npy.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NPY_MAGIC "\x93NUMPY"
#define NPY_MAGIC_LEN 6
/* Writers align the start of the data to this many bytes, as NumPy does. */
#define NPY_ALIGN 64
/* Longest piece of a bad header quoted back in an error message. */
#define NPY_QUOTE_MAX 24

typedef struct npy_header {
    int ndim;
    int64_t shape[DA_NPY_MAX_DIMS];
    size_t count;
    size_t data_offset;
} npy_header;

/* Cursor over the header's dict text; err is filled on the first failure. */
typedef struct npy_parser {
    const char *p;
    const char *end;
    char *err;
    size_t err_size;
} npy_parser;

int da_npy_fail(char *err, size_t err_size, const char *format, ...)
{
    if (err != NULL && err_size > 0) {
        va_list ap;
        va_start(ap, format);
        vsnprintf(err, err_size, format, ap);
        va_end(ap);
    }
    return -1;
}

/* A failure for want of memory, which is not the file's fault. */
#ifdef __GNUC__
__attribute__((format(printf, 3, 4)))
#endif
static int
no_memory(char *err, size_t err_size, const char *format, ...)
{
    if (err != NULL && err_size > 0) {
        va_list ap;
        va_start(ap, format);
        vsnprintf(err, err_size, format, ap);
        va_end(ap);
    }
    return DA_NPY_NO_MEMORY;
}

static int host_is_little_endian(void)
{
    const uint16_t one = 1;
    unsigned char first;
    memcpy(&first, &one, 1);
    return first == 1;
}

/* Files are little-endian; swap each 4-byte word in place on other hosts. */
static void to_or_from_little_endian(void *data, size_t count)
{
    if (host_is_little_endian())
        return;
    unsigned char *b = data;
    for (size_t i = 0; i < count; i++, b += 4) {
        unsigned char t = b[0];
        b[0] = b[3];
        b[3] = t;
        t = b[1];
        b[1] = b[2];
        b[2] = t;
    }
}

/* Copy at most NPY_QUOTE_MAX printable characters of s[0, n) for a message. */
static void quote_text(const char *s, size_t n, char *out, size_t out_size)
{
    size_t j = 0;
    for (size_t i = 0; i < n && j + 4 < out_size && i < NPY_QUOTE_MAX; i++)
        out[j++] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
    if (n > NPY_QUOTE_MAX && j + 4 < out_size) {
        memcpy(out + j, "...", 3);
        j += 3;
    }
    out[j] = '\0';
}

static void skip_space(npy_parser *ps)
{
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
        ps->p++;
}

static int expect_char(npy_parser *ps, char c, const char *where)
{
    skip_space(ps);
    if (ps->p >= ps->end)
        return da_npy_fail(ps->err, ps->err_size, "malformed header: ended before %s", where);
    if (*ps->p != c)
        return da_npy_fail(ps->err, ps->err_size, "malformed header: expected '%c' %s, found '%c'",
                           c, where, (*ps->p >= 0x20 && *ps->p < 0x7f) ? *ps->p : '?');
    ps->p++;
    return 0;
}

/* A Python string literal without escapes; sets [*s, *s + *n). */
static int parse_string(npy_parser *ps, const char **s, size_t *n, const char *what)
{
    skip_space(ps);
    if (ps->p >= ps->end || (*ps->p != '\'' && *ps->p != '"'))
        return da_npy_fail(ps->err, ps->err_size, "malformed header: expected a string for %s",
                           what);
    const char quote = *ps->p++;
    const char *start = ps->p;
    while (ps->p < ps->end && *ps->p != quote) {
        if (*ps->p == '\\' || *ps->p == '\n')
            return da_npy_fail(ps->err, ps->err_size,
                               "malformed header: unsupported character in %s", what);
        ps->p++;
    }
    if (ps->p >= ps->end)
        return da_npy_fail(ps->err, ps->err_size, "malformed header: unterminated string in %s",
                           what);
    *s = start;
    *n = (size_t)(ps->p - start);
    ps->p++;
    return 0;
}

static int parse_descr(npy_parser *ps)
{
    skip_space(ps);
    if (ps->p < ps->end && (*ps->p == '[' || *ps->p == '{'))
        return da_npy_fail(ps->err, ps->err_size,
                           "dtype is a structured type; only float32 ('<f4') is supported");
    const char *s;
    size_t n;
    if (parse_string(ps, &s, &n, "'descr'") != 0)
        return -1;
    if (n == 3 && memcmp(s, "<f4", 3) == 0)
        return 0;
    char q[NPY_QUOTE_MAX + 8];
    quote_text(s, n, q, sizeof q);
    if (n == 3 && memcmp(s, ">f4", 3) == 0)
        return da_npy_fail(
            ps->err, ps->err_size,
            "dtype '>f4' is big-endian float32; only little-endian '<f4' is supported"
            " (convert with arr.astype('<f4'))");
    return da_npy_fail(ps->err, ps->err_size,
                       "dtype '%s' is not float32; only '<f4' is supported"
                       " (convert with arr.astype(numpy.float32))",
                       q);
}

static int parse_fortran_order(npy_parser *ps)
{
    skip_space(ps);
    const size_t left = (size_t)(ps->end - ps->p);
    if (left >= 5 && memcmp(ps->p, "False", 5) == 0) {
        ps->p += 5;
        return 0;
    }
    if (left >= 4 && memcmp(ps->p, "True", 4) == 0)
        return da_npy_fail(ps->err, ps->err_size,
                           "array is in Fortran order; only C order is supported"
                           " (convert with numpy.ascontiguousarray)");
    return da_npy_fail(ps->err, ps->err_size,
                       "malformed header: 'fortran_order' must be True or False");
}

/* One dimension: a non-negative decimal integer (an old 'L' suffix allowed). */
static int parse_dim(npy_parser *ps, int64_t *dim)
{
    skip_space(ps);
    if (ps->p < ps->end && *ps->p == '-')
        return da_npy_fail(ps->err, ps->err_size, "negative dimension in 'shape'");
    if (ps->p >= ps->end || *ps->p < '0' || *ps->p > '9')
        return da_npy_fail(ps->err, ps->err_size, "malformed header: 'shape' must hold integers");
    int64_t v = 0;
    while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9') {
        const int digit = *ps->p - '0';
        if (v > (INT64_MAX - digit) / 10)
            return da_npy_fail(ps->err, ps->err_size, "dimension in 'shape' is too large");
        v = v * 10 + digit;
        ps->p++;
    }
    if (ps->p < ps->end && (*ps->p == 'L' || *ps->p == 'l'))
        ps->p++;
    *dim = v;
    return 0;
}

static int parse_shape(npy_parser *ps, npy_header *h)
{
    if (expect_char(ps, '(', "to open 'shape'") != 0)
        return -1;
    int commas = 0;
    h->ndim = 0;
    skip_space(ps);
    while (ps->p < ps->end && *ps->p != ')') {
        if (h->ndim == DA_NPY_MAX_DIMS)
            return da_npy_fail(ps->err, ps->err_size, "'shape' has more than %d dimensions",
                               DA_NPY_MAX_DIMS);
        if (parse_dim(ps, &h->shape[h->ndim]) != 0)
            return -1;
        h->ndim++;
        skip_space(ps);
        if (ps->p < ps->end && *ps->p == ',') {
            ps->p++;
            commas++;
            skip_space(ps);
        } else {
            break;
        }
    }
    if (expect_char(ps, ')', "to close 'shape'") != 0)
        return -1;
    /* Python reads "(5)" as the number 5, not a tuple. */
    if (h->ndim == 1 && commas == 0)
        return da_npy_fail(ps->err, ps->err_size, "malformed header: 'shape' is not a tuple");
    return 0;
}

/* Elements of the shape, refusing any product whose byte size overflows. */
static int shape_count(const npy_header *h, size_t *count, char *err, size_t err_size)
{
    size_t nonzero = 1;
    int any_zero = 0;
    for (int i = 0; i < h->ndim; i++) {
        const int64_t d = h->shape[i];
        if (d == 0) {
            any_zero = 1;
            continue;
        }
        if ((uint64_t)d > SIZE_MAX / sizeof(float) / nonzero)
            return da_npy_fail(err, err_size, "'shape' has too many elements to address");
        nonzero *= (size_t)d;
    }
    *count = any_zero ? 0 : nonzero;
    return 0;
}

static int parse_dict(const char *text, size_t len, npy_header *h, char *err, size_t err_size)
{
    npy_parser ps = {text, text + len, err, err_size};
    int have_descr = 0, have_fortran = 0, have_shape = 0;
    if (expect_char(&ps, '{', "at the start of the header") != 0)
        return -1;
    for (;;) {
        skip_space(&ps);
        if (ps.p < ps.end && *ps.p == '}')
            break;
        const char *key;
        size_t n;
        if (parse_string(&ps, &key, &n, "a key") != 0)
            return -1;
        if (expect_char(&ps, ':', "after a key") != 0)
            return -1;
        int *seen;
        int rc;
        if (n == 5 && memcmp(key, "descr", 5) == 0) {
            seen = &have_descr;
            rc = parse_descr(&ps);
        } else if (n == 13 && memcmp(key, "fortran_order", 13) == 0) {
            seen = &have_fortran;
            rc = parse_fortran_order(&ps);
        } else if (n == 5 && memcmp(key, "shape", 5) == 0) {
            seen = &have_shape;
            rc = parse_shape(&ps, h);
        } else {
            char q[NPY_QUOTE_MAX + 8];
            quote_text(key, n, q, sizeof q);
            return da_npy_fail(err, err_size, "malformed header: unexpected key '%s'", q);
        }
        if (rc != 0)
            return -1;
        if (*seen)
            return da_npy_fail(err, err_size, "malformed header: a key appears twice");
        *seen = 1;
        skip_space(&ps);
        if (ps.p < ps.end && *ps.p == ',') {
            ps.p++;
            continue;
        }
        if (ps.p >= ps.end)
            return da_npy_fail(err, err_size, "malformed header: ended before the closing '}'");
        if (*ps.p == '}')
            break;
        return da_npy_fail(err, err_size, "malformed header: expected ',' or '}' after a value");
    }
    ps.p++;
    skip_space(&ps);
    if (ps.p != ps.end)
        return da_npy_fail(err, err_size, "malformed header: text after the closing '}'");
    if (!have_descr)
        return da_npy_fail(err, err_size, "malformed header: missing key 'descr'");
    if (!have_fortran)
        return da_npy_fail(err, err_size, "malformed header: missing key 'fortran_order'");
    if (!have_shape)
        return da_npy_fail(err, err_size, "malformed header: missing key 'shape'");
    return 0;
}

static uint32_t read_le(const unsigned char *b, int n)
{
    uint32_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = (v << 8) | b[i];
    return v;
}

/* Validate the whole image: prefix, header dict, and data size against the
 * bytes actually present. */
static int parse_image(const unsigned char *b, size_t size, npy_header *h, char *err,
                       size_t err_size)
{
    if (size < NPY_MAGIC_LEN || memcmp(b, NPY_MAGIC, NPY_MAGIC_LEN) != 0)
        return da_npy_fail(err, err_size, "not a .npy file (bad magic string)");
    if (size < NPY_MAGIC_LEN + 2)
        return da_npy_fail(err, err_size, "truncated header: file ends after %zu bytes", size);
    const int major = b[6], minor = b[7];
    if ((major != 1 && major != 2 && major != 3) || minor != 0)
        return da_npy_fail(err, err_size, "unsupported .npy format version %d.%d", major, minor);
    const size_t len_bytes = major == 1 ? 2 : 4;
    const size_t prefix = NPY_MAGIC_LEN + 2 + len_bytes;
    if (size < prefix)
        return da_npy_fail(err, err_size, "truncated header: file ends after %zu bytes", size);
    const size_t header_len = read_le(b + NPY_MAGIC_LEN + 2, (int)len_bytes);
    if (header_len > size - prefix)
        return da_npy_fail(err, err_size,
                           "header length %zu runs past the end of the file (%zu bytes after the"
                           " length field)",
                           header_len, size - prefix);
    if (parse_dict((const char *)b + prefix, header_len, h, err, err_size) != 0)
        return -1;
    if (shape_count(h, &h->count, err, err_size) != 0)
        return -1;
    h->data_offset = prefix + header_len;
    const size_t expected = h->count * sizeof(float);
    const size_t found = size - h->data_offset;
    if (found < expected)
        return da_npy_fail(err, err_size, "truncated data: expected %zu bytes, found %zu", expected,
                           found);
    if (found > expected)
        return da_npy_fail(err, err_size, "trailing data: expected %zu bytes, found %zu", expected,
                           found);
    return 0;
}

static void fill_array(const npy_header *h, float *data, da_npy_array *array)
{
    array->ndim = h->ndim;
    for (int i = 0; i < h->ndim; i++)
        array->shape[i] = h->shape[i];
    array->count = h->count;
    array->data = data;
}

void da_npy_free(da_npy_array *array)
{
    if (array == NULL)
        return;
    free(array->data);
    memset(array, 0, sizeof *array);
}

int da_npy_decode(const void *bytes, size_t size, da_npy_array *array, char *err, size_t err_size)
{
    memset(array, 0, sizeof *array);
    npy_header h;
    if (bytes == NULL && size > 0)
        return da_npy_fail(err, err_size, "no data");
    if (parse_image(bytes, size, &h, err, err_size) != 0)
        return -1;
    float *data = NULL;
    if (h.count > 0) {
        data = malloc(h.count * sizeof(float));
        if (data == NULL)
            return no_memory(err, err_size, "out of memory for %zu floats", h.count);
        memcpy(data, (const unsigned char *)bytes + h.data_offset, h.count * sizeof(float));
        to_or_from_little_endian(data, h.count);
    }
    fill_array(&h, data, array);
    return 0;
}

/* Read a whole stream, growing the buffer as the bytes arrive (works for
 * pipes too, and never trusts a size the file claims). */
static int slurp(FILE *f, unsigned char **out, size_t *out_size, char *err, size_t err_size)
{
    size_t cap = 1 << 16, size = 0;
    unsigned char *buf = malloc(cap);
    if (buf == NULL)
        return no_memory(err, err_size, "out of memory");
    for (;;) {
        if (size == cap) {
            if (cap > SIZE_MAX / 2) {
                free(buf);
                return da_npy_fail(err, err_size, "file too large");
            }
            unsigned char *grown = realloc(buf, cap * 2);
            if (grown == NULL) {
                free(buf);
                return no_memory(err, err_size, "out of memory reading the file");
            }
            buf = grown;
            cap *= 2;
        }
        const size_t got = fread(buf + size, 1, cap - size, f);
        size += got;
        if (got == 0)
            break;
    }
    if (ferror(f)) {
        const int e = errno;
        free(buf);
        return da_npy_fail(err, err_size, "read error: %s", e ? strerror(e) : "unknown error");
    }
    *out = buf;
    *out_size = size;
    return 0;
}

int da_npy_read(const char *path, da_npy_array *array, char *err, size_t err_size)
{
    memset(array, 0, sizeof *array);
    errno = 0;
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return da_npy_fail(err, err_size, "cannot open: %s", strerror(errno));
    unsigned char *buf = NULL;
    size_t size = 0;
    const int rc = slurp(f, &buf, &size, err, err_size);
    fclose(f);
    if (rc != 0)
        return rc;
    npy_header h;
    if (parse_image(buf, size, &h, err, err_size) != 0) {
        free(buf);
        return -1;
    }
    /* Reuse the buffer: move the data to its start, which malloc aligned. */
    const size_t bytes = h.count * sizeof(float);
    memmove(buf, buf + h.data_offset, bytes);
    float *data = NULL;
    if (bytes > 0) {
        data = realloc(buf, bytes);
        if (data == NULL)
            data = (float *)(void *)buf;
    } else {
        free(buf);
    }
    if (data != NULL)
        to_or_from_little_endian(data, h.count);
    fill_array(&h, data, array);
    return 0;
}

/* The header text, padded so that the data start on an NPY_ALIGN boundary. */
static int format_header(int ndim, const int64_t *shape, char *text, size_t text_size, size_t *len)
{
    int n = snprintf(text, text_size, "{'descr': '<f4', 'fortran_order': False, 'shape': (");
    for (int i = 0; i < ndim && n >= 0 && (size_t)n < text_size; i++)
        n +=
            snprintf(text + n, text_size - (size_t)n, i == 0 ? "%" PRId64 : ", %" PRId64, shape[i]);
    if (n >= 0 && (size_t)n < text_size)
        n += snprintf(text + n, text_size - (size_t)n, ndim == 1 ? ",), }" : "), }");
    if (n < 0 || (size_t)n >= text_size)
        return -1;
    size_t total = NPY_MAGIC_LEN + 4 + (size_t)n + 1;
    const size_t padded = (total + NPY_ALIGN - 1) / NPY_ALIGN * NPY_ALIGN;
    if (padded - NPY_MAGIC_LEN - 4 >= text_size)
        return -1;
    while (total < padded) {
        text[n++] = ' ';
        total++;
    }
    text[n++] = '\n';
    *len = (size_t)n;
    return 0;
}

static int write_body(FILE *f, const char *header, size_t header_len, const float *data,
                      size_t count)
{
    unsigned char prefix[NPY_MAGIC_LEN + 4];
    memcpy(prefix, NPY_MAGIC, NPY_MAGIC_LEN);
    prefix[6] = 1;
    prefix[7] = 0;
    prefix[8] = (unsigned char)(header_len & 0xff);
    prefix[9] = (unsigned char)(header_len >> 8);
    if (fwrite(prefix, 1, sizeof prefix, f) != sizeof prefix ||
        fwrite(header, 1, header_len, f) != header_len)
        return -1;
    if (host_is_little_endian())
        return count == 0 || fwrite(data, sizeof(float), count, f) == count ? 0 : -1;
    float chunk[1024];
    for (size_t i = 0; i < count; i += 1024) {
        const size_t n = count - i < 1024 ? count - i : 1024;
        memcpy(chunk, data + i, n * sizeof(float));
        to_or_from_little_endian(chunk, n);
        if (fwrite(chunk, sizeof(float), n, f) != n)
            return -1;
    }
    return 0;
}

int da_npy_write_stream(FILE *f, const float *data, int ndim, const int64_t *shape, char *err,
                        size_t err_size)
{
    if (ndim < 0 || ndim > DA_NPY_MAX_DIMS)
        return da_npy_fail(err, err_size, "cannot write %d dimensions", ndim);
    size_t count = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return da_npy_fail(err, err_size, "negative dimension");
        if (shape[i] > 0 && (uint64_t)shape[i] > SIZE_MAX / sizeof(float) / (count ? count : 1))
            return da_npy_fail(err, err_size, "shape too large");
        count *= (size_t)shape[i];
    }
    if (count > 0 && data == NULL)
        return da_npy_fail(err, err_size, "no data");
    char header[32 * DA_NPY_MAX_DIMS + 128];
    size_t header_len;
    if (format_header(ndim, shape, header, sizeof header, &header_len) != 0)
        return da_npy_fail(err, err_size, "header too long");
    errno = 0;
    if (write_body(f, header, header_len, data, count) != 0 || fflush(f) != 0)
        return da_npy_fail(err, err_size, "cannot write: %s",
                           errno ? strerror(errno) : "I/O error");
    return 0;
}
