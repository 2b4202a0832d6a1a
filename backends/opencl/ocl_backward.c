/* SPDX-License-Identifier: MIT */
/* Backward driver: block summaries and stage 1 again (as the forward
 * computed them), then dq with the prior gradients, the entmax backward, dk
 * and dv, and dh when asked (see kernels/backward.cl and summary.cl). Runs
 * in one pass over all query rows. */
#include "ocl_internal.h"

#define CHECK(expr)                                                                                \
    do {                                                                                           \
        const dashattn_status check_ = (expr);                                                     \
        if (check_ != DASHATTN_OK)                                                                 \
            return check_;                                                                         \
    } while (0)

static void tensor_arg(daocl_call *c, const dashattn_tensor *t)
{
    daocl_arg_mem(c, t->data);
    daocl_arg_strides(c, t);
}

/* Arguments shared by the three kernels after their tensors. */
static void shape_args(daocl_call *c, const dashattn_plan_desc *plan)
{
    const dashattn_problem *p = &plan->problem;
    daocl_arg_int(c, p->heads_kv);
    daocl_arg_int(c, plan->group_size);
    daocl_arg_long(c, plan->query_offset);
    daocl_arg_long(c, p->len_q);
    daocl_arg_long(c, p->len_k);
    daocl_arg_long(c, plan->num_blocks);
    daocl_arg_layout(c, plan);
}

dashattn_status daocl_backward(void *state, const dashattn_plan_desc *plan,
                               const dashattn_backward_args *a)
{
    daocl_state *st = state;
    const dashattn_problem *p = &plan->problem;
    const daocl_config cfg = daocl_plan_config(st, plan, DASHATTN_OP_BACKWARD);
    const cl_command_queue queue = daocl_queue(st, a->stream);
    const cl_mem ws = a->workspace;
    const int64_t g = plan->group_size, heads = p->batch * p->heads_kv;
    cl_program prog;
    CHECK(daocl_program_get(st, p->dtype, &cfg, &prog));
    const int candidates = daocl_has_candidates(plan);
    if (candidates)
        CHECK(daocl_block_keys(st, prog, plan, &cfg, a->k, a->block_summary, ws, queue));
    CHECK(daocl_stage1(st, prog, plan, &cfg, a->q, 0, p->len_q, candidates, NULL, ws, queue));

    daocl_call c;
    CHECK(daocl_call_begin(&c, st, prog, "da_bwd_dq"));
    tensor_arg(&c, a->q);
    tensor_arg(&c, a->k);
    tensor_arg(&c, a->v);
    tensor_arg(&c, a->out);
    tensor_arg(&c, a->dout);
    daocl_arg_mem(&c, a->lse);
    shape_args(&c, plan);
    daocl_arg_int(&c, p->head_dim);
    daocl_arg_float(&c, p->scale);
    daocl_arg_mem(&c, ws);
    daocl_arg_long(&c, (int64_t)cfg.w);
    daocl_arg_long(&c, (int64_t)cfg.gp);
    daocl_arg_long(&c, (int64_t)cfg.dq);
    daocl_arg_long(&c, (int64_t)cfg.dl);
    daocl_arg_long(&c, cfg.rows);
    const size_t wg = (size_t)cfg.wg;
    const size_t g1[2] = {((size_t)(p->len_q * g) + wg - 1) / wg * wg, (size_t)heads};
    const size_t l1[2] = {wg, 1};
    CHECK(daocl_launch(&c, queue, 2, g1, l1));

    const int per_group =
        p->group_mode == DASHATTN_GROUP_SHARED || p->group_mode == DASHATTN_GROUP_MEAN;
    CHECK(daocl_call_begin(&c, st, prog, "da_bwd_entmax"));
    daocl_arg_mem(&c, ws);
    daocl_arg_long(&c, (int64_t)cfg.w);
    daocl_arg_long(&c, (int64_t)cfg.gp);
    daocl_arg_long(&c, (int64_t)cfg.dq);
    daocl_arg_long(&c, (int64_t)cfg.kbar);
    daocl_arg_long(&c, cfg.ph);
    daocl_arg_long(&c, cfg.wpre);
    daocl_arg_long(&c, cfg.rows);
    shape_args(&c, plan);
    daocl_arg_int(&c, plan->threshold_method);
    daocl_arg_int(&c, p->group_mode);
    daocl_arg_int(&c, p->prior == DASHATTN_PRIOR_FLAT);
    daocl_arg_real(&c, p->prior_sigma);
    daocl_arg_real(&c, p->alpha);
    daocl_arg_real(&c, p->stage1_scale);
    daocl_arg_int(&c, p->head_dim);
    tensor_arg(&c, a->dq);
    const size_t g2[1] = {(size_t)(heads * p->len_q * (per_group ? 1 : g))};
    CHECK(daocl_launch(&c, queue, 1, g2, NULL));

    /* Without a stage-1 gradient (no candidates, top-k) nothing reaches the
     * summaries: dk has no part through them and dh is 0. */
    const int stage1_grad = candidates && plan->threshold_method != DASHATTN_THRESHOLD_TOPK;
    const dashattn_tensor *h = stage1_grad ? a->block_summary : NULL;
    CHECK(daocl_call_begin(&c, st, prog, "da_bwd_dkdv"));
    tensor_arg(&c, a->q);
    tensor_arg(&c, a->k);
    tensor_arg(&c, a->v);
    tensor_arg(&c, a->dout);
    daocl_arg_mem(&c, a->lse);
    tensor_arg(&c, a->dk);
    tensor_arg(&c, a->dv);
    daocl_arg_mem(&c, h ? h->data : NULL);
    daocl_arg_strides(&c, h ? h : a->dk); /* unread without h */
    shape_args(&c, plan);
    daocl_arg_int(&c, p->head_dim);
    daocl_arg_float(&c, p->scale);
    daocl_arg_int(&c, stage1_grad);
    daocl_arg_mem(&c, ws);
    daocl_arg_long(&c, (int64_t)cfg.w);
    daocl_arg_long(&c, (int64_t)cfg.gp);
    daocl_arg_long(&c, (int64_t)cfg.dl);
    daocl_arg_long(&c, (int64_t)cfg.kbar);
    daocl_arg_long(&c, (int64_t)cfg.pool);
    daocl_arg_long(&c, (int64_t)cfg.rt);
    daocl_arg_long(&c, cfg.rows);
    const size_t kt = (size_t)cfg.kt;
    const size_t subs = ((size_t)p->block_size + kt - 1) / kt;
    const size_t g3[2] = {(size_t)plan->num_blocks * subs * kt, (size_t)heads};
    const size_t l3[2] = {kt, 1};
    CHECK(daocl_launch(&c, queue, 2, g3, l3));
    if (!a->dh)
        return DASHATTN_OK;

    CHECK(daocl_call_begin(&c, st, prog, "da_bwd_dh"));
    tensor_arg(&c, a->k);
    daocl_arg_long(&c, p->batch);
    daocl_arg_int(&c, p->heads_kv);
    daocl_arg_long(&c, p->len_k);
    daocl_arg_int(&c, p->head_dim);
    daocl_arg_int(&c, h != NULL);
    daocl_arg_mem(&c, ws);
    daocl_arg_long(&c, (int64_t)cfg.rt);
    tensor_arg(&c, a->dh);
    const size_t g4[2] = {(size_t)p->head_dim, (size_t)p->heads_kv};
    return daocl_launch(&c, queue, 2, g4, NULL);
}
