/* SPDX-License-Identifier: MIT */
/* Float64 reference of SPEC.md (see reference.h). Written from the text of
 * SPEC.md only: the block layout, the entmax solver and the backward are all
 * independent of the library's code. */
#include "reference.h"

#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void ref_config_from_problem(ref_config *cfg, const dashattn_problem *problem)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->batch = problem->batch;
    cfg->heads_q = problem->heads_q;
    cfg->heads_kv = problem->heads_kv;
    cfg->len_q = problem->len_q;
    cfg->len_k = problem->len_k;
    cfg->head_dim = problem->head_dim;
    cfg->causal = problem->causal != 0;
    cfg->block_size = problem->block_size;
    cfg->n_sink = problem->n_sink;
    cfg->n_local = problem->n_local;
    cfg->alpha = problem->alpha;
    cfg->topk_mode = problem->selection == DASHATTN_SELECT_TOPK;
    cfg->topk = problem->topk;
    cfg->group = (int)problem->group_mode;
    cfg->scale = problem->scale > 0.0 ? problem->scale : 1.0 / sqrt((double)problem->head_dim);
    cfg->scale1 = problem->stage1_scale > 0.0 ? problem->stage1_scale : cfg->scale;
    cfg->flat = problem->prior == DASHATTN_PRIOR_FLAT;
    cfg->sigma = problem->prior_sigma;
    cfg->halley =
        problem->threshold_schedule == DASHATTN_SCHEDULE_HALLEY ? problem->halley_steps : 0;
    cfg->h = NULL;
}

int64_t ref_num_blocks(const ref_config *cfg)
{
    return (cfg->len_k + cfg->block_size - 1) / cfg->block_size;
}

int ref_block_role(const ref_config *cfg, int64_t pos, int64_t j)
{
    if (j < 0 || j >= ref_num_blocks(cfg))
        return REF_BLOCK_UNUSED;
    if (!cfg->causal)
        return j < cfg->n_sink ? REF_BLOCK_FORCED : REF_BLOCK_CANDIDATE;
    const int64_t own = pos / cfg->block_size;
    if (j > own)
        return REF_BLOCK_UNUSED;
    /* F = {j < n_sink} u {own - n_local + 1, ..., own}, clipped to [0, own]. */
    if (j < cfg->n_sink || j > own - cfg->n_local)
        return REF_BLOCK_FORCED;
    /* C = {j < own} \ F. */
    return j < own ? REF_BLOCK_CANDIDATE : REF_BLOCK_UNUSED;
}

int64_t ref_visible_keys(const ref_config *cfg, int64_t pos)
{
    return cfg->causal ? pos + 1 : cfg->len_k;
}

void ref_entmax(double alpha, const double *z, int64_t n, double *p)
{
    double zmax = -INFINITY;
    for (int64_t j = 0; j < n; j++) {
        if (isnan(z[j]) || z[j] == INFINITY) {
            for (int64_t m = 0; m < n; m++)
                p[m] = NAN;
            return;
        }
        zmax = fmax(zmax, z[j]);
    }
    if (zmax == -INFINITY) {
        for (int64_t m = 0; m < n; m++)
            p[m] = NAN;
        return;
    }
    long double sum = 0.0L;
    if (alpha == 1.0) {
        for (int64_t j = 0; j < n; j++)
            sum += expl((long double)z[j] - zmax);
        for (int64_t j = 0; j < n; j++)
            p[j] = (double)(expl((long double)z[j] - zmax) / sum);
        return;
    }
    /* Entmax is shift invariant, so work with x = (alpha - 1)(z - max): then
     * max x = 0 and the threshold lies in [-1, 0] (sum >= 1 at -1 because the
     * top entry alone gives 1, sum = 0 at 0). Bisect until the interval stops
     * shrinking in long double. */
    const long double am1 = (long double)alpha - 1.0L;
    const long double expo = 1.0L / am1;
    long double lo = -1.0L, hi = 0.0L;
    for (int it = 0; it < 400; it++) {
        const long double mid = 0.5L * (lo + hi);
        if (mid <= lo || mid >= hi)
            break;
        long double s = 0.0L;
        for (int64_t j = 0; j < n; j++) {
            const long double d = am1 * ((long double)z[j] - zmax) - mid;
            if (d > 0.0L)
                s += powl(d, expo);
        }
        if (s >= 1.0L)
            lo = mid;
        else
            hi = mid;
    }
    const long double tau = lo;
    sum = 0.0L;
    for (int64_t j = 0; j < n; j++) {
        const long double d = am1 * ((long double)z[j] - zmax) - tau;
        sum += d > 0.0L ? powl(d, expo) : 0.0L;
    }
    for (int64_t j = 0; j < n; j++) {
        const long double d = am1 * ((long double)z[j] - zmax) - tau;
        p[j] = d > 0.0L ? (double)(powl(d, expo) / sum) : 0.0;
    }
}

