/* SPDX-License-Identifier: MIT */
/* dashattn_forward on the cpu backend against the float64 reference
 * (tests/reference.c): out, lse, selection, stats, BSHD and padded views,
 * explicit workspaces, optional outputs, half-precision inputs, NaN
 * propagation, and the all-blocks-forced limit that must equal dense
 * attention. */
#include "cases.h"
#include "reference.h"
#include "testutil.h"

#include <dashattn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* SPEC.md's accuracy contract. */
#define FP32_TOL 1e-5
#define HALF_TOL 1e-2
/* Stage-1 scores are fp32 dot products in the library, so a probability can
 * differ from the float64 one by about 1e-6 times the score size; selection
 * weights are compared with this slack, and blocks whose weight is below it
 * on either side may legitimately be in or out of the support. */
#define WEIGHT_TOL 1e-5

static dashattn_context *ctx;

/* A table row: a configuration, and whether to also run it in f16 and bf16. */
typedef struct fcase {
    tc_case c;
    int halves;
} fcase;

/* ---- helpers ---- */

/* [B, H, N, D] contiguous -> [B, N, H, D] contiguous, or back. */
static void permute_bhsd(const float *src, float *dst, int64_t b_, int64_t h_, int64_t n_,
                         int64_t d_, int to_bshd)
{
    for (int64_t b = 0; b < b_; b++)
        for (int64_t h = 0; h < h_; h++)
            for (int64_t n = 0; n < n_; n++)
                for (int64_t d = 0; d < d_; d++) {
                    const size_t bhsd = (size_t)(((b * h_ + h) * n_ + n) * d_ + d);
                    const size_t bshd = (size_t)(((b * n_ + n) * h_ + h) * d_ + d);
                    if (to_bshd)
                        dst[bshd] = src[bhsd];
                    else
                        dst[bhsd] = src[bshd];
                }
}

/* Rows of padded tensors are this many floats longer than head_dim. */
#define PAD 3
#define PAD_SENTINEL 12345.0f

/* A copy of contiguous [B, H, N, D] data whose rows are D + PAD floats apart;
 * the padding holds fill (NaN for inputs: reading it would show). */
static float *pad_rows(const float *src, size_t rows, int64_t dim, float fill)
{
    float *dst = tu_xcalloc(rows * (size_t)(dim + PAD), sizeof *dst);
    for (size_t r = 0; r < rows; r++) {
        for (int64_t d = 0; d < dim + PAD; d++)
            dst[r * (size_t)(dim + PAD) + (size_t)d] =
                d < dim && src ? src[r * (size_t)dim + (size_t)d] : fill;
    }
    return dst;
}

static dashattn_tensor padded_view(float *data, int64_t b, int64_t h, int64_t n, int64_t d)
{
    dashattn_tensor t;
    t.data = data;
    t.dtype = DASHATTN_F32;
    t.shape[0] = b;
    t.shape[1] = h;
    t.shape[2] = n;
    t.shape[3] = d;
    t.strides[3] = 1;
    t.strides[2] = d + PAD;
    t.strides[1] = n * (d + PAD);
    t.strides[0] = h * n * (d + PAD);
    return t;
}

/* Padded row strides (NaN in the inputs' padding) give the contiguous result
 * and leave the output's padding alone. */
static void check_padded(const dashattn_plan *plan, const tc_case *c, const tc_inputs *in,
                         const float *out)
{
    const size_t qrows = in->rows;
    const size_t kvrows = (size_t)(c->batch * c->heads_kv * c->len_k);
    float *q = pad_rows(in->q, qrows, c->dim, NAN), *k = pad_rows(in->k, kvrows, c->dim, NAN);
    float *v = pad_rows(in->v, kvrows, c->dim, NAN);
    float *o = pad_rows(NULL, qrows, c->dim, PAD_SENTINEL);
    for (size_t r = 0; r < qrows; r++)
        for (int64_t d = 0; d < c->dim; d++)
            o[r * (size_t)(c->dim + PAD) + (size_t)d] = NAN;
    const dashattn_tensor tq = padded_view(q, c->batch, c->heads_q, c->len_q, c->dim);
    const dashattn_tensor tk = padded_view(k, c->batch, c->heads_kv, c->len_k, c->dim);
    const dashattn_tensor tv = padded_view(v, c->batch, c->heads_kv, c->len_k, c->dim);
    const dashattn_tensor to = padded_view(o, c->batch, c->heads_q, c->len_q, c->dim);
    dashattn_tensor hv;
    const dashattn_status st = dashattn_forward(ctx, plan, &tq, &tk, &tv, tc_summary(c, in, &hv),
                                                &to, NULL, NULL, NULL, NULL, 0, NULL);
    TU_CHECK(st == DASHATTN_OK, "%s: padded forward: %s", c->name, dashattn_last_error());
    if (st == DASHATTN_OK) {
        double num = 0.0, den = 0.0;
        int64_t pad_touched = 0;
        for (size_t r = 0; r < qrows; r++) {
            for (int64_t d = 0; d < c->dim + PAD; d++) {
                const float x = o[r * (size_t)(c->dim + PAD) + (size_t)d];
                if (d >= c->dim) {
                    pad_touched += x != PAD_SENTINEL;
                    continue;
                }
                const double y = out[r * (size_t)c->dim + (size_t)d];
                num += isfinite(x) ? ((double)x - y) * ((double)x - y) : INFINITY;
                den += y * y;
            }
        }
        const double err = sqrt(num) / fmax(sqrt(den), 1e-300);
        TU_CHECK(err <= 1e-6, "%s: padded strides differ from contiguous by %.3g", c->name, err);
        TU_CHECK(pad_touched == 0, "%s: %lld padding floats of out were written", c->name,
                 (long long)pad_touched);
    }
    free(q);
    free(k);
    free(v);
    free(o);
}

