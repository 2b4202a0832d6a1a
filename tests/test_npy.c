/* SPDX-License-Identifier: MIT */
/* The .npy reader and writer of the CLI: round trips, the exact layout the
 * writer promises, and a table of malformed files that must each be rejected
 * with a message naming the problem (never a crash or an out-of-bounds read). */
#include "npy.h"
#include "outputs.h"
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define IMAGE_MAX 4096

/* A .npy image built by hand: prefix for the given version, the header text
 * as is (no padding), then data_bytes bytes of data. */
typedef struct image {
    unsigned char bytes[IMAGE_MAX];
    size_t size;
} image;

static void build(image *im, int major, const char *header, size_t data_bytes)
{
    const size_t hlen = strlen(header);
    const size_t len_bytes = major == 1 ? 2 : 4;
    memcpy(im->bytes, "\x93NUMPY", 6);
    im->bytes[6] = (unsigned char)major;
    im->bytes[7] = 0;
    for (size_t i = 0; i < len_bytes; i++)
        im->bytes[8 + i] = (unsigned char)((hlen >> (8 * i)) & 0xff);
    const size_t off = 8 + len_bytes;
    memcpy(im->bytes + off, header, hlen);
    /* Data bytes of the little-endian floats 0, 1, 2, ... (exact in float). */
    for (size_t i = 0; i < data_bytes; i++) {
        const float f = (float)(i / 4);
        unsigned char le[4];
        uint32_t u;
        memcpy(&u, &f, 4);
        for (int b = 0; b < 4; b++)
            le[b] = (unsigned char)(u >> (8 * b));
        im->bytes[off + hlen + i] = le[i % 4];
    }
    im->size = off + hlen + data_bytes;
}

static const char good_header[] = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }\n";

typedef struct bad_case {
    const char *name;
    const char *header; /* NULL: the case edits a good image instead */
    size_t data_bytes;
    const char *expect; /* substring the message must contain */
} bad_case;

static const bad_case bad_headers[] = {
    {"missing key shape", "{'descr': '<f4', 'fortran_order': False, }", 0, "missing key 'shape'"},
    {"missing key descr", "{'fortran_order': False, 'shape': (2,), }", 8, "missing key 'descr'"},
    {"missing key fortran_order", "{'descr': '<f4', 'shape': (2,), }", 8,
     "missing key 'fortran_order'"},
    {"extra key", "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}", 8,
     "unexpected key 'x'"},
    {"duplicate key", "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2,)}", 8,
     "twice"},
    {"float64", "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }", 16, "'<f8'"},
    {"int32", "{'descr': '<i4', 'fortran_order': False, 'shape': (2,), }", 8, "'<i4'"},
    {"big-endian float32", "{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }", 8,
     "big-endian"},
    {"byte", "{'descr': '|u1', 'fortran_order': False, 'shape': (8,), }", 8, "not float32"},
    {"structured", "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }", 8,
     "structured"},
    {"fortran order", "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", 24, "Fortran"},
    {"fortran order not bool", "{'descr': '<f4', 'fortran_order': 0, 'shape': (2,), }", 8,
     "True or False"},
    {"negative dim", "{'descr': '<f4', 'fortran_order': False, 'shape': (2, -3), }", 24,
     "negative"},
    {"dim past int64", "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,)}",
     0, "too large"},
    {"product overflow",
     "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296, 16), }", 0,
     "too many elements"},
    {"shape not a tuple", "{'descr': '<f4', 'fortran_order': False, 'shape': (2), }", 8,
     "not a tuple"},
    {"shape not integers", "{'descr': '<f4', 'fortran_order': False, 'shape': ('a',), }", 0,
     "integers"},
    {"unterminated dict", "{'descr': '<f4', 'fortran_order': False", 0, "ended"},
    {"unterminated string", "{'descr': '<f4", 0, "unterminated"},
    {"not a dict", "['<f4', False, (2,)]", 8, "expected '{'"},
    {"text after dict", "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), } x", 8,
     "after the closing"},
    {"data truncated", good_header, 20, "truncated data: expected 24 bytes, found 20"},
    {"trailing junk", good_header, 28, "trailing data: expected 24 bytes, found 28"},
    {"too many dims",
     "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,"
     " 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1), }",
     4, "more than"},
};

static void expect_rejected(const char *name, const void *bytes, size_t size, const char *expect)
{
    da_npy_array a;
    char err[256] = "";
    const int rc = da_npy_decode(bytes, size, &a, err, sizeof err);
    TU_CHECK(rc == -1, "%s: accepted", name);
    TU_CHECK(a.data == NULL && a.count == 0 && a.ndim == 0, "%s: array not left empty", name);
    TU_CHECK(err[0] != '\0' && strchr(err, '\n') == NULL, "%s: message '%s' not one line", name,
             err);
    TU_CHECK(expect == NULL || strstr(err, expect) != NULL, "%s: message '%s' lacks '%s'", name,
             err, expect ? expect : "");
    da_npy_free(&a);
}

