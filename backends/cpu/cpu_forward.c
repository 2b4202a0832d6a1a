/* SPDX-License-Identifier: MIT */
/* Forward driver: block keys, then tiles of query positions per KV head.
 * A tile holds several positions of all G query heads of one KV head, so
 * each key block that any of them keeps is loaded once per tile.
 * A key block is transposed once per call, by the first tile that keeps it,
 * into a cache in the workspace; blocks no row keeps are never touched. */
#include <config.h>

#include "cpu_internal.h"

#include <math.h>
#include <stdatomic.h>

enum { KT_ABSENT = 0, KT_WRITING = 1, KT_READY = 2 };

/* A row that keeps a block: which row, the block's tokens it sees, and the
 * log of its weight. */
typedef struct keeper {
    int32_t row, ntok;
    float logw;
} keeper;

typedef struct tile_scratch {
    float *q;   /* rows x D: raw, then scaled for stage 2 */
    float *acc; /* rows x D */
    float *w;   /* rows x M block weights */
    float *m, *l;
    float *kbuf, *vbuf, *kt, *logits;
    int64_t *first;  /* M + 1: block j's keepers are keepers[first[j] .. first[j + 1]) */
    keeper *keepers; /* up to rows x M */
    dacpu_stage1_scratch s1;
} tile_scratch;

/* Positions per tile: about DACPU_TILE_ROWS rows whatever the group size. */
static int64_t tile_positions(const dashattn_plan_desc *plan)
{
    const int64_t n = DACPU_TILE_ROWS / plan->group_size;
    return n < 1 ? 1 : n > DACPU_TILE_POSITIONS ? DACPU_TILE_POSITIONS : n;
}

static tile_scratch take_tile_scratch(dacpu_arena *a, const dashattn_plan_desc *plan)
{
    const size_t rows = (size_t)(tile_positions(plan) * plan->group_size);
    const size_t d = (size_t)plan->problem.head_dim, m = (size_t)plan->num_blocks;
    const size_t s = (size_t)plan->problem.block_size;
    const size_t ldt = (size_t)dacpu_shared_layout(plan, DASHATTN_OP_FORWARD).ld_block;
    tile_scratch t;
    t.q = dacpu_take(a, da_size_mul3(rows, d, sizeof(float)));
    t.acc = dacpu_take(a, da_size_mul3(rows, d, sizeof(float)));
    t.w = dacpu_take(a, da_size_mul3(rows, m, sizeof(float)));
    t.m = dacpu_take(a, da_size_mul(rows, sizeof(float)));
    t.l = dacpu_take(a, da_size_mul(rows, sizeof(float)));
    t.kbuf = dacpu_take(a, da_size_mul3(s, d, sizeof(float)));
    t.vbuf = dacpu_take(a, da_size_mul3(s, d, sizeof(float)));
    t.kt = dacpu_take(a, da_size_mul3(d, ldt, sizeof(float)));
    t.logits = dacpu_take(a, da_size_mul(ldt, sizeof(float)));
    t.first = dacpu_take(a, da_size_mul(m + 1, sizeof(int64_t)));
    t.keepers = dacpu_take(a, da_size_mul3(rows, m, sizeof(keeper)));
    t.s1 = dacpu_stage1_scratch_take(a, plan);
    return t;
}

size_t dacpu_forward_scratch_bytes(const dashattn_plan_desc *plan)
{
    dacpu_arena counter = {NULL, 0, 0};
    take_tile_scratch(&counter, plan);
    return counter.used;
}

/* What every tile of one call shares. */
typedef struct forward_call {
    const dashattn_plan_desc *plan;
    const dashattn_forward_args *args;
    dacpu_shared layout;
    const float *keys_t;
    float *kt_cache;
    atomic_int *kt_state;
} forward_call;

/* Selection rows [b, hq, i, :] from the weights. */
static void write_selection(const dashattn_selection *sel, int64_t row, const float *w,
                            int64_t visible_blocks)
{
    const int64_t cap = sel->max_blocks;
    const int lists = sel->block_index || sel->block_weight;
    int64_t n = 0;
    for (int64_t j = 0; j < visible_blocks; j++) {
        if (w[j] == 0.0f)
            continue;
        if (sel->block_index)
            sel->block_index[row * cap + n] = (int32_t)j;
        if (sel->block_weight)
            sel->block_weight[row * cap + n] = w[j];
        n++;
    }
    for (int64_t e = n; lists && e < cap; e++) {
        if (sel->block_index)
            sel->block_index[row * cap + e] = -1;
        if (sel->block_weight)
            sel->block_weight[row * cap + e] = 0.0f;
    }
    if (sel->block_count)
        sel->block_count[row] = (int32_t)n;
}

