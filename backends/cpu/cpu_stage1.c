/* SPDX-License-Identifier: MIT */
/* Stage 1: score each candidate block's summary and turn the scores into
 * block priors with the plan's threshold method, group mode and prior mode
 * (SPEC.md, "Stage 1" and "Stage 2"). */
#include <config.h>

#include "cpu_entmax.h"
#include "cpu_internal.h"

#include <math.h>

dacpu_stage1_scratch dacpu_stage1_scratch_take(dacpu_arena *arena, const dashattn_plan_desc *plan)
{
    const size_t m = (size_t)plan->num_blocks, gm = (size_t)plan->group_size * m;
    const size_t ld = (size_t)dacpu_shared_layout(plan, DASHATTN_OP_DECODE).ld_keys;
    dacpu_stage1_scratch s;
    s.s = dacpu_take(arena, da_size_mul(ld, sizeof(float)));
    s.z = dacpu_take(arena, da_size_mul(m, sizeof(double)));
    s.zsum = dacpu_take(arena, da_size_mul(m, sizeof(double)));
    s.sort = dacpu_take(arena, da_size_mul3(2, m, sizeof(double)));
    s.p = dacpu_take(arena, da_size_mul(gm, sizeof(double)));
    s.w = dacpu_take(arena, da_size_mul(gm, sizeof(double)));
    return s;
}

int64_t dacpu_visible_blocks(const dashattn_plan_desc *plan, const dashattn_row_blocks *r)
{
    return plan->problem.causal ? r->local_end : plan->num_blocks;
}

int dacpu_stage1_one_selection(const dashattn_plan_desc *plan)
{
    const dashattn_problem *p = &plan->problem;
    return p->group_mode == DASHATTN_GROUP_SHARED ||
           (p->group_mode == DASHATTN_GROUP_MEAN && p->selection == DASHATTN_SELECT_TOPK);
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

/* Candidates whose weight the flat prior keeps (SPEC.md, "Stage 2"). */
static int flat_kept(double w)
{
    return w > DACPU_FLAT_PRIOR_FLOOR;
}

/* The prior of a row's candidates from their weights w[0, n). */
static void prior_row(const dashattn_plan_desc *plan, const double *w, int64_t n, float *pi)
{
    if (plan->problem.prior != DASHATTN_PRIOR_FLAT) {
        for (int64_t c = 0; c < n; c++)
            pi[c] = (float)w[c];
        return;
    }
    double sum = 0.0, count = 0.0;
    for (int64_t c = 0; c < n; c++)
        if (flat_kept(w[c])) {
            sum += log(w[c]);
            count += 1.0;
        }
    const double mu = count > 0.0 ? sum / count : 0.0, sigma = plan->problem.prior_sigma;
    /* A NaN weight (from a NaN score) stays NaN, so the row it poisons
     * cannot come out looking valid. */
    for (int64_t c = 0; c < n; c++)
        pi[c] = flat_kept(w[c]) ? (float)exp((log(w[c]) - mu) / sigma) : isnan(w[c]) ? NAN : 0.0f;
}

void dacpu_stage1(const dashattn_plan_desc *plan, const dashattn_row_blocks *r,
                  int64_t visible_blocks, const float *q, int64_t ldq, const float *keys_t,
                  int64_t ld_keys, float *w, int64_t ldw, dacpu_stage1_scratch *s)
{
    const int64_t g_count = plan->group_size, d = plan->problem.head_dim, m = plan->num_blocks;
    const double scale1 = plan->problem.stage1_scale;
    for (int64_t g = 0; g < g_count; g++)
        for (int64_t j = 0; j < visible_blocks; j++)
            w[g * ldw + j] = dashattn_block_is_forced(r, j) ? 1.0f : 0.0f;
    const int64_t first = r->cand_begin, n = r->cand_end - r->cand_begin;
    if (n <= 0)
        return;
    const int one = dacpu_stage1_one_selection(plan);
    if (one)
        for (int64_t c = 0; c < n; c++)
            s->zsum[c] = 0.0;
    for (int64_t g = 0; g < g_count; g++) {
        dacpu_logits(q + g * ldq, keys_t + first, ld_keys, n, d, s->s);
        for (int64_t c = 0; c < n; c++)
            s->z[c] = scale1 * (double)s->s[c];
        if (one) {
            for (int64_t c = 0; c < n; c++)
                s->zsum[c] += s->z[c] / (double)g_count;
            continue;
        }
        select_blocks(plan, s->z, n, s->p + g * m, s->sort);
    }
    if (one)
        select_blocks(plan, s->zsum, n, s->p, s->sort);

    /* The weight each head gives each candidate, by group mode. */
    for (int64_t g = 0; g < g_count; g++) {
        double *wg = s->w + g * m;
        if (one) {
            for (int64_t c = 0; c < n; c++)
                wg[c] = s->p[c];
        } else if (plan->problem.group_mode == DASHATTN_GROUP_MEAN) {
            if (g > 0) {
                for (int64_t c = 0; c < n; c++)
                    wg[c] = s->w[c];
                continue;
            }
            for (int64_t c = 0; c < n; c++) {
                double sum = 0.0;
                for (int64_t x = 0; x < g_count; x++)
                    sum += s->p[x * m + c];
                wg[c] = sum / (double)g_count;
            }
        } else {
            for (int64_t c = 0; c < n; c++)
                wg[c] = s->p[g * m + c];
        }
    }
    for (int64_t g = 0; g < g_count; g++)
        prior_row(plan, s->w + g * m, n, w + g * ldw + first);
}
