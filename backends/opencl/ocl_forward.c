/* SPDX-License-Identifier: MIT */
/* Forward driver: block summaries, then per pass over a chunk of query
 * positions, candidate scores, block weights (stage 1) and the fused
 * stage 2. Statistics are the only thing read back, and only when asked. */
#include "ocl_internal.h"

#include <stdlib.h>

#define CHECK(expr)                                                                                \
    do {                                                                                           \
        const dashattn_status check_ = (expr);                                                     \
        if (check_ != DASHATTN_OK)                                                                 \
            return check_;                                                                         \
    } while (0)

static size_t round_up(size_t n, size_t m)
{
    return (n + m - 1) / m * m;
}

/* The last row has the most candidates. */
int daocl_has_candidates(const dashattn_plan_desc *plan)
{
    const dashattn_problem *p = &plan->problem;
    const dashattn_row_blocks r =
        dashattn_row_layout(plan, p->len_q - 1 + plan->query_offset, p->len_k);
    return r.cand_end > r.cand_begin;
}

dashattn_status daocl_block_keys(const daocl_state *st, cl_program prog,
                                 const dashattn_plan_desc *plan, const daocl_config *cfg,
                                 const dashattn_tensor *k, const dashattn_tensor *h, cl_mem ws,
                                 cl_command_queue queue)
{
    const dashattn_problem *p = &plan->problem;
    const size_t heads = (size_t)(p->batch * p->heads_kv);
    daocl_call c;
    if (h) {
        CHECK(daocl_call_begin(&c, st, prog, "da_pool_weights"));
        daocl_arg_mem(&c, k->data);
        daocl_arg_strides(&c, k);
        daocl_arg_mem(&c, h->data);
        daocl_arg_strides(&c, h);
        daocl_arg_int(&c, p->heads_kv);
        daocl_arg_long(&c, p->len_k);
        daocl_arg_int(&c, p->block_size);
        daocl_arg_int(&c, p->head_dim);
        daocl_arg_long(&c, plan->num_blocks);
        daocl_arg_mem(&c, ws);
        daocl_arg_long(&c, (int64_t)cfg->pool);
        const size_t global[2] = {(size_t)plan->num_blocks, heads};
        CHECK(daocl_launch(&c, queue, 2, global, NULL));
    }
    CHECK(daocl_call_begin(&c, st, prog, "da_block_keys"));
    daocl_arg_mem(&c, k->data);
    daocl_arg_strides(&c, k);
    daocl_arg_int(&c, p->heads_kv);
    daocl_arg_long(&c, p->len_k);
    daocl_arg_int(&c, p->block_size);
    daocl_arg_int(&c, p->head_dim);
    daocl_arg_long(&c, plan->num_blocks);
    daocl_arg_int(&c, h != NULL);
    daocl_arg_mem(&c, ws);
    daocl_arg_long(&c, (int64_t)cfg->kbar);
    daocl_arg_long(&c, (int64_t)cfg->pool);
    const size_t global[3] = {(size_t)p->head_dim, (size_t)plan->num_blocks, heads};
    return daocl_launch(&c, queue, 3, global, NULL);
}

dashattn_status daocl_stage1(const daocl_state *st, cl_program prog, const dashattn_plan_desc *plan,
                             const daocl_config *cfg, const dashattn_tensor *q, int64_t i0,
                             int64_t npos, int candidates, const dashattn_selection *sel, cl_mem ws,
                             cl_command_queue queue)
{
    const dashattn_problem *p = &plan->problem;
    const int64_t g = plan->group_size, heads = p->batch * p->heads_kv;
    daocl_call c;
    if (candidates) {
        CHECK(daocl_call_begin(&c, st, prog, "da_scores"));
        daocl_arg_mem(&c, q->data);
        daocl_arg_strides(&c, q);
        daocl_arg_int(&c, p->heads_kv);
        daocl_arg_int(&c, g);
        daocl_arg_long(&c, i0);
        daocl_arg_long(&c, npos);
        daocl_arg_long(&c, cfg->chunk);
        daocl_arg_long(&c, plan->query_offset);
        daocl_arg_long(&c, p->len_k);
        daocl_arg_long(&c, plan->num_blocks);
        daocl_arg_layout(&c, plan);
        daocl_arg_int(&c, p->head_dim);
        daocl_arg_mem(&c, ws);
        daocl_arg_long(&c, (int64_t)cfg->kbar);
        daocl_arg_long(&c, (int64_t)cfg->w);
        daocl_arg_long(&c, cfg->rows);
        const size_t global[3] = {(size_t)(npos * g), (size_t)plan->num_blocks, (size_t)heads};
        const size_t local[3] = {16, 16, 1};
        CHECK(daocl_launch(&c, queue, 3, global, local));
    }
    const daocl_select_rows rows = {i0, npos, cfg->chunk, plan->query_offset, p->len_q};
    return daocl_select(st, prog, plan, cfg, &rows, NULL, sel, ws, queue);
}

/* Work-items of stage1.cl's da_select_wide (its DA_SEL_WG). */
#define SELECT_WIDE_ITEMS 64

