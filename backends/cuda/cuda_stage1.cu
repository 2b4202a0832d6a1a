/* SPDX-License-Identifier: MIT */
/* Stage 1 of a forward call: block scores, the entmax (or top-k) threshold
 * of every query row, the union of blocks each stage-2 tile must read, and
 * the optional selection output and sparsity counts. */
#include "cuda_entmax.cuh"
#include "cuda_mma.cuh"

namespace
{

/* Selection output, mask bits and pair counts of query row i for the heads
 * h0 .. h0 + heads - 1, which all give candidate j the log2 prior l2_of(j)
 * (forced blocks: 1). One warp; mask and block_counts are the thread
 * block's shared accumulators. */
template <typename L2>
static __device__ void emit_row(const dacuda_params &p, const dashattn_selection &sel,
                                const da_rows &lr, int64_t b, int64_t i, int64_t h0, int heads,
                                L2 l2_of, unsigned *mask, unsigned long long *block_counts)
{
    const int64_t M = p.num_blocks;
    const int lane = threadIdx.x & 31;
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
                const float l2 = l2_of(j);
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
        for (int g = 0; g < heads; g++) {
            if (keep) {
                const int64_t slot = ((b * p.heads_q + h0 + g) * p.len_q + i) * sel.max_blocks +
                                     count + __popc(ballot & ((1u << lane) - 1u));
                if (sel.block_index)
                    sel.block_index[slot] = (int32_t)j;
                if (sel.block_weight)
                    sel.block_weight[slot] = w;
            }
        }
        count += __popc(ballot);
    }
    for (int g = 0; g < heads; g++) {
        const int64_t row = (b * p.heads_q + h0 + g) * p.len_q + i;
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
        atomicAdd(block_counts, (unsigned long long)lr.visible_end * heads);
        atomicAdd(block_counts + 1, attended * heads);
    }
}

/* After every row of the thread block was emitted: its mask words into the
 * tile masks of heads h0 .. h0 + heads - 1, its counts into the totals. */
static __device__ void flush_block(const dacuda_forward_ws &ws, const dacuda_params &p,
                                   int64_t row0, int64_t b, int64_t h0, int heads,
                                   const unsigned *mask, const unsigned long long *block_counts)
{
    __syncthreads();
    const int tid = threadIdx.x;
    const int64_t tile = row0 / DACUDA_TILE_ROWS;
    for (int64_t e = tid; e < heads * ws.words; e += blockDim.x) {
        const int64_t g = e / ws.words, w = e % ws.words;
        if (mask[w])
            atomicOr(ws.masks + ((b * p.heads_q + h0 + g) * ws.tiles + tile) * ws.words + w,
                     mask[w]);
    }
    if (tid < 2 && ws.counts)
        atomicAdd(ws.counts + tid, block_counts[tid]);
}

/* Thresholds, block masks, selection output and counts of rows
 * [row0, row0 + rows) from their scores zs[r * zstride + j] (candidates
 * only), per query head hh, or per KV head hh in shared mode (which also
 * writes the priors to ws.prior for stage 2). mask (words
 * entries) and block_counts (2) are shared memory, zeroed before the scores
 * were written; called by every thread of the block. */
static __device__ void stage1_finish(const dacuda_params &p, const dacuda_forward_ws &ws,
                                     const dashattn_selection &sel, const float *zs,
                                     int64_t zstride, int rows, int64_t row0, int64_t b, int64_t hh,
                                     unsigned *mask, unsigned long long *block_counts)
{
    const int64_t G = p.group_size;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int heads_out = p.shared_group ? (int)G : 1;
    const int64_t h0 = p.shared_group ? hh * G : hh;
    for (int r = warp; r < rows; r += blockDim.x / 32) {
        const int64_t i = row0 + r;
        const da_rows lr = da_row_layout(p, i + p.query_offset, p.len_k);
        const int n = (int)(lr.cand_end - lr.cand_begin);
        const float *z = zs + r * zstride;
        dacuda_row_param rp = {DACUDA_PRIOR_NONE, 0.0f, 0.0f, 0.0f, 0.0f};
        if (n > 0)
            rp = da_row_threshold(z + lr.cand_begin, n, p);
        if (p.prior_flat && n > 0)
            rp.mu = da_flat_mu(
                n, [&](int64_t e) { return da_prior_log2(rp, z[lr.cand_begin + e], p.alpha); });
        emit_row(
            p, sel, lr, b, i, h0, heads_out,
            [&](int64_t j) { return da_candidate_log2(p, rp, z[j]); }, mask, block_counts);
        if (p.prior_table) {
            float *out = ws.prior + ((b * p.heads_kv + hh) * p.len_q + i) * p.num_blocks;
            for (int64_t j = lr.cand_begin + lane; j < lr.cand_end; j += 32)
                out[j] = da_candidate_log2(p, rp, z[j]);
        }
        for (int g = 0; g < heads_out; g++)
            if (lane == 0)
                ws.rows[(b * p.heads_q + h0 + g) * p.len_q + i] = rp;
    }
    flush_block(ws, p, row0, b, h0, heads_out, mask, block_counts);
}

