/* SPDX-License-Identifier: MIT */
/* What only the OpenCL backend has: its on-disk program cache (a second
 * process loads what the first built; a corrupt cache file is rebuilt),
 * device selection through DASHATTN_OPENCL_DEVICE, build failures reported
 * with the build log, and the device-side cache checks. Every scenario runs
 * in a forked child, so that each starts with fresh OpenCL state and its own
 * environment, and its stderr can be read back. Exits 77 without an OpenCL
 * device. (Numerical agreement of every entry point with the CPU backend is
 * test_backend_parity's job; the forward here is checked too, briefly.) */
#define _XOPEN_SOURCE 700

#include "testutil.h"

#include <dashattn.h>

#include <dirent.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* A small causal problem with candidates, so stage 1 runs. */
#define B 1
#define HQ 4
#define HKV 2
#define N 96
#define D 32

static char cache_root[1024]; /* XDG_CACHE_HOME of the children */
static char log_path[1100];   /* their stderr */

static dashattn_status make_context(const char *backend, dashattn_context **ctx)
{
    dashattn_context_options opt;
    dashattn_context_options_init(&opt);
    opt.backend = backend;
    return dashattn_context_create(&opt, ctx);
}

/* out of a forward on a backend; returns the status (message on stderr). */
static dashattn_status forward_on(const char *backend, float *out)
{
    dashattn_context *ctx = NULL;
    dashattn_status st = make_context(backend, &ctx);
    if (st != DASHATTN_OK) {
        fprintf(stderr, "context: %s\n", dashattn_last_error());
        return st;
    }
    dashattn_problem pr;
    dashattn_problem_init(&pr, B, HQ, HKV, N, N, D);
    pr.block_size = 8;
    dashattn_plan *plan = NULL;
    st = dashattn_plan_create(ctx, &pr, &plan);
    const size_t nq = (size_t)B * HQ * N * D, nk = (size_t)B * HKV * N * D;
    float *hq = tu_random_floats(1, nq, 1.0), *hk = tu_random_floats(2, nk, 1.0);
    float *hv = tu_random_floats(3, nk, 1.0);
    void *q = NULL, *k = NULL, *v = NULL, *o = NULL;
    if (st == DASHATTN_OK)
        st = dashattn_memory_alloc(ctx, nq * 4, &q);
    if (st == DASHATTN_OK)
        st = dashattn_memory_alloc(ctx, nk * 4, &k);
    if (st == DASHATTN_OK)
        st = dashattn_memory_alloc(ctx, nk * 4, &v);
    if (st == DASHATTN_OK)
        st = dashattn_memory_alloc(ctx, nq * 4, &o);
    if (st == DASHATTN_OK)
        st = dashattn_memory_upload(ctx, q, hq, nq * 4);
    if (st == DASHATTN_OK)
        st = dashattn_memory_upload(ctx, k, hk, nk * 4);
    if (st == DASHATTN_OK)
        st = dashattn_memory_upload(ctx, v, hv, nk * 4);
    if (st == DASHATTN_OK) {
        const dashattn_tensor tq = dashattn_tensor_bhsd(q, DASHATTN_F32, B, HQ, N, D);
        const dashattn_tensor tk = dashattn_tensor_bhsd(k, DASHATTN_F32, B, HKV, N, D);
        const dashattn_tensor tv = dashattn_tensor_bhsd(v, DASHATTN_F32, B, HKV, N, D);
        const dashattn_tensor to = dashattn_tensor_bhsd(o, DASHATTN_F32, B, HQ, N, D);
        st = dashattn_forward(ctx, plan, &tq, &tk, &tv, NULL, &to, NULL, NULL, NULL, NULL, 0, NULL);
    }
    if (st == DASHATTN_OK)
        st = dashattn_memory_download(ctx, out, o, nq * 4);
    if (st != DASHATTN_OK)
        fprintf(stderr, "forward: status %d: %s\n", (int)st, dashattn_last_error());
    dashattn_memory_free(ctx, q);
    dashattn_memory_free(ctx, k);
    dashattn_memory_free(ctx, v);
    dashattn_memory_free(ctx, o);
    free(hq);
    free(hk);
    free(hv);
    dashattn_plan_destroy(plan);
    dashattn_context_destroy(ctx);
    return st;
}

/* Child: an OpenCL forward checked against the CPU backend. Exit 0 if it
 * ran and agreed, 3 if it disagreed, 10 + status if it failed. */
