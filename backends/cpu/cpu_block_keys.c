/* SPDX-License-Identifier: MIT */
/* Block summaries (SPEC.md, "Block layout and block summaries"): the mean
 * key of each block, or with a learned vector h per KV head the keys
 * weighted by softmax(h . k / sqrt(D)). Kept as rows (for the backward) and
 * transposed (for stage 1's scores). */
#include <config.h>

#include "cpu_internal.h"

#include <math.h>

const float *dacpu_summary_vector(const dashattn_tensor *h, int64_t g, float *dst)
{
    if (!h)
        return NULL;
    dacpu_load_row(h, 0, g, 0, dst);
    return dst;
}

static float pooling_score(const float *h, const float *row, int64_t d)
{
    return dacpu_dot(h, row, d) * (float)(1.0 / sqrt((double)d));
}

void dacpu_summarize_block(const dashattn_tensor *t, int64_t i0, int64_t i1, int64_t r0,
                           int64_t count, const float *h, float *dst, float *weights,
                           float *scratch)
{
    if (!h) {
        dacpu_mean_rows(t, i0, i1, r0, count, dst, scratch);
        for (int64_t r = 0; weights && r < count; r++)
            weights[r] = 1.0f / (float)count;
        return;
    }
    const int64_t d = t->shape[3];
    int64_t ld;
    float most = -INFINITY, total = 0.0f;
    for (int64_t r = 0; r < count; r++) {
        const float score = pooling_score(h, dacpu_rows(t, i0, i1, r0 + r, 1, scratch, &ld), d);
        if (weights)
            weights[r] = score;
        most = score > most ? score : most;
    }
    for (int64_t c = 0; c < d; c++)
        dst[c] = 0.0f;
    /* Without room for the scores they are recomputed: blocks can be long. */
    for (int64_t r = 0; r < count; r++) {
        const float *row = dacpu_rows(t, i0, i1, r0 + r, 1, scratch, &ld);
        const float e = expf((weights ? weights[r] : pooling_score(h, row, d)) - most);
        total += e;
        if (weights)
            weights[r] = e;
        for (int64_t c = 0; c < d; c++)
            dst[c] += e * row[c];
    }
    const float inv = 1.0f / total;
    for (int64_t c = 0; c < d; c++)
        dst[c] *= inv;
    for (int64_t r = 0; weights && r < count; r++)
        weights[r] *= inv;
}

void dacpu_block_keys(const dashattn_plan_desc *plan, const dashattn_tensor *k,
                      const dashattn_tensor *summary, const dacpu_shared *layout, void *workspace,
                      float *scratch)
{
    const dashattn_problem *p = &plan->problem;
    const int64_t m = plan->num_blocks, d = p->head_dim, s = p->block_size;
    const int64_t total = p->batch * p->heads_kv * m, ld = layout->ld_keys;
    float *rows = dacpu_shared_at(workspace, layout->keys);
    float *cols = dacpu_shared_at(workspace, layout->keys_t);
    float *pool = layout->has_pool ? dacpu_shared_at(workspace, layout->pool) : NULL;
    /* Orphaned worksharing: the blocks are shared among the threads of the
     * caller's parallel region, with a barrier at the end. */
#pragma omp for schedule(static)
    for (int64_t idx = 0; idx < total; idx++) {
        const int64_t j = idx % m, bh = idx / m;
        const int64_t h = bh % p->heads_kv, b = bh / p->heads_kv, first = j * s;
        const int64_t count = first + s <= p->len_k ? s : p->len_k - first;
        float *row = rows + idx * d, *col = cols + bh * d * ld;
        float hv[DACPU_MAX_DIM];
        float *weights = pool ? pool + bh * p->len_k + first : NULL;
        dacpu_summarize_block(k, b, h, first, count, dacpu_summary_vector(summary, h, hv), row,
                              weights, scratch);
        for (int64_t c = 0; c < d; c++)
            col[c * ld + j] = row[c];
        if (j == 0) /* padding columns, read by chunked loops, stay finite */
            for (int64_t c = 0; c < d; c++)
                for (int64_t t = m; t < ld; t++)
                    col[c * ld + t] = 0.0f;
    }
}
