/* SPDX-License-Identifier: MIT */
/*
 * Backend plugin loading, through the test plugins of tests/plugins/:
 * abitest (wrong ABI version, or a table cut at the required entries),
 * nodevice (probe finds nothing; the table of a plugin built before the plan
 * hook) and faildev (loads, but every launch fails; has the plan hook, or
 * the older table). Checks the status and message of each failure mode,
 * backend-name validation, "auto" selection, the plan hook, the backends
 * report and the DASHATTN_BACKEND override. The core reads the environment
 * when a context is created, so each case sets it just before.
 */
#define _POSIX_C_SOURCE 200809L

#include <dlfcn.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <dashattn.h>
#include <dashattn/backend.h>

#include "testutil.h"

static char plugin_dir[4096];

static int contains(const char *haystack, const char *needle)
{
    return haystack != NULL && strstr(haystack, needle) != NULL;
}

/* Create a context on backend; returns the status, destroys any context made. */
static dashattn_status try_backend(const char *backend, char *backend_seen, size_t seen_size)
{
    dashattn_context_options opt;
    dashattn_context *ctx = (dashattn_context *)&opt; /* must be overwritten */
    dashattn_context_options_init(&opt);
    opt.backend = backend;
    opt.num_threads = 1;
    dashattn_status st = dashattn_context_create(&opt, &ctx);
    if (backend_seen != NULL && seen_size > 0)
        snprintf(backend_seen, seen_size, "%s",
                 st == DASHATTN_OK ? dashattn_context_backend(ctx) : "");
    if (st == DASHATTN_OK) {
        dashattn_context_destroy(ctx);
    } else {
        TU_CHECK(ctx == NULL, "backend '%s': failed create leaves *context NULL", backend);
    }
    return st;
}

/* faildev_live_plans() of the faildev plugin the core loaded: the plans its
 * plan_prepare made that plan_release has not freed yet. The core keeps
 * plugins mapped (RTLD_NODELETE), so this dlopen finds that same copy and
 * its counter. -1 where the plugin or the function cannot be found. */
static int faildev_live_plans(void)
{
    char path[sizeof plugin_dir + 32];
    snprintf(path, sizeof path, "%s/dashattn-faildev.so", plugin_dir);
    void *handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (handle == NULL)
        return -1;
    void *sym = dlsym(handle, "faildev_live_plans");
    int (*live)(void) = NULL;
    if (sym != NULL)
        memcpy(&live, &sym, sizeof live);
    const int n = live != NULL ? live() : -1;
    dlclose(handle);
    return n;
}

static void check_abi_mismatch(void)
{
    dashattn_status st = try_backend("abitest", NULL, 0);
    TU_CHECK(st == DASHATTN_ERR_ABI_MISMATCH, "abitest: status %d, want ABI_MISMATCH", (int)st);
    TU_CHECK(contains(dashattn_last_error(), "ABI"), "abitest: message mentions ABI: '%s'",
             dashattn_last_error());

    /* The right ABI version, but a struct_size one entry short of the
     * required ones: refused, with both sizes in the message. */
    char seen_size[64], needed_size[64];
    snprintf(seen_size, sizeof seen_size, "struct_size is %zu bytes",
             offsetof(dashattn_backend_iface, forward));
    snprintf(needed_size, sizeof needed_size, "need %zu",
             offsetof(dashattn_backend_iface, backward));
    setenv("DASHATTN_TEST_ABITEST_TABLE", "short", 1);
    st = try_backend("abitest", NULL, 0);
    TU_CHECK(st == DASHATTN_ERR_BACKEND_UNAVAILABLE,
             "abitest short table: status %d, want UNAVAILABLE", (int)st);
    TU_CHECK(contains(dashattn_last_error(), "incomplete backend table") &&
                 contains(dashattn_last_error(), seen_size) &&
                 contains(dashattn_last_error(), needed_size),
             "abitest short table: message has '%s' and '%s': '%s'", seen_size, needed_size,
             dashattn_last_error());

    /* Exactly the required entries: it loads, and a plan needs none of the
     * optional entries that lie past its end. */
    setenv("DASHATTN_TEST_ABITEST_TABLE", "required", 1);
    dashattn_context_options opt;
    dashattn_context_options_init(&opt);
    opt.backend = "abitest";
    dashattn_context *ctx = NULL;
    st = dashattn_context_create(&opt, &ctx);
    unsetenv("DASHATTN_TEST_ABITEST_TABLE");
    TU_CHECK(st == DASHATTN_OK, "abitest table up to forward: status %d (%s)", (int)st,
             dashattn_last_error());
    if (st != DASHATTN_OK)
        return;
    dashattn_problem prob;
    dashattn_problem_init(&prob, 1, 2, 2, 8, 8, 4);
    dashattn_plan *plan = NULL;
    st = dashattn_plan_create(ctx, &prob, &plan);
    TU_CHECK(st == DASHATTN_OK, "abitest table up to forward: plan status %d (%s)", (int)st,
             dashattn_last_error());
    dashattn_plan_destroy(plan);
    dashattn_context_destroy(ctx);
}

