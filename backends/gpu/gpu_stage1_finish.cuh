/* SPDX-License-Identifier: MIT */
/* The end of stage 1, shared by the portable kernel (gpu_stage1.cu) and the
 * NVIDIA tensor-core one (nv/nv_stage1.cu), which differ only in how they
 * score: from the rows' block scores in shared memory, their thresholds, the
 * union of blocks each stage-2 tile reads, the selection output, and the
 * sparsity counts. Mask words are 32-bit ballots of one logical warp. */
#ifndef DASHATTN_GPU_STAGE1_FINISH_CUH
#define DASHATTN_GPU_STAGE1_FINISH_CUH

#include "gpu_entmax.cuh"

static_assert(DA_WARP == 32, "stage-1 mask words hold one ballot of a logical warp");

/* Lanes of one vector's threshold search in group-mean mode. */
#define DA_STAGE1_LANES 8

/* A stage-1 thread block's mask words in shared memory: `words` per stage-2
 * tile, for the tiles first .. first + count - 1 its rows touch. */
struct da_tile_masks {
    unsigned *bits;
    int64_t first, words;
    int count;
};

/* Called by every thread before any row is emitted: the tiles of rows
 * [row0, row0 + rows), their words zeroed (synchronised by the thread
 * block's next barrier). */
static __device__ da_tile_masks da_tile_masks_init(const dagpu_params &p,
                                                   const dagpu_forward_ws &ws, unsigned *bits,
                                                   int64_t row0, int rows)
{
    da_tile_masks t;
    t.bits = bits;
    t.words = ws.words;
    t.first = dagpu_row_first_tile(&p, row0);
    t.count = (int)(dagpu_row_last_tile(&p, row0 + rows - 1) - t.first + 1);
    for (int64_t w = threadIdx.x; w < t.count * t.words; w += blockDim.x)
        bits[w] = 0;
    return t;
}

/* Selection output, mask bits and pair counts of query row i for the heads
 * h0 .. h0 + heads - 1, which all give candidate j the log2 prior l2_of(j)
 * (forced blocks: 1). One warp; mask and block_counts are the thread
 * block's shared accumulators. */
template <typename L2>
static __device__ void emit_row(const dagpu_params &p, const dashattn_selection &sel,
                                const da_rows &lr, int64_t b, int64_t i, int64_t h0, int heads,
                                L2 l2_of, const da_tile_masks &mask,
                                unsigned long long *block_counts)
{
    const int64_t tile0 = dagpu_row_first_tile(&p, i) - mask.first;
    const int64_t tile1 = dagpu_row_last_tile(&p, i) - mask.first;
    const int64_t M = p.num_blocks;
    const int lane = da_lane<DA_WARP>();
    int count = 0;
    unsigned long long attended = 0;
    const int64_t visible_blocks = (lr.visible_end + p.block_size - 1) / p.block_size;
    for (int64_t base = 0; base < visible_blocks; base += DA_WARP) {
        const int64_t j = base + lane;
        bool keep = false;
        float w = 0.0f;
        if (j < M && j * p.block_size < lr.visible_end) {
            if (da_forced(lr, j)) {
                keep = true;
                w = 1.0f;
            } else if (j >= lr.cand_begin && j < lr.cand_end) {
                const float l2 = l2_of(j);
                keep = !(l2 == -DA_INF_F);
                w = exp2f(l2);
            }
        }
        const unsigned ballot = da_ballot<DA_WARP>(keep);
        if (keep) {
            const int64_t end = min((j + 1) * (int64_t)p.block_size, lr.visible_end);
            attended += (unsigned long long)(end - j * p.block_size);
        }
        if (lane == 0 && ballot)
            for (int64_t t = tile0; t <= tile1; t++)
                atomicOr(mask.bits + t * mask.words + base / 32, ballot);
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
        for (int64_t e = count + lane; e < sel.max_blocks; e += DA_WARP) {
            if (sel.block_index)
                sel.block_index[row * sel.max_blocks + e] = -1;
            if (sel.block_weight)
                sel.block_weight[row * sel.max_blocks + e] = 0.0f;
        }
        if (lane == 0 && sel.block_count)
            sel.block_count[row] = count;
    }
    attended = da_warp_sum<DA_WARP>(attended);
    if (lane == 0) {
        atomicAdd(block_counts, (unsigned long long)lr.visible_end * heads);
        atomicAdd(block_counts + 1, attended * heads);
    }
}

