/* SPDX-License-Identifier: MIT */
/* Decode: stage 1 per (sequence, KV head) over the cached block keys, then
 * split-KV attention over the blocks any head of the group selected (each
 * loaded block serves all G query heads), then a merge of the splits. */
#include "gpu_cache.cuh"
#include "gpu_entmax.cuh"

namespace
{

#define SELECT_THREADS 256
#define SPLIT_THREADS 128
#define SCORE_BLOCKS 64

/* Stage-1 scores of the cached block keys: each warp scores blocks for all
 * G heads of its KV head, reading every block key once. z goes into the
 * log2w array, which decode_select_kernel turns into priors in place. A
 * block whose page is not in the pool scores NaN (select reports it). */
__global__ void __launch_bounds__(SELECT_THREADS)
    decode_scores_kernel(dagpu_params p, dashattn_tensor q, dashattn_kv_cache c, dagpu_decode_ws ws)
{
    extern __shared__ float smem[];
    const int64_t kvh = blockIdx.y, b = blockIdx.z;
    const int64_t D = p.head_dim, M = p.num_blocks, G = p.group_size, S = p.block_size;
    const int tid = threadIdx.x, lane = da_lane<DA_WARP>(), warp = da_warp_id<DA_WARP>(),
              warps = SELECT_THREADS / DA_WARP;
    const int64_t len = c.seq_lens[b];
    if (len < 1 || len > p.len_k)
        return;
    const da_rows lr = da_row_layout(p, len - 1, len);
    const int64_t first = max(lr.cand_begin, (int64_t)blockIdx.x * SCORE_BLOCKS);
    const int64_t last = min(lr.cand_end, (int64_t)(blockIdx.x + 1) * SCORE_BLOCKS);
    if (first >= last)
        return;
    float *qs = smem; /* [G][D] */
    for (int64_t e = tid; e < G * D; e += SELECT_THREADS)
        qs[e] = da_load(q.data, q.dtype, da_offset(q, b, kvh * G + e / D, 0, e % D));
    __syncthreads();
    const bool vec =
        c.block_keys.dtype == DASHATTN_F32 && c.block_keys.strides[3] == 1 && D % 128 == 0;
    const int64_t pages = c.k.shape[0];
    (void)S;
    for (int64_t j = first + warp; j < last; j += warps) {
        bool ok = true;
        if (c.layout == DASHATTN_CACHE_PAGED) {
            const int32_t page = c.block_table[b * c.table_stride + j];
            ok = page >= 0 && page < pages;
        }
        float part[DAGPU_DECODE_MAX_GROUP];
        for (int64_t g = 0; g < G && g < DAGPU_DECODE_MAX_GROUP; g++)
            part[g] = 0.0f;
        if (ok && vec) {
            const float *key = static_cast<const float *>(c.block_keys.data) +
                               da_block_key_offset(c, b, kvh, j, 0);
            for (int64_t d = lane * 4; d < D; d += 128) {
                const float4 x = *reinterpret_cast<const float4 *>(key + d);
                for (int64_t g = 0; g < G && g < DAGPU_DECODE_MAX_GROUP; g++) {
                    const float *qg = qs + g * D + d;
                    part[g] += qg[0] * x.x + qg[1] * x.y + qg[2] * x.z + qg[3] * x.w;
                }
            }
        } else if (ok) {
            for (int64_t d = lane; d < D; d += DA_WARP) {
                const float x = da_load(c.block_keys.data, c.block_keys.dtype,
                                        da_block_key_offset(c, b, kvh, j, d));
                for (int64_t g = 0; g < G && g < DAGPU_DECODE_MAX_GROUP; g++)
                    part[g] = fmaf(qs[g * D + d], x, part[g]);
            }
        }
        for (int64_t g = 0; g < G && g < DAGPU_DECODE_MAX_GROUP; g++) {
            const float z = ok ? da_warp_sum<DA_WARP>(part[g]) * p.stage1_scale : DA_NAN_F;
            if (lane == 0)
                ws.log2w[(b * p.heads_q + kvh * G + g) * M + j] = z;
        }
    }
}

/* Thresholds and the union of selected blocks of one (sequence, KV head):
 * turns the scores into log2 priors per head and block (-inf: not read) and
 * lists the blocks to read in ascending order; nblocks = -1 marks a sequence
 * whose seq_lens entry or block table is bad. The grid has only B x Hkv
 * blocks, so two per multiprocessor are plenty; the bound keeps ptxas for
 * sm_80 from spilling to fit more. */
__global__ void DA_LAUNCH_BOUNDS(SELECT_THREADS, 2)
    decode_select_kernel(dagpu_params p, dashattn_kv_cache c, dagpu_decode_ws ws,
                         dagpu_device_error *err)
{
    extern __shared__ float smem[];
    const int64_t kvh = blockIdx.x, b = blockIdx.y;
    const int64_t M = p.num_blocks, G = p.group_size, S = p.block_size;
    const int tid = threadIdx.x, lane = da_lane<DA_WARP>(), warp = da_warp_id<DA_WARP>(),
              warps = SELECT_THREADS / DA_WARP;
    int32_t *nblocks = ws.nblocks + b * p.heads_kv + kvh;
    const int64_t len = c.seq_lens[b];
    int value;
    const int bad = da_check_sequence(p, c, b, len, 1, 0, &value);
    if (bad) {
        if (tid == 0) {
            da_report(err, DASHATTN_ERR_INVALID_ARGUMENT, (int)b, value, bad);
            *nblocks = -1;
        }
        return;
    }
    const da_rows lr = da_row_layout(p, len - 1, len);
    const int64_t cb = lr.cand_begin, n = lr.cand_end - lr.cand_begin;
    float *zs = smem; /* [G][n]; shared mode: row 0 holds the group mean */
    float *z_global = ws.log2w + (b * p.heads_q + kvh * G) * M;
    for (int64_t e = tid; e < n; e += SELECT_THREADS) {
        float mean = 0.0f;
        for (int64_t g = 0; g < G; g++) {
            const float z = z_global[g * M + cb + e];
            mean += z;
            if (!p.shared_group)
                zs[g * n + e] = z;
        }
        if (p.shared_group)
            zs[e] = mean / (float)G;
    }
    __syncthreads();

    __shared__ dagpu_row_param params[DAGPU_DECODE_MAX_GROUP];
    const int64_t rows = p.shared_group ? 1 : G;
    for (int64_t g = warp; g < rows; g += warps) {
        dagpu_row_param rp = {DAGPU_PRIOR_NONE, 0.0f, 0.0f, 0.0f, 0.0f};
        if (n > 0)
            rp = da_row_threshold(zs + g * n, (int)n, p);
        if (lane == 0)
            params[g] = rp;
    }
    __syncthreads();

    /* Candidates' log2 weights in place of their scores: a row per head, or
     * row 0 for the whole group when it shares one weight. */
    const int wrows = p.shared_group || p.group_mean ? 1 : (int)G, ni = (int)n;
    for (int e = tid; e < wrows * ni; e += SELECT_THREADS) {
        const int row = e / ni, col = e % ni;
        float l2;
        if (p.group_mean) {
            float top = -DA_INF_F, sum = 0.0f;
            for (int64_t g = 0; g < G; g++)
                da_log2_mean_add(top, sum, da_prior_log2(params[g], zs[g * n + col], p.alpha));
            l2 = da_log2_mean(top, sum, G);
        } else {
            l2 = da_prior_log2(params[row], zs[row * n + col], p.alpha);
        }
        zs[row * n + col] = l2;
    }
    __syncthreads();
    __shared__ float mu[DAGPU_DECODE_MAX_GROUP];
    if (p.prior_flat) {
        for (int row = warp; row < wrows; row += warps) {
            const float m = da_flat_mu(n, [&](int64_t e) { return zs[row * n + e]; });
            if (lane == 0)
                mu[row] = m;
        }
        __syncthreads();
    }

    /* The union is gathered as a bitmask in shared memory, then listed. */
    const int64_t visible_blocks = (len + S - 1) / S;
    unsigned *keep = reinterpret_cast<unsigned *>(zs + G * n);
    const int64_t words = (M + 31) / 32;
    for (int64_t w = tid; w < words; w += SELECT_THREADS)
        keep[w] = 0;
    __syncthreads();
    /* 32-bit indices: 64-bit division is many instructions per element. */
    const int gm = (int)(G * M), mi = (int)M;
    for (int e = tid; e < gm; e += SELECT_THREADS) {
        const int g = e / mi, j = e % mi;
        const int row = wrows == 1 ? 0 : g;
        float w = -DA_INF_F;
        if (j < visible_blocks) {
            if (da_forced(lr, j)) {
                w = 0.0f;
            } else if (j >= cb && j < lr.cand_end) {
                w = zs[row * n + j - cb];
                if (p.prior_flat)
                    w = da_flatten(w, mu[row], p.inv_sigma);
            }
        }
        z_global[g * M + j] = w;
        if (!(w == -DA_INF_F))
            atomicOr(keep + j / 32, 1u << (j % 32));
    }
    __syncthreads();

    if (warp == 0) {
        int32_t *list = ws.blocks + (b * p.heads_kv + kvh) * M;
        int count = 0;
        for (int64_t w = 0; w < words; w++) {
            const unsigned bits = keep[w];
            if (lane < (int)__popc(bits)) {
                /* The lane-th set bit of the word. */
                unsigned rest = bits;
                for (int i = 0; i < lane; i++)
                    rest &= rest - 1;
                list[count + lane] = (int32_t)(w * 32 + __ffs(rest) - 1);
            }
            count += __popc(bits);
        }
        if (lane == 0)
            *nblocks = count;
    }
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
static __device__ void attend_tile(const split_smem_layout &L, const float *log2w, int64_t M,
                                   int64_t G, int64_t D, int64_t j, int64_t tokens)
{
    const int tid = threadIdx.x, lane = da_lane<DA_WARP>(), warp = da_warp_id<DA_WARP>();
    for (int64_t e = tid; e < G * L.T; e += SPLIT_THREADS) {
        const int64_t g = e / L.T, t = e % L.T;
        const float prior = log2w[g * M + j];
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
            attend_tile(L, log2w, M, G, D, j, tokens);
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

#define MERGE_THREADS 256
#define MERGE_COLUMNS 32

/* Combines the splits of one (sequence, query head) for MERGE_COLUMNS of
 * its output columns. The splits are spread over the threads at every step:
 * with many splits (small batches) a loop over them per output element would
 * wait on one load after another. */
__global__ void __launch_bounds__(MERGE_THREADS)
    decode_merge_kernel(dagpu_params p, dashattn_tensor out, float *lse, dagpu_decode_ws ws)
{
    extern __shared__ float weight[]; /* [splits] */
    __shared__ float red[MERGE_THREADS];
    const int64_t h = blockIdx.x, b = blockIdx.y, D = p.head_dim, S = ws.splits;
    const int64_t col0 = (int64_t)blockIdx.z * MERGE_COLUMNS;
    const int64_t cols = min((int64_t)MERGE_COLUMNS, D - col0);
    const int tid = threadIdx.x;
    const float *part = ws.partial + (b * p.heads_q + h) * S * (D + 2);
    /* A call with any bad sequence leaves no output that looks valid. */
    int bad = 0;
    for (int64_t e = tid; e < p.batch * p.heads_kv; e += MERGE_THREADS)
        bad |= ws.nblocks[e] < 0;
    bad = __syncthreads_or(bad);

    float m = -DA_INF_F;
    for (int64_t s = tid; s < S; s += MERGE_THREADS)
        m = fmaxf(m, part[s * (D + 2)]);
    red[tid] = m;
    __syncthreads();
    for (int w = MERGE_THREADS / 2; w > 0; w >>= 1) {
        if (tid < w)
            red[tid] = fmaxf(red[tid], red[tid + w]);
        __syncthreads();
    }
    m = red[0];
    __syncthreads();
    float l = 0.0f;
    for (int64_t s = tid; s < S; s += MERGE_THREADS) {
        const float ms = part[s * (D + 2)];
        const float w = ms == -DA_INF_F ? 0.0f : exp2f(ms - m);
        weight[s] = w;
        l += w == 0.0f ? 0.0f : part[s * (D + 2) + 1] * w;
    }
    red[tid] = l;
    __syncthreads();
    for (int w = MERGE_THREADS / 2; w > 0; w >>= 1) {
        if (tid < w)
            red[tid] += red[tid + w];
        __syncthreads();
    }
    l = red[0];
    __syncthreads();

    /* Thread (c, d) sums splits c, c + C, ... of output column col0 + d. */
    const int64_t C = MERGE_THREADS / MERGE_COLUMNS;
    {
        const int64_t d = tid % MERGE_COLUMNS, c = tid / MERGE_COLUMNS;
        float acc = 0.0f;
        if (d < cols)
            for (int64_t s = c; s < S; s += C)
                if (weight[s] != 0.0f)
                    acc += part[s * (D + 2) + 2 + col0 + d] * weight[s];
        red[tid] = acc;
        __syncthreads();
        if (c == 0 && d < cols) {
            float total = 0.0f;
            for (int64_t k = 0; k < C; k++)
                total += red[k * MERGE_COLUMNS + tid];
            da_store(out.data, out.dtype, da_offset(out, b, h, 0, col0 + d),
                     bad ? DA_NAN_F : total / l);
        }
    }
    if (lse && tid == 0 && blockIdx.z == 0)
        lse[b * p.heads_q + h] = bad ? DA_NAN_F : (m + log2f(l)) * DA_LN2;
}

} // namespace

extern "C" dagpu_err dagpu_launch_decode_select(const dagpu_params *p, const dashattn_tensor *q,
                                                const dashattn_kv_cache *cache,
                                                const dagpu_decode_ws *ws, dagpu_device_error *err,
                                                void *stream)
{
    const dagpu_rt_stream st = (dagpu_rt_stream)stream;
    const size_t score_smem = (size_t)p->group_size * (size_t)p->head_dim * sizeof(float);
    const size_t select_smem = dagpu_decode_select_smem(p);
    const dagpu_rt_error e = da_allow_smem(decode_select_kernel, select_smem);
    if (e != dagpu_rt_success)
        return (dagpu_err)e;
    const unsigned chunks = (unsigned)((p->num_blocks + SCORE_BLOCKS - 1) / SCORE_BLOCKS);
    decode_scores_kernel<<<dim3(chunks, (unsigned)p->heads_kv, (unsigned)p->batch), SELECT_THREADS,
                           score_smem, st>>>(*p, *q, *cache, *ws);
    decode_select_kernel<<<dim3((unsigned)p->heads_kv, (unsigned)p->batch), SELECT_THREADS,
                           select_smem, st>>>(*p, *cache, *ws, err);
    return (dagpu_err)dagpuGetLastError();
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
    decode_split_kernel<<<grid, SPLIT_THREADS, smem, (dagpu_rt_stream)stream>>>(*p, *q, *cache, *ws,
                                                                                tile);
    return (dagpu_err)dagpuGetLastError();
}

extern "C" dagpu_err dagpu_launch_decode_merge(const dagpu_params *p, const dashattn_tensor *out,
                                               float *lse, const dagpu_decode_ws *ws, void *stream)
{
    const unsigned column_chunks = (unsigned)((p->head_dim + MERGE_COLUMNS - 1) / MERGE_COLUMNS);
    decode_merge_kernel<<<dim3((unsigned)p->heads_q, (unsigned)p->batch, column_chunks),
                          MERGE_THREADS, (size_t)ws->splits * sizeof(float),
                          (dagpu_rt_stream)stream>>>(*p, *out, lse, *ws);
    return (dagpu_err)dagpuGetLastError();
}
