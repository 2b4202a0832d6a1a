/* SPDX-License-Identifier: MIT */
/* Stage 1 of a forward call: block scores, the entmax (or top-k) threshold
 * of every query row, the union of blocks each stage-2 tile must read, and
 * the optional selection output and sparsity counts. */
#include "cuda_entmax.cuh"
#include "cuda_mma.cuh"

namespace
{

/* Thresholds, block masks, selection output and counts of rows
 * [row0, row0 + rows) from their scores zs[r * zstride + j] (candidates
 * only). mask (words entries) and block_counts (2) are shared memory, zeroed
 * before the scores were written; called by every thread of the block. */
static __device__ void stage1_finish(const dacuda_params &p, const dacuda_forward_ws &ws,
                                     const dashattn_selection &sel, const float *zs,
                                     int64_t zstride, int rows, int64_t row0, int64_t b, int64_t hh,
                                     unsigned *mask, unsigned long long *block_counts)
{
    const int64_t M = p.num_blocks, G = p.group_size;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int heads_out = p.shared_group ? (int)G : 1;
    for (int r = warp; r < rows; r += blockDim.x / 32) {
        const int64_t i = row0 + r;
        const da_rows lr = da_row_layout(p, i + p.query_offset, p.len_k);
        const int n = (int)(lr.cand_end - lr.cand_begin);
        const float *z = zs + r * zstride;
        dacuda_row_param rp = {DACUDA_PRIOR_NONE, 0.0f, 0.0f, 0.0f};
        if (n > 0)
            rp = da_row_threshold(z + lr.cand_begin, n, p);

        int count = 0;
        unsigned long long attended = 0;
        const int64_t visible_blocks = (lr.visible_end + p.block_size - 1) / p.block_size;
        for (int64_t base = 0; base < visible_blocks; base += 32) {
            const int64_t j = base + lane;
            bool keep = false;
            float w = 0.0f;
            if (j < M && j * p.block_size < lr.visible_end) {
                if (da_forced(lr, j)) {
                    keep = true;
                    w = 1.0f;
                } else if (j >= lr.cand_begin && j < lr.cand_end) {
                    const float l2 = da_prior_log2(rp, z[j], p.alpha);
                    keep = !(l2 == -CUDART_INF_F);
                    w = exp2f(l2);
                }
            }
            const unsigned ballot = __ballot_sync(0xffffffffu, keep);
            if (keep) {
                const int64_t end = min((j + 1) * (int64_t)p.block_size, lr.visible_end);
                attended += (unsigned long long)(end - j * p.block_size);
            }
            if (lane == 0 && ballot)
                atomicOr(mask + base / 32, ballot);
            for (int g = 0; g < heads_out; g++) {
                const int64_t h = p.shared_group ? hh * G + g : hh;
                if (keep) {
                    const int64_t slot = ((b * p.heads_q + h) * p.len_q + i) * sel.max_blocks +
                                         count + __popc(ballot & ((1u << lane) - 1u));
                    if (sel.block_index)
                        sel.block_index[slot] = (int32_t)j;
                    if (sel.block_weight)
                        sel.block_weight[slot] = w;
                }
            }
            count += __popc(ballot);
        }
        for (int g = 0; g < heads_out; g++) {
            const int64_t h = p.shared_group ? hh * G + g : hh;
            const int64_t row = (b * p.heads_q + h) * p.len_q + i;
            if (lane == 0)
                ws.rows[row] = rp;
            for (int64_t e = count + lane; e < sel.max_blocks; e += 32) {
                if (sel.block_index)
                    sel.block_index[row * sel.max_blocks + e] = -1;
                if (sel.block_weight)
                    sel.block_weight[row * sel.max_blocks + e] = 0.0f;
            }
            if (lane == 0 && sel.block_count)
                sel.block_count[row] = count;
        }
        for (int o = 16; o > 0; o >>= 1)
            attended += __shfl_xor_sync(0xffffffffu, attended, o);
        if (lane == 0) {
            atomicAdd(block_counts, (unsigned long long)lr.visible_end * heads_out);
            atomicAdd(block_counts + 1, attended * heads_out);
        }
    }
    __syncthreads();
    const int64_t tile = row0 / DACUDA_TILE_ROWS;
    for (int64_t e = tid; e < heads_out * ws.words; e += blockDim.x) {
        const int64_t g = e / ws.words, w = e % ws.words;
        const int64_t h = p.shared_group ? hh * G + g : hh;
        if (mask[w])
            atomicOr(ws.masks + ((b * p.heads_q + h) * ws.tiles + tile) * ws.words + w, mask[w]);
    }
    if (tid < 2 && ws.counts)
        atomicAdd(ws.counts + tid, block_counts[tid]);
}

/* One thread block scores DACUDA_STAGE1_ROWS rows of one query head (or of
 * one KV head in shared mode, on the group-mean query). */
__global__ void __launch_bounds__(128)
    stage1_kernel(dacuda_params p, dashattn_tensor q, dacuda_forward_ws ws, dashattn_selection sel)
{
    extern __shared__ float smem[];
    const int64_t D = p.head_dim, M = p.num_blocks, G = p.group_size;
    const int64_t b = blockIdx.z, hh = blockIdx.y;
    const int64_t kvh = p.shared_group ? hh : hh / G;
    const int64_t row0 = (int64_t)blockIdx.x * DACUDA_STAGE1_ROWS;
    const int rows = (int)min((int64_t)DACUDA_STAGE1_ROWS, p.len_q - row0);
    float *qs = smem;
    float *zs = smem + DACUDA_STAGE1_ROWS * D;
    /* The rows' blocks and counts are gathered here first: one global atomic
     * per word per thread block instead of one per row. */
    unsigned *mask = reinterpret_cast<unsigned *>(zs + DACUDA_STAGE1_ROWS * M);
    __shared__ unsigned long long block_counts[2];
    const int tid = threadIdx.x;
    for (int64_t w = tid; w < ws.words; w += blockDim.x)
        mask[w] = 0;
    if (tid < 2)
        block_counts[tid] = 0;

    for (int64_t idx = tid; idx < rows * D; idx += blockDim.x) {
        const int64_t r = idx / D, d = idx % D;
        float x;
        if (p.shared_group) {
            float acc = 0.0f;
            for (int64_t g = 0; g < G; g++)
                acc += da_load(q.data, q.dtype, da_offset(q, b, hh * G + g, row0 + r, d));
            x = acc / (float)G;
            ws.qbar[((b * p.heads_kv + hh) * p.len_q + row0 + r) * D + d] = x;
        } else {
            x = da_load(q.data, q.dtype, da_offset(q, b, hh, row0 + r, d));
        }
        qs[r * D + d] = x;
    }
    __syncthreads();

    const float *kbar = ws.kbar + (b * p.heads_kv + kvh) * M * D;
    for (int64_t idx = tid; idx < rows * M; idx += blockDim.x) {
        const int64_t r = idx / M, j = idx % M;
        const da_rows lr = da_row_layout(p, row0 + r + p.query_offset, p.len_k);
        if (j >= lr.cand_begin && j < lr.cand_end)
            zs[r * M + j] = da_block_score(qs + r * D, kbar + j * D, D, p.stage1_scale);
    }
    __syncthreads();

    stage1_finish(p, ws, sel, zs, M, rows, row0, b, hh, mask, block_counts);
}

/* Rows of one tensor-core stage-1 block, and its threads. 32 rows with one
 * buffer of block keys keep the shared memory under half of a
 * multiprocessor's at 512 blocks, so two blocks overlap their score and
 * threshold phases. */
#define STAGE1_MMA_ROWS 32
#define STAGE1_MMA_THREADS 256

/* Dynamic shared memory of the tensor-core stage 1: scores of its rows,
 * the mask words, and one tile each of high and low block keys. */
static size_t stage1_mma_smem(const dacuda_params *p, int64_t *zstride)
{
    const int64_t zs = (p->num_blocks + MMA_KEYS - 1) / MMA_KEYS * MMA_KEYS;
    if (zstride)
        *zstride = zs;
    const size_t head = (size_t)STAGE1_MMA_ROWS * (size_t)zs * sizeof(float) +
                        (size_t)((p->num_blocks + 31) / 32) * sizeof(uint32_t);
    return ((head + 127) & ~(size_t)127) + 2 * (size_t)MMA_KEYS * (size_t)p->head_dim * 2;
}

/* Stage 1 on the tensor cores for 32 rows of one query head: z = q . kbar
 * with kbar split into a 16-bit high part and remainder (two products into
 * one f32 accumulator), so the scores carry about f32 accuracy. */
template <int D, typename T>
__global__ void __launch_bounds__(STAGE1_MMA_THREADS)
    stage1_mma_kernel(dacuda_params p, dashattn_tensor q, dacuda_forward_ws ws,
                      dashattn_selection sel, int64_t zstride)
{
    extern __shared__ __align__(128) unsigned char smem_tc[];
    constexpr int KSTEPS = D / 16;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, qd = lane & 3;
    const int64_t b = blockIdx.z, h = blockIdx.y, kvh = h / p.group_size;
    const int64_t row0 = (int64_t)blockIdx.x * STAGE1_MMA_ROWS;
    const int rows = (int)min((int64_t)STAGE1_MMA_ROWS, p.len_q - row0);
    float *zs = reinterpret_cast<float *>(smem_tc);
    unsigned *mask = reinterpret_cast<unsigned *>(zs + STAGE1_MMA_ROWS * zstride);
    size_t head = (size_t)STAGE1_MMA_ROWS * zstride * sizeof(float) + ws.words * sizeof(unsigned);
    head = (head + 127) & ~(size_t)127;
    const uint32_t tiles = smem_addr(smem_tc + head);
    const uint32_t hi_tile = tiles, lo_tile = tiles + MMA_KEYS * D * 2;
    __shared__ unsigned long long block_counts[2];
    for (int64_t w = tid; w < ws.words; w += blockDim.x)
        mask[w] = 0;
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
        const int64_t r = min(row0 + rg * 16 + g + half * 8, p.len_q - 1);
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
    stage1_finish(p, ws, sel, zs, zstride, rows, row0, b, h, mask, block_counts);
}

} // namespace

