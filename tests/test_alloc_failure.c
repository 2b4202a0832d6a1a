/* SPDX-License-Identifier: MIT */
/*
 * Running out of memory on the CPU backend. This program replaces malloc and
 * friends (the executable's definitions win over libc's for every library
 * in the process): an armed counter fails the n-th allocation. For context
 * and plan creation, forward, backward, cache append and decode, each with
 * n = 1, 2, ... until the call makes fewer than n allocations, the call must
 * either succeed (an allocation it can do without, such as reading
 * /proc/cpuinfo for the device name) or return DASHATTN_ERR_OUT_OF_MEMORY
 * with a message; it must free what it allocated (live blocks before and
 * after are counted) and leave its outputs (filled with a sentinel) and the
 * cache untouched. Every call runs once before being tested, so OpenMP's
 * own caches (its team and thread pool, which it allocates on first use and
 * whose allocation failure libgomp answers with exit) are in place.
 * Skipped under AddressSanitizer, which owns malloc itself.
 */
#define _GNU_SOURCE

#include <errno.h>
#include <malloc.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dashattn.h>

#include "testutil.h"

#if !defined(TU_UNDER_ASAN) && defined(__GLIBC__)

/* ---- the counting allocator ---- */

void *__libc_malloc(size_t size);
void *__libc_calloc(size_t count, size_t size);
void *__libc_realloc(void *ptr, size_t size);
void *__libc_memalign(size_t alignment, size_t size);
void __libc_free(void *ptr);

static atomic_long fail_at;  /* 0: disarmed; else the allocation to fail */
static atomic_long seen;     /* allocations since arming */
static atomic_long live;     /* blocks handed out and not freed */
static atomic_long failures; /* allocations failed on purpose */

/* Whether this allocation is the one to fail. */
static int failing(void)
{
    if (atomic_load(&fail_at) == 0)
        return 0;
    if (atomic_fetch_add(&seen, 1) + 1 != atomic_load(&fail_at))
        return 0;
    atomic_fetch_add(&failures, 1);
    errno = ENOMEM;
    return 1;
}

static void *counted(void *p)
{
    if (p != NULL)
        atomic_fetch_add(&live, 1);
    return p;
}

void *malloc(size_t size)
{
    return failing() ? NULL : counted(__libc_malloc(size));
}

void *calloc(size_t count, size_t size)
{
    return failing() ? NULL : counted(__libc_calloc(count, size));
}

void *realloc(void *ptr, size_t size)
{
    if (failing())
        return NULL;
    void *p = __libc_realloc(ptr, size);
    if (ptr == NULL)
        return counted(p);
    if (p == NULL && size == 0)
        atomic_fetch_sub(&live, 1); /* realloc(p, 0) freed p */
    return p;
}

void free(void *ptr)
{
    if (ptr != NULL)
        atomic_fetch_sub(&live, 1);
    __libc_free(ptr);
}

void *memalign(size_t alignment, size_t size)
{
    return failing() ? NULL : counted(__libc_memalign(alignment, size));
}

void *aligned_alloc(size_t alignment, size_t size)
{
    return memalign(alignment, size);
}

int posix_memalign(void **out, size_t alignment, size_t size)
{
    void *p = memalign(alignment, size);
    if (p == NULL)
        return ENOMEM;
    *out = p;
    return 0;
}

/* ---- the calls under test ---- */

enum { B = 2, HQ = 4, HKV = 2, N = 96, D = 16, S = 16, CAP = 64 };

typedef struct fixture {
    dashattn_context *ctx;
    dashattn_plan *plan, *dplan;
    float *q, *k, *v, *out, *lse, *dout, *dq, *dk, *dv;
    dashattn_tensor tq, tk, tv, tout, tdout, tdq, tdk, tdv;
    /* Decode: a contiguous cache of CAP tokens, one new token per step. */
    float *ck, *cv, *cbk, *q1, *o1, *kn, *vn;
    int32_t seq_lens[B];
    dashattn_kv_cache cache;
    dashattn_tensor tq1, to1, tkn, tvn;
} fixture;

