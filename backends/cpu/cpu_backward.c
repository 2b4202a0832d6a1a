/* SPDX-License-Identifier: MIT */
/* Backward (SPEC.md, "Backward"): stage 1 is recomputed from q and the block
 * summaries, then each query row adds its share to dq (its own), and to dk,
 * dv and the summary gradient (shared by rows, so each thread accumulates its
 * own copy for the current KV head and the copies are summed at the end,
 * where the summary gradient flows into dk, and into dh through the pooling
 * weights). */
#include <config.h>

#include "cpu_entmax.h"
#include "cpu_internal.h"

#include <math.h>
#include <string.h>

/* One thread's accumulators and row buffers; the accumulators come first in
 * every arena so that other threads can find them for the reduction. */
typedef struct grad_scratch {
    float *dk, *dv, *dkbar;
    double *dh; /* [Hkv][D], summed over the whole call */
    float *q, *qs, *dq, *o, *dout;
    float *w, *gprior;
    float *lse, *delta;        /* per head of the group */
    float *kbuf, *vbuf, *rows; /* rows: 4 x D for the reduction */
    double *gw, *gsum, *dz;
    dacpu_stage1_scratch s1;
} grad_scratch;

static grad_scratch take_grad_scratch(dacpu_arena *a, const dashattn_plan_desc *plan)
{
    const dashattn_problem *pr = &plan->problem;
    const size_t d = (size_t)pr->head_dim, m = (size_t)plan->num_blocks;
    const size_t gc = (size_t)plan->group_size, s = (size_t)pr->block_size;
    const size_t n = (size_t)pr->len_k;
    grad_scratch t;
    t.dk = dacpu_take(a, da_size_mul3(n, d, sizeof(float)));
    t.dv = dacpu_take(a, da_size_mul3(n, d, sizeof(float)));
    t.dkbar = dacpu_take(a, da_size_mul3(m, d, sizeof(float)));
    t.dh = dacpu_take(a, da_size_mul3((size_t)pr->heads_kv, d, sizeof(double)));
    t.q = dacpu_take(a, da_size_mul3(gc, d, sizeof(float)));
    t.qs = dacpu_take(a, da_size_mul3(gc, d, sizeof(float)));
    t.dq = dacpu_take(a, da_size_mul3(gc, d, sizeof(float)));
    t.o = dacpu_take(a, da_size_mul3(gc, d, sizeof(float)));
    t.dout = dacpu_take(a, da_size_mul3(gc, d, sizeof(float)));
    t.w = dacpu_take(a, da_size_mul3(gc, m, sizeof(float)));
    t.gprior = dacpu_take(a, da_size_mul3(gc, m, sizeof(float)));
    t.lse = dacpu_take(a, da_size_mul(gc, sizeof(float)));
    t.delta = dacpu_take(a, da_size_mul(gc, sizeof(float)));
    t.kbuf = dacpu_take(a, da_size_mul3(s, d, sizeof(float)));
    t.vbuf = dacpu_take(a, da_size_mul3(s, d, sizeof(float)));
    t.rows = dacpu_take(a, da_size_mul3(4, d, sizeof(float)));
    t.gw = dacpu_take(a, da_size_mul3(gc, m, sizeof(double)));
    t.gsum = dacpu_take(a, da_size_mul(m, sizeof(double)));
    t.dz = dacpu_take(a, da_size_mul(m, sizeof(double)));
    t.s1 = dacpu_stage1_scratch_take(a, plan);
    return t;
}

size_t dacpu_backward_scratch_bytes(const dashattn_plan_desc *plan)
{
    dacpu_arena counter = {NULL, 0, 0};
    take_grad_scratch(&counter, plan);
    return counter.used;
}

static void axpy(float *y, float alpha, const float *x, int64_t n)
{
#pragma omp simd
    for (int64_t i = 0; i < n; i++)
        y[i] += alpha * x[i];
}

/* dL/dw of head g's candidates [first, first + n) (w: the weight the group
 * mode gave them) from dL/dpi, the prior gradient stage 2 left in gprior. */
