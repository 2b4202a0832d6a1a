/* SPDX-License-Identifier: MIT */
/* Fuzz target: problem validation and planning on the CPU backend, then the
 * argument checks of forward, backward and decode, on a problem and tensor
 * strides decoded from the input. Nothing may crash, and:
 * - a plan's workspaces fit the address space and hold at least what the
 *   layout must (no size computed modulo 2^64);
 * - every call is given a workspace of 1 byte, so it must fail (before
 *   touching the tensors, which point at a small dummy buffer) with a
 *   status and a message.
 * Input format: a flags byte saying which problem fields follow (others keep
 * dashattn_problem_init's defaults), the fields, then a layout choice per
 * tensor. Values come from small tagged encodings (see next_size), so that
 * both ordinary and extreme values are a few bytes away. */
#include <dashattn.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct reader {
    const uint8_t *p;
    size_t n;
} reader;

static uint8_t next_byte(reader *r)
{
    if (r->n == 0)
        return 0;
    r->n--;
    return *r->p++;
}

static uint64_t next_raw(reader *r)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)next_byte(r) << (8 * i);
    return v;
}

/* A small value, a power of two plus a small offset, any 64-bit value, or a
 * small negative one. */
static int64_t next_size(reader *r)
{
    const uint8_t tag = next_byte(r);
    switch (tag & 3) {
    case 0:
        return next_byte(r);
    case 1: {
        const int shift = next_byte(r) % 63;
        const int8_t offset = (int8_t)next_byte(r);
        return (int64_t)(((uint64_t)1 << shift) + (uint64_t)(int64_t)offset);
    }
    case 2:
        return (int64_t)next_raw(r);
    default:
        return -(int64_t)next_byte(r);
    }
}

static int32_t next_int32(reader *r)
{
    const int64_t v = next_size(r);
    return v > INT32_MAX ? INT32_MAX : v < INT32_MIN ? INT32_MIN : (int32_t)v;
}

static double next_real(reader *r)
{
    const uint8_t tag = next_byte(r);
    switch (tag % 8) {
    case 0:
        return 0.0;
    case 1:
        return 1.0;
    case 2:
        return 1.5;
    case 3:
        return 2.0;
    case 4:
        return next_byte(r) / 64.0;
    case 5: {
        const uint64_t bits = next_raw(r);
        double d;
        memcpy(&d, &bits, sizeof d);
        return d;
    }
    case 6:
        return -(double)next_byte(r);
    default:
        return 1e6;
    }
}

static void fill_problem(reader *r, dashattn_problem *p)
{
    const uint8_t shape = next_byte(r), fields = next_byte(r), more = next_byte(r);
    int64_t dim[6] = {1, 2, 1, 64, 64, 8};
    for (int i = 0; i < 6; i++)
        if (shape & (1u << i))
            dim[i] = next_size(r);
    dashattn_problem_init(p, dim[0], dim[1], dim[2], dim[3], dim[4], dim[5]);
    if (fields & 1)
        p->dtype = (dashattn_dtype)(next_byte(r) % 4);
    if (fields & 2)
        p->causal = next_byte(r) % 3;
    if (fields & 4)
        p->block_size = next_int32(r);
    if (fields & 8)
        p->n_sink = next_int32(r);
    if (fields & 16)
        p->n_local = next_int32(r);
    if (fields & 32)
        p->alpha = next_real(r);
    if (fields & 64) {
        p->selection = (dashattn_selection_mode)(next_byte(r) % 3);
        p->topk = next_int32(r);
    }
    if (fields & 128)
        p->group_mode = (dashattn_group_mode)(next_byte(r) % 4);
    if (more & 1)
        p->scale = next_real(r);
    if (more & 2)
        p->stage1_scale = next_real(r);
    if (more & 4) {
        p->prior = (dashattn_prior_mode)(next_byte(r) % 3);
        p->prior_sigma = next_real(r);
    }
    if (more & 8) {
        p->threshold_schedule = (dashattn_threshold_schedule)(next_byte(r) % 3);
        p->halley_steps = next_int32(r);
    }
}

/* Stands in for every array: validation never reads it. */
static _Alignas(64) unsigned char dummy[256];

static dashattn_tensor next_tensor(reader *r, dashattn_dtype dtype, int64_t b, int64_t h, int64_t n,
                                   int64_t d)
{
    dashattn_tensor t = dashattn_tensor_bhsd(dummy, dtype, b, h, n, d);
    switch (next_byte(r) % 4) {
    case 0:
        break;
    case 1:
        t = dashattn_tensor_bshd(dummy, dtype, b, h, n, d);
        break;
    case 2:
        memset(t.strides, 0, sizeof t.strides);
        break;
    default:
        for (int i = 0; i < 4; i++)
            t.strides[i] = next_size(r);
    }
    return t;
}

static void expect_refused(dashattn_status st)
{
    if (st == DASHATTN_OK || st < DASHATTN_ERR_INVALID_ARGUMENT || st > DASHATTN_ERR_INTERNAL ||
        dashattn_last_error()[0] == '\0')
        abort();
}