template <int D, typename T>
static cudaError_t launch_mma(const dacuda_params *p, const dashattn_tensor *q,
                              const dacuda_forward_ws *ws, const dashattn_selection &s,
                              cudaStream_t stream)
{
    int64_t zstride;
    const size_t smem = stage1_mma_smem(p, &zstride);
    cudaError_t e = cudaFuncSetAttribute(stage1_mma_kernel<D, T>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e != cudaSuccess)
        return e;
    const dim3 grid((unsigned)((p->len_q + STAGE1_MMA_ROWS - 1) / STAGE1_MMA_ROWS),
                    (unsigned)p->heads_q, (unsigned)p->batch);
    stage1_mma_kernel<D, T><<<grid, STAGE1_MMA_THREADS, smem, stream>>>(*p, *q, *ws, s, zstride);
    return cudaGetLastError();
}

extern "C" size_t dacuda_stage1_mma_smem(const dacuda_params *p)
{
    return stage1_mma_smem(p, NULL);
}

extern "C" cudaError_t dacuda_launch_stage1(const dacuda_params *p, const dashattn_tensor *q,
                                            const dacuda_forward_ws *ws,
                                            const dashattn_selection *sel, int fast,
                                            cudaStream_t stream)
{
    dashattn_selection s = {0, 0, 0, 0};
    if (sel)
        s = *sel;
    if (fast) {
        const bool bf16 = p->dtype == DASHATTN_BF16;
        if (p->head_dim == 64)
            return bf16 ? launch_mma<64, __nv_bfloat16>(p, q, ws, s, stream)
                        : launch_mma<64, __half>(p, q, ws, s, stream);
        return bf16 ? launch_mma<128, __nv_bfloat16>(p, q, ws, s, stream)
                    : launch_mma<128, __half>(p, q, ws, s, stream);
    }
    const size_t smem = dacuda_stage1_smem(p);
    cudaError_t e =
        cudaFuncSetAttribute(stage1_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e != cudaSuccess)
        return e;
    const dim3 grid((unsigned)((p->len_q + DACUDA_STAGE1_ROWS - 1) / DACUDA_STAGE1_ROWS),
                    (unsigned)(p->shared_group ? p->heads_kv : p->heads_q), (unsigned)p->batch);
    stage1_kernel<<<grid, 128, smem, stream>>>(*p, *q, *ws, s);
    return cudaGetLastError();
}