static void test_bad_headers(void)
{
    image im;
    for (size_t i = 0; i < sizeof bad_headers / sizeof bad_headers[0]; i++) {
        build(&im, 1, bad_headers[i].header, bad_headers[i].data_bytes);
        expect_rejected(bad_headers[i].name, im.bytes, im.size, bad_headers[i].expect);
    }
}

static void test_bad_prefixes(void)
{
    image im;
    build(&im, 1, good_header, 24);
    expect_rejected("empty file", im.bytes, 0, "magic");

    image bad = im;
    bad.bytes[5] = 'X';
    expect_rejected("bad magic", bad.bytes, bad.size, "magic");

    expect_rejected("truncated header", im.bytes, 9, "truncated header");

    bad = im;
    bad.bytes[6] = 4;
    expect_rejected("version 4.0", bad.bytes, bad.size, "version 4.0");
    bad = im;
    bad.bytes[7] = 1;
    expect_rejected("version 1.1", bad.bytes, bad.size, "version 1.1");

    bad = im;
    bad.bytes[8] = 0xe8; /* header length 1000 */
    bad.bytes[9] = 0x03;
    expect_rejected("header length past EOF", bad.bytes, bad.size, "past the end");

    /* Every proper prefix of a valid file is invalid, and none may read past
     * the bytes it was given (each is decoded from its own exact-size copy). */
    for (size_t n = 0; n < im.size; n++) {
        unsigned char *copy = tu_xcalloc(n ? n : 1, 1);
        memcpy(copy, im.bytes, n);
        char name[64];
        snprintf(name, sizeof name, "prefix of %zu bytes", n);
        expect_rejected(name, copy, n, NULL);
        free(copy);
    }
}

static void test_good_variants(void)
{
    static const struct {
        int major;
        const char *header;
        int ndim;
        int64_t d0;
    } good[] = {
        {1, good_header, 2, 2},
        {2, good_header, 2, 2},
        {3, good_header, 2, 2},
        {1, "{\"shape\": (2, 3), \"fortran_order\": False, \"descr\": \"<f4\"}", 2, 2},
        {1, "{'descr':'<f4','fortran_order':False,'shape':(6,)}   \n", 1, 6},
        {1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2L, 3L), }\n", 2, 2},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        image im;
        build(&im, good[i].major, good[i].header, 24);
        da_npy_array a;
        char err[256] = "";
        const int rc = da_npy_decode(im.bytes, im.size, &a, err, sizeof err);
        TU_CHECK(rc == 0, "good variant %zu rejected: %s", i, err);
        if (rc != 0)
            continue;
        TU_CHECK(a.ndim == good[i].ndim && a.shape[0] == good[i].d0 && a.count == 6,
                 "good variant %zu: wrong shape", i);
        int values_ok = 1;
        for (size_t j = 0; j < a.count; j++)
            values_ok &= a.data[j] == (float)j;
        TU_CHECK(values_ok, "good variant %zu: wrong values", i);
        da_npy_free(&a);
    }

    /* A zero-size array needs no data; a 0-d array holds one value. */
    image im;
    build(&im, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 5), }", 0);
    da_npy_array a;
    char err[256] = "";
    TU_CHECK(da_npy_decode(im.bytes, im.size, &a, err, sizeof err) == 0 && a.count == 0 &&
                 a.shape[1] == 5,
             "zero-size array: %s", err);
    da_npy_free(&a);
    build(&im, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (), }", 4);
    TU_CHECK(da_npy_decode(im.bytes, im.size, &a, err, sizeof err) == 0 && a.ndim == 0 &&
                 a.count == 1,
             "0-d array: %s", err);
    da_npy_free(&a);
}

static void tmp_path(char *buf, size_t size, const char *tag)
{
    snprintf(buf, size, "test_npy.%ld.%s.npy", (long)getpid(), tag);
}

static unsigned char *read_all(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    unsigned char *buf = tu_xcalloc(1 << 20, 1);
    *size = fread(buf, 1, 1 << 20, f);
    fclose(f);
    return buf;
}

