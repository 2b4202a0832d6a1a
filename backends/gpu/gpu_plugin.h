/* SPDX-License-Identifier: MIT */
/* Host side of the GPU plugins (C): device state, the per-plan choices, and
 * the entry points. The same files build dashattn-cuda.so and
 * dashattn-hip.so; DAGPU_NAME ("cuda", "hip") names the plugin and
 * DAGPU_HAVE_NV says whether the NVIDIA-only kernels (nv/) are linked. */
#ifndef DASHATTN_GPU_PLUGIN_H
#define DASHATTN_GPU_PLUGIN_H

#include "gpu_kernels.h"

#ifndef DAGPU_NAME
#error "DAGPU_NAME must name the plugin"
#endif

typedef struct dagpu_state {
    int device;
    dagpu_device_info info;
    /* DASHATTN_GPU_KERNELS=portable: the NVIDIA-only kernels are not used,
     * so the portable ones (what AMD runs) can be tested on NVIDIA. */
    int portable;
    /* The Hopper-only (sm_90a) kernels may run: an sm_90 device, and
     * DASHATTN_GPU_KERNELS neither portable nor sm80. */
    int hopper;
    /* The backward may take its tensor-core kernels (DASHATTN_GPU_BACKWARD). */
    int backward_mma;
    /* Thread blocks of the tensor-core decode split (DASHATTN_GPU_DECODE_CTAS),
     * 0 for one wave. */
    int64_t decode_ctas;
    dagpu_device_error *error; /* device memory, see gpu_synchronize */
    char name[400];
} dagpu_state;

/* What one plan runs, chosen once by dagpu_plan_prepare. The NVIDIA-only
 * variants are allowed here by the plan's shape and the device; a call takes
 * them only if its tensors also suit them (strides, alignment). */
typedef struct dagpu_plan {
    dagpu_params params;
    int stage1_nv;     /* tensor-core stage 1 (with stage2_nv only) */
    int stage2_nv;     /* tensor-core stage 2 */
    int stage2_hopper; /* its wgmma variant (with stage2_nv only) */
    int split_keys;    /* the forward workspace holds 16-bit split block keys */
    int stage1_slots;  /* query vectors per thread block of the portable stage 1 */
    int decodes;       /* a decode plan: len_q 1, causal */
    int64_t decode_splits;
    int decode_threshold_threads;
    int decode_weight_lanes;
    int decode_merge_lane_columns;
    int decode_chained;           /* dependent launches between the decode kernels */
    int decode_tile;              /* tokens per tile of the portable decode split */
    int decode_split_nv;          /* tensor-core decode split */
    int64_t decode_stream_ctas;   /* its thread blocks (0 without it) */
    int decode_scores_nv;         /* tensor-core decode scores */
    int backward_kv_nv;           /* tensor-core kv kernel of the backward */
    int64_t backward_kv_splits;   /* its splits of each key block's pair tiles */
    int backward_dq_nv;           /* tensor-core stage-2 part of the backward's dq */
    int64_t backward_stage1_rows; /* query rows per thread block of its stage-1 kernel */
    int64_t backward_rows_chunk;  /* keys its rows kernel stages at a time */
    /* An operation this plan cannot run on the device (the plan itself is
     * refused when it cannot run its main one): why, or "" if it can. */
    char forward_refusal[256];
    char backward_refusal[256];
} dagpu_plan;

extern const dashattn_host *dagpu_host;

/* Sets the error message for a runtime failure and returns its status. */
dashattn_status dagpu_fail(dagpu_err err, const char *what);
/* DASHATTN_OK for a runtime call's success, else dagpu_fail's status. */
static inline dashattn_status dagpu_check(dagpu_err err, const char *what)
{
    return err == 0 ? DASHATTN_OK : dagpu_fail(err, what);
}

/* Returns from the calling function with expr's status unless it is OK. */
#define DAGPU_TRY(expr)                                                                            \
    do {                                                                                           \
        const dashattn_status dagpu_try_ = (expr);                                                 \
        if (dagpu_try_ != DASHATTN_OK)                                                             \
            return dagpu_try_;                                                                     \
    } while (0)

/* Makes the context's device current for the calling thread. */
dashattn_status dagpu_enter(const dagpu_state *st);

/* Carves consecutive 256-byte aligned pieces out of a workspace; with a NULL
 * base it only counts bytes. */
typedef struct dagpu_carver {
    char *base;
    size_t used;
} dagpu_carver;

void *dagpu_carve(dagpu_carver *c, size_t bytes);

/* Fails with INVALID_ARGUMENT unless the workspace is 256-byte aligned, as
 * the runtime's allocations are: its arrays are read with 16-byte loads. */
dashattn_status dagpu_check_workspace(const char *op, const void *workspace);

void dagpu_params_from_plan(const dashattn_plan_desc *plan, dagpu_params *p);
size_t dagpu_forward_layout(const dagpu_plan *gp, void *base, dagpu_forward_ws *ws);
size_t dagpu_decode_layout(const dagpu_plan *gp, void *base, dagpu_decode_ws *ws);
size_t dagpu_backward_layout(const dagpu_plan *gp, void *base, dagpu_backward_ws *ws);
/* Nonzero if the plan's backward sends gradients into stage 1 (not top-k). */
int dagpu_backward_stage1_grad(const dagpu_params *p);

/* Nonzero if the tensors suit the 16-bit tensor-core kernels: unit stride in
 * the head dimension, other strides multiples of 8 elements, 16-byte
 * aligned data. */
int dagpu_tensors_vector_ok(const dashattn_tensor *const *t, int count);
/* Nonzero if a forward call over these tensors takes the tensor-core stage
 * 2; *stage1 nonzero if it takes the tensor-core stage 1 as well. */
int dagpu_forward_nv_stages(const dagpu_plan *gp, const dashattn_tensor *q,
                            const dashattn_tensor *k, const dashattn_tensor *v,
                            const dashattn_tensor *out, const dashattn_tensor *summary,
                            int *stage1);

dashattn_status dagpu_plan_prepare(void *state, const dashattn_plan_desc *plan, void **plan_state);
void dagpu_plan_release(void *state, void *plan_state);
size_t dagpu_workspace_size(void *state, const dashattn_plan_desc *plan, dashattn_operation op);
dashattn_status dagpu_forward(void *state, const dashattn_plan_desc *plan,
                              const dashattn_forward_args *args);
dashattn_status dagpu_backward(void *state, const dashattn_plan_desc *plan,
                               const dashattn_backward_args *args);
dashattn_status dagpu_cache_append(void *state, const dashattn_plan_desc *plan,
                                   const dashattn_append_args *args);
dashattn_status dagpu_decode(void *state, const dashattn_plan_desc *plan,
                             const dashattn_decode_args *args);

#endif