/* Decode's select with the exact thresholds: a work-group per row (or
 * group) in place of a work-item, which at one row per sequence and KV head
 * left a GPU nearly idle (24 of 44 ms at batch 16 on the H200). */
static dashattn_status select_wide(const daocl_state *st, cl_program prog,
                                   const dashattn_plan_desc *plan, const daocl_config *cfg,
                                   int64_t units, const void *seq_lens, cl_mem ws,
                                   cl_command_queue queue)
{
    const dashattn_problem *p = &plan->problem;
    daocl_call c;
    CHECK(daocl_call_begin(&c, st, prog, "da_select_wide"));
    daocl_arg_mem(&c, ws);
    daocl_arg_long(&c, (int64_t)cfg->w);
    daocl_arg_long(&c, cfg->rows);
    daocl_arg_long(&c, (int64_t)cfg->att);
    daocl_arg_int(&c, p->heads_kv);
    daocl_arg_int(&c, plan->group_size);
    daocl_arg_long(&c, plan->num_blocks);
    daocl_arg_layout(&c, plan);
    daocl_arg_int(&c, plan->threshold_method);
    daocl_arg_int(&c, p->group_mode);
    daocl_arg_real(&c, p->alpha);
    daocl_arg_real(&c, p->stage1_scale);
    daocl_arg_int(&c, p->prior == DASHATTN_PRIOR_FLAT);
    daocl_arg_real(&c, p->prior_sigma);
    daocl_arg_mem(&c, seq_lens);
    const size_t global[1] = {(size_t)units * SELECT_WIDE_ITEMS};
    const size_t local[1] = {SELECT_WIDE_ITEMS};
    return daocl_launch(&c, queue, 1, global, local);
}

dashattn_status daocl_select(const daocl_state *st, cl_program prog, const dashattn_plan_desc *plan,
                             const daocl_config *cfg, const daocl_select_rows *rows,
                             const void *seq_lens, const dashattn_selection *sel, cl_mem ws,
                             cl_command_queue queue)
{
    const dashattn_problem *p = &plan->problem;
    const int64_t g = plan->group_size, heads = p->batch * p->heads_kv;
    /* One work-item per row, or per position of a KV head where the group
     * decides together (da_group_shared and da_group_mean in stage1.cl). */
    const int per_group =
        p->group_mode == DASHATTN_GROUP_SHARED || p->group_mode == DASHATTN_GROUP_MEAN;
    const int exact = plan->threshold_method == DASHATTN_THRESHOLD_SORT_15 ||
                      plan->threshold_method == DASHATTN_THRESHOLD_SORT_2;
    if (seq_lens && !sel && exact && rows->count == 1 && rows->chunk == 1 && cfg->ph < 0 &&
        cfg->wpre < 0 && daocl_wide_select(st))
        return select_wide(st, prog, plan, cfg, heads * (per_group ? 1 : g), seq_lens, ws, queue);
    daocl_call c;
    CHECK(daocl_call_begin(&c, st, prog, "da_select"));
    daocl_arg_mem(&c, ws);
    daocl_arg_long(&c, (int64_t)cfg->w);
    daocl_arg_long(&c, cfg->rows);
    daocl_arg_long(&c, (int64_t)cfg->att);
    daocl_arg_long(&c, cfg->ph);
    daocl_arg_long(&c, cfg->wpre);
    daocl_arg_int(&c, p->heads_kv);
    daocl_arg_int(&c, g);
    daocl_arg_long(&c, rows->first);
    daocl_arg_long(&c, rows->count);
    daocl_arg_long(&c, rows->chunk);
    daocl_arg_long(&c, rows->query_offset);
    daocl_arg_long(&c, p->len_k);
    daocl_arg_long(&c, plan->num_blocks);
    daocl_arg_layout(&c, plan);
    daocl_arg_int(&c, plan->threshold_method);
    daocl_arg_int(&c, p->group_mode);
    daocl_arg_int(&c, plan->threshold_iterations);
    daocl_arg_int(&c, p->topk);
    daocl_arg_real(&c, p->alpha);
    daocl_arg_real(&c, p->stage1_scale);
    daocl_arg_int(&c, p->prior == DASHATTN_PRIOR_FLAT);
    daocl_arg_real(&c, p->prior_sigma);
    daocl_arg_mem(&c, seq_lens);
    daocl_arg_mem(&c, sel ? sel->block_index : NULL);
    daocl_arg_mem(&c, sel ? sel->block_weight : NULL);
    daocl_arg_mem(&c, sel ? sel->block_count : NULL);
    daocl_arg_long(&c, sel ? sel->max_blocks : 0);
    daocl_arg_long(&c, rows->len_q);
    const size_t global[1] = {(size_t)(heads * rows->count * (per_group ? 1 : g))};
    return daocl_launch(&c, queue, 1, global, NULL);
}

