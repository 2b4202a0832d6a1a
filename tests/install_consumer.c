/* SPDX-License-Identifier: MIT */
/*
 * A user program built against the installed tree only (headers and library
 * found through pkg-config). It runs a small forward with every block forced
 * (n_local covers all blocks), which SPEC.md says equals dense causal
 * attention, and compares with dense attention computed here in double.
 * Exit status 0 on success, 1 on any failure.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <dashattn.h>
#include <dashattn/backend.h>

enum { B = 1, HQ = 2, HKV = 1, N = 12, D = 8, S = 4 };

static float q[B * HQ * N * D], k[B * HKV * N * D], v[B * HKV * N * D], out[B * HQ * N * D];
static float lse[B * HQ * N];

/* Small deterministic values in [-1, 1). */
static void fill(float *x, size_t n, unsigned seed)
{
    unsigned s = seed;
    for (size_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        x[i] = (float)((s >> 8) / 8388608.0 - 1.0);
    }
}

/* Dense causal attention for row i of head h; returns the max |error| vs out, lse. */
static double dense_row_error(int h, int i)
{
    const int hk = h / (HQ / HKV);
    const float *qi = q + ((size_t)h * N + i) * D;
    const double scale = 1.0 / sqrt((double)D);
    double logit[N], mx = -INFINITY, sum = 0.0, err = 0.0;
    for (int t = 0; t <= i; t++) {
        const float *kt = k + ((size_t)hk * N + t) * D;
        double dot = 0.0;
        for (int d = 0; d < D; d++)
            dot += (double)qi[d] * kt[d];
        logit[t] = scale * dot;
        mx = logit[t] > mx ? logit[t] : mx;
    }
    for (int t = 0; t <= i; t++)
        sum += exp(logit[t] - mx);
    for (int d = 0; d < D; d++) {
        double o = 0.0;
        for (int t = 0; t <= i; t++)
            o += exp(logit[t] - mx) / sum * v[((size_t)hk * N + t) * D + d];
        double e = fabs(o - out[((size_t)h * N + i) * D + d]);
        err = e > err || isnan(e) ? e : err;
    }
    double e = fabs(mx + log(sum) - lse[(size_t)h * N + i]);
    return e > err || isnan(e) ? e : err;
}

int main(void)
{
    dashattn_context_options opt;
    dashattn_context *ctx = NULL;
    dashattn_plan *plan = NULL;
    dashattn_problem p;
    int failed = 0;

    /* backend.h is installed for plugin authors; make sure it is usable here. */
    if (DASHATTN_BACKEND_ABI_VERSION < 1u) {
        fprintf(stderr, "consumer: bad plugin ABI version\n");
        return 1;
    }
    char want[32];
    snprintf(want, sizeof(want), "%d.%d.%d", DASHATTN_VERSION_MAJOR, DASHATTN_VERSION_MINOR,
             DASHATTN_VERSION_PATCH);
    if (strcmp(want, dashattn_version()) != 0) {
        fprintf(stderr, "consumer: header %s but library %s\n", want, dashattn_version());
        failed = 1;
    }

    fill(q, sizeof(q) / sizeof(q[0]), 1);
    fill(k, sizeof(k) / sizeof(k[0]), 2);
    fill(v, sizeof(v) / sizeof(v[0]), 3);
    dashattn_context_options_init(&opt);
    opt.backend = "cpu";
    dashattn_problem_init(&p, B, HQ, HKV, N, N, D);
    p.block_size = S;
    p.n_local = N / S + 1;
    dashattn_tensor tq = dashattn_tensor_bhsd(q, DASHATTN_F32, B, HQ, N, D);
    dashattn_tensor tk = dashattn_tensor_bhsd(k, DASHATTN_F32, B, HKV, N, D);
    dashattn_tensor tv = dashattn_tensor_bhsd(v, DASHATTN_F32, B, HKV, N, D);
    dashattn_tensor to = dashattn_tensor_bhsd(out, DASHATTN_F32, B, HQ, N, D);
    if (dashattn_context_create(&opt, &ctx) != DASHATTN_OK ||
        dashattn_plan_create(ctx, &p, &plan) != DASHATTN_OK ||
        dashattn_forward(ctx, plan, &tq, &tk, &tv, NULL, &to, lse, NULL, NULL, NULL, 0, NULL) !=
            DASHATTN_OK) {
        fprintf(stderr, "consumer: %s\n", dashattn_last_error());
        dashattn_plan_destroy(plan);
        dashattn_context_destroy(ctx);
        return 1;
    }

    double worst = 0.0;
    for (int h = 0; h < HQ; h++)
        for (int i = 0; i < N; i++) {
            double e = dense_row_error(h, i);
            worst = e > worst || isnan(e) ? e : worst;
        }
    /* Values are O(1), so an absolute bound is a relative one; fp32 gives ~1e-7. */
    if (!(worst <= 1e-5)) {
        fprintf(stderr, "consumer: all-forced forward differs from dense attention by %g\n", worst);
        failed = 1;
    }
    printf("consumer: dashattn %s on %s, max error vs dense %.3g\n", dashattn_version(),
           dashattn_context_backend(ctx), worst);
    dashattn_plan_destroy(plan);
    dashattn_context_destroy(ctx);
    return failed;
}
