/* SPDX-License-Identifier: MIT */
/* KV caches: appending tokens and decoding against them. The cache's
 * sequence lengths and block table live on the device where the core cannot
 * check them, so both calls read them back first (they are small) and
 * refuse bad values, as the CPU backend does, before anything is queued. */
#include "ocl_internal.h"

#include <stdlib.h>

#define CHECK(expr)                                                                                \
    do {                                                                                           \
        const dashattn_status check_ = (expr);                                                     \
        if (check_ != DASHATTN_OK)                                                                 \
            return check_;                                                                         \
    } while (0)

/* The host copies of seq_lens and (paged) the block table. */
typedef struct cache_view {
    int32_t *lens, *table;
} cache_view;

static void view_free(cache_view *v)
{
    free(v->lens);
    free(v->table);
}

static dashattn_status read_ints(cl_command_queue queue, const void *mem, int64_t n, int32_t **out)
{
    *out = malloc((size_t)n * sizeof **out);
    if (!*out)
        return daocl_fail(DASHATTN_ERR_OUT_OF_MEMORY, "opencl: out of host memory");
    const cl_int err = clEnqueueReadBuffer(queue, (cl_mem)(uintptr_t)mem, CL_TRUE, 0,
                                           (size_t)n * sizeof **out, *out, 0, NULL, NULL);
    return err == CL_SUCCESS ? DASHATTN_OK : daocl_fail_cl(err, "reading the cache's sizes");
}

static dashattn_status view_read(const dashattn_plan_desc *plan, const dashattn_kv_cache *cache,
                                 cl_command_queue queue, cache_view *v)
{
    v->lens = v->table = NULL;
    const int64_t batch = plan->problem.batch;
    CHECK(read_ints(queue, cache->seq_lens, batch, &v->lens));
    if (cache->layout == DASHATTN_CACHE_PAGED)
        CHECK(read_ints(queue, cache->block_table, batch * cache->table_stride, &v->table));
    return DASHATTN_OK;
}

/* First block in [first, last] of sequence b without a valid page, or -1. */
static int64_t unmapped_block(const dashattn_kv_cache *cache, const cache_view *v, int64_t b,
                              int64_t first, int64_t last)
{
    if (cache->layout != DASHATTN_CACHE_PAGED)
        return -1;
    for (int64_t j = first; j <= last; j++) {
        const int32_t page = v->table[b * cache->table_stride + j];
        if (page < 0 || page >= cache->k.shape[0])
            return j;
    }
    return -1;
}

static dashattn_status page_error(dashattn_status status, const char *fn,
                                  const dashattn_kv_cache *cache, const cache_view *v, int64_t b,
                                  int64_t j)
{
    return daocl_fail(status,
                      "%s: cache->block_table maps block %lld of sequence %lld to page %d, "
                      "outside [0, %lld)",
                      fn, (long long)j, (long long)b, (int)v->table[b * cache->table_stride + j],
                      (long long)cache->k.shape[0]);
}

static dashattn_status check_readable(const dashattn_plan_desc *plan,
                                      const dashattn_kv_cache *cache, const cache_view *v)
{
    const dashattn_problem *p = &plan->problem;
    for (int64_t b = 0; b < p->batch; b++) {
        const int64_t len = v->lens[b];
        if (len < 1 || len > p->len_k)
            return daocl_fail(
                DASHATTN_ERR_INVALID_ARGUMENT,
                "dashattn_decode: cache->seq_lens[%lld] is %lld, must be in [1, %lld]",
                (long long)b, (long long)len, (long long)p->len_k);
        const int64_t j = unmapped_block(cache, v, b, 0, (len - 1) / p->block_size);
        if (j >= 0)
            return page_error(DASHATTN_ERR_INVALID_ARGUMENT, "dashattn_decode", cache, v, b, j);
    }
    return DASHATTN_OK;
}

static dashattn_status check_room(const dashattn_plan_desc *plan, const dashattn_kv_cache *cache,
                                  const cache_view *v, int64_t tokens)
{
    const dashattn_problem *p = &plan->problem;
    const int64_t s = p->block_size;
    for (int64_t b = 0; b < p->batch; b++) {
        const int64_t len = v->lens[b];
        if (len < 0 || len > p->len_k)
            return daocl_fail(DASHATTN_ERR_INVALID_ARGUMENT,
                              "dashattn_cache_append: cache->seq_lens[%lld] is %lld, must be in "
                              "[0, %lld]",
                              (long long)b, (long long)len, (long long)p->len_k);
        if (len + tokens > p->len_k)
            return daocl_fail(DASHATTN_ERR_CACHE_FULL,
                              "dashattn_cache_append: sequence %lld holds %lld tokens; %lld more "
                              "exceed the capacity %lld",
                              (long long)b, (long long)len, (long long)tokens, (long long)p->len_k);
        const int64_t j = unmapped_block(cache, v, b, len / s, (len + tokens - 1) / s);
        if (j >= 0)
            return page_error(DASHATTN_ERR_CACHE_FULL, "dashattn_cache_append", cache, v, b, j);
    }
    return DASHATTN_OK;
}