static int child_forward(void)
{
    const size_t n = (size_t)B * HQ * N * D;
    float *ref = tu_xcalloc(n, sizeof *ref), *out = tu_nan_floats(n);
    dashattn_status st = forward_on("cpu", ref);
    if (st == DASHATTN_OK)
        st = forward_on("opencl", out);
    if (st != DASHATTN_OK)
        return 10 + (int)st;
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        num += ((double)out[i] - ref[i]) * ((double)out[i] - ref[i]);
        den += (double)ref[i] * ref[i];
    }
    free(ref);
    free(out);
    const double err = sqrt(num / den);
    fprintf(stderr, "relative error against the CPU backend: %g\n", err);
    return err < 1e-5 ? 0 : 3;
}

/* Child: only create a context; exit 0, or 10 + status. */
static int child_context(void)
{
    dashattn_context *ctx = NULL;
    const dashattn_status st = make_context("opencl", &ctx);
    if (st != DASHATTN_OK)
        fprintf(stderr, "context: %s\n", dashattn_last_error());
    dashattn_context_destroy(ctx);
    return st == DASHATTN_OK ? 0 : 10 + (int)st;
}

/* Run fn in a child with extra environment (NAME=VALUE or NAME= to unset);
 * its stderr goes to log_path. Returns its exit status (-1 if it died). */
static int run_child(int (*fn)(void), const char *env1, const char *env2)
{
    fflush(NULL);
    const pid_t pid = fork();
    if (pid == 0) {
        setenv("XDG_CACHE_HOME", cache_root, 1);
        const char *envs[2] = {env1, env2};
        for (int i = 0; i < 2; i++) {
            if (!envs[i])
                continue;
            char name[64];
            const char *eq = strchr(envs[i], '=');
            snprintf(name, sizeof name, "%.*s", (int)(eq - envs[i]), envs[i]);
            if (eq[1])
                setenv(name, eq + 1, 1);
            else
                unsetenv(name);
        }
        /* Append mode: the OpenCL compiler may write to the log through a
         * descriptor of its own, which must not overwrite ours. */
        remove(log_path);
        if (!freopen(log_path, "a", stderr))
            _exit(98);
        const int code = fn();
        fflush(NULL); /* _exit does not flush, and stderr is buffered now */
        _exit(code);
    }
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) != pid)
        return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* The child's stderr. */
static char *child_log(void)
{
    static char text[16384];
    text[0] = '\0';
    FILE *f = fopen(log_path, "r");
    if (f) {
        const size_t n = fread(text, 1, sizeof text - 1, f);
        text[n] = '\0';
        fclose(f);
    }
    return text;
}

/* Path of the one cache file in the cache directory (empty if none). */
static void cache_file(char *path, size_t size, int *count)
{
    char dir[1100];
    snprintf(dir, sizeof dir, "%s/dashattn/opencl", cache_root);
    path[0] = '\0';
    *count = 0;
    DIR *d = opendir(dir);
    if (!d)
        return;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        const size_t len = strlen(e->d_name);
        if (len > 4 && strcmp(e->d_name + len - 4, ".bin") == 0) {
            snprintf(path, size, "%s/%s", dir, e->d_name);
            (*count)++;
        }
    }
    closedir(d);
}

static void remove_cache(void)
{
    char path[1200];
    int count;
    for (cache_file(path, sizeof path, &count); count > 0; cache_file(path, sizeof path, &count))
        if (remove(path) != 0)
            break;
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(path); /* keep going: whatever stays is only litter */
    return 0;
}

