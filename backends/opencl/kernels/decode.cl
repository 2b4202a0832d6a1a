/* SPDX-License-Identifier: MIT */
/* Decode against a KV cache, and appending to one (SPEC.md, "Decode and KV
 * caches"; the summaries of the blocks an append completes are
 * da_append_keys in summary.cl). A decode row is r = b * Hq + hq (one query
 * per sequence): the pass layout of stage1.cl with chunk 1, so da_select
 * serves decode too.
 *
 * Stage 2 of decode is split-KV: the blocks of each (sequence, KV head) are
 * cut into ranges, one work-group per range, every work-group keeping a
 * partial softmax state (m, l, acc) per query head of the group; a second
 * kernel merges the ranges. Work-items of a work-group share each staged
 * key tile, one token (scores) or one dim (values) each. */

/* Stage-1 scores of decode: q . (cached block key) for each candidate. */
__kernel void da_decode_scores(__global const elem *q, long4 qs, __global const void *keys,
                               long4 bks, int keys_dtype, int paged, __global const int *table,
                               long table_stride, __global const int *seq_lens, int heads_kv,
                               int group, int d, long num_blocks, int8 lay, __global float *ws,
                               long w_off, long rows_total)
{
    const long j = get_global_id(0), r = get_global_id(1);
    if (j >= num_blocks || r >= rows_total)
        return;
    const long heads_q = heads_kv * group, b = r / heads_q, hq = r % heads_q, h = hq / group;
    const long len = seq_lens[b];
    const da_rows L = da_row_layout(lay, len - 1, len);
    if (j < L.cand_begin || j >= L.cand_end)
        return;
    const long3 loc = da_cache_locate(paged, table, table_stride, b, j, lay.s1);
    const long kb = da_off(bks, loc.x, h, loc.z), qb = da_off(qs, b, hq, 0);
    float acc = 0.0f;
    for (int c = 0; c < d; c++)
        acc += LOAD(q, qb + c * qs.s3) * da_load_any(keys, kb + c * bks.s3, keys_dtype);
    ws[w_off + j * rows_total + r] = acc;
}

