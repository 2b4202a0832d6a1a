/* SPDX-License-Identifier: MIT */
/* Planning: everything about a call that depends only on the problem (block
 * layout, the entmax threshold schedule, workspace) is decided here once, so
 * that backends only execute. */
#include <config.h>

#include "checked_size.h"
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Threshold-search tolerance, in (alpha - 1) z units, for each input dtype:
 * a few bits below what the dtype resolves, so the search never limits the
 * accuracy contract of SPEC.md. */
#define TOLERANCE_F32 (1.0 / (1 << 26))
#define TOLERANCE_HALF (1.0 / (1 << 14))

/* The release runs 3 steps; far more than a bracketed search needs is a typo. */
#define DASHATTN_MAX_HALLEY_STEPS 64

DASHATTN_API void dashattn_problem_init(dashattn_problem *problem, int64_t batch, int64_t heads_q,
                                        int64_t heads_kv, int64_t len_q, int64_t len_k,
                                        int64_t head_dim)
{
    if (!problem)
        return;
    memset(problem, 0, sizeof *problem);
    problem->batch = batch;
    problem->heads_q = heads_q;
    problem->heads_kv = heads_kv;
    problem->len_q = len_q;
    problem->len_k = len_k;
    problem->head_dim = head_dim;
    problem->dtype = DASHATTN_F32;
    problem->causal = 1;
    problem->block_size = 64;
    problem->n_sink = 0;
    problem->n_local = 1;
    problem->alpha = 1.5;
    problem->selection = DASHATTN_SELECT_ENTMAX;
    problem->topk = 0;
    problem->group_mode = DASHATTN_GROUP_MEAN;
    problem->scale = 0.0;
    problem->stage1_scale = 0.0;
    problem->prior = DASHATTN_PRIOR_LOG;
    problem->prior_sigma = 1e6;
    problem->threshold_schedule = DASHATTN_SCHEDULE_EXACT;
    problem->halley_steps = 3;
}

#define BAD(...) da_fail(DASHATTN_ERR_INVALID_ARGUMENT, "dashattn_plan_create: " __VA_ARGS__)