static void round_trip(const int64_t *shape, int ndim, uint64_t seed)
{
    size_t count = 1;
    for (int i = 0; i < ndim; i++)
        count *= (size_t)shape[i];
    float *data = tu_random_floats(seed, count ? count : 1, 1.0);
    char path[128], err[256] = "";
    tmp_path(path, sizeof path, "rt");
    TU_CHECK(da_npy_write(path, data, ndim, shape, err, sizeof err) == 0, "write %d-D: %s", ndim,
             err);

    size_t size = 0;
    unsigned char *raw = read_all(path, &size);
    TU_CHECK(raw != NULL, "written file missing");
    if (raw != NULL) {
        /* Version 1.0, and the data start on a 64-byte boundary. */
        const size_t off = 10 + (size_t)(raw[8] | raw[9] << 8);
        TU_CHECK(size >= 10 && raw[6] == 1 && raw[7] == 0, "%d-D: not version 1.0", ndim);
        TU_CHECK(off % 64 == 0 && raw[off - 1] == '\n', "%d-D: header not 64-aligned", ndim);
        TU_CHECK(size == off + 4 * count, "%d-D: size %zu, expected %zu", ndim, size,
                 off + 4 * count);
        free(raw);
    }

    da_npy_array a;
    TU_CHECK(da_npy_read(path, &a, err, sizeof err) == 0, "read back %d-D: %s", ndim, err);
    TU_CHECK(a.ndim == ndim, "ndim %d read back as %d", ndim, a.ndim);
    for (int i = 0; i < ndim && i < a.ndim; i++)
        TU_CHECK(a.shape[i] == shape[i], "dim %d: %lld read back as %lld", i, (long long)shape[i],
                 (long long)a.shape[i]);
    TU_CHECK(a.count == count && (count == 0 || memcmp(a.data, data, count * 4) == 0),
             "%d-D: data differ after a round trip", ndim);
    da_npy_free(&a);
    remove(path);
    free(data);
}

static void test_files(void)
{
    const int64_t s4[] = {2, 3, 5, 7}, s1[] = {11}, s0[] = {0, 4};
    round_trip(s4, 4, 1);
    round_trip(s1, 1, 2);
    round_trip(s0, 2, 3);
    round_trip(NULL, 0, 4);

    da_npy_array a;
    char err[256] = "";
    TU_CHECK(da_npy_read("no/such/file.npy", &a, err, sizeof err) == -1 &&
                 strstr(err, "cannot open") != NULL,
             "missing file: '%s'", err);
    TU_CHECK(da_npy_read(".", &a, err, sizeof err) == -1 && err[0] != '\0',
             "reading a directory succeeded");

    /* A failed write leaves nothing behind (not even its temporary file). */
    const float x = 1.0f;
    const int64_t one = 1;
    TU_CHECK(da_npy_write("no/such/dir/x.npy", &x, 1, &one, err, sizeof err) == -1 &&
                 err[0] != '\0',
             "write into a missing directory succeeded");

    /* A symlink planted where the old writer put its temporary file
     * (path.tmp<pid>) is not followed: the file it points to is unchanged. */
    char victim[128], target[128], planted[192];
    tmp_path(victim, sizeof victim, "victim");
    tmp_path(target, sizeof target, "target");
    snprintf(planted, sizeof planted, "%s.tmp%ld", target, (long)getpid());
    FILE *v = fopen(victim, "w");
    if (v != NULL) {
        fputs("precious\n", v);
        fclose(v);
    }
    TU_CHECK(symlink(victim, planted) == 0, "symlink %s", planted);
    TU_CHECK(da_npy_write(target, &x, 1, &one, err, sizeof err) == 0,
             "write beside a planted "
             "symlink: %s",
             err);
    size_t vsize = 0;
    unsigned char *vraw = read_all(victim, &vsize);
    TU_CHECK(vraw != NULL && vsize == 9 && memcmp(vraw, "precious\n", 9) == 0,
             "the planted symlink's target is unchanged");
    free(vraw);
    da_npy_array back;
    TU_CHECK(da_npy_read(target, &back, err, sizeof err) == 0 && back.count == 1 &&
                 back.data[0] == 1.0f,
             "the file itself was written: %s", err);
    da_npy_free(&back);
    remove(planted);
    remove(victim);
    remove(target);

    /* A truncated file on disk is rejected like a truncated image. */
    char path[128];
    tmp_path(path, sizeof path, "trunc");
    const int64_t shape[] = {1, 1, 32, 32};
    float *data = tu_random_floats(5, 1024, 1.0);
    TU_CHECK(da_npy_write(path, data, 4, shape, err, sizeof err) == 0, "write: %s", err);
    size_t size = 0;
    unsigned char *raw = read_all(path, &size);
    const long off = raw != NULL ? 10 + (raw[8] | raw[9] << 8) : 0;
    free(raw);
    FILE *f = fopen(path, "r+b");
    if (f != NULL) {
        TU_CHECK(ftruncate(fileno(f), off + 100) == 0, "ftruncate failed");
        fclose(f);
    }
    TU_CHECK(da_npy_read(path, &a, err, sizeof err) == -1 &&
                 strstr(err, "truncated data: expected 4096 bytes, found 100") != NULL,
             "truncated file: '%s'", err);
    remove(path);
    free(data);
}

int main(void)
{
    test_bad_headers();
    test_bad_prefixes();
    test_good_variants();
    test_files();
    return tu_finish("test_npy");
}
