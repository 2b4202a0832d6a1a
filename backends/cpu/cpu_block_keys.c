/* Block keys: the mean key of each block (SPEC.md, "Block layout"). */
#include <config.h>

#include "cpu_internal.h"

void dacpu_block_keys(const dashattn_plan_desc *plan, const dashattn_tensor *k, float *dst,
                      float *scratch)
{
    const dashattn_problem *p = &plan->problem;
    const int64_t m = plan->num_blocks, d = p->head_dim, s = p->block_size;
    const int64_t total = p->batch * p->heads_kv * m;
    /* Orphaned worksharing: the blocks are shared among the threads of the
     * caller's parallel region, with a barrier at the end. */
#pragma omp for schedule(static)
    for (int64_t idx = 0; idx < total; idx++) {
        const int64_t j = idx % m, h = (idx / m) % p->heads_kv, b = idx / (m * p->heads_kv);
        const int64_t first = j * s;
        const int64_t count = first + s <= p->len_k ? s : p->len_k - first;
        dacpu_mean_rows(k, b, h, first, count, dst + idx * d, scratch);
    }
}