/* One forward call on f32 BHSD (or BSHD) data; out and lse are poisoned first. */
static dashattn_status run_forward(const dashattn_plan *plan, const tc_case *c, const tc_inputs *in,
                                   int bshd, float *out, float *lse, const dashattn_selection *sel,
                                   dashattn_forward_stats *stats, void *ws, size_t ws_size)
{
    for (size_t i = 0; i < in->nq; i++)
        out[i] = NAN;
    for (size_t i = 0; i < in->rows; i++)
        lse[i] = NAN;
    dashattn_tensor (*view)(void *, dashattn_dtype, int64_t, int64_t, int64_t, int64_t) =
        bshd ? dashattn_tensor_bshd : dashattn_tensor_bhsd;
    const dashattn_tensor tq = view(in->q, DASHATTN_F32, c->batch, c->heads_q, c->len_q, c->dim);
    const dashattn_tensor tk = view(in->k, DASHATTN_F32, c->batch, c->heads_kv, c->len_k, c->dim);
    const dashattn_tensor tv = view(in->v, DASHATTN_F32, c->batch, c->heads_kv, c->len_k, c->dim);
    const dashattn_tensor to = view(out, DASHATTN_F32, c->batch, c->heads_q, c->len_q, c->dim);
    dashattn_tensor hv;
    const dashattn_status st = dashattn_forward(ctx, plan, &tq, &tk, &tv, tc_summary(c, in, &hv),
                                                &to, lse, sel, stats, ws, ws_size, NULL);
    TU_CHECK(st == DASHATTN_OK, "%s: forward failed: %s (%s)", c->name, dashattn_status_string(st),
             dashattn_last_error());
    return st;
}

/* Worst per-row ||out - ref|| / max(||ref||, 1). */
static double worst_row_err(const float *out, const double *ref, size_t rows, int64_t dim)
{
    double worst = 0.0;
    for (size_t r = 0; r < rows; r++) {
        double num = 0.0, den = 0.0;
        for (int64_t d = 0; d < dim; d++) {
            const double o = out[r * (size_t)dim + (size_t)d], x = ref[r * (size_t)dim + (size_t)d];
            if (!isfinite(o))
                return INFINITY;
            num += (o - x) * (o - x);
            den += x * x;
        }
        worst = fmax(worst, sqrt(num) / fmax(sqrt(den), 1.0));
    }
    return worst;
}

/* Compares the selection arrays with the reference weights; returns the
 * number of blocks on the support boundary (see WEIGHT_TOL). */