void ref_halley(const double *z, int64_t n, int steps, double *p)
{
    long double top = -INFINITY;
    for (int64_t j = 0; j < n; j++) {
        if (isnan(z[j])) {
            for (int64_t m = 0; m < n; m++)
                p[m] = NAN;
            return;
        }
        top = fmaxl(top, 0.5L * z[j]);
    }
    long double lo = top - 1.0L, hi = top, t = 0.5L * (lo + hi);
    for (int step = 0; step < steps; step++) {
        long double f = -1.0L, f1 = 0.0L, f2 = 0.0L;
        for (int64_t j = 0; j < n; j++) {
            const long double x = 0.5L * z[j];
            if (x > t) {
                f += (x - t) * (x - t);
                f1 -= 2.0L * (x - t);
                f2 += 2.0L;
            }
        }
        const long double next = t - 2.0L * f * f1 / (2.0L * f1 * f1 - f * f2);
        if (f > 0.0L)
            lo = t;
        if (f < 0.0L)
            hi = t;
        t = (next > lo - 1e-5L && next < hi + 1e-5L) ? next : 0.5L * (lo + hi);
    }
    for (int64_t j = 0; j < n; j++) {
        const long double x = 0.5L * z[j];
        p[j] = x > t ? (double)((x - t) * (x - t)) : 0.0;
    }
}

void ref_topk(const double *z, int64_t n, int64_t k, double *p)
{
    for (int64_t j = 0; j < n; j++) {
        int64_t better = 0;
        for (int64_t m = 0; m < n; m++)
            if (z[m] > z[j] || (z[m] == z[j] && m < j))
                better++;
        p[j] = (better < k && z[j] != -INFINITY) ? 1.0 : 0.0;
    }
}

/* Entmax backward from the Jacobian of SPEC.md step 4 (softmax's for alpha 1). */
static void ref_entmax_backward(double alpha, const double *p, const double *g, int64_t n,
                                double *dz)
{
    double su = 0.0, sug = 0.0;
    for (int64_t j = 0; j < n; j++) {
        const double u = p[j] > 0.0 ? (alpha == 1.0 ? p[j] : pow(p[j], 2.0 - alpha)) : 0.0;
        dz[j] = u;
        su += u;
        sug += u * g[j];
    }
    for (int64_t j = 0; j < n; j++)
        dz[j] = dz[j] > 0.0 ? dz[j] * (g[j] - sug / su) : 0.0;
}

static double ref_dot(const double *a, const double *b, int64_t n)
{
    double s = 0.0;
    for (int64_t d = 0; d < n; d++)
        s += a[d] * b[d];
    return s;
}

double *ref_to_double(const float *x, int64_t n)
{
    double *y = tu_xcalloc((size_t)n, sizeof *y);
    for (int64_t i = 0; i < n; i++)
        y[i] = (double)x[i];
    return y;
}

/* Pooling weights w[t - t0] of block [t0, t1) of one KV head's keys. */
static void ref_pooling(const ref_config *cfg, const double *kh, int64_t hk, int64_t t0, int64_t t1,
                        double *w)
{
    const int64_t dim = cfg->head_dim;
    if (cfg->h == NULL) {
        for (int64_t t = t0; t < t1; t++)
            w[t - t0] = 1.0 / (double)(t1 - t0);
        return;
    }
    double top = -INFINITY, sum = 0.0;
    for (int64_t t = t0; t < t1; t++) {
        w[t - t0] = ref_dot(cfg->h + hk * dim, kh + t * dim, dim) / sqrt((double)dim);
        top = fmax(top, w[t - t0]);
    }
    for (int64_t t = t0; t < t1; t++)
        sum += w[t - t0] = exp(w[t - t0] - top);
    for (int64_t t = t0; t < t1; t++)
        w[t - t0] /= sum;
}

