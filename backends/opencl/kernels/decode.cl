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
 * key and value tile among up to DA_DEC_HEADS heads at once: a (head,
 * token) pair each for the scores, a work-item per head for the softmax
 * step, (head, dim) pairs held in registers for the values. */

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

/* DA_DEC_HEADS (a build option, ocl_config.c): query heads of a group one
 * pass of da_decode_attend takes; each pass reads the split's key and value
 * tiles once for all of them. DA_DEC_ACC: the output elements (head, dim)
 * each work-item accumulates in registers. */
#define DA_DEC_ACC ((DA_DEC_HEADS * DA_DPAD + DA_WG - 1) / DA_WG)
/* Row stride of the key tile: one past a power of two, so work-items
 * scoring different tokens read different banks. */
#define DA_KSTRIDE (DA_DPAD + 1)

__kernel __attribute__((reqd_work_group_size(DA_WG, 1, 1))) void
da_decode_attend(__global const elem *q, long4 qs, __global const elem *kc, long4 ks,
                 __global const elem *vc, long4 vs, int paged, __global const int *table,
                 long table_stride, __global const int *seq_lens, int heads_kv, int group,
                 long num_blocks, int8 lay, int d, float scale, long blocks_per_split,
                 __global float *ws, long w_off, long rows_total, long pacc_off, long pml_off)
{
    __local float kt[DA_KT * DA_KSTRIDE], vt[DA_KT * DA_DPAD];
    __local float qg[DA_DEC_HEADS * DA_DPAD], sc[DA_DEC_HEADS * DA_KT];
    /* Per head in the pass: log weight of the current block (-inf: not
     * read), running max and sum, and the last tile's correction. */
    __local float logw[DA_DEC_HEADS], run_m[DA_DEC_HEADS], run_l[DA_DEC_HEADS],
        corr[DA_DEC_HEADS];
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
    for (long g0 = 0; g0 < group; g0 += DA_DEC_HEADS) {
        const int gn = (int)min((long)DA_DEC_HEADS, group - g0);
        float acc[DA_DEC_ACC];
        for (int a = 0; a < DA_DEC_ACC; a++)
            acc[a] = 0.0f;
        barrier(CLK_LOCAL_MEM_FENCE);
        DA_SPREAD(e, DA_DEC_HEADS * DA_DPAD) {
            const int g = e / DA_DPAD, c = e % DA_DPAD;
            qg[e] = g < gn && c < d
                        ? scale * LOAD(q, da_off(qs, b, h * group + g0 + g, 0) + c * qs.s3)
                        : 0.0f;
        }
        DA_SPREAD(g, DA_DEC_HEADS) {
            run_m[g] = -INFINITY;
            run_l[g] = 0.0f;
        }
        for (long j = j0; j < j1; j++) {
            barrier(CLK_LOCAL_MEM_FENCE);
            if (lid == 0)
                need = 0;
            barrier(CLK_LOCAL_MEM_FENCE);
            DA_SPREAD(g, DA_DEC_HEADS) {
                const float wg = g < gn ? w[j * rows_total + rbase + g0 + g] : 0.0f;
                /* A NaN weight stays NaN and reaches the head's output. */
                logw[g] = wg != 0.0f ? log(wg) : -INFINITY;
                if (wg != 0.0f)
                    need = 1;
            }
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
                    kt[t * DA_KSTRIDE + c] = in ? LOAD(kc, kb + t * ks.s2 + c * ks.s3) : 0.0f;
                    vt[e] = in ? LOAD(vc, vb + t * vs.s2 + c * vs.s3) : 0.0f;
                }
                barrier(CLK_LOCAL_MEM_FENCE);
                DA_SPREAD(e, gn * nt) {
                    const int g = e / nt, t = e % nt;
                    float s = 0.0f;
                    for (int c = 0; c < DA_DPAD; c++)
                        s += qg[g * DA_DPAD + c] * kt[t * DA_KSTRIDE + c];
                    sc[g * DA_KT + t] = s + logw[g];
                }
                barrier(CLK_LOCAL_MEM_FENCE);
                /* One work-item per head: the tile's max, weights and sum. */
                DA_SPREAD(g, gn) {
                    __local float *sg = sc + g * DA_KT;
                    if (logw[g] == -INFINITY) {
                        for (int t = 0; t < nt; t++)
                            sg[t] = 0.0f;
                        corr[g] = 1.0f;
                    } else {
                        float mx = -INFINITY;
                        int bad = 0;
                        for (int t = 0; t < nt; t++) {
                            bad |= !isfinite(sg[t]);
                            mx = fmax(mx, sg[t]);
                        }
                        const float m = run_m[g], l = run_l[g];
                        const float m_new = fmax(m, mx);
                        const float cg = l != 0.0f ? exp(m - m_new) : 1.0f;
                        float sum = 0.0f;
                        for (int t = 0; t < nt; t++) {
                            sg[t] = exp(sg[t] - m_new);
                            sum += sg[t];
                        }
                        run_m[g] = m_new;
                        run_l[g] = bad ? NAN : l * cg + sum;
                        corr[g] = cg;
                    }
                }
                barrier(CLK_LOCAL_MEM_FENCE);
                for (int a = 0; a < DA_DEC_ACC; a++) {
                    const int e = lid + a * DA_WG, g = e / DA_DPAD, c = e % DA_DPAD;
                    if (g < gn && c < d) {
                        float x = acc[a] * corr[g];
                        for (int t = 0; t < nt; t++)
                            x += sc[g * DA_KT + t] * vt[t * DA_DPAD + c];
                        acc[a] = x;
                    }
                }
            }
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int a = 0; a < DA_DEC_ACC; a++) {
            const int e = lid + a * DA_WG, g = e / DA_DPAD, c = e % DA_DPAD;
            if (g < gn && c < d)
                pacc[(g0 + g) * d + c] = acc[a];
        }
        DA_SPREAD(g, gn) {
            pml[2 * (g0 + g)] = run_m[g];
            pml[2 * (g0 + g) + 1] = run_l[g];
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