static int64_t check_selection(const tc_case *c, const ref_config *cfg,
                               const dashattn_selection *sel, const ref_result *ref,
                               int64_t m_blocks)
{
    const int64_t rows = c->batch * c->heads_q * c->len_q;
    double *got = tu_xcalloc((size_t)m_blocks, sizeof *got);
    int64_t boundary = 0, bad_rows = 0, first_bad = -1;
    for (int64_t r = 0; r < rows; r++) {
        const int32_t *idx = sel->block_index + r * sel->max_blocks;
        const float *wt = sel->block_weight + r * sel->max_blocks;
        const double *w = ref->w + r * m_blocks;
        const int64_t count = sel->block_count[r];
        int ok = count >= 0 && count <= m_blocks;
        for (int64_t j = 0; j < m_blocks; j++)
            got[j] = 0.0;
        /* Used slots: increasing block indices with positive weights. */
        for (int64_t s = 0; ok && s < count; s++) {
            /* The flat prior's weights may exceed 1. */
            ok = idx[s] >= 0 && idx[s] < m_blocks && (s == 0 || idx[s] > idx[s - 1]) &&
                 wt[s] > 0.0f && isfinite(wt[s]) && (cfg->flat || wt[s] <= 1.0f);
            if (ok)
                got[idx[s]] = wt[s];
        }
        for (int64_t s = count; ok && s < sel->max_blocks; s++)
            ok = idx[s] == -1 && wt[s] == 0.0f;
        const int64_t pos = r % c->len_q + c->len_k - c->len_q;
        const double *ws = ref->wsel + r * m_blocks;
        for (int64_t j = 0; ok && j < m_blocks; j++) {
            /* A block at the edge of the support (stage-1 weight near 0) may
             * fall on either side of it; the flat prior then gives it a
             * weight far from 0, so it is only counted. */
            const int edge = (got[j] > 0.0) != (w[j] > 0.0) && ws[j] <= WEIGHT_TOL;
            /* The flat prior raises w to the power 1 / sigma, which scales
             * its relative error by as much. */
            const double tol =
                cfg->flat ? WEIGHT_TOL * fmax(1.0, w[j]) * (1.0 + 2.0 / cfg->sigma) : WEIGHT_TOL;
            ok = edge || fabs(got[j] - w[j]) <= tol;
            if (ref_block_role(cfg, pos, j) == REF_BLOCK_FORCED)
                ok = ok && got[j] == 1.0;
            if ((got[j] > 0.0) != (w[j] > 0.0))
                boundary++;
        }
        if (!ok) {
            bad_rows++;
            if (first_bad < 0)
                first_bad = r;
        }
    }
    TU_CHECK(bad_rows == 0, "%s: selection differs from the reference in %lld rows (first %lld)",
             c->name, (long long)bad_rows, (long long)first_bad);
    free(got);
    return boundary;
}

/* ---- the checks of one configuration ---- */

/* n floats converted into a new buffer of dtype dt; *ok is cleared if the
 * conversion fails. */
static void *converted(const float *src, size_t n, dashattn_dtype dt, int *ok)
{
    void *dst = tu_xcalloc(n, dashattn_dtype_size(dt));
    *ok &= dashattn_convert(dst, dt, src, DASHATTN_F32, n) == DASHATTN_OK;
    return dst;
}

/* The same data rounded to f16 and to bf16 gives the f32 result within HALF_TOL. */
static void check_halves(const tc_case *c, const tc_inputs *in, const float *out32,
                         const float *lse32)
{
    for (int kind = 0; kind < 2; kind++) {
        const dashattn_dtype dt = kind == 0 ? DASHATTN_F16 : DASHATTN_BF16;
        dashattn_problem pr;
        dashattn_plan *plan = tc_plan(ctx, c, dt, &pr);
        if (plan == NULL)
            continue;
        float *nans = tu_nan_floats(in->nq), *lse = tu_nan_floats(in->rows);
        float *of = tu_xcalloc(in->nq, sizeof(float));
        int conv_ok = 1;
        void *q = converted(in->q, in->nq, dt, &conv_ok),
             *k = converted(in->k, in->nkv, dt, &conv_ok),
             *v = converted(in->v, in->nkv, dt, &conv_ok),
             *o = converted(nans, in->nq, dt, &conv_ok);
        const dashattn_tensor tq = tc_view_q(c, q, dt), tk = tc_view_kv(c, k, dt);
        const dashattn_tensor tv = tc_view_kv(c, v, dt), to = tc_view_q(c, o, dt);
        dashattn_tensor hv;
        const dashattn_status st = dashattn_forward(
            ctx, plan, &tq, &tk, &tv, tc_summary(c, in, &hv), &to, lse, NULL, NULL, NULL, 0, NULL);
        TU_CHECK(st == DASHATTN_OK, "%s %s: forward: %s", c->name, dashattn_dtype_name(dt),
                 dashattn_last_error());
        conv_ok &= dashattn_convert(of, DASHATTN_F32, o, dt, in->nq) == DASHATTN_OK;
        TU_CHECK(conv_ok, "%s %s: dashattn_convert: %s", c->name, dashattn_dtype_name(dt),
                 dashattn_last_error());
        double *o32 = ref_to_double(out32, (int64_t)in->nq);
        double *l32 = ref_to_double(lse32, (int64_t)in->rows);
        const double eo = tu_rel_err_f(of, o32, in->nq);
        const double el = tu_rel_err_f(lse, l32, in->rows);
        TU_CHECK(eo <= HALF_TOL && el <= HALF_TOL, "%s %s: out rel err %.3g, lse %.3g vs f32",
                 c->name, dashattn_dtype_name(dt), eo, el);
        free(of);
        free(o32);
        free(l32);
        free(nans);
        free(lse);
        free(q);
        free(k);
        free(v);
        free(o);
        dashattn_plan_destroy(plan);
    }
}

