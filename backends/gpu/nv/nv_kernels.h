/* SPDX-License-Identifier: MIT */
/* The NVIDIA-only kernels (mma.sync, ldmatrix, cp.async; sm_80 and newer)
 * as the host code sees them: faster variants of portable kernels, used
 * where a plan and its tensors allow (gpu_plan.c decides what a plan may
 * use, the call checks its tensors). Only the cuda plugin links them. */
#ifndef DASHATTN_GPU_NV_KERNELS_H
#define DASHATTN_GPU_NV_KERNELS_H

#include "../gpu_kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Stage 1 on the tensor cores (16-bit q, head dimension 64 or 128, block
 * size 64, not shared mode; group-mean with at most 32 heads per group), and
 * the shared memory it needs. Reads the split keys of dagpu_launch_block_keys
 * with split16. */
size_t dagpu_nv_stage1_smem(const dagpu_params *p);
dagpu_err dagpu_nv_launch_stage1(const dagpu_params *p, const dashattn_tensor *q,
                                 const dagpu_forward_ws *ws, const dashattn_selection *sel,
                                 void *stream);
/* Stage 2 on the tensor cores: 16-bit q, k, v, out with contiguous,
 * 16-byte aligned rows, head dimension 64 or 128, block size 64. */
size_t dagpu_nv_stage2_smem(const dagpu_params *p);
dagpu_err dagpu_nv_launch_stage2(const dagpu_params *p, const dashattn_tensor *q,
                                 const dashattn_tensor *k, const dashattn_tensor *v,
                                 const dashattn_tensor *out, float *lse, const dagpu_forward_ws *ws,
                                 void *stream);
/* The decode split on the tensor cores (16-bit caches, head dimension 64 or
 * 128, block size 64, at most 16 query heads per KV head), in place of
 * dagpu_launch_decode_split. */
size_t dagpu_nv_decode_split_smem(const dagpu_params *p);
/* Its thread blocks on a device of sm_count multiprocessors (one wave). */
int64_t dagpu_nv_decode_split_ctas(int sm_count);
dagpu_err dagpu_nv_launch_decode_split(const dagpu_params *p, const dashattn_tensor *q,
                                       const dashattn_kv_cache *cache, const dagpu_decode_ws *ws,
                                       void *stream);
/* Decode stage-1 scores on the tensor cores, in place of
 * dagpu_launch_decode_scores: whether a plan's shape and the cache's block
 * keys allow it (16-bit q, head dimension 64 or 128, at most 16 query heads
 * per KV head, f32 or the cache's own 16-bit block keys; the caller also
 * checks q's and the block keys' rows with dagpu_tensors_vector_ok). */
int dagpu_nv_decode_scores_ok(const dagpu_params *p, const dashattn_kv_cache *cache);
dagpu_err dagpu_nv_launch_decode_scores(const dagpu_params *p, const dashattn_tensor *q,
                                        const dashattn_kv_cache *cache, const dagpu_decode_ws *ws,
                                        void *stream);

/* The shapes both tensor-core backward kernels take: 16-bit data, head
 * dimension 64 or 128, block size 64, priors from stage 1's table. */
static inline int dagpu_nv_backward_shape_ok(const dagpu_params *p)
{
    return p->prior_table && p->block_size == 64 && p->dtype != DASHATTN_F32 &&
           (p->head_dim == 64 || p->head_dim == 128);
}

/* The backward's kv kernel on the tensor cores, in place of
 * dagpu_launch_backward_kv: whether a plan allows it (those shapes, at most
 * 64 query heads per KV head, its shared memory within smem_limit), and the
 * launch (q, k, v, dout, dk, dv with contiguous, 16-byte aligned rows; the
 * workspace's row_touch filled by the stage-1 kernel). */
int dagpu_nv_backward_kv_ok(const dagpu_params *p, size_t smem_limit);
/* Splits of each key block's pair tiles, so that enough thread blocks
 * share the device (1 where the key blocks alone fill it), and the floats
 * of one split's partial sums in the workspace. */
int64_t dagpu_nv_backward_kv_splits(const dagpu_params *p, int sm_count);
size_t dagpu_nv_backward_kv_part_floats(const dagpu_params *p);
dagpu_err dagpu_nv_launch_backward_kv(const dagpu_params *p, const dashattn_tensor *q,
                                      const dashattn_tensor *k, const dashattn_tensor *v,
                                      const dashattn_tensor *dout, const float *lse,
                                      const dashattn_tensor *summary, const dashattn_tensor *dk,
                                      const dashattn_tensor *dv, const dagpu_backward_ws *ws,
                                      void *stream);

/* The backward's stage-2 part of dq (and Dl, and the prior gradients) on
 * the tensor cores: whether a plan allows it (dagpu_nv_backward_shape_ok,
 * packed tiles, its shared memory within smem_limit), and the launch
 * (q, k, v, out, dout with contiguous, 16-byte aligned rows). */
int dagpu_nv_backward_dq_ok(const dagpu_params *p, size_t smem_limit);
dagpu_err dagpu_nv_launch_backward_dq(const dagpu_params *p, const dashattn_tensor *q,
                                      const dashattn_tensor *k, const dashattn_tensor *v,
                                      const dashattn_tensor *out, const dashattn_tensor *dout,
                                      const float *lse, const dagpu_backward_ws *ws, void *stream);

#ifdef __cplusplus
}
#endif

#endif