/* Arguments every cache kernel takes after its tensors: the page mapping
 * and the sequence lengths. */
static void cache_args(daocl_call *c, const dashattn_kv_cache *cache)
{
    const int paged = cache->layout == DASHATTN_CACHE_PAGED;
    daocl_arg_int(c, paged);
    daocl_arg_mem(c, paged ? cache->block_table : NULL);
    daocl_arg_long(c, paged ? cache->table_stride : 0);
    daocl_arg_mem(c, cache->seq_lens);
}

static dashattn_status append(daocl_state *st, const dashattn_plan_desc *plan,
                              const dashattn_append_args *a, cl_command_queue queue)
{
    const dashattn_problem *p = &plan->problem;
    const dashattn_kv_cache *cache = a->cache;
    const int64_t tokens = a->k_new->shape[2], heads = p->batch * p->heads_kv;
    const daocl_config cfg = daocl_plan_config(st, plan, DASHATTN_OP_DECODE);
    cl_program prog;
    CHECK(daocl_program_get(st, p->dtype, &cfg, &prog));
    daocl_call c;
    CHECK(daocl_call_begin(&c, st, prog, "da_append_copy"));
    daocl_arg_mem(&c, a->k_new->data);
    daocl_arg_strides(&c, a->k_new);
    daocl_arg_mem(&c, a->v_new->data);
    daocl_arg_strides(&c, a->v_new);
    daocl_arg_mem(&c, cache->k.data);
    daocl_arg_strides(&c, &cache->k);
    daocl_arg_mem(&c, cache->v.data);
    daocl_arg_strides(&c, &cache->v);
    cache_args(&c, cache);
    daocl_arg_int(&c, p->heads_kv);
    daocl_arg_long(&c, tokens);
    daocl_arg_int(&c, p->block_size);
    daocl_arg_int(&c, p->head_dim);
    const size_t g1[3] = {(size_t)p->head_dim, (size_t)tokens, (size_t)heads};
    CHECK(daocl_launch(&c, queue, 3, g1, NULL));

    const int64_t new_blocks = tokens / p->block_size + 1;
    CHECK(daocl_call_begin(&c, st, prog, "da_append_keys"));
    daocl_arg_mem(&c, cache->k.data);
    daocl_arg_strides(&c, &cache->k);
    daocl_arg_mem(&c, cache->block_keys.data);
    daocl_arg_strides(&c, &cache->block_keys);
    daocl_arg_int(&c, cache->block_keys.dtype);
    cache_args(&c, cache);
    const dashattn_tensor *h = a->block_summary;
    daocl_arg_mem(&c, h ? h->data : NULL);
    daocl_arg_strides(&c, h ? h : &cache->k); /* unread without h */
    daocl_arg_int(&c, p->heads_kv);
    daocl_arg_long(&c, tokens);
    daocl_arg_int(&c, p->block_size);
    daocl_arg_int(&c, p->head_dim);
    daocl_arg_long(&c, new_blocks);
    const size_t g2[2] = {(size_t)new_blocks, (size_t)heads};
    CHECK(daocl_launch(&c, queue, 2, g2, NULL));

    CHECK(daocl_call_begin(&c, st, prog, "da_advance"));
    daocl_arg_mem(&c, cache->seq_lens);
    daocl_arg_long(&c, p->batch);
    daocl_arg_int(&c, tokens);
    const size_t g3[1] = {(size_t)p->batch};
    return daocl_launch(&c, queue, 1, g3, NULL);
}

dashattn_status daocl_cache_append(void *state, const dashattn_plan_desc *plan,
                                   const dashattn_append_args *a)
{
    daocl_state *st = state;
    const cl_command_queue queue = daocl_queue(st, a->stream);
    cache_view v;
    dashattn_status status = view_read(plan, a->cache, queue, &v);
    if (status == DASHATTN_OK)
        status = check_room(plan, a->cache, &v, a->k_new->shape[2]);
    view_free(&v);
    return status == DASHATTN_OK ? append(st, plan, a, queue) : status;
}

