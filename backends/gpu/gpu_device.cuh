/* SPDX-License-Identifier: MIT */
/* Device-side helpers shared by the GPU kernels: element access in the three
 * dtypes, the row layout of SPEC.md, and the block prior. */
#ifndef DASHATTN_GPU_DEVICE_CUH
#define DASHATTN_GPU_DEVICE_CUH

#include "gpu_group.cuh"

#define DA_LOG2E 1.4426950408889634f
#define DA_LN2 0.6931471805599453f

static __device__ __forceinline__ float da_load(const void *base, int dtype, int64_t i)
{
    if (dtype == DASHATTN_F32)
        return static_cast<const float *>(base)[i];
    if (dtype == DASHATTN_F16)
        return __half2float(static_cast<const __half *>(base)[i]);
    return da_bf16_to_float(static_cast<const da_bf16 *>(base)[i]);
}

static __device__ __forceinline__ void da_store(void *base, int dtype, int64_t i, float x)
{
    if (dtype == DASHATTN_F32)
        static_cast<float *>(base)[i] = x;
    else if (dtype == DASHATTN_F16)
        static_cast<__half *>(base)[i] = __float2half_rn(x);
    else
        static_cast<da_bf16 *>(base)[i] = da_float_to_bf16(x);
}

static __device__ __forceinline__ int64_t da_offset(const dashattn_tensor &t, int64_t b, int64_t h,
                                                    int64_t n, int64_t d)
{
    return b * t.strides[0] + h * t.strides[1] + n * t.strides[2] + d * t.strides[3];
}

/* SPEC.md's block layout of a row (dashattn_row_layout, on the device). */
struct da_rows {
    int64_t visible_end, sink_end, local_begin, local_end, cand_begin, cand_end;
};

static __device__ __forceinline__ da_rows da_row_layout(const dagpu_params &p, int64_t pos,
                                                        int64_t len_k)
{
    const int64_t s = p.block_size;
    da_rows r;
    if (p.causal) {
        const int64_t own = pos / s;
        r.visible_end = pos + 1;
        r.sink_end = min((int64_t)p.n_sink, own + 1);
        r.local_begin = max(own - p.n_local + 1, (int64_t)0);
        r.local_end = own + 1;
    } else {
        const int64_t blocks = (len_k + s - 1) / s;
        r.visible_end = len_k;
        r.sink_end = min((int64_t)p.n_sink, blocks);
        r.local_begin = blocks;
        r.local_end = blocks;
    }
    r.cand_begin = r.sink_end;
    r.cand_end = max(r.local_begin, r.cand_begin);
    return r;
}

static __device__ __forceinline__ bool da_forced(const da_rows &r, int64_t j)
{
    return j < r.sink_end || (j >= r.local_begin && j < r.local_end);
}

/* One query vector as stage 1 scores it: head h at position i, or with
 * mean set the mean of heads h .. h + G - 1 there (shared mode's stage-1
 * query: every kernel that scores it forms it here, so their scores agree to
 * the bit); zero when not live. The offset is formed once per vector, not
 * per element. */
struct da_query_vector {
    const dashattn_tensor *q;
    int64_t off, G;
    bool live, mean;
    __device__ da_query_vector(const dashattn_tensor &t, int64_t b, int64_t h, int64_t G_,
                               int64_t i, bool live_, bool mean_)
        : q(&t), off(live_ ? da_offset(t, b, h, i, 0) : 0), G(G_), live(live_), mean(mean_)
    {
    }
    __device__ float operator()(int64_t d) const
    {
        if (!live)
            return 0.0f;
        const int64_t at = off + d * q->strides[3];
        if (!mean)
            return da_load(q->data, q->dtype, at);
        float acc = 0.0f;
        for (int64_t g = 0; g < G; g++)
            acc += da_load(q->data, q->dtype, at + g * q->strides[1]);
        return acc / (float)G;
    }
};

/* rows[a * vs + d] = vector_of(a)(d) for a < count and d < dim, 0 in the
 * padding up to vs: 32 threads per vector along d, so no element costs a
 * division. Called by every thread; the caller synchronises after. */
template <typename VectorOf>
static __device__ void da_stage_vectors(float *rows, int64_t count, int64_t vs, int64_t dim,
                                        VectorOf vector_of)
{
    const int lane = (int)(threadIdx.x % 32u), step = (int)(blockDim.x / 32u);
    for (int64_t a = threadIdx.x / 32u; a < count; a += step) {
        const da_query_vector at = vector_of(a);
        for (int64_t d = lane; d < vs; d += 32)
            rows[a * vs + d] = d < dim ? at(d) : 0.0f;
    }
}

/* The stage-1 score of a block for one row: every kernel that needs it calls
 * this, so stage 1 and the generic stage 2 agree to the bit. */
