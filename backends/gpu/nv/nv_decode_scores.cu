/* SPDX-License-Identifier: MIT */
/* Decode stage-1 scores on the tensor cores (16-bit q, head dimension 64 or
 * 128, at most 16 query heads per KV head, f32 or the cache's 16-bit block
 * keys), in place of the portable scores kernel. Scoring is a small matrix
 * product per (sequence, KV head): the group's heads times the block keys.
 * On CUDA cores it cost some 20 instructions per key and head at ten cycles
 * each, so it was bound by issue, not memory (Nsight Compute, H200: 2.8
 * thousand instructions per warp, a quarter of the DRAM rate at batch 16,
 * 14-20 us at batch 1). With tf32 mma.sync (m16n8k8) a warp scores 8 keys
 * for all 16 heads in D / 8 instructions, and only the loads remain.
 *
 * The heads are the 16 rows of the A tile, 8 keys the columns of B. The
 * order in which the head dimension is summed is free, so each lane's
 * share of it is the elements it loads itself, contiguous vectors of the
 * key: lane (g, t) loads key g's elements t*V .. t*V + V - 1 of every 4V,
 * and the query elements at the same places of heads g and g + 8. The keys
 * come through cp.async into the lane's own shared memory: with register
 * loads, ptxas interleaved each load with the products that use it, two or
 * three in flight instead of all of the warp's keys. No shuffles but one
 * ballot.
 *
 * Accuracy: 16-bit query and block-key values are exact in tf32. An f32
 * block key is split into a tf32 high part and a tf32 remainder, two
 * products, so each key carries 22 significant bits (the rounding of f32
 * summation is what remains, as in the portable kernel). */
#include "nv_kernels.h"
#include "nv_mma.cuh"
#include "../gpu_cache.cuh"

namespace
{

#define SCORE_WARPS 2
/* Groups of 8 keys each warp scores, their loads all in flight at once. */
#define SCORE_GROUPS 2
#define SCORE_CHUNK (SCORE_WARPS * SCORE_GROUPS * 8)

/* The float value of element e of a 16-byte vector of T. */
template <typename T> static __device__ __forceinline__ float element(const uint4 &v, int e);
template <> __device__ __forceinline__ float element<float>(const uint4 &v, int e)
{
    const uint32_t w[4] = {v.x, v.y, v.z, v.w};
    return __uint_as_float(w[e]);
}
template <> __device__ __forceinline__ float element<__nv_bfloat16>(const uint4 &v, int e)
{
    const uint32_t w[4] = {v.x, v.y, v.z, v.w};
    const uint32_t h = (e & 1) ? w[e >> 1] >> 16 : w[e >> 1] & 0xffffu;
    return __uint_as_float(h << 16);
}
template <> __device__ __forceinline__ float element<__half>(const uint4 &v, int e)
{
    const uint32_t w[4] = {v.x, v.y, v.z, v.w};
    const uint16_t h = (uint16_t)((e & 1) ? w[e >> 1] >> 16 : w[e >> 1] & 0xffffu);
    return __half2float(__ushort_as_half(h));
}

/* V elements of a 16-bit row starting at p (V 4 or 8, aligned) as a
 * 16-byte vector, the upper half zero for V 4. */
template <int V> static __device__ __forceinline__ uint4 load16(const void *p)
{
    if constexpr (V == 8)
        return *static_cast<const uint4 *>(p);
    const uint2 h = *static_cast<const uint2 *>(p);
    return make_uint4(h.x, h.y, 0u, 0u);
}

template <int D, typename QT, typename KT>
__global__ void __launch_bounds__(SCORE_WARPS * 32)
    decode_scores_mma_kernel(dagpu_params p, dashattn_tensor q, dashattn_kv_cache c,
                             dagpu_decode_ws ws)
{
    /* Elements per 16-byte key vector, the lane's elements of a key, its
     * vectors, and the mma steps over them. */
    constexpr int V = 16 / (int)sizeof(KT), PER = D / 4, LOADS = PER / V, STEPS = PER / 2;
    constexpr bool SPLIT = sizeof(KT) == 4;
    da_wait_previous();
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    const int64_t kvh = blockIdx.y, b = blockIdx.z, M = p.num_blocks;
    const int G = (int)p.group_size;
    const int64_t len = c.seq_lens[b];
    if (len < 1 || len > p.len_k)
        return; /* decode_union_kernel reports it */
    const da_rows lr = da_row_layout(p, len - 1, len);
    const int64_t w0 = (int64_t)blockIdx.x * SCORE_CHUNK + warp * (SCORE_GROUPS * 8);
    if (max(w0, lr.cand_begin) >= min(w0 + SCORE_GROUPS * 8, lr.cand_end))
        return; /* the whole warp: no candidate among its keys */

    /* Query elements at the lane's places of heads g and g + 8 (rows past
     * G are zero). */
    uint32_t qa[2][PER];
    for (int half = 0; half < 2; half++) {
        const int row = g + 8 * half;
        const QT *qrow = static_cast<const QT *>(q.data) + b * q.strides[0] +
                         (kvh * G + min(row, G - 1)) * q.strides[1];
#pragma unroll
        for (int i = 0; i < LOADS; i++) {
            const uint4 v = row < G ? load16<V>(qrow + i * 4 * V + t * V) : make_uint4(0, 0, 0, 0);
#pragma unroll
            for (int e = 0; e < V; e++)
                qa[half][i * V + e] = __float_as_uint(element<QT>(v, e));
        }
    }

    const KT *keys = static_cast<const KT *>(c.block_keys.data);
    /* [warp][group][vector][lane]: each instruction's 32 lanes read 512
     * contiguous bytes, no bank conflicts. */
    __shared__ uint4 staged[SCORE_WARPS][SCORE_GROUPS][LOADS][32];
    bool ok[SCORE_GROUPS];
#pragma unroll
    for (int k = 0; k < SCORE_GROUPS; k++) {
        const int64_t j = w0 + 8 * k + g;
        ok[k] = j >= lr.cand_begin && j < lr.cand_end;
        if (ok[k] && c.layout == DASHATTN_CACHE_PAGED)
            ok[k] = da_page_of(c, b, j) >= 0;
        /* Where a key is not read, cp.async fills zeros. */
        const KT *row = ok[k] ? keys + da_block_key_offset(c, b, kvh, j, 0) : keys;
#pragma unroll
        for (int i = 0; i < LOADS; i++)
            cp_async16(smem_addr(&staged[warp][k][i][lane]), row + i * 4 * V + t * V, ok[k]);
    }
    cp_async_commit();
    cp_async_wait<0>(); /* the lane's own copies: no barrier needed */

    float acc[SCORE_GROUPS][4];
#pragma unroll
    for (int k = 0; k < SCORE_GROUPS; k++) {
        acc[k][0] = acc[k][1] = acc[k][2] = acc[k][3] = 0.0f;
#pragma unroll
        for (int s = 0; s < STEPS; s++) {
            const int m0 = 2 * s, m1 = 2 * s + 1;
            const uint32_t a[4] = {qa[0][m0], qa[1][m0], qa[0][m1], qa[1][m1]};
            const float k0 = element<KT>(staged[warp][k][m0 / V][lane], m0 % V);
            const float k1 = element<KT>(staged[warp][k][m1 / V][lane], m1 % V);
            const uint32_t h0 = SPLIT ? to_tf32(k0) : __float_as_uint(k0);
            const uint32_t h1 = SPLIT ? to_tf32(k1) : __float_as_uint(k1);
            mma_tf32(acc[k], a, h0, h1);
            if (SPLIT)
                mma_tf32(acc[k], a, to_tf32(k0 - __uint_as_float(h0)),
                         to_tf32(k1 - __uint_as_float(h1)));
        }
    }

    /* Lane (g, t) holds heads g and g + 8 of keys 2t and 2t + 1; whether
     * those keys were read comes from the lanes that loaded them. */
    float *z_group = ws.log2w + (b * p.heads_q + kvh * G) * M;
#pragma unroll
    for (int k = 0; k < SCORE_GROUPS; k++) {
        const unsigned read = __ballot_sync(0xffffffffu, ok[k] && t == 0);
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const int row = g + 8 * (e >> 1), n = 2 * t + (e & 1);
            const int64_t j = w0 + 8 * k + n;
            if (row < G && j >= lr.cand_begin && j < lr.cand_end)
                z_group[row * M + j] =
                    (read >> (4 * n)) & 1u ? acc[k][e] * p.stage1_scale : DA_NAN_F;
        }
    }
}

