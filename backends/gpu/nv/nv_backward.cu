/* SPDX-License-Identifier: MIT */
/* The backward's kv kernel on the tensor cores (mma.sync m16n8k16, bf16 or
 * f16 in, f32 accumulation), in place of gpu_backward.cu's portable one for
 * block size 64, head dimension 64 or 128 and priors from stage 1's table
 * (shared and group-mean modes): a thread block owns one key block, four
 * warps 16 keys each with their dK and dV in registers, and walks the query
 * rows that touch the block (ws.row_touch, from the stage-1 kernel) in
 * ascending order, 64 / G of them with all G heads to a tile of (row,
 * head) pairs, so that a tile holds only pairs that read the block or send
 * it dz and the sums repeat bit for bit; the next tile's q and dO are in
 * flight while this one's products run. Where key blocks are too few to
 * fill the device (few KV heads: a causal block 0 then holds the whole
 * call's longest run of rows), the rows of a block are split in
 * ws.kv_splits equal runs, each split's thread block writes its partial
 * sums, and the last to finish adds them in split order and finishes the
 * block, so the sums still repeat bit for bit. Per tile, transposed as in
 * FlashAttention-2's dK/dV loop: S^T = K Q^T, dP^T = V dO^T, P^T and dS^T
 * elementwise, dV += P^T dO, dK += dS^T Q; the block key's gradient
 * sum dz q on the CUDA cores, two dimensions per thread. */
#include "nv_kernels.h"
#include "nv_mma.cuh"
#include "../gpu_backward.cuh"

namespace
{

constexpr int kThreads = 128;
constexpr int kPairs = DAGPU_TILE_ROWS; /* (row, head) pairs of a tile */

/* s = A B^T for a warp's 16 rows of swizzled tile `a` (from row a0) against
 * the 64 rows of swizzled tile `b`, A's fragments read as needed. */
template <int D, typename T>
static __device__ __forceinline__ void tile_products(float (&s)[8][4], uint32_t a, int a0,
                                                     uint32_t b, int lane)
{
#pragma unroll
    for (int n = 0; n < 8; n++)
        s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++) {
        uint32_t af[4];
        ldmatrix_x4(af, a + swz<D>(a0 + (lane & 15), kk * 16 + (lane >> 4) * 8));
#pragma unroll
        for (int np = 0; np < 4; np++) {
            uint32_t bf[4];
            const int r = np * 16 + (lane >> 4) * 8 + (lane & 7);
            const int c = kk * 16 + ((lane >> 3) & 1) * 8;
            ldmatrix_x4(bf, b + swz<D>(r, c));
            mma_type<T>::mma(s[2 * np], af, bf[0], bf[1]);
            mma_type<T>::mma(s[2 * np + 1], af, bf[2], bf[3]);
        }
    }
}

/* Thread groups that share the block key's gradient sum of a tile's pairs. */
template <int D> __host__ __device__ constexpr int kDkbGroups()
{
    return kThreads / (D / 2);
}

/* The rows that touch one key block, in ascending order, from its words of
 * ws.row_touch (rows [begin, end) of them): each warp holds 32 words at a
 * time, one per lane, so a word costs no round trip of its own. Every
 * thread of the block runs the same steps. */
struct row_stream {
    const uint32_t *words;
    int64_t begin, end, batch; /* batch: the first word the lanes hold */
    uint32_t held, cur;        /* the lane's word; the current word's rows left */
    int at;                    /* the current word's place in the batch */
    bool done;

    __device__ uint32_t load(int lane) const
    {
        const int64_t w = batch + lane, lo = w * 32;
        if (lo >= end || lo + 32 <= begin)
            return 0u;
        uint32_t x = words[w];
        if (lo < begin)
            x &= ~0u << (unsigned)(begin - lo);
        if (lo + 32 > end)
            x &= ~0u >> (unsigned)(lo + 32 - end);
        return x;
    }
    __device__ row_stream(const uint32_t *w, int64_t b, int64_t e, int lane)
        : words(w), begin(b), end(e), batch(b / 32), at(0), done(b >= e)
    {
        held = load(lane);
        cur = __shfl_sync(0xffffffffu, held, 0);
    }
    /* The next `want` rows into rows[0..), their count returned (fewer at
     * the end); thread t < want writes rows[t]. */
    __device__ int take(int64_t *rows, int want, int tid, int lane)
    {
        int n = 0;
        while (n < want && !done) {
            while (cur == 0u) {
                if (++at == 32) {
                    batch += 32;
                    if (batch * 32 >= end) {
                        done = true;
                        return n;
                    }
                    held = load(lane);
                    at = 0;
                }
                cur = __shfl_sync(0xffffffffu, held, at);
            }
            const int avail = __popc(cur), k = min(avail, want - n);
            const int64_t base = (batch + at) * 32;
            if (tid >= n && tid < n + k)
                rows[tid] = base + (int64_t)__fns(cur, 0u, tid - n + 1);
            const unsigned last = __fns(cur, 0u, k); /* the k-th row taken */
            cur = last == 31u ? 0u : cur & (~0u << (last + 1u));
            n += k;
        }
        return n;
    }
};

