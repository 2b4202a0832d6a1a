/* SPDX-License-Identifier: MIT */
/* Decode: stage 1 in four kernels spread over the whole GPU even for one
 * sequence (block scores per chunk of blocks, one thread block per query
 * row for its threshold, a thread per block for its weights, one thread
 * block per (sequence, KV head) for the list of blocks to read), then
 * split-KV attention over the blocks any head of the group selected (each
 * loaded block serves all G query heads), then a merge of the splits. On
 * sm_90 each kernel after the first is launched while the one before it
 * drains (programmatic dependent launch) and waits for its results at
 * da_wait_previous. */
#include "gpu_cache.cuh"
#include "gpu_entmax.cuh"

namespace
{

#define SCORE_THREADS 256
#define SCORE_BLOCKS 64
/* The most threads per row's threshold (the plan picks 128 or 512). */
#define THRESHOLD_THREADS 512
#define WEIGHT_THREADS 256
#define UNION_THREADS 512
#define SPLIT_THREADS 128

/* Four consecutive elements of a 16-bit or f32 tensor as floats; the
 * caller checked that they are aligned for one vector load. */
static __device__ __forceinline__ float4 load4(const void *base, int dtype, int64_t i)
{
    if (dtype == DASHATTN_F32)
        return *reinterpret_cast<const float4 *>(static_cast<const float *>(base) + i);
    const uint2 w = *reinterpret_cast<const uint2 *>(static_cast<const uint16_t *>(base) + i);
    const uint16_t h[4] = {(uint16_t)(w.x & 0xffffu), (uint16_t)(w.x >> 16),
                           (uint16_t)(w.y & 0xffffu), (uint16_t)(w.y >> 16)};
    float f[4];
    for (int e = 0; e < 4; e++)
        f[e] = da_load(h + e, dtype, 0);
    return make_float4(f[0], f[1], f[2], f[3]);
}

/* Whether the block keys can be read four elements at a time: rows of a
 * multiple of 16 contiguous elements (four lanes take four each in turn),
 * every stride and the base aligned. */
static __device__ bool block_keys_vector_ok(const dashattn_tensor &t, int64_t D)
{
    const int64_t es = t.dtype == DASHATTN_F32 ? 4 : 2;
    return t.strides[3] == 1 && D % 16 == 0 && t.strides[0] % 4 == 0 && t.strides[1] % 4 == 0 &&
           t.strides[2] % 4 == 0 && (reinterpret_cast<uintptr_t>(t.data) % (4 * es)) == 0;
}

/* Lanes that share one block key in decode_scores_kernel, and the float4
 * chunks of it each lane loads at once (a 128-dim key in one go). */
#define KEY_LANES 4
#define KEY_CHUNKS 8

/* Stage-1 scores of the cached block keys for all G <= MG heads of a KV
 * head, reading every block key once: KEY_LANES lanes per key, so a warp
 * scores 32 / KEY_LANES keys at a time and each head's sum takes two
 * shuffles shared by those keys (a whole warp per key spent five shuffles
 * per head and key, which made this kernel bound by shuffles, not memory).
 * z goes into the log2w array, which decode_union_kernel turns into
 * priors in place. A block whose page is not in the pool scores NaN (the
 * union reports it). */
template <int MG>
__global__ void __launch_bounds__(SCORE_THREADS)
    decode_scores_kernel(dagpu_params p, dashattn_tensor q, dashattn_kv_cache c, dagpu_decode_ws ws)
{
    da_wait_previous();
    extern __shared__ float smem[];
    const int64_t kvh = blockIdx.y, b = blockIdx.z;
    const int64_t D = p.head_dim, M = p.num_blocks;
    const int G = (int)p.group_size;
    const int lane = da_lane<DA_WARP>(), warp = da_warp_id<DA_WARP>(),
              warps = SCORE_THREADS / DA_WARP;
    const int part = lane % KEY_LANES, slot = lane / KEY_LANES;
    constexpr int KEYS_PER_WARP = DA_WARP / KEY_LANES;
    const int64_t len = c.seq_lens[b];
    if (len < 1 || len > p.len_k)
        return;
    const da_rows lr = da_row_layout(p, len - 1, len);
    const int64_t first = max(lr.cand_begin, (int64_t)blockIdx.x * SCORE_BLOCKS);
    const int64_t last = min(lr.cand_end, (int64_t)(blockIdx.x + 1) * SCORE_BLOCKS);
    if (first >= last)
        return;
    float *qs = smem; /* [G][D] */
    /* 32-bit index arithmetic: a 64-bit division is a long software
     * sequence (measured: 0.5 us of this kernel's 14.5 at batch 1, G 16). */
    for (int e = (int)threadIdx.x, dim = (int)D; e < G * dim; e += SCORE_THREADS) {
        const int g = e / dim;
        qs[e] = da_load(q.data, q.dtype, da_offset(q, b, kvh * G + g, 0, e - g * dim));
    }
    __syncthreads();
    const bool vec = block_keys_vector_ok(c.block_keys, D);
    float *z_group = ws.log2w + (b * p.heads_q + kvh * G) * M;
    for (int64_t j0 = first + warp * KEYS_PER_WARP; j0 < last; j0 += warps * KEYS_PER_WARP) {
        const int64_t j = j0 + slot;
        const bool in = j < last;
        bool ok = in;
        if (in && c.layout == DASHATTN_CACHE_PAGED)
            ok = da_page_of(c, b, j) >= 0;
        float acc[MG];
#pragma unroll
        for (int g = 0; g < MG; g++)
            acc[g] = 0.0f;
        if (ok && vec) {
            /* KEY_CHUNKS loads in flight before any is used: one at a time,
             * the kernel waited out the memory latency per chunk. */
            const int64_t key = da_block_key_offset(c, b, kvh, j, 0);
            for (int64_t d0 = part * 4; d0 < D; d0 += 4 * KEY_LANES * KEY_CHUNKS) {
                float4 x[KEY_CHUNKS];
#pragma unroll
                for (int k = 0; k < KEY_CHUNKS; k++) {
                    const int64_t d = d0 + k * 4 * KEY_LANES;
                    x[k] = d < D ? load4(c.block_keys.data, c.block_keys.dtype, key + d)
                                 : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
                }
#pragma unroll
                for (int k = 0; k < KEY_CHUNKS; k++) {
                    const int64_t d = d0 + k * 4 * KEY_LANES;
                    if (d >= D)
                        break;
#pragma unroll
                    for (int g = 0; g < MG; g++) {
                        if (g < G) {
                            const float4 y = *reinterpret_cast<const float4 *>(qs + g * D + d);
                            acc[g] += y.x * x[k].x + y.y * x[k].y + y.z * x[k].z + y.w * x[k].w;
                        }
                    }
                }
            }
        } else if (ok) {
            for (int64_t d = part; d < D; d += KEY_LANES) {
                const float x = da_load(c.block_keys.data, c.block_keys.dtype,
                                        da_block_key_offset(c, b, kvh, j, d));
#pragma unroll
                for (int g = 0; g < MG; g++)
                    if (g < G)
                        acc[g] = fmaf(qs[g * D + d], x, acc[g]);
            }
        }
#pragma unroll
        for (int g = 0; g < MG; g++) {
            if (g < G) { /* the same for every lane */
                float t = acc[g];
                for (int o = 1; o < KEY_LANES; o <<= 1)
                    t += da_shfl_xor<DA_WARP>(t, o);
                if (in && part == g % KEY_LANES)
                    z_group[g * M + j] = ok ? t * p.stage1_scale : DA_NAN_F;
            }
        }
    }
}

/* The score of candidate j (absolute block index) that the threshold of
 * row r of a group was taken on: head r's own, or in shared mode the
 * group's mean (summed in one order, so both kernels agree to the bit). */
static __device__ __forceinline__ float row_score(const dagpu_params &p, const float *z_group,
                                                  int64_t r, int64_t j)
{
    const int64_t M = p.num_blocks;
    if (!p.shared_group)
        return z_group[r * M + j];
    float mean = 0.0f;
    for (int64_t g = 0; g < p.group_size; g++)
        mean += z_group[g * M + j];
    return mean / (float)p.group_size;
}

/* The threshold of one query row (a head, or in shared mode the group's
 * mean score) over its candidates, by the whole block: at batch 1 there are
 * only Hq rows, and each must finish in microseconds. */
__global__ void __launch_bounds__(THRESHOLD_THREADS)
    decode_threshold_kernel(dagpu_params p, dashattn_kv_cache c, dagpu_decode_ws ws)
{
    da_wait_previous();
    extern __shared__ float zs[];
    __shared__ double scratch[DA_GROUP_SCRATCH];
    const int64_t r = blockIdx.x, kvh = blockIdx.y, b = blockIdx.z, G = p.group_size;
    const int64_t len = c.seq_lens[b];
    if (len < 1 || len > p.len_k)
        return; /* decode_union_kernel reports it */
    const da_rows lr = da_row_layout(p, len - 1, len);
    const int64_t cb = lr.cand_begin, n = lr.cand_end - lr.cand_begin;
    const float *z_group = ws.log2w + (b * p.heads_q + kvh * G) * p.num_blocks;
    for (int64_t e = threadIdx.x; e < n; e += blockDim.x)
        zs[e] = row_score(p, z_group, r, cb + e);
    __syncthreads();
    dagpu_row_param rp = {DAGPU_PRIOR_NONE, 0.0f, 0.0f, 0.0f, 0.0f};
    if (n > 0)
        rp = da_row_threshold(da_block_group{scratch}, zs, (int)n, p, true);
    if (threadIdx.x == 0)
        ws.rows[b * p.heads_q + kvh * G + r] = rp;
}

/* Candidates' log2 weights in place of their scores: ws.weight_lanes
 * threads per block, each over heads g, g + lanes, ... (at batch 1 a
 * thread per head: one thread looping over 16 heads waited out 16
 * dependent chains, on few warps per SM), the group's mean then combined by
 * shuffles. One row per head in per-head mode, else the group's one weight
 * in the first head's row (ws.wstride 0). */
__global__ void __launch_bounds__(WEIGHT_THREADS)
    decode_weights_kernel(dagpu_params p, dashattn_kv_cache c, dagpu_decode_ws ws)
{
    da_wait_previous();
    __shared__ dagpu_row_param params[DAGPU_DECODE_MAX_GROUP];
    const int64_t kvh = blockIdx.y, b = blockIdx.z, M = p.num_blocks, G = p.group_size;
    const int64_t len = c.seq_lens[b];
    if (len < 1 || len > p.len_k)
        return; /* decode_union_kernel reports it */
    const da_rows lr = da_row_layout(p, len - 1, len);
    const int rows = p.shared_group ? 1 : (int)G;
    for (int r = threadIdx.x; r < rows; r += WEIGHT_THREADS)
        params[r] = ws.rows[b * p.heads_q + kvh * G + r];
    __syncthreads();
    const int W = ws.weight_lanes, g = (int)threadIdx.x % W;
    const int64_t j =
        lr.cand_begin + ((int64_t)blockIdx.x * WEIGHT_THREADS + (int64_t)threadIdx.x) / W;
    const bool in = j < lr.cand_end;
    float *w_group = ws.log2w + (b * p.heads_q + kvh * G) * M;
    if (p.shared_group) { /* W is 1 */
        if (in)
            w_group[j] = da_prior_log2(params[0], row_score(p, w_group, 0, j), p.alpha);
        return;
    }
    float top = -DA_INF_F, sum = 0.0f;
    for (int64_t h = g; in && h < G; h += W) {
        const float l2 = da_prior_log2(params[h], w_group[h * M + j], p.alpha);
        if (p.group_mean)
            da_log2_mean_add(top, sum, l2);
        else
            w_group[h * M + j] = l2;
    }
    if (!p.group_mean)
        return;
    /* Two partial means (top, sum) combined: a lane with no weight has sum
     * 0 and adds nothing; a NaN stays in the sum. */
    for (int o = 1; o < W; o <<= 1) {
        const float ot = da_shfl_xor<DA_WARP>(top, o), os = da_shfl_xor<DA_WARP>(sum, o);
        const float t = fmaxf(top, ot);
        sum =
            (sum == 0.0f ? 0.0f : sum * exp2f(top - t)) + (os == 0.0f ? 0.0f : os * exp2f(ot - t));
        top = t;
    }
    if (in && g == 0) /* after every head's score of block j was read */
        w_group[j] = da_log2_mean(top, sum, G);
}

/* The final weights and the list of blocks to read of one (sequence, KV
 * head): forced blocks get weight 1, blocks outside the candidates none,
 * the flat prior flattens the candidates', and the blocks any head reads
 * are listed in ascending order by a block-wide scan; nblocks = -1 marks a
 * sequence whose seq_lens entry or block table is bad. */
__global__ void __launch_bounds__(UNION_THREADS)
    decode_union_kernel(dagpu_params p, dashattn_kv_cache c, dagpu_decode_ws ws,
                        dagpu_device_error *err)
{
    da_wait_previous();
    __shared__ double scratch[DA_GROUP_SCRATCH];
    __shared__ float mu[DAGPU_DECODE_MAX_GROUP];
    __shared__ int warp_counts[UNION_THREADS / DA_WARP];
    const int64_t kvh = blockIdx.x, b = blockIdx.y;
    const int64_t M = p.num_blocks, G = p.group_size, S = p.block_size;
    const int tid = threadIdx.x;
    int32_t *nblocks = ws.nblocks + b * p.heads_kv + kvh;
    const int64_t len = c.seq_lens[b];
    int value;
    const int bad = da_check_sequence_block(p, c, b, len, &value);
    if (bad) {
        if (tid == 0) {
            da_report(err, DASHATTN_ERR_INVALID_ARGUMENT, (int)b, value, bad);
            *nblocks = -1;
        }
        return;
    }
    const da_rows lr = da_row_layout(p, len - 1, len);
    const int64_t cb = lr.cand_begin, ce = lr.cand_end;
    /* Rows with their own weights: every head in per-head mode, else one. */
    const int wrows = p.shared_group || p.group_mean ? 1 : (int)G;
    float *w_group = ws.log2w + (b * p.heads_q + kvh * G) * M;
    if (p.prior_flat) {
        /* One group for all rows: its reductions take the scratch's halves
         * in turn (a fresh group per row would write the half the last row's
         * slowest warp may still be reading). */
        const da_block_group grp{scratch};
        for (int r = 0; r < wrows; r++) {
            const float m =
                da_flat_mu(grp, ce - cb, [&](int64_t e) { return w_group[r * M + cb + e]; });
            if (tid == 0)
                mu[r] = m;
        }
        __syncthreads();
    }

    /* Every block's final weight, and the list by rounds of UNION_THREADS
     * blocks: a ballot per warp, the warps' counts through shared memory. */
    const int64_t visible_blocks = (len + S - 1) / S;
    int count = 0;
    int32_t *list = ws.blocks + (b * p.heads_kv + kvh) * M;
    const int lane = da_lane<DA_WARP>(), warp = da_warp_id<DA_WARP>();
    for (int64_t j0 = 0; j0 < M; j0 += UNION_THREADS) {
        const int64_t j = j0 + tid;
        bool keep = false;
        if (j < M) {
            const bool cand = j >= cb && j < ce && j < visible_blocks;
            for (int r = 0; r < wrows; r++) {
                float w = -DA_INF_F;
                if (j < visible_blocks && da_forced(lr, j))
                    w = 0.0f;
                else if (cand) {
                    w = w_group[r * M + j];
                    if (p.prior_flat)
                        w = da_flatten(w, mu[r], p.inv_sigma);
                }
                w_group[r * M + j] = w;
                keep |= !(w == -DA_INF_F);
            }
        }
        const uint32_t bits = da_ballot<DA_WARP>(keep);
        if (lane == 0)
            warp_counts[warp] = __popc(bits);
        __syncthreads();
        int before = count, total = count;
        for (int w = 0; w < UNION_THREADS / DA_WARP; w++) {
            before += w < warp ? warp_counts[w] : 0;
            total += warp_counts[w];
        }
        if (keep)
            list[before + __popc(bits & ((1u << lane) - 1u))] = (int32_t)j;
        count = total;
        __syncthreads(); /* warp_counts is rewritten next round */
    }
    if (tid == 0)
        *nblocks = count;
}

/* Shared memory of one split with tiles of T tokens: the G queries, a tile
 * of keys and values as f32, scores, and the running (m, l, o) of each head.
 * The plan picks T (64, or 32 or 16 where 64 does not fit: AMD's 64 KiB). */
struct split_smem_layout {
    float *qs, *ks, *vs, *ss, *os, *ml;
    int64_t kstride, T;
};

static __device__ split_smem_layout split_layout(float *smem, int64_t G, int64_t D, int64_t T)
{
    split_smem_layout L;
    L.T = T;
    L.kstride = D + 1;   /* padded rows: threads scoring different tokens hit different banks */
    L.qs = smem;         /* [G][D], pre-scaled to log2 units */
    L.ks = L.qs + G * D; /* [T][D + 1] */
    L.vs = L.ks + T * L.kstride; /* [T][D] */
    L.ss = L.vs + T * D;         /* [G][T]: scores, then weights */
    L.os = L.ss + G * T;         /* [G][D] */
    L.ml = L.os + G * D;         /* [G][3]: m, l, correction */
    return L;
}

/* Online-softmax update of every head with the tile in shared memory (tokens
 * valid keys of block j). Ends with the tile no longer needed. */
static __device__ void attend_tile(const split_smem_layout &L, const float *log2w, int64_t wstride,
                                   int64_t G, int64_t D, int64_t j, int64_t tokens)
{
    const int tid = threadIdx.x, lane = da_lane<DA_WARP>(), warp = da_warp_id<DA_WARP>();
    for (int64_t e = tid; e < G * L.T; e += SPLIT_THREADS) {
        const int64_t g = e / L.T, t = e % L.T;
        const float prior = log2w[g * wstride + j];
        float s = -DA_INF_F;
        if (t < tokens && !(prior == -DA_INF_F)) {
            float acc = 0.0f;
            const float *qg = L.qs + g * D, *kt = L.ks + t * L.kstride;
            for (int64_t d = 0; d < D; d++)
                acc = fmaf(qg[d], kt[d], acc);
            s = acc + prior;
        }
        L.ss[e] = s;
    }
    __syncthreads();
    for (int64_t g = warp; g < G; g += SPLIT_THREADS / DA_WARP) {
        float *sg = L.ss + g * L.T;
        float mx = -DA_INF_F;
        bool nan = false;
        for (int t = lane; t < L.T; t += DA_WARP) {
            mx = fmaxf(mx, sg[t]);
            nan |= isnan(sg[t]);
        }
        mx = da_warp_max<DA_WARP>(mx);
        nan = da_any<DA_WARP>(nan);
        const float m_old = L.ml[g * 3];
        const float m_new = fmaxf(m_old, mx);
        float sum = 0.0f;
        for (int t = lane; t < L.T; t += DA_WARP) {
            const float w = nan ? DA_NAN_F : (sg[t] == -DA_INF_F ? 0.0f : exp2f(sg[t] - m_new));
            sg[t] = w;
            sum += w;
        }
        sum = da_warp_sum<DA_WARP>(sum);
        /* Every lane read m_old before lane 0 overwrites it: the shuffles
         * order no shared memory (compute-sanitizer's racecheck). */
        da_warp_sync<DA_WARP>();
        if (lane == 0) {
            const float corr = m_new == -DA_INF_F ? 1.0f : exp2f(m_old - m_new);
            L.ml[g * 3] = m_new;
            L.ml[g * 3 + 1] = L.ml[g * 3 + 1] * corr + sum;
            L.ml[g * 3 + 2] = corr;
        }
    }
    __syncthreads();
    for (int64_t e = tid; e < G * D; e += SPLIT_THREADS) {
        const int64_t g = e / D, d = e % D;
        const float *sg = L.ss + g * L.T;
        float acc = L.os[e] * L.ml[g * 3 + 2];
        for (int64_t t = 0; t < tokens; t++)
            acc = fmaf(sg[t], L.vs[t * D + d], acc);
        L.os[e] = acc;
    }
}

/* One split of one (sequence, KV head): online softmax over its share of the
 * selected blocks for all G heads at once; writes (m, l, o) per head. Any
 * dtype, head dimension, block size and strides; 16-bit caches with the
 * common shapes may take the tensor-core kernel (nv/nv_decode.cu) instead. */
__global__ void __launch_bounds__(SPLIT_THREADS)
    decode_split_kernel(dagpu_params p, dashattn_tensor q, dashattn_kv_cache c, dagpu_decode_ws ws,
                        int T)
{
    da_wait_previous();
    extern __shared__ float smem[];
    const int64_t split = blockIdx.x, kvh = blockIdx.y, b = blockIdx.z;
    const int64_t D = p.head_dim, G = p.group_size, M = p.num_blocks, S = p.block_size;
    const int tid = threadIdx.x;
    const int nb = ws.nblocks[b * p.heads_kv + kvh];
    float *part = ws.partial + ((b * p.heads_q + kvh * G) * ws.splits + split) * (D + 2);
    const int64_t part_head = ws.splits * (D + 2);
    if (nb < 0)
        return;
    const int64_t first = (int64_t)nb * split / ws.splits,
                  last = (int64_t)nb * (split + 1) / ws.splits;
    const int64_t len = c.seq_lens[b];
    const split_smem_layout L = split_layout(smem, G, D, T);
    const float scale2 = p.scale * DA_LOG2E;
    for (int64_t e = tid; e < G * D; e += SPLIT_THREADS) {
        L.qs[e] = da_load(q.data, q.dtype, da_offset(q, b, kvh * G + e / D, 0, e % D)) * scale2;
        L.os[e] = 0.0f;
    }
    for (int64_t g = tid; g < G; g += SPLIT_THREADS) {
        L.ml[g * 3] = -DA_INF_F;
        L.ml[g * 3 + 1] = 0.0f;
    }
    const int32_t *list = ws.blocks + (b * p.heads_kv + kvh) * M;
    const float *log2w = ws.log2w + (b * p.heads_q + kvh * G) * M;

    for (int64_t u = first; u < last; u++) {
        const int64_t j = list[u];
        const int64_t block_end = min((j + 1) * S, len);
        for (int64_t t0 = j * S; t0 < block_end; t0 += L.T) {
            const int64_t tokens = min((int64_t)L.T, block_end - t0);
            __syncthreads();
            for (int64_t e = tid; e < tokens * D; e += SPLIT_THREADS) {
                const int64_t t = e / D, d = e % D;
                L.ks[t * L.kstride + d] =
                    da_load(c.k.data, c.k.dtype, da_cache_offset(c, c.k, S, b, kvh, t0 + t, d));
                L.vs[t * D + d] =
                    da_load(c.v.data, c.v.dtype, da_cache_offset(c, c.v, S, b, kvh, t0 + t, d));
            }
            __syncthreads();
            attend_tile(L, log2w, ws.wstride, G, D, j, tokens);
        }
    }
    __syncthreads();
    for (int64_t e = tid; e < G * D; e += SPLIT_THREADS)
        part[(e / D) * part_head + 2 + e % D] = L.os[e];
    for (int64_t g = tid; g < G; g += SPLIT_THREADS) {
        part[g * part_head] = L.ml[g * 3];
        part[g * part_head + 1] = L.ml[g * 3 + 1];
    }
}

#define MERGE_WARPS 8
#define MERGE_THREADS (MERGE_WARPS * DA_WARP)

/* The (m, l, o) rows one (sequence, head) merges: count rows from first,
 * stride floats apart. In the tensor-core split's layout (ws.stream_ctas
 * thread blocks sharing one stream of the segments' blocks) row k is what
 * thread block c0 + k saw of the segment (an empty run's row weighs 0). */
struct merge_rows {
    const float *first;
    int64_t count, stride;
};

static __device__ merge_rows merge_rows_of(const dagpu_params &p, const dagpu_decode_ws &ws,
                                           int64_t b, int64_t h)
{
    const int64_t row = p.head_dim + 2, G = p.group_size;
    merge_rows R;
    if (ws.stream_ctas == 0) {
        R.first = ws.partial + (b * p.heads_q + h) * ws.splits * row;
        R.count = ws.splits;
        R.stride = row;
        return R;
    }
    /* Thread block c ran positions [W c / C, W (c + 1) / C): position u
     * is thread block (C (u + 1) - 1) / W's. */
    const int64_t s = b * p.heads_kv + h / G, C = ws.stream_ctas;
    const int64_t begin = ws.prefix[s], n = ws.prefix[s + 1] - begin,
                  W = ws.prefix[p.batch * p.heads_kv];
    const int64_t c0 = n > 0 ? (C * (begin + 1) - 1) / W : 0;
    R.count = n > 0 ? (C * (begin + n) - 1) / W - c0 + 1 : 0;
    R.stride = G * row;
    R.first = ws.partial + ((c0 + s) * G + h % G) * row;
    return R;
}

/* Combines the split rows of one (sequence, query head) for C * DA_WARP of
 * its output columns: the largest of the rows' maxima first, then each warp
 * sums its share of the rows, a lane per column (each row's C coalesced
 * loads), and the warps' sums are added at the end. No load waits on
 * another: an empty split's row is (-inf, 0, 0...) and weighs 0 (a bad
 * sequence's rows are never written, but its call's output is NaN anyway).
 * The kernel this replaced took three block reductions in a row (15 us at
 * batch 16); loads behind a test of a split's weight waited for it, two
 * round trips per split. */
template <int C>
__global__ void __launch_bounds__(MERGE_THREADS)
    decode_merge_kernel(dagpu_params p, dashattn_tensor out, float *lse, dagpu_decode_ws ws)
{
    da_wait_previous();
    __shared__ float red[MERGE_WARPS];
    __shared__ float sums[MERGE_WARPS][C * DA_WARP + 1];
    const int64_t h = blockIdx.x, b = blockIdx.y, D = p.head_dim;
    const int tid = threadIdx.x, lane = da_lane<DA_WARP>(), warp = da_warp_id<DA_WARP>();
    const int64_t col0 = (int64_t)blockIdx.z * C * DA_WARP;
    const merge_rows R = merge_rows_of(p, ws, b, h);
    /* A call with any bad sequence leaves no output that looks valid. */
    int bad = 0;
    for (int64_t e = tid; e < p.batch * p.heads_kv; e += MERGE_THREADS)
        bad |= ws.nblocks[e] < 0;

    float m = -DA_INF_F;
    for (int64_t s = tid; s < R.count; s += MERGE_THREADS)
        m = fmaxf(m, R.first[s * R.stride]);
    m = da_warp_max<DA_WARP>(m);
    if (lane == 0)
        red[warp] = m;
    bad = __syncthreads_or(bad);
    m = red[0];
    for (int w = 1; w < MERGE_WARPS; w++)
        m = fmaxf(m, red[w]);

    float l = 0.0f, acc[C];
#pragma unroll
    for (int k = 0; k < C; k++)
        acc[k] = 0.0f;
    const int64_t s0 = R.count * warp / MERGE_WARPS, s1 = R.count * (warp + 1) / MERGE_WARPS;
#pragma unroll 4
    for (int64_t s = s0; s < s1; s++) {
        const float *ps = R.first + s * R.stride;
        const float ms = ps[0], ls = ps[1];
        float o[C];
#pragma unroll
        for (int k = 0; k < C; k++) {
            const int64_t d = col0 + lane + k * DA_WARP;
            o[k] = d < D ? ps[2 + d] : 0.0f;
        }
        const float w = ms == -DA_INF_F ? 0.0f : exp2f(ms - m);
        l += ls * w;
#pragma unroll
        for (int k = 0; k < C; k++)
            acc[k] += o[k] * w;
    }
#pragma unroll
    for (int k = 0; k < C; k++)
        sums[warp][lane + k * DA_WARP] = acc[k];
    if (lane == 0)
        sums[warp][C * DA_WARP] = l;
    __syncthreads();
    float total_l = 0.0f;
    for (int w = 0; w < MERGE_WARPS; w++)
        total_l += sums[w][C * DA_WARP];
    for (int e = tid; e < C * DA_WARP && col0 + e < D; e += MERGE_THREADS) {
        float total = 0.0f;
        for (int w = 0; w < MERGE_WARPS; w++)
            total += sums[w][e];
        da_store(out.data, out.dtype, da_offset(out, b, h, 0, col0 + e),
                 bad ? DA_NAN_F : total / total_l);
    }
    if (lse && tid == 0 && blockIdx.z == 0)
        lse[b * p.heads_q + h] = bad ? DA_NAN_F : (m + log2f(total_l)) * DA_LN2;
}

} // namespace