void ref_block_keys(const ref_config *cfg, const double *k, double *kbar)
{
    const int64_t m_blocks = ref_num_blocks(cfg), dim = cfg->head_dim, s = cfg->block_size;
    double *w = tu_xcalloc((size_t)s, sizeof *w);
    for (int64_t bh = 0; bh < cfg->batch * cfg->heads_kv; bh++) {
        const double *kh = k + bh * cfg->len_k * dim;
        for (int64_t j = 0; j < m_blocks; j++) {
            const int64_t t0 = j * s;
            const int64_t t1 = (j + 1) * s < cfg->len_k ? (j + 1) * s : cfg->len_k;
            double *out = kbar + (bh * m_blocks + j) * dim;
            ref_pooling(cfg, kh, bh % cfg->heads_kv, t0, t1, w);
            for (int64_t d = 0; d < dim; d++) {
                double sum = 0.0;
                for (int64_t t = t0; t < t1; t++)
                    sum += w[t - t0] * kh[t * dim + d];
                out[d] = sum;
            }
        }
    }
    free(w);
}

/* Scratch of one query position of a GQA group (G heads). */
typedef struct ref_row_scratch {
    int64_t group, n;      /* heads, candidates */
    int64_t *cand;         /* candidate block indices */
    double *z;             /* [n] */
    double *p;             /* [G][n] selection of each head (row 0 alone if the group has one) */
    double *wg;            /* [G][n] weight each head gives each candidate, by the group mode */
    double *pi;            /* [G][M] prior of every block */
    double *g, *gsum, *dz; /* [G][n], [n], [n] */
    double *e;             /* [Nk] exp(lambda q.k_t - lse) */
    double *o;             /* [D] */
} ref_row_scratch;

static void ref_scratch_alloc(const ref_config *cfg, ref_row_scratch *s)
{
    const size_t m = (size_t)ref_num_blocks(cfg), g = (size_t)(cfg->heads_q / cfg->heads_kv);
    s->group = (int64_t)g;
    s->cand = tu_xcalloc(m, sizeof *s->cand);
    s->z = tu_xcalloc(m, sizeof(double));
    s->p = tu_xcalloc(g * m, sizeof(double));
    s->wg = tu_xcalloc(g * m, sizeof(double));
    s->pi = tu_xcalloc(g * m, sizeof(double));
    s->g = tu_xcalloc(g * m, sizeof(double));
    s->gsum = tu_xcalloc(m, sizeof(double));
    s->dz = tu_xcalloc(m, sizeof(double));
    s->e = tu_xcalloc((size_t)cfg->len_k, sizeof(double));
    s->o = tu_xcalloc((size_t)cfg->head_dim, sizeof(double));
}

static void ref_scratch_free(ref_row_scratch *s)
{
    free(s->cand);
    free(s->z);
    free(s->p);
    free(s->wg);
    free(s->pi);
    free(s->g);
    free(s->gsum);
    free(s->dz);
    free(s->e);
    free(s->o);
}

static const double *ref_q_row(const ref_config *cfg, const double *q, int64_t b, int64_t h,
                               int64_t i)
{
    return q + ((b * cfg->heads_q + h) * cfg->len_q + i) * cfg->head_dim;
}

/* One selection on the scores z[0, n): entmax, Halley or top-k. */
static void ref_select(const ref_config *cfg, const double *z, int64_t n, double *p)
{
    if (cfg->topk_mode)
        ref_topk(z, n, cfg->topk, p);
    else if (cfg->halley > 0)
        ref_halley(z, n, cfg->halley, p);
    else
        ref_entmax(cfg->alpha, z, n, p);
}

/* Shared mode, and top-k in mean mode, select once on the group's mean score. */
static int ref_one_selection(const ref_config *cfg)
{
    return cfg->group == DASHATTN_GROUP_SHARED ||
           (cfg->group == DASHATTN_GROUP_MEAN && cfg->topk_mode);
}

/* Stage 1 of query row i of every head of KV head hk: s->cand, s->n, s->p,
 * s->wg and the priors s->pi. */