static void run_case(const fcase *f, uint64_t seed)
{
    const tc_case *c = &f->c;
    dashattn_problem pr;
    dashattn_plan *plan = tc_plan(ctx, c, DASHATTN_F32, &pr);
    if (plan == NULL)
        return;
    tc_inputs in;
    tc_inputs_make(c, seed, &in);
    ref_config cfg;
    ref_config_from_problem(&cfg, &pr);
    cfg.h = in.hd;
    ref_result ref;
    ref_forward(&cfg, in.qd, in.kd, in.vd, &ref);

    const int64_t m_blocks = dashattn_plan_num_blocks(plan);
    const size_t rows = in.rows;
    float *out = tu_xcalloc(in.nq, sizeof(float));
    float *lse = tu_xcalloc(rows, sizeof(float));
    dashattn_selection sel;
    sel.max_blocks = m_blocks + 1; /* one spare slot must stay unused */
    sel.block_index = tu_xcalloc(rows * (size_t)sel.max_blocks, sizeof(int32_t));
    sel.block_weight = tu_xcalloc(rows * (size_t)sel.max_blocks, sizeof(float));
    sel.block_count = tu_xcalloc(rows, sizeof(int32_t));
    for (size_t i = 0; i < rows * (size_t)sel.max_blocks; i++) {
        sel.block_index[i] = 12345;
        sel.block_weight[i] = NAN;
    }
    for (size_t i = 0; i < rows; i++)
        sel.block_count[i] = -5;
    dashattn_forward_stats stats = {-1, -1, NAN};

    dashattn_status st = run_forward(plan, c, &in, 0, out, lse, &sel, &stats, NULL, 0);
    if (st == DASHATTN_OK) {
        const double eo = tu_rel_err_f(out, ref.out, in.nq);
        const double el = tu_rel_err_f(lse, ref.lse, rows);
        const double er = worst_row_err(out, ref.out, rows, c->dim);
        TU_CHECK(eo <= FP32_TOL, "%s: out rel err %.3g", c->name, eo);
        TU_CHECK(el <= FP32_TOL, "%s: lse rel err %.3g", c->name, el);
        TU_CHECK(er <= 10 * FP32_TOL, "%s: worst row err %.3g", c->name, er);
        const int64_t boundary = check_selection(c, &cfg, &sel, &ref, m_blocks);
        TU_CHECK(stats.visible_pairs == ref.visible_pairs, "%s: visible pairs %lld, want %lld",
                 c->name, (long long)stats.visible_pairs, (long long)ref.visible_pairs);
        if (boundary == 0) {
            TU_CHECK(stats.attended_pairs == ref.attended_pairs &&
                         fabs(stats.sparsity - ref.sparsity) <= 1e-12,
                     "%s: attended %lld sparsity %.9f, want %lld %.9f", c->name,
                     (long long)stats.attended_pairs, stats.sparsity, (long long)ref.attended_pairs,
                     ref.sparsity);
        } else {
            printf("%s: %lld blocks on the support boundary; stats compared loosely\n", c->name,
                   (long long)boundary);
            TU_CHECK(fabs(stats.sparsity - ref.sparsity) <= 0.01, "%s: sparsity %.6f vs %.6f",
                     c->name, stats.sparsity, ref.sparsity);
        }
        printf("%-40s out %.2e lse %.2e sparsity %.3f\n", c->name, eo, el, ref.sparsity);

        /* BSHD views of the same data: same result. */
        tc_inputs bs = {.nq = in.nq,
                        .nkv = in.nkv,
                        .rows = in.rows,
                        .nh = in.nh,
                        .h = in.h,
                        .q = tu_xcalloc(in.nq, sizeof(float)),
                        .k = tu_xcalloc(in.nkv, sizeof(float)),
                        .v = tu_xcalloc(in.nkv, sizeof(float))};
        permute_bhsd(in.q, bs.q, c->batch, c->heads_q, c->len_q, c->dim, 1);
        permute_bhsd(in.k, bs.k, c->batch, c->heads_kv, c->len_k, c->dim, 1);
        permute_bhsd(in.v, bs.v, c->batch, c->heads_kv, c->len_k, c->dim, 1);
        float *out_s = tu_xcalloc(in.nq, sizeof(float)), *back = tu_xcalloc(in.nq, sizeof(float));
        float *lse_s = tu_xcalloc(rows, sizeof(float));
        if (run_forward(plan, c, &bs, 1, out_s, lse_s, NULL, NULL, NULL, 0) == DASHATTN_OK) {
            permute_bhsd(out_s, back, c->batch, c->heads_q, c->len_q, c->dim, 0);
            double *od = ref_to_double(out, (int64_t)in.nq);
            double *ld = ref_to_double(lse, (int64_t)rows);
            const double eb = tu_rel_err_f(back, od, in.nq), ebl = tu_rel_err_f(lse_s, ld, rows);
            TU_CHECK(eb <= 1e-6 && ebl <= 1e-6, "%s: BSHD differs from BHSD: out %.3g lse %.3g",
                     c->name, eb, ebl);
            free(od);
            free(ld);
        }
        free(out_s);
        free(back);
        free(lse_s);
        bs.h = NULL; /* in's */
        tc_inputs_free(&bs);

        /* An explicit workspace gives the same bits as an allocated one,
         * whatever garbage it holds and however it is aligned (the forward
         * keeps atomics in it: a misaligned one would be undefined). */
        const size_t ws_size = dashattn_plan_workspace_size(plan);
        char *ws = tu_xcalloc(ws_size + 8, 1);
        memset(ws, 0xa5, ws_size + 8);
        float *out_w = tu_xcalloc(in.nq, sizeof(float)), *lse_w = tu_xcalloc(rows, sizeof(float));
        for (size_t shift = 0; shift <= 7; shift += 7)
            if (run_forward(plan, c, &in, 0, out_w, lse_w, NULL, NULL, ws + shift, ws_size) ==
                DASHATTN_OK)
                TU_CHECK(memcmp(out_w, out, in.nq * sizeof(float)) == 0 &&
                             memcmp(lse_w, lse, rows * sizeof(float)) == 0,
                         "%s: explicit workspace at offset %zu changes the result", c->name, shift);
        free(ws);
        free(out_w);
        free(lse_w);

        check_padded(plan, c, &in, out);

        /* lse and parts of the selection may be NULL. */
        float *out_n = tu_xcalloc(in.nq, sizeof(float));
        int32_t *counts = tu_xcalloc(rows, sizeof(int32_t));
        const dashattn_selection only_counts = {NULL, NULL, counts, m_blocks};
        const dashattn_tensor tq = tc_view_q(c, in.q, DASHATTN_F32);
        const dashattn_tensor tk = tc_view_kv(c, in.k, DASHATTN_F32);
        const dashattn_tensor tv = tc_view_kv(c, in.v, DASHATTN_F32);
        const dashattn_tensor to = tc_view_q(c, out_n, DASHATTN_F32);
        dashattn_tensor hv;
        st = dashattn_forward(ctx, plan, &tq, &tk, &tv, tc_summary(c, &in, &hv), &to, NULL,
                              &only_counts, NULL, NULL, 0, NULL);
        TU_CHECK(st == DASHATTN_OK && memcmp(out_n, out, in.nq * sizeof(float)) == 0 &&
                     memcmp(counts, sel.block_count, rows * sizeof(int32_t)) == 0,
                 "%s: forward without lse and with only block counts differs", c->name);
        free(out_n);
        free(counts);

        if (f->halves)
            check_halves(c, &in, out, lse);
    }
    free(sel.block_index);
    free(sel.block_weight);
    free(sel.block_count);
    free(out);
    free(lse);
    ref_forward_free(&ref);
    tc_inputs_free(&in);
    dashattn_plan_destroy(plan);
}