static __device__ __forceinline__ float da_block_score(const float *q, const float *kbar,
                                                       int64_t dim, float stage1_scale)
{
    float acc = 0.0f;
    for (int64_t d = 0; d < dim; d++)
        acc = fmaf(q[d], kbar[d], acc);
    return stage1_scale * acc;
}

/* Block scores in shared memory, a chunk of DAGPU_SCORE_COLS blocks at a
 * time, for the kernels that score many vectors against the same blocks:
 * da_load_key_chunk stages blocks j0 .. j0 + 31 of kbar ([M, D]) as rows of
 * vs floats (zero padded; vs a multiple of 4 with vs / 4 odd, so float4
 * reads down a column are free of bank conflicts), and da_score_chunk
 * scores vectors qs[e * vs + d] (zero padded alike) against them, each
 * score a serial fma chain over ascending d as da_block_score forms it, so
 * the two agree to the bit. Thread t takes column t % 32 and vectors
 * t / 32 + (threads / 32) m; store(e, c, z) gets every score of the chunk.
 * Called by every thread; the caller synchronises around the staging. */
static __device__ __forceinline__ void da_load_key_chunk(float *kb, const float *kbar, int64_t j0,
                                                         int64_t blocks, int64_t dim, int64_t vs)
{
    /* A thread's (row, column) pair advances by a fixed step, so no element
     * costs a division (a 64-bit one took most of a backward stage-1's
     * instructions); rows go four floats at a time where kbar allows it. */
    const int threads = (int)blockDim.x;
    const bool by4 = dim % 4 == 0 && (reinterpret_cast<uintptr_t>(kbar) & 15u) == 0;
    const int width = by4 ? (int)(vs / 4) : (int)vs, cols = by4 ? (int)(dim / 4) : (int)dim;
    const int rows = (int)min((int64_t)DAGPU_SCORE_COLS, blocks - j0);
    const int dc = threads / width, dd = threads % width;
    int c = (int)threadIdx.x / width, d = (int)threadIdx.x % width;
    while (c < DAGPU_SCORE_COLS) {
        const bool live = c < rows && d < cols;
        const float *src = kbar + (j0 + c) * dim;
        if (by4) {
            const float4 x =
                live ? reinterpret_cast<const float4 *>(src)[d] : make_float4(0.f, 0.f, 0.f, 0.f);
            reinterpret_cast<float4 *>(kb + c * vs)[d] = x;
        } else {
            kb[c * vs + d] = live ? src[d] : 0.0f;
        }
        c += dc;
        d += dd;
        if (d >= width) {
            d -= width;
            c++;
        }
    }
}

/* da_score_chunk with kPer vectors per thread and pass; the rows past the
 * last vector are read again in their place (no branch in the loop) and
 * their scores dropped. */
template <int kPer, typename Store>
static __device__ __forceinline__ void da_score_chunk_by(const float *qs, const float *kb,
                                                         int64_t vs, int64_t vectors, int64_t dim,
                                                         float stage1_scale, Store store)
{
    const int c = (int)(threadIdx.x % DAGPU_SCORE_COLS);
    const int groups = (int)(blockDim.x / DAGPU_SCORE_COLS), v4 = (int)(vs / 4);
    const int d4s = (int)((dim + 3) / 4);
    const float4 *kv = reinterpret_cast<const float4 *>(kb) + c * v4;
    const float4 *q4s = reinterpret_cast<const float4 *>(qs);
    for (int e0 = (int)(threadIdx.x / DAGPU_SCORE_COLS); e0 < vectors; e0 += groups * kPer) {
        float acc[kPer];
        int row[kPer];
#pragma unroll
        for (int m = 0; m < kPer; m++) {
            acc[m] = 0.0f;
            row[m] = min(e0 + groups * m, (int)vectors - 1) * v4;
        }
        for (int d4 = 0; d4 < d4s; d4++) {
            const float4 k4 = kv[d4];
#pragma unroll
            for (int m = 0; m < kPer; m++) {
                const float4 q4 = q4s[row[m] + d4];
                acc[m] = fmaf(q4.x, k4.x, acc[m]);
                acc[m] = fmaf(q4.y, k4.y, acc[m]);
                acc[m] = fmaf(q4.z, k4.z, acc[m]);
                acc[m] = fmaf(q4.w, k4.w, acc[m]);
            }
        }
#pragma unroll
        for (int m = 0; m < kPer; m++) {
            const int e = e0 + groups * m;
            if (e < vectors)
                store((int64_t)e, c, stage1_scale * acc[m]);
        }
    }
}

template <typename Store>
static __device__ __forceinline__ void da_score_chunk(const float *qs, const float *kb, int64_t vs,
                                                      int64_t vectors, int64_t dim,
                                                      float stage1_scale, Store store)
{
    const int64_t groups = blockDim.x / DAGPU_SCORE_COLS, per = (vectors + groups - 1) / groups;
    if (per <= 1)
        da_score_chunk_by<1>(qs, kb, vs, vectors, dim, stage1_scale, store);
    else if (per <= 2)
        da_score_chunk_by<2>(qs, kb, vs, vectors, dim, stage1_scale, store);
    else if (per <= 4)
        da_score_chunk_by<4>(qs, kb, vs, vectors, dim, stage1_scale, store);
    else
        da_score_chunk_by<8>(qs, kb, vs, vectors, dim, stage1_scale, store);
}

