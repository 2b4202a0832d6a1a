/* SPDX-License-Identifier: MIT */
/* Learned block summaries (SPEC.md, "Block layout and block summaries"):
 * kbar = sum_t w_t k_t with w = softmax_t(h . k_t / sqrt(D)) over a block's
 * tokens, for the forward's block keys and the cache's, which must agree. */
#ifndef DASHATTN_GPU_SUMMARY_CUH
#define DASHATTN_GPU_SUMMARY_CUH

#include "gpu_device.cuh"

/* Tokens whose weights one step of the online softmax takes: one per lane of
 * the logical warp that normalises them. */
#define DA_SUMMARY_CHUNK DA_WARP
/* Dimensions one thread accumulates: D <= 256 over at least 64 threads. */
#define DA_SUMMARY_DIMS 4

/* The summary of `count` >= 1 tokens of KV head kvh, with h the f32
 * [1, Hkv, 1, D] tensor of learned vectors. load(t, d) reads key t, dimension
 * d of the block; store(d, x) receives the result. Called by every thread of
 * a block of 64 to 1024 threads (a multiple of 32), D <= 256. The weights
 * are formed chunk by chunk with a running maximum (online softmax), so any
 * block size works in fixed shared memory. */
template <typename Load, typename Store>
static __device__ void da_block_summary(const dashattn_tensor &h, int64_t kvh, int64_t D,
                                        int64_t count, Load load, Store store)
{
    __shared__ float hs[256], weight[DA_SUMMARY_CHUNK], shared_corr, shared_total;
    const int tid = threadIdx.x, lane = da_lane<DA_WARP>(), warp = da_warp_id<DA_WARP>();
    const int threads = (int)blockDim.x, warps = da_warps<DA_WARP>();
    const float inv_sqrt_d = 1.0f / sqrtf((float)D);
    const float *hv = static_cast<const float *>(h.data) + kvh * h.strides[1];
    for (int64_t d = tid; d < D; d += threads)
        hs[d] = hv[d * h.strides[3]];
    float acc[DA_SUMMARY_DIMS];
    for (int e = 0; e < DA_SUMMARY_DIMS; e++)
        acc[e] = 0.0f;
    /* Running maximum and denominator, kept by warp 0 (equal in its lanes). */
    float m = -DA_INF_F, total = 0.0f;
    __syncthreads();
    for (int64_t t0 = 0; t0 < count; t0 += DA_SUMMARY_CHUNK) {
        const int n = (int)min((int64_t)DA_SUMMARY_CHUNK, count - t0);
        for (int t = warp; t < n; t += warps) {
            float dot = 0.0f;
            for (int64_t d = lane; d < D; d += DA_WARP)
                dot = fmaf(hs[d], load(t0 + t, d), dot);
            dot = da_warp_sum<DA_WARP>(dot);
            if (lane == 0)
                weight[t] = dot * inv_sqrt_d;
        }
        __syncthreads();
        if (warp == 0) {
            const float x = lane < n ? weight[lane] : -DA_INF_F;
            const float m_new = fmaxf(m, da_warp_max<DA_WARP>(x));
            const float e = lane < n ? expf(x - m_new) : 0.0f;
            const float corr = expf(m - m_new); /* 0 on the first chunk */
            total = total * corr + da_warp_sum<DA_WARP>(e);
            m = m_new;
            weight[lane] = e;
            if (lane == 0)
                shared_corr = corr;
        }
        __syncthreads();
        const float corr = shared_corr;
        for (int e = 0; e < DA_SUMMARY_DIMS; e++) {
            const int64_t d = tid + (int64_t)e * threads;
            if (d < D) {
                float a = acc[e] * corr;
                for (int t = 0; t < n; t++)
                    a = fmaf(weight[t], load(t0 + t, d), a);
                acc[e] = a;
            }
        }
        __syncthreads(); /* weight is rewritten by the next chunk */
    }
    if (tid == 0)
        shared_total = total;
    __syncthreads();
    for (int e = 0; e < DA_SUMMARY_DIMS; e++) {
        const int64_t d = tid + (int64_t)e * threads;
        if (d < D)
            store(d, acc[e] / shared_total);
    }
}

#endif