static void ref_stage1(const ref_config *cfg, const double *q, const double *kbar, int64_t b,
                       int64_t hk, int64_t i, ref_row_scratch *s)
{
    const int64_t m_blocks = ref_num_blocks(cfg), dim = cfg->head_dim, gc = s->group;
    const int64_t pos = i + cfg->len_k - cfg->len_q;
    int64_t n = 0;
    for (int64_t j = 0; j < m_blocks; j++) {
        const int role = ref_block_role(cfg, pos, j);
        for (int64_t g = 0; g < gc; g++)
            s->pi[g * m_blocks + j] = role == REF_BLOCK_FORCED ? 1.0 : 0.0;
        if (role == REF_BLOCK_CANDIDATE)
            s->cand[n++] = j;
    }
    s->n = n;
    if (n == 0)
        return;
    const int one = ref_one_selection(cfg);
    for (int64_t g = 0; g < gc; g++) {
        const double *qi = ref_q_row(cfg, q, b, hk * gc + g, i);
        for (int64_t c = 0; c < n; c++) {
            const double *kb = kbar + ((b * cfg->heads_kv + hk) * m_blocks + s->cand[c]) * dim;
            const double z = cfg->scale1 * ref_dot(qi, kb, dim);
            if (one)
                s->z[c] = (g == 0 ? 0.0 : s->z[c]) + z / (double)gc;
            else
                s->z[c] = z;
        }
        if (!one)
            ref_select(cfg, s->z, n, s->p + g * m_blocks);
    }
    if (one)
        ref_select(cfg, s->z, n, s->p);
    for (int64_t g = 0; g < gc; g++)
        for (int64_t c = 0; c < n; c++) {
            double w;
            if (one) {
                w = s->p[c];
            } else if (cfg->group == DASHATTN_GROUP_MEAN) {
                w = 0.0;
                for (int64_t x = 0; x < gc; x++)
                    w += s->p[x * m_blocks + c] / (double)gc;
            } else {
                w = s->p[g * m_blocks + c];
            }
            s->wg[g * m_blocks + c] = w;
        }
    /* The prior of the candidates: w, or flattened around the mean log
     * weight of the candidates above 1e-20. */
    for (int64_t g = 0; g < gc; g++) {
        const double *w = s->wg + g * m_blocks;
        double mu = 0.0, count = 0.0;
        for (int64_t c = 0; c < n; c++)
            if (w[c] > 1e-20) {
                mu += log(w[c]);
                count += 1.0;
            }
        mu = count > 0.0 ? mu / count : 0.0;
        for (int64_t c = 0; c < n; c++) {
            double pi = w[c];
            if (cfg->flat)
                pi = w[c] > 1e-20 ? exp((log(w[c]) - mu) / cfg->sigma) : isnan(w[c]) ? NAN : 0.0;
            s->pi[g * m_blocks + s->cand[c]] = pi;
        }
    }
}

/* Stage 2 for one query row given its priors w[M]: fills s->e (exp(lambda
 * q.k - lse) on the attended keys, 0 elsewhere), s->o and the row's lse;
 * counts pairs. */
static double ref_stage2(const ref_config *cfg, const double *qrow, const double *kh,
                         const double *vh, int64_t pos, const double *pw, ref_row_scratch *s,
                         int64_t *visible, int64_t *attended)
{
    const int64_t dim = cfg->head_dim, nvis = ref_visible_keys(cfg, pos);
    double lmax = -INFINITY;
    for (int64_t t = 0; t < nvis; t++) {
        const double w = pw[t / cfg->block_size];
        if (w > 0.0)
            lmax = fmax(lmax, cfg->scale * ref_dot(qrow, kh + t * dim, dim) + log(w));
    }
    double sum = 0.0;
    for (int64_t t = 0; t < nvis; t++) {
        const double w = pw[t / cfg->block_size];
        if (w > 0.0) {
            sum += exp(cfg->scale * ref_dot(qrow, kh + t * dim, dim) + log(w) - lmax);
            (*attended)++;
        }
    }
    *visible += nvis;
    const double lse = lmax + log(sum);
    for (int64_t d = 0; d < dim; d++)
        s->o[d] = 0.0;
    for (int64_t t = 0; t < cfg->len_k; t++) {
        const double w = t < nvis ? pw[t / cfg->block_size] : 0.0;
        s->e[t] = w > 0.0 ? exp(cfg->scale * ref_dot(qrow, kh + t * dim, dim) - lse) : 0.0;
        const double a = w * s->e[t];
        for (int64_t d = 0; d < dim && a > 0.0; d++)
            s->o[d] += a * vh[t * dim + d];
    }
    return lse;
}

