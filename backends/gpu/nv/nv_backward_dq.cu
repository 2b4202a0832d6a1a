/* SPDX-License-Identifier: MIT */
/* The backward's stage-2 part of dq on the tensor cores (mma.sync), for the
 * plans whose tiles are 64 (row, head) pairs of one KV head with stage 1's
 * prior table (shared and group-mean modes), 16-bit data, block size 64 and
 * head dimension 64 or 128: a thread block walks the blocks its tile reads
 * as the forward's stage 2 does, and per block S = Q K^T, dP = dO V^T,
 * dS = P (dP - Dl), dQ += dS K, with the prior gradients sum_t e (dP - Dl)
 * of the read candidates into ws.dz. Dl = dO . o comes first. dQ goes to
 * the f32 ws.dq_s2, which gpu_backward_stage1.cu's kernel completes with
 * the stage-1 part. */
#include "nv_kernels.h"
#include "nv_stage2_tile.cuh"

namespace
{

template <int D, typename T>
__global__ void __launch_bounds__(MMA_THREADS)
    bwd_dq_mma_kernel(dagpu_params p, dashattn_tensor q, dashattn_tensor k, dashattn_tensor v,
                      dashattn_tensor o, dashattn_tensor dout, const float *lse,
                      dagpu_backward_ws ws)
{
    extern __shared__ __align__(128) unsigned char smem[];
    constexpr int KSTEPS = D / 16, DTILES = D / 8;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, qd = lane & 3;
    const s2_tile t = s2_block_tile(p, ws.fwd, 1, 0);
    const uint32_t qtile = smem_addr(smem), otile = qtile + MMA_ROWS * D * 2;
    const uint32_t ktile[2] = {otile + MMA_ROWS * D * 2, otile + (MMA_ROWS + MMA_KEYS) * D * 2};
    const uint32_t vtile[2] = {otile + (MMA_ROWS + 2 * MMA_KEYS) * D * 2,
                               otile + (MMA_ROWS + 3 * MMA_KEYS) * D * 2};
    const T *kbase = static_cast<const T *>(k.data) + t.b * k.strides[0] + t.kvh * k.strides[1];
    const T *vbase = static_cast<const T *>(v.data) + t.b * v.strides[0] + t.kvh * v.strides[1];
    const int64_t M = p.num_blocks, bh = t.b * p.heads_kv + t.kvh;

    s2_load_queries<D, T, swz_layout<D>>(qtile, p, q, t, tid, MMA_THREADS);
    s2_load_queries<D, T, swz_layout<D>>(otile, p, dout, t, tid, MMA_THREADS);
    cp_async_commit();
    int j = s2_prefetch<D>(t, -1, ktile[0], vtile[0], kbase, vbase, k, v, p.len_k);
    row_state rs[2];
    s2_rows(p, ws.fwd, t, warp, lane, rs);
    float lse2[2], delta[2];
    cp_async_wait<1>();
    __syncthreads();
    /* Dl of the thread's two rows: each of the four lanes of a row takes
     * every fourth column. */
#pragma unroll
    for (int half = 0; half < 2; half++) {
        const int r = warp * 16 + (lane >> 2) + half * 8;
        const row_state &s = rs[half];
        const T *orow = static_cast<const T *>(o.data) + t.b * o.strides[0] +
                        s.head * o.strides[1] + s.i * o.strides[2];
        float acc = 0.0f;
        for (int d = qd; d < D && s.valid; d += 4)
            acc = fmaf(tile_value<D, T>(otile, r, d), (float)orow[d], acc);
        acc += __shfl_xor_sync(0xffffffffu, acc, 1);
        acc += __shfl_xor_sync(0xffffffffu, acc, 2);
        delta[half] = acc;
        const int64_t row = (t.b * p.heads_q + s.head) * p.len_q + s.i;
        lse2[half] = s.valid ? lse[row] * DA_LOG2E : 0.0f;
        if (s.valid && qd == 0)
            ws.delta[row] = acc;
    }
    uint32_t qf[KSTEPS][4], of[KSTEPS][4];
#pragma unroll
    for (int kk = 0; kk < KSTEPS; kk++) {
        const int r = warp * 16 + (lane & 15), c = kk * 16 + (lane >> 4) * 8;
        ldmatrix_x4(qf[kk], qtile + swz<D>(r, c));
        ldmatrix_x4(of[kk], otile + swz<D>(r, c));
    }

    float dq[DTILES][4];
#pragma unroll
    for (int n = 0; n < DTILES; n++)
        dq[n][0] = dq[n][1] = dq[n][2] = dq[n][3] = 0.0f;
    const float scale2 = p.scale * DA_LOG2E;
    int buf = 0;
    while (j >= 0) {
        float table_prior[2];
        s2_table_priors(p, rs, j, table_prior);
        const int jn =
            s2_prefetch<D>(t, j, ktile[buf ^ 1], vtile[buf ^ 1], kbase, vbase, k, v, p.len_k);
        float prior[2];
        int vis[2];
        for (int half = 0; half < 2; half++)
            block_prior(p, rs[half], j, 0.0f, table_prior[half], prior[half], vis[half]);
        const bool active = __any_sync(0xffffffffu, vis[0] > 0 || vis[1] > 0);
        cp_async_wait<1>();
        __syncthreads();
        if (active) {
            float s[8][4], dp[8][4];
            tile_scores<D, T>(s, qf, ktile[buf], lane);
            tile_scores<D, T>(dp, of, vtile[buf], lane);
            float g[2] = {0.0f, 0.0f};
#pragma unroll
            for (int n = 0; n < 8; n++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int half = e >> 1, col = n * 8 + qd * 2 + (e & 1);
                    float dl = 0.0f;
                    if (col < vis[half]) {
                        const float x = s[n][e] * scale2 - lse2[half];
                        const float ds = dp[n][e] - delta[half];
                        dl = exp2f(x + prior[half]) * ds;
                        g[half] = fmaf(exp2f(x), ds, g[half]);
                    }
                    s[n][e] = p.scale * dl;
                }
            tile_pv<D, T, 8>(dq, s, ktile[buf], lane);
#pragma unroll
            for (int half = 0; half < 2; half++) {
                g[half] += __shfl_xor_sync(0xffffffffu, g[half], 1);
                g[half] += __shfl_xor_sync(0xffffffffu, g[half], 2);
                const row_state &r = rs[half];
                if (ws.dz && qd == 0 && vis[half] > 0 && j >= r.lr.cand_begin && j < r.lr.cand_end)
                    ws.dz[(bh * M + j) * p.len_q * p.group_size + t.row0 + warp * 16 + (lane >> 2) +
                          half * 8] = g[half];
            }
        }
        __syncthreads(); /* the buffer is refilled by the next iteration */
        buf ^= 1;
        j = jn;
    }
#pragma unroll
    for (int half = 0; half < 2; half++) {
        if (!rs[half].valid)
            continue;
        float *row = ws.dq_s2 + ((t.b * p.heads_q + rs[half].head) * p.len_q + rs[half].i) * D;
#pragma unroll
        for (int n = 0; n < DTILES; n++)
            *reinterpret_cast<float2 *>(row + n * 8 + qd * 2) =
                make_float2(dq[n][2 * half], dq[n][2 * half + 1]);
    }
}

template <int D> static constexpr size_t dq_smem()
{
    return (size_t)(2 * MMA_ROWS + 4 * MMA_KEYS) * D * 2;
}

template <int D, typename T>
static dagpu_err launch(const dagpu_params *p, const dashattn_tensor *q, const dashattn_tensor *k,
                        const dashattn_tensor *v, const dashattn_tensor *out,
                        const dashattn_tensor *dout, const float *lse, const dagpu_backward_ws *ws,
                        void *stream)
{
    const dagpu_rt_error e = da_allow_smem(bwd_dq_mma_kernel<D, T>, dq_smem<D>());
    if (e != dagpu_rt_success)
        return (dagpu_err)e;
    bwd_dq_mma_kernel<D, T>
        <<<s2_grid(p, &ws->fwd, 1), MMA_THREADS, dq_smem<D>(), (cudaStream_t)stream>>>(
            *p, *q, *k, *v, *out, *dout, lse, *ws);
    return (dagpu_err)dagpuGetLastError();
}

} // namespace

extern "C" int dagpu_nv_backward_dq_ok(const dagpu_params *p, size_t smem_limit)
{
    return dagpu_nv_backward_shape_ok(p) && dagpu_tiles_packed(p) &&
           (p->head_dim == 64 ? dq_smem<64>() : dq_smem<128>()) <= smem_limit;
}

extern "C" dagpu_err dagpu_nv_launch_backward_dq(const dagpu_params *p, const dashattn_tensor *q,
                                                 const dashattn_tensor *k, const dashattn_tensor *v,
                                                 const dashattn_tensor *out,
                                                 const dashattn_tensor *dout, const float *lse,
                                                 const dagpu_backward_ws *ws, void *stream)
{
    const bool bf16 = p->dtype == DASHATTN_BF16;
    if (p->head_dim == 64)
        return bf16 ? launch<64, __nv_bfloat16>(p, q, k, v, out, dout, lse, ws, stream)
                    : launch<64, __half>(p, q, k, v, out, dout, lse, ws, stream);
    return bf16 ? launch<128, __nv_bfloat16>(p, q, k, v, out, dout, lse, ws, stream)
                : launch<128, __half>(p, q, k, v, out, dout, lse, ws, stream);
}
