/* SPDX-License-Identifier: MIT */
/* Backward of a call (SPEC.md, "Backward"), portable kernels, once the block
 * keys and stage 1 ran again into the workspace:
 *   rows kernel  a thread block per (query row, KV head) with the group's G
 *                heads: Dl, the stage-2 part of dq into ws.dq_s2 and the
 *                prior gradients of the read candidates into ws.dz (the
 *                tensor-core nv/nv_backward_dq.cu does the same);
 *   then gpu_backward_stage1.cu's kernel: stage 1's backward, dq, and the
 *                touch masks;
 *   kv kernel    a thread block per 64 keys of a block: dk and dv summed
 *                over the (row, head) pairs of the tiles (64 pairs of a KV
 *                head, as stage 2's packed tiles) that touch the block, in
 *                row order, so no atomics and reproducible sums;
 *                the block key's gradient sum dz q reaches dk through the
 *                pooling weights (and r_t for dh);
 *   dh kernels   r_t k_t summed in fixed-size chunks, then the chunks in
 *                order. */
#include "gpu_backward.cuh"

namespace
{

constexpr int kRowThreads = 256;
constexpr int kKvTokens = 64; /* keys of one kv thread block */
constexpr int kKvLanes = 4;   /* threads that share one key */
constexpr int kKvThreads = kKvTokens * kKvLanes;

__global__ void __launch_bounds__(kRowThreads)
    bwd_rows_kernel(dagpu_params p, dashattn_tensor q, dashattn_tensor k, dashattn_tensor v,
                    dashattn_tensor o, dashattn_tensor dout, const float *lse, dagpu_backward_ws ws,
                    int64_t C)
{
    extern __shared__ float smem[];
    const dagpu_bwd_rows_smem L = dagpu_bwd_rows_layout(&p, C);
    const int64_t D = p.head_dim, M = p.num_blocks, G = p.group_size, S = p.block_size;
    const int64_t Dp = D + 1;
    const int64_t i = p.len_q - 1 - (int64_t)blockIdx.x; /* the longest rows first */
    const int64_t bh = blockIdx.y, b = bh / p.heads_kv, kvh = bh % p.heads_kv;
    float *qs = smem + L.q, *dos = smem + L.dout, *dqs = smem + L.dq;
    float *kt = smem + L.k, *vt = smem + L.v, *dls = smem + L.dl, *edss = smem + L.eds;
    float *l2pi = smem + L.l2pi;
    float *lse2 = smem + L.lse2, *delta = smem + L.delta, *gacc = smem + L.gacc;
    int *list = reinterpret_cast<int *>(smem + L.list);
    int *count = reinterpret_cast<int *>(smem + L.count);
    dagpu_row_param *rps = reinterpret_cast<dagpu_row_param *>(smem + L.rp);
    const int tid = threadIdx.x, nt = blockDim.x;
    const int lane = da_lane<DA_WARP>(), warp = da_warp_id<DA_WARP>(), warps = da_warps<DA_WARP>();
    const da_rows lr = da_row_layout(p, i + p.query_offset, p.len_k);
    const int64_t nvis = min(M, (lr.visible_end + S - 1) / S);
    const int64_t cb = lr.cand_begin, ce = lr.cand_end;
    const float *kbar = ws.fwd.kbar + bh * M * D;
    const int64_t l2_stride = p.prior_table ? 0 : M;
    const bool grads = ws.dz != nullptr && ce > cb;

    for (int64_t x = tid; x < G * D; x += nt) {
        const int64_t h = kvh * G + x / D, d = x % D;
        qs[x] = da_load(q.data, q.dtype, da_offset(q, b, h, i, d));
        dos[x] = da_load(dout.data, dout.dtype, da_offset(dout, b, h, i, d));
        dqs[x] = 0.0f;
    }
    if (tid < G) {
        const int64_t row = (b * p.heads_q + kvh * G + tid) * p.len_q + i;
        rps[tid] = ws.fwd.rows[row];
        lse2[tid] = lse[row] * DA_LOG2E;
        gacc[tid] = 0.0f;
    }
    for (int64_t g = warp; g < G; g += warps) {
        const int64_t h = kvh * G + g;
        float acc = 0.0f;
        for (int64_t d = lane; d < D; d += DA_WARP)
            acc += da_load(dout.data, dout.dtype, da_offset(dout, b, h, i, d)) *
                   da_load(o.data, o.dtype, da_offset(o, b, h, i, d));
        acc = da_warp_sum<DA_WARP>(acc);
        if (lane == 0) {
            delta[g] = acc;
            ws.delta[(b * p.heads_q + h) * p.len_q + i] = acc;
        }
    }
    __syncthreads();

    /* The log2 prior of every visible block, as stage 2 gave it; the prior
     * gradient slots of the candidates start at 0. */
    const int64_t H1 = p.prior_table ? 1 : G;
    for (int64_t x = tid; x < H1 * nvis; x += nt) {
        const int64_t g = x / nvis, j = x % nvis;
        float l2;
        if (da_forced(lr, j))
            l2 = 0.0f;
        else if (p.prior_table)
            l2 = ws.fwd.prior[(bh * p.len_q + i) * M + j];
        else
            l2 = da_candidate_log2(p, rps[g],
                                   da_block_score(qs + g * D, kbar + j * D, D, p.stage1_scale));
        l2pi[g * M + j] = l2;
        if (grads && j >= cb && j < ce)
            for (int64_t gg = p.prior_table ? 0 : g; gg < (p.prior_table ? G : g + 1); gg++)
                *dz_slot(p, ws, bh, j, i, gg) = 0.0f;
    }
    __syncthreads();
    if (warp == 0) {
        int n = 0;
        for (int64_t base = 0; base < nvis; base += DA_WARP) {
            const int64_t j = base + lane;
            bool keep = false;
            for (int64_t g = 0; g < H1 && j < nvis; g++)
                keep = keep || !(l2pi[g * M + j] == -DA_INF_F);
            const unsigned ballot = da_ballot<DA_WARP>(keep);
            if (keep)
                list[n + __popc(ballot & ((1u << lane) - 1u))] = (int)j;
            n += __popc(ballot);
        }
        if (lane == 0)
            *count = n;
    }
    __syncthreads();

    /* Stage 2 again over the read blocks, a chunk of keys at a time. */
    const int kept = *count;
    const float scale2 = p.scale * DA_LOG2E;
    for (int x = 0; x < kept; x++) {
        const int64_t j = list[x], first = j * S;
        const int64_t end = min(first + S, lr.visible_end);
        const bool cand = !da_forced(lr, j);
        for (int64_t t0 = first; t0 < end; t0 += C) {
            const int64_t n = min(C, end - t0);
            for (int64_t e = tid; e < n * D; e += nt) {
                const int64_t t = e / D, d = e % D;
                kt[t * Dp + d] = da_load(k.data, k.dtype, da_offset(k, b, kvh, t0 + t, d));
                vt[t * Dp + d] = da_load(v.data, v.dtype, da_offset(v, b, kvh, t0 + t, d));
            }
            __syncthreads();
            for (int64_t e = tid; e < G * C; e += nt) {
                const int64_t g = e / C, t = e % C;
                const float l2 = l2pi[g * l2_stride + j];
                float dl = 0.0f, eds = 0.0f;
                if (t < n && !(l2 == -DA_INF_F)) {
                    float s = 0.0f, dp = 0.0f;
                    for (int64_t d = 0; d < D; d++) {
                        s = fmaf(qs[g * D + d], kt[t * Dp + d], s);
                        dp = fmaf(dos[g * D + d], vt[t * Dp + d], dp);
                    }
                    const float ee = exp2f(s * scale2 - lse2[g]), ds = dp - delta[g];
                    dl = ee * exp2f(l2) * ds;
                    eds = ee * ds;
                }
                dls[e] = dl;
                edss[e] = eds;
            }
            __syncthreads();
            for (int64_t e = tid; e < G * D; e += nt) {
                const int64_t g = e / D, d = e % D;
                float acc = dqs[e];
                for (int64_t t = 0; t < n; t++)
                    acc = fmaf(p.scale * dls[g * C + t], kt[t * Dp + d], acc);
                dqs[e] = acc;
            }
            if (cand)
                for (int64_t g = warp; g < G; g += warps) {
                    float s = 0.0f;
                    for (int64_t t = lane; t < C; t += DA_WARP)
                        s += edss[g * C + t];
                    s = da_warp_sum<DA_WARP>(s);
                    if (lane == 0)
                        gacc[g] += s;
                }
            __syncthreads();
        }
        if (tid < G) {
            if (cand && grads && !(l2pi[tid * l2_stride + j] == -DA_INF_F))
                *dz_slot(p, ws, bh, j, i, tid) = gacc[tid];
            gacc[tid] = 0.0f;
        }
    }
    __syncthreads();

    for (int64_t x = tid; x < G * D; x += nt)
        ws.dq_s2[((b * p.heads_q + kvh * G + x / D) * p.len_q + i) * D + x % D] = dqs[x];
}

/* Sum and maximum over a thread block; every thread gets the result. */
template <typename T, typename Op> static __device__ T block_reduce(T x, T *scratch, Op op)
{
    const int lane = da_lane<DA_WARP>(), warp = da_warp_id<DA_WARP>(), warps = da_warps<DA_WARP>();
    for (int o = DA_WARP / 2; o > 0; o >>= 1)
        x = op(x, da_shfl_xor<DA_WARP>(x, o));
    __syncthreads(); /* scratch may still be read from an earlier call */
    if (lane == 0)
        scratch[warp] = x;
    __syncthreads();
    T r = scratch[0];
    for (int w = 1; w < warps; w++)
        r = op(r, scratch[w]);
    return r;
}

/* One thread block: keys [j S + sub 64, + 64) of block j of KV head bh %
 * Hkv. Thread 4 t + l owns key t's dimensions l, l + 4, ... */
template <int DPT>
__global__ void __launch_bounds__(kKvThreads)
    bwd_kv_kernel(dagpu_params p, dashattn_tensor q, dashattn_tensor k, dashattn_tensor v,
                  dashattn_tensor dout, const float *lse, dashattn_tensor summary,
                  dashattn_tensor dk, dashattn_tensor dv, dagpu_backward_ws ws, int64_t subs)
{
    extern __shared__ float smem[];
    constexpr int NB = DAGPU_BWD_PAIRS;
    __shared__ float pl2[NB], plse2[NB], pdelta[NB], pdz[NB];
    __shared__ long long pvis[NB];
    __shared__ float red[32];
    const int64_t D = p.head_dim, M = p.num_blocks, G = p.group_size, S = p.block_size;
    float *qs = smem, *ds = smem + NB * D, *dkb = smem + 2 * NB * D;
    const int64_t j = blockIdx.x / subs, sub = blockIdx.x % subs;
    const int64_t bh = blockIdx.y, b = bh / p.heads_kv, kvh = bh % p.heads_kv;
    const int tid = threadIdx.x, l = tid % kKvLanes, t = tid / kKvLanes;
    const int64_t first = j * S, size = min(S, p.len_k - first);
    const int64_t tok = first + sub * kKvTokens + t;
    const bool valid = sub * kKvTokens + t < size;
    const float *kbar = ws.fwd.kbar + (bh * M + j) * D;

    float kr[DPT], vr[DPT], dka[DPT], dva[DPT];
#pragma unroll
    for (int e = 0; e < DPT; e++) {
        const int64_t d = (int64_t)e * kKvLanes + l;
        const bool in = valid && d < D;
        kr[e] = in ? da_load(k.data, k.dtype, da_offset(k, b, kvh, tok, d)) : 0.0f;
        vr[e] = in ? da_load(v.data, v.dtype, da_offset(v, b, kvh, tok, d)) : 0.0f;
        dka[e] = dva[e] = 0.0f;
    }
    for (int64_t d = tid; d < D; d += kKvThreads)
        dkb[d] = 0.0f;

    const float scale2 = p.scale * DA_LOG2E;
    const int64_t x_start = first_pair(p, first);
    for (int64_t pt = x_start / DAGPU_TILE_ROWS; pt < ws.pair_tiles; pt++) {
        if (!touched(ws, bh, pt, j))
            continue;
        const int64_t x0 = max(pt * DAGPU_TILE_ROWS, x_start);
        const int64_t pairs = min(pt * DAGPU_TILE_ROWS + DAGPU_TILE_ROWS, p.len_q * G) - x0;
        for (int64_t pb = 0; pb < pairs; pb += NB) {
            const int np = (int)min((int64_t)NB, pairs - pb);
            __syncthreads(); /* the batch before is done with the staged pairs */
            for (int64_t e = tid; e < np * D; e += kKvThreads) {
                const int64_t x = x0 + pb + e / D, d = e % D;
                const int64_t i = x / G, h = kvh * G + x % G;
                qs[e] = da_load(q.data, q.dtype, da_offset(q, b, h, i, d));
                ds[e] = da_load(dout.data, dout.dtype, da_offset(dout, b, h, i, d));
            }
            __syncthreads();
            if (tid < np) {
                const int64_t x = x0 + pb + tid, i = x / G, g = x % G, h = kvh * G + g;
                const int64_t row = (b * p.heads_q + h) * p.len_q + i;
                const da_rows lr = da_row_layout(p, i + p.query_offset, p.len_k);
                const bool cand = j >= lr.cand_begin && j < lr.cand_end;
                float l2 = -DA_INF_F;
                if (first < lr.visible_end) {
                    if (da_forced(lr, j))
                        l2 = 0.0f;
                    else if (p.prior_table)
                        l2 = ws.fwd.prior[(bh * p.len_q + i) * M + j];
                    else
                        l2 = da_candidate_log2(
                            p, ws.fwd.rows[row],
                            da_block_score(qs + tid * D, kbar, D, p.stage1_scale));
                }
                pl2[tid] = l2;
                plse2[tid] = lse[row] * DA_LOG2E;
                pdelta[tid] = ws.delta[row];
                pdz[tid] = ws.dz && cand ? *dz_slot(p, ws, bh, j, i, g) : 0.0f;
                pvis[tid] = lr.visible_end;
            }
            __syncthreads();
            for (int x = 0; x < np; x++) {
                const float l2 = pl2[x];
                if (!(l2 == -DA_INF_F)) {
                    float s = 0.0f, dp = 0.0f;
#pragma unroll
                    for (int e = 0; e < DPT; e++) {
                        const int64_t d = (int64_t)e * kKvLanes + l;
                        if (d < D) {
                            s = fmaf(qs[x * D + d], kr[e], s);
                            dp = fmaf(ds[x * D + d], vr[e], dp);
                        }
                    }
                    for (int o = 1; o < kKvLanes; o <<= 1) {
                        s += da_shfl_xor<DA_WARP>(s, o);
                        dp += da_shfl_xor<DA_WARP>(dp, o);
                    }
                    const bool in = valid && tok < pvis[x];
                    const float a = in ? exp2f(s * scale2 - plse2[x]) * exp2f(l2) : 0.0f;
                    const float dl = in ? p.scale * a * (dp - pdelta[x]) : 0.0f;
#pragma unroll
                    for (int e = 0; e < DPT; e++) {
                        const int64_t d = (int64_t)e * kKvLanes + l;
                        if (d < D) {
                            dka[e] = fmaf(dl, qs[x * D + d], dka[e]);
                            dva[e] = fmaf(a, ds[x * D + d], dva[e]);
                        }
                    }
                }
                const float dz = pdz[x];
                if (dz != 0.0f)
                    for (int64_t d = tid; d < D; d += kKvThreads)
                        dkb[d] = fmaf(dz, qs[x * D + d], dkb[d]);
            }
        }
    }
    __syncthreads();

    /* The block key's gradient into each key through its pooling weight:
     * softmax over the block of h . k / sqrt(D), or 1 / size. */
    const bool learned = summary.data != nullptr && ws.dz != nullptr;
    const float inv_sqrt_d = 1.0f / sqrtf((float)D);
    const float *hv =
        learned ? static_cast<const float *>(summary.data) + kvh * summary.strides[1] : nullptr;
    float wt = 1.0f / (float)size, rt = 0.0f;
    if (learned) {
        auto logit = [&](int64_t tt) {
            float acc = 0.0f;
            for (int64_t d = 0; d < D; d++)
                acc = fmaf(hv[d * summary.strides[3]],
                           da_load(k.data, k.dtype, da_offset(k, b, kvh, first + tt, d)), acc);
            return acc * inv_sqrt_d;
        };
        float top = -DA_INF_F;
        for (int64_t tt = tid; tt < size; tt += kKvThreads)
            top = fmaxf(top, logit(tt));
        top = block_reduce(top, red, [](float x, float y) { return fmaxf(x, y); });
        float total = 0.0f;
        for (int64_t tt = tid; tt < size; tt += kKvThreads)
            total += expf(logit(tt) - top);
        total = block_reduce(total, red, [](float x, float y) { return x + y; });
        float mine = 0.0f;
#pragma unroll
        for (int e = 0; e < DPT; e++) {
            const int64_t d = (int64_t)e * kKvLanes + l;
            if (d < D)
                mine = fmaf(hv[d * summary.strides[3]], kr[e], mine);
        }
        for (int o = 1; o < kKvLanes; o <<= 1)
            mine += da_shfl_xor<DA_WARP>(mine, o);
        wt = expf(mine * inv_sqrt_d - top) / total;
        /* In double: k - kbar cancels. */
        double dot = 0.0;
#pragma unroll
        for (int e = 0; e < DPT; e++) {
            const int64_t d = (int64_t)e * kKvLanes + l;
            if (d < D)
                dot += ((double)kr[e] - (double)kbar[d]) * (double)dkb[d];
        }
        for (int o = 1; o < kKvLanes; o <<= 1)
            dot += da_shfl_xor<DA_WARP>(dot, o);
        rt = (float)(dot * (double)wt * (double)inv_sqrt_d);
    }
    if (!valid)
        return;
#pragma unroll
    for (int e = 0; e < DPT; e++) {
        const int64_t d = (int64_t)e * kKvLanes + l;
        if (d < D) {
            float g = dka[e];
            if (ws.dz)
                g = fmaf(wt, dkb[d], g);
            if (learned)
                g = fmaf(rt, hv[d * summary.strides[3]], g);
            da_store(dk.data, dk.dtype, da_offset(dk, b, kvh, tok, d), g);
            da_store(dv.data, dv.dtype, da_offset(dv, b, kvh, tok, d), dva[e]);
        }
    }
    if (ws.rt && l == 0)
        ws.rt[bh * p.len_k + tok] = rt;
}

/* dh partial sums: chunk c of the keys of KV head kvh, every sequence. */
__global__ void bwd_dh_part_kernel(dagpu_params p, dashattn_tensor k, dagpu_backward_ws ws)
{
    const int64_t c = blockIdx.x, kvh = blockIdx.y, D = p.head_dim;
    const int64_t t0 = c * DAGPU_BWD_DH_CHUNK, t1 = min(t0 + DAGPU_BWD_DH_CHUNK, p.len_k);
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
        double acc = 0.0;
        for (int64_t b = 0; b < p.batch; b++) {
            const float *r = ws.rt + (b * p.heads_kv + kvh) * p.len_k;
            for (int64_t t = t0; t < t1; t++)
                acc += (double)r[t] * (double)da_load(k.data, k.dtype, da_offset(k, b, kvh, t, d));
        }
        ws.dh_part[(c * p.heads_kv + kvh) * D + d] = acc;
    }
}

