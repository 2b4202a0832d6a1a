/* SPDX-License-Identifier: MIT */
/* Stage 2, fast path: FlashAttention-style tiles on the tensor cores
 * (mma.sync m16n8k16, bf16 or f16 in, f32 accumulation) for head dimensions
 * 64 and 128 and block size 64. A thread block owns a tile of 64 query rows
 * and walks only the key blocks stage 1 marked for it, loading each one
 * with cp.async while the previous one is computed. With per-head priors a
 * candidate's score is recomputed from the very tile of logits: with mean
 * pooling the mean of q.k over the block equals q.kbar, so it costs one row
 * sum per block. Weights shared by a KV head's heads come from stage 1. */
#include "nv_kernels.h"
#include "nv_stage2_tile.cuh"

namespace
{

template <int D, typename T>
__global__ void __launch_bounds__(MMA_THREADS)
    stage2_mma_kernel(dagpu_params p, dashattn_tensor q, dashattn_tensor k, dashattn_tensor v,
                      dashattn_tensor out, float *lse, dagpu_forward_ws ws)
{
    extern __shared__ __align__(128) unsigned char smem[];
    constexpr int KSTEPS = D / 16, DTILES = D / 8;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const s2_tile t = s2_block_tile(p, ws, 1, 0);
    const uint32_t qtile = smem_addr(smem);
    const uint32_t ktile[2] = {qtile + MMA_ROWS * D * 2, qtile + (MMA_ROWS + MMA_KEYS) * D * 2};
    const uint32_t vtile[2] = {qtile + (MMA_ROWS + 2 * MMA_KEYS) * D * 2,
                               qtile + (MMA_ROWS + 3 * MMA_KEYS) * D * 2};
    const T *kbase = static_cast<const T *>(k.data) + t.b * k.strides[0] + t.kvh * k.strides[1];
    const T *vbase = static_cast<const T *>(v.data) + t.b * v.strides[0] + t.kvh * v.strides[1];

    s2_load_queries<D, T, swz_layout<D>>(qtile, p, q, t, tid, MMA_THREADS);
    cp_async_commit();
    int j = s2_prefetch<D>(t, -1, ktile[0], vtile[0], kbase, vbase, k, v, p.len_k);
    row_state rs[2];
    s2_rows(p, ws, t, warp, lane, rs);

    cp_async_wait<1>();
    __syncthreads();
    uint32_t qf[KSTEPS][4];
    for (int kk = 0; kk < KSTEPS; kk++) {
        const int r = warp * 16 + (lane & 15), c = kk * 16 + (lane >> 4) * 8;
        ldmatrix_x4(qf[kk], qtile + swz<D>(r, c));
    }

    float o[DTILES][4];
    for (int n = 0; n < DTILES; n++)
        o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    float m[2] = {-DA_INF_F, -DA_INF_F}, l[2] = {0.0f, 0.0f};
    const float scale2 = p.scale * DA_LOG2E;
    int buf = 0;
    while (j >= 0) {
        float table_prior[2];
        s2_table_priors(p, rs, j, table_prior);
        const int jn =
            s2_prefetch<D>(t, j, ktile[buf ^ 1], vtile[buf ^ 1], kbase, vbase, k, v, p.len_k);

        /* With stage 1's priors a warp knows before any product whether its
         * rows read the block; one whose rows all dropped it (the tile reads
         * the union of its rows' blocks) leaves the tensor cores to the
         * warps that did. */
        float prior[2];
        int vis[2];
        bool active = true;
        if (p.prior_table) {
            for (int half = 0; half < 2; half++)
                block_prior(p, rs[half], j, 0.0f, table_prior[half], prior[half], vis[half]);
            active = __any_sync(0xffffffffu, vis[0] > 0 || vis[1] > 0);
        }
        cp_async_wait<1>();
        __syncthreads();

        if (active) {
            float s[8][4];
            tile_scores<D, T>(s, qf, ktile[buf], lane);
            if (!p.prior_table) {
                /* A candidate's score is the mean of its raw logits over the
                 * block's keys (q . kbar for mean pooling). */
                const float real = (float)min((int64_t)MMA_KEYS, p.len_k - (int64_t)j * MMA_KEYS);
                for (int half = 0; half < 2; half++) {
                    float sum = 0.0f;
                    for (int n = 0; n < 8; n++)
                        sum += s[n][2 * half] + s[n][2 * half + 1];
                    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
                    sum += __shfl_xor_sync(0xffffffffu, sum, 2);
                    block_prior(p, rs[half], j, p.stage1_scale * sum / real, 0.0f, prior[half],
                                vis[half]);
                }
            }
            tile_softmax_pv<D, T>(s, o, m, l, prior, vis, scale2, vtile[buf], lane);
        }
        __syncthreads(); /* the buffer is refilled by the next iteration */
        buf ^= 1;
        j = jn;
    }
    s2_store<D, T>(p, out, lse, t, rs, o, m, l, lane);
}

template <int D> static constexpr size_t stage2_smem()
{
    return (size_t)(MMA_ROWS + 4 * MMA_KEYS) * D * 2;
}

template <int D, typename T> struct mma_stage2 {
    static constexpr auto kernel = stage2_mma_kernel<D, T>;
    static constexpr size_t smem = stage2_smem<D>();
    static constexpr int threads = MMA_THREADS, per_block = 1;
};

} // namespace

extern "C" size_t dagpu_nv_stage2_smem(const dagpu_params *p)
{
    return s2_smem<mma_stage2>(p);
}

extern "C" dagpu_err dagpu_nv_launch_stage2(const dagpu_params *p, const dashattn_tensor *q,
                                            const dashattn_tensor *k, const dashattn_tensor *v,
                                            const dashattn_tensor *out, float *lse,
                                            const dagpu_forward_ws *ws, void *stream)
{
    return s2_launch<mma_stage2>(p, q, k, v, out, lse, ws, stream);
}