/* Tokens of block j a row at this layout can see. */
static int64_t visible_tokens(const dashattn_plan_desc *plan, const dashattn_row_blocks *r,
                              int64_t j)
{
    const int64_t s = plan->problem.block_size, first = j * s;
    const int64_t end = first + s < r->visible_end ? first + s : r->visible_end;
    return end > first ? end - first : 0;
}

/* Transposed keys of block j of KV head bh: from the cache, made now if
 * this thread is first, or into the tile's own buffer while another thread
 * is still writing the cached copy. */
static const float *transposed_block(const forward_call *call, int64_t b, int64_t h, int64_t j,
                                     int64_t count, tile_scratch *t)
{
    const dashattn_problem *p = &call->plan->problem;
    const int64_t d = p->head_dim, ldt = call->layout.ld_block;
    const int64_t idx = (b * p->heads_kv + h) * call->plan->num_blocks + j;
    float *slot = call->kt_cache + idx * d * ldt;
    atomic_int *state = &call->kt_state[idx];
    if (atomic_load_explicit(state, memory_order_acquire) == KT_READY)
        return slot;
    int expected = KT_ABSENT;
    const int mine = atomic_compare_exchange_strong_explicit(
        state, &expected, KT_WRITING, memory_order_acquire, memory_order_acquire);
    if (!mine && expected == KT_READY)
        return slot;
    int64_t ldk;
    const float *k = dacpu_rows(call->args->k, b, h, j * p->block_size, count, t->kbuf, &ldk);
    float *dst = mine ? slot : t->kt;
    dacpu_transpose(k, ldk, count, d, dst, ldt, 0);
    if (mine)
        atomic_store_explicit(state, KT_READY, memory_order_release);
    return dst;
}

typedef struct tile_counts {
    int64_t visible, attended;
} tile_counts;

static tile_counts run_tile(const forward_call *call, int64_t b, int64_t h, int64_t i0,
                            tile_scratch *t)
{
    const dashattn_plan_desc *plan = call->plan;
    const dashattn_forward_args *a = call->args;
    const dashattn_problem *p = &plan->problem;
    const int64_t g_count = plan->group_size, d = p->head_dim, m = plan->num_blocks;
    const int64_t positions = tile_positions(plan);
    const int64_t i_end = i0 + positions < p->len_q ? i0 + positions : p->len_q;
    const int64_t rows = i_end - i0, bh = b * p->heads_kv + h;
    const int64_t ld_keys = call->layout.ld_keys;
    const float *keys_t = call->keys_t + bh * d * ld_keys;
    dashattn_row_blocks layout[DACPU_TILE_POSITIONS];
    int64_t nvis[DACPU_TILE_POSITIONS], max_vis = 0;
    tile_counts counts = {0, 0};

    /* Stage 1 for every (position, head) of the tile; row index ri * G + g. */
    for (int64_t ri = 0; ri < rows; ri++) {
        const int64_t i = i0 + ri;
        layout[ri] = dashattn_row_layout(plan, i + plan->query_offset, p->len_k);
        nvis[ri] = dacpu_visible_blocks(plan, &layout[ri]);
        max_vis = nvis[ri] > max_vis ? nvis[ri] : max_vis;
        float *q = t->q + ri * g_count * d;
        for (int64_t g = 0; g < g_count; g++)
            dacpu_load_row(a->q, b, h * g_count + g, i, q + g * d);
        dacpu_stage1(plan, &layout[ri], nvis[ri], q, d, keys_t, ld_keys, t->w + ri * g_count * m, m,
                     &t->s1);
        for (int64_t c = 0; c < g_count * d; c++)
            q[c] *= (float)p->scale;
    }
    const int64_t total_rows = rows * g_count;
    for (int64_t r = 0; r < total_rows; r++) {
        dacpu_row_state rs = {0, 0, t->acc + r * d};
        dacpu_row_begin(&rs, d);
        t->m[r] = rs.m;
        t->l[r] = rs.l;
    }

    /* The rows keeping each block, gathered in one row-major pass over the
     * weights (a counting sort by block), so stage 2 visits only kept blocks
     * and their keepers. */
    for (int64_t j = 0; j <= max_vis; j++)
        t->first[j] = 0;
    for (int64_t r = 0; r < total_rows; r++) {
        const float *w = t->w + r * m;
        for (int64_t j = 0; j < nvis[r / g_count]; j++)
            t->first[j + 1] += w[j] != 0.0f;
    }
    for (int64_t j = 0; j < max_vis; j++)
        t->first[j + 1] += t->first[j];
    for (int64_t r = 0; r < total_rows; r++) {
        const int64_t ri = r / g_count;
        const float *w = t->w + r * m;
        for (int64_t j = 0; j < nvis[ri]; j++)
            if (w[j] != 0.0f) {
                const int64_t ntok = visible_tokens(plan, &layout[ri], j);
                t->keepers[t->first[j]++] = (keeper){(int32_t)r, (int32_t)ntok, logf(w[j])};
                counts.attended += ntok;
            }
    }
    /* Filling advanced first[j] to block j + 1's start: shift back. */
    for (int64_t j = max_vis; j > 0; j--)
        t->first[j] = t->first[j - 1];
    t->first[0] = 0;

    /* Stage 2, block-major over the kept blocks. */
    for (int64_t j = 0; j < max_vis; j++) {
        if (t->first[j] == t->first[j + 1])
            continue;
        const int64_t first = j * p->block_size;
        const int64_t count = first + p->block_size <= p->len_k ? p->block_size : p->len_k - first;
        int64_t ldv;
        const float *vb = dacpu_rows(a->v, b, h, first, count, t->vbuf, &ldv);
        const dacpu_kv_block block = {transposed_block(call, b, h, j, count, t),
                                      call->layout.ld_block, vb, ldv};
        for (int64_t e = t->first[j]; e < t->first[j + 1]; e++) {
            const keeper *k = &t->keepers[e];
            if (k->ntok == 0)
                continue;
            dacpu_row_state rs = {t->m[k->row], t->l[k->row], t->acc + k->row * d};
            dacpu_attend(t->q + k->row * d, &block, k->ntok, k->logw, d, &rs, t->logits);
            t->m[k->row] = rs.m;
            t->l[k->row] = rs.l;
        }
    }

    for (int64_t r = 0; r < total_rows; r++) {
        const int64_t ri = r / g_count, g = r % g_count, i = i0 + ri, hq = h * g_count + g;
        dacpu_row_state rs = {t->m[r], t->l[r], t->acc + r * d};
        const float lse = dacpu_row_finish(&rs, d);
        dacpu_store_rows(a->out, b, hq, i, 1, rs.acc, d);
        const int64_t row = (b * p->heads_q + hq) * p->len_q + i;
        if (a->lse)
            a->lse[row] = lse;
        if (a->selection)
            write_selection(a->selection, row, t->w + r * m, nvis[ri]);
        counts.visible += layout[ri].visible_end;
    }
    return counts;
}

