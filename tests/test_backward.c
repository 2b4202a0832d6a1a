/* SPDX-License-Identifier: MIT */
/* dashattn_backward on the cpu backend against the float64 reference
 * backward, and that reference itself against central finite differences of
 * the reference forward, for the loss sum(dout * out). */
#include "cases.h"
#include "reference.h"
#include "testutil.h"

#include <dashattn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* SPEC.md asks for 1e-5. dq, dk and dv are sums of a_it (dP_it - Dl_i) terms
 * whose two parts cancel, so their fp32 error is about 1e-7 times
 * sum |a (dP - Dl)| rather than times the result; with the few hundred
 * terms per row of these sizes that stays below 1e-5 of the norm. */
#define GRAD_TOL 1e-5
/* The flat prior's gradient is ill-conditioned: dL/dw carries 1 / w into
 * the blocks at the edge of the support, whose w the f32 scores give with
 * the largest relative error. SPEC.md's 1e-5 cannot hold there for any f32
 * algorithm; the reference itself is held to finite differences at 1e-6. */
#define FLAT_GRAD_TOL 1e-4

static dashattn_context *ctx;

/* A case's inputs and the output gradient, which seeds the loss sum(dout * out). */
typedef struct data {
    tc_inputs in;
    float *dout;
    double *doutd;
} data;

static void make_data(const tc_case *c, uint64_t seed, data *x)
{
    tc_inputs_make(c, seed, &x->in);
    x->dout = tu_random_floats(seed + 3, x->in.nq, 1.0);
    x->doutd = ref_to_double(x->dout, (int64_t)x->in.nq);
}

static void free_data(data *x)
{
    tc_inputs_free(&x->in);
    free(x->dout);
    free(x->doutd);
}