/* After every row of the thread block was emitted: its mask words into the
 * tile masks (packed: of KV head h0 / G; otherwise of each head h0 .. h0 +
 * heads - 1), its counts into the totals. */
static __device__ void flush_block(const dagpu_forward_ws &ws, const dagpu_params &p, int64_t b,
                                   int64_t h0, int heads, const da_tile_masks &mask,
                                   const unsigned long long *block_counts)
{
    __syncthreads();
    const int tid = threadIdx.x;
    const bool packed = dagpu_tiles_packed(&p);
    const int64_t copies = packed ? 1 : heads, th0 = packed ? h0 / p.group_size : h0;
    const int64_t per_copy = mask.count * ws.words;
    for (int64_t e = tid; e < copies * per_copy; e += blockDim.x) {
        const int64_t g = e / per_copy, lw = e % per_copy;
        const int64_t t = lw / ws.words, w = lw % ws.words;
        const unsigned bits = mask.bits[lw];
        if (bits)
            atomicOr(ws.masks +
                         ((b * dagpu_tile_heads(&p) + th0 + g) * ws.tiles + mask.first + t) *
                             ws.words +
                         w,
                     bits);
    }
    if (tid < 2 && ws.counts)
        atomicAdd(ws.counts + tid, block_counts[tid]);
}

/* Thresholds, block masks, selection output and counts of rows
 * [row0, row0 + rows) from their scores zs[r * zstride + j] (candidates
 * only), per query head hh, or per KV head hh in shared mode (which also
 * writes the priors to ws.prior for stage 2). mask (da_tile_masks_init) and
 * block_counts (2) are shared memory, zeroed before the scores were
 * written; called by every thread of the block. */
static __device__ void stage1_finish(const dagpu_params &p, const dagpu_forward_ws &ws,
                                     const dashattn_selection &sel, const float *zs,
                                     int64_t zstride, int rows, int64_t row0, int64_t b, int64_t hh,
                                     const da_tile_masks &mask, unsigned long long *block_counts)
{
    const int64_t G = p.group_size;
    const int lane = da_lane<DA_WARP>(), warp = da_warp_id<DA_WARP>();
    const int heads_out = p.shared_group ? (int)G : 1;
    const int64_t h0 = p.shared_group ? hh * G : hh;
    for (int r = warp; r < rows; r += da_warps<DA_WARP>()) {
        const int64_t i = row0 + r;
        const da_rows lr = da_row_layout(p, i + p.query_offset, p.len_k);
        const int n = (int)(lr.cand_end - lr.cand_begin);
        const float *z = zs + r * zstride;
        dagpu_row_param rp = {DAGPU_PRIOR_NONE, 0.0f, 0.0f, 0.0f, 0.0f};
        if (n > 0)
            rp = da_row_threshold(da_warp_group{}, z + lr.cand_begin, n, p);
        if (p.prior_flat && n > 0)
            rp.mu = da_flat_mu(da_warp_group{}, n, [&](int64_t e) {
                return da_prior_log2(rp, z[lr.cand_begin + e], p.alpha);
            });
        emit_row(
            p, sel, lr, b, i, h0, heads_out,
            [&](int64_t j) { return da_candidate_log2(p, rp, z[j]); }, mask, block_counts);
        if (p.prior_table) {
            float *out = ws.prior + ((b * p.heads_kv + hh) * p.len_q + i) * p.num_blocks;
            for (int64_t j = lr.cand_begin + lane; j < lr.cand_end; j += DA_WARP)
                out[j] = da_candidate_log2(p, rp, z[j]);
        }
        for (int g = 0; g < heads_out; g++)
            if (lane == 0)
                ws.rows[(b * p.heads_q + h0 + g) * p.len_q + i] = rp;
    }
    flush_block(ws, p, b, h0, heads_out, mask, block_counts);
}