static void weight_gradient(const dashattn_plan_desc *plan, int64_t g, int64_t first, int64_t n,
                            const grad_scratch *t)
{
    const int64_t m = plan->num_blocks;
    const float *gp = t->gprior + g * m + first, *pi = t->w + g * m + first;
    const double *w = t->s1.w + g * m;
    double *gw = t->gw + g * m;
    if (plan->problem.prior != DASHATTN_PRIOR_FLAT) {
        for (int64_t c = 0; c < n; c++)
            gw[c] = gp[c];
        return;
    }
    /* log pi = (log w - mean log w) / sigma over the kept candidates J: with
     * gamma = dL/dlog pi = pi dL/dpi, dL/dlog w = (gamma - mean_J gamma) / sigma. */
    double sum = 0.0, count = 0.0;
    for (int64_t c = 0; c < n; c++)
        if (w[c] > DACPU_FLAT_PRIOR_FLOOR) {
            sum += (double)pi[c] * gp[c];
            count += 1.0;
        }
    const double mean = count > 0.0 ? sum / count : 0.0, sigma = plan->problem.prior_sigma;
    for (int64_t c = 0; c < n; c++)
        gw[c] = w[c] > DACPU_FLAT_PRIOR_FLOOR ? ((double)pi[c] * gp[c] - mean) / sigma / w[c] : 0.0;
}

/* dq and the block-key gradient from dz, the score gradient of head g
 * (times split, the share of a score it gets). */
static void score_gradient(const dashattn_plan_desc *plan, int64_t g, int64_t first, int64_t n,
                           double split, const float *kbar, grad_scratch *t)
{
    const int64_t d = plan->problem.head_dim;
    for (int64_t c = 0; c < n; c++) {
        const float dz = (float)(plan->problem.stage1_scale * split * t->dz[c]);
        if (dz == 0.0f)
            continue;
        axpy(t->dq + g * d, dz, kbar + (first + c) * d, d);
        axpy(t->dkbar + (first + c) * d, dz, t->q + g * d, d);
    }
}

/* Stage-1 gradient of one row: prior gradients -> weight gradients -> the
 * group mode -> entmax backward -> dq and the block-key gradient. */
static void stage1_backward(const dashattn_plan_desc *plan, const dashattn_row_blocks *r,
                            const float *kbar, grad_scratch *t)
{
    const dashattn_problem *pr = &plan->problem;
    const int64_t gc = plan->group_size, m = plan->num_blocks;
    const int64_t first = r->cand_begin, n = r->cand_end - r->cand_begin;
    if (n <= 0 || plan->threshold_method == DASHATTN_THRESHOLD_TOPK)
        return;
    for (int64_t g = 0; g < gc; g++)
        weight_gradient(plan, g, first, n, t);
    const int one = dacpu_stage1_one_selection(plan);
    if (one || pr->group_mode == DASHATTN_GROUP_MEAN) {
        /* One selection: its weight feeds every head. Mean: each head's p
         * gets 1/G of every head's weight gradient. */
        const double share = one ? 1.0 : 1.0 / (double)gc;
        for (int64_t c = 0; c < n; c++) {
            double sum = 0.0;
            for (int64_t g = 0; g < gc; g++)
                sum += t->gw[g * m + c];
            t->gsum[c] = share * sum;
        }
    }
    if (one) {
        da_entmax_backward(pr->alpha, t->s1.p, t->gsum, n, t->dz);
        for (int64_t g = 0; g < gc; g++)
            score_gradient(plan, g, first, n, 1.0 / (double)gc, kbar, t);
        return;
    }
    for (int64_t g = 0; g < gc; g++) {
        const double *dp = pr->group_mode == DASHATTN_GROUP_MEAN ? t->gsum : t->gw + g * m;
        da_entmax_backward(pr->alpha, t->s1.p + g * m, dp, n, t->dz);
        score_gradient(plan, g, first, n, 1.0, kbar, t);
    }
}

