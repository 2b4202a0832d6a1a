/* SPDX-License-Identifier: MIT */
/* Workspace layout of the CPU backend: data shared by all threads of a call
 * first, then one equal slice per thread. */
#include <config.h>

#include "cpu_internal.h"

#include <stdatomic.h>

#define ALIGN 64

/* Every size here saturates (checked_size.h): a problem whose workspace
 * does not fit size_t gets SIZE_MAX, which planning refuses. */
static size_t round_up(size_t n)
{
    return da_size_round_up(n, ALIGN);
}

static int64_t pad_chunk(int64_t n)
{
    return (n + DACPU_CHUNK - 1) / DACPU_CHUNK * DACPU_CHUNK;
}

void *dacpu_take(dacpu_arena *arena, size_t bytes)
{
    void *p = arena->base ? arena->base + arena->used : NULL;
    arena->used = da_size_add(arena->used, round_up(bytes));
    /* Slices are sized by the same take sequence; overrunning is a bug. */
    return arena->base && arena->used > arena->cap ? NULL : p;
}

dacpu_shared dacpu_shared_layout(const dashattn_plan_desc *plan, dashattn_operation op)
{
    const dashattn_problem *p = &plan->problem;
    const size_t heads = da_size_mul((size_t)p->batch, (size_t)p->heads_kv);
    const size_t m = (size_t)plan->num_blocks, d = (size_t)p->head_dim;
    dacpu_shared s = {0};
    /* A candidate range read in chunks may run DACPU_CHUNK columns past M. */
    s.ld_keys = pad_chunk(plan->num_blocks) + DACPU_CHUNK;
    s.ld_block = pad_chunk(p->block_size);
    if (op == DASHATTN_OP_DECODE)
        return s; /* decode reads the cache's block keys */
    size_t at = 0;
    s.keys = at;
    at = da_size_add(at, round_up(da_size_mul3(heads, m, d * sizeof(float))));
    s.keys_t = at;
    at = da_size_add(at, round_up(da_size_mul3(heads, d * sizeof(float), (size_t)s.ld_keys)));
    if (op == DASHATTN_OP_FORWARD) {
        s.kt_cache = at;
        at = da_size_add(at, round_up(da_size_mul3(da_size_mul(heads, m), d * sizeof(float),
                                                   (size_t)s.ld_block)));
        s.kt_state = at;
        at = da_size_add(at, round_up(da_size_mul3(heads, m, sizeof(atomic_int))));
    } else {
        s.pool = at;
        s.has_pool = 1;
        at = da_size_add(at, round_up(da_size_mul3(heads, (size_t)p->len_k, sizeof(float))));
    }
    s.total = at;
    return s;
}

size_t dacpu_thread_bytes(const dashattn_plan_desc *plan, dashattn_operation op)
{
    switch (op) {
    case DASHATTN_OP_FORWARD:
        return round_up(dacpu_forward_scratch_bytes(plan));
    case DASHATTN_OP_BACKWARD:
        return round_up(dacpu_backward_scratch_bytes(plan));
    case DASHATTN_OP_DECODE:
        return round_up(dacpu_decode_scratch_bytes(plan));
    }
    return 0;
}

/* The caller's workspace need not be aligned; everything is laid out from
 * the first 64-byte boundary in it (the size asked for includes the slack). */
void *dacpu_shared_at(void *workspace, size_t offset)
{
    const uintptr_t p = (uintptr_t)workspace;
    return (char *)workspace + ((ALIGN - p % ALIGN) % ALIGN) + offset;
}

size_t dacpu_workspace_bytes(const dashattn_plan_desc *plan, dashattn_operation op, int threads)
{
    return da_size_add(ALIGN,
                       da_size_add(dacpu_shared_layout(plan, op).total,
                                   da_size_mul((size_t)threads, dacpu_thread_bytes(plan, op))));
}

dacpu_arena dacpu_thread_arena(void *workspace, const dashattn_plan_desc *plan,
                               dashattn_operation op, int thread)
{
    const size_t per_thread = dacpu_thread_bytes(plan, op);
    const size_t shared = dacpu_shared_layout(plan, op).total;
    dacpu_arena a = {dacpu_shared_at(workspace, shared + (size_t)thread * per_thread), 0,
                     per_thread};
    return a;
}