static void check_no_device(void)
{
    dashattn_status st = try_backend("nodevice", NULL, 0);
    TU_CHECK(st == DASHATTN_ERR_BACKEND_UNAVAILABLE, "nodevice: status %d, want UNAVAILABLE",
             (int)st);
    TU_CHECK(contains(dashattn_last_error(), "no test device present"),
             "nodevice: message carries the probe's reason: '%s'", dashattn_last_error());
}

static void check_missing_plugin(void)
{
    dashattn_status st = try_backend("doesnotexist", NULL, 0);
    TU_CHECK(st == DASHATTN_ERR_BACKEND_UNAVAILABLE, "doesnotexist: status %d, want UNAVAILABLE",
             (int)st);
    TU_CHECK(contains(dashattn_last_error(), "doesnotexist"),
             "doesnotexist: message names it: '%s'", dashattn_last_error());
    TU_CHECK(contains(dashattn_last_error(), plugin_dir),
             "doesnotexist: message names the searched directory %s: '%s'", plugin_dir,
             dashattn_last_error());

    /* 32 characters is the longest valid name: not found, but not invalid. */
    st = try_backend("abcdefghijklmnopqrstuvwxyz_01234", NULL, 0);
    TU_CHECK(st == DASHATTN_ERR_BACKEND_UNAVAILABLE, "32-char name: status %d, want UNAVAILABLE",
             (int)st);
}

static void check_bad_names(void)
{
    static const char *const bad[] = {
        "../x",
        "a/b",
        "",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "abcdefghijklmnopqrstuvwxyz_012345",
        "Faildev",
        "a.b",
        "fail dev",
        "faildev\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        dashattn_status st = try_backend(bad[i], NULL, 0);
        TU_CHECK(st == DASHATTN_ERR_INVALID_ARGUMENT, "bad name '%s': status %d, want INVALID",
                 bad[i], (int)st);
        TU_CHECK(contains(dashattn_last_error(), "backend"),
                 "bad name '%s': message names the backend argument: '%s'", bad[i],
                 dashattn_last_error());
    }
}

static int all_nan(const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isnan(x[i]))
            return 0;
    return 1;
}

/* A backend that fails at launch: its status and message reach the caller,
 * and operations it does not implement are UNSUPPORTED. */