/* The library's gradients against ref_backward. */
static void run_case(const tc_case *c, uint64_t seed)
{
    dashattn_problem pr;
    dashattn_plan *plan = tc_plan(ctx, c, DASHATTN_F32, &pr);
    if (plan == NULL)
        return;
    data x;
    make_data(c, seed, &x);
    const tc_inputs *in = &x.in;
    float *out = tu_nan_floats(in->nq), *lse = tu_nan_floats(in->rows);
    float *dq = tu_nan_floats(in->nq), *dk = tu_nan_floats(in->nkv), *dv = tu_nan_floats(in->nkv);
    float *dh = tu_nan_floats(in->nh);
    dashattn_tensor th_view, tdh_view;
    const dashattn_tensor *th = tc_summary(c, in, &th_view);
    tdh_view = dashattn_tensor_bhsd(dh, DASHATTN_F32, 1, c->heads_kv, 1, c->dim);
    const dashattn_tensor *tdh = th ? &tdh_view : NULL;
    const dashattn_tensor tq = tc_view_q(c, in->q, DASHATTN_F32);
    const dashattn_tensor tk = tc_view_kv(c, in->k, DASHATTN_F32);
    const dashattn_tensor tv = tc_view_kv(c, in->v, DASHATTN_F32);
    const dashattn_tensor to = tc_view_q(c, out, DASHATTN_F32);
    const dashattn_tensor tdo = tc_view_q(c, x.dout, DASHATTN_F32);
    const dashattn_tensor tdq = tc_view_q(c, dq, DASHATTN_F32);
    const dashattn_tensor tdk = tc_view_kv(c, dk, DASHATTN_F32);
    const dashattn_tensor tdv = tc_view_kv(c, dv, DASHATTN_F32);
    dashattn_status st =
        dashattn_forward(ctx, plan, &tq, &tk, &tv, th, &to, lse, NULL, NULL, NULL, 0, NULL);
    TU_CHECK(st == DASHATTN_OK, "%s: forward: %s", c->name, dashattn_last_error());
    if (st == DASHATTN_OK) {
        st = dashattn_backward(ctx, plan, &tq, &tk, &tv, th, &to, lse, &tdo, &tdq, &tdk, &tdv, tdh,
                               NULL, 0, NULL);
        TU_CHECK(st == DASHATTN_OK, "%s: backward: %s (%s)", c->name, dashattn_status_string(st),
                 dashattn_last_error());
    }
    if (st == DASHATTN_OK) {
        ref_config cfg;
        ref_config_from_problem(&cfg, &pr);
        cfg.h = in->hd;
        const double tol = cfg.flat && cfg.sigma < 1e3 ? FLAT_GRAD_TOL : GRAD_TOL;
        double *rq = tu_xcalloc(in->nq, sizeof(double)), *rk = tu_xcalloc(in->nkv, sizeof(double)),
               *rv = tu_xcalloc(in->nkv, sizeof(double)), *rh = tu_xcalloc(in->nh, sizeof(double));
        ref_backward(&cfg, in->qd, in->kd, in->vd, x.doutd, rq, rk, rv, rh);
        const double eq = tu_rel_err_f(dq, rq, in->nq), ek = tu_rel_err_f(dk, rk, in->nkv),
                     ev = tu_rel_err_f(dv, rv, in->nkv);
        TU_CHECK(eq <= tol, "%s: dq rel err %.3g", c->name, eq);
        TU_CHECK(ek <= tol, "%s: dk rel err %.3g", c->name, ek);
        TU_CHECK(ev <= tol, "%s: dv rel err %.3g", c->name, ev);
        if (th) {
            const double eh = tu_rel_err_f(dh, rh, in->nh);
            TU_CHECK(eh <= tol, "%s: dh rel err %.3g", c->name, eh);
            printf("%-36s dq %.2e dk %.2e dv %.2e dh %.2e\n", c->name, eq, ek, ev, eh);
        } else {
            printf("%-36s dq %.2e dk %.2e dv %.2e\n", c->name, eq, ek, ev);
        }

        /* Overwritten, not accumulated, and reproducible: a second call
         * gives the same bits for every gradient. */
        float *dq2 = tu_xcalloc(in->nq, sizeof(float));
        float *dk2 = tu_xcalloc(in->nkv, sizeof(float)), *dv2 = tu_xcalloc(in->nkv, sizeof(float));
        memcpy(dq2, dq, in->nq * sizeof(float));
        memcpy(dk2, dk, in->nkv * sizeof(float));
        memcpy(dv2, dv, in->nkv * sizeof(float));
        for (size_t i = 0; i < in->nq; i++)
            dq[i] = 1e3f;
        for (size_t i = 0; i < in->nkv; i++)
            dk[i] = dv[i] = 1e3f;
        st = dashattn_backward(ctx, plan, &tq, &tk, &tv, th, &to, lse, &tdo, &tdq, &tdk, &tdv, tdh,
                               NULL, 0, NULL);
        TU_CHECK(st == DASHATTN_OK && memcmp(dq, dq2, in->nq * sizeof(float)) == 0,
                 "%s: a second backward call gives another dq (accumulates?)", c->name);
        TU_CHECK(st == DASHATTN_OK && memcmp(dk, dk2, in->nkv * sizeof(float)) == 0 &&
                     memcmp(dv, dv2, in->nkv * sizeof(float)) == 0,
                 "%s: a second backward call gives other dk or dv bits", c->name);
        free(dq2);
        free(dk2);
        free(dv2);
        free(rq);
        free(rk);
        free(rv);
        free(rh);
    }
    free(dh);
    free(out);
    free(lse);
    free(dq);
    free(dk);
    free(dv);
    free_data(&x);
    dashattn_plan_destroy(plan);
}

/* ---- the reference backward against finite differences ---- */

static double loss(const ref_config *cfg, const data *x, ref_result *res)
{
    ref_forward(cfg, x->in.qd, x->in.kd, x->in.vd, res);
    double l = 0.0;
    for (size_t i = 0; i < x->in.nq; i++)
        l += x->doutd[i] * res->out[i];
    return l;
}

static int same_support(const ref_result *a, const ref_result *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((a->w[i] > 0.0) != (b->w[i] > 0.0))
            return 0;
    return 1;
}