extern "C" dagpu_err dagpu_launch_decode_scores(const dagpu_params *p, const dashattn_tensor *q,
                                                const dashattn_kv_cache *cache,
                                                const dagpu_decode_ws *ws, void *stream)
{
    const size_t smem = (size_t)p->group_size * (size_t)p->head_dim * sizeof(float);
    const unsigned chunks = (unsigned)((p->num_blocks + SCORE_BLOCKS - 1) / SCORE_BLOCKS);
    const dim3 grid(chunks, (unsigned)p->heads_kv, (unsigned)p->batch);
    void (*scores)(dagpu_params, dashattn_tensor, dashattn_kv_cache, dagpu_decode_ws) =
        p->group_size <= 4    ? decode_scores_kernel<4>
        : p->group_size <= 8  ? decode_scores_kernel<8>
        : p->group_size <= 16 ? decode_scores_kernel<16>
                              : decode_scores_kernel<DAGPU_DECODE_MAX_GROUP>;
    /* The first kernel waits for whatever came before the call. */
    return (dagpu_err)da_launch(scores, grid, dim3(SCORE_THREADS), smem, (dagpu_rt_stream)stream, 0,
                                *p, *q, *cache, *ws);
}

extern "C" dagpu_err dagpu_launch_decode_select(const dagpu_params *p,
                                                const dashattn_kv_cache *cache,
                                                const dagpu_decode_ws *ws, dagpu_device_error *err,
                                                void *stream)
{
    const dagpu_rt_stream st = (dagpu_rt_stream)stream;
    const size_t threshold_smem = dagpu_decode_threshold_smem(p);
    dagpu_rt_error e = da_allow_smem(decode_threshold_kernel, threshold_smem);
    if (e != dagpu_rt_success)
        return (dagpu_err)e;
    const unsigned kv = (unsigned)p->heads_kv, batch = (unsigned)p->batch;
    const unsigned rows = p->shared_group ? 1u : (unsigned)p->group_size;
    e = da_launch(decode_threshold_kernel, dim3(rows, kv, batch), dim3(ws->threshold_threads),
                  threshold_smem, st, ws->chained, *p, *cache, *ws);
    const unsigned weight_chunks =
        (unsigned)((p->num_blocks * ws->weight_lanes + WEIGHT_THREADS - 1) / WEIGHT_THREADS);
    if (e == dagpu_rt_success)
        e = da_launch(decode_weights_kernel, dim3(weight_chunks, kv, batch), dim3(WEIGHT_THREADS),
                      0, st, ws->chained, *p, *cache, *ws);
    if (e == dagpu_rt_success)
        e = da_launch(decode_union_kernel, dim3(kv, batch), dim3(UNION_THREADS), 0, st, ws->chained,
                      *p, *cache, *ws, err);
    return (dagpu_err)e;
}