#define SENTINEL 0x5A

static int untouched(const float *p, size_t n)
{
    const unsigned char *b = (const unsigned char *)p;
    for (size_t i = 0; i < n * sizeof(float); i++)
        if (b[i] != SENTINEL)
            return 0;
    return 1;
}

static const size_t QN = (size_t)B * HQ * N * D, KN = (size_t)B * HKV * N * D;

static void setup(fixture *f)
{
    dashattn_context_options opt;
    dashattn_context_options_init(&opt);
    opt.backend = "cpu";
    opt.num_threads = 2;
    if (dashattn_context_create(&opt, &f->ctx) != DASHATTN_OK) {
        fprintf(stderr, "test_alloc_failure: context: %s\n", dashattn_last_error());
        exit(99);
    }
    dashattn_problem p;
    dashattn_problem_init(&p, B, HQ, HKV, N, N, D);
    p.block_size = S;
    dashattn_problem dp;
    dashattn_problem_init(&dp, B, HQ, HKV, 1, CAP, D);
    dp.block_size = S;
    if (dashattn_plan_create(f->ctx, &p, &f->plan) != DASHATTN_OK ||
        dashattn_plan_create(f->ctx, &dp, &f->dplan) != DASHATTN_OK) {
        fprintf(stderr, "test_alloc_failure: plan: %s\n", dashattn_last_error());
        exit(99);
    }
    f->q = tu_random_floats(1, QN, 1.0);
    f->k = tu_random_floats(2, KN, 1.0);
    f->v = tu_random_floats(3, KN, 1.0);
    f->dout = tu_random_floats(4, QN, 1.0);
    f->out = tu_xcalloc(QN, sizeof(float));
    f->lse = tu_xcalloc((size_t)B * HQ * N, sizeof(float));
    f->dq = tu_xcalloc(QN, sizeof(float));
    f->dk = tu_xcalloc(KN, sizeof(float));
    f->dv = tu_xcalloc(KN, sizeof(float));
    f->tq = dashattn_tensor_bhsd(f->q, DASHATTN_F32, B, HQ, N, D);
    f->tk = dashattn_tensor_bhsd(f->k, DASHATTN_F32, B, HKV, N, D);
    f->tv = dashattn_tensor_bhsd(f->v, DASHATTN_F32, B, HKV, N, D);
    f->tout = dashattn_tensor_bhsd(f->out, DASHATTN_F32, B, HQ, N, D);
    f->tdout = dashattn_tensor_bhsd(f->dout, DASHATTN_F32, B, HQ, N, D);
    f->tdq = dashattn_tensor_bhsd(f->dq, DASHATTN_F32, B, HQ, N, D);
    f->tdk = dashattn_tensor_bhsd(f->dk, DASHATTN_F32, B, HKV, N, D);
    f->tdv = dashattn_tensor_bhsd(f->dv, DASHATTN_F32, B, HKV, N, D);

    f->ck = tu_xcalloc((size_t)B * HKV * CAP * D, sizeof(float));
    f->cv = tu_xcalloc((size_t)B * HKV * CAP * D, sizeof(float));
    f->cbk = tu_xcalloc((size_t)B * HKV * (CAP / S) * D, sizeof(float));
    f->q1 = tu_random_floats(5, (size_t)B * HQ * D, 1.0);
    f->o1 = tu_xcalloc((size_t)B * HQ * D, sizeof(float));
    f->kn = tu_random_floats(6, (size_t)B * HKV * D, 1.0);
    f->vn = tu_random_floats(7, (size_t)B * HKV * D, 1.0);
    f->cache.layout = DASHATTN_CACHE_CONTIGUOUS;
    f->cache.k = dashattn_tensor_bhsd(f->ck, DASHATTN_F32, B, HKV, CAP, D);
    f->cache.v = dashattn_tensor_bhsd(f->cv, DASHATTN_F32, B, HKV, CAP, D);
    f->cache.block_keys = dashattn_tensor_bhsd(f->cbk, DASHATTN_F32, B, HKV, CAP / S, D);
    f->cache.seq_lens = f->seq_lens;
    f->tq1 = dashattn_tensor_bhsd(f->q1, DASHATTN_F32, B, HQ, 1, D);
    f->to1 = dashattn_tensor_bhsd(f->o1, DASHATTN_F32, B, HQ, 1, D);
    f->tkn = dashattn_tensor_bhsd(f->kn, DASHATTN_F32, B, HKV, 1, D);
    f->tvn = dashattn_tensor_bhsd(f->vn, DASHATTN_F32, B, HKV, 1, D);
    f->seq_lens[0] = 0;
    f->seq_lens[1] = 0;
    /* A few tokens in the cache, so decode has blocks to read. */
    for (int t = 0; t < 20; t++)
        if (dashattn_cache_append(f->ctx, f->dplan, &f->cache, &f->tkn, &f->tvn, NULL, NULL) !=
            DASHATTN_OK) {
            fprintf(stderr, "test_alloc_failure: append: %s\n", dashattn_last_error());
            exit(99);
        }
}