static void backward_row(const dashattn_plan_desc *plan, const dashattn_backward_args *a,
                         const float *kbar, const float *keys_t, int64_t ld_keys, int64_t b,
                         int64_t h, int64_t i, grad_scratch *t)
{
    const dashattn_problem *pr = &plan->problem;
    const int64_t gc = plan->group_size, d = pr->head_dim, m = plan->num_blocks;
    const int64_t s = pr->block_size;
    const float scale = (float)pr->scale;
    const dashattn_row_blocks r = dashattn_row_layout(plan, i + plan->query_offset, pr->len_k);
    const int64_t nvis = dacpu_visible_blocks(plan, &r);

    for (int64_t g = 0; g < gc; g++)
        dacpu_load_row(a->q, b, h * gc + g, i, t->q + g * d);
    dacpu_stage1(plan, &r, nvis, t->q, d, keys_t, ld_keys, t->w, m, &t->s1);
    for (int64_t g = 0; g < gc; g++) {
        const int64_t hq = h * gc + g;
        dacpu_load_row(a->out, b, hq, i, t->o + g * d);
        dacpu_load_row(a->dout, b, hq, i, t->dout + g * d);
        t->delta[g] = dacpu_dot(t->dout + g * d, t->o + g * d, d);
        t->lse[g] = a->lse[(b * pr->heads_q + hq) * pr->len_q + i];
        for (int64_t c = 0; c < d; c++) {
            t->qs[g * d + c] = scale * t->q[g * d + c];
            t->dq[g * d + c] = 0.0f;
        }
        for (int64_t j = 0; j < m; j++)
            t->gprior[g * m + j] = 0.0f;
    }

    for (int64_t j = 0; j < nvis; j++) {
        int any = 0;
        for (int64_t g = 0; g < gc && !any; g++)
            any = t->w[g * m + j] != 0.0f;
        if (!any)
            continue;
        const int64_t first = j * s;
        const int64_t end = first + s < r.visible_end ? first + s : r.visible_end;
        const int64_t ntok = end - first;
        int64_t ldk, ldv;
        const float *kb = dacpu_rows(a->k, b, h, first, ntok, t->kbuf, &ldk);
        const float *vb = dacpu_rows(a->v, b, h, first, ntok, t->vbuf, &ldv);
        const int candidate = !dashattn_block_is_forced(&r, j);
        for (int64_t g = 0; g < gc; g++) {
            const float wj = t->w[g * m + j];
            if (wj == 0.0f)
                continue;
            float gp = 0.0f;
            for (int64_t tt = 0; tt < ntok; tt++) {
                const float *kt = kb + tt * ldk, *vt = vb + tt * ldv;
                const float e = expf(dacpu_dot(t->qs + g * d, kt, d) - t->lse[g]);
                const float prob = e * wj;
                const float ds = dacpu_dot(t->dout + g * d, vt, d) - t->delta[g];
                const float dl = prob * ds;
                axpy(t->dq + g * d, scale * dl, kt, d);
                axpy(t->dk + (first + tt) * d, scale * dl, t->q + g * d, d);
                axpy(t->dv + (first + tt) * d, prob, t->dout + g * d, d);
                gp += e * ds;
            }
            if (candidate)
                t->gprior[g * m + j] = gp;
        }
    }
    stage1_backward(plan, &r, kbar, t);
    for (int64_t g = 0; g < gc; g++)
        dacpu_store_rows(a->dq, b, h * gc + g, i, 1, t->dq + g * d, d);
}

/* Sum every thread's dk, dv and block-key gradient into the outputs, and
 * take the block-key gradient through the pooling weights w_t of each key:
 * dk_t += w_t dkbar + r_t h / sqrt(D), dh += r_t k_t / sqrt(D), with
 * r_t = w_t (k_t - kbar) . dkbar (zero for mean pooling). */
static void reduce_kv(const dashattn_plan_desc *plan, const dashattn_backward_args *a, int team,
                      int64_t b, int64_t h, const float *kbar, const float *pool, grad_scratch *t)
{
    const dashattn_problem *pr = &plan->problem;
    const int64_t d = pr->head_dim, s = pr->block_size, n = pr->len_k;
    float *row_k = t->rows, *row_v = t->rows + d, *dkbar = t->rows + 2 * d, *key = t->rows + 3 * d;
    float hv[DACPU_MAX_DIM];
    const float *hvec = dacpu_summary_vector(a->block_summary, h, hv);
    const double inv_sqrt_d = 1.0 / sqrt((double)d);
#pragma omp for schedule(static)
    for (int64_t j = 0; j < plan->num_blocks; j++) {
        const int64_t end = (j + 1) * s <= n ? (j + 1) * s : n;
        memset(dkbar, 0, (size_t)d * sizeof(float));
        for (int x = 0; x < team; x++) {
            dacpu_arena arena = dacpu_thread_arena(a->workspace, plan, DASHATTN_OP_BACKWARD, x);
            axpy(dkbar, 1.0f, take_grad_scratch(&arena, plan).dkbar + j * d, d);
        }
        for (int64_t tok = j * s; tok < end; tok++) {
            memset(row_k, 0, (size_t)d * sizeof(float));
            memset(row_v, 0, (size_t)d * sizeof(float));
            for (int x = 0; x < team; x++) {
                dacpu_arena arena = dacpu_thread_arena(a->workspace, plan, DASHATTN_OP_BACKWARD, x);
                const grad_scratch other = take_grad_scratch(&arena, plan);
                axpy(row_k, 1.0f, other.dk + tok * d, d);
                axpy(row_v, 1.0f, other.dv + tok * d, d);
            }
            axpy(row_k, pool[tok], dkbar, d);
            if (hvec) {
                dacpu_load_row(a->k, b, h, tok, key);
                /* In double: k - kbar cancels, and dh sums r over every key. */
                double rt = 0.0;
                for (int64_t c = 0; c < d; c++)
                    rt += ((double)key[c] - kbar[j * d + c]) * dkbar[c];
                rt *= (double)pool[tok] * inv_sqrt_d;
                axpy(row_k, (float)rt, hvec, d);
                for (int64_t c = 0; c < d; c++)
                    t->dh[h * d + c] += rt * key[c];
            }
            dacpu_store_rows(a->dk, b, h, tok, 1, row_k, d);
            dacpu_store_rows(a->dv, b, h, tok, 1, row_v, d);
        }
    }
}

