/* SPDX-License-Identifier: MIT */
/*
 * Sizes at the edge of the address space. A plan whose workspace or whose
 * tensors would not fit is refused with a status, never sized by wrapped
 * arithmetic (a forward would then write past its workspace); tensors,
 * selections and block tables whose extent cannot be addressed are refused
 * before any backend indexes them. Nothing here allocates more than a few
 * bytes: calls that pass validation stop at a deliberately small workspace.
 * Thread counts are bounded, and a call that cannot start its threads
 * returns a status where libgomp would end the process.
 */

#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <dashattn.h>

#include "testutil.h"

static int contains(const char *haystack, const char *needle)
{
    return haystack != NULL && strstr(haystack, needle) != NULL;
}

static dashattn_context *cpu_context(int threads)
{
    dashattn_context_options opt;
    dashattn_context_options_init(&opt);
    opt.backend = "cpu";
    opt.num_threads = threads;
    dashattn_context *ctx = NULL;
    if (dashattn_context_create(&opt, &ctx) != DASHATTN_OK) {
        fprintf(stderr, "test_limits: cpu context: %s\n", dashattn_last_error());
        exit(99);
    }
    return ctx;
}

/* The plan must be refused with INVALID_ARGUMENT and a message with word. */
static void expect_refused(dashattn_context *ctx, const dashattn_problem *p, const char *what,
                           const char *word)
{
    dashattn_plan *plan = NULL;
    const dashattn_status st = dashattn_plan_create(ctx, p, &plan);
    TU_CHECK(st == DASHATTN_ERR_INVALID_ARGUMENT,
             "%s: plan status %d, want INVALID_ARGUMENT "
             "(forward workspace %zu bytes)",
             what, (int)st, dashattn_plan_operation_workspace_size(plan, DASHATTN_OP_FORWARD));
    TU_CHECK(st == DASHATTN_OK || contains(dashattn_last_error(), word),
             "%s: message mentions '%s': '%s'", what, word, dashattn_last_error());
    dashattn_plan_destroy(plan);
}

static void check_plan_overflow(void)
{
    dashattn_context *ctx = cpu_context(2);
    dashattn_problem p;

    /* The cases: the first got a 12 MB workspace that a forward
     * overran, the second one of 2.26e15 bytes for tensors of 2^71. */
    dashattn_problem_init(&p, 1 << 20, 1 << 16, 1 << 16, 1, 536862720, 1);
    p.block_size = 197376;
    expect_refused(ctx, &p, "B 2^20, H 2^16, Nk 536862720, S 197376", "address space");
    dashattn_problem_init(&p, 1 << 20, 1 << 16, 1 << 16, 1LL << 31, 1LL << 31, 256);
    expect_refused(ctx, &p, "B 2^20, H 2^16, N 2^31, D 256", "address space");

    /* Tensors of 2^59 bytes fit, but the forward's transposed key blocks
     * (32 columns per token at S = 1) need 2^64 bytes: they wrapped. */
    dashattn_problem_init(&p, 1 << 20, 1 << 16, 1 << 16, 1, 1 << 21, 1);
    p.block_size = 1;
    expect_refused(ctx, &p, "forward workspace of 2^64 bytes", "workspace");
    /* 2^63 bytes: fits size_t, not ptrdiff_t. */
    dashattn_problem_init(&p, 1 << 20, 1 << 16, 1 << 16, 1, 1 << 20, 1);
    p.block_size = 1;
    expect_refused(ctx, &p, "forward workspace of 2^63 bytes", "workspace");

    /* A long but addressable problem still plans, with a workspace that
     * holds at least its transposed keys (Nk x D floats). */
    dashattn_problem_init(&p, 1, 1, 1, 1LL << 31, 1LL << 31, 256);
    dashattn_plan *plan = NULL;
    dashattn_status st = dashattn_plan_create(ctx, &p, &plan);
    TU_CHECK(st == DASHATTN_OK, "N 2^31, D 256: plan status %d (%s)", (int)st,
             dashattn_last_error());
    if (st == DASHATTN_OK) {
        const double keys = (double)(1LL << 31) * 256.0 * 4.0;
        const size_t fwd = dashattn_plan_operation_workspace_size(plan, DASHATTN_OP_FORWARD);
        const size_t bwd = dashattn_plan_operation_workspace_size(plan, DASHATTN_OP_BACKWARD);
        TU_CHECK((double)fwd >= keys, "N 2^31: forward workspace %zu holds the keys", fwd);
        /* Each of the 2 threads accumulates its own dk and dv. */
        TU_CHECK((double)bwd >= 4.0 * keys, "N 2^31: backward workspace %zu holds 2 x (dk, dv)",
                 bwd);
        TU_CHECK(dashattn_plan_operation_workspace_size(plan, DASHATTN_OP_DECODE) == 0,
                 "a prefill plan needs no decode workspace");
        dashattn_plan_destroy(plan);
    }
    dashattn_context_destroy(ctx);
}

