/* Stage 1: score each candidate block's mean key and turn the scores into
 * block weights with the plan's threshold method (SPEC.md, "Stage 1"). */
#include <config.h>

#include "cpu_entmax.h"
#include "cpu_internal.h"

dacpu_stage1_scratch dacpu_stage1_scratch_take(dacpu_arena *arena, const dashattn_plan_desc *plan)
{
    const size_t m = (size_t)plan->num_blocks;
    const size_t ld = (size_t)dacpu_shared_layout(plan, DASHATTN_OP_DECODE).ld_keys;
    dacpu_stage1_scratch s;
    s.s = dacpu_take(arena, da_size_mul(ld, sizeof(float)));
    s.z = dacpu_take(arena, da_size_mul(m, sizeof(double)));
    s.zsum = dacpu_take(arena, da_size_mul(m, sizeof(double)));
    s.p = dacpu_take(arena, da_size_mul(m, sizeof(double)));
    s.sort = dacpu_take(arena, da_size_mul3(2, m, sizeof(double)));
    return s;
}

int64_t dacpu_visible_blocks(const dashattn_plan_desc *plan, const dashattn_row_blocks *r)
{
    return plan->problem.causal ? r->local_end : plan->num_blocks;
}

static void select_blocks(const dashattn_plan_desc *plan, const double *z, int64_t n, double *p,
                          double *sort)
{
    if (plan->threshold_method == DASHATTN_THRESHOLD_TOPK)
        da_topk_forward(z, n, plan->problem.topk, p, sort);
    else
        da_entmax_forward(plan->threshold_method, plan->problem.alpha, plan->threshold_iterations,
                          z, n, p, sort);
}

void dacpu_stage1(const dashattn_plan_desc *plan, const dashattn_row_blocks *r,
                  int64_t visible_blocks, const float *q, int64_t ldq, const float *keys_t,
                  int64_t ld_keys, float *w, int64_t ldw, dacpu_stage1_scratch *s)
{
    const int64_t g_count = plan->group_size, d = plan->problem.head_dim;
    const double scale1 = plan->problem.stage1_scale;
    for (int64_t g = 0; g < g_count; g++)
        for (int64_t j = 0; j < visible_blocks; j++)
            w[g * ldw + j] = dashattn_block_is_forced(r, j) ? 1.0f : 0.0f;
    const int64_t first = r->cand_begin, n = r->cand_end - r->cand_begin;
    if (n <= 0)
        return;
    const int shared = plan->problem.group_mode == DASHATTN_GROUP_SHARED;
    if (shared)
        for (int64_t c = 0; c < n; c++)
            s->zsum[c] = 0.0;
    for (int64_t g = 0; g < g_count; g++) {
        dacpu_logits(q + g * ldq, keys_t + first, ld_keys, n, d, s->s);
        for (int64_t c = 0; c < n; c++)
            s->z[c] = scale1 * (double)s->s[c];
        if (shared) {
            for (int64_t c = 0; c < n; c++)
                s->zsum[c] += s->z[c] / (double)g_count;
            continue;
        }
        select_blocks(plan, s->z, n, s->p, s->sort);
        for (int64_t c = 0; c < n; c++)
            w[g * ldw + first + c] = (float)s->p[c];
    }
    if (!shared)
        return;
    select_blocks(plan, s->zsum, n, s->p, s->sort);
    for (int64_t g = 0; g < g_count; g++)
        for (int64_t c = 0; c < n; c++)
            w[g * ldw + first + c] = (float)s->p[c];
}
