/* SPDX-License-Identifier: MIT */
/* Shared by the plugin's C host code and its CUDA kernels: the plan as the
 * kernels see it, the workspace layouts, and the kernel launchers. */
#ifndef DASHATTN_CUDA_INTERNAL_H
#define DASHATTN_CUDA_INTERNAL_H

#include <dashattn/backend.h>

#include <cuda_runtime_api.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Rows of one stage-2 tile: the unit whose blocks stage 1 unites. */
#define DACUDA_TILE_ROWS 64
/* Query vectors one generic stage-1 thread block scores: rows of one head,
 * or in group-mean mode the G heads of 16 / G rows (one row if G > 16). */
#define DACUDA_STAGE1_ROWS 16

/* How stage 2 turns a recomputed block score z into a log2 prior. */
enum {
    DACUDA_PRIOR_NONE = 0,    /* the row has no candidates */
    DACUDA_PRIOR_SOFTMAX = 1, /* log2 p = (z - a) log2(e) */
    DACUDA_PRIOR_ENTMAX = 2,  /* p = ((alpha - 1)(z - a) - tau)_+^(1/(alpha-1)) / norm */
    DACUDA_PRIOR_TOPK = 3     /* p = 1 where z > a */
};

/* Per query row, written by stage 1: mode, a, tau, log2 norm, and for the
 * flat prior mu, the mean log2 weight of the row's blocks with w > 1e-20. */
typedef struct dacuda_row_param {
    float mode, a, tau, log2norm, mu;
} dacuda_row_param;

/* The plan in the form kernels take by value. */
typedef struct dacuda_params {
    int64_t batch, heads_q, heads_kv, len_q, len_k, head_dim;
    int64_t num_blocks, group_size, query_offset;
    int32_t block_size, n_sink, n_local, causal;
    int32_t method, iterations, topk;
    /* shared_group and group_mean: the mode, with G > 1 (G = 1 is per-head).
     * prior_table goes with either: one weight per KV head, which stage 1
     * writes for every candidate (dacuda_forward_ws.prior) and stage 2
     * reads; otherwise stage 2 recomputes each head's prior from the
     * candidate's score and the row's dacuda_row_param. */
    uint8_t shared_group, group_mean, prior_table, prior_flat;
    int32_t dtype;
    float alpha, scale, stage1_scale, inv_sigma; /* inv_sigma: 1 / prior_sigma (flat prior) */
} dacuda_params;

void dacuda_params_from_plan(const dashattn_plan_desc *plan, dacuda_params *p);

/* Device arrays of a forward call, carved from its workspace. */
typedef struct dacuda_forward_ws {
    float *kbar;                /* [B, Hkv, M, D] block summaries (keys) */
    void *kbar_hi, *kbar_lo;    /* the same split into two 16-bit parts (fast path) */
    float *prior;               /* [B, Hkv, Nq, M] log2 prior of candidates (prior_table) */
    dacuda_row_param *rows;     /* [B, Hq, Nq] */
    uint32_t *masks;            /* [B, Hq, tiles, words]: blocks a tile reads */
    unsigned long long *counts; /* visible and attended pairs */
    int64_t tiles, words;
} dacuda_forward_ws;

/* Bytes of a forward workspace; with base != NULL also carves it. */
size_t dacuda_forward_layout(const dashattn_plan_desc *plan, void *base, dacuda_forward_ws *ws);

/* Device arrays of a decode call. */
typedef struct dacuda_decode_ws {
    float *log2w;     /* [B, Hq, M]: each head's log2 prior per block, -inf if unread */
    int32_t *blocks;  /* [B, Hkv, M]: blocks any head of the group reads, ascending */
    int32_t *nblocks; /* [B, Hkv] */
    float *partial;   /* [B, Hq, splits, D + 2]: (m, l, o) of each split */
    int64_t splits;
} dacuda_decode_ws;

size_t dacuda_decode_layout(const dashattn_plan_desc *plan, int sm_count, void *base,
                            dacuda_decode_ws *ws);

/* Error a kernel found in device data (seq_lens, block tables), reported by
 * the next synchronize: code is a dashattn_status, 0 if none. */