/* n_local covering every block (or n_sink, non-causal) turns DashAttention
 * into dense attention: compare with ref_dense, which knows nothing of blocks. */
static void check_all_forced(int causal, uint64_t seed)
{
    const tc_case c = {.name = causal ? "all forced causal" : "all forced non-causal",
                       .batch = 2,
                       .heads_q = 4,
                       .heads_kv = 2,
                       .len_q = 45,
                       .len_k = 70,
                       .dim = 16,
                       .causal = causal,
                       .block_size = 8,
                       .n_sink = causal ? 0 : 1000,
                       .n_local = causal ? 1000 : 0,
                       .alpha = 1.5,
                       .focus = 1.0};
    dashattn_problem pr;
    dashattn_plan *plan = tc_plan(ctx, &c, DASHATTN_F32, &pr);
    if (plan == NULL)
        return;
    tc_inputs in;
    tc_inputs_make(&c, seed, &in);
    ref_config cfg;
    ref_config_from_problem(&cfg, &pr);
    const size_t rows = in.rows;
    double *dense = tu_xcalloc(in.nq, sizeof(double)), *dlse = tu_xcalloc(rows, sizeof(double));
    ref_dense(&cfg, in.qd, in.kd, in.vd, dense, dlse);
    float *out = tu_xcalloc(in.nq, sizeof(float)), *lse = tu_xcalloc(rows, sizeof(float));
    dashattn_forward_stats stats = {-1, -1, NAN};
    if (run_forward(plan, &c, &in, 0, out, lse, NULL, &stats, NULL, 0) == DASHATTN_OK) {
        const double eo = tu_rel_err_f(out, dense, in.nq), el = tu_rel_err_f(lse, dlse, rows);
        TU_CHECK(eo <= FP32_TOL && el <= FP32_TOL, "%s: vs dense attention out %.3g lse %.3g",
                 c.name, eo, el);
        TU_CHECK(stats.sparsity == 0.0 && stats.attended_pairs == stats.visible_pairs,
                 "%s: sparsity %g with every block forced", c.name, stats.sparsity);
        printf("%-40s out %.2e lse %.2e (vs dense)\n", c.name, eo, el);
    }
    free(out);
    free(lse);
    free(dense);
    free(dlse);
    tc_inputs_free(&in);
    dashattn_plan_destroy(plan);
}

