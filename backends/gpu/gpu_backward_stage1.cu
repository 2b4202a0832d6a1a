/* SPDX-License-Identifier: MIT */
/* Stage 1's part of the backward (SPEC.md, "Backward"), portable kernel. It
 * runs after stage 2's part (gpu_backward.cu's rows kernel or
 * nv/nv_backward_dq.cu), which left the prior gradients of the read
 * candidates in ws.dz and the rest of dq in ws.dq_s2. A thread block takes
 * R rows of one KV head with all G heads of the group (dagpu_bwd_s1_layout)
 * and goes over the rows' candidates a chunk of DAGPU_BWD_S1_COLS blocks at
 * a time:
 *   scores   every vector's block scores (da_score_chunk: the portable
 *            stage 1's to the bit, within rounding of the tensor-core
 *            one's, whose thresholds the prior-table plans then hold; a
 *            block at the support's edge has p and u near 0 either way),
 *            kept for the whole call;
 *   flat     each pair's mean of pi dL/dpi over the candidates the flat
 *            prior keeps (flat prior only);
 *   entmax   per vector the sums of u and u dL/dp over its support, then
 *            dz = lambda1 u (dL/dp - mean) into ws.dz, dL/dp being the
 *            pair's own (per head), the sum (shared) or the mean (group
 *            mean) of its row's heads;
 *   dq       ws.dq_s2 + sum_j dz_j kbar_j in ascending j into the caller's
 *            dq, register tiles of 4 pairs by 4 DC dimensions per thread;
 *   touches  the blocks each tile of 64 pairs reads in stage 2 or sends dz
 *            to, for the portable kv kernel (ws.touch), or the same per row
 *            for the tensor-core one (ws.row_touch): whichever the call
 *            runs is not NULL.
 * Partial sums are combined in a fixed order, so the results do not depend
 * on scheduling. */
#include "gpu_backward.cuh"

