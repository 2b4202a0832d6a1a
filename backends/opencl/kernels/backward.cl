/* SPDX-License-Identifier: MIT */
/* Backward (SPEC.md, "Backward"), after the block summaries and stage 1 are
 * recomputed into the workspace (rows as in stage1.cl, one pass; stage 1
 * also keeps each row's own entmax probabilities and its weights before the
 * prior):
 *   da_bwd_dq      row-parallel like da_attend: the stage-2 part of dq, the
 *                  prior gradients g_ij of kept candidates (into GP), and
 *                  Dl_i = dO_i . o_i;
 *   da_bwd_entmax  per row (per KV-head position in the shared and mean
 *                  modes): dL/dw through the prior, the group mode, the
 *                  entmax backward, dz into GP in place, and dq's stage-1
 *                  part; writes dq;
 *   da_bwd_dkdv    key-parallel: one work-item per key token sums over the
 *                  rows keeping its block, so dk and dv need no atomics and
 *                  are reproducible; with summary vectors also r_t for dh
 *                  (da_bwd_dh in summary.cl). */

__kernel __attribute__((reqd_work_group_size(DA_WG, 1, 1))) void
da_bwd_dq(__global const elem *q, long4 qs, __global const elem *k, long4 ks,
          __global const elem *v, long4 vs, __global const elem *o, long4 os,
          __global const elem *dout, long4 dos, __global const float *lse, int heads_kv,
          int group, long qoff, long len_q, long len_k, long num_blocks, int8 lay, int d,
          float scale, __global float *ws, long w_off, long gp_off, long dq_off, long dl_off,
          long rows_total)
{
    __local float4 kt4[DA_KT * DA_D4], vt4[DA_KT * DA_D4];
    __local volatile uint need;
    const int lid = get_local_id(0);
    const long nrows = len_q * group, tiles = (nrows + DA_WG - 1) / DA_WG;
    const long tile = tiles - 1 - get_group_id(0);
    const long bh = get_group_id(1), b = bh / heads_kv, h = bh % heads_kv;
    const long rr = tile * DA_WG + lid;
    const int valid = rr < nrows;
    const long i = rr / group, hq = h * group + rr % group;
    const long r = bh * len_q * group + rr;
    const da_rows L = da_row_layout(lay, i + qoff, len_k);
    const long nvis = valid ? da_visible_blocks(lay, &L, num_blocks) : 0;
    const long last = min(tile * DA_WG + DA_WG, nrows) - 1;
    const da_rows T = da_row_layout(lay, last / group + qoff, len_k);
    const long tile_blocks = da_visible_blocks(lay, &T, num_blocks);
    __global const float *w = ws + w_off;
    __global float *gp = ws + gp_off;

    float4 qr[DA_D4], dor[DA_D4], dq[DA_D4];
    float delta = 0.0f;
    const long qb = valid ? da_off(qs, b, hq, i) : 0, ob = valid ? da_off(os, b, hq, i) : 0;
    const long db = valid ? da_off(dos, b, hq, i) : 0;
    for (int c4 = 0; c4 < DA_D4; c4++) {
        float x[4], y[4];
        for (int e = 0; e < 4; e++) {
            const int c = 4 * c4 + e;
            const int in = valid && c < d;
            x[e] = in ? scale * LOAD(q, qb + c * qs.s3) : 0.0f;
            y[e] = in ? LOAD(dout, db + c * dos.s3) : 0.0f;
            delta += in ? y[e] * LOAD(o, ob + c * os.s3) : 0.0f;
        }
        qr[c4] = (float4)(x[0], x[1], x[2], x[3]);
        dor[c4] = (float4)(y[0], y[1], y[2], y[3]);
        dq[c4] = (float4)(0.0f);
    }
    const float lse_r = valid ? lse[(b * heads_kv * group + hq) * len_q + i] : 0.0f;

    for (long j0 = 0; j0 < tile_blocks; j0 += 32) {
        const uint bits = da_row_kept_bits(w, j0, nvis, rows_total, r);
        uint mask = da_kept_mask(&need, bits);
        while (mask) {
            const int x = 31 - clz(mask & (~mask + 1u));
            mask &= mask - 1u;
            const long j = j0 + x, first = j * lay.s1;
            const float wj = (bits >> x) & 1u ? w[j * rows_total + r] : 0.0f;
            const long mine_all = wj != 0.0f ? da_visible_tokens(lay, &L, j) : 0;
            const long span = min(min((long)lay.s1, len_k - first), T.visible_end - first);
            const long kbase = da_off(ks, b, h, first), vbase = da_off(vs, b, h, first);
            float g = 0.0f;
            for (long t0 = 0; t0 < span; t0 += DA_KT) {
                const int nt = (int)min((long)DA_KT, span - t0);
                barrier(CLK_LOCAL_MEM_FENCE);
                da_stage_kv(k, kbase + t0 * ks.s2, ks.s2, ks.s3, v, vbase + t0 * vs.s2, vs.s2,
                            vs.s3, nt, d, (__local float *)kt4, (__local float *)vt4);
                barrier(CLK_LOCAL_MEM_FENCE);
                const int mine = (int)clamp(mine_all - t0, 0L, (long)nt);
                for (int t = 0; t < mine; t++) {
                    float4 a = (float4)(0.0f), p = (float4)(0.0f);
                    for (int c = 0; c < DA_D4; c++) {
                        a += qr[c] * kt4[t * DA_D4 + c];
                        p += dor[c] * vt4[t * DA_D4 + c];
                    }
                    const float e = exp(a.x + a.y + a.z + a.w - lse_r);
                    const float ds = p.x + p.y + p.z + p.w - delta;
                    const float dl = e * wj * ds;
                    for (int c = 0; c < DA_D4; c++)
                        dq[c] += (scale * dl) * kt4[t * DA_D4 + c];
                    g += e * ds;
                }
            }
            if (wj != 0.0f && !da_forced(&L, j))
                gp[j * rows_total + r] = g;
        }
    }
    if (!valid)
        return;
    __global float *dqw = ws + dq_off + r * d;
    for (int c4 = 0; c4 < DA_D4; c4++) {
        const float x[4] = {dq[c4].x, dq[c4].y, dq[c4].z, dq[c4].w};
        for (int e = 0; e < 4; e++)
            if (4 * c4 + e < d)
                dqw[4 * c4 + e] = x[e];
    }
    ws[dl_off + r] = delta;
}