dashattn_status dacpu_forward(void *state, const dashattn_plan_desc *plan,
                              const dashattn_forward_args *a)
{
    const dacpu_state *st = state;
    const dashattn_problem *p = &plan->problem;
    forward_call call = {plan, a, dacpu_shared_layout(plan, DASHATTN_OP_FORWARD), NULL, NULL, NULL};
    void *ws = a->workspace;
    call.keys_t = dacpu_shared_at(ws, call.layout.keys_t);
    call.kt_cache = dacpu_shared_at(ws, call.layout.kt_cache);
    call.kt_state = dacpu_shared_at(ws, call.layout.kt_state);
    const int64_t positions = tile_positions(plan);
    const int64_t tiles = (p->len_q + positions - 1) / positions;
    const int64_t heads = p->batch * p->heads_kv, tasks = heads * tiles;
    int64_t visible = 0, attended = 0;
    const dashattn_status team = dacpu_team_check("dashattn_forward", st->num_threads);
    if (team != DASHATTN_OK)
        return team;

#pragma omp parallel num_threads(st->num_threads) reduction(+ : visible, attended)
    {
        dacpu_arena arena = dacpu_thread_arena(ws, plan, DASHATTN_OP_FORWARD, DACPU_THREAD_ID());
        tile_scratch t = take_tile_scratch(&arena, plan);
#pragma omp for schedule(static)
        for (int64_t idx = 0; idx < heads * plan->num_blocks; idx++)
            atomic_init(&call.kt_state[idx], KT_ABSENT);
        dacpu_block_keys(plan, a->k, a->block_summary, &call.layout, ws, t.kbuf);
        /* Late tiles of a causal problem see the most keys: start them first. */
#pragma omp for schedule(dynamic, 1)
        for (int64_t task = 0; task < tasks; task++) {
            const int64_t tile = tiles - 1 - task % tiles, bh = task / tiles;
            const tile_counts c =
                run_tile(&call, bh / p->heads_kv, bh % p->heads_kv, tile * positions, &t);
            visible += c.visible;
            attended += c.attended;
        }
    }
    if (a->stats) {
        a->stats->visible_pairs = visible;
        a->stats->attended_pairs = attended;
        a->stats->sparsity = visible > 0 ? 1.0 - (double)attended / (double)visible : 0.0;
    }
    return DASHATTN_OK;
}