static void teardown(fixture *f)
{
    dashattn_plan_destroy(f->plan);
    dashattn_plan_destroy(f->dplan);
    dashattn_context_destroy(f->ctx);
    float *all[] = {f->q,  f->k,  f->v,  f->out, f->lse, f->dout, f->dq, f->dk,
                    f->dv, f->ck, f->cv, f->cbk, f->q1,  f->o1,   f->kn, f->vn};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        free(all[i]);
}

typedef enum op { OP_FORWARD, OP_BACKWARD, OP_APPEND, OP_DECODE } op;
static const char *const op_names[] = {"forward", "backward", "cache append", "decode"};

/* The outputs of an operation, poisoned before each try. */
static void poison(fixture *f, op o)
{
    switch (o) {
    case OP_FORWARD:
        memset(f->out, SENTINEL, QN * sizeof(float));
        memset(f->lse, SENTINEL, (size_t)B * HQ * N * sizeof(float));
        break;
    case OP_BACKWARD:
        memset(f->dq, SENTINEL, QN * sizeof(float));
        memset(f->dk, SENTINEL, KN * sizeof(float));
        memset(f->dv, SENTINEL, KN * sizeof(float));
        break;
    case OP_APPEND:
        break;
    case OP_DECODE:
        memset(f->o1, SENTINEL, (size_t)B * HQ * D * sizeof(float));
        break;
    }
}

static int outputs_untouched(const fixture *f, op o, int32_t len0)
{
    switch (o) {
    case OP_FORWARD:
        return untouched(f->out, QN) && untouched(f->lse, (size_t)B * HQ * N);
    case OP_BACKWARD:
        return untouched(f->dq, QN) && untouched(f->dk, KN) && untouched(f->dv, KN);
    case OP_APPEND:
        return f->seq_lens[0] == len0 && f->seq_lens[1] == len0;
    case OP_DECODE:
        return untouched(f->o1, (size_t)B * HQ * D);
    }
    return 0;
}

/* Backward reads a forward's out and lse: kept apart from forward's. */
static float *bwd_out, *bwd_lse;

