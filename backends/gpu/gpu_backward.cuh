/* SPDX-License-Identifier: MIT */
/* What the backward's kernels share (gpu_backward.cu,
 * gpu_backward_stage1.cu and the tensor-core nv/nv_backward*.cu): where a
 * (row, head, block) score gradient lives, and the touch masks of tiles of
 * 64 (row, head) pairs of a KV head. */
#ifndef DASHATTN_GPU_BACKWARD_CUH
#define DASHATTN_GPU_BACKWARD_CUH

#include "gpu_device.cuh"

/* lambda1 dL/dz (first the prior gradient) of row i, head g, block j. */
static __device__ __forceinline__ float *dz_slot(const dagpu_params &p, const dagpu_backward_ws &ws,
                                                 int64_t bh, int64_t j, int64_t i, int64_t g)
{
    return ws.dz + ((bh * p.num_blocks + j) * p.len_q + i) * p.group_size + g;
}

/* The first pair that can see the key block starting at key `first`:
 * causal rows before it cannot. */
static __device__ __forceinline__ int64_t first_pair(const dagpu_params &p, int64_t first)
{
    return (p.causal ? min(max(first - p.query_offset, (int64_t)0), p.len_q) : 0) * p.group_size;
}

/* Whether pair tile pt of KV head bh touches block j. */
static __device__ __forceinline__ bool touched(const dagpu_backward_ws &ws, int64_t bh, int64_t pt,
                                               int64_t j)
{
    const uint32_t word = ws.touch[(bh * ws.pair_tiles + pt) * ws.fwd.words + j / 32];
    return (word >> (unsigned)(j % 32)) & 1u;
}

/* The learned summaries as a kernel argument: data NULL for mean pooling. */
static inline dashattn_tensor summary_by_value(const dashattn_tensor *summary)
{
    dashattn_tensor h;
    if (summary)
        h = *summary;
    else
        h.data = nullptr;
    return h;
}

#endif
