/* SPDX-License-Identifier: MIT */
/* Every argument is checked here before a backend runs, so backends can
 * trust shapes and dtypes and a failing call writes nothing. */
#include <config.h>

#include "validate.h"

#include "checked_size.h"

#include <stdio.h>

#define MAX_STRIDE (1LL << 48)

static void shape_text(char *buf, size_t size, const int64_t dim[4])
{
    snprintf(buf, size, "[%lld, %lld, %lld, %lld]", (long long)dim[0], (long long)dim[1],
             (long long)dim[2], (long long)dim[3]);
}

/* Outputs must not have two indices on one element: sorted by stride, each
 * dimension must step over the whole extent of the previous ones. */
static int output_overlaps(const dashattn_tensor *t)
{
    int order[4], n = 0;
    for (int i = 0; i < 4; i++)
        if (t->shape[i] > 1)
            order[n++] = i;
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && t->strides[order[j]] < t->strides[order[j - 1]]; j--) {
            int tmp = order[j];
            order[j] = order[j - 1];
            order[j - 1] = tmp;
        }
    int64_t extent = 1;
    for (int i = 0; i < n; i++) {
        if (t->strides[order[i]] < extent)
            return 1;
        extent = t->strides[order[i]] * t->shape[order[i]];
    }
    return 0;
}

dashattn_status da_check_tensor(const char *fn, const char *name, const dashattn_tensor *t,
                                dashattn_dtype dtype, da_shape expected, da_access access)
{
    if (!t)
        return da_fail(DASHATTN_ERR_INVALID_ARGUMENT, "%s: %s is NULL", fn, name);
    const int empty = expected.dim[0] == 0 || expected.dim[1] == 0 || expected.dim[2] == 0 ||
                      expected.dim[3] == 0;
    if (!t->data && !empty)
        return da_fail(DASHATTN_ERR_INVALID_ARGUMENT, "%s: %s->data is NULL", fn, name);
    if (t->dtype != dtype) {
        const char *got = dashattn_dtype_name(t->dtype);
        return da_fail(DASHATTN_ERR_INVALID_ARGUMENT, "%s: %s has dtype %s, the plan needs %s", fn,
                       name, got ? got : "(invalid)", dashattn_dtype_name(dtype));
    }
    for (int i = 0; i < 4; i++)
        if (t->shape[i] != expected.dim[i]) {
            char got[96], want[96];
            shape_text(got, sizeof got, t->shape);
            shape_text(want, sizeof want, expected.dim);
            return da_fail(DASHATTN_ERR_SHAPE_MISMATCH, "%s: %s has shape %s, expected %s", fn,
                           name, got, want);
        }
    for (int i = 0; i < 4; i++)
        if (t->strides[i] < 0 || t->strides[i] > MAX_STRIDE)
            return da_fail(DASHATTN_ERR_INVALID_ARGUMENT,
                           "%s: %s->strides[%d] is %lld, must be in [0, 2^48]", fn, name, i,
                           (long long)t->strides[i]);
    /* Backends address elements with int64 offsets from data: the farthest
     * one must lie inside the address space. */
    size_t last = 0;
    for (int i = 0; i < 4; i++)
        if (t->shape[i] > 0)
            last = da_size_add(last, da_size_mul((size_t)(t->shape[i] - 1), (size_t)t->strides[i]));
    if (da_size_mul(da_size_add(last, 1), dashattn_dtype_size(dtype)) > DA_MAX_WORKSPACE_BYTES)
        return da_fail(DASHATTN_ERR_INVALID_ARGUMENT,
                       "%s: %s spans more than the address space with these strides", fn, name);
    if (access == DA_OUTPUT && output_overlaps(t))
        return da_fail(DASHATTN_ERR_INVALID_ARGUMENT,
                       "%s: %s is an output whose strides make elements overlap", fn, name);
    return DASHATTN_OK;
}

dashattn_status da_check_call(const char *fn, const dashattn_context *context,
                              const dashattn_plan *plan)
{
    if (!context)
        return da_fail(DASHATTN_ERR_INVALID_ARGUMENT, "%s: context is NULL", fn);
    if (!plan)
        return da_fail(DASHATTN_ERR_INVALID_ARGUMENT, "%s: plan is NULL", fn);
    if (plan->context != context)
        return da_fail(DASHATTN_ERR_INVALID_ARGUMENT, "%s: plan was created on another context",
                       fn);
    return DASHATTN_OK;
}

