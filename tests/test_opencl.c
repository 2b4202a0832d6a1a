/* SPDX-License-Identifier: MIT */
/* What only the OpenCL backend has: its on-disk program cache (a second
 * process loads what the first built; a corrupt, truncated or foreign cache
 * file is rebuilt; two processes with different options share a cache
 * directory, at the same time, and each gets its own program),
 * device selection through DASHATTN_OPENCL_DEVICE, build failures reported
 * with the build log, and the device-side cache checks. Every scenario runs
 * in a forked child, so that each starts with fresh OpenCL state and its own
 * environment, and its stderr can be read back. Exits 77 without an OpenCL
 * device. (Numerical agreement of every entry point with the CPU backend is
 * test_backend_parity's job; the forward here is checked too, briefly.) */
#define _GNU_SOURCE /* memmem */

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

/* Start fn in a child with extra environment (NAME=VALUE or NAME= to unset)
 * and its stderr in log; returns its pid (-1 if fork failed). */
static pid_t start_child(int (*fn)(void), const char *env1, const char *env2, const char *log)
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
        remove(log);
        if (!freopen(log, "a", stderr))
            _exit(98);
        const int code = fn();
        fflush(NULL); /* _exit does not flush, and stderr is buffered now */
        _exit(code);
    }
    return pid;
}

/* The exit status of a started child (-1 if it died or never started). */
static int wait_child(pid_t pid)
{
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) != pid)
        return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* Run fn in a child as start_child does, stderr in log_path; its exit
 * status. */
static int run_child(int (*fn)(void), const char *env1, const char *env2)
{
    return wait_child(start_child(fn, env1, env2, log_path));
}

/* A child's stderr: log_path's, or that of another log. */
static char *read_log(const char *path)
{
    static char text[16384];
    text[0] = '\0';
    FILE *f = fopen(path, "r");
    if (f) {
        const size_t n = fread(text, 1, sizeof text - 1, f);
        text[n] = '\0';
        fclose(f);
    }
    return text;
}

static char *child_log(void)
{
    return read_log(log_path);
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

/* The bytes of a file (NULL if unreadable), and its size. */
static char *slurp(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *data = NULL;
    if (fseek(f, 0, SEEK_END) == 0) {
        const long n = ftell(f);
        if (n > 0 && fseek(f, 0, SEEK_SET) == 0) {
            data = tu_xcalloc((size_t)n, 1);
            *size = fread(data, 1, (size_t)n, f);
        }
    }
    fclose(f);
    return data;
}

static int spill(const char *path, const char *data, size_t size)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return 0;
    const int ok = fwrite(data, 1, size, f) == size;
    return fclose(f) == 0 && ok;
}

/* The 32-digit key a cache file is named after. */
static void key_of(const char *path, char key[33])
{
    const char *base = strrchr(path, '/');
    snprintf(key, 33, "%s", base ? base + 1 : path);
}

/* Entries that are not this program's are rebuilt, never used: another
 * program's binary under this program's key (what a key that misses an
 * option would give), and a partly written binary. */
static void check_foreign_entries(void)
{
    char a[1200], b[1200], key_a[33], key_b[33];
    int count;
    remove_cache();
    int rc = run_child(child_forward, "DASHATTN_OPENCL_DIRECT=0", NULL);
    cache_file(a, sizeof a, &count);
    TU_CHECK(rc == 0 && count == 1, "direct=0 program: exit %d, %d cache files", rc, count);
    size_t size = 0;
    char *data = count == 1 ? slurp(a, &size) : NULL;
    remove_cache();
    rc = run_child(child_forward, "DASHATTN_OPENCL_DIRECT=1", NULL);
    cache_file(b, sizeof b, &count);
    TU_CHECK(rc == 0 && count == 1, "direct=1 program: exit %d, %d cache files", rc, count);
    if (!data || count != 1) {
        free(data);
        return;
    }
    key_of(a, key_a);
    key_of(b, key_b);
    /* Program A's entry with every mention of its key made B's. */
    for (char *p = data; (p = memmem(p, size - (size_t)(p - data), key_a, 32)) != NULL; p += 32)
        memcpy(p, key_b, 32);
    TU_CHECK(spill(b, data, size), "write %s", b);
    rc = run_child(child_forward, "DASHATTN_OPENCL_DIRECT=1", "DASHATTN_OPENCL_TRACE=1");
    const char *log = child_log();
    TU_CHECK(rc == 0 && strstr(log, "unusable") && strstr(log, "built from source"),
             "another program's binary under this key is rebuilt (exit %d):\n%s", rc, log);
    free(data);

    /* The rebuilt entry cut short, as a crash while writing it would. */
    data = slurp(b, &size);
    TU_CHECK(data && size > 64 && spill(b, data, size - size / 4), "truncate %s", b);
    rc = run_child(child_forward, "DASHATTN_OPENCL_DIRECT=1", "DASHATTN_OPENCL_TRACE=1");
    log = child_log();
    TU_CHECK(rc == 0 && strstr(log, "unusable") && strstr(log, "built from source"),
             "a partly written entry is rebuilt (exit %d):\n%s", rc, log);
    free(data);
}

/* Two processes with different build options on one cache directory, at
 * the same time, cold and then warm: each gets its own program, and right
 * results. */
static void check_two_processes(void)
{
    char log_a[1200], log_b[1200];
    snprintf(log_a, sizeof log_a, "%s.a", log_path);
    snprintf(log_b, sizeof log_b, "%s.b", log_path);
    remove_cache();
    for (int round = 0; round < 2; round++) {
        const pid_t pa = start_child(child_forward, "DASHATTN_OPENCL_DIRECT=0",
                                     "DASHATTN_OPENCL_TRACE=1", log_a);
        const pid_t pb = start_child(child_forward, "DASHATTN_OPENCL_DIRECT=1",
                                     "DASHATTN_OPENCL_TRACE=1", log_b);
        const int ra = wait_child(pa), rb = wait_child(pb);
        const char *want = round == 0 ? "built from source" : "loaded from the disk cache";
        char *text = read_log(log_a);
        TU_CHECK(ra == 0 && strstr(text, want), "round %d, direct=0: exit %d, want \"%s\":\n%s",
                 round, ra, want, text);
        text = read_log(log_b);
        TU_CHECK(rb == 0 && strstr(text, want), "round %d, direct=1: exit %d, want \"%s\":\n%s",
                 round, rb, want, text);
        char path[1200];
        int count;
        cache_file(path, sizeof path, &count);
        TU_CHECK(count == 2, "round %d: two programs in the cache, found %d", round, count);
    }
    remove(log_a);
    remove(log_b);
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
        check_foreign_entries();
        check_two_processes();
        check_staged_kernels();
        check_device_variable();
        check_build_failure();
    }
    remove_cache_root();
    remove(log_path);
    return tu_finish("test_opencl");
}