/* Every score of vectors qs (da_score_chunk's layout) over blocks
 * [cb, ce), chunk by chunk through kb: store(e, j, z) for each. Called by
 * every thread once qs is written; ends with a barrier. */
template <typename Store>
static __device__ void da_score_range(const float *qs, float *kb, const float *kbar, int64_t vs,
                                      int64_t vectors, int64_t blocks, int64_t dim,
                                      float stage1_scale, int64_t cb, int64_t ce, Store store)
{
    for (int64_t j0 = cb / DAGPU_SCORE_COLS * DAGPU_SCORE_COLS; j0 < ce; j0 += DAGPU_SCORE_COLS) {
        __syncthreads(); /* the vectors are in place, the chunk before is scored */
        da_load_key_chunk(kb, kbar, j0, blocks, dim, vs);
        __syncthreads();
        da_score_chunk(qs, kb, vs, vectors, dim, stage1_scale, [&](int64_t e, int c, float z) {
            const int64_t j = j0 + c;
            if (j >= cb && j < ce)
                store(e, j, z);
        });
    }
    __syncthreads();
}

/* log2 of a candidate block's weight from its score z: -inf when the block is
 * not selected, NaN when the row's scores were unusable. */
static __device__ __forceinline__ float da_prior_log2(const dagpu_row_param &rp, float z,
                                                      float alpha)
{
    const int mode = (int)rp.mode;
    if (isnan(rp.a) || isnan(z))
        return DA_NAN_F;
    if (mode == DAGPU_PRIOR_SOFTMAX)
        return (z - rp.a) * DA_LOG2E;
    if (mode == DAGPU_PRIOR_TOPK)
        return z > rp.a ? 0.0f : -DA_INF_F;
    if (mode == DAGPU_PRIOR_ENTMAX) {
        const float t = (alpha - 1.0f) * (z - rp.a) - rp.tau;
        if (!(t > 0.0f))
            return -DA_INF_F;
        return __log2f(t) / (alpha - 1.0f) - rp.log2norm;
    }
    return -DA_INF_F;
}

/* log2(1e-20): the flat prior drops candidates whose weight is not above
 * 1e-20 (SPEC.md, "Stage 2"). */
#define DA_LOG2_FLAT_FLOOR (-66.43856189774724f)

/* The flat prior's log2 pi = (l2 - mu) / sigma from a candidate's log2
 * weight l2 and the row's mean mu of log2 w over the candidates above the
 * floor: NaN stays NaN. */
static __device__ __forceinline__ float da_flatten(float l2, float mu, float inv_sigma)
{
    if (isnan(l2))
        return l2;
    return l2 > DA_LOG2_FLAT_FLOOR ? (l2 - mu) * inv_sigma : -DA_INF_F;
}

/* mu of the flat prior for one row, over a group of threads: the mean of l2_of(e), the
 * log2 weights of candidates e in [0, n), over those above the floor; 0 if
 * none is. */
template <typename Grp, typename L2>
static __device__ float da_flat_mu(const Grp &grp, int64_t n, L2 l2_of)
{
    double v[2] = {0.0, 0.0}; /* sum, count */
    for (int64_t e = grp.rank(); e < n; e += grp.size()) {
        const float l2 = l2_of(e);
        if (l2 > DA_LOG2_FLAT_FLOOR) {
            v[0] += l2;
            v[1] += 1.0;
        }
    }
    grp.template sums<double, 2>(v, nullptr);
    return v[1] > 0.0 ? (float)(v[0] / v[1]) : 0.0f;
}

/* log2 of the mean of 2^l2 over a group, accumulated one l2 at a time into
 * (top, sum), which start at (-inf, 0), with a running maximum, so weights
 * below float's range still count. */
static __device__ __forceinline__ void da_log2_mean_add(float &top, float &sum, float l2)
{
    if (l2 == -DA_INF_F)
        return;
    if (l2 > top) {
        sum = sum * exp2f(top - l2) + 1.0f;
        top = l2;
    } else {
        sum += exp2f(l2 - top); /* NaN lands here and stays */
    }
}

static __device__ __forceinline__ float da_log2_mean(float top, float sum, int64_t count)
{
    return top + log2f(sum / (float)count);
}

/* log2 of a candidate's stage-2 prior pi under the plan's prior mode. */
static __device__ __forceinline__ float da_candidate_log2(const dagpu_params &p,
                                                          const dagpu_row_param &rp, float z)
{
    const float l2 = da_prior_log2(rp, z, p.alpha);
    return p.prior_flat ? da_flatten(l2, rp.mu, p.inv_sigma) : l2;
}

#endif
