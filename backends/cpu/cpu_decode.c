/* SPDX-License-Identifier: MIT */
/* Decode: one query position per sequence against a KV cache. Stage 1 reads
 * only the cached block keys of the candidates; stage 2 reads only the
 * forced and selected blocks. */
#include <config.h>

#include "cpu_internal.h"

#include <math.h>

typedef struct decode_scratch {
    float *q, *acc, *w, *keys, *keys_t, *kbuf, *vbuf, *kt, *logits;
    dacpu_stage1_scratch s1;
} decode_scratch;

static decode_scratch take_decode_scratch(dacpu_arena *a, const dashattn_plan_desc *plan)
{
    const size_t g = (size_t)plan->group_size, d = (size_t)plan->problem.head_dim;
    const size_t m = (size_t)plan->num_blocks, s = (size_t)plan->problem.block_size;
    const dacpu_shared layout = dacpu_shared_layout(plan, DASHATTN_OP_DECODE);
    decode_scratch t;
    t.q = dacpu_take(a, da_size_mul3(g, d, sizeof(float)));
    t.acc = dacpu_take(a, da_size_mul3(g, d, sizeof(float)));
    t.w = dacpu_take(a, da_size_mul3(g, m, sizeof(float)));
    t.keys = dacpu_take(a, da_size_mul3(m, d, sizeof(float)));
    t.keys_t = dacpu_take(a, da_size_mul3(d, (size_t)layout.ld_keys, sizeof(float)));
    t.kbuf = dacpu_take(a, da_size_mul3(s, d, sizeof(float)));
    t.vbuf = dacpu_take(a, da_size_mul3(s, d, sizeof(float)));
    t.kt = dacpu_take(a, da_size_mul3(d, (size_t)layout.ld_block, sizeof(float)));
    t.logits = dacpu_take(a, da_size_mul((size_t)layout.ld_block, sizeof(float)));
    t.s1 = dacpu_stage1_scratch_take(a, plan);
    return t;
}

size_t dacpu_decode_scratch_bytes(const dashattn_plan_desc *plan)
{
    dacpu_arena counter = {NULL, 0, 0};
    take_decode_scratch(&counter, plan);
    return counter.used;
}

/* Heads [g_begin, g_end) of the group of KV head h of sequence b. Stage 1
 * runs for the whole group (shared mode needs every head's scores, and it
 * reads only block keys); stage 2 only for the heads asked for. */