typedef struct dacuda_device_error {
    int code, batch, value, what;
} dacuda_device_error;

enum { DACUDA_BAD_SEQ_LEN = 1, DACUDA_BAD_PAGE = 2, DACUDA_NO_ROOM = 3 };

/* Query rows of one stage-1 thread block with `slots` query vectors: all of
 * them in per-head and shared mode; in group-mean mode the largest power of
 * two R with G * R <= slots (at least 1), the G heads of R rows, so a
 * block's rows never straddle a stage-2 tile. */
static inline int dacuda_stage1_rows(const dacuda_params *p, int slots)
{
    int rows = slots;
    if (p->group_mean)
        while (rows > 1 && (int64_t)rows * p->group_size > slots)
            rows /= 2;
    return rows;
}

/* Query vectors (heads x rows) one generic stage-1 thread block scores. */
static inline int64_t dacuda_stage1_vectors(const dacuda_params *p)
{
    const int64_t rows = dacuda_stage1_rows(p, DACUDA_STAGE1_ROWS);
    return p->group_mean ? rows * p->group_size : rows;
}

/* Dynamic shared memory of stage 1 (the call fails above the device's limit):
 * queries and scores of its vectors, in group-mean mode their row
 * parameters, and the mask words. */
static inline size_t dacuda_stage1_smem(const dacuda_params *p)
{
    const size_t vectors = (size_t)dacuda_stage1_vectors(p);
    return vectors * (size_t)(p->head_dim + p->num_blocks) * sizeof(float) +
           (p->group_mean ? vectors * sizeof(dacuda_row_param) : 0) +
           (size_t)((p->num_blocks + 31) / 32) * sizeof(uint32_t);
}

/* Is the fast tensor-core stage 2 usable for this call? */
int dacuda_stage2_fast_ok(const dacuda_params *p, const dashattn_tensor *q,
                          const dashattn_tensor *k, const dashattn_tensor *v,
                          const dashattn_tensor *out);

/* summary: the learned vectors h (f32 [1, Hkv, 1, D]), NULL for mean pooling. */
cudaError_t dacuda_launch_block_keys(const dacuda_params *p, const dashattn_tensor *k,
                                     const dashattn_tensor *summary, const dacuda_forward_ws *ws,
                                     int split16, cudaStream_t stream);
/* Shared memory of the tensor-core stage 1 (used only where it fits). */
size_t dacuda_stage1_mma_smem(const dacuda_params *p);
cudaError_t dacuda_launch_stage1(const dacuda_params *p, const dashattn_tensor *q,
                                 const dacuda_forward_ws *ws, const dashattn_selection *sel,
                                 int fast, cudaStream_t stream);
cudaError_t dacuda_launch_stage2(const dacuda_params *p, const dashattn_tensor *q,
                                 const dashattn_tensor *k, const dashattn_tensor *v,
                                 const dashattn_tensor *out, float *lse,
                                 const dacuda_forward_ws *ws, cudaStream_t stream);
cudaError_t dacuda_launch_stage2_mma(const dacuda_params *p, const dashattn_tensor *q,
                                     const dashattn_tensor *k, const dashattn_tensor *v,
                                     const dashattn_tensor *out, float *lse,
                                     const dacuda_forward_ws *ws, cudaStream_t stream);
cudaError_t dacuda_launch_decode(const dacuda_params *p, const dashattn_tensor *q,
                                 const dashattn_kv_cache *cache, const dashattn_tensor *out,
                                 float *lse, const dacuda_decode_ws *ws, dacuda_device_error *err,
                                 cudaStream_t stream);
/* The tensor-core decode split (16-bit caches, D 64 or 128, block size 64,
 * at most 16 query heads per KV head); decode kernels launch it themselves. */
cudaError_t dacuda_launch_decode_split_mma(const dacuda_params *p, const dashattn_tensor *q,
                                           const dashattn_kv_cache *c, const dacuda_decode_ws *ws,
                                           cudaStream_t stream);
cudaError_t dacuda_launch_append(const dacuda_params *p, const dashattn_kv_cache *cache,
                                 const dashattn_tensor *k_new, const dashattn_tensor *v_new,
                                 const dashattn_tensor *summary, dacuda_device_error *err,
                                 cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif
