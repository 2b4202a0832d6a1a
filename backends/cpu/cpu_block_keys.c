/* Block keys: the mean key of each block (SPEC.md, "Block layout"), kept as
 * rows (for the backward) and transposed (for stage 1's scores). */
#include <config.h>

#include "cpu_internal.h"

void dacpu_block_keys(const dashattn_plan_desc *plan, const dashattn_tensor *k,
                      const dacpu_shared *layout, void *workspace, float *scratch)
{
    const dashattn_problem *p = &plan->problem;
    const int64_t m = plan->num_blocks, d = p->head_dim, s = p->block_size;
    const int64_t total = p->batch * p->heads_kv * m, ld = layout->ld_keys;
    float *rows = dacpu_shared_at(workspace, layout->keys);
    float *cols = dacpu_shared_at(workspace, layout->keys_t);
    /* Orphaned worksharing: the blocks are shared among the threads of the
     * caller's parallel region, with a barrier at the end. */
#pragma omp for schedule(static)
    for (int64_t idx = 0; idx < total; idx++) {
        const int64_t j = idx % m, bh = idx / m;
        const int64_t h = bh % p->heads_kv, b = bh / p->heads_kv, first = j * s;
        const int64_t count = first + s <= p->len_k ? s : p->len_k - first;
        float *row = rows + idx * d, *col = cols + bh * d * ld;
        dacpu_mean_rows(k, b, h, first, count, row, scratch);
        for (int64_t c = 0; c < d; c++)
            col[c * ld + j] = row[c];
        if (j == 0) /* padding columns, read by chunked loops, stay finite */
            for (int64_t c = 0; c < d; c++)
                for (int64_t t = m; t < ld; t++)
                    col[c * ld + t] = 0.0f;
    }
}