/* The children's cache root, with what the OpenCL driver cached there too. */
static void remove_cache_root(void)
{
    nftw(cache_root, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void check_disk_cache(void)
{
    remove_cache();
    int rc = run_child(child_forward, "DASHATTN_OPENCL_TRACE=1", NULL);
    const char *log = child_log();
    TU_CHECK(rc == 0, "first process: exit %d\n%s", rc, log);
    TU_CHECK(strstr(log, "built from source") != NULL, "first process builds:\n%s", log);
    char path[1200];
    int count;
    cache_file(path, sizeof path, &count);
    TU_CHECK(count == 1, "one program in the disk cache, found %d", count);

    rc = run_child(child_forward, "DASHATTN_OPENCL_TRACE=1", NULL);
    log = child_log();
    TU_CHECK(rc == 0, "second process: exit %d\n%s", rc, log);
    TU_CHECK(strstr(log, "loaded from the disk cache") != NULL && !strstr(log, "built from"),
             "second process loads the program from disk:\n%s", log);

    /* A damaged file is no error: rebuilt, replaced, and results still right. */
    if (count == 1) {
        FILE *f = fopen(path, "r+b");
        TU_CHECK(f != NULL, "open %s", path);
        if (f) {
            fseek(f, 40, SEEK_SET);
            for (int i = 0; i < 256; i++)
                fputc(0x5a, f);
            fclose(f);
        }
    }
    rc = run_child(child_forward, "DASHATTN_OPENCL_TRACE=1", NULL);
    log = child_log();
    TU_CHECK(rc == 0, "process with a damaged cache file: exit %d\n%s", rc, log);
    TU_CHECK(strstr(log, "unusable") != NULL && strstr(log, "built from source") != NULL,
             "damaged cache file rebuilt:\n%s", log);
    rc = run_child(child_forward, "DASHATTN_OPENCL_TRACE=1", NULL);
    log = child_log();
    TU_CHECK(rc == 0 && strstr(log, "loaded from the disk cache") != NULL,
             "the rebuilt file is used by the next process (exit %d):\n%s", rc, log);

    /* A cache directory that cannot be made (a file sits where it would
     * go) is no error either. */
    remove_cache();
    char dir[1200];
    snprintf(dir, sizeof dir, "%s/dashattn/opencl", cache_root);
    rmdir(dir);
    FILE *blocker = fopen(dir, "w");
    TU_CHECK(blocker != NULL, "create %s", dir);
    if (blocker)
        fclose(blocker);
    rc = run_child(child_forward, "DASHATTN_OPENCL_TRACE=1", NULL);
    log = child_log();
    TU_CHECK(rc == 0 && strstr(log, "built from source") && !strstr(log, "saved"),
             "cache directory unusable: exit %d\n%s", rc, log);
    remove(dir);
}

/* The work-group-staged stage 2 (what GPUs run) on this device too, which
 * on a CPU device would otherwise read keys and values in place. */
static void check_staged_kernels(void)
{
    const int rc = run_child(child_forward, "DASHATTN_OPENCL_DIRECT=0", NULL);
    TU_CHECK(rc == 0, "staged stage-2 kernel against the CPU backend: exit %d\n%s", rc,
             child_log());
}

static void check_device_variable(void)
{
    int rc = run_child(child_context, "DASHATTN_OPENCL_DEVICE=0", NULL);
    TU_CHECK(rc == 0, "DASHATTN_OPENCL_DEVICE=0: exit %d\n%s", rc, child_log());
    rc = run_child(child_context, "DASHATTN_OPENCL_DEVICE=0:0", NULL);
    TU_CHECK(rc == 0, "DASHATTN_OPENCL_DEVICE=0:0: exit %d\n%s", rc, child_log());
    static const char *const bad[] = {"DASHATTN_OPENCL_DEVICE=gpu-please",
                                      "DASHATTN_OPENCL_DEVICE=999",
                                      "DASHATTN_OPENCL_DEVICE=0:", "DASHATTN_OPENCL_DEVICE=-1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        rc = run_child(child_context, bad[i], NULL);
        const char *log = child_log();
        TU_CHECK(rc == 10 + DASHATTN_ERR_INVALID_ARGUMENT && strstr(log, "DASHATTN_OPENCL_DEVICE"),
                 "%s: exit %d, want invalid argument naming the variable:\n%s", bad[i], rc, log);
    }
}

static void check_build_failure(void)
{
    const int rc = run_child(child_forward, "DASHATTN_OPENCL_BREAK_SOURCE=1", NULL);
    const char *log = child_log();
    TU_CHECK(rc == 10 + DASHATTN_ERR_DEVICE, "broken kernel source: exit %d, want device error\n%s",
             rc, log);
    TU_CHECK(strstr(log, "build log") && strstr(log, "this_is_not_opencl_c"),
             "the message carries the build log with the offending token:\n%s", log);
}

int main(void)
{
    const char *build = getenv("abs_top_builddir");
    snprintf(cache_root, sizeof cache_root, "%s/tests/opencl-cache.%ld", build ? build : ".",
             (long)getpid());
    snprintf(log_path, sizeof log_path, "%s.log", cache_root);
    mkdir(cache_root, 0755);

    const int rc = run_child(child_context, NULL, NULL);
    if (rc == 10 + DASHATTN_ERR_BACKEND_UNAVAILABLE) {
        printf("test_opencl: skipped, no OpenCL device: %s", child_log());
        remove_cache_root();
        remove(log_path);
        return TU_SKIP;
    }
    TU_CHECK(rc == 0, "OpenCL context: exit %d\n%s", rc, child_log());
    if (rc == 0) {
        check_disk_cache();
        check_staged_kernels();
        check_device_variable();
        check_build_failure();
    }
    remove_cache_root();
    remove(log_path);
    return tu_finish("test_opencl");
}
