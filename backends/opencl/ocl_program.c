/* SPDX-License-Identifier: MIT */
/* Compiled kernel programs: one per (dtype, configuration) and context,
 * kept for the context's life, and on disk under
 * $XDG_CACHE_HOME/dashattn/opencl (else ~/.cache/dashattn/opencl) keyed by
 * a digest of the platform, device, driver, build options and source, so
 * that a second process skips the compiler. A file is used only if its
 * header names exactly this program (format, platform, device, driver,
 * options, source) and its binary has the length and digest the header
 * gives; anything else (a partly written, damaged, renamed or foreign file)
 * is rebuilt and replaced. The disk cache never makes a call fail.
 *
 * Environment variables of the backend (tests and debugging):
 *   DASHATTN_OPENCL_DEVICE=N|P:D   the device (ocl_devices.c)
 *   DASHATTN_OPENCL_TRACE=1        one line on stderr per program: built,
 *                                  loaded from disk, or cache file rejected
 *   DASHATTN_OPENCL_BREAK_SOURCE=1 appends a syntax error to the source, to
 *                                  exercise the build-failure path
 *   DASHATTN_OPENCL_DIRECT=0|1     stage 2 with local-memory tiles (0, GPUs)
 *                                  or in-place loads (1, CPU devices)
 *   DASHATTN_OPENCL_WIDE_SELECT=0|1
 *                                  decode's select by a work-group per row
 *                                  (1, GPUs) or a work-item (0, CPU devices)
 *   DASHATTN_OPENCL_PROFILE=1      waits for every kernel and prints its
 *                                  time on stderr (ocl_launch.c) */
#include "ocl_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct daocl_program {
    char options[200];
    cl_program program;
    daocl_program *next;
};

/* Format 2: a text header naming everything the binary was built from, then
 * the binary. Format 1 files (key only) are rebuilt and replaced. */
#define MAGIC "dashattn-opencl-binary-2\n"

static const char broken_tail[] = "\nthis_is_not_opencl_c dashattn_injected_error;\n";

static int env_on(const char *name)
{
    const char *v = getenv(name);
    return v && v[0] && strcmp(v, "0") != 0;
}

static void trace(const char *format, ...)
#ifdef __GNUC__
    __attribute__((format(printf, 1, 2)))
#endif
    ;
static void trace(const char *format, ...)
{
    if (!env_on("DASHATTN_OPENCL_TRACE"))
        return;
    va_list ap;
    va_start(ap, format);
    vfprintf(stderr, format, ap);
    va_end(ap);
}

/* Two FNV-1a passes with different seeds: a 128-bit digest. Not a
 * cryptographic hash: it names and checks entries, it does not authenticate
 * them (the cache directory is the user's own). */
typedef struct digest {
    uint64_t h[2];
} digest;

static digest digest_start(void)
{
    const digest d = {{0xcbf29ce484222325ull, 0x84222325cbf29ce4ull}};
    return d;
}

static void digest_add(digest *d, const unsigned char *p, size_t n)
{
    for (int k = 0; k < 2; k++)
        for (size_t i = 0; i < n; i++) {
            d->h[k] ^= p[i];
            d->h[k] *= 0x100000001b3ull;
        }
}

/* A separator: ("ab", "c") differs from ("a", "bc"). */
static void digest_end_part(digest *d)
{
    const unsigned char sep = 0xff;
    digest_add(d, &sep, 1);
}

static void digest_hex(const digest *d, char out[33])
{
    snprintf(out, 33, "%016llx%016llx", (unsigned long long)d->h[0], (unsigned long long)d->h[1]);
}

static void digest_of_strings(const char *const parts[], int count, char out[33])
{
    digest d = digest_start();
    for (int i = 0; i < count; i++) {
        digest_add(&d, (const unsigned char *)parts[i], strlen(parts[i]));
        digest_end_part(&d);
    }
    digest_hex(&d, out);
}

static void digest_of_bytes(const unsigned char *p, size_t n, char out[33])
{
    digest d = digest_start();
    digest_add(&d, p, n);
    digest_hex(&d, out);
}

/* What an entry for a program is keyed by. */
typedef struct entry_key {
    char key[33];      /* file name: digest of everything below */
    char source[33];   /* digest of the kernel source */
    char header[1400]; /* the entry's header up to its "binary" line */
} entry_key;

static void make_entry_key(const daocl_state *st, const char *options, const char *const src[2],
                           entry_key *k)
{
    digest_of_strings(src, 2, k->source);
    const char *parts[] = {st->identity, options, k->source};
    digest_of_strings(parts, 3, k->key);
    snprintf(k->header, sizeof k->header, "%skey %s\nidentity %s\noptions %s\nsource %s\n", MAGIC,
             k->key, st->identity, options, k->source);
}

