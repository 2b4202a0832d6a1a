/* SPDX-License-Identifier: MIT */
/* KV caches: appending tokens and keeping the summaries of complete blocks
 * (SPEC.md, "Decode and KV caches"). Old block keys are never recomputed. */
#include <config.h>

#include "cpu_internal.h"
#include "internal.h"

dacpu_cache_block dacpu_cache_locate(const dashattn_kv_cache *cache, int64_t b, int64_t j,
                                     int64_t block_size)
{
    dacpu_cache_block loc;
    if (cache->layout == DASHATTN_CACHE_PAGED) {
        loc.i0 = cache->block_table[b * cache->table_stride + j];
        loc.r0 = 0;
        loc.key_row = 0;
    } else {
        loc.i0 = b;
        loc.r0 = j * block_size;
        loc.key_row = j;
    }
    return loc;
}

/* First block in [first, last] of sequence b without a valid page, or -1. */
static int64_t unmapped_block(const dashattn_kv_cache *cache, int64_t b, int64_t first,
                              int64_t last)
{
    if (cache->layout != DASHATTN_CACHE_PAGED)
        return -1;
    for (int64_t j = first; j <= last; j++) {
        const int32_t page = cache->block_table[b * cache->table_stride + j];
        if (page < 0 || page >= cache->k.shape[0])
            return j;
    }
    return -1;
}

static dashattn_status page_error(dashattn_status status, const char *fn,
                                  const dashattn_kv_cache *cache, int64_t b, int64_t j)
{
    return da_fail(status,
                   "%s: cache->block_table maps block %lld of sequence %lld to page %d, outside "
                   "[0, %lld)",
                   fn, (long long)j, (long long)b,
                   (int)cache->block_table[b * cache->table_stride + j],
                   (long long)cache->k.shape[0]);
}

dashattn_status dacpu_cache_check_readable(const dashattn_plan_desc *plan,
                                           const dashattn_kv_cache *cache)
{
    const dashattn_problem *p = &plan->problem;
    for (int64_t b = 0; b < p->batch; b++) {
        const int64_t len = cache->seq_lens[b];
        if (len < 1 || len > p->len_k)
            return da_fail(DASHATTN_ERR_INVALID_ARGUMENT,
                           "dashattn_decode: cache->seq_lens[%lld] is %lld, must be in [1, %lld]",
                           (long long)b, (long long)len, (long long)p->len_k);
        const int64_t j = unmapped_block(cache, b, 0, (len - 1) / p->block_size);
        if (j >= 0)
            return page_error(DASHATTN_ERR_INVALID_ARGUMENT, "dashattn_decode", cache, b, j);
    }
    return DASHATTN_OK;
}

/* Every sequence must have room for all new tokens before any is written. */
static dashattn_status check_room(const dashattn_plan_desc *plan, const dashattn_kv_cache *cache,
                                  int64_t tokens)
{
    const dashattn_problem *p = &plan->problem;
    const int64_t s = p->block_size;
    for (int64_t b = 0; b < p->batch; b++) {
        const int64_t len = cache->seq_lens[b];
        if (len < 0 || len > p->len_k)
            return da_fail(DASHATTN_ERR_INVALID_ARGUMENT,
                           "dashattn_cache_append: cache->seq_lens[%lld] is %lld, must be in "
                           "[0, %lld]",
                           (long long)b, (long long)len, (long long)p->len_k);
        if (len + tokens > p->len_k)
            return da_fail(DASHATTN_ERR_CACHE_FULL,
                           "dashattn_cache_append: sequence %lld holds %lld tokens; %lld more "
                           "exceed the capacity %lld",
                           (long long)b, (long long)len, (long long)tokens, (long long)p->len_k);
        const int64_t j = unmapped_block(cache, b, len / s, (len + tokens - 1) / s);
        if (j >= 0)
            return page_error(DASHATTN_ERR_CACHE_FULL, "dashattn_cache_append", cache, b, j);
    }
    return DASHATTN_OK;
}

/* Copy one row between tensors of any dtype through f32. */
static void copy_row(const dashattn_tensor *src, int64_t s0, int64_t s1, int64_t s2,
                     const dashattn_tensor *dst, int64_t d0, int64_t d1, int64_t d2, float *buf)
{
    int64_t ld;
    const float *row = dacpu_rows(src, s0, s1, s2, 1, buf, &ld);
    dacpu_store_rows(dst, d0, d1, d2, 1, row, ld);
}

dashattn_status dacpu_cache_append(void *state, const dashattn_plan_desc *plan,
                                   const dashattn_append_args *a)
{
    const dacpu_state *st = state;
    const dashattn_problem *p = &plan->problem;
    const dashattn_kv_cache *cache = a->cache;
    const int64_t tokens = a->k_new->shape[2], s = p->block_size;
    dashattn_status status = check_room(plan, cache, tokens);
    if (status != DASHATTN_OK)
        return status;
    const int64_t pairs = p->batch * p->heads_kv;
    status = dacpu_team_check("dashattn_cache_append", st->num_threads);
    if (status != DASHATTN_OK)
        return status;
#pragma omp parallel for num_threads(st->num_threads) schedule(static)
    for (int64_t bh = 0; bh < pairs; bh++) {
        const int64_t b = bh / p->heads_kv, h = bh % p->heads_kv;
        const int64_t len = cache->seq_lens[b], end = len + tokens;
        float buf[DACPU_MAX_DIM], summary[DACPU_MAX_DIM], hv[DACPU_MAX_DIM];
        const float *hvec = dacpu_summary_vector(a->block_summary, h, hv);
        for (int64_t t = 0; t < tokens; t++) {
            const int64_t pos = len + t;
            const dacpu_cache_block loc = dacpu_cache_locate(cache, b, pos / s, s);
            const int64_t row = loc.r0 + pos % s;
            copy_row(a->k_new, b, h, t, &cache->k, loc.i0, h, row, buf);
            copy_row(a->v_new, b, h, t, &cache->v, loc.i0, h, row, buf);
        }
        /* Blocks that became complete with this append get their summary. */
        for (int64_t j = len / s; (j + 1) * s <= end; j++) {
            const dacpu_cache_block loc = dacpu_cache_locate(cache, b, j, s);
            dacpu_summarize_block(&cache->k, loc.i0, h, loc.r0, s, hvec, summary, NULL, buf);
            dacpu_store_rows(&cache->block_keys, loc.i0, h, loc.key_row, 1, summary, p->head_dim);
        }
    }
    for (int64_t b = 0; b < p->batch; b++)
        cache->seq_lens[b] += (int32_t)tokens;
    return DASHATTN_OK;
}
