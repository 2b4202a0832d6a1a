/* SPDX-License-Identifier: MIT */
/* The smallest complete use of dashattn: one causal DashAttention forward on
 * random data, on whatever backend "auto" picks (a GPU when a plugin finds
 * one, else the CPU). Arrays live in the backend's memory, so they are
 * allocated and filled through dashattn_memory_*; on the CPU backend that is
 * plain host memory. Build against an installed library with
 *     cc quickstart.c $(pkg-config --cflags --libs dashattn) -o quickstart
 */
#include <dashattn.h>

#include <stdio.h>
#include <stdlib.h>

#define CHECK(call)                                                                                \
    do {                                                                                           \
        dashattn_status st_ = (call);                                                              \
        if (st_ != DASHATTN_OK) {                                                                  \
            fprintf(stderr, "%s failed: %s: %s\n", #call, dashattn_status_string(st_),             \
                    dashattn_last_error());                                                        \
            return 1;                                                                              \
        }                                                                                          \
    } while (0)

static float uniform(void)
{
    return (float)((double)rand() / RAND_MAX - 0.5);
}

int main(void)
{
    /* 1 sequence, 4 query heads sharing 2 KV heads, 1024 tokens, head dim 64. */
    const int64_t batch = 1, heads_q = 4, heads_kv = 2, len = 1024, dim = 64;
    const size_t nq = (size_t)(batch * heads_q * len * dim);
    const size_t nkv = (size_t)(batch * heads_kv * len * dim);
    const size_t nrows = (size_t)(batch * heads_q * len);
    float *host_q = malloc(nq * sizeof(float)), *host_out = malloc(nq * sizeof(float));
    float *host_k = malloc(nkv * sizeof(float)), *host_v = malloc(nkv * sizeof(float));
    float *host_lse = malloc(nrows * sizeof(float));
    if (!host_q || !host_out || !host_k || !host_v || !host_lse)
        return 1;
    srand(1);
    for (size_t i = 0; i < nq; i++)
        host_q[i] = uniform();
    for (size_t i = 0; i < nkv; i++) {
        host_k[i] = uniform();
        host_v[i] = uniform();
    }

    dashattn_context *ctx;
    CHECK(dashattn_context_create(NULL, &ctx)); /* "auto"; DASHATTN_BACKEND overrides */

    void *q, *k, *v, *out, *lse;
    CHECK(dashattn_memory_alloc(ctx, nq * sizeof(float), &q));
    CHECK(dashattn_memory_alloc(ctx, nkv * sizeof(float), &k));
    CHECK(dashattn_memory_alloc(ctx, nkv * sizeof(float), &v));
    CHECK(dashattn_memory_alloc(ctx, nq * sizeof(float), &out));
    CHECK(dashattn_memory_alloc(ctx, nrows * sizeof(float), &lse));
    CHECK(dashattn_memory_upload(ctx, q, host_q, nq * sizeof(float)));
    CHECK(dashattn_memory_upload(ctx, k, host_k, nkv * sizeof(float)));
    CHECK(dashattn_memory_upload(ctx, v, host_v, nkv * sizeof(float)));

    dashattn_problem problem;
    dashattn_problem_init(&problem, batch, heads_q, heads_kv, len, len, dim);
    problem.alpha = 1.5;     /* entmax alpha (the default) */
    problem.block_size = 64; /* tokens per key block (the default) */
    dashattn_plan *plan;
    CHECK(dashattn_plan_create(ctx, &problem, &plan));

    /* Tensors are views: data, dtype, shape [B, H, N, D] and strides. */
    const dashattn_tensor tq = dashattn_tensor_bhsd(q, DASHATTN_F32, batch, heads_q, len, dim);
    const dashattn_tensor tk = dashattn_tensor_bhsd(k, DASHATTN_F32, batch, heads_kv, len, dim);
    const dashattn_tensor tv = dashattn_tensor_bhsd(v, DASHATTN_F32, batch, heads_kv, len, dim);
    const dashattn_tensor to = dashattn_tensor_bhsd(out, DASHATTN_F32, batch, heads_q, len, dim);
    dashattn_forward_stats stats;
    CHECK(dashattn_forward(ctx, plan, &tq, &tk, &tv, NULL, &to, lse, NULL, &stats, NULL, 0, NULL));
    CHECK(dashattn_synchronize(ctx, NULL));
    CHECK(dashattn_memory_download(ctx, host_out, out, nq * sizeof(float)));
    CHECK(dashattn_memory_download(ctx, host_lse, lse, nrows * sizeof(float)));

    printf("backend %s: out[0] = %.6f, lse[0] = %.6f, sparsity %.1f%%\n",
           dashattn_context_backend(ctx), host_out[0], host_lse[0], 100.0 * stats.sparsity);

    /* A check anyone can do by hand: the first query of each head sees only
     * the first key, so its output is that key's value and its lse the
     * scaled score q . k / sqrt(64). Every output must be finite. */
    int wrong = !(stats.sparsity >= 0.0 && stats.sparsity < 1.0);
    for (int64_t h = 0; h < heads_q; h++) {
        const int64_t kv = h / (heads_q / heads_kv);
        const float *q0 = host_q + h * len * dim, *o0 = host_out + h * len * dim;
        const float *k0 = host_k + kv * len * dim, *v0 = host_v + kv * len * dim;
        double score = 0.0;
        for (int64_t d = 0; d < dim; d++)
            score += (double)q0[d] * k0[d];
        const double dl = host_lse[h * len] - score / 8.0;
        wrong |= dl > 1e-5 || dl < -1e-5;
        for (int64_t d = 0; d < dim; d++) {
            const double dv = o0[d] - v0[d];
            wrong |= dv > 1e-6 || dv < -1e-6;
        }
    }
    for (size_t i = 0; i < nq; i++)
        wrong |= !(host_out[i] - host_out[i] == 0.0f); /* NaN or infinity */
    if (wrong)
        fprintf(stderr, "quickstart: the results are wrong\n");
    dashattn_plan_destroy(plan);
    dashattn_memory_free(ctx, q);
    dashattn_memory_free(ctx, k);
    dashattn_memory_free(ctx, v);
    dashattn_memory_free(ctx, out);
    dashattn_memory_free(ctx, lse);
    dashattn_context_destroy(ctx);
    free(host_q);
    free(host_k);
    free(host_v);
    free(host_out);
    free(host_lse);
    return wrong ? 1 : 0;
}