/* The same in group-mean mode, for the G heads of KV head kvh over rows
 * [row0, row0 + rows): query vector a = g * R + r is head kvh * G + g at row
 * row0 + r. Each head's entmax gives its p; the group's mean pbar is every
 * head's weight, and its log2 prior goes to ws.prior for stage 2. params
 * holds G * R row parameters in shared memory (and ws.rows each head's). Row r's scores (vector r)
 * are overwritten by the group's log2 priors. */
static __device__ void stage1_finish_group(const dagpu_params &p, const dagpu_forward_ws &ws,
                                           const dashattn_selection &sel, float *zs,
                                           int64_t zstride, int R, int rows, int64_t row0,
                                           int64_t b, int64_t kvh, dagpu_row_param *params,
                                           const da_tile_masks &mask,
                                           unsigned long long *block_counts)
{
    const int G = (int)p.group_size, warps = da_warps<DA_WARP>();
    const int lane = da_lane<DA_WARP>(), warp = da_warp_id<DA_WARP>();
    /* Each vector's threshold by a group of DA_STAGE1_LANES lanes. */
    const da_lanes_group<DA_STAGE1_LANES> grp;
    constexpr int subs = DA_WARP / DA_STAGE1_LANES;
    for (int a = warp * subs + lane / DA_STAGE1_LANES; a < G * R; a += warps * subs) {
        const int r = a % R;
        if (r >= rows)
            continue;
        const da_rows lr = da_row_layout(p, row0 + r + p.query_offset, p.len_k);
        const int n = (int)(lr.cand_end - lr.cand_begin);
        dagpu_row_param rp = {DAGPU_PRIOR_NONE, 0.0f, 0.0f, 0.0f, 0.0f};
        if (n > 0)
            rp = da_row_threshold(grp, zs + a * zstride + lr.cand_begin, n, p);
        if (grp.rank() == 0) {
            params[a] = rp;
            /* Not read by stage 2; the backward takes each head's own p. */
            ws.rows[(b * p.heads_q + kvh * G + a / R) * p.len_q + row0 + r] = rp;
        }
    }
    __syncthreads();
    for (int r = warp; r < rows; r += warps) {
        const int64_t i = row0 + r;
        const da_rows lr = da_row_layout(p, i + p.query_offset, p.len_k);
        const int64_t cb = lr.cand_begin, n = lr.cand_end - lr.cand_begin;
        float *prior = zs + r * zstride;
        for (int64_t e = lane; e < n; e += DA_WARP) {
            float top = -DA_INF_F, sum = 0.0f;
            for (int g = 0; g < G; g++) {
                const int a = g * R + r;
                da_log2_mean_add(top, sum,
                                 da_prior_log2(params[a], zs[a * zstride + cb + e], p.alpha));
            }
            prior[cb + e] = da_log2_mean(top, sum, G);
        }
        float *out = ws.prior + ((b * p.heads_kv + kvh) * p.len_q + i) * p.num_blocks;
        if (p.prior_flat) {
            const float mu =
                da_flat_mu(da_warp_group{}, n, [&](int64_t e) { return prior[cb + e]; });
            for (int64_t e = lane; e < n; e += DA_WARP)
                prior[cb + e] = da_flatten(prior[cb + e], mu, p.inv_sigma);
        }
        for (int64_t e = lane; e < n; e += DA_WARP)
            out[cb + e] = prior[cb + e];
        da_warp_sync<DA_WARP>(); /* emit_row reads other lanes' entries */
        emit_row(
            p, sel, lr, b, i, kvh * G, G, [&](int64_t j) { return prior[j]; }, mask, block_counts);
    }
    flush_block(ws, p, b, kvh * G, G, mask, block_counts);
}

#endif