static dashattn_status run(fixture *f, op o, int own_workspace, void *ws, size_t ws_size)
{
    void *w = own_workspace ? ws : NULL;
    const size_t ws_n = own_workspace ? ws_size : 0;
    switch (o) {
    case OP_FORWARD:
        return dashattn_forward(f->ctx, f->plan, &f->tq, &f->tk, &f->tv, NULL, &f->tout, f->lse,
                                NULL, NULL, w, ws_n, NULL);
    case OP_BACKWARD: {
        const dashattn_tensor to = dashattn_tensor_bhsd(bwd_out, DASHATTN_F32, B, HQ, N, D);
        return dashattn_backward(f->ctx, f->plan, &f->tq, &f->tk, &f->tv, NULL, &to, bwd_lse,
                                 &f->tdout, &f->tdq, &f->tdk, &f->tdv, NULL, w, ws_n, NULL);
    }
    case OP_APPEND:
        return dashattn_cache_append(f->ctx, f->dplan, &f->cache, &f->tkn, &f->tvn, NULL, NULL);
    case OP_DECODE:
        return dashattn_decode(f->ctx, f->dplan, &f->tq1, &f->cache, &f->to1, NULL, w, ws_n, NULL);
    }
    return DASHATTN_ERR_INTERNAL;
}

/* Fail allocation n = 1, 2, ... of one operation until it makes fewer. */
static void check_operation(fixture *f, op o, int own_workspace)
{
    const char *what = op_names[o];
    const dashattn_plan *plan = o == OP_FORWARD || o == OP_BACKWARD ? f->plan : f->dplan;
    const size_t ws_size = dashattn_plan_workspace_size(plan);
    void *ws = NULL;
    if (own_workspace && dashattn_memory_alloc(f->ctx, ws_size, &ws) != DASHATTN_OK) {
        TU_CHECK(0, "%s: workspace", what);
        return;
    }
    TU_CHECK(run(f, o, own_workspace, ws, ws_size) == DASHATTN_OK, "%s: warm-up call (%s)", what,
             dashattn_last_error());
    int done = 0;
    for (long n = 1; n <= 1000 && !done; n++) {
        if (o == OP_APPEND && f->seq_lens[0] >= CAP - 1) {
            f->seq_lens[0] = f->seq_lens[1] = 20; /* rewind; the blocks stay valid */
        }
        const int32_t len0 = f->seq_lens[0];
        poison(f, o);
        const long before = atomic_load(&live), failed_before = atomic_load(&failures);
        atomic_store(&seen, 0);
        atomic_store(&fail_at, n);
        const dashattn_status st = run(f, o, own_workspace, ws, ws_size);
        atomic_store(&fail_at, 0);
        const int injected = atomic_load(&failures) > failed_before;
        const long leaked = atomic_load(&live) - before;
        TU_CHECK(leaked == 0, "%s (%s workspace), allocation %ld failing: %ld blocks leaked", what,
                 own_workspace ? "own" : "NULL", n, leaked);
        if (!injected) {
            TU_CHECK(st == DASHATTN_OK, "%s: %ld allocations made, then status %d (%s)", what,
                     n - 1, (int)st, dashattn_last_error());
            TU_CHECK(own_workspace || o == OP_APPEND || n > 1,
                     "%s with a NULL workspace allocates it", what);
            printf("test_alloc_failure: %s (%s workspace): %ld allocations, each failed once\n",
                   what, own_workspace ? "own" : "NULL", n - 1);
            done = 1;
        } else if (st == DASHATTN_OK) {
            /* Nothing it needed failed (it may not even have been ours). */
        } else {
            TU_CHECK(st == DASHATTN_ERR_OUT_OF_MEMORY && dashattn_last_error()[0] != '\0',
                     "%s, allocation %ld failing: status %d (%s), want OUT_OF_MEMORY", what, n,
                     (int)st, dashattn_last_error());
            TU_CHECK(outputs_untouched(f, o, len0), "%s, allocation %ld failing: outputs untouched",
                     what, n);
        }
    }
    TU_CHECK(done, "%s: still allocating after 1000 allocations", what);
    dashattn_memory_free(f->ctx, ws);
}

/* Creating contexts and plans: OUT_OF_MEMORY (with the result NULL) or OK,
 * nothing leaked either way once the object is destroyed. */