/* The cache directory, created if needed; 0 if there is none. */
static int cache_dir(char *dir, size_t size)
{
    const char *xdg = getenv("XDG_CACHE_HOME");
    const char *home = getenv("HOME");
    int n;
    if (xdg && xdg[0] == '/')
        n = snprintf(dir, size, "%s/dashattn/opencl", xdg);
    else if (home && home[0])
        n = snprintf(dir, size, "%s/.cache/dashattn/opencl", home);
    else
        return 0;
    if (n < 0 || (size_t)n >= size)
        return 0;
    /* mkdir -p, one component at a time */
    for (char *p = dir + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        const int bad = mkdir(dir, 0755) != 0 && errno != EEXIST;
        *p = '/';
        if (bad)
            return 0;
    }
    return mkdir(dir, 0755) == 0 || errno == EEXIST;
}

static unsigned char *read_file(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    unsigned char *data = NULL;
    if (fseek(f, 0, SEEK_END) == 0) {
        const long n = ftell(f);
        if (n > 0 && fseek(f, 0, SEEK_SET) == 0) {
            data = malloc((size_t)n);
            if (data && fread(data, 1, (size_t)n, f) != (size_t)n) {
                free(data);
                data = NULL;
            }
            *size = (size_t)n;
        }
    }
    fclose(f);
    return data;
}

static cl_int build(cl_program program, const daocl_state *st, const char *options)
{
    return clBuildProgram(program, 1, &st->device, options, NULL, NULL);
}

/* The binary of a cache entry, or NULL with the reason: the header must be
 * exactly this key's (same identity, options and source, same format), and
 * the binary as long as the header says, with the digest it says. */
static const unsigned char *entry_binary(const unsigned char *data, size_t size, const entry_key *k,
                                         size_t *length, const char **why)
{
    const size_t head = strlen(k->header);
    if (size < sizeof MAGIC - 1 || memcmp(data, MAGIC, sizeof MAGIC - 1) != 0) {
        *why = "another format";
        return NULL;
    }
    if (size <= head || memcmp(data, k->header, head) != 0) {
        *why = "built for another device, driver, source or options";
        return NULL;
    }
    /* "binary LENGTH DIGEST\n\n" */
    char line[80];
    const size_t room = size - head < sizeof line - 1 ? size - head : sizeof line - 1;
    memcpy(line, data + head, room);
    line[room] = '\0';
    unsigned long long n = 0;
    char want[33];
    int used = 0;
    if (sscanf(line, "binary %llu %32[0-9a-f]%n", &n, want, &used) != 2 || used == 0 ||
        line[used] != '\n' || line[used + 1] != '\n' || strlen(want) != 32) {
        *why = "a damaged header";
        return NULL;
    }
    const size_t start = head + (size_t)used + 2;
    if (start > size || n != size - start) {
        *why = "a binary of the wrong length (a partly written file?)";
        return NULL;
    }
    char got[33];
    digest_of_bytes(data + start, (size_t)n, got);
    if (strcmp(got, want) != 0) {
        *why = "a binary whose digest does not match";
        return NULL;
    }
    *length = (size_t)n;
    return data + start;
}

/* A program from a cache file; NULL (and a trace line) if the file is
 * missing, is not exactly this program's entry, or the driver refuses it. */
static cl_program load_cached(const daocl_state *st, const char *path, const entry_key *k,
                              const char *options)
{
    size_t size = 0;
    unsigned char *data = read_file(path, &size);
    if (!data)
        return NULL;
    cl_program program = NULL;
    size_t length = 0;
    const char *why = "refused by the driver";
    const unsigned char *binary = entry_binary(data, size, k, &length, &why);
    if (binary) {
        cl_int status, err;
        program =
            clCreateProgramWithBinary(st->context, 1, &st->device, &length, &binary, &status, &err);
        if (program && (err != CL_SUCCESS || status != CL_SUCCESS ||
                        build(program, st, options) != CL_SUCCESS)) {
            clReleaseProgram(program);
            program = NULL;
        }
    }
    free(data);
    if (program)
        trace("dashattn-opencl: program %s loaded from the disk cache (%s)\n", k->key, path);
    else
        trace("dashattn-opencl: program %s: cache file %s unusable (%s), rebuilding\n", k->key,
              path, why);
    return program;
}

/* Writes the entry next to its final name, flushed to the disk, then
 * renames it: readers see the old file or the whole new one, even after a
 * crash. Failures are silent (it is only a cache). */