/* One split's partial sums in the workspace: each thread's dK and dV
 * fragments (element e of thread t at e kThreads + t), then the block
 * key's gradient sum. */
template <int D> __host__ __device__ constexpr size_t part_floats()
{
    return (size_t)D * kThreads + D;
}

/* A split's end: its partial sums go to the workspace; the last split of
 * key block `unit` to arrive gets the sums of all of them, added in split
 * order, and returns true, the others false. */
template <int D>
static __device__ bool gather_splits(float (&dka)[D / 8][4], float (&dva)[D / 8][4], float *dkb,
                                     const dagpu_backward_ws &ws, int64_t unit)
{
    __shared__ int last;
    const int tid = threadIdx.x;
    const int64_t splits = ws.kv_splits;
    float *mine = ws.kv_part + (unit * splits + blockIdx.z) * part_floats<D>();
#pragma unroll
    for (int n = 0; n < D / 8; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            mine[(n * 4 + e) * kThreads + tid] = dka[n][e];
            mine[(D / 2 + n * 4 + e) * kThreads + tid] = dva[n][e];
        }
    for (int d = tid; d < D; d += kThreads)
        mine[(size_t)D * kThreads + d] = dkb[d];
    __threadfence(); /* the sums are visible before the arrival counts */
    __syncthreads();
    if (tid == 0)
        last = atomicAdd(&ws.kv_arrived[unit], 1u) == (unsigned)splits - 1u;
    __syncthreads();
    if (!last)
        return false;
    __threadfence();
#pragma unroll
    for (int n = 0; n < D / 8; n++)
#pragma unroll
        for (int e = 0; e < 4; e++)
            dka[n][e] = dva[n][e] = 0.0f;
    for (int d = tid; d < D; d += kThreads)
        dkb[d] = 0.0f;
    for (int64_t s = 0; s < splits; s++) {
        const float *src = ws.kv_part + (unit * splits + s) * part_floats<D>();
#pragma unroll
        for (int n = 0; n < D / 8; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                dka[n][e] += __ldcg(src + (n * 4 + e) * kThreads + tid);
                dva[n][e] += __ldcg(src + (D / 2 + n * 4 + e) * kThreads + tid);
            }
        for (int d = tid; d < D; d += kThreads)
            dkb[d] += __ldcg(src + (size_t)D * kThreads + d);
    }
    __syncthreads();
    return true;
}

