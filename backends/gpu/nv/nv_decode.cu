/* SPDX-License-Identifier: MIT */
/* Decode split-KV on the tensor cores (16-bit caches, head dimension 64 or
 * 128, block size 64, at most 16 query heads per KV head): the group's query
 * heads are the rows of one 16-row mma tile, so each key block is read once
 * for all of them. Decode is a memory-bound job, so the kernel is built
 * around keeping bytes in flight: every thread issues cp.async copies of
 * whole 64-token K/V blocks into a ring of DECODE_STAGES buffers, all but one
 * of them ahead of the block being computed, and two thread blocks share each
 * multiprocessor. The four warps take 16 of a block's 64 tokens each, with
 * their own online-softmax state, so one block costs a warp only a quarter
 * of the products; the warps' states are merged at the end. */
#include "nv_kernels.h"
#include "nv_mma.cuh"

namespace
{

#define DECODE_WARPS 4
#define DECODE_STAGES 3
/* Tokens of a block each warp takes. */
#define WARP_KEYS (MMA_KEYS / DECODE_WARPS)

template <int D> static __host__ __device__ constexpr size_t stage_bytes()
{
    return 2 * (size_t)MMA_KEYS * D * 2; /* a K and a V tile of 16-bit values */
}

/* The warps' (m, l, o) rows in the merge at the end, over the ring. */
template <int D> static __host__ __device__ constexpr size_t merge_bytes()
{
    return (size_t)DECODE_WARPS * 16 * (D + 2) * sizeof(float);
}

template <int D, typename T>
__global__ void __launch_bounds__(DECODE_WARPS * 32, 2)
    decode_split_mma_kernel(dagpu_params p, dashattn_tensor q, dashattn_kv_cache c,
                            dagpu_decode_ws ws)
{
    extern __shared__ __align__(128) unsigned char smem_dec[];
    static_assert(merge_bytes<D>() <= DECODE_STAGES * stage_bytes<D>(), "merge fits the ring");
    constexpr int KSTEPS = D / 16, DTILES = D / 8;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, qd = lane & 3;
    const int64_t split = blockIdx.x, kvh = blockIdx.y, b = blockIdx.z;
    const int64_t G = p.group_size, M = p.num_blocks;
    /* Query rows g and g + 8 of the tile are heads kvh * G + row; rows past
     * G are zero and never written. */
    uint32_t qf[KSTEPS][4];
    const T *qrow[2];
    for (int half = 0; half < 2; half++) {
        const int64_t row = min((int64_t)(g + 8 * half), G - 1);
        qrow[half] =
            static_cast<const T *>(q.data) + b * q.strides[0] + (kvh * G + row) * q.strides[1];
    }
    const bool live[2] = {g < G, g + 8 < G};
    for (int kk = 0; kk < KSTEPS; kk++) {
        const int col = kk * 16 + qd * 2;
        qf[kk][0] = live[0] ? *reinterpret_cast<const uint32_t *>(qrow[0] + col) : 0u;
        qf[kk][1] = live[1] ? *reinterpret_cast<const uint32_t *>(qrow[1] + col) : 0u;
        qf[kk][2] = live[0] ? *reinterpret_cast<const uint32_t *>(qrow[0] + col + 8) : 0u;
        qf[kk][3] = live[1] ? *reinterpret_cast<const uint32_t *>(qrow[1] + col + 8) : 0u;
    }

    /* The query is the caller's, ready before the stage-1 kernels started:
     * it is loaded while they finish. */
    da_wait_previous();
    const int nb = ws.nblocks[b * p.heads_kv + kvh];
    if (nb < 0)
        return;
    const int64_t first = (int64_t)nb * split / ws.splits;
    const int64_t last = (int64_t)nb * (split + 1) / ws.splits;
    const int64_t len = c.seq_lens[b];
    const uint32_t base = smem_addr(smem_dec);
    const int32_t *list = ws.blocks + (b * p.heads_kv + kvh) * M;
    const float *log2w = ws.log2w + (b * p.heads_q + kvh * G) * M;

    auto block_base = [&](const dashattn_tensor &t, int64_t j) -> const T * {
        const T *data = static_cast<const T *>(t.data);
        if (c.layout == DASHATTN_CACHE_PAGED)
            return data + (int64_t)c.block_table[b * c.table_stride + j] * t.strides[0] +
                   kvh * t.strides[1];
        return data + b * t.strides[0] + kvh * t.strides[1] + j * MMA_KEYS * t.strides[2];
    };
    auto ktile = [&](int slot) { return base + (uint32_t)(slot * stage_bytes<D>()); };
    auto vtile = [&](int slot) { return ktile(slot) + (uint32_t)(MMA_KEYS * D * 2); };
    auto fetch = [&](int64_t u) {
        const int64_t j = list[u];
        const int slot = (int)((u - first) % DECODE_STAGES);
        const int64_t valid = min((int64_t)MMA_KEYS, len - j * MMA_KEYS);
        load_tile<D>(ktile(slot), block_base(c.k, j), c.k.strides[2], 0, valid);
        load_tile<D>(vtile(slot), block_base(c.v, j), c.v.strides[2], 0, valid);
    };
    /* One commit group per ring slot, empty ones included, so the wait
     * below always counts the same number of groups. */
    for (int s = 0; s < DECODE_STAGES - 1; s++) {
        if (first + s < last)
            fetch(first + s);
        cp_async_commit();
    }

    float o[DTILES][4];
    for (int n = 0; n < DTILES; n++)
        o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    float m[2] = {-DA_INF_F, -DA_INF_F}, l[2] = {0.0f, 0.0f};
    const float scale2 = p.scale * DA_LOG2E;
    for (int64_t u = first; u < last; u++) {
        cp_async_wait<DECODE_STAGES - 2>(); /* block u has landed */
        __syncthreads(); /* ... for every thread, and block u - 1's slot is free */
        if (u + DECODE_STAGES - 1 < last)
            fetch(u + DECODE_STAGES - 1);
        cp_async_commit();
        const int64_t j = list[u];
        const int slot = (int)((u - first) % DECODE_STAGES);
        float s[WARP_KEYS / 8][4];
        tile_scores<D, T>(s, qf, ktile(slot), lane, warp * WARP_KEYS);
        const int vis_keys = (int)min((int64_t)MMA_KEYS, len - j * MMA_KEYS);
        float prior[2];
        int vis[2];
        for (int half = 0; half < 2; half++) {
            prior[half] = live[half] ? log2w[(g + 8 * half) * ws.wstride + j] : -DA_INF_F;
            vis[half] = prior[half] == -DA_INF_F ? 0 : vis_keys;
        }
        tile_softmax_pv<D, T>(s, o, m, l, prior, vis, scale2, vtile(slot), lane, warp * WARP_KEYS);
    }
    cp_async_wait<0>();
    __syncthreads(); /* the ring is reused for the merge */

    /* Each warp's rows, [warp][row][m, l, o...], then one (m, l, o) per row. */
    float *red = reinterpret_cast<float *>(smem_dec);
    for (int half = 0; half < 2; half++) {
        float lt = l[half];
        lt += __shfl_xor_sync(0xffffffffu, lt, 1);
        lt += __shfl_xor_sync(0xffffffffu, lt, 2);
        float *row = red + (warp * 16 + g + 8 * half) * (D + 2);
        for (int n = 0; n < DTILES; n++) {
            row[2 + n * 8 + qd * 2] = o[n][2 * half];
            row[2 + n * 8 + qd * 2 + 1] = o[n][2 * half + 1];
        }
        if (qd == 0) {
            row[0] = m[half];
            row[1] = lt;
        }
    }
    __syncthreads();
    for (int64_t e = tid; e < G * (D + 1); e += DECODE_WARPS * 32) {
        const int64_t r = e / (D + 1), d = e % (D + 1); /* d == D: m and l */
        float mx = -DA_INF_F;
        for (int w = 0; w < DECODE_WARPS; w++)
            mx = fmaxf(mx, red[(w * 16 + r) * (D + 2)]);
        float acc = 0.0f;
        for (int w = 0; w < DECODE_WARPS; w++) {
            const float *row = red + (w * 16 + r) * (D + 2);
            if (row[0] == -DA_INF_F)
                continue;
            acc += (d == D ? row[1] : row[2 + d]) * exp2f(row[0] - mx);
        }
        float *part = ws.partial + ((b * p.heads_q + kvh * G + r) * ws.splits + split) * (D + 2);
        if (d == D) {
            part[0] = mx;
            part[1] = acc;
        } else {
            part[2 + d] = acc;
        }
    }
}

template <int D> static constexpr size_t split_smem()
{
    return DECODE_STAGES * stage_bytes<D>();
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
    return da_launch(decode_split_mma_kernel<D, T>, grid, dim3(DECODE_WARPS * 32), smem, stream,
                     ws->chained, *p, *q, *c, *ws);
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
