/* SPDX-License-Identifier: MIT */
/* Problems, plans, inputs and views of the numerical tests' configurations. */
#include "cases.h"

#include "reference.h"
#include "synthetic.h"
#include "testutil.h"

#include <stdlib.h>

void tc_problem(const tc_case *c, dashattn_dtype dtype, dashattn_problem *pr)
{
    dashattn_problem_init(pr, c->batch, c->heads_q, c->heads_kv, c->len_q, c->len_k, c->dim);
    pr->dtype = dtype;
    pr->causal = c->causal;
    pr->block_size = c->block_size;
    pr->n_sink = c->n_sink;
    pr->n_local = c->n_local;
    pr->alpha = c->alpha;
    if (c->topk > 0) {
        pr->selection = DASHATTN_SELECT_TOPK;
        pr->topk = c->topk;
    }
    pr->group_mode = (dashattn_group_mode)c->group;
    pr->scale = c->scale;
    pr->stage1_scale = c->scale1;
    tu_set_prior_and_schedule(pr, c->sigma, c->halley);
}

dashattn_plan *tc_plan(dashattn_context *ctx, const tc_case *c, dashattn_dtype dtype,
                       dashattn_problem *pr)
{
    tc_problem(c, dtype, pr);
    dashattn_plan *plan = NULL;
    const dashattn_status st = dashattn_plan_create(ctx, pr, &plan);
    TU_CHECK(st == DASHATTN_OK, "%s (%s): plan: %s", c->name, dashattn_dtype_name(dtype),
             dashattn_last_error());
    return st == DASHATTN_OK ? plan : NULL;
}

void tc_inputs_make(const tc_case *c, uint64_t seed, tc_inputs *in)
{
    in->nq = (size_t)(c->batch * c->heads_q * c->len_q * c->dim);
    in->nkv = (size_t)(c->batch * c->heads_kv * c->len_k * c->dim);
    in->rows = (size_t)(c->batch * c->heads_q * c->len_q);
    if (c->focus >= 0.0) {
        in->q = tu_xcalloc(in->nq, sizeof(float));
        in->k = tu_xcalloc(in->nkv, sizeof(float));
        in->v = tu_xcalloc(in->nkv, sizeof(float));
        da_synth_qkv(seed, c->batch, c->heads_q, c->heads_kv, c->len_q, c->len_k, c->dim,
                     c->block_size, c->focus, in->q, in->k, in->v);
    } else {
        in->q = tu_random_floats(seed, in->nq, 1.0);
        in->k = tu_random_floats(seed + 1, in->nkv, 1.0);
        in->v = tu_random_floats(seed + 2, in->nkv, 1.0);
    }
    in->qd = ref_to_double(in->q, (int64_t)in->nq);
    in->kd = ref_to_double(in->k, (int64_t)in->nkv);
    in->vd = ref_to_double(in->v, (int64_t)in->nkv);
    in->nh = (size_t)(c->heads_kv * c->dim);
    in->h = c->summary > 0.0 ? tu_random_floats(seed + 4, in->nh, c->summary) : NULL;
    in->hd = in->h ? ref_to_double(in->h, (int64_t)in->nh) : NULL;
}

const dashattn_tensor *tc_summary(const tc_case *c, const tc_inputs *in, dashattn_tensor *view)
{
    if (!in->h)
        return NULL;
    *view = dashattn_tensor_bhsd(in->h, DASHATTN_F32, 1, c->heads_kv, 1, c->dim);
    return view;
}

void tc_inputs_free(tc_inputs *in)
{
    free(in->q);
    free(in->k);
    free(in->v);
    free(in->qd);
    free(in->kd);
    free(in->vd);
    free(in->h);
    free(in->hd);
}

dashattn_tensor tc_view_q(const tc_case *c, void *data, dashattn_dtype dtype)
{
    return dashattn_tensor_bhsd(data, dtype, c->batch, c->heads_q, c->len_q, c->dim);
}

dashattn_tensor tc_view_kv(const tc_case *c, void *data, dashattn_dtype dtype)
{
    return dashattn_tensor_bhsd(data, dtype, c->batch, c->heads_kv, c->len_k, c->dim);
}

dashattn_context *tc_cpu_context(void)
{
    dashattn_context_options opt;
    dashattn_context_options_init(&opt);
    opt.backend = "cpu";
    opt.num_threads = 2;
    dashattn_context *ctx = NULL;
    const dashattn_status st = dashattn_context_create(&opt, &ctx);
    TU_CHECK(st == DASHATTN_OK, "context_create(cpu): %s", dashattn_last_error());
    return st == DASHATTN_OK ? ctx : NULL;
}