/* The same in group-mean mode, for the G heads of KV head kvh over rows
 * [row0, row0 + rows): query vector a = g * R + r is head kvh * G + g at row
 * row0 + r. Each head's entmax gives its p; the group's mean pbar is every
 * head's weight, and its log2 prior goes to ws.prior for stage 2. params
 * holds G * R row parameters in shared memory. Row r's scores (vector r)
 * are overwritten by the group's log2 priors. */
static __device__ void stage1_finish_group(const dacuda_params &p, const dacuda_forward_ws &ws,
                                           const dashattn_selection &sel, float *zs,
                                           int64_t zstride, int R, int rows, int64_t row0,
                                           int64_t b, int64_t kvh, dacuda_row_param *params,
                                           unsigned *mask, unsigned long long *block_counts)
{
    const int G = (int)p.group_size, warps = blockDim.x / 32;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (int a = warp; a < G * R; a += warps) {
        const int r = a % R;
        if (r >= rows)
            continue;
        const da_rows lr = da_row_layout(p, row0 + r + p.query_offset, p.len_k);
        const int n = (int)(lr.cand_end - lr.cand_begin);
        dacuda_row_param rp = {DACUDA_PRIOR_NONE, 0.0f, 0.0f, 0.0f, 0.0f};
        if (n > 0)
            rp = da_row_threshold(zs + a * zstride + lr.cand_begin, n, p);
        if (lane == 0)
            params[a] = rp;
    }
    __syncthreads();
    for (int r = warp; r < rows; r += warps) {
        const int64_t i = row0 + r;
        const da_rows lr = da_row_layout(p, i + p.query_offset, p.len_k);
        const int64_t cb = lr.cand_begin, n = lr.cand_end - lr.cand_begin;
        float *prior = zs + r * zstride;
        for (int64_t e = lane; e < n; e += 32) {
            float top = -CUDART_INF_F, sum = 0.0f;
            for (int g = 0; g < G; g++) {
                const int a = g * R + r;
                da_log2_mean_add(top, sum,
                                 da_prior_log2(params[a], zs[a * zstride + cb + e], p.alpha));
            }
            prior[cb + e] = da_log2_mean(top, sum, G);
        }
        float *out = ws.prior + ((b * p.heads_kv + kvh) * p.len_q + i) * p.num_blocks;
        if (p.prior_flat) {
            const float mu = da_flat_mu(n, [&](int64_t e) { return prior[cb + e]; });
            for (int64_t e = lane; e < n; e += 32)
                prior[cb + e] = da_flatten(prior[cb + e], mu, p.inv_sigma);
        }
        for (int64_t e = lane; e < n; e += 32)
            out[cb + e] = prior[cb + e];
        __syncwarp(); /* emit_row reads other lanes' entries */
        emit_row(
            p, sel, lr, b, i, kvh * G, G, [&](int64_t j) { return prior[j]; }, mask, block_counts);
    }
    flush_block(ws, p, row0, b, kvh * G, G, mask, block_counts);
}

/* One thread block scores R rows of one query head, of one KV head in
 * shared mode (on the group-mean query), or in group-mean mode the G heads
 * of one KV head for R rows (query vector a = g * R + r). R is
 * DACUDA_STAGE1_ROWS except in group-mean mode (dacuda_stage1_rows). */