template <int D, typename T>
__global__ void __launch_bounds__(kThreads)
    bwd_kv_mma_kernel(dagpu_params p, dashattn_tensor q, dashattn_tensor k, dashattn_tensor v,
                      dashattn_tensor dout, const float *lse, dashattn_tensor summary,
                      dashattn_tensor dk, dashattn_tensor dv, dagpu_backward_ws ws)
{
    extern __shared__ __align__(128) unsigned char smem[];
    __shared__ float rl2[kPairs], rlse2[kPairs], rdelta[kPairs], rdz[kPairs], dkb[D];
    __shared__ float dkb_part[kDkbGroups<D>()][D];
    __shared__ float logit[MMA_KEYS];
    __shared__ int rvis[kPairs];
    __shared__ int64_t tile_rows[2][kPairs];
    constexpr uint32_t kTileBytes = kPairs * D * 2;
    const uint32_t ktile = smem_addr(smem), vtile = ktile + MMA_KEYS * D * 2;
    const uint32_t qtiles = vtile + MMA_KEYS * D * 2, otiles = qtiles + 2 * kTileBytes;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, qd = lane & 3;
    const int64_t G = p.group_size, M = p.num_blocks;
    const int64_t j = blockIdx.x, bh = blockIdx.y, b = bh / p.heads_kv, kvh = bh % p.heads_kv;
    const int64_t first = j * MMA_KEYS, size = min((int64_t)MMA_KEYS, p.len_k - first);
    const T *kbase = static_cast<const T *>(k.data) + b * k.strides[0] + kvh * k.strides[1];
    const T *vbase = static_cast<const T *>(v.data) + b * v.strides[0] + kvh * v.strides[1];
    load_tile<D>(ktile, kbase, k.strides[2], first, p.len_k);
    load_tile<D>(vtile, vbase, v.strides[2], first, p.len_k);
    cp_async_commit();

    float dka[D / 8][4], dva[D / 8][4];
#pragma unroll
    for (int n = 0; n < D / 8; n++)
#pragma unroll
        for (int e = 0; e < 4; e++)
            dka[n][e] = dva[n][e] = 0.0f;
    /* The block key's gradient sum: thread t takes dimensions 2 (t % (D /
     * 2)) and the next, over every kDkbGroups-th pair from t / (D / 2). */
    const int dk_col = 2 * (tid % (D / 2)), dk_group = tid / (D / 2);
    dkb_part[dk_group][dk_col] = dkb_part[dk_group][dk_col + 1] = 0.0f;
    const float scale2 = p.scale * DA_LOG2E;
    /* The rows that can see the block, split in ws.kv_splits equal runs;
     * a tile holds up to 64 / G of those that touch it, all their heads. */
    const int64_t row_first = first_pair(p, first) / G, splits = ws.kv_splits;
    const int64_t run = (p.len_q - row_first + splits - 1) / splits;
    const int64_t row_begin = row_first + (int64_t)blockIdx.z * run;
    const int64_t row_end = min(row_begin + run, p.len_q);
    const int per_tile = kPairs / (int)G;
    row_stream stream(ws.row_touch + (bh * M + j) * ws.row_words, row_begin, row_end, lane);
    auto stage = [&](int buf, int n) {
        constexpr int chunks = D / 8;
        for (int e = tid; e < kPairs * chunks; e += kThreads) {
            const int r = e / chunks, c = e % chunks;
            const bool valid = r < n * (int)G;
            const int64_t i = valid ? tile_rows[buf][r / G] : 0, h = kvh * G + r % G;
            cp_async16(qtiles + buf * kTileBytes + swz<D>(r, c * 8),
                       static_cast<const T *>(q.data) + b * q.strides[0] + h * q.strides[1] +
                           i * q.strides[2] + c * 8,
                       valid);
            cp_async16(otiles + buf * kTileBytes + swz<D>(r, c * 8),
                       static_cast<const T *>(dout.data) + b * dout.strides[0] +
                           h * dout.strides[1] + i * dout.strides[2] + c * 8,
                       valid);
        }
    };

    /* Two buffers of staged pairs: the next tile's copies fly while this
     * one's products run. Tile t's rows are listed two tiles ahead, into
     * the buffer tile t - 2 has left. */
    int buf = 0;
    int count = stream.take(tile_rows[0], per_tile, tid, lane);
    int count_next = stream.take(tile_rows[1], per_tile, tid, lane);
    __syncthreads();
    if (count > 0)
        stage(0, count);
    cp_async_commit();
    while (count > 0) {
        if (count_next > 0)
            stage(buf ^ 1, count_next);
        cp_async_commit();
        if (tid < kPairs) {
            float l2 = -DA_INF_F, lse2 = 0.0f, delta = 0.0f, dz = 0.0f;
            int vis = 0;
            if (tid < count * (int)G) {
                const int64_t i = tile_rows[buf][tid / G], g = tid % G,
                              row = (b * p.heads_q + kvh * G + g) * p.len_q + i;
                const da_rows lr = da_row_layout(p, i + p.query_offset, p.len_k);
                const bool cand = j >= lr.cand_begin && j < lr.cand_end;
                if (first < lr.visible_end) {
                    if (da_forced(lr, j))
                        l2 = 0.0f;
                    else if (cand)
                        l2 = ws.fwd.prior[(bh * p.len_q + i) * M + j];
                }
                lse2 = lse[row] * DA_LOG2E;
                delta = ws.delta[row];
                dz = ws.dz && cand ? *dz_slot(p, ws, bh, j, i, g) : 0.0f;
                vis = l2 == -DA_INF_F ? 0 : (int)min(lr.visible_end - first, (int64_t)MMA_KEYS);
            }
            rl2[tid] = l2;
            rlse2[tid] = lse2;
            rdelta[tid] = delta;
            rdz[tid] = dz;
            rvis[tid] = vis;
        }
        cp_async_wait<1>();
        __syncthreads();
        const uint32_t qtile = qtiles + buf * kTileBytes, otile = otiles + buf * kTileBytes;
        float s[8][4], dp[8][4];
        tile_products<D, T>(s, ktile, warp * 16, qtile, lane);
        tile_products<D, T>(dp, vtile, warp * 16, otile, lane);
#pragma unroll
        for (int n = 0; n < 8; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int key = warp * 16 + (lane >> 2) + (e >> 1) * 8;
                const int c = n * 8 + qd * 2 + (e & 1);
                const float a = key < rvis[c] ? exp2f(s[n][e] * scale2 + rl2[c] - rlse2[c]) : 0.0f;
                s[n][e] = a;
                dp[n][e] = p.scale * a * (dp[n][e] - rdelta[c]);
            }
        tile_pv<D, T, 8>(dva, s, otile, lane);
        tile_pv<D, T, 8>(dka, dp, qtile, lane);
        float dkb0 = dkb_part[dk_group][dk_col], dkb1 = dkb_part[dk_group][dk_col + 1];
        for (int c = dk_group; c < kPairs; c += kDkbGroups<D>()) {
            const float z = rdz[c];
            if (z != 0.0f) {
                const float2 qv = tile_pair<D, T>(qtile, c, dk_col);
                dkb0 = fmaf(z, qv.x, dkb0);
                dkb1 = fmaf(z, qv.y, dkb1);
            }
        }
        dkb_part[dk_group][dk_col] = dkb0;
        dkb_part[dk_group][dk_col + 1] = dkb1;
        const int count_after = stream.take(tile_rows[buf], per_tile, tid, lane);
        __syncthreads(); /* the buffer is refilled and the pairs restaged next */
        buf ^= 1;
        count = count_next;
        count_next = count_after;
    }
    cp_async_wait<0>(); /* a block no row touched has not waited for its keys */
    __syncthreads();
    for (int d = tid; d < D; d += kThreads) {
        float acc = 0.0f;
#pragma unroll
        for (int g = 0; g < kDkbGroups<D>(); g++)
            acc += dkb_part[g][d];
        dkb[d] = acc;
    }
    __syncthreads();
    if (splits > 1 && !gather_splits<D>(dka, dva, dkb, ws, bh * M + j))
        return;

    /* The block key's gradient into each key through its pooling weight:
     * softmax over the block of h . k / sqrt(D), or 1 / size. */
    const bool learned = summary.data != nullptr && ws.dz != nullptr;
    const float inv_sqrt_d = 1.0f / sqrtf((float)D);
    const float *hv =
        learned ? static_cast<const float *>(summary.data) + kvh * summary.strides[1] : nullptr;
    if (learned && tid < size) {
        float acc = 0.0f;
        for (int d = 0; d < D; d++)
            acc = fmaf(hv[d * summary.strides[3]], tile_value<D, T>(ktile, tid, d), acc);
        logit[tid] = acc * inv_sqrt_d;
    }
    __syncthreads();
    float top = -DA_INF_F, sum = 0.0f;
    if (learned) {
        for (int t = 0; t < size; t++)
            top = fmaxf(top, logit[t]);
        for (int t = 0; t < size; t++)
            sum += expf(logit[t] - top);
    }
    const float *kbar = ws.fwd.kbar + (bh * M + j) * D;
#pragma unroll
    for (int half = 0; half < 2; half++) {
        const int key = warp * 16 + (lane >> 2) + half * 8;
        const bool valid = key < size;
        const float wt =
            learned ? (valid ? expf(logit[key] - top) / sum : 0.0f) : 1.0f / (float)size;
        double dot = 0.0;
#pragma unroll
        for (int n = 0; n < D / 8; n++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                const int d = n * 8 + qd * 2 + e;
                if (learned)
                    dot += ((double)tile_value<D, T>(ktile, key, d) - (double)kbar[d]) *
                           (double)dkb[d];
            }
        dot += __shfl_xor_sync(0xffffffffu, dot, 1);
        dot += __shfl_xor_sync(0xffffffffu, dot, 2);
        const float rt = learned ? (float)(dot * (double)wt * (double)inv_sqrt_d) : 0.0f;
        if (!valid)
            continue;
        const int64_t tok = first + key;
        T *dkrow = static_cast<T *>(dk.data) + b * dk.strides[0] + kvh * dk.strides[1] +
                   tok * dk.strides[2];
        T *dvrow = static_cast<T *>(dv.data) + b * dv.strides[0] + kvh * dv.strides[1] +
                   tok * dv.strides[2];
#pragma unroll
        for (int n = 0; n < D / 8; n++) {
            float g[2];
#pragma unroll
            for (int e = 0; e < 2; e++) {
                const int d = n * 8 + qd * 2 + e;
                g[e] = dka[n][2 * half + e];
                if (ws.dz)
                    g[e] = fmaf(wt, dkb[d], g[e]);
                if (learned)
                    g[e] = fmaf(rt, hv[d * summary.strides[3]], g[e]);
            }
            *reinterpret_cast<uint32_t *>(dkrow + n * 8 + qd * 2) = mma_type<T>::pack(g[0], g[1]);
            *reinterpret_cast<uint32_t *>(dvrow + n * 8 + qd * 2) =
                mma_type<T>::pack(dva[n][2 * half], dva[n][2 * half + 1]);
        }
        if (ws.rt && qd == 0)
            ws.rt[bh * p.len_k + tok] = rt;
    }
}