extern "C" dagpu_err dagpu_launch_decode_split(const dagpu_params *p, const dashattn_tensor *q,
                                               const dashattn_kv_cache *cache,
                                               const dagpu_decode_ws *ws, int tile, void *stream)
{
    const size_t smem = dagpu_decode_split_smem(p, tile);
    const dagpu_rt_error e = da_allow_smem(decode_split_kernel, smem);
    if (e != dagpu_rt_success)
        return (dagpu_err)e;
    const dim3 grid((unsigned)ws->splits, (unsigned)p->heads_kv, (unsigned)p->batch);
    return (dagpu_err)da_launch(decode_split_kernel, grid, dim3(SPLIT_THREADS), smem,
                                (dagpu_rt_stream)stream, ws->chained, *p, *q, *cache, *ws, tile);
}

extern "C" dagpu_err dagpu_launch_decode_merge(const dagpu_params *p, const dashattn_tensor *out,
                                               float *lse, const dagpu_decode_ws *ws, void *stream)
{
    const int c = ws->merge_lane_columns;
    void (*merge)(dagpu_params, dashattn_tensor, float *, dagpu_decode_ws) =
        c >= 8   ? decode_merge_kernel<8>
        : c >= 4 ? decode_merge_kernel<4>
        : c >= 2 ? decode_merge_kernel<2>
                 : decode_merge_kernel<1>;
    const int64_t span = (int64_t)c * DA_WARP; /* the plan's c is 1, 2, 4 or 8 */
    const unsigned chunks = (unsigned)((p->head_dim + span - 1) / span);
    return (dagpu_err)da_launch(merge, dim3((unsigned)p->heads_q, (unsigned)p->batch, chunks),
                                dim3(MERGE_THREADS), 0, (dagpu_rt_stream)stream, ws->chained, *p,
                                *out, lse, *ws);
}