static void check_failing_device(void)
{
    enum { B = 1, H = 2, N = 8, D = 4 };
    dashattn_context_options opt;
    dashattn_context *ctx = NULL;
    dashattn_plan *plan = NULL;
    dashattn_context_options_init(&opt);
    opt.backend = "faildev";
    dashattn_status st = dashattn_context_create(&opt, &ctx);
    TU_CHECK(st == DASHATTN_OK, "faildev: create status %d (%s)", (int)st, dashattn_last_error());
    if (st != DASHATTN_OK)
        return;
    TU_CHECK(strcmp(dashattn_context_backend(ctx), "faildev") == 0, "faildev: backend name '%s'",
             dashattn_context_backend(ctx));
    TU_CHECK(contains(dashattn_context_device(ctx), "simulated failing device"),
             "faildev: device name '%s'", dashattn_context_device(ctx));

    dashattn_problem prob;
    dashattn_problem_init(&prob, B, H, H, N, N, D);
    prob.block_size = 4;
    st = dashattn_plan_create(ctx, &prob, &plan);
    TU_CHECK(st == DASHATTN_OK, "faildev: plan status %d (%s)", (int)st, dashattn_last_error());
    if (st != DASHATTN_OK) {
        dashattn_context_destroy(ctx);
        return;
    }
    TU_CHECK(faildev_live_plans() == 1, "faildev: plan_prepare made the plan's own (%d live)",
             faildev_live_plans());

    const size_t n = (size_t)B * H * N * D;
    float *q = tu_random_floats(1, n, 1.0), *k = tu_random_floats(2, n, 1.0);
    float *v = tu_random_floats(3, n, 1.0), *o = tu_random_floats(4, n, 1.0);
    float *dout = tu_random_floats(5, n, 1.0), *dq = tu_random_floats(6, n, 1.0);
    float *dk = tu_random_floats(7, n, 1.0), *dv = tu_random_floats(8, n, 1.0);
    float lse[B * H * N];
    for (size_t i = 0; i < sizeof(lse) / sizeof(lse[0]); i++)
        lse[i] = 1.0f;
    dashattn_tensor tq = dashattn_tensor_bhsd(q, DASHATTN_F32, B, H, N, D);
    dashattn_tensor tk = dashattn_tensor_bhsd(k, DASHATTN_F32, B, H, N, D);
    dashattn_tensor tv = dashattn_tensor_bhsd(v, DASHATTN_F32, B, H, N, D);
    dashattn_tensor to = dashattn_tensor_bhsd(o, DASHATTN_F32, B, H, N, D);
    dashattn_tensor tdo = dashattn_tensor_bhsd(dout, DASHATTN_F32, B, H, N, D);
    dashattn_tensor tdq = dashattn_tensor_bhsd(dq, DASHATTN_F32, B, H, N, D);
    dashattn_tensor tdk = dashattn_tensor_bhsd(dk, DASHATTN_F32, B, H, N, D);
    dashattn_tensor tdv = dashattn_tensor_bhsd(dv, DASHATTN_F32, B, H, N, D);

    /* faildev fails with another message unless plan_prepare's plan reached
     * workspace_size and forward as plan->backend_plan. */
    st = dashattn_forward(ctx, plan, &tq, &tk, &tv, NULL, &to, lse, NULL, NULL, NULL, 0, NULL);
    TU_CHECK(st == DASHATTN_ERR_DEVICE, "faildev forward: status %d, want DEVICE", (int)st);
    TU_CHECK(contains(dashattn_last_error(), "simulated device failure"),
             "faildev forward: plugin's message passed through: '%s'", dashattn_last_error());
    TU_CHECK(all_nan(o, n), "faildev forward: failed output is NaN, not a plausible result");
    TU_CHECK(all_nan(lse, sizeof(lse) / sizeof(lse[0])), "faildev forward: failed lse is NaN");

    st = dashattn_backward(ctx, plan, &tq, &tk, &tv, NULL, &to, lse, &tdo, &tdq, &tdk, &tdv, NULL,
                           NULL, 0, NULL);
    TU_CHECK(st == DASHATTN_ERR_UNSUPPORTED, "faildev backward: status %d, want UNSUPPORTED",
             (int)st);
    TU_CHECK(dashattn_last_error()[0] != '\0', "faildev backward: message is set");
    dashattn_plan_destroy(plan);
    TU_CHECK(faildev_live_plans() == 0,
             "faildev: plan_destroy released the backend's plan (%d live)", faildev_live_plans());

    /* Decode and append on a valid contiguous cache: only the backend lacks them. */
    enum { CAP = 8, S = 4 };
    dashattn_problem dec;
    dashattn_problem_init(&dec, 1, 1, 1, 1, CAP, D);
    dec.block_size = S;
    dashattn_plan *dplan = NULL;
    st = dashattn_plan_create(ctx, &dec, &dplan);
    TU_CHECK(st == DASHATTN_OK, "faildev: decode plan status %d (%s)", (int)st,
             dashattn_last_error());
    if (st == DASHATTN_OK) {
        float ck[CAP * D] = {0}, cv[CAP * D] = {0}, cbk[(CAP / S) * D] = {0};
        float knew[D] = {1, 2, 3, 4}, vnew[D] = {4, 3, 2, 1}, q1[D] = {1, 0, 0, 0}, out1[D];
        int32_t seq_lens[1] = {1};
        dashattn_kv_cache cache = {
            .layout = DASHATTN_CACHE_CONTIGUOUS,
            .k = dashattn_tensor_bhsd(ck, DASHATTN_F32, 1, 1, CAP, D),
            .v = dashattn_tensor_bhsd(cv, DASHATTN_F32, 1, 1, CAP, D),
            .block_keys = dashattn_tensor_bhsd(cbk, DASHATTN_F32, 1, 1, CAP / S, D),
            .seq_lens = seq_lens,
            .block_table = NULL,
            .table_stride = 0,
        };
        dashattn_tensor tkn = dashattn_tensor_bhsd(knew, DASHATTN_F32, 1, 1, 1, D);
        dashattn_tensor tvn = dashattn_tensor_bhsd(vnew, DASHATTN_F32, 1, 1, 1, D);
        dashattn_tensor tq1 = dashattn_tensor_bhsd(q1, DASHATTN_F32, 1, 1, 1, D);
        dashattn_tensor to1 = dashattn_tensor_bhsd(out1, DASHATTN_F32, 1, 1, 1, D);
        st = dashattn_cache_append(ctx, dplan, &cache, &tkn, &tvn, NULL, NULL);
        TU_CHECK(st == DASHATTN_ERR_UNSUPPORTED, "faildev append: status %d, want UNSUPPORTED",
                 (int)st);
        TU_CHECK(seq_lens[0] == 1, "faildev append: seq_lens untouched (%d)", (int)seq_lens[0]);
        st = dashattn_decode(ctx, dplan, &tq1, &cache, &to1, NULL, NULL, 0, NULL);
        TU_CHECK(st == DASHATTN_ERR_UNSUPPORTED, "faildev decode: status %d, want UNSUPPORTED",
                 (int)st);
        dashattn_plan_destroy(dplan);
        TU_CHECK(faildev_live_plans() == 0, "faildev: decode plan released (%d live)",
                 faildev_live_plans());
    }

    free(q);
    free(k);
    free(v);
    free(o);
    free(dout);
    free(dq);
    free(dk);
    free(dv);
    dashattn_context_destroy(ctx);
}