__kernel __attribute__((reqd_work_group_size(DA_WG, 1, 1))) void
da_decode_attend(__global const elem *q, long4 qs, __global const elem *kc, long4 ks,
                 __global const elem *vc, long4 vs, int paged, __global const int *table,
                 long table_stride, __global const int *seq_lens, int heads_kv, int group,
                 long num_blocks, int8 lay, int d, float scale, long blocks_per_split,
                 __global float *ws, long w_off, long rows_total, long pacc_off, long pml_off)
{
    __local float kt[DA_KT * DA_DPAD], vt[DA_KT * DA_DPAD], sc[DA_KT], qg[DA_DPAD];
    /* Running max and sum of the heads in flight, DA_WG of them at a time. */
    __local float run_m[DA_WG], run_l[DA_WG];
    __local float corr_shared;
    __local volatile int need;
    const int lid = get_local_id(0);
    const long split = get_group_id(0), bh = get_group_id(1);
    const long b = bh / heads_kv, h = bh % heads_kv, rbase = bh * group;
    const long len = seq_lens[b];
    const da_rows L = da_row_layout(lay, len - 1, len);
    const long nvis = da_visible_blocks(lay, &L, num_blocks);
    const long j0 = split * blocks_per_split, j1 = min(j0 + blocks_per_split, nvis);
    __global const float *w = ws + w_off;
    __global float *pacc = ws + pacc_off + (split * rows_total + rbase) * d;
    __global float *pml = ws + pml_off + (split * rows_total + rbase) * 2;
    for (long g0 = 0; g0 < group; g0 += DA_WG) {
        const long g1 = min(g0 + DA_WG, (long)group);
        for (long g = g0; g < g1; g++)
            DA_SPREAD(c, d)
                pacc[g * d + c] = 0.0f;
        run_m[lid] = -INFINITY;
        run_l[lid] = 0.0f;
        for (long j = j0; j < j1; j++) {
            barrier(CLK_LOCAL_MEM_FENCE);
            if (lid == 0)
                need = 0;
            barrier(CLK_LOCAL_MEM_FENCE);
            if (g0 + lid < g1 && w[j * rows_total + rbase + g0 + lid] != 0.0f)
                need = 1;
            barrier(CLK_LOCAL_MEM_FENCE);
            const long ntok = need ? da_visible_tokens(lay, &L, j) : 0;
            const long3 loc = da_cache_locate(paged, table, table_stride, b, j, lay.s1);
            for (long t0 = 0; t0 < ntok; t0 += DA_KT) {
                const int nt = (int)min((long)DA_KT, ntok - t0);
                const long kb = da_off(ks, loc.x, h, loc.y + t0);
                const long vb = da_off(vs, loc.x, h, loc.y + t0);
                barrier(CLK_LOCAL_MEM_FENCE);
                DA_SPREAD(e, DA_KT * DA_DPAD) {
                    const int t = e / DA_DPAD, c = e % DA_DPAD;
                    const int in = t < nt && c < d;
                    kt[e] = in ? LOAD(kc, kb + t * ks.s2 + c * ks.s3) : 0.0f;
                    vt[e] = in ? LOAD(vc, vb + t * vs.s2 + c * vs.s3) : 0.0f;
                }
                for (long g = g0; g < g1; g++) {
                    const float wg = w[j * rows_total + rbase + g];
                    /* wg is the same for every work-item; no `continue`, as
                     * PoCL wants barriers reached by structured control. */
                    if (wg != 0.0f) {
                    barrier(CLK_LOCAL_MEM_FENCE);
                    const long qb = da_off(qs, b, h * group + g, 0);
                    DA_SPREAD(c, DA_DPAD)
                        qg[c] = c < d ? scale * LOAD(q, qb + c * qs.s3) : 0.0f;
                    barrier(CLK_LOCAL_MEM_FENCE);
                    const float logw = log(wg);
                    DA_SPREAD(t, nt) {
                        float s = 0.0f;
                        for (int c = 0; c < DA_DPAD; c++)
                            s += qg[c] * kt[t * DA_DPAD + c];
                        sc[t] = s + logw;
                    }
                    barrier(CLK_LOCAL_MEM_FENCE);
                    if (lid == 0) {
                        float mx = -INFINITY;
                        int bad = 0;
                        for (int t = 0; t < nt; t++) {
                            bad |= !isfinite(sc[t]);
                            mx = fmax(mx, sc[t]);
                        }
                        const float m = run_m[g - g0], l = run_l[g - g0];
                        const float m_new = fmax(m, mx);
                        const float corr = l != 0.0f ? exp(m - m_new) : 1.0f;
                        float sum = 0.0f;
                        for (int t = 0; t < nt; t++) {
                            sc[t] = exp(sc[t] - m_new);
                            sum += sc[t];
                        }
                        run_m[g - g0] = m_new;
                        run_l[g - g0] = bad ? NAN : l * corr + sum;
                        corr_shared = corr;
                    }
                    barrier(CLK_LOCAL_MEM_FENCE);
                    const float corr = corr_shared;
                    DA_SPREAD(c, d) {
                        float a = pacc[g * d + c] * corr;
                        for (int t = 0; t < nt; t++)
                            a += sc[t] * vt[t * DA_DPAD + c];
                        pacc[g * d + c] = a;
                    }
                    }
                }
            }
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        if (g0 + lid < g1) {
            pml[2 * (g0 + lid)] = run_m[lid];
            pml[2 * (g0 + lid) + 1] = run_l[lid];
        }
    }
}

/* Merges the ranges' partial states of each row into out and lse. */
__kernel void da_decode_combine(__global const float *ws, long pacc_off, long pml_off,
                                long splits, long rows_total, int d, int heads_q,
                                __global elem *out, long4 os, __global float *lse)
{
    const long r = get_global_id(0);
    if (r >= rows_total)
        return;
    __global const float *pml = ws + pml_off;
    float m = -INFINITY;
    for (long s = 0; s < splits; s++)
        if (pml[(s * rows_total + r) * 2 + 1] != 0.0f)
            m = fmax(m, pml[(s * rows_total + r) * 2]);
    float l = 0.0f;
    for (long s = 0; s < splits; s++) {
        const float ls = pml[(s * rows_total + r) * 2 + 1];
        if (ls != 0.0f)
            l += ls * exp(pml[(s * rows_total + r) * 2] - m);
    }
    const float inv = 1.0f / l;
    const long b = r / heads_q, hq = r % heads_q, ob = da_off(os, b, hq, 0);
    for (int c = 0; c < d; c++) {
        float a = 0.0f;
        for (long s = 0; s < splits; s++) {
            const float ls = pml[(s * rows_total + r) * 2 + 1];
            if (ls != 0.0f)
                a += ws[pacc_off + (s * rows_total + r) * d + c] *
                     exp(pml[(s * rows_total + r) * 2] - m);
        }
        STORE(out, ob + c * os.s3, a * inv);
    }
    if (lse)
        lse[r] = m + log(l);
}

/* Tokens of k_new and v_new to positions seq_lens[b] + t of the cache. */
__kernel void da_append_copy(__global const elem *kn, long4 kns, __global const elem *vn,
                             long4 vns, __global elem *kc, long4 ks, __global elem *vc, long4 vs,
                             int paged, __global const int *table, long table_stride,
                             __global const int *seq_lens, int heads_kv, long tokens,
                             int block_size, int d)
{
    const int c = get_global_id(0);
    const long t = get_global_id(1), bh = get_global_id(2);
    if (c >= d || t >= tokens)
        return;
    const long b = bh / heads_kv, h = bh % heads_kv, pos = seq_lens[b] + t;
    const long3 loc = da_cache_locate(paged, table, table_stride, b, pos / block_size, block_size);
    const long row = loc.y + pos % block_size;
    STORE(kc, da_off(ks, loc.x, h, row) + c * ks.s3, LOAD(kn, da_off(kns, b, h, t) + c * kns.s3));
    STORE(vc, da_off(vs, loc.x, h, row) + c * vs.s3, LOAD(vn, da_off(vns, b, h, t) + c * vns.s3));
}

__kernel void da_advance(__global int *seq_lens, long batch, int tokens)
{
    const long b = get_global_id(0);
    if (b < batch)
        seq_lens[b] += tokens;
}
