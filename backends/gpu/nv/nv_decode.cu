/* SPDX-License-Identifier: MIT */
/* Decode split-KV on the tensor cores (16-bit caches, head dimension 64 or
 * 128, block size 64, at most 16 query heads per KV head): the group's query
 * heads are the rows of one 16-row mma tile, so each key block is read once
 * for all of them. One warp per thread block keeps two blocks in flight with
 * cp.async while it computes, which is what a memory-bound kernel needs. */
#include "nv_kernels.h"
#include "nv_mma.cuh"

namespace
{

template <int D, typename T>
__global__ void __launch_bounds__(32)
    decode_split_mma_kernel(dagpu_params p, dashattn_tensor q, dashattn_kv_cache c,
                            dagpu_decode_ws ws)
{
    extern __shared__ __align__(128) unsigned char smem_dec[];
    constexpr int KSTEPS = D / 16, DTILES = D / 8;
    const int lane = threadIdx.x, g = lane >> 2, qd = lane & 3;
    const int64_t split = blockIdx.x, kvh = blockIdx.y, b = blockIdx.z;
    const int64_t G = p.group_size, M = p.num_blocks;
    const int nb = ws.nblocks[b * p.heads_kv + kvh];
    if (nb < 0)
        return;
    const int64_t first = (int64_t)nb * split / ws.splits;
    const int64_t last = (int64_t)nb * (split + 1) / ws.splits;
    const int64_t len = c.seq_lens[b];
    const uint32_t base = smem_addr(smem_dec);
    const uint32_t ktile[2] = {base, base + MMA_KEYS * D * 2};
    const uint32_t vtile[2] = {base + 2 * MMA_KEYS * D * 2, base + 3 * MMA_KEYS * D * 2};
    const int32_t *list = ws.blocks + (b * p.heads_kv + kvh) * M;
    const float *log2w = ws.log2w + (b * p.heads_q + kvh * G) * M;

    auto block_base = [&](const dashattn_tensor &t, int64_t j) -> const T * {
        const T *data = static_cast<const T *>(t.data);
        if (c.layout == DASHATTN_CACHE_PAGED)
            return data + (int64_t)c.block_table[b * c.table_stride + j] * t.strides[0] +
                   kvh * t.strides[1];
        return data + b * t.strides[0] + kvh * t.strides[1] + j * MMA_KEYS * t.strides[2];
    };
    auto fetch = [&](int64_t j, int buf) {
        const int64_t valid = min((int64_t)MMA_KEYS, len - j * MMA_KEYS);
        load_tile<D>(ktile[buf], block_base(c.k, j), c.k.strides[2], 0, valid);
        load_tile<D>(vtile[buf], block_base(c.v, j), c.v.strides[2], 0, valid);
    };
    if (first < last)
        fetch(list[first], 0);
    cp_async_commit();

    /* Query rows g and g + 8 of the tile are heads kvh * G + row; rows past
     * G are zero and never written. */
    uint32_t qf[KSTEPS][4];
    const T *qrow[2];
    for (int half = 0; half < 2; half++) {
        const int64_t row = min((int64_t)(g + 8 * half), G - 1);
        qrow[half] =
            static_cast<const T *>(q.data) + b * q.strides[0] + (kvh * G + row) * q.strides[1];
    }
    const bool live0 = g < G, live1 = g + 8 < G;
    for (int kk = 0; kk < KSTEPS; kk++) {
        const int col = kk * 16 + qd * 2;
        qf[kk][0] = live0 ? *reinterpret_cast<const uint32_t *>(qrow[0] + col) : 0u;
        qf[kk][1] = live1 ? *reinterpret_cast<const uint32_t *>(qrow[1] + col) : 0u;
        qf[kk][2] = live0 ? *reinterpret_cast<const uint32_t *>(qrow[0] + col + 8) : 0u;
        qf[kk][3] = live1 ? *reinterpret_cast<const uint32_t *>(qrow[1] + col + 8) : 0u;
    }

    float o[DTILES][4];
    for (int n = 0; n < DTILES; n++)
        o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    float m[2] = {-DA_INF_F, -DA_INF_F}, l[2] = {0.0f, 0.0f};
    const float scale2 = p.scale * DA_LOG2E;
    for (int64_t u = first; u < last; u++) {
        const int buf = (int)((u - first) & 1);
        if (u + 1 < last)
            fetch(list[u + 1], buf ^ 1);
        cp_async_commit();
        cp_async_wait<1>();
        __syncwarp();
        const int64_t j = list[u];

        float s[8][4];
        tile_scores<D, T>(s, qf, ktile[buf], lane);
        const int vis_keys = (int)min((int64_t)MMA_KEYS, len - j * MMA_KEYS);
        float prior[2];
        int vis[2];
        for (int half = 0; half < 2; half++) {
            const bool live = half ? live1 : live0;
            prior[half] = live ? log2w[(g + 8 * half) * M + j] : -DA_INF_F;
            vis[half] = prior[half] == -DA_INF_F ? 0 : vis_keys;
        }
        tile_softmax_pv<D, T>(s, o, m, l, prior, vis, scale2, vtile[buf], lane);
        __syncwarp(); /* the buffer is refilled next */
    }

    for (int half = 0; half < 2; half++) {
        if (!(half ? live1 : live0))
            continue;
        float lt = l[half];
        lt += __shfl_xor_sync(0xffffffffu, lt, 1);
        lt += __shfl_xor_sync(0xffffffffu, lt, 2);
        float *part =
            ws.partial + ((b * p.heads_q + kvh * G + g + 8 * half) * ws.splits + split) * (D + 2);
        for (int n = 0; n < DTILES; n++) {
            part[2 + n * 8 + qd * 2] = o[n][2 * half];
            part[2 + n * 8 + qd * 2 + 1] = o[n][2 * half + 1];
        }
        if (qd == 0) {
            part[0] = m[half];
            part[1] = lt;
        }
    }
}

template <int D> static constexpr size_t split_smem()
{
    return 4 * (size_t)MMA_KEYS * D * 2;
}

template <int D, typename T>
dagpu_rt_error launch(const dagpu_params *p, const dashattn_tensor *q, const dashattn_kv_cache *c,
                      const dagpu_decode_ws *ws, cudaStream_t stream)
{
    const size_t smem = split_smem<D>();
    dagpu_rt_error e = da_allow_smem(decode_split_mma_kernel<D, T>, smem);
    if (e != dagpu_rt_success)
        return e;
    const dim3 grid((unsigned)ws->splits, (unsigned)p->heads_kv, (unsigned)p->batch);
    decode_split_mma_kernel<D, T><<<grid, 32, smem, stream>>>(*p, *q, *c, *ws);
    return dagpuGetLastError();
}

} // namespace

extern "C" size_t dagpu_nv_decode_split_smem(const dagpu_params *p)
{
    return p->head_dim == 64 ? split_smem<64>() : split_smem<128>();
}

extern "C" dagpu_err dagpu_nv_launch_decode_split(const dagpu_params *p, const dashattn_tensor *q,
                                                  const dashattn_kv_cache *c,
                                                  const dagpu_decode_ws *ws, void *stream)
{
    cudaStream_t st = (cudaStream_t)stream;
    const bool bf16 = p->dtype == DASHATTN_BF16;
    if (p->head_dim == 64)
        return (dagpu_err)(bf16 ? launch<64, __nv_bfloat16>(p, q, c, ws, st)
                                : launch<64, __half>(p, q, c, ws, st));
    return (dagpu_err)(bf16 ? launch<128, __nv_bfloat16>(p, q, c, ws, st)
                            : launch<128, __half>(p, q, c, ws, st));
}
