/* SPDX-License-Identifier: MIT */
/* Stage 2 of the forward (SPEC.md, "Stage 2"): softmax attention over the
 * tokens of kept blocks, log(block weight) added to each logit, with an
 * online softmax, fused in one kernel.
 *
 * A work-group owns DA_WG consecutive rows of one KV head (positions outer,
 * the group's heads inner), one row per work-item, its query and
 * accumulator in private memory. Blocks are visited in order; a block no row
 * of the group keeps is never read. A kept block is staged through local
 * memory in tiles of DA_KT tokens that every row keeping it reuses. */

#define DA_D4 (DA_DPAD / 4)

/* Bit x set where row r keeps block j0 + x (weight w[(j0 + x) * rows_total
 * + r] nonzero), for the blocks below nvis. */
inline uint da_row_kept_bits(__global const float *w, long j0, long nvis, long rows_total,
                             long r)
{
    uint bits = 0;
    for (int x = 0; x < 32 && j0 + x < nvis; x++)
        bits |= (uint)(w[(j0 + x) * rows_total + r] != 0.0f) << x;
    return bits;
}

/* The union of the rows' kept blocks, 32 at a time, as a bit mask. */
inline uint da_kept_mask(__local volatile uint *mask, uint mine)
{
    barrier(CLK_LOCAL_MEM_FENCE);
    if (get_local_id(0) == 0)
        *mask = 0;
    barrier(CLK_LOCAL_MEM_FENCE);
    if (mine)
        atomic_or(mask, mine);
    barrier(CLK_LOCAL_MEM_FENCE);
    return *mask;
}

/* Tokens [t0, t0 + nt) of block rows starting at row `first` of k and v,
 * into local tiles of DA_KT x DA_DPAD floats, zero padded. */
inline void da_stage_kv(__global const elem *k, long kbase, long ks2, long ks3,
                        __global const elem *v, long vbase, long vs2, long vs3, int nt, int d,
                        __local float *kt, __local float *vt)
{
    const int lid = get_local_id(0);
    DA_SPREAD(e, DA_KT * DA_DPAD) {
        const int t = e / DA_DPAD, c = e % DA_DPAD;
        float kv = 0.0f, vv = 0.0f;
        if (t < nt && c < d) {
            kv = LOAD(k, kbase + t * ks2 + c * ks3);
            vv = LOAD(v, vbase + t * vs2 + c * vs3);
        }
        kt[e] = kv;
        vt[e] = vv;
    }
}

typedef struct da_online {
    float m, l;
} da_online;

/* Fold `mine` staged tokens into a row: logits qr . k_t + logw. */
inline void da_fold(const float4 *qr, float4 *acc, da_online *st, __local const float4 *kt4,
                    __local const float4 *vt4, int mine, float logw)
{
    float s[DA_KT];
    float mx = -INFINITY;
    int bad = 0;
    for (int t = 0; t < mine; t++) {
        float4 a = (float4)(0.0f);
        for (int c = 0; c < DA_D4; c++)
            a += qr[c] * kt4[t * DA_D4 + c];
        const float x = a.x + a.y + a.z + a.w + logw;
        s[t] = x;
        bad |= !isfinite(x);
        mx = fmax(mx, x);
    }
    if (bad) { /* poison the row rather than drop a NaN or an overflow */
        st->l = NAN;
        return;
    }
    const float m_new = fmax(st->m, mx);
    const float corr = st->l != 0.0f ? exp(st->m - m_new) : 1.0f;
    for (int c = 0; c < DA_D4; c++)
        acc[c] *= corr;
    float sum = 0.0f;
    for (int t = 0; t < mine; t++) {
        const float p = exp(s[t] - m_new);
        sum += p;
        for (int c = 0; c < DA_D4; c++)
            acc[c] += p * vt4[t * DA_D4 + c];
    }
    st->l = st->l * corr + sum;
    st->m = m_new;
}

/* Four dims of row `base` of a tensor, zero past d. */
inline float4 da_row4(__global const elem *p, long base, long s3, int c4, int d)
{
    const int c = 4 * c4;
#if DA_DT == 0
    if (s3 == 1 && c + 3 < d)
        return vload4(0, p + base + c);
#elif DA_DT == 1
    if (s3 == 1 && c + 3 < d)
        return vload_half4(0, p + base + c);
#endif
    float x[4];
    for (int e = 0; e < 4; e++)
        x[e] = c + e < d ? LOAD(p, base + (c + e) * s3) : 0.0f;
    return (float4)(x[0], x[1], x[2], x[3]);
}

/* da_fold reading keys and values straight from global memory (DA_DIRECT:
 * CPU devices, where local memory is ordinary memory and staging a tile the
 * row does not need costs more than the cache saves). */
inline void da_fold_direct(const float4 *qr, float4 *acc, da_online *st,
                           __global const elem *k, long kbase, long4 ks,
                           __global const elem *v, long vbase, long4 vs, int mine, float logw,
                           int d)
{
    float s[DA_KT];
    float mx = -INFINITY;
    int bad = 0;
    for (int t = 0; t < mine; t++) {
        float4 a = (float4)(0.0f);
        for (int c = 0; c < DA_D4; c++)
            a += qr[c] * da_row4(k, kbase + t * ks.s2, ks.s3, c, d);
        const float x = a.x + a.y + a.z + a.w + logw;
        s[t] = x;
        bad |= !isfinite(x);
        mx = fmax(mx, x);
    }
    if (bad) {
        st->l = NAN;
        return;
    }
    const float m_new = fmax(st->m, mx);
    const float corr = st->l != 0.0f ? exp(st->m - m_new) : 1.0f;
    for (int c = 0; c < DA_D4; c++)
        acc[c] *= corr;
    float sum = 0.0f;
    for (int t = 0; t < mine; t++) {
        const float p = exp(s[t] - m_new);
        sum += p;
        for (int c = 0; c < DA_D4; c++)
            acc[c] += p * da_row4(v, vbase + t * vs.s2, vs.s3, c, d);
    }
    st->l = st->l * corr + sum;
    st->m = m_new;
}

