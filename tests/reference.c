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
    cfg->shared = problem->group_mode == DASHATTN_GROUP_SHARED;
    cfg->scale = problem->scale > 0.0 ? problem->scale : 1.0 / sqrt((double)problem->head_dim);
    cfg->scale1 = problem->stage1_scale > 0.0 ? problem->stage1_scale : cfg->scale;
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

void ref_block_keys(const ref_config *cfg, const double *k, double *kbar)
{
    const int64_t m_blocks = ref_num_blocks(cfg), dim = cfg->head_dim, s = cfg->block_size;
    for (int64_t bh = 0; bh < cfg->batch * cfg->heads_kv; bh++) {
        for (int64_t j = 0; j < m_blocks; j++) {
            const int64_t t0 = j * s;
            const int64_t t1 = (j + 1) * s < cfg->len_k ? (j + 1) * s : cfg->len_k;
            double *out = kbar + (bh * m_blocks + j) * dim;
            for (int64_t d = 0; d < dim; d++) {
                double sum = 0.0;
                for (int64_t t = t0; t < t1; t++)
                    sum += k[(bh * cfg->len_k + t) * dim + d];
                out[d] = sum / (double)(t1 - t0);
            }
        }
    }
}

/* Scratch for one selection set (a query head, or a GQA group in shared mode). */
typedef struct ref_row_scratch {
    int64_t *cand; /* candidate block indices */
    double *z, *p, *g, *dz;
    double *w; /* [M] weights of the row */
    double *e; /* [Nk] exp(lambda q.k_t - lse) */
    double *o; /* [D] */
} ref_row_scratch;

static void ref_scratch_alloc(const ref_config *cfg, ref_row_scratch *s)
{
    const int64_t m_blocks = ref_num_blocks(cfg);
    s->cand = tu_xcalloc((size_t)m_blocks, sizeof *s->cand);
    s->z = tu_xcalloc((size_t)m_blocks, sizeof(double));
    s->p = tu_xcalloc((size_t)m_blocks, sizeof(double));
    s->g = tu_xcalloc((size_t)m_blocks, sizeof(double));
    s->dz = tu_xcalloc((size_t)m_blocks, sizeof(double));
    s->w = tu_xcalloc((size_t)m_blocks, sizeof(double));
    s->e = tu_xcalloc((size_t)cfg->len_k, sizeof(double));
    s->o = tu_xcalloc((size_t)cfg->head_dim, sizeof(double));
}

static void ref_scratch_free(ref_row_scratch *s)
{
    free(s->cand);
    free(s->z);
    free(s->p);
    free(s->g);
    free(s->dz);
    free(s->w);
    free(s->e);
    free(s->o);
}

static const double *ref_q_row(const ref_config *cfg, const double *q, int64_t b, int64_t h,
                               int64_t i)
{
    return q + ((b * cfg->heads_q + h) * cfg->len_q + i) * cfg->head_dim;
}

/* Stage 1 for query row i of heads [h0, h0 + nh) (nh > 1 only in shared mode):
 * fills s->w, and s->cand / s->p with the candidates; returns their count. */
static int64_t ref_stage1(const ref_config *cfg, const double *q, const double *kbar, int64_t b,
                          int64_t h0, int64_t nh, int64_t i, ref_row_scratch *s)
{
    const int64_t m_blocks = ref_num_blocks(cfg), dim = cfg->head_dim;
    const int64_t group = cfg->heads_q / cfg->heads_kv, hk = h0 / group;
    const int64_t pos = i + cfg->len_k - cfg->len_q;
    int64_t n = 0;
    for (int64_t j = 0; j < m_blocks; j++) {
        const int role = ref_block_role(cfg, pos, j);
        s->w[j] = role == REF_BLOCK_FORCED ? 1.0 : 0.0;
        if (role == REF_BLOCK_CANDIDATE)
            s->cand[n++] = j;
    }
    if (n == 0)
        return 0;
    for (int64_t c = 0; c < n; c++) {
        const double *kb = kbar + ((b * cfg->heads_kv + hk) * m_blocks + s->cand[c]) * dim;
        double z = 0.0;
        for (int64_t h = h0; h < h0 + nh; h++)
            z += cfg->scale1 * ref_dot(ref_q_row(cfg, q, b, h, i), kb, dim);
        s->z[c] = z / (double)nh;
    }
    if (cfg->topk_mode)
        ref_topk(s->z, n, cfg->topk, s->p);
    else
        ref_entmax(cfg->alpha, s->z, n, s->p);
    for (int64_t c = 0; c < n; c++)
        s->w[s->cand[c]] = s->p[c];
    return n;
}