void ref_forward(const ref_config *cfg, const double *q, const double *k, const double *v,
                 ref_result *res)
{
    const int64_t m_blocks = ref_num_blocks(cfg), dim = cfg->head_dim;
    const int64_t group = cfg->heads_q / cfg->heads_kv;
    const int64_t rows = cfg->batch * cfg->heads_q * cfg->len_q;
    double *kbar = tu_xcalloc((size_t)(cfg->batch * cfg->heads_kv * m_blocks * dim), sizeof *kbar);
    ref_block_keys(cfg, k, kbar);
    res->out = tu_xcalloc((size_t)(rows * dim), sizeof(double));
    res->lse = tu_xcalloc((size_t)rows, sizeof(double));
    res->w = tu_xcalloc((size_t)(rows * m_blocks), sizeof(double));
    res->wsel = tu_xcalloc((size_t)(rows * m_blocks), sizeof(double));
    res->visible_pairs = 0;
    res->attended_pairs = 0;
    ref_row_scratch s;
    ref_scratch_alloc(cfg, &s);
    for (int64_t b = 0; b < cfg->batch; b++) {
        for (int64_t hk = 0; hk < cfg->heads_kv; hk++) {
            const double *kh = k + (b * cfg->heads_kv + hk) * cfg->len_k * dim;
            const double *vh = v + (b * cfg->heads_kv + hk) * cfg->len_k * dim;
            for (int64_t i = 0; i < cfg->len_q; i++) {
                const int64_t pos = i + cfg->len_k - cfg->len_q;
                ref_stage1(cfg, q, kbar, b, hk, i, &s);
                for (int64_t g = 0; g < group; g++) {
                    const int64_t h = hk * group + g;
                    const int64_t row = (b * cfg->heads_q + h) * cfg->len_q + i;
                    const double *pw = s.pi + g * m_blocks;
                    res->lse[row] = ref_stage2(cfg, ref_q_row(cfg, q, b, h, i), kh, vh, pos, pw, &s,
                                               &res->visible_pairs, &res->attended_pairs);
                    memcpy(res->out + row * dim, s.o, (size_t)dim * sizeof(double));
                    memcpy(res->w + row * m_blocks, pw, (size_t)m_blocks * sizeof(double));
                    double *ws = res->wsel + row * m_blocks;
                    for (int64_t j = 0; j < m_blocks; j++)
                        ws[j] = pw[j] == 1.0 && ref_block_role(cfg, pos, j) == REF_BLOCK_FORCED
                                    ? 1.0
                                    : 0.0;
                    for (int64_t c = 0; c < s.n; c++)
                        ws[s.cand[c]] = s.wg[g * m_blocks + c];
                }
            }
        }
    }
    res->sparsity = res->visible_pairs > 0
                        ? 1.0 - (double)res->attended_pairs / (double)res->visible_pairs
                        : 0.0;
    ref_scratch_free(&s);
    free(kbar);
}

void ref_forward_free(ref_result *res)
{
    free(res->out);
    free(res->lse);
    free(res->w);
    free(res->wsel);
    res->out = res->lse = res->w = res->wsel = NULL;
}

/* SPEC.md backward steps 2-5 for one query position of KV head hk, given
 * each head's prior gradient dL/dpi in s->g ([G][M], indexed by block). */