static void check_plan(const dashattn_plan *plan, const dashattn_problem *asked)
{
    const dashattn_problem *p = dashattn_plan_problem(plan);
    const int64_t m = dashattn_plan_num_blocks(plan);
    if (m != (asked->len_k + asked->block_size - 1) / asked->block_size)
        abort();
    const size_t fwd = dashattn_plan_operation_workspace_size(plan, DASHATTN_OP_FORWARD);
    const size_t bwd = dashattn_plan_operation_workspace_size(plan, DASHATTN_OP_BACKWARD);
    const size_t dec = dashattn_plan_operation_workspace_size(plan, DASHATTN_OP_DECODE);
    if (fwd > PTRDIFF_MAX || bwd > PTRDIFF_MAX || dec > PTRDIFF_MAX)
        abort();
    /* The forward keeps every block key, the backward (one thread) dk and dv. */
    const long double keys = (long double)p->batch * (long double)p->heads_kv * (long double)m *
                             (long double)p->head_dim * 4.0L;
    const long double kv = (long double)p->len_k * (long double)p->head_dim * 8.0L;
    if ((long double)fwd < keys || (long double)bwd < kv)
        abort();
    if ((dec != 0) != (p->len_q == 1 && p->causal))
        abort();
    if (!(p->scale > 0.0 && p->stage1_scale > 0.0))
        abort();
}

static void check_calls(dashattn_context *ctx, const dashattn_plan *plan, reader *r)
{
    const dashattn_problem *p = dashattn_plan_problem(plan);
    const dashattn_dtype dt = p->dtype;
    const int64_t b = p->batch, hq = p->heads_q, hkv = p->heads_kv, nq = p->len_q;
    const int64_t nk = p->len_k, d = p->head_dim;
    char ws[1];
    const dashattn_tensor q = next_tensor(r, dt, b, hq, nq, d);
    const dashattn_tensor k = next_tensor(r, dt, b, hkv, nk, d);
    const dashattn_tensor v = next_tensor(r, dt, b, hkv, nk, d);
    const dashattn_tensor out = next_tensor(r, dt, b, hq, nq, d);
    const dashattn_tensor h = next_tensor(r, DASHATTN_F32, 1, hkv, 1, d);
    const int with_h = next_byte(r) & 1;
    dashattn_selection sel = {(int32_t *)(void *)dummy, NULL, NULL, next_size(r)};
    expect_refused(dashattn_forward(ctx, plan, &q, &k, &v, with_h ? &h : NULL, &out,
                                    (float *)(void *)dummy, (next_byte(r) & 1) ? &sel : NULL, NULL,
                                    ws, sizeof ws, NULL));
    expect_refused(dashattn_backward(ctx, plan, &q, &k, &v, with_h ? &h : NULL, &q,
                                     (const float *)(const void *)dummy, &q, &out, &k, &v,
                                     with_h ? &h : NULL, ws, sizeof ws, NULL));

    dashattn_kv_cache cache;
    memset(&cache, 0, sizeof cache);
    cache.layout = (dashattn_cache_layout)(next_byte(r) % 3);
    const int64_t rows = cache.layout == DASHATTN_CACHE_PAGED ? next_size(r) : b;
    const int64_t len = cache.layout == DASHATTN_CACHE_PAGED ? p->block_size : nk;
    const int64_t keys = cache.layout == DASHATTN_CACHE_PAGED ? 1 : nk / p->block_size;
    cache.k = next_tensor(r, dt, rows, hkv, len, d);
    cache.v = next_tensor(r, dt, rows, hkv, len, d);
    cache.block_keys = next_tensor(r, DASHATTN_F32, rows, hkv, keys, d);
    cache.seq_lens = (int32_t *)(void *)dummy;
    cache.block_table = (const int32_t *)(const void *)dummy;
    cache.table_stride = next_size(r);
    expect_refused(dashattn_decode(ctx, plan, &q, &cache, &out, NULL, ws, sizeof ws, NULL));
}

/* One context for every input, made before fuzzing starts (so that it is
 * not taken for a leak of the first input). */
static dashattn_context *ctx;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    dashattn_context_options opt;
    dashattn_context_options_init(&opt);
    opt.backend = "cpu";
    opt.num_threads = 1;
    if (dashattn_context_create(&opt, &ctx) != DASHATTN_OK)
        abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    reader r = {data, size};
    dashattn_problem problem;
    fill_problem(&r, &problem);
    dashattn_plan *plan = NULL;
    const dashattn_status st = dashattn_plan_create(ctx, &problem, &plan);
    if (st != DASHATTN_OK) {
        if (plan != NULL || dashattn_last_error()[0] == '\0')
            abort();
        return 0;
    }
    check_plan(plan, &problem);
    check_calls(ctx, plan, &r);
    dashattn_plan_destroy(plan);
    return 0;
}