/* Central differences of every coordinate of one input array. */
static void fd_check_array(const tc_case *c, const ref_config *cfg, data *x, double *arr, size_t n,
                           const double *grad, const ref_result *base, size_t wn, const char *what)
{
    const double h = 1e-6;
    double num = 0.0, den = 0.0;
    size_t tested = 0;
    for (size_t i = 0; i < n; i++) {
        const double keep = arr[i];
        ref_result rp, rm;
        arr[i] = keep + h;
        const double lp = loss(cfg, x, &rp);
        arr[i] = keep - h;
        const double lm = loss(cfg, x, &rm);
        arr[i] = keep;
        /* The loss is smooth only while the entmax supports stay put. */
        if (same_support(&rp, base, wn) && same_support(&rm, base, wn)) {
            const double fd = (lp - lm) / (2.0 * h);
            num += (fd - grad[i]) * (fd - grad[i]);
            den += fd * fd;
            tested++;
        }
        ref_forward_free(&rp);
        ref_forward_free(&rm);
    }
    const double err = sqrt(num) / fmax(sqrt(den), 1e-300);
    TU_CHECK(tested * 5 >= n * 4, "%s d%s: only %zu of %zu coordinates testable", c->name, what,
             tested, n);
    TU_CHECK(err <= 1e-6, "%s: reference d%s vs finite differences %.3g", c->name, what, err);
    printf("%-36s reference d%s vs finite differences %.2e (%zu/%zu)\n", c->name, what, err, tested,
           n);
}

static void fd_case(const tc_case *c, uint64_t seed)
{
    dashattn_problem pr;
    tc_problem(c, DASHATTN_F32, &pr);
    ref_config cfg;
    ref_config_from_problem(&cfg, &pr);
    data x;
    make_data(c, seed, &x);
    cfg.h = x.in.hd;
    double *gq = tu_xcalloc(x.in.nq, sizeof(double)), *gk = tu_xcalloc(x.in.nkv, sizeof(double)),
           *gv = tu_xcalloc(x.in.nkv, sizeof(double)), *gh = tu_xcalloc(x.in.nh, sizeof(double));
    ref_backward(&cfg, x.in.qd, x.in.kd, x.in.vd, x.doutd, gq, gk, gv, gh);
    ref_result base;
    loss(&cfg, &x, &base);
    const size_t wn = x.in.rows * (size_t)ref_num_blocks(&cfg);
    /* Weights strictly inside (0, 1) are what carries gradient into stage 1;
     * without them the check would not cover that path. */
    size_t partial = 0;
    for (size_t i = 0; i < wn; i++)
        partial += base.w[i] > 0.0 && base.w[i] < 1.0;
    if (c->topk == 0)
        TU_CHECK(partial > 0, "%s: no block weight in (0, 1); stage 1 untested", c->name);
    fd_check_array(c, &cfg, &x, x.in.qd, x.in.nq, gq, &base, wn, "q");
    fd_check_array(c, &cfg, &x, x.in.kd, x.in.nkv, gk, &base, wn, "k");
    fd_check_array(c, &cfg, &x, x.in.vd, x.in.nkv, gv, &base, wn, "v");
    if (x.in.hd)
        fd_check_array(c, &cfg, &x, x.in.hd, x.in.nh, gh, &base, wn, "h");
    ref_forward_free(&base);
    free(gh);
    free(gq);
    free(gk);
    free(gv);
    free_data(&x);
}

/* name, B, Hq, Hkv, Nq, Nk, D, causal, S, sink, local, alpha, topk, group (0 per_head, 1 shared,
 * 2 mean), focus, scale, scale1, flat-prior sigma, halley steps, summary scale */
