/* SPDX-License-Identifier: MIT */
/* Stage 2, generic path: one warp per query row, any dtype, head dimension
 * and stride. It recomputes each candidate's score with the very function
 * stage 1 used, so it keeps exactly the blocks stage 1 selected, or reads
 * the priors stage 1 wrote (one weight per KV head). The fast tensor-core
 * path is nv/nv_stage2.cu. */
#include "gpu_device.cuh"

namespace
{

#define ROWS_PER_BLOCK 4
#define MAX_DIM_PER_LANE (256 / DA_WARP)

/* Six blocks per multiprocessor (80 registers): left to itself, ptxas for
 * sm_90 trades spills for a seventh. */
__global__ void DA_LAUNCH_BOUNDS(128, 6)
    stage2_kernel(dagpu_params p, dashattn_tensor q, dashattn_tensor k, dashattn_tensor v,
                  dashattn_tensor out, float *lse, dagpu_forward_ws ws)
{
    extern __shared__ float smem[];
    const int64_t D = p.head_dim, S = p.block_size, G = p.group_size;
    const int lane = da_lane<DA_WARP>(), warp = da_warp_id<DA_WARP>();
    const int64_t b = blockIdx.z, h = blockIdx.y, kvh = h / G;
    const int64_t i = (int64_t)blockIdx.x * ROWS_PER_BLOCK + warp;
    float *qs = smem + warp * D;
    if (i >= p.len_q)
        return;
    for (int64_t d = lane; d < D; d += DA_WARP)
        qs[d] = da_load(q.data, q.dtype, da_offset(q, b, h, i, d));
    da_warp_sync<DA_WARP>();
    const float *kbar = ws.kbar + (b * p.heads_kv + kvh) * p.num_blocks * D;
    const dagpu_row_param rp = p.prior_table
                                   ? dagpu_row_param{DAGPU_PRIOR_NONE, 0.0f, 0.0f, 0.0f, 0.0f}
                                   : ws.rows[(b * p.heads_q + h) * p.len_q + i];
    const float *table =
        p.prior_table ? ws.prior + ((b * p.heads_kv + kvh) * p.len_q + i) * p.num_blocks : nullptr;
    const da_rows lr = da_row_layout(p, i + p.query_offset, p.len_k);
    const float scale2 = p.scale * DA_LOG2E;

    float m = -DA_INF_F, l = 0.0f, o[MAX_DIM_PER_LANE];
    for (int e = 0; e < MAX_DIM_PER_LANE; e++)
        o[e] = 0.0f;
    const int64_t blocks = (lr.visible_end + S - 1) / S;
    for (int64_t j = 0; j < blocks; j++) {
        float prior;
        if (da_forced(lr, j)) {
            prior = 0.0f;
        } else if (j >= lr.cand_begin && j < lr.cand_end) {
            if (p.prior_table) {
                prior = table[j];
            } else {
                float z = 0.0f;
                if (lane == 0)
                    z = da_block_score(qs, kbar + j * D, D, p.stage1_scale);
                z = da_shfl<DA_WARP>(z, 0);
                prior = da_candidate_log2(p, rp, z);
            }
            if (prior == -DA_INF_F)
                continue;
        } else {
            continue;
        }
        const int64_t end = min((j + 1) * S, lr.visible_end);
        for (int64_t base = j * S; base < end; base += DA_WARP) {
            const int64_t t = base + lane;
            float s = -DA_INF_F;
            if (t < end) {
                float acc = 0.0f;
                for (int64_t d = 0; d < D; d++)
                    acc = fmaf(qs[d], da_load(k.data, k.dtype, da_offset(k, b, kvh, t, d)), acc);
                s = acc * scale2 + prior;
            }
            const float m_new = fmaxf(m, da_warp_max<DA_WARP>(s));
            const float corr = exp2f(m - m_new);
            const float pr = t < end ? exp2f(s - m_new) : 0.0f;
            l = l * corr + da_warp_sum<DA_WARP>(pr);
            for (int e = 0; e < MAX_DIM_PER_LANE; e++)
                o[e] *= corr;
            const int64_t n = min((int64_t)DA_WARP, end - base);
            for (int64_t u = 0; u < n; u++) {
                const float pu = da_shfl<DA_WARP>(pr, (int)u);
                for (int e = 0; e < MAX_DIM_PER_LANE; e++) {
                    const int64_t d = lane + DA_WARP * e;
                    if (d < D)
                        o[e] = fmaf(pu, da_load(v.data, v.dtype, da_offset(v, b, kvh, base + u, d)),
                                    o[e]);
                }
            }
            m = m_new;
        }
    }
    const float inv = 1.0f / l;
    for (int e = 0; e < MAX_DIM_PER_LANE; e++) {
        const int64_t d = lane + DA_WARP * e;
        if (d < D)
            da_store(out.data, out.dtype, da_offset(out, b, h, i, d), o[e] * inv);
    }
    if (lse && lane == 0)
        lse[(b * p.heads_q + h) * p.len_q + i] = (m + log2f(l)) * DA_LN2;
}

} // namespace

extern "C" dagpu_err dagpu_launch_stage2(const dagpu_params *p, const dashattn_tensor *q,
                                         const dashattn_tensor *k, const dashattn_tensor *v,
                                         const dashattn_tensor *out, float *lse,
                                         const dagpu_forward_ws *ws, void *stream)
{
    const dim3 grid((unsigned)((p->len_q + ROWS_PER_BLOCK - 1) / ROWS_PER_BLOCK),
                    (unsigned)p->heads_q, (unsigned)p->batch);
    const size_t smem = ROWS_PER_BLOCK * p->head_dim * sizeof(float);
    stage2_kernel<<<grid, DA_WARP * ROWS_PER_BLOCK, smem, (dagpu_rt_stream)stream>>>(
        *p, *q, *k, *v, *out, lse, *ws);
    return (dagpu_err)dagpuGetLastError();
}