static void check_creation(void)
{
    int done = 0;
    for (long n = 1; n <= 1000 && !done; n++) {
        const long before = atomic_load(&live), failed_before = atomic_load(&failures);
        atomic_store(&seen, 0);
        atomic_store(&fail_at, n);
        dashattn_context_options opt;
        dashattn_context_options_init(&opt);
        opt.backend = "cpu";
        opt.num_threads = 2;
        dashattn_context *ctx = (dashattn_context *)&opt;
        dashattn_status st = dashattn_context_create(&opt, &ctx);
        dashattn_plan *plan = (dashattn_plan *)&opt;
        dashattn_status pst = DASHATTN_ERR_INTERNAL;
        if (st == DASHATTN_OK) {
            dashattn_problem p;
            dashattn_problem_init(&p, 1, 2, 1, 8, 8, 4);
            pst = dashattn_plan_create(ctx, &p, &plan);
        }
        atomic_store(&fail_at, 0);
        const int injected = atomic_load(&failures) > failed_before;
        TU_CHECK(st == DASHATTN_OK || (st == DASHATTN_ERR_OUT_OF_MEMORY && ctx == NULL),
                 "context creation, allocation %ld failing: status %d, context %p", n, (int)st,
                 (void *)ctx);
        TU_CHECK(st != DASHATTN_OK || pst == DASHATTN_OK ||
                     (pst == DASHATTN_ERR_OUT_OF_MEMORY && plan == NULL),
                 "plan creation, allocation %ld failing: status %d", n, (int)pst);
        if (pst == DASHATTN_OK)
            dashattn_plan_destroy(plan);
        if (st == DASHATTN_OK)
            dashattn_context_destroy(ctx);
        TU_CHECK(atomic_load(&live) == before, "creation, allocation %ld failing: %ld leaked", n,
                 atomic_load(&live) - before);
        done = !injected;
        if (done)
            printf("test_alloc_failure: context and plan creation: %ld allocations, each failed "
                   "once\n",
                   n - 1);
    }
    TU_CHECK(done, "creation: still allocating after 1000 allocations");
}

int main(void)
{
    /* The replacement must be the allocator the library uses. */
    dashattn_context_options opt;
    dashattn_context_options_init(&opt);
    opt.backend = "cpu";
    dashattn_context *ctx = NULL;
    void *p = NULL;
    if (dashattn_context_create(&opt, &ctx) != DASHATTN_OK)
        return 99;
    atomic_store(&seen, 0);
    atomic_store(&fail_at, 1);
    const dashattn_status st = dashattn_memory_alloc(ctx, 1000, &p);
    atomic_store(&fail_at, 0);
    TU_CHECK(st == DASHATTN_ERR_OUT_OF_MEMORY && p == NULL,
             "the library allocates through this program's malloc (status %d)", (int)st);
    dashattn_context_destroy(ctx);

    check_creation();
    fixture f;
    memset(&f, 0, sizeof f);
    setup(&f);
    bwd_out = tu_xcalloc(QN, sizeof(float));
    bwd_lse = tu_xcalloc((size_t)B * HQ * N, sizeof(float));
    const dashattn_tensor to = dashattn_tensor_bhsd(bwd_out, DASHATTN_F32, B, HQ, N, D);
    TU_CHECK(dashattn_forward(f.ctx, f.plan, &f.tq, &f.tk, &f.tv, NULL, &to, bwd_lse, NULL, NULL,
                              NULL, 0, NULL) == DASHATTN_OK,
             "forward for the backward");
    for (op o = OP_FORWARD; o <= OP_DECODE; o++)
        for (int own = 0; own <= (o != OP_APPEND); own++)
            check_operation(&f, o, own);
    free(bwd_out);
    free(bwd_lse);
    teardown(&f);
    return tu_finish("test_alloc_failure");
}

#else

int main(void)
{
    printf("test_alloc_failure: skipped (AddressSanitizer owns malloc, or not glibc)\n");
    return TU_SKIP;
}

#endif