static const tc_case lib_cases[] = {
    {"causal mha per_head a1.5", 1, 2, 2, 64, 64, 32, 1, 8, 1, 2, 1.5, 0, 0, 2.0, 0, 0, 0, 0, 0},
    {"causal gqa shared a1.5 ragged",
     1,
     4,
     2,
     70,
     70,
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
     0,
     0},
    {"topk gqa per_head", 1, 4, 2, 64, 64, 32, 1, 8, 1, 2, 1.5, 2, 0, 2.0, 0, 0, 0, 0, 0},
    {"noncausal gqa a2 random", 1, 4, 2, 20, 75, 24, 0, 8, 1, 2, 2.0, 0, 0, -1, 0, 0, 0, 0, 0},
    {"chunked prefill shared a1.3",
     2,
     2,
     1,
     30,
     90,
     32,
     1,
     16,
     1,
     2,
     1.3,
     0,
     1,
     1.5,
     0,
     0,
     0,
     0,
     0},
    {"causal softmax S4 D8", 1, 2, 1, 48, 48, 8, 1, 4, 1, 2, 1.0, 0, 0, 1.0, 0, 0, 0, 0, 0},
    {"custom scales a1.5", 1, 2, 1, 40, 40, 16, 1, 8, 1, 2, 1.5, 0, 0, 1.0, 0.4, 0.7, 0, 0, 0},
    {"noncausal shared a1.5 ragged",
     1,
     4,
     2,
     12,
     45,
     16,
     0,
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
     0,
     0},
    {"released mean summary", 1, 4, 2, 64, 64, 16, 1, 8, 0, 1, 1.5, 0, 2, 2.0, 0, 0, 0, 0, 1.5},
    {"mean halley3 summary ragged",
     1,
     4,
     1,
     70,
     70,
     16,
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
    {"mean flat2 summary", 1, 4, 2, 56, 56, 16, 1, 8, 0, 1, 1.5, 0, 2, 1.5, 0, 0, 2.0, 0, 1.0},
    {"per_head flat1e6", 1, 2, 1, 48, 48, 16, 1, 8, 0, 1, 1.5, 0, 0, 1.5, 0, 0, 1e6, 0, 0},
    {"shared summary noncausal", 1, 4, 2, 12, 45, 16, 0, 8, 0, 0, 1.5, 0, 1, 2.0, 0, 0, 0, 0, 1.0},
    {"mean topk summary", 1, 4, 2, 64, 64, 16, 1, 8, 0, 1, 1.5, 2, 2, 2.0, 0, 0, 0, 0, 1.0},
    {"mean a1.3 scales summary",
     2,
     4,
     2,
     30,
     90,
     16,
     1,
     16,
     1,
     2,
     1.3,
     0,
     2,
     1.5,
     0.4,
     0.7,
     0,
     0,
     1.0},
};

static const tc_case fd_cases[] = {
    {"fd causal per_head a1.5", 1, 2, 1, 24, 24, 8, 1, 4, 1, 2, 1.5, 0, 0, 1.5, 0, 0, 0, 0, 0},
    {"fd causal shared a1.5", 1, 2, 1, 24, 24, 8, 1, 4, 1, 2, 1.5, 0, 1, 1.5, 0, 0, 0, 0, 0},
    {"fd noncausal ragged a1.3", 1, 2, 2, 6, 22, 8, 0, 4, 1, 2, 1.3, 0, 0, 1.0, 0, 0, 0, 0, 0},
    {"fd causal ragged a2", 1, 1, 1, 23, 23, 8, 1, 4, 1, 1, 2.0, 0, 0, 1.0, 0, 0, 0, 0, 0},
    {"fd causal softmax", 1, 2, 1, 20, 20, 8, 1, 4, 1, 2, 1.0, 0, 0, 1.0, 0.5, 0.8, 0, 0, 0},
    {"fd topk", 1, 2, 1, 24, 24, 8, 1, 4, 1, 2, 1.5, 2, 0, 1.5, 0, 0, 0, 0, 0},
    {"fd mean summary", 1, 4, 2, 24, 24, 8, 1, 4, 0, 1, 1.5, 0, 2, 1.5, 0, 0, 0, 0, 1.5},
    {"fd mean flat0.5", 1, 2, 1, 24, 24, 8, 1, 4, 0, 1, 1.5, 0, 2, 1.5, 0, 0, 0.5, 0, 0},
    {"fd per_head flat2 summary",
     1,
     2,
     1,
     24,
     24,
     8,
     1,
     4,
     0,
     1,
     1.3,
     0,
     0,
     1.5,
     0,
     0,
     2.0,
     0,
     1.0},
    {"fd mean halley3 summary", 1, 2, 1, 24, 24, 8, 1, 4, 0, 1, 1.5, 0, 2, 1.5, 0, 0, 0, 3, 1.0},
    {"fd shared summary noncausal", 1, 2, 1, 8, 22, 8, 0, 4, 0, 0, 1.5, 0, 1, 1.0, 0, 0, 0, 0, 1.0},
};

int main(void)
{
    /* The finite-difference cases check only the reference: they run even
     * without a context. */
    ctx = tc_cpu_context();
    for (size_t i = 0; i < sizeof fd_cases / sizeof fd_cases[0]; i++)
        fd_case(&fd_cases[i], 500 + 7 * i);
    if (ctx != NULL)
        for (size_t i = 0; i < sizeof lib_cases / sizeof lib_cases[0]; i++)
            run_case(&lib_cases[i], 900 + 13 * i);
    dashattn_context_destroy(ctx);
    return tu_finish("test_backward");
}