static dashattn_status check_problem(const dashattn_problem *p)
{
    const struct {
        const char *name;
        int64_t value;
    } sizes[] = {{"batch", p->batch}, {"heads_q", p->heads_q}, {"heads_kv", p->heads_kv},
                 {"len_q", p->len_q}, {"len_k", p->len_k},     {"head_dim", p->head_dim}};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        if (sizes[i].value < 1)
            return BAD("problem->%s is %lld, must be >= 1", sizes[i].name,
                       (long long)sizes[i].value);
    /* Sizes far beyond any device keep every index product inside int64. */
    if (p->batch > (1 << 20) || p->heads_q > (1 << 16) || p->len_q > (1LL << 31) ||
        p->len_k > (1LL << 31))
        return BAD("problem sizes are beyond the supported range (batch <= 2^20, heads_q <= "
                   "2^16, len_q and len_k <= 2^31)");
    if (p->head_dim > 256)
        return BAD("problem->head_dim is %lld, must be at most 256", (long long)p->head_dim);
    if (p->heads_q % p->heads_kv != 0)
        return BAD("problem->heads_q (%lld) must be a multiple of problem->heads_kv (%lld)",
                   (long long)p->heads_q, (long long)p->heads_kv);
    /* out [B, Hq, Nq, D] and dk, dv [B, Hkv, Nk, D] are distinct elements in
     * memory, so a problem whose tensors cannot be addressed cannot exist;
     * refusing it keeps every index product of every backend in range. */
    const size_t elem = sizeof(float);
    const size_t q_bytes =
        da_size_mul(da_size_mul3((size_t)p->batch, (size_t)p->heads_q, (size_t)p->len_q),
                    (size_t)p->head_dim * elem);
    const size_t kv_bytes =
        da_size_mul(da_size_mul3((size_t)p->batch, (size_t)p->heads_kv, (size_t)p->len_k),
                    (size_t)p->head_dim * elem);
    if (q_bytes > DA_MAX_WORKSPACE_BYTES || kv_bytes > DA_MAX_WORKSPACE_BYTES)
        return BAD("a [B, H, N, D] tensor of this problem (batch %lld, heads_q %lld, heads_kv "
                   "%lld, len_q %lld, len_k %lld, head_dim %lld) would exceed the address space",
                   (long long)p->batch, (long long)p->heads_q, (long long)p->heads_kv,
                   (long long)p->len_q, (long long)p->len_k, (long long)p->head_dim);
    if (p->causal && p->len_q > p->len_k)
        return BAD("problem->len_q (%lld) exceeds problem->len_k (%lld) in a causal problem",
                   (long long)p->len_q, (long long)p->len_k);
    if (p->dtype != DASHATTN_F32 && p->dtype != DASHATTN_F16 && p->dtype != DASHATTN_BF16)
        return BAD("problem->dtype %d is not a dashattn_dtype", (int)p->dtype);
    if (p->block_size < 1)
        return BAD("problem->block_size is %d, must be >= 1", (int)p->block_size);
    if (p->n_sink < 0)
        return BAD("problem->n_sink is %d, must be >= 0", (int)p->n_sink);
    if (p->n_local < 0 || (p->causal && p->n_local < 1))
        return BAD("problem->n_local is %d, must be >= 1 for causal problems (the query's own, "
                   "partial block is always read) and >= 0 otherwise",
                   (int)p->n_local);
    if (!(p->alpha >= 1.0 && p->alpha <= 2.0))
        return BAD("problem->alpha is %g, must be in [1, 2]", p->alpha);
    if (p->selection != DASHATTN_SELECT_ENTMAX && p->selection != DASHATTN_SELECT_TOPK)
        return BAD("problem->selection %d is not a dashattn_selection_mode", (int)p->selection);
    if (p->selection == DASHATTN_SELECT_TOPK && p->topk < 1)
        return BAD("problem->topk is %d, must be >= 1 with DASHATTN_SELECT_TOPK", (int)p->topk);
    if (p->group_mode != DASHATTN_GROUP_PER_HEAD && p->group_mode != DASHATTN_GROUP_SHARED &&
        p->group_mode != DASHATTN_GROUP_MEAN)
        return BAD("problem->group_mode %d is not a dashattn_group_mode", (int)p->group_mode);
    if (p->prior != DASHATTN_PRIOR_LOG && p->prior != DASHATTN_PRIOR_FLAT)
        return BAD("problem->prior %d is not a dashattn_prior_mode", (int)p->prior);
    if (p->prior == DASHATTN_PRIOR_FLAT && !(p->prior_sigma > 0.0 && isfinite(p->prior_sigma)))
        return BAD("problem->prior_sigma is %g, must be finite and > 0 with DASHATTN_PRIOR_FLAT",
                   p->prior_sigma);
    if (p->threshold_schedule != DASHATTN_SCHEDULE_EXACT &&
        p->threshold_schedule != DASHATTN_SCHEDULE_HALLEY)
        return BAD("problem->threshold_schedule %d is not a dashattn_threshold_schedule",
                   (int)p->threshold_schedule);
    if (p->threshold_schedule == DASHATTN_SCHEDULE_HALLEY) {
        if (p->selection != DASHATTN_SELECT_ENTMAX || p->alpha != 1.5)
            return BAD("the Halley threshold schedule needs entmax selection with alpha 1.5 (it "
                       "has alpha %g%s)",
                       p->alpha, p->selection == DASHATTN_SELECT_TOPK ? " and topk selection" : "");
        if (p->halley_steps < 1 || p->halley_steps > DASHATTN_MAX_HALLEY_STEPS)
            return BAD("problem->halley_steps is %d, must be in [1, %d]", (int)p->halley_steps,
                       DASHATTN_MAX_HALLEY_STEPS);
    }
    if (!(p->scale >= 0.0 && isfinite(p->scale)))
        return BAD("problem->scale is %g, must be finite and >= 0 (0 selects 1/sqrt(D))", p->scale);
    if (!(p->stage1_scale >= 0.0 && isfinite(p->stage1_scale)))
        return BAD("problem->stage1_scale is %g, must be finite and >= 0 (0 selects scale)",
                   p->stage1_scale);
    return DASHATTN_OK;
}

static int iterations_for(double tolerance)
{
    /* A guarded step halves the bracket at least every second iteration. */
    return 2 * (int)ceil(log2(1.0 / tolerance));
}

static void plan_threshold(dashattn_plan_desc *d)
{
    const dashattn_problem *p = &d->problem;
    d->threshold_iterations = 0;
    d->threshold_tolerance = 0.0;
    if (p->selection == DASHATTN_SELECT_TOPK)
        d->threshold_method = DASHATTN_THRESHOLD_TOPK;
    else if (p->threshold_schedule == DASHATTN_SCHEDULE_HALLEY) {
        d->threshold_method = DASHATTN_THRESHOLD_HALLEY;
        d->threshold_iterations = p->halley_steps;
    } else if (p->alpha == 1.0)
        d->threshold_method = DASHATTN_THRESHOLD_SOFTMAX;
    else if (p->alpha == 1.5)
        d->threshold_method = DASHATTN_THRESHOLD_SORT_15;
    else if (p->alpha == 2.0)
        d->threshold_method = DASHATTN_THRESHOLD_SORT_2;
    else {
        d->threshold_method = DASHATTN_THRESHOLD_BRACKETED;
        d->threshold_tolerance = p->dtype == DASHATTN_F32 ? TOLERANCE_F32 : TOLERANCE_HALF;
        d->threshold_iterations = iterations_for(d->threshold_tolerance);
    }
}