/* Dynamic shared memory: the block's keys and values, two tiles' q and
 * dO. */
static size_t kv_smem(int D)
{
    return (size_t)(2 * MMA_KEYS + 4 * kPairs) * (size_t)D * 2;
}

template <int D, typename T>
static dagpu_err launch(const dagpu_params *p, const dashattn_tensor *q, const dashattn_tensor *k,
                        const dashattn_tensor *v, const dashattn_tensor *dout, const float *lse,
                        const dashattn_tensor &summary, const dashattn_tensor *dk,
                        const dashattn_tensor *dv, const dagpu_backward_ws *ws, void *stream)
{
    const size_t smem = kv_smem(D);
    const dagpu_rt_error e = da_allow_smem(bwd_kv_mma_kernel<D, T>, smem);
    if (e != dagpu_rt_success)
        return (dagpu_err)e;
    const dim3 grid((unsigned)p->num_blocks, (unsigned)(p->batch * p->heads_kv),
                    (unsigned)ws->kv_splits);
    bwd_kv_mma_kernel<D, T><<<grid, kThreads, smem, (cudaStream_t)stream>>>(
        *p, *q, *k, *v, *dout, lse, summary, *dk, *dv, *ws);
    return (dagpu_err)dagpuGetLastError();
}

} // namespace

