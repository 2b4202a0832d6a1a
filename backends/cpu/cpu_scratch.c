/* Workspace layout of the CPU backend: data shared by all threads (block
 * keys) first, then one equal slice per thread. */
#include <config.h>

#include "cpu_internal.h"

#define ALIGN 64

static size_t round_up(size_t n)
{
    return (n + ALIGN - 1) / ALIGN * ALIGN;
}

void *dacpu_take(dacpu_arena *arena, size_t bytes)
{
    char *p = arena->next;
    arena->next += round_up(bytes);
    /* Sizes come from the same formulas as the slices; overrunning is a bug. */
    return arena->next <= arena->end ? p : NULL;
}

dacpu_arena dacpu_thread_arena(void *workspace, size_t shared, size_t per_thread, int thread)
{
    char *base = (char *)workspace + round_up(shared) + (size_t)thread * per_thread;
    dacpu_arena a = {base, base + per_thread};
    return a;
}

size_t dacpu_forward_thread_bytes(const dashattn_plan_desc *plan)
{
    const dashattn_problem *p = &plan->problem;
    const size_t d = (size_t)p->head_dim, m = (size_t)plan->num_blocks;
    const size_t rows = DACPU_TILE_ROWS * (size_t)plan->group_size, s = (size_t)p->block_size;
    const size_t ldt = (size_t)dacpu_block_ldt(p->block_size);
    return round_up(rows * d * 4) * 2         /* q tile, accumulators */
           + round_up(rows * m * 4)           /* block weights */
           + round_up(rows * 4) * 2           /* m, l */
           + round_up(s * d * 4) * 2          /* converted k, v block */
           + round_up(ldt * d * 4)            /* transposed k block */
           + round_up(ldt * 4)                /* logits */
           + round_up(m * d * 4)              /* gathered block keys (decode) */
           + round_up(d * 4)                  /* one converted row (decode) */
           + round_up(m * 8) * 3 + round_up(m * 16) /* stage 1 */
           + 8 * ALIGN;
}

size_t dacpu_backward_thread_bytes(const dashattn_plan_desc *plan)
{
    const dashattn_problem *p = &plan->problem;
    const size_t d = (size_t)p->head_dim, m = (size_t)plan->num_blocks;
    const size_t g = (size_t)plan->group_size, s = (size_t)p->block_size, n = (size_t)p->len_k;
    return round_up(n * d * 4) * 2                /* dk, dv accumulators */
           + round_up(m * d * 4)                  /* dkbar accumulator */
           + round_up(g * d * 4) * 5              /* q, dq, o, dout rows, scaled q */
           + round_up(g * m * 4) * 2              /* weights, prior gradients */
           + round_up(g * 4) * 2                  /* lse, delta per head */
           + round_up(s * d * 4) * 2              /* converted k, v block */
           + round_up(m * 8) * 4 + round_up(m * 16) /* stage 1 and its backward */
           + 12 * ALIGN;
}