static dashattn_status attend(const daocl_state *st, cl_program prog,
                              const dashattn_plan_desc *plan, const daocl_config *cfg,
                              const dashattn_forward_args *a, int64_t i0, int64_t npos, cl_mem ws,
                              cl_command_queue queue)
{
    const dashattn_problem *p = &plan->problem;
    const int64_t g = plan->group_size, heads = p->batch * p->heads_kv;
    daocl_call c;
    CHECK(daocl_call_begin(&c, st, prog, "da_attend"));
    daocl_arg_mem(&c, a->q->data);
    daocl_arg_strides(&c, a->q);
    daocl_arg_mem(&c, a->k->data);
    daocl_arg_strides(&c, a->k);
    daocl_arg_mem(&c, a->v->data);
    daocl_arg_strides(&c, a->v);
    daocl_arg_mem(&c, a->out->data);
    daocl_arg_strides(&c, a->out);
    daocl_arg_mem(&c, a->lse);
    daocl_arg_int(&c, p->heads_kv);
    daocl_arg_int(&c, g);
    daocl_arg_long(&c, i0);
    daocl_arg_long(&c, npos);
    daocl_arg_long(&c, cfg->chunk);
    daocl_arg_long(&c, plan->query_offset);
    daocl_arg_long(&c, p->len_q);
    daocl_arg_long(&c, p->len_k);
    daocl_arg_long(&c, plan->num_blocks);
    daocl_arg_layout(&c, plan);
    daocl_arg_int(&c, p->head_dim);
    daocl_arg_float(&c, p->scale);
    daocl_arg_mem(&c, ws);
    daocl_arg_long(&c, (int64_t)cfg->w);
    daocl_arg_long(&c, cfg->rows);
    const size_t global[2] = {round_up((size_t)(npos * g), (size_t)cfg->wg), (size_t)heads};
    const size_t local[2] = {(size_t)cfg->wg, 1};
    return daocl_launch(&c, queue, 2, global, local);
}

/* Tokens read by the rows of a pass, from the per-row counts. */
static dashattn_status count_attended(const daocl_state *st, const daocl_config *cfg,
                                      const dashattn_plan_desc *plan, int64_t npos, cl_mem ws,
                                      cl_command_queue queue, int64_t *total)
{
    const size_t rows = (size_t)cfg->rows;
    int32_t *att = malloc(rows * sizeof *att);
    if (!att)
        return daocl_fail(DASHATTN_ERR_OUT_OF_MEMORY, "opencl: out of host memory");
    (void)st;
    const cl_int err = clEnqueueReadBuffer(queue, ws, CL_TRUE, cfg->att * sizeof(float),
                                           rows * sizeof *att, att, 0, NULL, NULL);
    if (err != CL_SUCCESS) {
        free(att);
        return daocl_fail_cl(err, "reading the statistics back");
    }
    const int64_t per_head = npos * plan->group_size, stride = cfg->chunk * plan->group_size;
    const int64_t heads = plan->problem.batch * plan->problem.heads_kv;
    for (int64_t bh = 0; bh < heads; bh++)
        for (int64_t rr = 0; rr < per_head; rr++)
            *total += att[bh * stride + rr];
    free(att);
    return DASHATTN_OK;
}

static int64_t visible_pairs(const dashattn_plan_desc *plan)
{
    const dashattn_problem *p = &plan->problem;
    int64_t per_head = 0;
    for (int64_t i = 0; i < p->len_q; i++)
        per_head += dashattn_row_layout(plan, i + plan->query_offset, p->len_k).visible_end;
    return per_head * p->batch * p->heads_q;
}

dashattn_status daocl_forward(void *state, const dashattn_plan_desc *plan,
                              const dashattn_forward_args *a)
{
    daocl_state *st = state;
    const dashattn_problem *p = &plan->problem;
    const daocl_config cfg = daocl_plan_config(st, plan, DASHATTN_OP_FORWARD);
    cl_program prog;
    CHECK(daocl_program_get(st, p->dtype, &cfg, &prog));
    const cl_command_queue queue = daocl_queue(st, a->stream);
    const cl_mem ws = a->workspace;
    const int candidates = daocl_has_candidates(plan);
    if (candidates)
        CHECK(daocl_block_keys(st, prog, plan, &cfg, a->k, a->block_summary, ws, queue));
    int64_t attended = 0;
    for (int64_t i0 = 0; i0 < p->len_q; i0 += cfg.chunk) {
        const int64_t npos = p->len_q - i0 < cfg.chunk ? p->len_q - i0 : cfg.chunk;
        CHECK(daocl_stage1(st, prog, plan, &cfg, a->q, i0, npos, candidates, a->selection, ws,
                           queue));
        CHECK(attend(st, prog, plan, &cfg, a, i0, npos, ws, queue));
        if (a->stats)
            CHECK(count_attended(st, &cfg, plan, npos, ws, queue, &attended));
    }
    if (a->stats) {
        const int64_t visible = visible_pairs(plan);
        a->stats->visible_pairs = visible;
        a->stats->attended_pairs = attended;
        a->stats->sparsity = visible > 0 ? 1.0 - (double)attended / (double)visible : 0.0;
    }
    return DASHATTN_OK;
}
