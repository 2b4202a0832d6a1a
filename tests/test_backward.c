/* dashattn_backward on the cpu backend against the float64 reference
 * backward, and that reference itself against central finite differences of
 * the reference forward, for the loss sum(dout * out). */
#include "reference.h"
#include "synthetic.h"
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

static dashattn_context *ctx;

typedef struct bcase {
    const char *name;
    int64_t batch, heads_q, heads_kv, len_q, len_k, dim;
    int causal;
    int32_t block_size, n_sink, n_local;
    double alpha;
    int32_t topk;
    int shared;
    double focus; /* < 0: plain Gaussian inputs */
    double scale, scale1;
} bcase;

static void make_problem(const bcase *c, dashattn_problem *pr)
{
    dashattn_problem_init(pr, c->batch, c->heads_q, c->heads_kv, c->len_q, c->len_k, c->dim);
    pr->causal = c->causal;
    pr->block_size = c->block_size;
    pr->n_sink = c->n_sink;
    pr->n_local = c->n_local;
    pr->alpha = c->alpha;
    if (c->topk > 0) {
        pr->selection = DASHATTN_SELECT_TOPK;
        pr->topk = c->topk;
    }
    pr->group_mode = c->shared ? DASHATTN_GROUP_SHARED : DASHATTN_GROUP_PER_HEAD;
    pr->scale = c->scale;
    pr->stage1_scale = c->scale1;
}

typedef struct data {
    size_t nq, nkv, rows;
    float *q, *k, *v, *dout;
    double *qd, *kd, *vd, *doutd;
} data;

static void make_data(const bcase *c, uint64_t seed, data *x)
{
    x->nq = (size_t)(c->batch * c->heads_q * c->len_q * c->dim);
    x->nkv = (size_t)(c->batch * c->heads_kv * c->len_k * c->dim);
    x->rows = (size_t)(c->batch * c->heads_q * c->len_q);
    if (c->focus >= 0.0) {
        x->q = tu_xcalloc(x->nq, sizeof(float));
        x->k = tu_xcalloc(x->nkv, sizeof(float));
        x->v = tu_xcalloc(x->nkv, sizeof(float));
        da_synth_qkv(seed, c->batch, c->heads_q, c->heads_kv, c->len_q, c->len_k, c->dim,
                     c->block_size, c->focus, x->q, x->k, x->v);
    } else {
        x->q = tu_random_floats(seed, x->nq, 1.0);
        x->k = tu_random_floats(seed + 1, x->nkv, 1.0);
        x->v = tu_random_floats(seed + 2, x->nkv, 1.0);
    }
    x->dout = tu_random_floats(seed + 3, x->nq, 1.0);
    x->qd = ref_to_double(x->q, (int64_t)x->nq);
    x->kd = ref_to_double(x->k, (int64_t)x->nkv);
    x->vd = ref_to_double(x->v, (int64_t)x->nkv);
    x->doutd = ref_to_double(x->dout, (int64_t)x->nq);
}

static void free_data(data *x)
{
    free(x->q);
    free(x->k);
    free(x->v);
    free(x->dout);
    free(x->qd);
    free(x->kd);
    free(x->vd);
    free(x->doutd);
}

static float *nan_floats(size_t n)
{
    float *x = tu_xcalloc(n, sizeof *x);
    for (size_t i = 0; i < n; i++)
        x[i] = NAN;
    return x;
}