/* dh = the threads' sums, added in thread order so the result repeats. */
static void store_dh(const dashattn_plan_desc *plan, const dashattn_backward_args *a, int team,
                     float *row)
{
    const int64_t d = plan->problem.head_dim;
    for (int64_t h = 0; h < plan->problem.heads_kv; h++) {
        for (int64_t c = 0; c < d; c++) {
            double sum = 0.0;
            for (int x = 0; x < team; x++) {
                dacpu_arena arena = dacpu_thread_arena(a->workspace, plan, DASHATTN_OP_BACKWARD, x);
                sum += take_grad_scratch(&arena, plan).dh[h * d + c];
            }
            row[c] = (float)sum;
        }
        dacpu_store_rows(a->dh, 0, h, 0, 1, row, d);
    }
}

dashattn_status dacpu_backward(void *state, const dashattn_plan_desc *plan,
                               const dashattn_backward_args *a)
{
    const dacpu_state *st = state;
    const dashattn_problem *pr = &plan->problem;
    const int64_t d = pr->head_dim, m = plan->num_blocks;
    const dacpu_shared layout = dacpu_shared_layout(plan, DASHATTN_OP_BACKWARD);
    const float *keys = dacpu_shared_at(a->workspace, layout.keys);
    const float *keys_t = dacpu_shared_at(a->workspace, layout.keys_t);
    const float *pool = dacpu_shared_at(a->workspace, layout.pool);
    const dashattn_status started = dacpu_team_check("dashattn_backward", st->num_threads);
    if (started != DASHATTN_OK)
        return started;

#pragma omp parallel num_threads(st->num_threads)
    {
        const int team = DACPU_TEAM_SIZE();
        dacpu_arena arena =
            dacpu_thread_arena(a->workspace, plan, DASHATTN_OP_BACKWARD, DACPU_THREAD_ID());
        grad_scratch t = take_grad_scratch(&arena, plan);
        memset(t.dh, 0, (size_t)(pr->heads_kv * d) * sizeof(double));
        dacpu_block_keys(plan, a->k, a->block_summary, &layout, a->workspace, t.kbuf);
        for (int64_t bh = 0; bh < pr->batch * pr->heads_kv; bh++) {
            const int64_t b = bh / pr->heads_kv, h = bh % pr->heads_kv;
            memset(t.dk, 0, (size_t)(pr->len_k * d) * sizeof(float));
            memset(t.dv, 0, (size_t)(pr->len_k * d) * sizeof(float));
            memset(t.dkbar, 0, (size_t)(m * d) * sizeof(float));
            /* Static round-robin chunks: which thread's accumulator a row
             * lands in, and so the summation order of dk and dv, depends only
             * on the team size, making the gradients reproducible. */
#pragma omp for schedule(static, 4)
            for (int64_t i = 0; i < pr->len_q; i++)
                backward_row(plan, a, keys + bh * m * d, keys_t + bh * d * layout.ld_keys,
                             layout.ld_keys, b, h, pr->len_q - 1 - i, &t);
            reduce_kv(plan, a, team, b, h, keys + bh * m * d, pool + bh * pr->len_k, &t);
        }
        if (a->dh) {
#pragma omp barrier
#pragma omp single
            store_dh(plan, a, team, t.rows);
        }
    }
    return DASHATTN_OK;
}