/* Tensors, selections and block tables whose farthest element lies beyond
 * the address space are refused by validation; before, they passed it and
 * only the small workspace stopped the call. */
static void check_extents(void)
{
    dashattn_context *ctx = cpu_context(1);
    enum { B = 2, H = 2, N = 64, D = 8 };
    dashattn_problem p;
    dashattn_problem_init(&p, B, H, H, N, N, D);
    p.block_size = 16;
    dashattn_plan *plan = NULL;
    if (dashattn_plan_create(ctx, &p, &plan) != DASHATTN_OK) {
        TU_CHECK(0, "extents: plan (%s)", dashattn_last_error());
        dashattn_context_destroy(ctx);
        return;
    }
    static float data[B * H * N * D], out_data[B * H * N * D], lse[B * H * N];
    char workspace[1];
    dashattn_tensor q = dashattn_tensor_bhsd(data, DASHATTN_F32, B, H, N, D);
    dashattn_tensor k = q, v = q;
    dashattn_tensor out = dashattn_tensor_bhsd(out_data, DASHATTN_F32, B, H, N, D);

    /* Valid arguments reach the workspace check. */
    dashattn_status st = dashattn_forward(ctx, plan, &q, &k, &v, NULL, &out, lse, NULL, NULL,
                                          workspace, sizeof workspace, NULL);
    TU_CHECK(st == DASHATTN_ERR_WORKSPACE_TOO_SMALL, "extents baseline: status %d (%s)", (int)st,
             dashattn_last_error());

    int32_t index[8];
    dashattn_selection sel = {index, NULL, NULL, INT64_MAX / 2};
    st = dashattn_forward(ctx, plan, &q, &k, &v, NULL, &out, lse, &sel, NULL, workspace,
                          sizeof workspace, NULL);
    TU_CHECK(st == DASHATTN_ERR_INVALID_ARGUMENT && contains(dashattn_last_error(), "max_blocks"),
             "selection->max_blocks 2^62: status %d (%s)", (int)st, dashattn_last_error());
    dashattn_plan_destroy(plan);

    /* Strides of 2^48 (the largest allowed) on every dimension of a k of
     * 2^16 x 2^16 rows reach past 2^64 elements; zero strides read one. */
    dashattn_problem_init(&p, 1 << 16, 1, 1, 1 << 16, 1 << 16, 256);
    if (dashattn_plan_create(ctx, &p, &plan) == DASHATTN_OK) {
        const dashattn_tensor one = {data, DASHATTN_F32, {1 << 16, 1, 1 << 16, 256}, {0, 0, 0, 0}};
        dashattn_tensor far = one;
        for (int i = 0; i < 4; i++)
            far.strides[i] = 1LL << 48;
        st = dashattn_forward(ctx, plan, &one, &far, &one, NULL, &one, NULL, NULL, NULL, workspace,
                              sizeof workspace, NULL);
        TU_CHECK(st == DASHATTN_ERR_INVALID_ARGUMENT && contains(dashattn_last_error(), "k spans"),
                 "k spanning 2^48 x (B + N + D): status %d (%s)", (int)st, dashattn_last_error());
        dashattn_plan_destroy(plan);
    } else {
        TU_CHECK(0, "extents: large plan (%s)", dashattn_last_error());
    }
    /* A paged cache whose block table (batch x table_stride) is unaddressable. */
    dashattn_problem dp;
    dashattn_problem_init(&dp, B, H, H, 1, N, D);
    dp.block_size = 16;
    if (dashattn_plan_create(ctx, &dp, &plan) == DASHATTN_OK) {
        static float pages_k[4 * H * 16 * D], pages_v[4 * H * 16 * D], keys[4 * H * D];
        int32_t seq_lens[B] = {1, 1}, table[B * 4] = {0, 1, 2, 3, 0, 1, 2, 3};
        dashattn_kv_cache cache = {
            .layout = DASHATTN_CACHE_PAGED,
            .k = dashattn_tensor_bhsd(pages_k, DASHATTN_F32, 4, H, 16, D),
            .v = dashattn_tensor_bhsd(pages_v, DASHATTN_F32, 4, H, 16, D),
            .block_keys = dashattn_tensor_bhsd(keys, DASHATTN_F32, 4, H, 1, D),
            .seq_lens = seq_lens,
            .block_table = table,
            .table_stride = 4,
        };
        dashattn_tensor q1 = dashattn_tensor_bhsd(data, DASHATTN_F32, B, H, 1, D);
        dashattn_tensor o1 = dashattn_tensor_bhsd(out_data, DASHATTN_F32, B, H, 1, D);
        st = dashattn_decode(ctx, plan, &q1, &cache, &o1, NULL, workspace, sizeof workspace, NULL);
        TU_CHECK(st == DASHATTN_ERR_WORKSPACE_TOO_SMALL, "paged baseline: status %d (%s)", (int)st,
                 dashattn_last_error());
        cache.table_stride = INT64_MAX / 2;
        st = dashattn_decode(ctx, plan, &q1, &cache, &o1, NULL, workspace, sizeof workspace, NULL);
        TU_CHECK(st == DASHATTN_ERR_INVALID_ARGUMENT &&
                     contains(dashattn_last_error(), "table_stride"),
                 "table_stride 2^62: status %d (%s)", (int)st, dashattn_last_error());
        dashattn_plan_destroy(plan);
    } else {
        TU_CHECK(0, "decode plan (%s)", dashattn_last_error());
    }
    dashattn_context_destroy(ctx);
}

