/* SPDX-License-Identifier: MIT */
/* Stage 1 on NVIDIA tensor cores: the block scores of 32 query vectors per
 * thread block by mma.sync against the 16-bit split block keys, then the
 * portable gpu_stage1_finish.cuh. */
#include "../gpu_stage1_finish.cuh"
#include "nv_kernels.h"
#include "nv_mma.cuh"

namespace
{

/* Rows of one tensor-core stage-1 block, and its threads. 32 rows with one
 * buffer of block keys keep the shared memory under half of a
 * multiprocessor's at 512 blocks, so two blocks overlap their score and
 * threshold phases. */
#define STAGE1_MMA_ROWS 32
#define STAGE1_MMA_THREADS 256

/* Bytes before the block-key tiles in the tensor-core stage 1's shared
 * memory: scores of its 32 query vectors, the mask words (`words` of each
 * tile its rows touch) and, in group-mean mode, their row parameters; then
 * 128-byte alignment for the tiles. */
static __host__ __device__ size_t stage1_mma_head(int64_t zstride, int64_t words, int group_mean)
{
    const size_t head = (size_t)STAGE1_MMA_ROWS * (size_t)zstride * sizeof(float) +
                        (size_t)words * sizeof(uint32_t) +
                        (group_mean ? STAGE1_MMA_ROWS * sizeof(dagpu_row_param) : 0);
    return (head + 127) & ~(size_t)127;
}

/* Dynamic shared memory of the tensor-core stage 1: the head above and one
 * tile each of high and low block keys. */
static size_t stage1_mma_smem(const dagpu_params *p, int64_t *zstride)
{
    const int64_t zs = (p->num_blocks + MMA_KEYS - 1) / MMA_KEYS * MMA_KEYS;
    if (zstride)
        *zstride = zs;
    const int64_t words = (p->num_blocks + 31) / 32 *
                          dagpu_stage1_mask_tiles(p, dagpu_stage1_rows(p, STAGE1_MMA_ROWS));
    return stage1_mma_head(zs, words, p->group_mean) +
           2 * (size_t)MMA_KEYS * (size_t)p->head_dim * 2;
}

/* Stage 1 on the tensor cores for 32 query vectors: 32 rows of one query
 * head, or in group-mean mode the G heads of KV head blockIdx.y for R rows
 * (vector a = g * R + r; vectors past G * R repeat the last head and are
 * not used). z = q . kbar with kbar split into a 16-bit high part and
 * remainder (two products into one f32 accumulator), so the scores carry
 * about f32 accuracy. */
template <int D, typename T>
__global__ void __launch_bounds__(STAGE1_MMA_THREADS)
    stage1_mma_kernel(dagpu_params p, dashattn_tensor q, dagpu_forward_ws ws,
                      dashattn_selection sel, int64_t zstride, int R)
{
    extern __shared__ __align__(128) unsigned char smem_tc[];
    constexpr int KSTEPS = D / 16;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, qd = lane & 3;
    const int64_t b = blockIdx.z, hh = blockIdx.y;
    const int64_t kvh = p.group_mean ? hh : hh / p.group_size;
    const int64_t row0 = (int64_t)blockIdx.x * R;
    const int rows = (int)min((int64_t)R, p.len_q - row0);
    float *zs = reinterpret_cast<float *>(smem_tc);
    const int64_t mask_words = ws.words * dagpu_stage1_mask_tiles(&p, R);
    unsigned *mask_bits = reinterpret_cast<unsigned *>(zs + STAGE1_MMA_ROWS * zstride);
    dagpu_row_param *params = reinterpret_cast<dagpu_row_param *>(mask_bits + mask_words);
    const uint32_t tiles = smem_addr(smem_tc + stage1_mma_head(zstride, mask_words, p.group_mean));
    const uint32_t hi_tile = tiles, lo_tile = tiles + MMA_KEYS * D * 2;
    __shared__ unsigned long long block_counts[2];
    const da_tile_masks mask = da_tile_masks_init(p, ws, mask_bits, row0, rows);
    if (tid < 2)
        block_counts[tid] = 0;

    /* The last row has the most candidates (causal), or all rows have M. */
    const da_rows last = da_row_layout(p, row0 + rows - 1 + p.query_offset, p.len_k);
    const int64_t nblk = p.causal ? last.cand_end : p.num_blocks;
    const int64_t ntiles = (nblk + MMA_KEYS - 1) / MMA_KEYS;
    const T *hi = static_cast<const T *>(ws.kbar_hi) + (b * p.heads_kv + kvh) * p.num_blocks * D;
    const T *lo = static_cast<const T *>(ws.kbar_lo) + (b * p.heads_kv + kvh) * p.num_blocks * D;

    /* Warp w scores rows 16 (w % 2) .. + 15 against n-tiles 2 (w / 2) and
     * 2 (w / 2) + 1 of each tile of 64 blocks; all 8 warps then share the
     * thresholds, which dominate the time. */
    const int rg = warp & 1, np = warp >> 1;
    uint32_t qf[KSTEPS][4];
    const T *qrow[2];
    for (int half = 0; half < 2; half++) {
        const int a = rg * 16 + g + half * 8;
        const int64_t r = min(row0 + a % R, p.len_q - 1);
        const int64_t h =
            p.group_mean ? hh * p.group_size + min((int64_t)(a / R), p.group_size - 1) : hh;
        qrow[half] =
            static_cast<const T *>(q.data) + b * q.strides[0] + h * q.strides[1] + r * q.strides[2];
    }
    for (int kk = 0; kk < KSTEPS; kk++) {
        const int c = kk * 16 + qd * 2;
        qf[kk][0] = *reinterpret_cast<const uint32_t *>(qrow[0] + c);
        qf[kk][1] = *reinterpret_cast<const uint32_t *>(qrow[1] + c);
        qf[kk][2] = *reinterpret_cast<const uint32_t *>(qrow[0] + c + 8);
        qf[kk][3] = *reinterpret_cast<const uint32_t *>(qrow[1] + c + 8);
    }

    for (int64_t bt = 0; bt < ntiles; bt++) {
        load_tile<D>(hi_tile, hi, D, bt * MMA_KEYS, p.num_blocks);
        load_tile<D>(lo_tile, lo, D, bt * MMA_KEYS, p.num_blocks);
        cp_async_commit();
        cp_async_wait<0>();
        __syncthreads();
        float acc[2][4];
        for (int n = 0; n < 2; n++)
            acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
        for (int kk = 0; kk < KSTEPS; kk++) {
            const int r = np * 16 + (lane >> 4) * 8 + (lane & 7);
            const int c = kk * 16 + ((lane >> 3) & 1) * 8;
            uint32_t bf[4];
            ldmatrix_x4(bf, hi_tile + swz<D>(r, c));
            mma_type<T>::mma(acc[0], qf[kk], bf[0], bf[1]);
            mma_type<T>::mma(acc[1], qf[kk], bf[2], bf[3]);
            ldmatrix_x4(bf, lo_tile + swz<D>(r, c));
            mma_type<T>::mma(acc[0], qf[kk], bf[0], bf[1]);
            mma_type<T>::mma(acc[1], qf[kk], bf[2], bf[3]);
        }
        for (int n = 0; n < 2; n++) {
            const int64_t col = bt * MMA_KEYS + (2 * np + n) * 8 + qd * 2;
            float *z0 = zs + (rg * 16 + g) * zstride + col;
            float *z1 = z0 + 8 * zstride;
            z0[0] = p.stage1_scale * acc[n][0];
            z0[1] = p.stage1_scale * acc[n][1];
            z1[0] = p.stage1_scale * acc[n][2];
            z1[1] = p.stage1_scale * acc[n][3];
        }
        __syncthreads(); /* the buffer is refilled next */
    }
    __syncthreads();
    if (p.group_mean)
        stage1_finish_group(p, ws, sel, zs, zstride, R, rows, row0, b, hh, params, mask,
                            block_counts);
    else
        stage1_finish(p, ws, sel, zs, zstride, rows, row0, b, hh, mask, block_counts);
}

template <int D, typename T>
static dagpu_rt_error launch(const dagpu_params *p, const dashattn_tensor *q,
                             const dagpu_forward_ws *ws, const dashattn_selection &s,
                             cudaStream_t stream)
{
    int64_t zstride;
    const size_t smem = stage1_mma_smem(p, &zstride);
    dagpu_rt_error e = da_allow_smem(stage1_mma_kernel<D, T>, smem);
    if (e != dagpu_rt_success)
        return e;
    const int R = dagpu_stage1_rows(p, STAGE1_MMA_ROWS);
    const dim3 grid((unsigned)((p->len_q + R - 1) / R),
                    (unsigned)(p->group_mean ? p->heads_kv : p->heads_q), (unsigned)p->batch);
    stage1_mma_kernel<D, T><<<grid, STAGE1_MMA_THREADS, smem, stream>>>(*p, *q, *ws, s, zstride, R);
    return dagpuGetLastError();
}

} // namespace

extern "C" size_t dagpu_nv_stage1_smem(const dagpu_params *p)
{
    return stage1_mma_smem(p, NULL);
}

extern "C" dagpu_err dagpu_nv_launch_stage1(const dagpu_params *p, const dashattn_tensor *q,
                                            const dagpu_forward_ws *ws,
                                            const dashattn_selection *sel, void *stream)
{
    dashattn_selection s = {0, 0, 0, 0};
    if (sel)
        s = *sel;
    cudaStream_t st = (cudaStream_t)stream;
    const bool bf16 = p->dtype == DASHATTN_BF16;
    if (p->head_dim == 64)
        return (dagpu_err)(bf16 ? launch<64, __nv_bfloat16>(p, q, ws, s, st)
                                : launch<64, __half>(p, q, ws, s, st));
    return (dagpu_err)(bf16 ? launch<128, __nv_bfloat16>(p, q, ws, s, st)
                            : launch<128, __half>(p, q, ws, s, st));
}
