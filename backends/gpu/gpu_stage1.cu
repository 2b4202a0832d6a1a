/* SPDX-License-Identifier: MIT */
/* Stage 1 of a forward call, portable kernel: block scores of up to 16
 * query vectors per thread block in f32 (da_score_chunk), then
 * gpu_stage1_finish.cuh. The NVIDIA tensor-core variant is
 * nv/nv_stage1.cu. */
#include "gpu_stage1_finish.cuh"

namespace
{

/* One thread block scores R rows of one query head, of one KV head in
 * shared mode (on the group-mean query), or in group-mean mode the G heads
 * of one KV head for R rows (query vector a = g * R + r): R is
 * dagpu_stage1_rows of the plan's stage1_slots. */
__global__ void __launch_bounds__(128, 4) /* 128 registers: four per multiprocessor */
    stage1_kernel(dagpu_params p, dashattn_tensor q, dagpu_forward_ws ws, dashattn_selection sel,
                  int R)
{
    extern __shared__ float smem[];
    const int64_t D = p.head_dim, M = p.num_blocks, G = p.group_size;
    const int64_t VS = DAGPU_SCORE_STRIDE(D);
    const int64_t b = blockIdx.z, hh = blockIdx.y;
    const int64_t kvh = p.shared_group || p.group_mean ? hh : hh / G;
    const int64_t row0 = (int64_t)blockIdx.x * R;
    const int rows = (int)min((int64_t)R, p.len_q - row0);
    const int64_t vectors = p.group_mean ? G * R : R;
    float *qs = smem;
    float *kb = qs + vectors * VS;
    float *zs = kb + DAGPU_SCORE_COLS * VS;
    dagpu_row_param *params = reinterpret_cast<dagpu_row_param *>(zs + vectors * M);
    /* The rows' blocks and counts are gathered here first: one global atomic
     * per word per thread block instead of one per row. */
    const da_tile_masks mask = da_tile_masks_init(
        p, ws, reinterpret_cast<unsigned *>(params + (p.group_mean ? vectors : 0)), row0, rows);
    __shared__ unsigned long long block_counts[2];
    const int tid = threadIdx.x;
    if (tid < 2)
        block_counts[tid] = 0;

    da_stage_vectors(qs, vectors, VS, D, [&](int64_t a) {
        const int64_t r = a % R;
        const int64_t h = p.shared_group ? hh * G : p.group_mean ? hh * G + a / R : hh;
        return da_query_vector(q, b, h, G, row0 + r, r < rows, p.shared_group != 0);
    });

    /* The rows' candidates, a chunk of block keys at a time. */
    const da_rows first = da_row_layout(p, row0 + p.query_offset, p.len_k);
    const da_rows last = da_row_layout(p, row0 + rows - 1 + p.query_offset, p.len_k);
    const int64_t cb = min(first.cand_begin, last.cand_begin);
    const int64_t ce = max(first.cand_end, last.cand_end);
    const float *kbar = ws.kbar + (b * p.heads_kv + kvh) * M * D;
    da_score_range(qs, kb, kbar, VS, vectors, M, D, p.stage1_scale, cb, ce,
                   [&](int64_t a, int64_t j, float z) { zs[a * M + j] = z; });

    if (p.group_mean)
        stage1_finish_group(p, ws, sel, zs, M, R, rows, row0, b, hh, params, mask, block_counts);
    else
        stage1_finish(p, ws, sel, zs, M, rows, row0, b, hh, mask, block_counts);
}

} // namespace

extern "C" dagpu_err dagpu_launch_stage1(const dagpu_params *p, const dashattn_tensor *q,
                                         const dagpu_forward_ws *ws, const dashattn_selection *sel,
                                         int slots, void *stream)
{
    dashattn_selection s = {0, 0, 0, 0};
    if (sel)
        s = *sel;
    const size_t smem = dagpu_stage1_smem(p, slots);
    dagpu_rt_error e = da_allow_smem(stage1_kernel, smem);
    if (e != dagpu_rt_success)
        return (dagpu_err)e;
    const int R = dagpu_stage1_rows(p, slots);
    const dim3 grid((unsigned)((p->len_q + R - 1) / R),
                    (unsigned)(p->shared_group || p->group_mean ? p->heads_kv : p->heads_q),
                    (unsigned)p->batch);
    stage1_kernel<<<grid, 128, smem, (dagpu_rt_stream)stream>>>(*p, *q, *ws, s, R);
    return (dagpu_err)dagpuGetLastError();
}