static void check_thread_bounds(void)
{
    static const int bad[] = {DASHATTN_MAX_THREADS + 1, 50000, 100000, -1};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        dashattn_context_options opt;
        dashattn_context_options_init(&opt);
        opt.backend = "cpu";
        opt.num_threads = bad[i];
        dashattn_context *ctx = NULL;
        const dashattn_status st = dashattn_context_create(&opt, &ctx);
        TU_CHECK(st == DASHATTN_ERR_INVALID_ARGUMENT && ctx == NULL &&
                     contains(dashattn_last_error(), "num_threads"),
                 "num_threads %d: status %d (%s)", bad[i], (int)st, dashattn_last_error());
        dashattn_context_destroy(ctx);
    }
    /* The bound itself is accepted (creating the context starts no thread). */
    dashattn_context *ctx = cpu_context(DASHATTN_MAX_THREADS);
    const int n = dashattn_context_num_threads(ctx);
    TU_CHECK(n == DASHATTN_MAX_THREADS || n == 1, "num_threads at the bound: %d", n);
    dashattn_context_destroy(ctx);
}

/* Bytes of address space in use, from /proc/self/statm (0 if unknown). */
static size_t address_space_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long pages = 0;
    if (!f)
        return 0;
    if (fscanf(f, "%lu", &pages) != 1)
        pages = 0;
    fclose(f);
    return (size_t)pages * (size_t)sysconf(_SC_PAGESIZE);
}