/* dL/dw of one row's candidates in place of GP, which holds for the kept
 * ones g_e = sum_t e_t (dP_t - Dl) (da_bwd_dq): log prior, dL/dw = g_e;
 * flat prior, gamma = pi g_e = dL/dlog pi and dL/dw = (gamma - mean gamma)
 * / (sigma w) over the candidates the prior keeps. 0 elsewhere. */
inline void da_prior_grad(__global const float *w, __global float *gp, __global const float *wpre,
                          long rows_total, long r, long cb, long n, int flat, real sigma)
{
    real kept = 0, sum = 0;
    for (long c = 0; c < n && flat; c++) {
        const long at = (cb + c) * rows_total + r;
        if (da_flat_kept(wpre[at])) {
            kept += 1;
            sum += w[at] != 0.0f ? (real)w[at] * gp[at] : 0;
        }
    }
    const real mean = kept > 0 ? sum / kept : 0;
    for (long c = 0; c < n; c++) {
        const long at = (cb + c) * rows_total + r;
        real g = w[at] != 0.0f ? gp[at] : 0;
        if (flat)
            g = da_flat_kept(wpre[at]) ? (w[at] * g - mean) / (sigma * wpre[at]) : 0;
        gp[at] = (float)g;
    }
}

/* Entmax backward of the candidates of rows r0 .. r0 + ng - 1 sharing the
 * probabilities p of row r0 (ng > 1: shared mode, dL/dp summed over the
 * rows): dz = factor u (g - sum u g / sum u), u = p^(2 - alpha) on p's
 * support, into GP of every one of the rows. */
