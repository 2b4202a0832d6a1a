/* SPDX-License-Identifier: MIT */
/* Host-side state and entry points of the CUDA plugin. */
#ifndef DASHATTN_CUDA_PLUGIN_H
#define DASHATTN_CUDA_PLUGIN_H

#include "cuda_internal.h"

typedef struct dacuda_state {
    int device;
    int sm_count;
    size_t smem_optin;
    dacuda_device_error *error; /* device memory, see cuda_synchronize */
    char name[320];
} dacuda_state;

extern const dashattn_host *dacuda_host;

/* Sets the error message for a CUDA failure and returns its status. */
dashattn_status dacuda_fail(cudaError_t err, const char *what);
/* Makes the context's device current for the calling thread. */
dashattn_status dacuda_enter(const dacuda_state *st);

/* Carves consecutive 256-byte aligned pieces out of a workspace; with a NULL
 * base it only counts bytes. */
typedef struct dacuda_carver {
    char *base;
    size_t used;
} dacuda_carver;

void *dacuda_carve(dacuda_carver *c, size_t bytes);

/* Fails with INVALID_ARGUMENT unless the workspace is 256-byte aligned, as
 * cudaMalloc memory is: its arrays are read with 16-byte vector loads. */
dashattn_status dacuda_check_workspace(const char *op, const void *workspace);

size_t dacuda_workspace_size(void *state, const dashattn_plan_desc *plan, dashattn_operation op);
dashattn_status dacuda_forward(void *state, const dashattn_plan_desc *plan,
                               const dashattn_forward_args *args);
dashattn_status dacuda_cache_append(void *state, const dashattn_plan_desc *plan,
                                    const dashattn_append_args *args);
dashattn_status dacuda_decode(void *state, const dashattn_plan_desc *plan,
                              const dashattn_decode_args *args);

#endif