/* A backend whose workspace size saturated (SIZE_MAX) gets no plan. */
static void check_workspace_overflow(void)
{
    dashattn_context_options opt;
    dashattn_context *ctx = NULL;
    dashattn_context_options_init(&opt);
    opt.backend = "faildev";
    if (dashattn_context_create(&opt, &ctx) != DASHATTN_OK) {
        TU_CHECK(0, "faildev: create failed (%s)", dashattn_last_error());
        return;
    }
    dashattn_problem prob;
    dashattn_problem_init(&prob, 1, 2, 2, 8, 8, 4);
    setenv("DASHATTN_TEST_FAILDEV_WORKSPACE", "max", 1);
    dashattn_plan *plan = (dashattn_plan *)&prob; /* must be overwritten */
    dashattn_status st = dashattn_plan_create(ctx, &prob, &plan);
    unsetenv("DASHATTN_TEST_FAILDEV_WORKSPACE");
    TU_CHECK(st == DASHATTN_ERR_INVALID_ARGUMENT, "SIZE_MAX workspace: plan status %d", (int)st);
    TU_CHECK(plan == NULL, "SIZE_MAX workspace: *plan is NULL");
    TU_CHECK(
        contains(dashattn_last_error(), "workspace") && contains(dashattn_last_error(), "faildev"),
        "SIZE_MAX workspace: message names the workspace and backend: '%s'", dashattn_last_error());
    if (st == DASHATTN_OK)
        dashattn_plan_destroy(plan);
    TU_CHECK(faildev_live_plans() == 0,
             "SIZE_MAX workspace: the plan of plan_prepare was released (%d live)",
             faildev_live_plans());
    dashattn_context_destroy(ctx);
}

/* A backend's plan_prepare refuses the problem: its status and message reach
 * the caller (or, where it set none, a message naming it), no plan is made,
 * and the context goes on planning other problems. */