inline void da_entmax_grad(__global const float *ph, __global float *gp, long rows_total, long r0,
                           int ng, long cb, long n, real alpha, real factor)
{
    real su = 0, sug = 0;
    for (long c = 0; c < n; c++) {
        const long at = (cb + c) * rows_total + r0;
        const real p = ph[at];
        if (!(p > 0))
            continue;
        const real u = alpha == 2 ? 1 : alpha == 1 ? p : pow(p, 2 - alpha);
        real g = 0;
        for (int x = 0; x < ng; x++)
            g += gp[at + x];
        su += u;
        sug += u * g;
    }
    const real mean = su > 0 ? sug / su : 0;
    for (long c = 0; c < n; c++) {
        const long at = (cb + c) * rows_total + r0;
        const real p = ph[at];
        float dz = 0.0f;
        if (p > 0) {
            const real u = alpha == 2 ? 1 : alpha == 1 ? p : pow(p, 2 - alpha);
            real g = 0;
            for (int x = 0; x < ng; x++)
                g += gp[at + x];
            dz = (float)(factor * (u * (g - mean)));
        }
        for (int x = 0; x < ng; x++)
            gp[at + x] = dz;
    }
}

/* dz of one row, or of one position of a KV head (shared mode: one entmax
 * backward on the heads' summed dL/dp, dz split evenly; mean mode: every
 * head's dL/dp is the group's mean dL/dw, then each head's own entmax
 * backward), into GP for every candidate (0 off the support); then dq. */
__kernel void da_bwd_entmax(__global float *ws, long w_off, long gp_off, long dq_off,
                            long kbar_off, long ph_off, long wpre_off, long rows_total,
                            int heads_kv, int group, long qoff, long len_q, long len_k,
                            long num_blocks, int8 lay, int method, int group_mode, int flat,
                            real sigma, real alpha, real scale1, int d, __global elem *dq,
                            long4 dqs)
{
    const long gid = get_global_id(0);
    const int shared = da_group_shared(group_mode, method);
    const int mean = da_group_mean(group_mode, method);
    const int ng = shared || mean ? group : 1;
    const long per_bh = len_q * group / ng;
    if (gid >= per_bh * (rows_total / (len_q * group)))
        return;
    const long bh = gid / per_bh, rr0 = (gid % per_bh) * ng;
    const long b = bh / heads_kv, h = bh % heads_kv, i = rr0 / group;
    const long r0 = bh * len_q * group + rr0;
    const da_rows L = da_row_layout(lay, i + qoff, len_k);
    const long cb = L.cand_begin, n = L.cand_end - L.cand_begin;
    const int grads = n > 0 && method != 4;
    __global const float *w = ws + w_off;
    __global float *gp = ws + gp_off;
    if (grads) {
        for (int x = 0; x < ng; x++)
            da_prior_grad(w, gp, ws + wpre_off, rows_total, r0 + x, cb, n, flat, sigma);
        if (mean)
            da_average_group(gp, rows_total, r0, ng, cb, n);
        if (shared)
            da_entmax_grad(ws + ph_off, gp, rows_total, r0, ng, cb, n, alpha,
                           scale1 / (real)ng);
        else
            for (int x = 0; x < ng; x++)
                da_entmax_grad(ws + ph_off, gp, rows_total, r0 + x, 1, cb, n, alpha, scale1);
    }
    __global const float *kbar = ws + kbar_off + bh * num_blocks * d;
    for (int x = 0; x < ng; x++) {
        const long r = r0 + x, hq = h * group + (rr0 + x) % group;
        __global const float *dqw = ws + dq_off + r * d;
        const long base = da_off(dqs, b, hq, i);
        for (int c = 0; c < d; c++) {
            float a = dqw[c];
            for (long cc = 0; cc < n && grads; cc++) {
                const float dz = gp[(cb + cc) * rows_total + r];
                if (dz != 0.0f)
                    a += dz * kbar[(cb + cc) * d + c];
            }
            STORE(dq, base + c * dqs.s3, a);
        }
    }
}