/* dh from the partial sums in chunk order (zeros without them). */
__global__ void bwd_dh_sum_kernel(dagpu_params p, dashattn_tensor dh, dagpu_backward_ws ws,
                                  int parts)
{
    const int64_t kvh = blockIdx.x, D = p.head_dim;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
        double acc = 0.0;
        for (int64_t c = 0; parts && c < ws.dh_chunks; c++)
            acc += ws.dh_part[(c * p.heads_kv + kvh) * D + d];
        da_store(dh.data, dh.dtype, da_offset(dh, 0, kvh, 0, d), (float)acc);
    }
}

} // namespace

extern "C" dagpu_err dagpu_launch_backward_rows(const dagpu_params *p, const dashattn_tensor *q,
                                                const dashattn_tensor *k, const dashattn_tensor *v,
                                                const dashattn_tensor *out,
                                                const dashattn_tensor *dout, const float *lse,
                                                const dagpu_backward_ws *ws, int64_t chunk,
                                                void *stream)
{
    const size_t smem = dagpu_bwd_rows_smem_bytes(p, chunk);
    const dagpu_rt_error e = da_allow_smem(bwd_rows_kernel, smem);
    if (e != dagpu_rt_success)
        return (dagpu_err)e;
    const dim3 grid((unsigned)p->len_q, (unsigned)(p->batch * p->heads_kv));
    bwd_rows_kernel<<<grid, kRowThreads, smem, (dagpu_rt_stream)stream>>>(*p, *q, *k, *v, *out,
                                                                          *dout, lse, *ws, chunk);
    return (dagpu_err)dagpuGetLastError();
}