static void save_cached(cl_program program, const char *dir, const char *path, const entry_key *k)
{
    size_t length = 0;
    if (clGetProgramInfo(program, CL_PROGRAM_BINARY_SIZES, sizeof length, &length, NULL) !=
            CL_SUCCESS ||
        length == 0)
        return;
    unsigned char *binary = malloc(length);
    if (!binary)
        return;
    unsigned char *binaries[1] = {binary};
    if (clGetProgramInfo(program, CL_PROGRAM_BINARIES, sizeof binaries, binaries, NULL) ==
        CL_SUCCESS) {
        char tmp[1200], sum[33];
        digest_of_bytes(binary, length, sum);
        snprintf(tmp, sizeof tmp, "%s/%s.tmp.%ld.%ld", dir, k->key, (long)getpid(), (long)clock());
        FILE *f = fopen(tmp, "wb");
        int ok = f != NULL;
        if (f) {
            ok = fputs(k->header, f) >= 0 &&
                 fprintf(f, "binary %llu %s\n\n", (unsigned long long)length, sum) > 0 &&
                 fwrite(binary, 1, length, f) == length && fflush(f) == 0 && fsync(fileno(f)) == 0;
            ok = fclose(f) == 0 && ok;
        }
        if (ok && rename(tmp, path) == 0)
            trace("dashattn-opencl: program %s saved to %s\n", k->key, path);
        else if (f)
            remove(tmp);
    }
    free(binary);
}

/* The build log, trimmed so that the whole message fits the core's error
 * buffer; the first errors are at its start. */
static dashattn_status build_failure(const daocl_state *st, cl_program program, cl_int err)
{
    char log[700];
    size_t n = 0;
    log[0] = '\0';
    if (clGetProgramBuildInfo(program, st->device, CL_PROGRAM_BUILD_LOG, 0, NULL, &n) ==
            CL_SUCCESS &&
        n > 0) {
        char *full = malloc(n + 1);
        if (full && clGetProgramBuildInfo(program, st->device, CL_PROGRAM_BUILD_LOG, n, full,
                                          NULL) == CL_SUCCESS) {
            full[n] = '\0';
            snprintf(log, sizeof log, "%s", full);
        }
        free(full);
    }
    return daocl_fail(DASHATTN_ERR_DEVICE,
                      "opencl: building the kernels failed (%s) on %.120s; build log:\n%s",
                      daocl_error_name(err), st->name, log[0] ? log : "(empty)");
}

static dashattn_status compile(daocl_state *st, const char *options, cl_program *out)
{
    const int broken = env_on("DASHATTN_OPENCL_BREAK_SOURCE");
    const char *parts[2] = {daocl_kernel_source, broken ? broken_tail : ""};
    const size_t lengths[2] = {strlen(parts[0]), strlen(parts[1])};
    entry_key k;
    make_entry_key(st, options, parts, &k);
    char dir[1024], path[1100];
    const int cached = !broken && cache_dir(dir, sizeof dir);
    if (cached) {
        snprintf(path, sizeof path, "%s/%s.bin", dir, k.key);
        *out = load_cached(st, path, &k, options);
        if (*out)
            return DASHATTN_OK;
    }
    cl_int err;
    cl_program program = clCreateProgramWithSource(st->context, 2, parts, lengths, &err);
    if (!program)
        return daocl_fail_cl(err, "clCreateProgramWithSource");
    err = build(program, st, options);
    if (err != CL_SUCCESS) {
        const dashattn_status status = build_failure(st, program, err);
        clReleaseProgram(program);
        return status;
    }
    trace("dashattn-opencl: program %s built from source (options %s)\n", k.key, options);
    if (cached)
        save_cached(program, dir, path, &k);
    *out = program;
    return DASHATTN_OK;
}

dashattn_status daocl_program_get(daocl_state *st, dashattn_dtype dtype, const daocl_config *cfg,
                                  cl_program *program)
{
    char options[200];
    snprintf(options, sizeof options,
             "-cl-std=CL1.2 -DDA_DT=%d -DDA_DPAD=%d -DDA_WG=%d -DDA_KT=%d -DDA_DIRECT=%d "
             "-DDA_DEC_HEADS=%d",
             (int)dtype, cfg->dpad, cfg->wg, cfg->kt, cfg->direct, cfg->dec_heads);
    /* Holding the lock while compiling keeps two threads from building the
     * same program; builds happen once per context and configuration. */
    pthread_mutex_lock(&st->lock);
    dashattn_status status = DASHATTN_OK;
    daocl_program *p = st->programs;
    while (p && strcmp(p->options, options) != 0)
        p = p->next;
    if (!p) {
        cl_program built;
        status = compile(st, options, &built);
        if (status == DASHATTN_OK) {
            p = calloc(1, sizeof *p);
            if (!p) {
                clReleaseProgram(built);
                status = daocl_fail(DASHATTN_ERR_OUT_OF_MEMORY, "opencl: out of host memory");
            } else {
                snprintf(p->options, sizeof p->options, "%s", options);
                p->program = built;
                p->next = st->programs;
                st->programs = p;
            }
        }
    }
    if (p)
        *program = p->program;
    pthread_mutex_unlock(&st->lock);
    return status;
}

void daocl_programs_release(daocl_state *st)
{
    for (daocl_program *p = st->programs, *next; p; p = next) {
        next = p->next;
        clReleaseProgram(p->program);
        free(p);
    }
    st->programs = NULL;
}