template <int D, typename QT, typename KT>
dagpu_rt_error launch(const dagpu_params *p, const dashattn_tensor *q, const dashattn_kv_cache *c,
                      const dagpu_decode_ws *ws, dagpu_rt_stream st)
{
    const dim3 grid((unsigned)((p->num_blocks + SCORE_CHUNK - 1) / SCORE_CHUNK),
                    (unsigned)p->heads_kv, (unsigned)p->batch);
    /* The first kernel of a call waits for whatever came before it. */
    return da_launch(decode_scores_mma_kernel<D, QT, KT>, grid, dim3(SCORE_WARPS * 32), 0, st, 0,
                     *p, *q, *c, *ws);
}

template <int D, typename QT>
dagpu_rt_error launch_keys(const dagpu_params *p, const dashattn_tensor *q,
                           const dashattn_kv_cache *c, const dagpu_decode_ws *ws,
                           dagpu_rt_stream st)
{
    return c->block_keys.dtype == DASHATTN_F32 ? launch<D, QT, float>(p, q, c, ws, st)
                                               : launch<D, QT, QT>(p, q, c, ws, st);
}

template <int D>
dagpu_rt_error launch_query(const dagpu_params *p, const dashattn_tensor *q,
                            const dashattn_kv_cache *c, const dagpu_decode_ws *ws,
                            dagpu_rt_stream st)
{
    return p->dtype == DASHATTN_BF16 ? launch_keys<D, __nv_bfloat16>(p, q, c, ws, st)
                                     : launch_keys<D, __half>(p, q, c, ws, st);
}

} // namespace

extern "C" int dagpu_nv_decode_scores_ok(const dagpu_params *p, const dashattn_kv_cache *cache)
{
    const int32_t bk = cache->block_keys.dtype;
    return p->group_size <= 16 && (p->head_dim == 64 || p->head_dim == 128) &&
           (p->dtype == DASHATTN_BF16 || p->dtype == DASHATTN_F16) &&
           (bk == DASHATTN_F32 || bk == p->dtype);
}

extern "C" dagpu_err dagpu_nv_launch_decode_scores(const dagpu_params *p, const dashattn_tensor *q,
                                                   const dashattn_kv_cache *cache,
                                                   const dagpu_decode_ws *ws, void *stream)
{
    const dagpu_rt_stream st = (dagpu_rt_stream)stream;
    return (dagpu_err)(p->head_dim == 64 ? launch_query<64>(p, q, cache, ws, st)
                                         : launch_query<128>(p, q, cache, ws, st));
}
