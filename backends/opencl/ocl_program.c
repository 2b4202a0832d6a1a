/* SPDX-License-Identifier: MIT */
/* Compiled kernel programs: one per (dtype, configuration) and context,
 * kept for the context's life, and on disk under
 * $XDG_CACHE_HOME/dashattn/opencl (else ~/.cache/dashattn/opencl) keyed by
 * a hash of the platform, device, driver, build options and source, so that
 * a second process skips the compiler. A cache file that cannot be read or
 * used is ignored and replaced; the disk cache never makes a call fail.
 *
 * Environment variables of the backend (tests and debugging):
 *   DASHATTN_OPENCL_DEVICE=N|P:D   the device (ocl_devices.c)
 *   DASHATTN_OPENCL_TRACE=1        one line on stderr per program: built,
 *                                  loaded from disk, or cache file rejected
 *   DASHATTN_OPENCL_BREAK_SOURCE=1 appends a syntax error to the source, to
 *                                  exercise the build-failure path
 *   DASHATTN_OPENCL_DIRECT=0|1     stage 2 with local-memory tiles (0, GPUs)
 *                                  or in-place loads (1, CPU devices)
 *   DASHATTN_OPENCL_PROFILE=1      waits for every kernel and prints its
 *                                  time on stderr (ocl_launch.c) */
#include "ocl_internal.h"

#include <errno.h>
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

#define MAGIC "dashattn-opencl-binary-1\n"

static const char broken_tail[] = "\nthis_is_not_opencl_c dashattn_injected_error;\n";

static int env_on(const char *name)
{
    const char *v = getenv(name);
    return v && v[0] && strcmp(v, "0") != 0;
}

static void trace(const char *format, const char *a, const char *b)
{
    if (env_on("DASHATTN_OPENCL_TRACE"))
        fprintf(stderr, format, a, b);
}

/* Two FNV-1a passes with different seeds: a 128-bit key as 32 hex digits. */
static void hash_key(const char *parts[], int count, char out[33])
{
    uint64_t h[2] = {0xcbf29ce484222325ull, 0x84222325cbf29ce4ull};
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < count; i++) {
            for (const unsigned char *p = (const unsigned char *)parts[i]; *p; p++) {
                h[k] ^= *p;
                h[k] *= 0x100000001b3ull;
            }
            h[k] ^= 0xff; /* separator: ("ab", "c") differs from ("a", "bc") */
            h[k] *= 0x100000001b3ull;
        }
    snprintf(out, 33, "%016llx%016llx", (unsigned long long)h[0], (unsigned long long)h[1]);
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

/* A program from a cache file: MAGIC, the 32-digit key, a newline, then the
 * device binary. NULL (and a trace line) if anything is off. */
static cl_program load_cached(const daocl_state *st, const char *path, const char *key,
                              const char *options)
{
    size_t size = 0;
    unsigned char *data = read_file(path, &size);
    if (!data)
        return NULL;
    const size_t head = sizeof MAGIC - 1 + 33;
    cl_program program = NULL;
    if (size > head && memcmp(data, MAGIC, sizeof MAGIC - 1) == 0 &&
        memcmp(data + sizeof MAGIC - 1, key, 32) == 0 && data[head - 1] == '\n') {
        const unsigned char *binary = data + head;
        const size_t length = size - head;
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
    trace(program ? "dashattn-opencl: program %s loaded from the disk cache (%s)\n"
                  : "dashattn-opencl: program %s: cache file %s unusable, rebuilding\n",
          key, path);
    return program;
}

/* Writes the binary next to its final name, then renames: readers see the
 * old file or the whole new one. Failures are silent (it is only a cache). */
static void save_cached(const daocl_state *st, cl_program program, const char *dir,
                        const char *path, const char *key)
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
    (void)st;
    if (clGetProgramInfo(program, CL_PROGRAM_BINARIES, sizeof binaries, binaries, NULL) ==
        CL_SUCCESS) {
        char tmp[1200];
        snprintf(tmp, sizeof tmp, "%s/%s.tmp.%ld.%ld", dir, key, (long)getpid(), (long)clock());
        FILE *f = fopen(tmp, "wb");
        int ok = f != NULL;
        if (f) {
            ok = fwrite(MAGIC, 1, sizeof MAGIC - 1, f) == sizeof MAGIC - 1 &&
                 fprintf(f, "%s\n", key) == 33 && fwrite(binary, 1, length, f) == length;
            ok = fclose(f) == 0 && ok;
        }
        if (ok && rename(tmp, path) == 0)
            trace("dashattn-opencl: program %s saved to %s\n", key, path);
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
    char key[33];
    const char *key_parts[] = {st->identity, options, parts[0], parts[1]};
    hash_key(key_parts, 4, key);
    char dir[1024], path[1100];
    const int cached = !broken && cache_dir(dir, sizeof dir);
    if (cached) {
        snprintf(path, sizeof path, "%s/%s.bin", dir, key);
        *out = load_cached(st, path, key, options);
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
    trace("dashattn-opencl: program %s built from source (options %s)\n", key, options);
    if (cached)
        save_cached(st, program, dir, path, key);
    *out = program;
    return DASHATTN_OK;
}

dashattn_status daocl_program_get(daocl_state *st, dashattn_dtype dtype, const daocl_config *cfg,
                                  cl_program *program)
{
    char options[200];
    snprintf(options, sizeof options,
             "-cl-std=CL1.2 -DDA_DT=%d -DDA_DPAD=%d -DDA_WG=%d -DDA_KT=%d -DDA_DIRECT=%d",
             (int)dtype, cfg->dpad, cfg->wg, cfg->kt, cfg->direct);
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