static void decode_group(const dashattn_plan_desc *plan, const dashattn_decode_args *a, int64_t b,
                         int64_t h, int64_t g_begin, int64_t g_end, decode_scratch *t)
{
    const dashattn_problem *p = &plan->problem;
    const dashattn_kv_cache *cache = a->cache;
    const int64_t gc = plan->group_size, d = p->head_dim, m = plan->num_blocks;
    const int64_t s = p->block_size, len = cache->seq_lens[b];
    const dashattn_row_blocks r = dashattn_row_layout(plan, len - 1, len);
    const int64_t nvis = dacpu_visible_blocks(plan, &r);
    const dacpu_shared layout = dacpu_shared_layout(plan, DASHATTN_OP_DECODE);

    /* Candidates are complete blocks, whose keys the cache holds; stage 1
     * reads them transposed, from column cand_begin on. */
    const int64_t n_cand = r.cand_end - r.cand_begin;
    for (int64_t c = 0; c < n_cand; c++) {
        const dacpu_cache_block loc = dacpu_cache_locate(cache, b, r.cand_begin + c, s);
        dacpu_load_row(&cache->block_keys, loc.i0, h, loc.key_row, t->keys + c * d);
    }
    if (n_cand > 0)
        dacpu_transpose(t->keys, d, n_cand, d, t->keys_t, layout.ld_keys, r.cand_begin);
    for (int64_t g = 0; g < gc; g++)
        dacpu_load_row(a->q, b, h * gc + g, 0, t->q + g * d);
    dacpu_stage1(plan, &r, nvis, t->q, d, t->keys_t, layout.ld_keys, t->w, m, &t->s1);
    for (int64_t c = 0; c < gc * d; c++)
        t->q[c] *= (float)p->scale;

    float m_run[DACPU_TILE_ROWS], l_run[DACPU_TILE_ROWS];
    for (int64_t g0 = g_begin; g0 < g_end; g0 += DACPU_TILE_ROWS) {
        const int64_t g1 = g0 + DACPU_TILE_ROWS < g_end ? g0 + DACPU_TILE_ROWS : g_end;
        for (int64_t g = g0; g < g1; g++) {
            dacpu_row_state rs = {0, 0, t->acc + g * d};
            dacpu_row_begin(&rs, d);
            m_run[g - g0] = rs.m;
            l_run[g - g0] = rs.l;
        }
        for (int64_t j = 0; j < nvis; j++) {
            int any = 0;
            for (int64_t g = g0; g < g1 && !any; g++)
                any = t->w[g * m + j] != 0.0f;
            if (!any)
                continue;
            const int64_t first = j * s;
            const int64_t ntok = first + s < len ? s : len - first;
            const dacpu_cache_block loc = dacpu_cache_locate(cache, b, j, s);
            int64_t ldk, ldv;
            const float *kb = dacpu_rows(&cache->k, loc.i0, h, loc.r0, ntok, t->kbuf, &ldk);
            const float *vb = dacpu_rows(&cache->v, loc.i0, h, loc.r0, ntok, t->vbuf, &ldv);
            dacpu_transpose(kb, ldk, ntok, d, t->kt, layout.ld_block, 0);
            const dacpu_kv_block blk = {t->kt, layout.ld_block, vb, ldv};
            for (int64_t g = g0; g < g1; g++) {
                const float wj = t->w[g * m + j];
                if (wj == 0.0f)
                    continue;
                dacpu_row_state rs = {m_run[g - g0], l_run[g - g0], t->acc + g * d};
                dacpu_attend(t->q + g * d, &blk, ntok, logf(wj), d, &rs, t->logits);
                m_run[g - g0] = rs.m;
                l_run[g - g0] = rs.l;
            }
        }
        for (int64_t g = g0; g < g1; g++) {
            const int64_t hq = h * gc + g;
            dacpu_row_state rs = {m_run[g - g0], l_run[g - g0], t->acc + g * d};
            const float lse = dacpu_row_finish(&rs, d);
            dacpu_store_rows(a->out, b, hq, 0, 1, rs.acc, d);
            if (a->lse)
                a->lse[b * p->heads_q + hq] = lse;
        }
    }
}

dashattn_status dacpu_decode(void *state, const dashattn_plan_desc *plan,
                             const dashattn_decode_args *a)
{
    const dacpu_state *st = state;
    const dashattn_problem *p = &plan->problem;
    dashattn_status status = dacpu_cache_check_readable(plan, a->cache);
    if (status != DASHATTN_OK)
        return status;
    /* With fewer (sequence, KV head) pairs than threads, the heads of each
     * group are split too, so that every thread has work. */
    const int64_t pairs = p->batch * p->heads_kv, gc = plan->group_size;
    int64_t splits = (st->num_threads + pairs - 1) / pairs;
    splits = splits < gc ? splits : gc;
    const int64_t per_split = (gc + splits - 1) / splits;
    status = dacpu_team_check("dashattn_decode", st->num_threads);
    if (status != DASHATTN_OK)
        return status;
#pragma omp parallel num_threads(st->num_threads)
    {
        dacpu_arena arena =
            dacpu_thread_arena(a->workspace, plan, DASHATTN_OP_DECODE, DACPU_THREAD_ID());
        decode_scratch t = take_decode_scratch(&arena, plan);
#pragma omp for schedule(dynamic, 1)
        for (int64_t task = 0; task < pairs * splits; task++) {
            const int64_t bh = task / splits, g0 = (task % splits) * per_split;
            const int64_t g1 = g0 + per_split < gc ? g0 + per_split : gc;
            if (g0 < g1)
                decode_group(plan, a, bh / p->heads_kv, bh % p->heads_kv, g0, g1, &t);
        }
    }
    return DASHATTN_OK;
}