dashattn_status da_check_selection(const char *fn, const dashattn_plan *plan,
                                   const dashattn_selection *selection)
{
    if (!selection ||
        (!selection->block_index && !selection->block_weight && !selection->block_count))
        return DASHATTN_OK;
    if ((selection->block_index || selection->block_weight) &&
        selection->max_blocks < plan->desc.num_blocks)
        return da_fail(DASHATTN_ERR_INVALID_ARGUMENT,
                       "%s: selection->max_blocks is %lld, must be at least the plan's %lld "
                       "blocks",
                       fn, (long long)selection->max_blocks, (long long)plan->desc.num_blocks);
    const dashattn_problem *p = &plan->desc.problem;
    const size_t rows = da_size_mul3((size_t)p->batch, (size_t)p->heads_q, (size_t)p->len_q);
    if ((selection->block_index || selection->block_weight) &&
        da_size_mul3(rows, (size_t)selection->max_blocks, sizeof(float)) > DA_MAX_WORKSPACE_BYTES)
        return da_fail(DASHATTN_ERR_INVALID_ARGUMENT,
                       "%s: selection->max_blocks is %lld: [B, Hq, Nq, max_blocks] arrays would "
                       "exceed the address space",
                       fn, (long long)selection->max_blocks);
    return DASHATTN_OK;
}

dashattn_status da_check_cache(const char *fn, const dashattn_plan *plan,
                               const dashattn_kv_cache *cache)
{
    const dashattn_problem *p = &plan->desc.problem;
    if (p->len_q != 1 || !p->causal)
        return da_fail(DASHATTN_ERR_INVALID_ARGUMENT,
                       "%s: plan must be a decode plan (len_q 1, causal), it has len_q %lld and "
                       "causal %d",
                       fn, (long long)p->len_q, p->causal);
    if (!cache)
        return da_fail(DASHATTN_ERR_INVALID_ARGUMENT, "%s: cache is NULL", fn);
    if (!cache->seq_lens)
        return da_fail(DASHATTN_ERR_INVALID_ARGUMENT, "%s: cache->seq_lens is NULL", fn);
    const int64_t s = p->block_size, cap = p->len_k;
    da_shape kv, keys;
    if (cache->layout == DASHATTN_CACHE_CONTIGUOUS) {
        kv = (da_shape){{p->batch, p->heads_kv, cap, p->head_dim}};
        keys = (da_shape){{p->batch, p->heads_kv, cap / s, p->head_dim}};
    } else if (cache->layout == DASHATTN_CACHE_PAGED) {
        const int64_t pages = cache->k.shape[0];
        if (pages < 1)
            return da_fail(DASHATTN_ERR_INVALID_ARGUMENT, "%s: cache->k has %lld pages", fn,
                           (long long)pages);
        if (!cache->block_table)
            return da_fail(DASHATTN_ERR_INVALID_ARGUMENT,
                           "%s: cache->block_table is NULL for a paged cache", fn);
        const int64_t per_seq = (cap + s - 1) / s;
        if (cache->table_stride < per_seq)
            return da_fail(DASHATTN_ERR_INVALID_ARGUMENT,
                           "%s: cache->table_stride is %lld, must be at least %lld (capacity / "
                           "block size)",
                           fn, (long long)cache->table_stride, (long long)per_seq);
        if (da_size_mul3((size_t)p->batch, (size_t)cache->table_stride, sizeof(int32_t)) >
            DA_MAX_WORKSPACE_BYTES)
            return da_fail(DASHATTN_ERR_INVALID_ARGUMENT,
                           "%s: cache->table_stride is %lld: the block table would exceed the "
                           "address space",
                           fn, (long long)cache->table_stride);
        kv = (da_shape){{pages, p->heads_kv, s, p->head_dim}};
        keys = (da_shape){{pages, p->heads_kv, 1, p->head_dim}};
    } else {
        return da_fail(DASHATTN_ERR_INVALID_ARGUMENT,
                       "%s: cache->layout %d is not a dashattn_cache_layout", fn,
                       (int)cache->layout);
    }
    dashattn_status st = da_check_tensor(fn, "cache->k", &cache->k, p->dtype, kv, DA_OUTPUT);
    if (st == DASHATTN_OK)
        st = da_check_tensor(fn, "cache->v", &cache->v, p->dtype, kv, DA_OUTPUT);
    if (st == DASHATTN_OK) {
        /* Block keys may be kept in f32 whatever the cache dtype. */
        const dashattn_dtype kd = cache->block_keys.dtype == DASHATTN_F32 ? DASHATTN_F32 : p->dtype;
        st = da_check_tensor(fn, "cache->block_keys", &cache->block_keys, kd, keys, DA_OUTPUT);
    }
    return st;
}