static void check_plan_refused(void)
{
    dashattn_context_options opt;
    dashattn_context *ctx = NULL;
    dashattn_context_options_init(&opt);
    opt.backend = "faildev";
    if (dashattn_context_create(&opt, &ctx) != DASHATTN_OK) {
        TU_CHECK(0, "faildev: create failed (%s)", dashattn_last_error());
        return;
    }
    dashattn_problem prob;
    dashattn_problem_init(&prob, 1, 2, 2, 8, 8, 4);
    static const struct {
        const char *mode, *message;
    } refusals[] = {{"refuse", "faildev plugin cannot run this problem"},
                    {"refuse-silently", "backend faildev refused the plan"}};
    for (size_t i = 0; i < sizeof refusals / sizeof refusals[0]; i++) {
        setenv("DASHATTN_TEST_FAILDEV_PLAN", refusals[i].mode, 1);
        dashattn_plan *plan = (dashattn_plan *)&prob; /* must be overwritten */
        dashattn_status st = dashattn_plan_create(ctx, &prob, &plan);
        TU_CHECK(st == DASHATTN_ERR_UNSUPPORTED, "plan_prepare %s: status %d, want UNSUPPORTED",
                 refusals[i].mode, (int)st);
        TU_CHECK(plan == NULL, "plan_prepare %s: *plan is NULL", refusals[i].mode);
        TU_CHECK(contains(dashattn_last_error(), refusals[i].message),
                 "plan_prepare %s: message has '%s': '%s'", refusals[i].mode, refusals[i].message,
                 dashattn_last_error());
        if (st == DASHATTN_OK)
            dashattn_plan_destroy(plan);
    }
    unsetenv("DASHATTN_TEST_FAILDEV_PLAN");
    dashattn_plan *plan = NULL;
    dashattn_status st = dashattn_plan_create(ctx, &prob, &plan);
    TU_CHECK(st == DASHATTN_OK, "plan after refusals: status %d (%s)", (int)st,
             dashattn_last_error());
    dashattn_plan_destroy(plan);
    TU_CHECK(faildev_live_plans() == 0, "refused plans leave nothing to release (%d live)",
             faildev_live_plans());
    dashattn_context_destroy(ctx);
}

/* faildev through the table of a plugin built before plan_prepare existed
 * (DASHATTN_TEST_FAILDEV_TABLE=old, read when the core loads it): it loads,
 * and its plans work without the hook. Its forward reaches the device
 * failure only if backend_plan arrived NULL; reading the hook's entries
 * from the plugin's own table would read past its end. */
static void check_table_before_plan_hook(void)
{
    dashattn_context_options opt;
    dashattn_context *ctx = NULL;
    dashattn_context_options_init(&opt);
    opt.backend = "faildev";
    setenv("DASHATTN_TEST_FAILDEV_TABLE", "old", 1);
    dashattn_status st = dashattn_context_create(&opt, &ctx);
    unsetenv("DASHATTN_TEST_FAILDEV_TABLE");
    TU_CHECK(st == DASHATTN_OK, "faildev, old table: create status %d (%s)", (int)st,
             dashattn_last_error());
    if (st != DASHATTN_OK)
        return;
    enum { B = 1, H = 2, N = 8, D = 4 };
    dashattn_problem prob;
    dashattn_problem_init(&prob, B, H, H, N, N, D);
    dashattn_plan *plan = NULL;
    st = dashattn_plan_create(ctx, &prob, &plan);
    TU_CHECK(st == DASHATTN_OK, "faildev, old table: plan status %d (%s)", (int)st,
             dashattn_last_error());
    TU_CHECK(faildev_live_plans() == 0, "faildev, old table: no plan_prepare ran (%d live)",
             faildev_live_plans());
    if (st == DASHATTN_OK) {
        float q[B * H * N * D] = {0}, o[B * H * N * D];
        dashattn_tensor tq = dashattn_tensor_bhsd(q, DASHATTN_F32, B, H, N, D);
        dashattn_tensor to = dashattn_tensor_bhsd(o, DASHATTN_F32, B, H, N, D);
        st = dashattn_forward(ctx, plan, &tq, &tq, &tq, NULL, &to, NULL, NULL, NULL, NULL, 0, NULL);
        TU_CHECK(st == DASHATTN_ERR_DEVICE &&
                     contains(dashattn_last_error(), "simulated device failure"),
                 "faildev, old table: forward status %d, want DEVICE: '%s'", (int)st,
                 dashattn_last_error());
        dashattn_plan_destroy(plan);
    }
    dashattn_context_destroy(ctx);
}