static void ref_stage1_backward(const ref_config *cfg, const double *q, const double *kbarh,
                                int64_t b, int64_t hk, int64_t i, ref_row_scratch *s, double *dq,
                                double *dkbarh)
{
    const int64_t m_blocks = ref_num_blocks(cfg), dim = cfg->head_dim, gc = s->group;
    const int64_t n = s->n;
    if (n == 0 || cfg->topk_mode)
        return;
    /* dL/dw of each head's candidates, in place of dL/dpi, re-indexed by candidate. */
    for (int64_t g = 0; g < gc; g++) {
        double *gr = s->g + g * m_blocks;
        const double *w = s->wg + g * m_blocks, *pi = s->pi + g * m_blocks;
        double gamma_mean = 0.0, count = 0.0;
        for (int64_t c = 0; c < n; c++) {
            s->gsum[c] = gr[s->cand[c]]; /* dL/dpi */
            if (w[c] > 1e-20) {
                gamma_mean += pi[s->cand[c]] * s->gsum[c];
                count += 1.0;
            }
        }
        gamma_mean = count > 0.0 ? gamma_mean / count : 0.0;
        for (int64_t c = 0; c < n; c++) {
            if (!cfg->flat)
                gr[c] = s->gsum[c];
            else
                gr[c] = w[c] > 1e-20
                            ? (pi[s->cand[c]] * s->gsum[c] - gamma_mean) / cfg->sigma / w[c]
                            : 0.0;
        }
    }
    const int one = ref_one_selection(cfg);
    for (int64_t g = 0; g < gc; g++) {
        const double *p = s->p + (one ? 0 : g) * m_blocks;
        double share = 1.0;
        if (one || cfg->group == DASHATTN_GROUP_MEAN) {
            /* The weight is a sum (one selection) or mean over the heads. */
            for (int64_t c = 0; c < n; c++) {
                s->gsum[c] = 0.0;
                for (int64_t x = 0; x < gc; x++)
                    s->gsum[c] += s->g[x * m_blocks + c] / (one ? 1.0 : (double)gc);
            }
            ref_entmax_backward(cfg->alpha, p, s->gsum, n, s->dz);
            share = one ? 1.0 / (double)gc : 1.0;
        } else {
            ref_entmax_backward(cfg->alpha, p, s->g + g * m_blocks, n, s->dz);
        }
        const double *qi = ref_q_row(cfg, q, b, hk * gc + g, i);
        double *dqi = dq + ((b * cfg->heads_q + hk * gc + g) * cfg->len_q + i) * dim;
        for (int64_t c = 0; c < n; c++) {
            const double dz = cfg->scale1 * share * s->dz[c];
            for (int64_t d = 0; d < dim; d++) {
                dqi[d] += dz * kbarh[s->cand[c] * dim + d];
                dkbarh[s->cand[c] * dim + d] += dz * qi[d];
            }
        }
    }
}