/* In a child: with the address space limited to what is in use plus less
 * than one thread stack, a forward on 4 threads must fail with
 * OUT_OF_MEMORY (libgomp would exit with "Thread creation failed") and one
 * on 1 thread must still work. Returns the child's verdict: 0 passed, 77
 * not testable here, else failed. Must run before any parallel region of
 * this process: libgomp's thread pool does not survive fork. */
static int thread_start_child(void)
{
    enum { N = 32, D = 8 };
    static float q[N * D], o[N * D];
    for (int i = 0; i < N * D; i++)
        q[i] = (float)(i % 7) * 0.25f;
    dashattn_context *ctx4 = cpu_context(4), *ctx1 = cpu_context(1);
    if (dashattn_context_num_threads(ctx4) != 4)
        return 77; /* built without OpenMP */
    dashattn_problem p;
    dashattn_problem_init(&p, 1, 1, 1, N, N, D);
    p.block_size = 8;
    dashattn_plan *plan4 = NULL, *plan1 = NULL;
    if (dashattn_plan_create(ctx4, &p, &plan4) != DASHATTN_OK ||
        dashattn_plan_create(ctx1, &p, &plan1) != DASHATTN_OK)
        return 2;
    const dashattn_tensor t = dashattn_tensor_bhsd(q, DASHATTN_F32, 1, 1, N, D);
    const dashattn_tensor out = dashattn_tensor_bhsd(o, DASHATTN_F32, 1, 1, N, D);
    pthread_attr_t attr;
    size_t stack = 0;
    pthread_attr_init(&attr);
    pthread_attr_getstacksize(&attr, &stack);
    pthread_attr_destroy(&attr);
    const size_t used = address_space_bytes();
    if (used == 0 || stack < ((size_t)1 << 20))
        return 77;
    /* Room for the calls' small allocations, not for one more stack. */
    const struct rlimit lim = {used + stack / 2, used + stack / 2};
    if (setrlimit(RLIMIT_AS, &lim) != 0)
        return 77;
    dashattn_status st =
        dashattn_forward(ctx4, plan4, &t, &t, &t, NULL, &out, NULL, NULL, NULL, NULL, 0, NULL);
    if (st != DASHATTN_ERR_OUT_OF_MEMORY || !contains(dashattn_last_error(), "threads")) {
        fprintf(stderr, "test_limits: 4 threads without room for stacks: status %d (%s)\n", (int)st,
                dashattn_last_error());
        return 3;
    }
    st = dashattn_forward(ctx1, plan1, &t, &t, &t, NULL, &out, NULL, NULL, NULL, NULL, 0, NULL);
    if (st != DASHATTN_OK) {
        fprintf(stderr, "test_limits: 1 thread: status %d (%s)\n", (int)st, dashattn_last_error());
        return 4;
    }
    return 0;
}

static void check_thread_start_failure(void)
{
#ifdef TU_UNDER_ASAN
    printf("test_limits: thread start under RLIMIT_AS not tested (AddressSanitizer)\n");
#else
    fflush(NULL);
    const pid_t pid = fork();
    if (pid == 0)
        _exit(thread_start_child());
    int status = 0;
    TU_CHECK(pid > 0 && waitpid(pid, &status, 0) == pid, "fork and wait");
    if (pid <= 0)
        return;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 77) {
        printf("test_limits: thread start under RLIMIT_AS not testable here\n");
        return;
    }
    TU_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
             "thread start failure: child %s %d (1 is libgomp's exit)",
             WIFEXITED(status) ? "exited with" : "killed by signal",
             WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
#endif
}

int main(void)
{
    /* First: no parallel region may have run in this process before. */
    check_thread_start_failure();
    check_thread_bounds();
    check_plan_overflow();
    check_extents();
    return tu_finish("test_limits");
}