__global__ void __launch_bounds__(128)
    stage1_kernel(dacuda_params p, dashattn_tensor q, dacuda_forward_ws ws, dashattn_selection sel,
                  int R)
{
    extern __shared__ float smem[];
    const int64_t D = p.head_dim, M = p.num_blocks, G = p.group_size;
    const int64_t b = blockIdx.z, hh = blockIdx.y;
    const int64_t kvh = p.shared_group || p.group_mean ? hh : hh / G;
    const int64_t row0 = (int64_t)blockIdx.x * R;
    const int rows = (int)min((int64_t)R, p.len_q - row0);
    const int64_t vectors = p.group_mean ? G * R : R;
    float *qs = smem;
    float *zs = smem + vectors * D;
    dacuda_row_param *params = reinterpret_cast<dacuda_row_param *>(zs + vectors * M);
    /* The rows' blocks and counts are gathered here first: one global atomic
     * per word per thread block instead of one per row. */
    unsigned *mask = reinterpret_cast<unsigned *>(params + (p.group_mean ? vectors : 0));
    __shared__ unsigned long long block_counts[2];
    const int tid = threadIdx.x;
    for (int64_t w = tid; w < ws.words; w += blockDim.x)
        mask[w] = 0;
    if (tid < 2)
        block_counts[tid] = 0;

    for (int64_t idx = tid; idx < vectors * D; idx += blockDim.x) {
        const int64_t a = idx / D, d = idx % D, r = a % R;
        if (r >= rows)
            continue;
        float x;
        if (p.shared_group) {
            float acc = 0.0f;
            for (int64_t g = 0; g < G; g++)
                acc += da_load(q.data, q.dtype, da_offset(q, b, hh * G + g, row0 + r, d));
            x = acc / (float)G;
        } else {
            const int64_t h = p.group_mean ? hh * G + a / R : hh;
            x = da_load(q.data, q.dtype, da_offset(q, b, h, row0 + r, d));
        }
        qs[a * D + d] = x;
    }
    __syncthreads();

    const float *kbar = ws.kbar + (b * p.heads_kv + kvh) * M * D;
    for (int64_t idx = tid; idx < vectors * M; idx += blockDim.x) {
        const int64_t a = idx / M, j = idx % M, r = a % R;
        if (r >= rows)
            continue;
        const da_rows lr = da_row_layout(p, row0 + r + p.query_offset, p.len_k);
        if (j >= lr.cand_begin && j < lr.cand_end)
            zs[a * M + j] = da_block_score(qs + a * D, kbar + j * D, D, p.stage1_scale);
    }
    __syncthreads();

    if (p.group_mean)
        stage1_finish_group(p, ws, sel, zs, M, R, rows, row0, b, hh, params, mask, block_counts);
    else
        stage1_finish(p, ws, sel, zs, M, rows, row0, b, hh, mask, block_counts);
}

/* Rows of one tensor-core stage-1 block, and its threads. 32 rows with one
 * buffer of block keys keep the shared memory under half of a
 * multiprocessor's at 512 blocks, so two blocks overlap their score and
 * threshold phases. */
#define STAGE1_MMA_ROWS 32
#define STAGE1_MMA_THREADS 256

/* Bytes before the block-key tiles in the tensor-core stage 1's shared
 * memory: scores of its 32 query vectors, the mask words and, in group-mean
 * mode, their row parameters; then 128-byte alignment for the tiles. */
static __host__ __device__ size_t stage1_mma_head(int64_t zstride, int64_t words, int group_mean)
{
    const size_t head = (size_t)STAGE1_MMA_ROWS * (size_t)zstride * sizeof(float) +
                        (size_t)words * sizeof(uint32_t) +
                        (group_mean ? STAGE1_MMA_ROWS * sizeof(dacuda_row_param) : 0);
    return (head + 127) & ~(size_t)127;
}

/* Dynamic shared memory of the tensor-core stage 1: the head above and one
 * tile each of high and low block keys. */
static size_t stage1_mma_smem(const dacuda_params *p, int64_t *zstride)
{
    const int64_t zs = (p->num_blocks + MMA_KEYS - 1) / MMA_KEYS * MMA_KEYS;
    if (zstride)
        *zstride = zs;
    return stage1_mma_head(zs, (p->num_blocks + 31) / 32, p->group_mean) +
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
    stage1_mma_kernel(dacuda_params p, dashattn_tensor q, dacuda_forward_ws ws,
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
    unsigned *mask = reinterpret_cast<unsigned *>(zs + STAGE1_MMA_ROWS * zstride);
    dacuda_row_param *params = reinterpret_cast<dacuda_row_param *>(mask + ws.words);
    const uint32_t tiles = smem_addr(smem_tc + stage1_mma_head(zstride, ws.words, p.group_mean));
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
    const int R = dacuda_stage1_rows(p, STAGE1_MMA_ROWS);
    const dim3 grid((unsigned)((p->len_q + R - 1) / R),
                    (unsigned)(p->group_mean ? p->heads_kv : p->heads_q), (unsigned)p->batch);
    stage1_mma_kernel<D, T><<<grid, STAGE1_MMA_THREADS, smem, stream>>>(*p, *q, *ws, s, zstride, R);
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
    const int R = dacuda_stage1_rows(p, DACUDA_STAGE1_ROWS);
    const dim3 grid((unsigned)((p->len_q + R - 1) / R),
                    (unsigned)(p->shared_group || p->group_mean ? p->heads_kv : p->heads_q),
                    (unsigned)p->batch);
    stage1_kernel<<<grid, 128, smem, stream>>>(*p, *q, *ws, s, R);
    return cudaGetLastError();
}
