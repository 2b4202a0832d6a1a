/* SPDX-License-Identifier: MIT */
/* Stage 2 on Hopper's warpgroup products (wgmma, sm_90a): the 64-row tiles
 * of nv/nv_stage2.cu, each a warpgroup's, with S = Q K^T read by the tensor
 * cores straight from shared memory (no ldmatrix, no query fragments held
 * in registers) and O += P V with P from registers. A thread block of two
 * warpgroups streams the key blocks of either tile's mask through a ring of
 * cp.async buffers. */
#include "../nv/nv_stage2_tile.cuh"
#include "hopper_kernels.h"
#include "hopper_wgmma.cuh"

namespace
{

/* Warpgroups of a thread block, each the 64 rows of its own tile: the
 * thread block streams the union of their tiles' blocks once, and each
 * warpgroup computes only its tile's, so the L2-to-SM bytes per product
 * halve while the products stay those of 64-row tiles. */
#define WGS 2
static_assert(WGS == 2, "the kernel picks its warpgroup's tile of two");
/* K/V buffers of the ring: loads run STAGES - 1 blocks ahead. */
#define STAGES 3

/* Shared memory: WGS query tiles, then STAGES K and STAGES V tiles, each
 * [64][D] in gmma_layout, after up to 1023 bytes that align the first to
 * 1024. */
template <int D> static constexpr size_t hopper_stage2_smem()
{
    return (size_t)(WGS * MMA_ROWS + 2 * STAGES * MMA_KEYS) * D * 2 + 1024;
}

/* Each thread's cp.async chunks of a block's K and V tiles, their offsets
 * worked out once: the thread's chunk c of a pass over the tile is ROWS rows
 * below the one before, in the same column and swizzle phase. */
template <int D, typename T> struct block_loader {
    static constexpr int THREADS = WGS * MMA_THREADS, ROWS = THREADS / (D / 8);
    static constexpr int PASSES = MMA_KEYS / ROWS;
    static_assert(ROWS % 8 == 0 && MMA_KEYS % ROWS == 0, "passes keep the swizzle phase");
    uint32_t dst;
    int row;
    int64_t koff, voff;

    __device__ __forceinline__ void init(int tid, int64_t kstride, int64_t vstride)
    {
        row = tid / (D / 8);
        const int col = tid % (D / 8) * 8;
        dst = gmma_layout<D>::at(row, col);
        koff = row * kstride + col;
        voff = row * vstride + col;
    }

    /* Block blk's rows (at or past limit: zeros) into ktile and vtile. */
    __device__ __forceinline__ void load(uint32_t ktile, uint32_t vtile, const T *kbase,
                                         const T *vbase, int64_t kstride, int64_t vstride,
                                         int64_t first, int64_t limit) const
    {
        const T *k = kbase + first * kstride + koff, *v = vbase + first * vstride + voff;
#pragma unroll
        for (int c = 0; c < PASSES; c++) {
            const bool valid = first + row + c * ROWS < limit;
            const uint32_t at = dst + c * ROWS * 128;
            cp_async16(ktile + at, valid ? k + c * ROWS * kstride : kbase, valid);
            cp_async16(vtile + at, valid ? v + c * ROWS * vstride : vbase, valid);
        }
    }
};

/* The next block after j that either tile reads, -1 for none. */
static __device__ __forceinline__ int union_next(const s2_tile (&t)[WGS], int j)
{
    int n = -1;
    for (int w = 0; w < WGS; w++) {
        const int x = s2_next(t[w], j);
        if (x >= 0 && (n < 0 || x < n))
            n = x;
    }
    return n;
}

template <int D, typename T>
__global__ void __launch_bounds__(WGS *MMA_THREADS, 1)
    hopper_stage2_kernel(dagpu_params p, dashattn_tensor q, dashattn_tensor k, dashattn_tensor v,
                         dashattn_tensor out, float *lse, dagpu_forward_ws ws)
{
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
    extern __shared__ __align__(128) unsigned char smem[];
    constexpr int KSTEPS = D / 16, DTILES = D / 8, TILE = MMA_KEYS * D * 2;
    using L = gmma_layout<D>;
    const int tid = threadIdx.x, lane = tid & 31, wg = tid / MMA_THREADS;
    const int warp = (tid % MMA_THREADS) >> 5;
    s2_tile tiles[WGS];
    for (int w = 0; w < WGS; w++)
        tiles[w] = s2_block_tile(p, ws, WGS, w);
    const s2_tile t = wg == 0 ? tiles[0] : tiles[1];
    const uint32_t base = (smem_addr(smem) + 1023u) & ~1023u;
    const uint32_t qtile = base + wg * TILE;
    const uint32_t kring = base + WGS * TILE, vring = kring + STAGES * TILE;
    const T *kbase = static_cast<const T *>(k.data) + t.b * k.strides[0] + t.kvh * k.strides[1];
    const T *vbase = static_cast<const T *>(v.data) + t.b * v.strides[0] + t.kvh * v.strides[1];
    block_loader<D, T> loader;
    loader.init(tid, k.strides[2], v.strides[2]);
    auto load_block = [&](int slot, int blk) {
        if (blk >= 0)
            loader.load(kring + slot * TILE, vring + slot * TILE, kbase, vbase, k.strides[2],
                        v.strides[2], (int64_t)blk * MMA_KEYS, p.len_k);
        cp_async_commit();
    };

    s2_load_queries<D, T, L>(qtile, p, q, t, tid % MMA_THREADS, MMA_THREADS);
    cp_async_commit();
    /* ahead: the blocks whose loads were issued, in order; the first is
     * the one computed next. */
    int j = union_next(tiles, -1);
    int ahead[STAGES - 1];
    ahead[0] = j;
    for (int s = 1; s < STAGES - 1; s++)
        ahead[s] = ahead[s - 1] >= 0 ? union_next(tiles, ahead[s - 1]) : -1;
    for (int s = 0; s < STAGES - 1; s++)
        load_block(s, ahead[s]);
    row_state rs[2];
    s2_rows(p, ws, t, warp, lane, rs);

    float o[DTILES][4];
    for (int n = 0; n < DTILES; n++)
        o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    float m[2] = {-DA_INF_F, -DA_INF_F}, l[2] = {0.0f, 0.0f};
    const float scale2 = p.scale * DA_LOG2E;
    int slot = 0;
    while (j >= 0) {
        /* The load STAGES - 1 blocks ahead goes into the slot the last
         * iteration freed; ahead then starts with the block after j. */
        const int last = ahead[STAGES - 2];
        const int further = last >= 0 ? union_next(tiles, last) : -1;
        for (int s = 0; s + 1 < STAGES - 1; s++)
            ahead[s] = ahead[s + 1];
        ahead[STAGES - 2] = further;
        load_block((slot + STAGES - 1) % STAGES, further);
        const bool mine = s2_reads(t, j);
        float table_prior[2];
        s2_table_priors(p, rs, j, table_prior);
        cp_async_wait<STAGES - 1>();
        gmma_fence_smem();
        __syncthreads();

        /* A warpgroup whose tile dropped the block (the thread block reads
         * the union of its tiles' blocks) leaves the tensor cores to the
         * other. */
        if (mine) {
            const uint32_t ktile = kring + slot * TILE, vtile = vring + slot * TILE;
            float s[8][4] = {};
            gmma_fence();
            for (int kk = 0; kk < KSTEPS; kk++)
                gmma<T>::ss64(&s[0][0], gmma_desc_k<D>(qtile, kk), gmma_desc_k<D>(ktile, kk),
                              kk > 0);
            gmma_commit();
            gmma_wait<0>();
            gmma_hold<32>(&s[0][0]);

            float prior[2];
            int vis[2];
            for (int half = 0; half < 2; half++) {
                float score = 0.0f;
                if (!p.prior_table) {
                    /* A candidate's score is the mean of its raw logits over
                     * the block's keys (q . kbar for mean pooling). */
                    const float real =
                        (float)min((int64_t)MMA_KEYS, p.len_k - (int64_t)j * MMA_KEYS);
                    float sum = 0.0f;
                    for (int n = 0; n < 8; n++)
                        sum += s[n][2 * half] + s[n][2 * half + 1];
                    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
                    sum += __shfl_xor_sync(0xffffffffu, sum, 2);
                    score = p.stage1_scale * sum / real;
                }
                block_prior(p, rs[half], j, score, table_prior[half], prior[half], vis[half]);
            }
            tile_softmax(s, o, m, l, prior, vis, scale2, lane);

            uint32_t a[4][4];
            for (int kk = 0; kk < 4; kk++)
                p_fragment<T>(a[kk], s, kk);
            gmma_hold<DTILES * 4>(&o[0][0]);
            gmma_fence();
            for (int kk = 0; kk < 4; kk++) {
                if constexpr (D == 128)
                    gmma<T>::rs128(&o[0][0], a[kk], gmma_desc_mn<D>(vtile, kk), 1);
                else
                    gmma<T>::rs64(&o[0][0], a[kk], gmma_desc_mn<D>(vtile, kk), 1);
            }
            gmma_commit();
            gmma_wait<0>();
            gmma_hold<DTILES * 4>(&o[0][0]);
        }
        __syncthreads(); /* the slot is refilled by the next iteration */
        slot = (slot + 1) % STAGES;
        j = ahead[0];
    }
    s2_store<D, T>(p, out, lse, t, rs, o, m, l, lane);
#endif
}

template <int D, typename T> struct wgmma_stage2 {
    static constexpr auto kernel = hopper_stage2_kernel<D, T>;
    static constexpr size_t smem = hopper_stage2_smem<D>();
    static constexpr int threads = WGS * MMA_THREADS, per_block = WGS;
};

} // namespace

extern "C" size_t dagpu_hopper_stage2_smem(const dagpu_params *p)
{
    return s2_smem<wgmma_stage2>(p);
}

extern "C" dagpu_err dagpu_hopper_launch_stage2(const dagpu_params *p, const dashattn_tensor *q,
                                                const dashattn_tensor *k, const dashattn_tensor *v,
                                                const dashattn_tensor *out, float *lse,
                                                const dagpu_forward_ws *ws, void *stream)
{
    return s2_launch<wgmma_stage2>(p, q, k, v, out, lse, ws, stream);
}