namespace
{

constexpr int kThreads = DAGPU_BWD_S1_THREADS;
constexpr int kCols = DAGPU_BWD_S1_COLS;
constexpr int kSpStride = kCols + 1;
constexpr int kLanes = 64;      /* pairs or vectors side by side in a pass */
constexpr int kSlab = 64;       /* pairs of one dq register tile: 16 x 4 */
constexpr int kDimThreads = 16; /* threads along d of the dq tile */
constexpr int kStageLoads = 4;  /* prior gradients a thread loads at once */
static_assert(kSlab / 4 * kDimThreads == kThreads, "the dq tile covers the thread block");
static_assert(kCols == 32, "a column chunk is one mask word");

/* u = p^(2 - alpha) of the entmax backward on the support, from p and its
 * log2 (float: the sums that take it are in double). */
static __device__ __forceinline__ float entmax_u(float prob, float l2p, float alpha)
{
    return alpha == 2.0f ? 1.0f : alpha == 1.0f ? prob : exp2f((2.0f - alpha) * l2p);
}

/* ORs the rows of mask (bit r: row row0 + r) into a block's row words. */
static __device__ void flush_rows(uint32_t *words, int64_t row0, unsigned long long mask)
{
    const unsigned shift = (unsigned)(row0 % 32);
    uint32_t *at = words + row0 / 32;
    const uint32_t part[3] = {(uint32_t)(mask << shift), (uint32_t)(mask >> (32u - shift)),
                              shift ? (uint32_t)(mask >> (64u - shift)) : 0u};
    for (int w = 0; w < 3; w++)
        if (part[w])
            atomicOr(at + w, part[w]);
}

/* Threads side by side over n items (at most kLanes), each with a quarter
 * index for the columns it takes. */
struct lanes {
    int width, quarters, lane, quarter;
    __device__ lanes(int n, int tid)
    {
        width = n < kLanes ? (n > 0 ? n : 1) : kLanes;
        quarters = kThreads / width;
        lane = tid % width;
        quarter = tid / width;
    }
    __device__ bool active() const
    {
        return quarter < quarters;
    }
};

template <int DC>
__global__ void __launch_bounds__(kThreads, 2)
    bwd_stage1_kernel(dagpu_params p, dashattn_tensor q, dashattn_tensor dq, dagpu_backward_ws ws,
                      int R)
{
    extern __shared__ float smem[];
    const dagpu_bwd_s1_smem L = dagpu_bwd_s1_layout(&p, R);
    const int64_t D = p.head_dim, M = p.num_blocks;
    const int G = (int)p.group_size, P = R * G, E = p.shared_group ? R : P;
    const int VS = (int)L.vec_stride, ZS = (int)L.z_stride, words = (int)ws.fwd.words;
    const int64_t row0 = ((int64_t)gridDim.x - 1 - blockIdx.x) * R; /* the longest rows first */
    const int rows = (int)min((int64_t)R, p.len_q - row0);
    const int64_t bh = blockIdx.y, b = bh / p.heads_kv, kvh = bh % p.heads_kv;
    const int64_t x_first = row0 * G, tile0 = x_first / DAGPU_TILE_ROWS;
    const int x_off = (int)(x_first - tile0 * DAGPU_TILE_ROWS); /* pair 0's place in its tile */
    double *part = reinterpret_cast<double *>(smem + L.part);
    double *fmean = reinterpret_cast<double *>(smem + L.fmean);
    double *emean = reinterpret_cast<double *>(smem + L.emean);
    unsigned long long *rmask = reinterpret_cast<unsigned long long *>(smem + L.rmask);
    float *qs = smem + L.qs, *kb = smem + L.kb, *zs = smem + L.zs, *lw = smem + L.lw;
    float *sp = smem + L.sp, *dpr = smem + L.dpr;
    dagpu_row_param *rps = reinterpret_cast<dagpu_row_param *>(smem + L.rp);
    int *range = reinterpret_cast<int *>(smem + L.range);
    unsigned *bits = reinterpret_cast<unsigned *>(smem + L.bits);
    const int tid = threadIdx.x;
    const float *kbar = ws.fwd.kbar + bh * M * D;
    const bool grads = ws.dz != nullptr;
    const bool shared = p.shared_group != 0;
    const float *prior = p.prior_table ? ws.fwd.prior + (bh * p.len_q + row0) * M : nullptr;
    float *dz_base = grads ? ws.dz + bh * M * p.len_q * G + row0 * G : nullptr;
    const int64_t dz_stride = p.len_q * G; /* from one block's slots to the next */

    const bool pair_touch = ws.touch != nullptr;
    for (int w = tid; pair_touch && w < (int)L.tiles * words; w += kThreads)
        bits[w] = 0u;
    for (int c = tid; c < kCols; c += kThreads)
        rmask[c] = 0ull;
    for (int w = tid; w < (int)(L.dpr - L.sp); w += kThreads)
        sp[w] = 0.0f; /* the dq tile reads rows beyond the pairs */
    for (int r = tid; r < R; r += kThreads) {
        int cb = 0, ce = 0;
        if (r < rows) {
            const da_rows lr = da_row_layout(p, row0 + r + p.query_offset, p.len_k);
            cb = (int)lr.cand_begin;
            ce = (int)lr.cand_end;
        }
        range[2 * r] = cb;
        range[2 * r + 1] = ce;
    }
    da_stage_vectors(qs, E, VS, D, [&](int64_t e) {
        const int64_t r = shared ? e : e / G;
        return da_query_vector(q, b, kvh * G + (shared ? 0 : e % G), G, row0 + r, r < rows, shared);
    });
    for (int e = tid; e < E; e += kThreads) {
        const int r = shared ? e : e / G, g = shared ? 0 : e % G;
        dagpu_row_param rp = {DAGPU_PRIOR_NONE, 0.0f, 0.0f, 0.0f, 0.0f};
        if (r < rows)
            rp = ws.fwd.rows[(b * p.heads_q + kvh * G + g) * p.len_q + row0 + r];
        rps[e] = rp;
    }
    __syncthreads();

    /* The rows' forced blocks, read by every pair tile of the row. */
    for (int r = tid; r < rows; r += kThreads) {
        const da_rows lr = da_row_layout(p, row0 + r + p.query_offset, p.len_k);
        const int t_lo = (x_off + r * G) / DAGPU_TILE_ROWS;
        const int t_hi = (x_off + r * G + G - 1) / DAGPU_TILE_ROWS;
        for (int t = t_lo; pair_touch && t <= t_hi; t++) {
            for (int64_t j = 0; j < lr.sink_end; j++)
                atomicOr(bits + t * words + j / 32, 1u << (unsigned)(j % 32));
            for (int64_t j = lr.local_begin; j < lr.local_end; j++)
                atomicOr(bits + t * words + j / 32, 1u << (unsigned)(j % 32));
        }
        if (ws.row_touch) {
            const int64_t i = row0 + r;
            const uint32_t bit = 1u << (unsigned)(i % 32);
            for (int64_t j = 0; j < lr.sink_end; j++)
                atomicOr(ws.row_touch + (bh * M + j) * ws.row_words + i / 32, bit);
            for (int64_t j = lr.local_begin; j < lr.local_end; j++)
                atomicOr(ws.row_touch + (bh * M + j) * ws.row_words + i / 32, bit);
        }
    }

    int ucb = (int)M, uce = 0; /* the union of the rows' candidate ranges */
    for (int r = 0; r < rows; r++)
        if (range[2 * r + 1] > range[2 * r]) {
            ucb = min(ucb, range[2 * r]);
            uce = max(uce, range[2 * r + 1]);
        }
    const int c_first = ucb / kCols * kCols; /* chunks aligned to mask words */
    auto cand = [&](int r, int j) { return j >= range[2 * r] && j < range[2 * r + 1]; };
    auto load_keys = [&](int j0) { da_load_key_chunk(kb, kbar, j0, M, D, VS); };

    /* Scores, kept for the whole call. */
    if (grads || !p.prior_table)
        da_score_range(qs, kb, kbar, VS, E, M, D, p.stage1_scale, ucb, uce,
                       [&](int64_t e, int64_t j, float z) { zs[e * ZS + j] = z; });

    /* Group-mean mode's log2 weight before the flat prior, as stage 1
     * formed it. */
    if (grads && p.group_mean && p.prior_flat) {
        const lanes lr(rows, tid);
        if (lr.active())
            for (int r = lr.lane; r < rows; r += lr.width)
                for (int j = range[2 * r] + lr.quarter; j < range[2 * r + 1]; j += lr.quarters) {
                    float top = -DA_INF_F, sum = 0.0f;
                    for (int g = 0; g < G; g++)
                        da_log2_mean_add(
                            top, sum,
                            da_prior_log2(rps[r * G + g], zs[(r * G + g) * ZS + j], p.alpha));
                    lw[r * ZS + j] = da_log2_mean(top, sum, G);
                }
        __syncthreads();
    }

    auto slot = [&](int x, int j) { return dz_base + j * dz_stride + x; };
    /* Pair x (of row r)'s log2 weight before the flat prior, and stage 2's
     * log2 prior. */
    auto pre_of = [&](int x, int r, int j) -> float {
        if (p.group_mean)
            return lw[r * ZS + j];
        const int e = shared ? r : x;
        return da_prior_log2(rps[e], zs[e * ZS + j], p.alpha);
    };
    auto l2_of = [&](int x, int r, int j) -> float {
        if (prior)
            return prior[(int64_t)r * M + j];
        return da_candidate_log2(p, rps[x], zs[x * ZS + j]);
    };

    const lanes lp(P, tid), le(E, tid);
    /* out[x] = the quarters' sum of part[x][num] over their sum of
     * part[x][1 - num] (0 over an empty sum), x < n; between barriers. */
    auto combine = [&](int n, int quarters, int num, double *out) {
        __syncthreads();
        for (int x = tid; x < n; x += kThreads) {
            double sum[2] = {0.0, 0.0};
            for (int t = 0; t < quarters; t++) {
                sum[0] += part[(t * n + x) * 2];
                sum[1] += part[(t * n + x) * 2 + 1];
            }
            out[x] = sum[1 - num] > 0.0 ? sum[num] / sum[1 - num] : 0.0;
        }
        __syncthreads();
    };
    /* Flat prior: dL/dw = (gamma - mean_J gamma) / (sigma w), gamma =
     * pi dL/dpi, over the candidates J the prior keeps; the means first. */
    if (grads && p.prior_flat) {
        if (lp.active())
            for (int x = lp.lane; x < P; x += lp.width) {
                const int r = x / G;
                double s = 0.0, n = 0.0;
                if (r < rows)
                    for (int j = range[2 * r] + lp.quarter; j < range[2 * r + 1]; j += lp.quarters)
                        if (pre_of(x, r, j) > DA_LOG2_FLAT_FLOOR) {
                            s += (double)exp2f(l2_of(x, r, j)) * (double)*slot(x, j);
                            n += 1.0;
                        }
                part[(lp.quarter * P + x) * 2] = s;
                part[(lp.quarter * P + x) * 2 + 1] = n;
            }
        combine(P, lp.quarters, 0, fmean);
    }

    /* A chunk's dL/dw per pair into sp and, for a group's one weight, its
     * row's sum or mean into dpr; ends with a barrier. */
    const lanes lrow(R, tid);
    auto stage = [&](int j0) {
        if (lp.active())
            for (int x = lp.lane; x < P; x += lp.width) {
                const int r = x / G;
                const int cb = r < rows ? range[2 * r] : 0, ce = r < rows ? range[2 * r + 1] : 0;
                /* kStageLoads loads in flight before any is used: one at a
                 * time, each waited for, was a large share of the kernel. */
                for (int c0 = lp.quarter; c0 < kCols; c0 += kStageLoads * lp.quarters) {
                    float v[kStageLoads];
#pragma unroll
                    for (int u = 0; u < kStageLoads; u++) {
                        const int c = c0 + u * lp.quarters, j = j0 + c;
                        v[u] = c < kCols && j >= cb && j < ce ? *slot(x, j) : 0.0f;
                    }
#pragma unroll
                    for (int u = 0; u < kStageLoads; u++) {
                        const int c = c0 + u * lp.quarters, j = j0 + c;
                        if (c >= kCols)
                            break;
                        if (p.prior_flat && j >= cb && j < ce) {
                            const float pre = pre_of(x, r, j);
                            v[u] = pre > DA_LOG2_FLAT_FLOOR
                                       ? (float)(((double)exp2f(l2_of(x, r, j)) * (double)v[u] -
                                                  fmean[x]) *
                                                 (double)p.inv_sigma / exp2((double)pre))
                                       : 0.0f;
                        }
                        sp[x * kSpStride + c] = v[u];
                    }
                }
            }
        if (shared || p.group_mean) {
            __syncthreads();
            if (lrow.active())
                for (int r = lrow.lane; r < R; r += lrow.width)
                    for (int c = lrow.quarter; c < kCols; c += lrow.quarters) {
                        double s = 0.0;
                        for (int g = 0; g < G; g++)
                            s += (double)sp[(r * G + g) * kSpStride + c];
                        dpr[r * kSpStride + c] = (float)(p.group_mean ? s / (double)G : s);
                    }
        }
        __syncthreads();
    };
    auto row_of = [&](int e) { return shared ? e : e / G; };
    auto dp_of = [&](int e, int r, int c) -> double {
        return shared || p.group_mean ? (double)dpr[r * kSpStride + c]
                                      : (double)sp[e * kSpStride + c];
    };

    /* Entmax backward, first the sums per vector. */
    if (grads) {
        if (le.active())
            for (int e = le.lane; e < E; e += le.width)
                part[(le.quarter * E + e) * 2] = part[(le.quarter * E + e) * 2 + 1] = 0.0;
        for (int j0 = c_first; j0 < uce; j0 += kCols) {
            stage(j0);
            if (le.active())
                for (int e = le.lane; e < E; e += le.width) {
                    const int r = row_of(e);
                    const dagpu_row_param rp = rps[e];
                    const int cb = r < rows ? range[2 * r] : 0,
                              ce = r < rows ? range[2 * r + 1] : 0;
                    double a0 = 0.0, a1 = 0.0;
                    for (int c = le.quarter; c < kCols; c += le.quarters) {
                        const int j = j0 + c;
                        if (j < cb || j >= ce)
                            continue;
                        const float l2p = da_prior_log2(rp, zs[e * ZS + j], p.alpha);
                        const float pr = exp2f(l2p);
                        if (pr > 0.0f) {
                            const double u = (double)entmax_u(pr, l2p, p.alpha);
                            a0 += u;
                            a1 += u * dp_of(e, r, c);
                        }
                    }
                    part[(le.quarter * E + e) * 2] += a0;
                    part[(le.quarter * E + e) * 2 + 1] += a1;
                }
            __syncthreads(); /* the next chunk's stage overwrites sp */
        }
        combine(E, le.quarters, 1, emean);
    }

    /* dq tiles: thread (pg, dg) holds pairs x0 + pg + 16 a, dimensions
     * 4 dg + 64 c + 0..3. */
    const int pg = tid / kDimThreads, dg = tid % kDimThreads;
    float acc[4][DC][4];
    auto pair_ok = [&](int x) { return x < P && x / G < rows; };
    auto acc_load = [&](int x0) {
#pragma unroll
        for (int a = 0; a < 4; a++) {
            const int x = x0 + pg + 16 * a;
            const float *src =
                ws.dq_s2 + ((b * p.heads_q + kvh * G + x % G) * p.len_q + row0 + x / G) * D;
#pragma unroll
            for (int c = 0; c < DC; c++)
#pragma unroll
                for (int k = 0; k < 4; k++) {
                    const int d = 4 * dg + 64 * c + k;
                    acc[a][c][k] = pair_ok(x) && d < D ? src[d] : 0.0f;
                }
        }
    };
    auto acc_store = [&](int x0) {
#pragma unroll
        for (int a = 0; a < 4; a++) {
            const int x = x0 + pg + 16 * a;
            if (!pair_ok(x))
                continue;
            const int64_t h = kvh * G + x % G, i = row0 + x / G;
#pragma unroll
            for (int c = 0; c < DC; c++)
#pragma unroll
                for (int k = 0; k < 4; k++) {
                    const int d = 4 * dg + 64 * c + k;
                    if (d < D)
                        da_store(dq.data, dq.dtype, da_offset(dq, b, h, i, d), acc[a][c][k]);
                }
        }
    };
    /* acc += dz (sp rows 0..63) times the chunk's keys, in column order. */
    auto gemm = [&]() {
        for (int c = 0; c < kCols; c++) {
            float4 k4[DC];
#pragma unroll
            for (int cc = 0; cc < DC; cc++)
                k4[cc] = reinterpret_cast<const float4 *>(kb + c * VS + 64 * cc)[dg];
#pragma unroll
            for (int a = 0; a < 4; a++) {
                const float z = sp[(pg + 16 * a) * kSpStride + c];
#pragma unroll
                for (int cc = 0; cc < DC; cc++) {
                    acc[a][cc][0] = fmaf(z, k4[cc].x, acc[a][cc][0]);
                    acc[a][cc][1] = fmaf(z, k4[cc].y, acc[a][cc][1]);
                    acc[a][cc][2] = fmaf(z, k4[cc].z, acc[a][cc][2]);
                    acc[a][cc][3] = fmaf(z, k4[cc].w, acc[a][cc][3]);
                }
            }
        }
    };

    /* dz into ws.dz (and sp), the candidates' touches, and where the pairs
     * fit one dq tile its product with the keys on the way. */
    const bool fused = grads && P <= kSlab;
    const double factor = (double)p.stage1_scale / (shared ? (double)G : 1.0);
    if (fused)
        acc_load(0);
    for (int j0 = c_first; j0 < uce; j0 += kCols) {
        if (grads) {
            if (fused)
                load_keys(j0);
            stage(j0);
            if (le.active())
                for (int e = le.lane; e < E; e += le.width) {
                    const int r = row_of(e);
                    const dagpu_row_param rp = rps[e];
                    const int cb = r < rows ? range[2 * r] : 0,
                              ce = r < rows ? range[2 * r + 1] : 0;
                    for (int c = le.quarter; c < kCols; c += le.quarters) {
                        const int j = j0 + c;
                        float dz = 0.0f;
                        if (j >= cb && j < ce) {
                            const float l2p = da_prior_log2(rp, zs[e * ZS + j], p.alpha);
                            const float pr = exp2f(l2p);
                            if (pr > 0.0f)
                                dz = (float)(factor * (double)entmax_u(pr, l2p, p.alpha) *
                                             (dp_of(e, r, c) - emean[e]));
                        }
                        for (int x = shared ? e * G : e; x < (shared ? e * G + G : e + 1); x++)
                            sp[x * kSpStride + c] = dz;
                    }
                }
            __syncthreads();
        }
        if (lp.active())
            for (int x = lp.lane; x < P; x += lp.width) {
                const int r = x / G;
                unsigned word = 0u;
                for (int c = lp.quarter; c < kCols && r < rows; c += lp.quarters) {
                    const int j = j0 + c;
                    if (!cand(r, j))
                        continue;
                    const float dz = grads ? sp[x * kSpStride + c] : 0.0f;
                    if (grads)
                        *slot(x, j) = dz;
                    if (dz != 0.0f || !(l2_of(x, r, j) == -DA_INF_F))
                        word |= 1u << (unsigned)c;
                }
                if (word) {
                    if (pair_touch)
                        atomicOr(bits + (x_off + x) / DAGPU_TILE_ROWS * words + j0 / 32, word);
                    if (ws.row_touch)
                        for (unsigned w = word; w; w &= w - 1u)
                            atomicOr(rmask + __ffs(w) - 1, 1ull << (unsigned)r);
                }
            }
        if (fused)
            gemm();
        __syncthreads();
        if (ws.row_touch) {
            for (int c = tid; c < kCols; c += kThreads) {
                if (rmask[c])
                    flush_rows(ws.row_touch + (bh * M + j0 + c) * ws.row_words, row0, rmask[c]);
                rmask[c] = 0ull;
            }
            __syncthreads();
        }
    }
    if (fused) {
        acc_store(0);
    } else {
        for (int x0 = 0; x0 < P; x0 += kSlab) {
            acc_load(x0);
            for (int j0 = c_first; grads && j0 < uce; j0 += kCols) {
                load_keys(j0);
                for (int idx = tid; idx < kSlab * kCols; idx += kThreads) {
                    const int xl = idx % kSlab, c = idx / kSlab, x = x0 + xl;
                    sp[xl * kSpStride + c] =
                        pair_ok(x) && cand(x / G, j0 + c) ? *slot(x, j0 + c) : 0.0f;
                }
                __syncthreads();
                gemm();
                __syncthreads();
            }
            acc_store(x0);
        }
    }

    __syncthreads();
    for (int w = tid; pair_touch && w < (int)L.tiles * words; w += kThreads) {
        const int64_t t = tile0 + w / words;
        if (bits[w] && t < ws.pair_tiles)
            atomicOr(ws.touch + (bh * ws.pair_tiles + t) * words + w % words, bits[w]);
    }
}

template <int DC>
static dagpu_err launch(const dagpu_params *p, const dashattn_tensor *q, const dashattn_tensor *dq,
                        const dagpu_backward_ws *ws, int64_t rows, void *stream)
{
    const size_t smem = dagpu_bwd_s1_smem_bytes(p, rows);
    const dagpu_rt_error e = da_allow_smem(bwd_stage1_kernel<DC>, smem);
    if (e != dagpu_rt_success)
        return (dagpu_err)e;
    const dim3 grid((unsigned)((p->len_q + rows - 1) / rows), (unsigned)(p->batch * p->heads_kv));
    bwd_stage1_kernel<DC>
        <<<grid, kThreads, smem, (dagpu_rt_stream)stream>>>(*p, *q, *dq, *ws, (int)rows);
    return (dagpu_err)dagpuGetLastError();
}

} // namespace

extern "C" dagpu_err dagpu_launch_backward_stage1(const dagpu_params *p, const dashattn_tensor *q,
                                                  const dashattn_tensor *dq,
                                                  const dagpu_backward_ws *ws, int64_t rows,
                                                  void *stream)
{
    switch ((p->head_dim + 63) / 64) {
    case 1:
        return launch<1>(p, q, dq, ws, rows, stream);
    case 2:
        return launch<2>(p, q, dq, ws, rows, stream);
    case 3:
        return launch<3>(p, q, dq, ws, rows, stream);
    default:
        return launch<4>(p, q, dq, ws, rows, stream);
    }
}