template <int DPT>
static dagpu_err launch_kv(const dagpu_params *p, const dashattn_tensor *q,
                           const dashattn_tensor *k, const dashattn_tensor *v,
                           const dashattn_tensor *dout, const float *lse,
                           const dashattn_tensor &summary, const dashattn_tensor *dk,
                           const dashattn_tensor *dv, const dagpu_backward_ws *ws, void *stream)
{
    const int64_t subs = (p->block_size + kKvTokens - 1) / kKvTokens;
    const size_t smem = (size_t)(2 * DAGPU_BWD_PAIRS + 1) * (size_t)p->head_dim * sizeof(float);
    const dim3 grid((unsigned)(p->num_blocks * subs), (unsigned)(p->batch * p->heads_kv));
    bwd_kv_kernel<DPT><<<grid, kKvThreads, smem, (dagpu_rt_stream)stream>>>(
        *p, *q, *k, *v, *dout, lse, summary, *dk, *dv, *ws, subs);
    return (dagpu_err)dagpuGetLastError();
}

extern "C" dagpu_err dagpu_launch_backward_kv(const dagpu_params *p, const dashattn_tensor *q,
                                              const dashattn_tensor *k, const dashattn_tensor *v,
                                              const dashattn_tensor *dout, const float *lse,
                                              const dashattn_tensor *summary,
                                              const dashattn_tensor *dk, const dashattn_tensor *dv,
                                              const dagpu_backward_ws *ws, void *stream)
{
    const dashattn_tensor h = summary_by_value(summary);
    if (p->head_dim <= 16 * kKvLanes)
        return launch_kv<16>(p, q, k, v, dout, lse, h, dk, dv, ws, stream);
    if (p->head_dim <= 32 * kKvLanes)
        return launch_kv<32>(p, q, k, v, dout, lse, h, dk, dv, ws, stream);
    return launch_kv<64>(p, q, k, v, dout, lse, h, dk, dv, ws, stream);
}

extern "C" dagpu_err dagpu_launch_backward_dh(const dagpu_params *p, const dashattn_tensor *k,
                                              const dashattn_tensor *summary,
                                              const dashattn_tensor *dh,
                                              const dagpu_backward_ws *ws, void *stream)
{
    const int parts = summary && ws->dz && ws->rt;
    if (parts) {
        const dim3 grid((unsigned)ws->dh_chunks, (unsigned)p->heads_kv);
        bwd_dh_part_kernel<<<grid, 256, 0, (dagpu_rt_stream)stream>>>(*p, *k, *ws);
        const dagpu_rt_error e = dagpuGetLastError();
        if (e != dagpu_rt_success)
            return (dagpu_err)e;
    }
    bwd_dh_sum_kernel<<<(unsigned)p->heads_kv, 256, 0, (dagpu_rt_stream)stream>>>(*p, *dh, *ws,
                                                                                  parts);
    return (dagpu_err)dagpuGetLastError();
}
