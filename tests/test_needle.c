/* SPDX-License-Identifier: MIT */
/* Non-dispersion: one early key block (the needle) aligns with the query,
 * every other key is noise. As the context grows, dense softmax attention
 * spreads its mass over the noise and the needle's share falls, while
 * DashAttention's stage 1 keeps the needle block and drops the noise blocks,
 * so the needle's share stays put. The mass is read from the output with
 * V = indicator of the needle's tokens. */
#include "reference.h"
#include "synthetic.h"
#include "testutil.h"

#include <dashattn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DIM 64
#define BLK 64
#define NEEDLE_BLOCK 3
#define MAX_LEN 8192
#define NUM_LENS 3
/* Length of the query and of the needle keys: the needle logit is
 * (1/sqrt(DIM)) * |q| * |k| = 40 / 8 = 5, noise logits are N(0, 0.79^2). */
#define NEEDLE_NORM 6.324555320336759

static const int64_t lens[NUM_LENS] = {512, 2048, MAX_LEN};

int main(void)
{
    dashattn_context_options opt;
    dashattn_context_options_init(&opt);
    opt.backend = "cpu";
    opt.num_threads = 2;
    dashattn_context *ctx = NULL;
    dashattn_status st = dashattn_context_create(&opt, &ctx);
    TU_CHECK(st == DASHATTN_OK, "context_create(cpu): %s", dashattn_last_error());
    if (st != DASHATTN_OK)
        return tu_finish("test_needle");

    /* Keys for the longest context; shorter ones use a prefix. */
    float *k = tu_random_floats(7, (size_t)MAX_LEN * DIM, 1.0);
    float *v = tu_xcalloc((size_t)MAX_LEN * DIM, sizeof(float));
    float q[DIM];
    da_synth_rng rng;
    da_synth_seed(&rng, 8);
    double u[DIM], norm = 0.0;
    for (int d = 0; d < DIM; d++) {
        u[d] = da_synth_normal(&rng);
        norm += u[d] * u[d];
    }
    for (int d = 0; d < DIM; d++) {
        u[d] /= sqrt(norm);
        q[d] = (float)(NEEDLE_NORM * u[d]);
    }
    for (int t = NEEDLE_BLOCK * BLK; t < (NEEDLE_BLOCK + 1) * BLK; t++) {
        for (int d = 0; d < DIM; d++)
            k[(size_t)t * DIM + d] = (float)(NEEDLE_NORM * u[d]);
        v[(size_t)t * DIM] = 1.0f; /* out[0] = attention mass on the needle */
    }
    double *qd = ref_to_double(q, DIM);

    double dash[NUM_LENS], dense[NUM_LENS];
    for (int n = 0; n < NUM_LENS; n++) {
        const int64_t len = lens[n];
        dashattn_problem pr;
        dashattn_problem_init(&pr, 1, 1, 1, 1, len, DIM);
        pr.block_size = BLK;
        dashattn_plan *plan = NULL;
        st = dashattn_plan_create(ctx, &pr, &plan);
        TU_CHECK(st == DASHATTN_OK, "plan Nk=%lld: %s", (long long)len, dashattn_last_error());
        if (st != DASHATTN_OK) {
            dash[n] = dense[n] = NAN;
            continue;
        }
        const int64_t m_blocks = dashattn_plan_num_blocks(plan);
        float out[DIM], lse = NAN;
        for (int d = 0; d < DIM; d++)
            out[d] = NAN;
        int32_t *idx = tu_xcalloc((size_t)m_blocks, sizeof(int32_t));
        float *wt = tu_xcalloc((size_t)m_blocks, sizeof(float));
        int32_t count = -1;
        const dashattn_selection sel = {idx, wt, &count, m_blocks};
        dashattn_forward_stats stats;
        const dashattn_tensor tq = dashattn_tensor_bhsd(q, DASHATTN_F32, 1, 1, 1, DIM);
        const dashattn_tensor tk = dashattn_tensor_bhsd(k, DASHATTN_F32, 1, 1, len, DIM);
        const dashattn_tensor tv = dashattn_tensor_bhsd(v, DASHATTN_F32, 1, 1, len, DIM);
        const dashattn_tensor to = dashattn_tensor_bhsd(out, DASHATTN_F32, 1, 1, 1, DIM);
        st = dashattn_forward(ctx, plan, &tq, &tk, &tv, NULL, &to, &lse, &sel, &stats, NULL, 0,
                              NULL);
        TU_CHECK(st == DASHATTN_OK, "forward Nk=%lld: %s", (long long)len, dashattn_last_error());
        dash[n] = out[0];

        int needle_kept = 0;
        for (int32_t s = 0; s < count && s < m_blocks; s++)
            needle_kept |= idx[s] == NEEDLE_BLOCK && wt[s] > 0.5f;
        TU_CHECK(needle_kept, "Nk=%lld: stage 1 did not keep the needle block", (long long)len);

        /* The float64 reference agrees on the DashAttention mass, and gives the dense one. */
        ref_config cfg;
        ref_config_from_problem(&cfg, &pr);
        double *kd = ref_to_double(k, len * DIM), *vd = ref_to_double(v, len * DIM);
        ref_result res;
        ref_forward(&cfg, qd, kd, vd, &res);
        TU_CHECK(fabs(dash[n] - res.out[0]) <= 1e-5 * fabs(res.out[0]),
                 "Nk=%lld: library mass %.9f, reference %.9f", (long long)len, dash[n], res.out[0]);
        double dense_out[DIM];
        ref_dense(&cfg, qd, kd, vd, dense_out, NULL);
        dense[n] = dense_out[0];
        printf("Nk=%5lld  needle mass: dashattention %.4f (sparsity %.3f)  dense %.4f\n",
               (long long)len, dash[n], stats.sparsity, dense[n]);
        ref_forward_free(&res);
        free(kd);
        free(vd);
        free(idx);
        free(wt);
        dashattn_plan_destroy(plan);
    }

    /* Dense attention disperses: the needle's share falls strictly with Nk,
     * and by a lot over a 16-fold longer context. */
    for (int n = 1; n < NUM_LENS; n++)
        TU_CHECK(dense[n] < dense[n - 1], "dense mass does not fall: %.4f at %lld, %.4f at %lld",
                 dense[n - 1], (long long)lens[n - 1], dense[n], (long long)lens[n]);
    TU_CHECK(dense[NUM_LENS - 1] < 0.75 * dense[0], "dense mass fell only from %.4f to %.4f",
             dense[0], dense[NUM_LENS - 1]);
    /* DashAttention does not: within 5% of its short-context value, and above dense. */
    for (int n = 1; n < NUM_LENS; n++)
        TU_CHECK(dash[n] >= 0.95 * dash[0], "DashAttention mass fell from %.4f to %.4f at %lld",
                 dash[0], dash[n], (long long)lens[n]);
    TU_CHECK(dash[NUM_LENS - 1] > dense[NUM_LENS - 1],
             "at Nk=%lld DashAttention %.4f is not above dense %.4f", (long long)MAX_LEN,
             dash[NUM_LENS - 1], dense[NUM_LENS - 1]);

    free(qd);
    free(k);
    free(v);
    dashattn_context_destroy(ctx);
    return tu_finish("test_needle");
}
