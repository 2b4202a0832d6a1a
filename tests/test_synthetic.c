/* SPDX-License-Identifier: MIT */
/* The two synthetic input families do what cli/synthetic.c says: on the
 * same keys at the same focus, the rows of a 64-position segment keep
 * nearly disjoint block sets in the `segment` family and mostly the same
 * ones in the `coherent` family. Measured as U, the blocks a 64-row tile of
 * one query head reads (the union of its rows' kept blocks) over the blocks
 * one of its rows keeps, from the CPU backend's selection output. Also:
 * `segment` is what da_synth_qkv gives, and both families share k and v. */
#include "synthetic.h"
#include "testutil.h"

#include <dashattn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HQ 4
#define HKV 2
#define LEN 2048
#define DIM 64
#define BLK 64
#define TILE 64
#define FOCUS 1.0

/* U of the selection [HQ, LEN, M]: mean over (head, tile) of the tile's
 * union over the mean count of its rows. */
static double tile_union_ratio(const int32_t *idx, const int32_t *count, int64_t m)
{
    double sum = 0.0;
    int tiles = 0;
    unsigned char *seen = tu_xcalloc((size_t)m, 1);
    for (int64_t h = 0; h < HQ; h++) {
        for (int64_t t0 = 0; t0 < LEN; t0 += TILE) {
            memset(seen, 0, (size_t)m);
            int64_t kept = 0, uni = 0;
            for (int64_t i = t0; i < t0 + TILE; i++) {
                const int64_t row = h * LEN + i;
                kept += count[row];
                for (int32_t s = 0; s < count[row]; s++) {
                    const int32_t j = idx[row * m + s];
                    if (j >= 0 && j < m && !seen[j]) {
                        seen[j] = 1;
                        uni++;
                    }
                }
            }
            if (kept > 0 && t0 >= 8 * BLK) { /* rows past the first blocks: a real choice */
                sum += (double)uni / ((double)kept / TILE);
                tiles++;
            }
        }
    }
    free(seen);
    return tiles ? sum / tiles : 0.0;
}

static double run_family(dashattn_context *ctx, da_synth_family family, float *q, float *k,
                         float *v, double *sparsity)
{
    da_synth_qkv_family(family, 11, 1, HQ, HKV, LEN, LEN, DIM, BLK, FOCUS, q, k, v);
    dashattn_problem pr;
    dashattn_problem_init(&pr, 1, HQ, HKV, LEN, LEN, DIM);
    pr.block_size = BLK;
    pr.group_mode = DASHATTN_GROUP_PER_HEAD; /* a row's own blocks, not its group's */
    dashattn_plan *plan = NULL;
    dashattn_status st = dashattn_plan_create(ctx, &pr, &plan);
    TU_CHECK(st == DASHATTN_OK, "plan: %s", dashattn_last_error());
    if (st != DASHATTN_OK)
        return 0.0;
    const int64_t m = dashattn_plan_num_blocks(plan);
    int32_t *idx = tu_xcalloc((size_t)(HQ * LEN * m), sizeof(int32_t));
    int32_t *count = tu_xcalloc((size_t)(HQ * LEN), sizeof(int32_t));
    float *out = tu_xcalloc((size_t)(HQ * LEN * DIM), sizeof(float));
    const dashattn_selection sel = {idx, NULL, count, m};
    dashattn_forward_stats stats;
    const dashattn_tensor tq = dashattn_tensor_bhsd(q, DASHATTN_F32, 1, HQ, LEN, DIM);
    const dashattn_tensor tk = dashattn_tensor_bhsd(k, DASHATTN_F32, 1, HKV, LEN, DIM);
    const dashattn_tensor tv = dashattn_tensor_bhsd(v, DASHATTN_F32, 1, HKV, LEN, DIM);
    const dashattn_tensor to = dashattn_tensor_bhsd(out, DASHATTN_F32, 1, HQ, LEN, DIM);
    st = dashattn_forward(ctx, plan, &tq, &tk, &tv, NULL, &to, NULL, &sel, &stats, NULL, 0, NULL);
    TU_CHECK(st == DASHATTN_OK, "forward: %s", dashattn_last_error());
    const double u = st == DASHATTN_OK ? tile_union_ratio(idx, count, m) : 0.0;
    *sparsity = stats.sparsity;
    free(idx);
    free(count);
    free(out);
    dashattn_plan_destroy(plan);
    return u;
}

int main(void)
{
    dashattn_context_options opt;
    dashattn_context_options_init(&opt);
    opt.backend = "cpu";
    opt.num_threads = 2;
    dashattn_context *ctx = NULL;
    const dashattn_status st = dashattn_context_create(&opt, &ctx);
    TU_CHECK(st == DASHATTN_OK, "context_create(cpu): %s", dashattn_last_error());
    if (st != DASHATTN_OK)
        return tu_finish("test_synthetic");

    const size_t nq = (size_t)HQ * LEN * DIM, nk = (size_t)HKV * LEN * DIM;
    float *q[2], *k[2], *v[2];
    for (int f = 0; f < 2; f++) {
        q[f] = tu_xcalloc(nq, sizeof(float));
        k[f] = tu_xcalloc(nk, sizeof(float));
        v[f] = tu_xcalloc(nk, sizeof(float));
    }
    double sp[2];
    const double u_segment = run_family(ctx, DA_SYNTH_SEGMENT, q[0], k[0], v[0], &sp[0]);
    const double u_coherent = run_family(ctx, DA_SYNTH_COHERENT, q[1], k[1], v[1], &sp[1]);
    printf("U (64-row tile's blocks / a row's blocks): segment %.2f (sparsity %.1f%%), coherent "
           "%.2f (sparsity %.1f%%)\n",
           u_segment, 100.0 * sp[0], u_coherent, 100.0 * sp[1]);
    TU_CHECK(memcmp(k[0], k[1], nk * sizeof(float)) == 0 &&
                 memcmp(v[0], v[1], nk * sizeof(float)) == 0,
             "the families' keys and values differ");
    TU_CHECK(memcmp(q[0], q[1], nq * sizeof(float)) != 0, "the families' queries are the same");
    /* Both are real selections, not everything or nothing. */
    TU_CHECK(sp[0] > 0.3 && sp[0] < 0.95 && sp[1] > 0.3 && sp[1] < 0.95,
             "sparsity outside (30%%, 95%%): segment %.3f, coherent %.3f", sp[0], sp[1]);
    TU_CHECK(u_segment > 2.0, "segment rows keep similar blocks (U %.2f, want > 2)", u_segment);
    TU_CHECK(u_coherent < 0.6 * u_segment, "coherent U %.2f is not well below segment's %.2f",
             u_coherent, u_segment);

    /* da_synth_qkv is the segment family. */
    float *q2 = tu_xcalloc(nq, sizeof(float)), *k2 = tu_xcalloc(nk, sizeof(float)),
          *v2 = tu_xcalloc(nk, sizeof(float));
    da_synth_qkv(11, 1, HQ, HKV, LEN, LEN, DIM, BLK, FOCUS, q2, k2, v2);
    TU_CHECK(memcmp(q2, q[0], nq * sizeof(float)) == 0, "da_synth_qkv is not the segment family");
    free(q2);
    free(k2);
    free(v2);
    for (int f = 0; f < 2; f++) {
        free(q[f]);
        free(k[f]);
        free(v[f]);
    }
    dashattn_context_destroy(ctx);
    return tu_finish("test_synthetic");
}
