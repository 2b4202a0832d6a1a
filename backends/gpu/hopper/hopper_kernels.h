/* SPDX-License-Identifier: MIT */
/* The Hopper-only kernels (wgmma; sm_90a machine code, which no other card
 * runs) as the host code sees them. The plan takes them only on an sm_90
 * device (gpu_plan.c); only the cuda plugin links them. */
#ifndef DASHATTN_GPU_HOPPER_KERNELS_H
#define DASHATTN_GPU_HOPPER_KERNELS_H

#include "../gpu_kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Stage 2 on wgmma, in place of dagpu_nv_launch_stage2 and for the same
 * plans and tensors, and the shared memory it needs. */
size_t dagpu_hopper_stage2_smem(const dagpu_params *p);
dagpu_err dagpu_hopper_launch_stage2(const dagpu_params *p, const dashattn_tensor *q,
                                     const dashattn_tensor *k, const dashattn_tensor *v,
                                     const dashattn_tensor *out, float *lse,
                                     const dagpu_forward_ws *ws, void *stream);

#ifdef __cplusplus
}
#endif

#endif