extern "C" int dagpu_nv_backward_kv_ok(const dagpu_params *p, size_t smem_limit)
{
    /* A tile holds whole rows: at most 64 heads per KV head. */
    return dagpu_nv_backward_shape_ok(p) && p->group_size <= kPairs &&
           kv_smem((int)p->head_dim) + 8192 <= smem_limit; /* + its static arrays */
}

extern "C" int64_t dagpu_nv_backward_kv_splits(const dagpu_params *p, int sm_count)
{
    /* Eight thread blocks per multiprocessor's worth: a causal block 0 then
     * holds at most about twice a slot's share of the tiles. */
    const int64_t units = p->batch * p->heads_kv * p->num_blocks;
    int64_t splits = 1;
    while (splits < 8 && units * splits < 8 * (int64_t)(sm_count > 0 ? sm_count : 1))
        splits *= 2;
    return splits;
}

extern "C" size_t dagpu_nv_backward_kv_part_floats(const dagpu_params *p)
{
    return p->head_dim == 64 ? part_floats<64>() : part_floats<128>();
}

extern "C" dagpu_err dagpu_nv_launch_backward_kv(const dagpu_params *p, const dashattn_tensor *q,
                                                 const dashattn_tensor *k, const dashattn_tensor *v,
                                                 const dashattn_tensor *dout, const float *lse,
                                                 const dashattn_tensor *summary,
                                                 const dashattn_tensor *dk,
                                                 const dashattn_tensor *dv,
                                                 const dagpu_backward_ws *ws, void *stream)
{
    const dashattn_tensor h = summary_by_value(summary);
    const bool bf16 = p->dtype == DASHATTN_BF16;
    if (p->head_dim == 64)
        return bf16 ? launch<64, __nv_bfloat16>(p, q, k, v, dout, lse, h, dk, dv, ws, stream)
                    : launch<64, __half>(p, q, k, v, dout, lse, h, dk, dv, ws, stream);
    return bf16 ? launch<128, __nv_bfloat16>(p, q, k, v, dout, lse, h, dk, dv, ws, stream)
                : launch<128, __half>(p, q, k, v, dout, lse, h, dk, dv, ws, stream);
}