DASHATTN_API dashattn_status dashattn_plan_create(dashattn_context *context,
                                                  const dashattn_problem *problem,
                                                  dashattn_plan **plan)
{
    da_clear_error();
    if (!plan)
        return BAD("plan is NULL");
    *plan = NULL;
    if (!context)
        return BAD("context is NULL");
    if (!problem)
        return BAD("problem is NULL");
    dashattn_status st = check_problem(problem);
    if (st != DASHATTN_OK)
        return st;

    dashattn_plan *pl = calloc(1, sizeof *pl);
    if (!pl)
        return da_fail(DASHATTN_ERR_OUT_OF_MEMORY, "dashattn_plan_create: out of memory");
    dashattn_plan_desc *d = &pl->desc;
    d->problem = *problem;
    if (d->problem.scale == 0.0)
        d->problem.scale = 1.0 / sqrt((double)problem->head_dim);
    if (d->problem.stage1_scale == 0.0)
        d->problem.stage1_scale = d->problem.scale;
    if (d->problem.selection != DASHATTN_SELECT_TOPK)
        d->problem.topk = 0;
    /* Fields an option does not use are normalised, so that backends (and
     * their program caches) see one plan per function. */
    if (d->problem.prior != DASHATTN_PRIOR_FLAT)
        d->problem.prior_sigma = 0.0;
    if (d->problem.threshold_schedule != DASHATTN_SCHEDULE_HALLEY)
        d->problem.halley_steps = 0;
    d->num_blocks = (problem->len_k + problem->block_size - 1) / problem->block_size;
    d->group_size = problem->heads_q / problem->heads_kv;
    d->query_offset = problem->len_k - problem->len_q;
    plan_threshold(d);
    pl->context = context;
    if (context->iface.plan_prepare) {
        st = context->iface.plan_prepare(context->state, d, &pl->backend_plan);
        if (st != DASHATTN_OK) {
            /* A plan_state left behind by a refusal is the backend's to free. */
            free(pl);
            if (!dashattn_last_error()[0])
                da_set_error("dashattn_plan_create: backend %s refused the plan (%s)",
                             context->name, dashattn_status_string(st));
            return st;
        }
        d->backend_plan = pl->backend_plan;
    }
    static const char *const op_names[] = {"forward", "backward", "decode"};
    /* Decode runs only on decode plans (len_q 1, causal); others need none. */
    const int decodes = problem->len_q == 1 && problem->causal;
    for (int op = DASHATTN_OP_FORWARD; op <= DASHATTN_OP_DECODE; op++) {
        const size_t bytes =
            op == DASHATTN_OP_DECODE && !decodes
                ? 0
                : context->iface.workspace_size(context->state, d, (dashattn_operation)op);
        /* Backends saturate sizes that overflow at SIZE_MAX. */
        if (bytes > DA_MAX_WORKSPACE_BYTES) {
            dashattn_plan_destroy(pl);
            return BAD("the %s workspace of this problem on backend %s would exceed the address "
                       "space (%s bytes)",
                       op_names[op], context->name,
                       bytes == SIZE_MAX ? "more than SIZE_MAX" : "more than PTRDIFF_MAX");
        }
        pl->workspace_size[op] = bytes;
    }
    *plan = pl;
    return DASHATTN_OK;
}

DASHATTN_API void dashattn_plan_destroy(dashattn_plan *plan)
{
    if (plan && plan->backend_plan && plan->context->iface.plan_release)
        plan->context->iface.plan_release(plan->context->state, plan->backend_plan);
    free(plan);
}

DASHATTN_API const dashattn_problem *dashattn_plan_problem(const dashattn_plan *plan)
{
    return plan ? &plan->desc.problem : NULL;
}

DASHATTN_API int64_t dashattn_plan_num_blocks(const dashattn_plan *plan)
{
    return plan ? plan->desc.num_blocks : 0;
}

DASHATTN_API size_t dashattn_plan_workspace_size(const dashattn_plan *plan)
{
    size_t most = 0;
    for (int op = DASHATTN_OP_FORWARD; plan && op <= DASHATTN_OP_DECODE; op++)
        most = plan->workspace_size[op] > most ? plan->workspace_size[op] : most;
    return most;
}

DASHATTN_API size_t dashattn_plan_operation_workspace_size(const dashattn_plan *plan,
                                                           dashattn_operation operation)
{
    if (!plan || operation < DASHATTN_OP_FORWARD || operation > DASHATTN_OP_DECODE)
        return 0;
    return plan->workspace_size[operation];
}

DASHATTN_API const char *dashattn_plan_threshold_method(const dashattn_plan *plan)
{
    if (!plan)
        return NULL;
    switch (plan->desc.threshold_method) {
    case DASHATTN_THRESHOLD_SOFTMAX:
        return "softmax";
    case DASHATTN_THRESHOLD_SORT_15:
        return "sort-1.5";
    case DASHATTN_THRESHOLD_SORT_2:
        return "sort-2";
    case DASHATTN_THRESHOLD_BRACKETED:
        return "bracketed-newton";
    case DASHATTN_THRESHOLD_TOPK:
        return "topk";
    case DASHATTN_THRESHOLD_HALLEY:
        return "halley";
    }
    return "unknown";
}

DASHATTN_API int dashattn_plan_threshold_iterations(const dashattn_plan *plan)
{
    return plan ? plan->desc.threshold_iterations : 0;
}
