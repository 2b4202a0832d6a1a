/* The smallest complete use of dashattn: one causal DashAttention forward on
 * random data, on whatever backend "auto" picks. Build against an installed
 * library with
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

int main(void)
{
    /* 1 sequence, 4 query heads sharing 2 KV heads, 1024 tokens, head dim 64. */
    const int64_t batch = 1, heads_q = 4, heads_kv = 2, len = 1024, dim = 64;
    const size_t nq = (size_t)(batch * heads_q * len * dim);
    const size_t nkv = (size_t)(batch * heads_kv * len * dim);
    float *q = malloc(nq * sizeof *q), *out = malloc(nq * sizeof *out);
    float *k = malloc(nkv * sizeof *k), *v = malloc(nkv * sizeof *v);
    float *lse = malloc((size_t)(batch * heads_q * len) * sizeof *lse);
    if (!q || !out || !k || !v || !lse)
        return 1;
    srand(1);
    for (size_t i = 0; i < nq; i++)
        q[i] = (float)((double)rand() / RAND_MAX - 0.5);
    for (size_t i = 0; i < nkv; i++) {
        k[i] = (float)((double)rand() / RAND_MAX - 0.5);
        v[i] = (float)((double)rand() / RAND_MAX - 0.5);
    }

    dashattn_context *ctx;
    CHECK(dashattn_context_create(NULL, &ctx)); /* "auto"; DASHATTN_BACKEND overrides */

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
    CHECK(dashattn_forward(ctx, plan, &tq, &tk, &tv, &to, lse, NULL, &stats, NULL, 0, NULL));

    printf("backend %s: out[0] = %.6f, lse[0] = %.6f, sparsity %.1f%%\n",
           dashattn_context_backend(ctx), out[0], lse[0], 100.0 * stats.sparsity);
    dashattn_plan_destroy(plan);
    dashattn_context_destroy(ctx);
    free(q);
    free(k);
    free(v);
    free(out);
    free(lse);
    return 0;
}