/* Stage 2 for one query row given s->w: fills s->e (exp(lambda q.k - lse) on
 * the attended keys, 0 elsewhere), s->o and the row's lse; counts pairs. */
static double ref_stage2(const ref_config *cfg, const double *qrow, const double *kh,
                         const double *vh, int64_t pos, ref_row_scratch *s, int64_t *visible,
                         int64_t *attended)
{
    const int64_t dim = cfg->head_dim, nvis = ref_visible_keys(cfg, pos);
    double lmax = -INFINITY;
    for (int64_t t = 0; t < nvis; t++) {
        const double w = s->w[t / cfg->block_size];
        if (w > 0.0)
            lmax = fmax(lmax, cfg->scale * ref_dot(qrow, kh + t * dim, dim) + log(w));
    }
    double sum = 0.0;
    for (int64_t t = 0; t < nvis; t++) {
        const double w = s->w[t / cfg->block_size];
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
        const double w = t < nvis ? s->w[t / cfg->block_size] : 0.0;
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
    res->visible_pairs = 0;
    res->attended_pairs = 0;
    ref_row_scratch s;
    ref_scratch_alloc(cfg, &s);
    for (int64_t b = 0; b < cfg->batch; b++) {
        for (int64_t h = 0; h < cfg->heads_q; h++) {
            const int64_t hk = h / group;
            const double *kh = k + (b * cfg->heads_kv + hk) * cfg->len_k * dim;
            const double *vh = v + (b * cfg->heads_kv + hk) * cfg->len_k * dim;
            for (int64_t i = 0; i < cfg->len_q; i++) {
                const int64_t pos = i + cfg->len_k - cfg->len_q;
                const int64_t row = (b * cfg->heads_q + h) * cfg->len_q + i;
                if (cfg->shared)
                    ref_stage1(cfg, q, kbar, b, hk * group, group, i, &s);
                else
                    ref_stage1(cfg, q, kbar, b, h, 1, i, &s);
                res->lse[row] = ref_stage2(cfg, ref_q_row(cfg, q, b, h, i), kh, vh, pos, &s,
                                           &res->visible_pairs, &res->attended_pairs);
                memcpy(res->out + row * dim, s.o, (size_t)dim * sizeof(double));
                memcpy(res->w + row * m_blocks, s.w, (size_t)m_blocks * sizeof(double));
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
    res->out = res->lse = res->w = NULL;
}

void ref_backward(const ref_config *cfg, const double *q, const double *k, const double *v,
                  const double *dout, double *dq, double *dk, double *dv)
{
    const int64_t m_blocks = ref_num_blocks(cfg), dim = cfg->head_dim, s_blk = cfg->block_size;
    const int64_t group = cfg->heads_q / cfg->heads_kv;
    const size_t kv_elems = (size_t)(cfg->batch * cfg->heads_kv * cfg->len_k * dim);
    const size_t kbar_elems = (size_t)(cfg->batch * cfg->heads_kv * m_blocks * dim);
    double *kbar = tu_xcalloc(kbar_elems, sizeof *kbar);
    double *dkbar = tu_xcalloc(kbar_elems, sizeof *dkbar);
    ref_block_keys(cfg, k, kbar);
    memset(dq, 0, (size_t)(cfg->batch * cfg->heads_q * cfg->len_q * dim) * sizeof *dq);
    memset(dk, 0, kv_elems * sizeof *dk);
    memset(dv, 0, kv_elems * sizeof *dv);
    ref_row_scratch s;
    ref_scratch_alloc(cfg, &s);
    /* A selection set: one query head, or a whole GQA group in shared mode. */
    const int64_t set_size = cfg->shared ? group : 1;

    for (int64_t b = 0; b < cfg->batch; b++) {
        for (int64_t hk = 0; hk < cfg->heads_kv; hk++) {
            const double *kh = k + (b * cfg->heads_kv + hk) * cfg->len_k * dim;
            const double *vh = v + (b * cfg->heads_kv + hk) * cfg->len_k * dim;
            double *dkh = dk + (b * cfg->heads_kv + hk) * cfg->len_k * dim;
            double *dvh = dv + (b * cfg->heads_kv + hk) * cfg->len_k * dim;
            double *dkbarh = dkbar + (b * cfg->heads_kv + hk) * m_blocks * dim;
            const double *kbarh = kbar + (b * cfg->heads_kv + hk) * m_blocks * dim;
            for (int64_t h0 = hk * group; h0 < (hk + 1) * group; h0 += set_size) {
                for (int64_t i = 0; i < cfg->len_q; i++) {
                    const int64_t pos = i + cfg->len_k - cfg->len_q;
                    const int64_t n = ref_stage1(cfg, q, kbar, b, h0, set_size, i, &s);
                    for (int64_t c = 0; c < n; c++)
                        s.g[c] = 0.0;
                    for (int64_t h = h0; h < h0 + set_size; h++) {
                        const double *qi = ref_q_row(cfg, q, b, h, i);
                        const double *doi = dout + ((b * cfg->heads_q + h) * cfg->len_q + i) * dim;
                        double *dqi = dq + ((b * cfg->heads_q + h) * cfg->len_q + i) * dim;
                        int64_t vis = 0, att = 0;
                        ref_stage2(cfg, qi, kh, vh, pos, &s, &vis, &att);
                        const double dl_row = ref_dot(doi, s.o, dim);
                        for (int64_t t = 0; t < cfg->len_k; t++) {
                            if (s.e[t] == 0.0)
                                continue;
                            const double a = s.w[t / s_blk] * s.e[t];
                            const double dp = ref_dot(doi, vh + t * dim, dim);
                            const double dl = a * (dp - dl_row);
                            for (int64_t d = 0; d < dim; d++) {
                                dqi[d] += cfg->scale * dl * kh[t * dim + d];
                                dkh[t * dim + d] += cfg->scale * dl * qi[d];
                                dvh[t * dim + d] += a * doi[d];
                            }
                            /* SPEC.md step 3: the prior gradient of the key's block. */
                            for (int64_t c = 0; c < n; c++)
                                if (s.cand[c] == t / s_blk)
                                    s.g[c] += s.e[t] * (dp - dl_row);
                        }
                    }
                    if (n == 0 || cfg->topk_mode)
                        continue;
                    ref_entmax_backward(cfg->alpha, s.p, s.g, n, s.dz);
                    /* The shared score is the mean over the set's heads, so
                     * each head's score receives dz / set_size. */
                    for (int64_t h = h0; h < h0 + set_size; h++) {
                        const double *qi = ref_q_row(cfg, q, b, h, i);
                        double *dqi = dq + ((b * cfg->heads_q + h) * cfg->len_q + i) * dim;
                        for (int64_t c = 0; c < n; c++) {
                            const double dz = s.dz[c] / (double)set_size;
                            if (dz == 0.0)
                                continue;
                            for (int64_t d = 0; d < dim; d++) {
                                dqi[d] += cfg->scale1 * dz * kbarh[s.cand[c] * dim + d];
                                dkbarh[s.cand[c] * dim + d] += cfg->scale1 * dz * qi[d];
                            }
                        }
                    }
                }
            }
            /* kbar_j is the mean of its block's keys. */
            for (int64_t t = 0; t < cfg->len_k; t++) {
                const int64_t j = t / s_blk;
                const int64_t count = (j + 1) * s_blk < cfg->len_k ? s_blk : cfg->len_k - j * s_blk;
                for (int64_t d = 0; d < dim; d++)
                    dkh[t * dim + d] += dkbarh[j * dim + d] / (double)count;
            }
        }
    }
    ref_scratch_free(&s);
    free(kbar);
    free(dkbar);
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