/* NaN in one input element reaches exactly the rows that read it: a key
 * reaches every row that sees its token (through the logit or, for a
 * candidate block, through its block key), a value only rows whose selection
 * keeps its block, a query only its own row. Every other row keeps the clean
 * run's bits. */
/* NaN in one element of k, v or q reaches exactly the rows that read it:
 * with group-mean selection a query's NaN reaches its whole group (the
 * heads share its weights); with the flat prior too (a NaN weight is not a
 * dropped block). */
static void check_nan_propagation(int released)
{
    const tc_case c = {.name = released ? "nan, mean flat0.5 summary" : "nan",
                       .batch = 1,
                       .heads_q = 2,
                       .heads_kv = 1,
                       .len_q = 64,
                       .len_k = 64,
                       .dim = 16,
                       .causal = 1,
                       .block_size = 8,
                       .n_sink = released ? 0 : 1,
                       .n_local = released ? 1 : 2,
                       .alpha = 1.5,
                       .group = released ? DASHATTN_GROUP_MEAN : DASHATTN_GROUP_PER_HEAD,
                       .focus = 2.0,
                       .sigma = released ? 0.5 : 0.0,
                       .summary = released ? 1.0 : 0.0};
    dashattn_problem pr;
    dashattn_plan *plan = tc_plan(ctx, &c, DASHATTN_F32, &pr);
    if (plan == NULL)
        return;
    tc_inputs in;
    tc_inputs_make(&c, 4242, &in);
    const int64_t m_blocks = dashattn_plan_num_blocks(plan), dim = c.dim;
    const size_t rows = in.rows;
    float *clean = tu_xcalloc(in.nq, sizeof(float)), *clean_lse = tu_xcalloc(rows, sizeof(float));
    float *out = tu_xcalloc(in.nq, sizeof(float)), *lse = tu_xcalloc(rows, sizeof(float));
    dashattn_selection sel = {tu_xcalloc(rows * (size_t)m_blocks, sizeof(int32_t)),
                              tu_xcalloc(rows * (size_t)m_blocks, sizeof(float)),
                              tu_xcalloc(rows, sizeof(int32_t)), m_blocks};
    if (run_forward(plan, &c, &in, 0, clean, clean_lse, &sel, NULL, NULL, 0) != DASHATTN_OK)
        goto done;
    const int64_t token = 29, qrow = 40; /* token 29 lies inside block 3 */
    for (int what = 0; what < 3; what++) {
        float *target = what == 0 ? in.k : what == 1 ? in.v : in.q;
        const size_t at = (size_t)((what == 2 ? qrow : token) * dim + 3);
        const float keep = target[at];
        target[at] = NAN;
        const dashattn_status st = run_forward(plan, &c, &in, 0, out, lse, NULL, NULL, NULL, 0);
        target[at] = keep;
        if (st != DASHATTN_OK)
            continue;
        int64_t wrong = 0, first = -1, unread = 0;
        for (size_t r = 0; r < rows; r++) {
            const int64_t i = (int64_t)r % c.len_q; /* pos = i: Nq = Nk */
            int reads = 0;
            if (what == 0)
                reads = i >= token;
            else if (what == 1) {
                for (int32_t s = 0; s < sel.block_count[r]; s++)
                    reads |= sel.block_index[r * m_blocks + s] == token / c.block_size;
                reads = reads && i >= token;
                unread += !reads && i >= token;
            } else
                reads = released ? i == qrow : r == (size_t)qrow;
            int ok;
            if (reads && what == 1) {
                /* A value element reaches only its own output column. */
                ok = isnan(out[r * (size_t)dim + 3]) &&
                     memcmp(lse + r, clean_lse + r, sizeof(float)) == 0;
                for (int64_t d = 0; d < dim; d++)
                    ok = ok && (d == 3 ||
                                memcmp(out + r * (size_t)dim + (size_t)d,
                                       clean + r * (size_t)dim + (size_t)d, sizeof(float)) == 0);
            } else if (reads) {
                ok = isnan(lse[r]);
                for (int64_t d = 0; d < dim; d++)
                    ok = ok && isnan(out[r * (size_t)dim + (size_t)d]);
            } else {
                ok = memcmp(out + r * (size_t)dim, clean + r * (size_t)dim,
                            (size_t)dim * sizeof(float)) == 0 &&
                     memcmp(lse + r, clean_lse + r, sizeof(float)) == 0;
            }
            if (!ok) {
                wrong++;
                if (first < 0)
                    first = (int64_t)r;
            }
        }
        /* Rows that see the token but dropped its block must exist, or the
         * value case would not show that unselected blocks go unread. */
        if (what == 1)
            TU_CHECK(unread > 0, "NaN in a value: no row drops the block; test too weak");
        TU_CHECK(wrong == 0, "%s: NaN in %s: %lld rows wrong (first row %lld)", c.name,
                 what == 0   ? "a key"
                 : what == 1 ? "a value"
                             : "a query",
                 (long long)wrong, (long long)first);
    }
done:
    free(sel.block_index);
    free(sel.block_weight);
    free(sel.block_count);
    free(clean);
    free(clean_lse);
    free(out);
    free(lse);
    tc_inputs_free(&in);
    dashattn_plan_destroy(plan);
}