void ref_backward(const ref_config *cfg, const double *q, const double *k, const double *v,
                  const double *dout, double *dq, double *dk, double *dv, double *dh)
{
    const int64_t m_blocks = ref_num_blocks(cfg), dim = cfg->head_dim, s_blk = cfg->block_size;
    const int64_t group = cfg->heads_q / cfg->heads_kv;
    const size_t kv_elems = (size_t)(cfg->batch * cfg->heads_kv * cfg->len_k * dim);
    const size_t kbar_elems = (size_t)(cfg->batch * cfg->heads_kv * m_blocks * dim);
    double *kbar = tu_xcalloc(kbar_elems, sizeof *kbar);
    double *dkbar = tu_xcalloc(kbar_elems, sizeof *dkbar);
    double *pool = tu_xcalloc((size_t)s_blk, sizeof *pool);
    ref_block_keys(cfg, k, kbar);
    memset(dq, 0, (size_t)(cfg->batch * cfg->heads_q * cfg->len_q * dim) * sizeof *dq);
    memset(dk, 0, kv_elems * sizeof *dk);
    memset(dv, 0, kv_elems * sizeof *dv);
    if (dh != NULL)
        memset(dh, 0, (size_t)(cfg->heads_kv * dim) * sizeof *dh);
    ref_row_scratch s;
    ref_scratch_alloc(cfg, &s);

    for (int64_t b = 0; b < cfg->batch; b++) {
        for (int64_t hk = 0; hk < cfg->heads_kv; hk++) {
            const double *kh = k + (b * cfg->heads_kv + hk) * cfg->len_k * dim;
            const double *vh = v + (b * cfg->heads_kv + hk) * cfg->len_k * dim;
            double *dkh = dk + (b * cfg->heads_kv + hk) * cfg->len_k * dim;
            double *dvh = dv + (b * cfg->heads_kv + hk) * cfg->len_k * dim;
            double *dkbarh = dkbar + (b * cfg->heads_kv + hk) * m_blocks * dim;
            const double *kbarh = kbar + (b * cfg->heads_kv + hk) * m_blocks * dim;
            for (int64_t i = 0; i < cfg->len_q; i++) {
                const int64_t pos = i + cfg->len_k - cfg->len_q;
                ref_stage1(cfg, q, kbar, b, hk, i, &s);
                for (int64_t g = 0; g < group; g++) {
                    const int64_t h = hk * group + g;
                    const double *qi = ref_q_row(cfg, q, b, h, i);
                    const double *doi = dout + ((b * cfg->heads_q + h) * cfg->len_q + i) * dim;
                    double *dqi = dq + ((b * cfg->heads_q + h) * cfg->len_q + i) * dim;
                    const double *pw = s.pi + g * m_blocks;
                    double *gpi = s.g + g * m_blocks;
                    int64_t vis = 0, att = 0;
                    ref_stage2(cfg, qi, kh, vh, pos, pw, &s, &vis, &att);
                    const double dl_row = ref_dot(doi, s.o, dim);
                    for (int64_t j = 0; j < m_blocks; j++)
                        gpi[j] = 0.0;
                    for (int64_t t = 0; t < cfg->len_k; t++) {
                        if (s.e[t] == 0.0)
                            continue;
                        const double a = pw[t / s_blk] * s.e[t];
                        const double dp = ref_dot(doi, vh + t * dim, dim);
                        const double dl = a * (dp - dl_row);
                        for (int64_t d = 0; d < dim; d++) {
                            dqi[d] += cfg->scale * dl * kh[t * dim + d];
                            dkh[t * dim + d] += cfg->scale * dl * qi[d];
                            dvh[t * dim + d] += a * doi[d];
                        }
                        /* dL/dpi of the key's block: sum e (dP - Dl). */
                        gpi[t / s_blk] += s.e[t] * (dp - dl_row);
                    }
                }
                ref_stage1_backward(cfg, q, kbarh, b, hk, i, &s, dq, dkbarh);
            }
            /* kbar_j = sum_t w_t k_t with w = softmax(h . k / sqrt(D)). */
            for (int64_t j = 0; j < m_blocks; j++) {
                const int64_t t0 = j * s_blk;
                const int64_t t1 = t0 + s_blk < cfg->len_k ? t0 + s_blk : cfg->len_k;
                ref_pooling(cfg, kh, hk, t0, t1, pool);
                for (int64_t t = t0; t < t1; t++) {
                    const double wt = pool[t - t0];
                    double r = 0.0;
                    for (int64_t d = 0; d < dim; d++) {
                        dkh[t * dim + d] += wt * dkbarh[j * dim + d];
                        r += wt * (kh[t * dim + d] - kbarh[j * dim + d]) * dkbarh[j * dim + d];
                    }
                    if (cfg->h == NULL)
                        continue;
                    r /= sqrt((double)dim);
                    for (int64_t d = 0; d < dim; d++) {
                        dkh[t * dim + d] += r * cfg->h[hk * dim + d];
                        if (dh != NULL)
                            dh[hk * dim + d] += r * kh[t * dim + d];
                    }
                }
            }
        }
    }
    ref_scratch_free(&s);
    free(kbar);
    free(dkbar);
    free(pool);
}

void ref_dense(const ref_config *cfg, const double *q, const double *k, const double *v,
               double *out, double *lse)
{
    const int64_t dim = cfg->head_dim, group = cfg->heads_q / cfg->heads_kv;
    double *l = tu_xcalloc((size_t)cfg->len_k, sizeof *l);
    for (int64_t b = 0; b < cfg->batch; b++) {
        for (int64_t h = 0; h < cfg->heads_q; h++) {
            const int64_t hk = h / group;
            const double *kh = k + (b * cfg->heads_kv + hk) * cfg->len_k * dim;
            const double *vh = v + (b * cfg->heads_kv + hk) * cfg->len_k * dim;
            for (int64_t i = 0; i < cfg->len_q; i++) {
                const int64_t row = (b * cfg->heads_q + h) * cfg->len_q + i;
                const double *qi = q + row * dim;
                const int64_t nvis = cfg->causal ? i + cfg->len_k - cfg->len_q + 1 : cfg->len_k;
                double lmax = -INFINITY, sum = 0.0;
                for (int64_t t = 0; t < nvis; t++) {
                    l[t] = cfg->scale * ref_dot(qi, kh + t * dim, dim);
                    lmax = fmax(lmax, l[t]);
                }
                for (int64_t t = 0; t < nvis; t++)
                    sum += exp(l[t] - lmax);
                for (int64_t d = 0; d < dim; d++) {
                    double acc = 0.0;
                    for (int64_t t = 0; t < nvis; t++)
                        acc += exp(l[t] - lmax) / sum * vh[t * dim + d];
                    out[row * dim + d] = acc;
                }
                if (lse != NULL)
                    lse[row] = lmax + log(sum);
            }
        }
    }
    free(l);
}