static dashattn_status decode(daocl_state *st, const dashattn_plan_desc *plan,
                              const dashattn_decode_args *a, cl_command_queue queue)
{
    const dashattn_problem *p = &plan->problem;
    const dashattn_kv_cache *cache = a->cache;
    const int64_t g = plan->group_size, heads = p->batch * p->heads_kv;
    const daocl_config cfg = daocl_plan_config(st, plan, DASHATTN_OP_DECODE);
    const cl_mem ws = a->workspace;
    cl_program prog;
    CHECK(daocl_program_get(st, p->dtype, &cfg, &prog));
    daocl_call c;
    if (daocl_has_candidates(plan)) {
        CHECK(daocl_call_begin(&c, st, prog, "da_decode_scores"));
        daocl_arg_mem(&c, a->q->data);
        daocl_arg_strides(&c, a->q);
        daocl_arg_mem(&c, cache->block_keys.data);
        daocl_arg_strides(&c, &cache->block_keys);
        daocl_arg_int(&c, cache->block_keys.dtype);
        cache_args(&c, cache);
        daocl_arg_int(&c, p->heads_kv);
        daocl_arg_int(&c, g);
        daocl_arg_int(&c, p->head_dim);
        daocl_arg_long(&c, plan->num_blocks);
        daocl_arg_layout(&c, plan);
        daocl_arg_mem(&c, ws);
        daocl_arg_long(&c, (int64_t)cfg.w);
        daocl_arg_long(&c, cfg.rows);
        const size_t g1[2] = {(size_t)plan->num_blocks, (size_t)cfg.rows};
        CHECK(daocl_launch(&c, queue, 2, g1, NULL));
    }
    /* One row per sequence, at its last position (seq_lens on the device). */
    const daocl_select_rows rows = {0, 1, 1, 0, 1};
    CHECK(daocl_select(st, prog, plan, &cfg, &rows, cache->seq_lens, NULL, ws, queue));

    CHECK(daocl_call_begin(&c, st, prog, "da_decode_attend"));
    daocl_arg_mem(&c, a->q->data);
    daocl_arg_strides(&c, a->q);
    daocl_arg_mem(&c, cache->k.data);
    daocl_arg_strides(&c, &cache->k);
    daocl_arg_mem(&c, cache->v.data);
    daocl_arg_strides(&c, &cache->v);
    cache_args(&c, cache);
    daocl_arg_int(&c, p->heads_kv);
    daocl_arg_int(&c, g);
    daocl_arg_long(&c, plan->num_blocks);
    daocl_arg_layout(&c, plan);
    daocl_arg_int(&c, p->head_dim);
    daocl_arg_float(&c, p->scale);
    daocl_arg_long(&c, cfg.blocks_per_split);
    daocl_arg_mem(&c, ws);
    daocl_arg_long(&c, (int64_t)cfg.w);
    daocl_arg_long(&c, cfg.rows);
    daocl_arg_long(&c, (int64_t)cfg.pacc);
    daocl_arg_long(&c, (int64_t)cfg.pml);
    const size_t g3[2] = {(size_t)(cfg.splits * cfg.wg), (size_t)heads};
    const size_t l3[2] = {(size_t)cfg.wg, 1};
    CHECK(daocl_launch(&c, queue, 2, g3, l3));

    CHECK(daocl_call_begin(&c, st, prog, "da_decode_combine"));
    daocl_arg_mem(&c, ws);
    daocl_arg_long(&c, (int64_t)cfg.pacc);
    daocl_arg_long(&c, (int64_t)cfg.pml);
    daocl_arg_long(&c, cfg.splits);
    daocl_arg_long(&c, cfg.rows);
    daocl_arg_int(&c, p->head_dim);
    daocl_arg_int(&c, p->heads_q);
    daocl_arg_mem(&c, a->out->data);
    daocl_arg_strides(&c, a->out);
    daocl_arg_mem(&c, a->lse);
    const size_t g4[1] = {(size_t)cfg.rows};
    return daocl_launch(&c, queue, 1, g4, NULL);
}

dashattn_status daocl_decode(void *state, const dashattn_plan_desc *plan,
                             const dashattn_decode_args *a)
{
    daocl_state *st = state;
    const cl_command_queue queue = daocl_queue(st, a->stream);
    cache_view v;
    dashattn_status status = view_read(plan, a->cache, queue, &v);
    if (status == DASHATTN_OK)
        status = check_readable(plan, a->cache, &v);
    view_free(&v);
    return status == DASHATTN_OK ? decode(st, plan, a, queue) : status;
}