__kernel __attribute__((reqd_work_group_size(DA_WG, 1, 1))) void
da_attend(__global const elem *q, long4 qs, __global const elem *k, long4 ks,
          __global const elem *v, long4 vs, __global elem *out, long4 os, __global float *lse,
          int heads_kv, int group, long i0, long npos, long chunk, long qoff, long len_q,
          long len_k, long num_blocks, int8 lay, int d, float scale, __global const float *ws,
          long w_off, long rows_total)
{
    __local float4 kt4[DA_KT * DA_D4], vt4[DA_KT * DA_D4];
    __local volatile uint need;
    const int lid = get_local_id(0);
    const long nrows = npos * group, tiles = (nrows + DA_WG - 1) / DA_WG;
    const long tile = tiles - 1 - get_group_id(0); /* the busiest tiles first */
    const long bh = get_group_id(1), b = bh / heads_kv, h = bh % heads_kv;
    const long rr = tile * DA_WG + lid;
    const int valid = rr < nrows;
    const long i = i0 + rr / group, hq = h * group + rr % group;
    const long r = bh * chunk * group + rr;
    const da_rows L = da_row_layout(lay, i + qoff, len_k);
    const long nvis = valid ? da_visible_blocks(lay, &L, num_blocks) : 0;
    const long last = min(tile * DA_WG + DA_WG, nrows) - 1;
    const da_rows T = da_row_layout(lay, i0 + last / group + qoff, len_k);
    const long tile_blocks = da_visible_blocks(lay, &T, num_blocks);
    __global const float *w = ws + w_off;

    float4 qr[DA_D4], acc[DA_D4];
    const long qbase = valid ? da_off(qs, b, hq, i) : 0;
    for (int c4 = 0; c4 < DA_D4; c4++) {
        float x[4];
        for (int e = 0; e < 4; e++) {
            const int c = 4 * c4 + e;
            x[e] = valid && c < d ? scale * LOAD(q, qbase + c * qs.s3) : 0.0f;
        }
        qr[c4] = (float4)(x[0], x[1], x[2], x[3]);
        acc[c4] = (float4)(0.0f);
    }
    da_online st = {-INFINITY, 0.0f};

#if DA_DIRECT
    (void)tile_blocks;
    for (long j = 0; j < nvis; j++) {
        const float wj = w[j * rows_total + r];
        if (wj == 0.0f)
            continue;
        const float logw = log(wj);
        const long ntok = da_visible_tokens(lay, &L, j), first = j * lay.s1;
        const long kbase = da_off(ks, b, h, first), vbase = da_off(vs, b, h, first);
        for (long t0 = 0; t0 < ntok; t0 += DA_KT)
            da_fold_direct(qr, acc, &st, k, kbase + t0 * ks.s2, ks, v, vbase + t0 * vs.s2, vs,
                           (int)min((long)DA_KT, ntok - t0), logw, d);
    }
#else
    for (long j0 = 0; j0 < tile_blocks; j0 += 32) {
        const uint bits = da_row_kept_bits(w, j0, nvis, rows_total, r);
        uint mask = da_kept_mask(&need, bits);
        while (mask) {
            const int x = 31 - clz(mask & (~mask + 1u));
            mask &= mask - 1u;
            const long j = j0 + x, first = j * lay.s1;
            const float wj = (bits >> x) & 1u ? w[j * rows_total + r] : 0.0f;
            const float logw = log(wj);
            const long mine_all = wj != 0.0f ? da_visible_tokens(lay, &L, j) : 0;
            const long span = min(min((long)lay.s1, len_k - first), T.visible_end - first);
            const long kbase = da_off(ks, b, h, first), vbase = da_off(vs, b, h, first);
            for (long t0 = 0; t0 < span; t0 += DA_KT) {
                const int nt = (int)min((long)DA_KT, span - t0);
                barrier(CLK_LOCAL_MEM_FENCE);
                da_stage_kv(k, kbase + t0 * ks.s2, ks.s2, ks.s3, v, vbase + t0 * vs.s2, vs.s2,
                            vs.s3, nt, d, (__local float *)kt4, (__local float *)vt4);
                barrier(CLK_LOCAL_MEM_FENCE);
                const int mine = (int)clamp(mine_all - t0, 0L, (long)nt);
                if (mine > 0)
                    da_fold(qr, acc, &st, kt4, vt4, mine, logw);
            }
        }
    }
#endif
    if (!valid)
        return;
    const float inv = 1.0f / st.l;
    const long obase = da_off(os, b, hq, i);
    for (int c4 = 0; c4 < DA_D4; c4++) {
        const float4 o = acc[c4] * inv;
        const float x[4] = {o.x, o.y, o.z, o.w};
        for (int e = 0; e < 4; e++)
            if (4 * c4 + e < d)
                STORE(out, obase + (4 * c4 + e) * os.s3, x[e]);
    }
    if (lse)
        lse[(b * heads_kv * group + hq) * len_q + i] = st.m + log(st.l);
}