/* dk and dv of DA_KT tokens of one block per work-group. The rows that keep
 * the block, or send it a stage-1 gradient (a candidate the flat prior
 * drops can still have dz != 0), are gathered DA_KT at a time (in row
 * order, so sums are reproducible) with their q and dO staged in local
 * memory. The summary's gradient dkbar = sum dz q goes to each token
 * through its pooling weight w_t: dk_t += w_t dkbar + r_t h / sqrt(D) with
 * r_t = w_t (k_t - kbar) . dkbar (h given; r_t also into RT for dh). */
__kernel __attribute__((reqd_work_group_size(DA_KT, 1, 1))) void
da_bwd_dkdv(__global const elem *q, long4 qs, __global const elem *k, long4 ks,
            __global const elem *v, long4 vs, __global const elem *dout, long4 dos,
            __global const float *lse, __global elem *dk, long4 dks, __global elem *dv,
            long4 dvs, __global const float *hv, long4 hs, int heads_kv, int group, long qoff,
            long len_q, long len_k, long num_blocks, int8 lay, int d, float scale,
            int stage1_grad, __global float *ws, long w_off, long gp_off, long dl_off,
            long kbar_off, long pool_off, long rt_off, long rows_total)
{
    __local float4 qt4[DA_KT * DA_D4], dt4[DA_KT * DA_D4];
    __local float row_lse[DA_KT], row_dl[DA_KT], row_w[DA_KT], row_dz[DA_KT];
    __local long row_pos[DA_KT];
    __local int kept[DA_KT], flag[DA_KT];
    __local int count;
    const int lid = get_local_id(0);
    const long s = lay.s1, subs = (s + DA_KT - 1) / DA_KT;
    const long j = get_group_id(0) / subs, sub = get_group_id(0) % subs;
    const long bh = get_group_id(1), b = bh / heads_kv, h = bh % heads_kv;
    const long first = j * s, size = min(s, len_k - first);
    const long tok = first + sub * DA_KT + lid;
    const int valid = sub * DA_KT + lid < size;
    __global const float *w = ws + w_off;
    __global const float *gp = ws + gp_off;

    float4 kr[DA_D4], vr[DA_D4], dka[DA_D4], dva[DA_D4], dkb[DA_D4];
    const long kb = valid ? da_off(ks, b, h, tok) : 0, vb = valid ? da_off(vs, b, h, tok) : 0;
    for (int c4 = 0; c4 < DA_D4; c4++) {
        float x[4], y[4];
        for (int e = 0; e < 4; e++) {
            const int c = 4 * c4 + e;
            x[e] = valid && c < d ? LOAD(k, kb + c * ks.s3) : 0.0f;
            y[e] = valid && c < d ? LOAD(v, vb + c * vs.s3) : 0.0f;
        }
        kr[c4] = (float4)(x[0], x[1], x[2], x[3]);
        vr[c4] = (float4)(y[0], y[1], y[2], y[3]);
        dka[c4] = dva[c4] = dkb[c4] = (float4)(0.0f);
    }
    /* Causal rows before the block's first token cannot see it. */
    const long i_start = lay.s0 ? clamp(first - qoff, 0L, len_q) : 0;
    const long nrows = len_q * group, row_base = bh * len_q * group;
    for (long rr0 = i_start * group; rr0 < nrows; rr0 += DA_KT) {
        barrier(CLK_LOCAL_MEM_FENCE);
        const long rr = rr0 + lid;
        int mine = 0;
        if (rr < nrows) {
            const long at = j * rows_total + row_base + rr;
            const da_rows L = da_row_layout(lay, rr / group + qoff, len_k);
            const int cand = j >= L.cand_begin && j < L.cand_end;
            mine = w[at] != 0.0f || (stage1_grad && cand && gp[at] != 0.0f);
        }
        flag[lid] = mine;
        barrier(CLK_LOCAL_MEM_FENCE);
        if (lid == 0) {
            int n = 0;
            for (int x = 0; x < DA_KT; x++)
                if (flag[x])
                    kept[n++] = x;
            count = n;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        const int n = count;
        /* Stage the gathered rows: q, dO and their scalars. */
        DA_SPREAD_BY(e, n * DA_DPAD, DA_KT) {
            const int x = e / DA_DPAD, c = e % DA_DPAD;
            const long rk = rr0 + kept[x], i = rk / group, hq = h * group + rk % group;
            float qv = 0.0f, dv0 = 0.0f;
            if (c < d) {
                qv = LOAD(q, da_off(qs, b, hq, i) + c * qs.s3);
                dv0 = LOAD(dout, da_off(dos, b, hq, i) + c * dos.s3);
            }
            ((__local float *)qt4)[e] = qv;
            ((__local float *)dt4)[e] = dv0;
        }
        if (lid < n) {
            const long rk = rr0 + kept[lid], i = rk / group, hq = h * group + rk % group;
            const long r = row_base + rk;
            const da_rows L = da_row_layout(lay, i + qoff, len_k);
            const int cand = j >= L.cand_begin && j < L.cand_end;
            row_lse[lid] = lse[(b * heads_kv * group + hq) * len_q + i];
            row_dl[lid] = ws[dl_off + r];
            row_w[lid] = w[j * rows_total + r];
            row_dz[lid] = stage1_grad && cand ? gp[j * rows_total + r] : 0.0f;
            row_pos[lid] = L.visible_end;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int x = 0; x < n && valid; x++) {
            const float dz = row_dz[x];
            float dlq = 0.0f, prob = 0.0f;
            if (row_w[x] != 0.0f && tok < row_pos[x]) {
                float4 a = (float4)(0.0f), p = (float4)(0.0f);
                for (int c = 0; c < DA_D4; c++) {
                    a += qt4[x * DA_D4 + c] * kr[c];
                    p += dt4[x * DA_D4 + c] * vr[c];
                }
                const float e = exp(scale * (a.x + a.y + a.z + a.w) - row_lse[x]);
                prob = e * row_w[x];
                dlq = scale * prob * (p.x + p.y + p.z + p.w - row_dl[x]);
            }
            for (int c = 0; c < DA_D4; c++) {
                dka[c] += dlq * qt4[x * DA_D4 + c];
                dkb[c] += dz * qt4[x * DA_D4 + c];
                dva[c] += prob * dt4[x * DA_D4 + c];
            }
        }
    }
    if (!valid)
        return;
    const float wt = hv ? ws[pool_off + bh * len_k + tok] : 1.0f / (float)size;
    float rt = 0.0f;
    if (hv) {
        __global const float *kbar = ws + kbar_off + (bh * num_blocks + j) * d;
        float4 dot = (float4)(0.0f);
        for (int c4 = 0; c4 < DA_D4; c4++) {
            const float4 kb4 = (float4)(4 * c4 < d ? kbar[4 * c4] : 0.0f,
                                        4 * c4 + 1 < d ? kbar[4 * c4 + 1] : 0.0f,
                                        4 * c4 + 2 < d ? kbar[4 * c4 + 2] : 0.0f,
                                        4 * c4 + 3 < d ? kbar[4 * c4 + 3] : 0.0f);
            dot += (kr[c4] - kb4) * dkb[c4];
        }
        rt = wt * (dot.x + dot.y + dot.z + dot.w);
        ws[rt_off + bh * len_k + tok] = rt;
    }
    const float rh = rt / sqrt((float)d);
    const long kob = da_off(dks, b, h, tok), vob = da_off(dvs, b, h, tok);
    for (int c4 = 0; c4 < DA_D4; c4++) {
        const float4 g = dka[c4] + wt * dkb[c4];
        const float x[4] = {g.x, g.y, g.z, g.w};
        const float y[4] = {dva[c4].x, dva[c4].y, dva[c4].z, dva[c4].w};
        for (int e = 0; e < 4; e++) {
            const int c = 4 * c4 + e;
            if (c < d) {
                STORE(dk, kob + c * dks.s3, hv ? x[e] + rh * hv[h * hs.s1 + c * hs.s3] : x[e]);
                STORE(dv, vob + c * dvs.s3, y[e]);
            }
        }
    }
}