/* "auto" must refuse abitest (even though it probes highest), pass over
 * nodevice, and take faildev (score 2) rather than the CPU fallback; a
 * plugin scoring 1 (a device no better than the CPU, such as an OpenCL CPU
 * device) is left to be named and auto takes the CPU backend. */
static void check_auto(void)
{
    char seen[64];
    dashattn_status st = try_backend("auto", seen, sizeof(seen));
    TU_CHECK(st == DASHATTN_OK && strcmp(seen, "faildev") == 0,
             "auto: status %d backend '%s', want faildev", (int)st, seen);
    st = try_backend(NULL, seen, sizeof(seen));
    TU_CHECK(st == DASHATTN_OK && strcmp(seen, "faildev") == 0,
             "NULL backend (auto): status %d backend '%s', want faildev", (int)st, seen);
    setenv("DASHATTN_TEST_FAILDEV_SCORE", "1", 1);
    st = try_backend("auto", seen, sizeof(seen));
    TU_CHECK(st == DASHATTN_OK && strcmp(seen, "cpu") == 0,
             "auto with a score-1 plugin: status %d backend '%s', want cpu", (int)st, seen);
    st = try_backend("faildev", seen, sizeof(seen));
    TU_CHECK(st == DASHATTN_OK && strcmp(seen, "faildev") == 0,
             "score-1 plugin by name: status %d backend '%s'", (int)st, seen);
    unsetenv("DASHATTN_TEST_FAILDEV_SCORE");
}

static void check_report(void)
{
    size_t need = dashattn_backends_report(NULL, 0);
    TU_CHECK(need > 0, "report: length %zu", need);
    char *text = tu_xcalloc(need + 1, 1);
    size_t again = dashattn_backends_report(text, need + 1);
    TU_CHECK(again == need, "report: same length twice (%zu, %zu)", need, again);
    TU_CHECK(strlen(text) == need, "report: text of the announced length (%zu, %zu)", strlen(text),
             need);
    static const char *const wanted[] = {
        "cpu", "abitest", "ABI", "nodevice", "no test device present", "faildev"};
    for (size_t i = 0; i < sizeof(wanted) / sizeof(wanted[0]); i++)
        TU_CHECK(contains(text, wanted[i]), "report mentions '%s':\n%s", wanted[i], text);

    /* A short buffer gets a NUL-terminated prefix; the return value still tells the full length. */
    char small[10];
    memset(small, 'x', sizeof(small));
    size_t cut = dashattn_backends_report(small, sizeof(small));
    TU_CHECK(cut == need, "report: truncated call returns full length (%zu, %zu)", cut, need);
    TU_CHECK(memchr(small, '\0', sizeof(small)) != NULL && strncmp(small, text, strlen(small)) == 0,
             "report: truncated text is a NUL-terminated prefix");
    free(text);
}

/* DASHATTN_BACKEND chooses only for "auto" (or NULL): an explicit name wins,
 * so a program that passes host pointers to "cpu" stays on the CPU. */
static void check_env_override(void)
{
    char seen[64];
    setenv("DASHATTN_BACKEND", "cpu", 1);
    dashattn_status st = try_backend("faildev", seen, sizeof(seen));
    TU_CHECK(st == DASHATTN_OK && strcmp(seen, "faildev") == 0,
             "DASHATTN_BACKEND=cpu, 'faildev' asked for: status %d backend '%s'", (int)st, seen);
    st = try_backend("auto", seen, sizeof(seen));
    TU_CHECK(st == DASHATTN_OK && strcmp(seen, "cpu") == 0,
             "DASHATTN_BACKEND=cpu, 'auto' (which would take faildev): status %d backend '%s'",
             (int)st, seen);

    setenv("DASHATTN_BACKEND", "faildev", 1);
    st = try_backend("cpu", seen, sizeof(seen));
    TU_CHECK(st == DASHATTN_OK && strcmp(seen, "cpu") == 0,
             "DASHATTN_BACKEND=faildev, 'cpu' asked for: status %d backend '%s'", (int)st, seen);
    setenv("DASHATTN_TEST_FAILDEV_SCORE", "1", 1); /* auto alone would take cpu */
    st = try_backend(NULL, seen, sizeof(seen));
    TU_CHECK(st == DASHATTN_OK && strcmp(seen, "faildev") == 0,
             "DASHATTN_BACKEND=faildev, NULL (auto): status %d backend '%s'", (int)st, seen);
    unsetenv("DASHATTN_TEST_FAILDEV_SCORE");

    setenv("DASHATTN_BACKEND", "abitest", 1);
    st = try_backend("cpu", seen, sizeof(seen));
    TU_CHECK(st == DASHATTN_OK && strcmp(seen, "cpu") == 0,
             "DASHATTN_BACKEND=abitest, 'cpu' asked for: status %d", (int)st);
    st = try_backend("auto", NULL, 0);
    TU_CHECK(st == DASHATTN_ERR_ABI_MISMATCH, "DASHATTN_BACKEND=abitest, 'auto': status %d",
             (int)st);
    TU_CHECK(contains(dashattn_last_error(), "DASHATTN_BACKEND") ||
                 contains(dashattn_last_error(), "abitest"),
             "DASHATTN_BACKEND=abitest: the message names it: '%s'", dashattn_last_error());
    unsetenv("DASHATTN_BACKEND");

    st = try_backend("cpu", seen, sizeof(seen));
    TU_CHECK(st == DASHATTN_OK && strcmp(seen, "cpu") == 0, "cpu: status %d backend '%s'", (int)st,
             seen);
}