/* {name, B, Hq, Hkv, Nq, Nk, D, causal, S, sink, local, alpha, topk, group (0 per_head,
 *  1 shared, 2 mean), focus, scale, scale1, flat-prior sigma, halley steps, summary scale},
 *  halves */
static const fcase cases[] = {
    {{"causal mha a1.5 synth", 1, 2, 2, 128, 128, 32, 1, 16, 1, 2, 1.5, 0, 0, 2.0, 0, 0, 0, 0, 0},
     1},
    {{"causal gqa shared a2 ragged",
      1,
      4,
      2,
      100,
      100,
      24,
      1,
      8,
      1,
      2,
      2.0,
      0,
      1,
      -1,
      0,
      0,
      0,
      0,
      0},
     0},
    {{"noncausal gqa per_head a1.3",
      1,
      4,
      2,
      40,
      150,
      64,
      0,
      16,
      1,
      2,
      1.3,
      0,
      0,
      1.5,
      0,
      0,
      0,
      0,
      0},
     1},
    {{"chunked prefill softmax D8",
      1,
      2,
      1,
      37,
      200,
      8,
      1,
      16,
      1,
      2,
      1.0,
      0,
      0,
      1.0,
      0,
      0,
      0,
      0,
      0},
     0},
    {{"topk per_head gqa", 1, 4, 2, 130, 130, 32, 1, 8, 1, 2, 1.5, 3, 0, 2.0, 0, 0, 0, 0, 0}, 1},
    {{"topk shared noncausal b2", 2, 4, 2, 20, 90, 16, 0, 8, 1, 2, 1.5, 4, 1, -1, 0, 0, 0, 0, 0},
     0},
    {{"S4 shared a1.5 sink2 local3", 1, 4, 2, 61, 61, 8, 1, 4, 2, 3, 1.5, 0, 1, 2.0, 0, 0, 0, 0, 0},
     0},
    {{"batch2 shared a1.3", 2, 2, 1, 96, 96, 32, 1, 16, 1, 2, 1.3, 0, 1, 3.0, 0, 0, 0, 0, 0}, 0},
    {{"sink0 local1 a2 D64", 1, 2, 2, 200, 200, 64, 1, 16, 0, 1, 2.0, 0, 0, 2.0, 0, 0, 0, 0, 0}, 0},
    {{"noncausal a2 ragged random D64",
      1,
      2,
      1,
      17,
      77,
      64,
      0,
      8,
      1,
      2,
      2.0,
      0,
      0,
      -1,
      0,
      0,
      0,
      0,
      0},
     0},
    {{"custom scales", 1, 2, 1, 80, 80, 32, 1, 8, 1, 2, 1.5, 0, 0, 1.0, 0.3, 0.5, 0, 0, 0}, 0},
    {{"single query row gqa", 1, 4, 1, 1, 333, 32, 1, 16, 1, 2, 1.5, 0, 0, 2.0, 0, 0, 0, 0, 0}, 0},
    {{"chunked ragged shared a1.5 D24",
      1,
      4,
      2,
      50,
      203,
      24,
      1,
      16,
      1,
      2,
      1.5,
      0,
      1,
      1.5,
      0,
      0,
      0,
      0,
      0},
     0},
    {{"noncausal softmax sink0 S4", 1, 2, 2, 9, 30, 8, 0, 4, 0, 2, 1.0, 0, 0, 0.5, 0, 0, 0, 0, 0},
     0},
    {{"causal a1.7 S8 D32 random", 1, 3, 1, 64, 64, 32, 1, 8, 1, 2, 1.7, 0, 0, -1, 0, 0, 0, 0, 0},
     0},
    {{"noncausal Nq > Nk", 1, 2, 1, 50, 20, 16, 0, 4, 1, 2, 1.5, 0, 0, 1.0, 0, 0, 0, 0, 0}, 0},
    {{"causal gqa D128", 1, 4, 1, 48, 48, 128, 1, 8, 1, 2, 1.5, 0, 0, 2.0, 0, 0, 0, 0, 0}, 1},
    {{"noncausal D256 a2", 1, 2, 2, 8, 40, 256, 0, 8, 1, 2, 2.0, 0, 0, 2.0, 0, 0, 0, 0, 0}, 0},
    {{"causal D1 S4", 1, 1, 1, 30, 30, 1, 1, 4, 1, 2, 1.5, 0, 0, -1, 0, 0, 0, 0, 0}, 0},
    /* A large group: the CPU backend's tiles then hold fewer positions. */
    {{"mqa G64 per_head", 1, 64, 1, 21, 21, 16, 1, 4, 1, 2, 1.5, 0, 0, 2.0, 0, 0, 0, 0, 0}, 0},
    {{"mqa G300 shared", 1, 300, 1, 5, 9, 8, 1, 4, 1, 1, 2.0, 0, 1, 2.0, 0, 0, 0, 0, 0}, 0},
    /* The released function and its options. */
    {{"released mean summary", 1, 4, 2, 160, 160, 32, 1, 16, 0, 1, 1.5, 0, 2, 2.0, 0, 0, 0, 0, 1.5},
     1},
    {{"released halley3 summary",
      1,
      8,
      2,
      128,
      128,
      32,
      1,
      8,
      0,
      1,
      1.5,
      0,
      2,
      2.0,
      0,
      0,
      0,
      3,
      1.0},
     1},
    {{"mean flat1e6 ragged", 1, 4, 1, 90, 90, 16, 1, 8, 0, 1, 1.5, 0, 2, 1.5, 0, 0, 1e6, 0, 0}, 0},
    {{"mean flat0.5 summary noncausal",
      1,
      4,
      2,
      30,
      75,
      16,
      0,
      8,
      0,
      0,
      1.5,
      0,
      2,
      1.5,
      0,
      0,
      0.5,
      0,
      1.0},
     0},
    {{"per_head flat2 a2", 1, 2, 1, 64, 64, 16, 1, 8, 0, 1, 2.0, 0, 0, 2.0, 0, 0, 2.0, 0, 0}, 0},
    {{"shared halley3 summary chunked",
      2,
      4,
      2,
      40,
      120,
      16,
      1,
      8,
      1,
      2,
      1.5,
      0,
      1,
      2.0,
      0,
      0,
      0,
      3,
      1.0},
     0},
    {{"mean topk summary", 1, 4, 2, 96, 96, 16, 1, 8, 0, 1, 1.5, 3, 2, 2.0, 0, 0, 0, 0, 1.0}, 0},
    {{"mean halley1 G32:2", 1, 32, 2, 64, 64, 16, 1, 4, 0, 1, 1.5, 0, 2, 2.0, 0, 0, 0, 1, 1.0}, 0},
};

int main(void)
{
    ctx = tc_cpu_context();
    if (ctx == NULL)
        return tu_finish("test_forward");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        run_case(&cases[i], 1000 + 17 * i);
    check_all_forced(1, 77);
    check_all_forced(0, 78);
    check_nan_propagation(0);
    check_nan_propagation(1);
    dashattn_context_destroy(ctx);
    return tu_finish("test_forward");
}