/* The library's gradients against ref_backward. */
static void run_case(const bcase *c, uint64_t seed)
{
    dashattn_problem pr;
    make_problem(c, &pr);
    dashattn_plan *plan = NULL;
    dashattn_status st = dashattn_plan_create(ctx, &pr, &plan);
    TU_CHECK(st == DASHATTN_OK, "%s: plan: %s", c->name, dashattn_last_error());
    if (st != DASHATTN_OK)
        return;
    data x;
    make_data(c, seed, &x);
    float *out = nan_floats(x.nq), *lse = nan_floats(x.rows);
    float *dq = nan_floats(x.nq), *dk = nan_floats(x.nkv), *dv = nan_floats(x.nkv);
    const dashattn_tensor tq =
        dashattn_tensor_bhsd(x.q, DASHATTN_F32, c->batch, c->heads_q, c->len_q, c->dim);
    const dashattn_tensor tk =
        dashattn_tensor_bhsd(x.k, DASHATTN_F32, c->batch, c->heads_kv, c->len_k, c->dim);
    const dashattn_tensor tv =
        dashattn_tensor_bhsd(x.v, DASHATTN_F32, c->batch, c->heads_kv, c->len_k, c->dim);
    const dashattn_tensor to =
        dashattn_tensor_bhsd(out, DASHATTN_F32, c->batch, c->heads_q, c->len_q, c->dim);
    const dashattn_tensor tdo =
        dashattn_tensor_bhsd(x.dout, DASHATTN_F32, c->batch, c->heads_q, c->len_q, c->dim);
    const dashattn_tensor tdq =
        dashattn_tensor_bhsd(dq, DASHATTN_F32, c->batch, c->heads_q, c->len_q, c->dim);
    const dashattn_tensor tdk =
        dashattn_tensor_bhsd(dk, DASHATTN_F32, c->batch, c->heads_kv, c->len_k, c->dim);
    const dashattn_tensor tdv =
        dashattn_tensor_bhsd(dv, DASHATTN_F32, c->batch, c->heads_kv, c->len_k, c->dim);
    st = dashattn_forward(ctx, plan, &tq, &tk, &tv, &to, lse, NULL, NULL, NULL, 0, NULL);
    TU_CHECK(st == DASHATTN_OK, "%s: forward: %s", c->name, dashattn_last_error());
    if (st == DASHATTN_OK) {
        st = dashattn_backward(ctx, plan, &tq, &tk, &tv, &to, lse, &tdo, &tdq, &tdk, &tdv, NULL, 0,
                               NULL);
        TU_CHECK(st == DASHATTN_OK, "%s: backward: %s (%s)", c->name, dashattn_status_string(st),
                 dashattn_last_error());
    }
    if (st == DASHATTN_OK) {
        ref_config cfg;
        ref_config_from_problem(&cfg, &pr);
        double *rq = tu_xcalloc(x.nq, sizeof(double)), *rk = tu_xcalloc(x.nkv, sizeof(double)),
               *rv = tu_xcalloc(x.nkv, sizeof(double));
        ref_backward(&cfg, x.qd, x.kd, x.vd, x.doutd, rq, rk, rv);
        const double eq = tu_rel_err_f(dq, rq, x.nq), ek = tu_rel_err_f(dk, rk, x.nkv),
                     ev = tu_rel_err_f(dv, rv, x.nkv);
        TU_CHECK(eq <= GRAD_TOL, "%s: dq rel err %.3g", c->name, eq);
        TU_CHECK(ek <= GRAD_TOL, "%s: dk rel err %.3g", c->name, ek);
        TU_CHECK(ev <= GRAD_TOL, "%s: dv rel err %.3g", c->name, ev);
        printf("%-36s dq %.2e dk %.2e dv %.2e\n", c->name, eq, ek, ev);

        /* Overwritten, not accumulated: a second call gives the same bits. */
        float *dq2 = tu_xcalloc(x.nq, sizeof(float));
        memcpy(dq2, dq, x.nq * sizeof(float));
        for (size_t i = 0; i < x.nq; i++)
            dq[i] = 1e3f;
        st = dashattn_backward(ctx, plan, &tq, &tk, &tv, &to, lse, &tdo, &tdq, &tdk, &tdv, NULL, 0,
                               NULL);
        TU_CHECK(st == DASHATTN_OK && memcmp(dq, dq2, x.nq * sizeof(float)) == 0,
                 "%s: a second backward call differs (accumulates?)", c->name);
        free(dq2);
        free(rq);
        free(rk);
        free(rv);
    }
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
    ref_forward(cfg, x->qd, x->kd, x->vd, res);
    double l = 0.0;
    for (size_t i = 0; i < x->nq; i++)
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
static void fd_check_array(const bcase *c, const ref_config *cfg, data *x, double *arr, size_t n,
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

static void fd_case(const bcase *c, uint64_t seed)
{
    dashattn_problem pr;
    make_problem(c, &pr);
    ref_config cfg;
    ref_config_from_problem(&cfg, &pr);
    data x;
    make_data(c, seed, &x);
    double *gq = tu_xcalloc(x.nq, sizeof(double)), *gk = tu_xcalloc(x.nkv, sizeof(double)),
           *gv = tu_xcalloc(x.nkv, sizeof(double));
    ref_backward(&cfg, x.qd, x.kd, x.vd, x.doutd, gq, gk, gv);
    ref_result base;
    loss(&cfg, &x, &base);
    const size_t wn = x.rows * (size_t)ref_num_blocks(&cfg);
    /* Weights strictly inside (0, 1) are what carries gradient into stage 1;
     * without them the check would not cover that path. */
    size_t partial = 0;
    for (size_t i = 0; i < wn; i++)
        partial += base.w[i] > 0.0 && base.w[i] < 1.0;
    if (c->topk == 0)
        TU_CHECK(partial > 0, "%s: no block weight in (0, 1); stage 1 untested", c->name);
    fd_check_array(c, &cfg, &x, x.qd, x.nq, gq, &base, wn, "q");
    fd_check_array(c, &cfg, &x, x.kd, x.nkv, gk, &base, wn, "k");
    fd_check_array(c, &cfg, &x, x.vd, x.nkv, gv, &base, wn, "v");
    ref_forward_free(&base);
    free(gq);
    free(gk);
    free(gv);
    free_data(&x);
}

/* name, B, Hq, Hkv, Nq, Nk, D, causal, S, sink, local, alpha, topk, shared, focus, scale, scale1 */
static const bcase lib_cases[] = {
    {"causal mha per_head a1.5", 1, 2, 2, 64, 64, 32, 1, 8, 1, 2, 1.5, 0, 0, 2.0, 0, 0},
    {"causal gqa shared a1.5 ragged", 1, 4, 2, 70, 70, 16, 1, 8, 1, 2, 1.5, 0, 1, 2.0, 0, 0},
    {"topk gqa per_head", 1, 4, 2, 64, 64, 32, 1, 8, 1, 2, 1.5, 2, 0, 2.0, 0, 0},
    {"noncausal gqa a2 random", 1, 4, 2, 20, 75, 24, 0, 8, 1, 2, 2.0, 0, 0, -1, 0, 0},
    {"chunked prefill shared a1.3", 2, 2, 1, 30, 90, 32, 1, 16, 1, 2, 1.3, 0, 1, 1.5, 0, 0},
    {"causal softmax S4 D8", 1, 2, 1, 48, 48, 8, 1, 4, 1, 2, 1.0, 0, 0, 1.0, 0, 0},
    {"custom scales a1.5", 1, 2, 1, 40, 40, 16, 1, 8, 1, 2, 1.5, 0, 0, 1.0, 0.4, 0.7},
    {"noncausal shared a1.5 ragged", 1, 4, 2, 12, 45, 16, 0, 8, 1, 2, 1.5, 0, 1, 2.0, 0, 0},
};

static const bcase fd_cases[] = {
    {"fd causal per_head a1.5", 1, 2, 1, 24, 24, 8, 1, 4, 1, 2, 1.5, 0, 0, 1.5, 0, 0},
    {"fd causal shared a1.5", 1, 2, 1, 24, 24, 8, 1, 4, 1, 2, 1.5, 0, 1, 1.5, 0, 0},
    {"fd noncausal ragged a1.3", 1, 2, 2, 6, 22, 8, 0, 4, 1, 2, 1.3, 0, 0, 1.0, 0, 0},
    {"fd causal ragged a2", 1, 1, 1, 23, 23, 8, 1, 4, 1, 1, 2.0, 0, 0, 1.0, 0, 0},
    {"fd causal softmax", 1, 2, 1, 20, 20, 8, 1, 4, 1, 2, 1.0, 0, 0, 1.0, 0.5, 0.8},
    {"fd topk", 1, 2, 1, 24, 24, 8, 1, 4, 1, 2, 1.5, 2, 0, 1.5, 0, 0},
};

int main(void)
{
    dashattn_context_options opt;
    dashattn_context_options_init(&opt);
    opt.backend = "cpu";
    opt.num_threads = 2;
    const dashattn_status st = dashattn_context_create(&opt, &ctx);
    TU_CHECK(st == DASHATTN_OK, "context_create(cpu): %s", dashattn_last_error());
    for (size_t i = 0; i < sizeof fd_cases / sizeof fd_cases[0]; i++)
        fd_case(&fd_cases[i], 500 + 7 * i);
    if (st == DASHATTN_OK)
        for (size_t i = 0; i < sizeof lib_cases / sizeof lib_cases[0]; i++)
            run_case(&lib_cases[i], 900 + 13 * i);
    dashattn_context_destroy(ctx);
    return tu_finish("test_backward");
}