/* Write the first `keep` bytes of src to dst (all if keep is 0, none if < 0);
 * returns the size of src, 0 on failure. */
static long copy_prefix(const char *src, const char *dst, long keep)
{
    FILE *in = fopen(src, "rb"), *out = fopen(dst, "wb");
    long size = 0;
    int c;
    while (in && out && (c = getc(in)) != EOF) {
        if (keep == 0 || size < keep)
            putc(c, out);
        size++;
    }
    if (in)
        fclose(in);
    if (out == NULL || fclose(out) != 0)
        return 0;
    return size;
}

/* Files that are not complete plugins are skipped with a reason before
 * dlopen: a truncated copy (dlopen died of SIGBUS on it), an empty file, a
 * text file, a directory and a FIFO (opening it would wait for a writer). */
static void check_bad_plugin_files(void)
{
    char dir[] = "/tmp/dashattn-test-plugins-XXXXXX";
    if (mkdtemp(dir) == NULL) {
        TU_CHECK(0, "mkdtemp");
        return;
    }
    char src[sizeof plugin_dir + 32], path[sizeof dir + 64];
    snprintf(src, sizeof src, "%s/dashattn-faildev.so", plugin_dir);
    snprintf(path, sizeof path, "%s/dashattn-trunc.so", dir);
    const long size = copy_prefix(src, path, 5000);
    TU_CHECK(size > 5000, "faildev plugin of %ld bytes is longer than the 5000 kept", size);
    snprintf(path, sizeof path, "%s/dashattn-whole.so", dir);
    copy_prefix(src, path, 0);
    snprintf(path, sizeof path, "%s/dashattn-empty.so", dir);
    copy_prefix(src, path, -1);
    snprintf(path, sizeof path, "%s/dashattn-text.so", dir);
    FILE *f = fopen(path, "w");
    if (f) {
        fputs("INPUT(-lc)\n", f);
        fclose(f);
    }
    snprintf(path, sizeof path, "%s/dashattn-dir.so", dir);
    mkdir(path, 0700);
    snprintf(path, sizeof path, "%s/dashattn-fifo.so", dir);
    const int have_fifo = mkfifo(path, 0600) == 0;
    setenv("DASHATTN_BACKEND_PATH", dir, 1);

    static const struct {
        const char *name, *reason;
    } bad[] = {{"trunc", "truncated"},
               {"empty", "not an ELF"},
               {"text", "not an ELF"},
               {"dir", "not a regular"},
               {"fifo", "not a regular"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (strcmp(bad[i].name, "fifo") == 0 && !have_fifo)
            continue;
        const dashattn_status st = try_backend(bad[i].name, NULL, 0);
        TU_CHECK(st == DASHATTN_ERR_BACKEND_UNAVAILABLE &&
                     contains(dashattn_last_error(), bad[i].reason),
                 "plugin file '%s': status %d, message has '%s': '%s'", bad[i].name, (int)st,
                 bad[i].reason, dashattn_last_error());
    }
    /* The complete copy beside them still loads; auto and the report survive. */
    char seen[64];
    dashattn_status st = try_backend("whole", seen, sizeof seen);
    TU_CHECK(st == DASHATTN_OK && strcmp(seen, "whole") == 0, "complete copy: status %d (%s)",
             (int)st, dashattn_last_error());
    st = try_backend("auto", seen, sizeof seen);
    TU_CHECK(st == DASHATTN_OK, "auto beside bad plugin files: status %d", (int)st);
    char report[8192];
    dashattn_backends_report(report, sizeof report);
    TU_CHECK(contains(report, "trunc") && contains(report, "truncated"),
             "report says why trunc was skipped:\n%s", report);

    static const char *const names[] = {"trunc", "whole", "empty", "text", "fifo"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(path, sizeof path, "%s/dashattn-%s.so", dir, names[i]);
        unlink(path);
    }
    snprintf(path, sizeof path, "%s/dashattn-dir.so", dir);
    rmdir(path);
    rmdir(dir);
    setenv("DASHATTN_BACKEND_PATH", plugin_dir, 1);
}

/* Several directories: the first that holds the plugin wins; with none of the
 * test plugins on the path, "auto" does not pick them. */
static void check_search_path(void)
{
    char path[2 * sizeof(plugin_dir)];
    char seen[64];
    snprintf(path, sizeof(path), "/nonexistent/dashattn-test-dir:%s", plugin_dir);
    setenv("DASHATTN_BACKEND_PATH", path, 1);
    dashattn_status st = try_backend("faildev", seen, sizeof(seen));
    TU_CHECK(st == DASHATTN_OK && strcmp(seen, "faildev") == 0,
             "faildev from second path entry: status %d backend '%s' (%s)", (int)st, seen,
             dashattn_last_error());

    setenv("DASHATTN_BACKEND_PATH", "/nonexistent/dashattn-test-dir", 1);
    st = try_backend("auto", seen, sizeof(seen));
    TU_CHECK(st == DASHATTN_OK && strcmp(seen, "faildev") != 0,
             "auto without test plugins: status %d backend '%s'", (int)st, seen);
    st = try_backend("faildev", NULL, 0);
    TU_CHECK(st == DASHATTN_ERR_BACKEND_UNAVAILABLE,
             "faildev off the path: status %d, want UNAVAILABLE", (int)st);

    /* DASHATTN_PLUGIN_DIR stands in for the install directory, searched
     * after DASHATTN_BACKEND_PATH. */
    const char *installed = getenv("DASHATTN_PLUGIN_DIR");
    char saved[sizeof(plugin_dir)] = "";
    if (installed)
        snprintf(saved, sizeof(saved), "%s", installed);
    setenv("DASHATTN_PLUGIN_DIR", plugin_dir, 1);
    st = try_backend("faildev", seen, sizeof(seen));
    TU_CHECK(st == DASHATTN_OK && strcmp(seen, "faildev") == 0,
             "faildev from DASHATTN_PLUGIN_DIR: status %d backend '%s' (%s)", (int)st, seen,
             dashattn_last_error());
    char report[8192];
    dashattn_backends_report(report, sizeof(report));
    TU_CHECK(strstr(report, plugin_dir) != NULL, "report lists DASHATTN_PLUGIN_DIR: %s", report);
    if (installed)
        setenv("DASHATTN_PLUGIN_DIR", saved, 1);
    else
        unsetenv("DASHATTN_PLUGIN_DIR");
    setenv("DASHATTN_BACKEND_PATH", plugin_dir, 1);
}

int main(void)
{
    const char *build = getenv("abs_top_builddir");
    if (build == NULL || build[0] == '\0') {
        fprintf(stderr, "test_plugins: abs_top_builddir is not set (run through make check)\n");
        return TU_SKIP;
    }
    snprintf(plugin_dir, sizeof(plugin_dir), "%s/tests/plugins/.libs", build);
    setenv("DASHATTN_BACKEND_PATH", plugin_dir, 1);
    unsetenv("DASHATTN_BACKEND");

    check_abi_mismatch();
    check_no_device();
    check_missing_plugin();
    check_bad_names();
    check_failing_device();
    check_workspace_overflow();
    check_plan_refused();
    check_table_before_plan_hook();
    check_auto();
    check_report();
    check_env_override();
    check_search_path();
    check_bad_plugin_files();
    return tu_finish("test_plugins");
}
