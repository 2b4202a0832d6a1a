/* SPDX-License-Identifier: MIT */
/* The launch interface between the GPU plugins' C host code and their
 * kernels, the same for CUDA and HIP: the plan as the kernels see it, the
 * workspace layouts, the kernel launchers and the few runtime calls the host
 * needs. Plain C: no vendor header is included here. Launchers and runtime
 * calls return the vendor's error code as an int, 0 for success; streams
 * are the caller's cudaStream_t / hipStream_t as a pointer. */
#ifndef DASHATTN_GPU_KERNELS_H
#define DASHATTN_GPU_KERNELS_H

#include <dashattn/backend.h>

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Rows of one stage-2 tile: the unit whose blocks stage 1 unites. */
#define DAGPU_TILE_ROWS 64
/* Query vectors one generic stage-1 thread block scores at most: rows of
 * one head, or in group-mean mode the G heads of 16 / G rows (one row if
 * G > 16); fewer where many key blocks would not fit shared memory
 * (dagpu_plan.stage1_slots). */
#define DAGPU_STAGE1_ROWS 16
/* Blocks the kernels that score in shared memory take at a time (one mask
 * word), and the row stride of their staged vectors and block keys. */
#define DAGPU_SCORE_COLS 32
#define DAGPU_SCORE_STRIDE(dim) (((dim) + 7) / 8 * 8 + 4)
/* Query heads per KV head that decode takes (plans with more are refused). */
#define DAGPU_DECODE_MAX_GROUP 32
/* The most thread blocks the tensor-core decode split takes (two per
 * multiprocessor). */
#define DAGPU_DECODE_MAX_STREAM_CTAS 4096

/* How stage 2 turns a recomputed block score z into a log2 prior. */
enum {
    DAGPU_PRIOR_NONE = 0,    /* the row has no candidates */
    DAGPU_PRIOR_SOFTMAX = 1, /* log2 p = (z - a) log2(e) */
    DAGPU_PRIOR_ENTMAX = 2,  /* p = ((alpha - 1)(z - a) - tau)_+^(1/(alpha-1)) / norm */
    DAGPU_PRIOR_TOPK = 3     /* p = 1 where z > a */
};

/* Per query row, written by stage 1: mode, a, tau, log2 norm, and for the
 * flat prior mu, the mean log2 weight of the row's blocks with w > 1e-20. */
typedef struct dagpu_row_param {
    float mode, a, tau, log2norm, mu;
} dagpu_row_param;

/* The plan in the form kernels take by value. */
typedef struct dagpu_params {
    int64_t batch, heads_q, heads_kv, len_q, len_k, head_dim;
    int64_t num_blocks, group_size, query_offset;
    int32_t block_size, n_sink, n_local, causal;
    int32_t method, iterations, topk;
    /* shared_group and group_mean: the mode, with G > 1 (G = 1 is per-head).
     * prior_table goes with either: one weight per KV head, which stage 1
     * writes for every candidate (dagpu_forward_ws.prior) and stage 2
     * reads; otherwise stage 2 recomputes each head's prior from the
     * candidate's score and the row's dagpu_row_param. */
    uint8_t shared_group, group_mean, prior_table, prior_flat;
    int32_t dtype;
    float alpha, scale, stage1_scale, inv_sigma; /* inv_sigma: 1 / prior_sigma (flat prior) */
} dagpu_params;

#if defined(__CUDACC__) || defined(__HIPCC__)
#define DAGPU_HOST_DEVICE __host__ __device__
#else
#define DAGPU_HOST_DEVICE
#endif

/* Stage-2 tiles. Where the selection is one per KV head (shared and
 * group-mean modes) a tile holds DAGPU_TILE_ROWS (row, head) pairs of one KV
 * head, row-major: its packed row r is query row r / G of head kvh * G +
 * r % G, so the G heads of a row, which keep the same blocks, share one K/V
 * stream and a tile spans 64 / G rows. Otherwise a tile is 64 rows of one
 * query head. Masks are [B, dagpu_tile_heads, dagpu_tile_count, words]. */
static inline DAGPU_HOST_DEVICE int dagpu_tiles_packed(const dagpu_params *p)
{
    return p->shared_group || p->group_mean;
}

static inline DAGPU_HOST_DEVICE int64_t dagpu_tile_heads(const dagpu_params *p)
{
    return dagpu_tiles_packed(p) ? p->heads_kv : p->heads_q;
}

/* Rows of the tiles: (row, head) pairs or rows. */
static inline DAGPU_HOST_DEVICE int64_t dagpu_tile_rows_total(const dagpu_params *p)
{
    return dagpu_tiles_packed(p) ? p->len_q * p->group_size : p->len_q;
}

static inline DAGPU_HOST_DEVICE int64_t dagpu_tile_count(const dagpu_params *p)
{
    return (dagpu_tile_rows_total(p) + DAGPU_TILE_ROWS - 1) / DAGPU_TILE_ROWS;
}

/* The first and last tile query row i belongs to (they differ only when
 * packed rows of one query row straddle two tiles). */
static inline DAGPU_HOST_DEVICE int64_t dagpu_row_first_tile(const dagpu_params *p, int64_t i)
{
    return (dagpu_tiles_packed(p) ? i * p->group_size : i) / DAGPU_TILE_ROWS;
}

static inline DAGPU_HOST_DEVICE int64_t dagpu_row_last_tile(const dagpu_params *p, int64_t i)
{
    return (dagpu_tiles_packed(p) ? i * p->group_size + p->group_size - 1 : i) / DAGPU_TILE_ROWS;
}

/* Tiles whose mask words one stage-1 thread block of `rows` consecutive
 * query rows gathers in shared memory: at most this many. */
static inline DAGPU_HOST_DEVICE int dagpu_stage1_mask_tiles(const dagpu_params *p, int rows)
{
    if (!dagpu_tiles_packed(p))
        return 1;
    return (int)(((int64_t)rows * p->group_size + DAGPU_TILE_ROWS - 2) / DAGPU_TILE_ROWS) + 1;
}

/* Device arrays of a forward call, carved from its workspace. */
typedef struct dagpu_forward_ws {
    float *kbar;                /* [B, Hkv, M, D] block summaries (keys) */
    void *kbar_hi, *kbar_lo;    /* the same split into two 16-bit parts (fast path) */
    float *prior;               /* [B, Hkv, Nq, M] log2 prior of candidates (prior_table) */
    dagpu_row_param *rows;      /* [B, Hq, Nq] */
    uint32_t *masks;            /* [B, tile heads, tiles, words]: blocks a tile reads */
    unsigned long long *counts; /* visible and attended pairs */
    int64_t tiles, words;
} dagpu_forward_ws;

/* Device arrays of a decode call. */
typedef struct dagpu_decode_ws {
    float *log2w; /* [B, Hq, M]: scores, then each head's log2 prior per block, -inf if unread */
    dagpu_row_param *rows; /* [B, Hq]: each row's threshold (shared mode: the group's first) */
    int32_t *blocks;       /* [B, Hkv, M]: blocks any head of the group reads, ascending */
    int32_t *nblocks;      /* [B, Hkv] */
    /* (m, l, o) rows of D + 2 floats: [B, Hq, splits] from the portable
     * split; [stream_ctas + B * Hkv, G] from the tensor-core one, row
     * (c + s) * G + g for head g of segment s as thread block c saw it. */
    float *partial;
    int64_t splits;
    /* Thread blocks of the tensor-core split where they divide the blocks
     * of all (sequence, KV head) segments among them in equal runs; 0 where
     * a split runs a grid of `splits` per segment (the portable split, set
     * per call, or the tensor-core one where that grid fits one wave). */
    int64_t stream_ctas;
    /* [B * Hkv + 1]: where each segment's blocks start in that stream (a
     * bad sequence's count as 0), written by the tensor-core split. */
    int64_t *prefix;
    /* Between the heads' rows of log2w's priors: M, or 0 where the group
     * shares one weight (group-mean and shared modes: the first head's row). */
    int64_t wstride;
    /* The kernels after the first are launched as dependents of the one
     * before (the plan's decode_chained); host side only. */
    int chained;
    /* Threads per row of the threshold kernel (host side only). */
    int threshold_threads;
    /* Threads of the weights kernel that share one block's heads: 1, or a
     * power of two of at least the group's size. */
    int weight_lanes;
    /* Output columns per lane of the merge kernel: 1, 2, 4 or 8 (host side
     * only). */
    int merge_lane_columns;
} dagpu_decode_ws;

/* Device arrays of a backward call. The block keys, the row parameters and
 * the group's prior table are the forward's, computed again by the same
 * kernels (the split keys only where the tensor-core stage 1 runs again). */
typedef struct dagpu_backward_ws {
    dagpu_forward_ws fwd;
    /* [B, Hkv, M, Nq, G]: lambda1 times dL/dz of each (row, head) for its
     * candidate blocks (stage 2's part of the backward first leaves its
     * prior gradients there); NULL where nothing reaches stage 1 (top-k). */
    float *dz;
    float *delta; /* [B, Hq, Nq]: Dl = dO . o */
    /* [B, Hkv, pair_tiles, words]: the blocks a tile of 64 (row, head)
     * pairs of a KV head (pair x: row x / G, head x % G) reads or sends dz
     * (the portable kv kernel's; NULL in a call the tensor-core one takes). */
    uint32_t *touch;
    float *rt;       /* [B, Hkv, Nk]: r_t of each key (learned summaries, for dh) */
    double *dh_part; /* [chunks, Hkv, D]: partial sums of dh */
    /* [B, Hq, Nq, D]: the stage-2 part of dq, which the stage-1 kernel
     * completes into the caller's dq. */
    float *dq_s2;
    /* The tensor-core kv kernel's splits of each key block's pair tiles
     * (dagpu_plan.backward_kv_splits): where there are several, each
     * split's partial dK, dV and block-key gradient [B, Hkv, M, splits,
     * dagpu_nv_backward_kv_part_floats], and per key block the splits that
     * have written theirs (zeroed by each call). */
    float *kv_part;
    uint32_t *kv_arrived;
    int64_t kv_splits;
    /* [B, Hkv, M, row_words]: bit i % 32 of word i / 32 for block j: query
     * row i reads block j in stage 2 or sends it dz from one of its heads
     * (the tensor-core kv kernel's list of rows; NULL in a call the
     * portable one takes). */
    uint32_t *row_touch;
    int64_t row_words;  /* ceil(Nq / 32) */
    int64_t pair_tiles; /* ceil(Nq G / DAGPU_TILE_ROWS) */
    int64_t dh_chunks;  /* ceil(Nk / DAGPU_BWD_DH_CHUNK) */
} dagpu_backward_ws;

/* Key tokens the backward's rows kernel stages at a time (fewer where the
 * chunk would not fit the device's shared memory, down to
 * DAGPU_BWD_CHUNK_MIN), and (row, head) pairs its kv kernel stages at a
 * time; keys one dh partial sum covers. */
#define DAGPU_BWD_CHUNK 32
#define DAGPU_BWD_CHUNK_MIN 4
#define DAGPU_BWD_PAIRS 8
#define DAGPU_BWD_DH_CHUNK 256

/* Dynamic shared memory of the backward's rows kernel, in floats from its
 * start: the G heads' q, dO and dq; a chunk of keys and values (rows padded
 * by one); per (head, token) dl and e (dP - Dl); per block the log2 priors
 * (one row where the group shares them) and the read blocks' list; per
 * head lse, Dl, a prior-gradient sum and the row parameters. */
typedef struct dagpu_bwd_rows_smem {
    int64_t q, dout, dq, k, v, dl, eds, l2pi, list, lse2, delta, gacc, rp, count;
    int64_t total;
} dagpu_bwd_rows_smem;

static inline DAGPU_HOST_DEVICE dagpu_bwd_rows_smem dagpu_bwd_rows_layout(const dagpu_params *p,
                                                                          int64_t chunk)
{
    const int64_t G = p->group_size, D = p->head_dim, M = p->num_blocks, C = chunk;
    dagpu_bwd_rows_smem s;
    int64_t at = 0;
    s.q = at, at += G * D;
    s.dout = at, at += G * D;
    s.dq = at, at += G * D;
    s.k = at, at += C * (D + 1);
    s.v = at, at += C * (D + 1);
    s.dl = at, at += G * C;
    s.eds = at, at += G * C;
    s.l2pi = at, at += (p->prior_table ? 1 : G) * M;
    s.list = at, at += M;
    s.lse2 = at, at += G;
    s.delta = at, at += G;
    s.gacc = at, at += G;
    s.rp = at, at += G * (int64_t)(sizeof(dagpu_row_param) / sizeof(float));
    s.count = at, at += 1;
    s.total = at;
    return s;
}

static inline size_t dagpu_bwd_rows_smem_bytes(const dagpu_params *p, int64_t chunk)
{
    return (size_t)dagpu_bwd_rows_layout(p, chunk).total * sizeof(float);
}

/* The backward's stage-1 kernel (gpu_backward_stage1.cu): a thread block
 * per R query rows of one KV head with all G heads, P = R G (row, head)
 * pairs and E score vectors (the rows' mean queries in shared mode, else
 * the pairs). Its candidate blocks go in chunks of DAGPU_BWD_S1_COLS. */
#define DAGPU_BWD_S1_COLS DAGPU_SCORE_COLS
#define DAGPU_BWD_S1_THREADS 256

/* Its dynamic shared memory in 4-byte words from the start, doubles first:
 * two partial sums per thread and pair (or vector) it takes; per pair the
 * flat prior's mean, per vector the entmax backward's; per column of a
 * chunk a 64-bit mask of the rows that touch it (R <= 64); the vectors (rows
 * of 64 DC + 4 words, DC = ceil(D / 64), zero padded), a column chunk of
 * block keys (the same rows) and the vectors' scores over all M blocks
 * (rows of M + 1); in group-mean mode with the flat prior the group's log2
 * weight per (row, block); per (pair, column) a transformed prior gradient
 * and then dz (rows of COLS + 1, at least 64 pairs), per (row, column)
 * dL/dp of the group; each vector's row parameters; each row's candidate
 * range; the touch bits of the pair tiles the rows span. */
typedef struct dagpu_bwd_s1_smem {
    int64_t part, fmean, emean, rmask, qs, zs, kb, lw, sp, dpr, rp, range, bits;
    int64_t vec_stride, z_stride, tiles, total;
} dagpu_bwd_s1_smem;

static inline DAGPU_HOST_DEVICE dagpu_bwd_s1_smem dagpu_bwd_s1_layout(const dagpu_params *p,
                                                                      int64_t rows)
{
    const int64_t G = p->group_size, M = p->num_blocks, C = DAGPU_BWD_S1_COLS;
    const int64_t P = rows * G, E = p->shared_group ? rows : P;
    const int64_t PE = P > E ? P : E, P64 = P > 64 ? P : 64;
    dagpu_bwd_s1_smem s;
    s.vec_stride = 64 * ((p->head_dim + 63) / 64) + 4;
    s.z_stride = M + 1;
    /* Pair tiles a run of P pairs can span, wherever it starts. */
    s.tiles = (P + DAGPU_TILE_ROWS - 2) / DAGPU_TILE_ROWS + 1;
    int64_t at = 0;
    s.part = at, at += 2 * 2 * (4 * PE > 256 ? 4 * PE : 256);
    s.fmean = at, at += 2 * P;
    s.emean = at, at += 2 * E;
    s.rmask = at, at += 2 * C;
    at = (at + 3) / 4 * 4; /* read as float4 */
    s.qs = at, at += E * s.vec_stride;
    s.kb = at, at += C * s.vec_stride;
    s.zs = at, at += E * s.z_stride;
    s.lw = at, at += p->group_mean && p->prior_flat ? rows * s.z_stride : 0;
    s.sp = at, at += P64 * (C + 1);
    s.dpr = at, at += rows * (C + 1);
    s.rp = at, at += E * (int64_t)(sizeof(dagpu_row_param) / sizeof(float));
    s.range = at, at += 2 * rows;
    s.bits = at, at += s.tiles * ((M + 31) / 32);
    s.total = at;
    return s;
}

static inline size_t dagpu_bwd_s1_smem_bytes(const dagpu_params *p, int64_t rows)
{
    return (size_t)dagpu_bwd_s1_layout(p, rows).total * 4;
}

/* Error a kernel found in device data (seq_lens, block tables), reported by
 * the next synchronize: code is a dashattn_status, 0 if none. */
typedef struct dagpu_device_error {
    int code, batch, value, what;
} dagpu_device_error;

enum { DAGPU_BAD_SEQ_LEN = 1, DAGPU_BAD_PAGE = 2, DAGPU_NO_ROOM = 3 };

/* Query rows of one stage-1 thread block with `slots` query vectors: all of
 * them in per-head and shared mode; in group-mean mode the largest power of
 * two R with G * R <= slots (at least 1), the G heads of R rows, so a
 * block's rows never straddle a stage-2 tile. */
static inline int dagpu_stage1_rows(const dagpu_params *p, int slots)
{
    int rows = slots;
    if (p->group_mean)
        while (rows > 1 && (int64_t)rows * p->group_size > slots)
            rows /= 2;
    return rows;
}

/* Query vectors (heads x rows) one generic stage-1 thread block with
 * `slots` scores. */
static inline int64_t dagpu_stage1_vectors(const dagpu_params *p, int slots)
{
    const int64_t rows = dagpu_stage1_rows(p, slots);
    return p->group_mean ? rows * p->group_size : rows;
}

/* Dynamic shared memory of the portable stage 1 with `slots` (plans above
 * the device's limit at one slot are refused): its vectors, a chunk of
 * block keys, the vectors' scores, in group-mean mode their row parameters,
 * and the mask words of the tiles its rows touch. */
static inline size_t dagpu_stage1_smem(const dagpu_params *p, int slots)
{
    const size_t vectors = (size_t)dagpu_stage1_vectors(p, slots);
    return (vectors * (size_t)(DAGPU_SCORE_STRIDE(p->head_dim) + p->num_blocks) +
            (size_t)DAGPU_SCORE_COLS * (size_t)DAGPU_SCORE_STRIDE(p->head_dim)) *
               sizeof(float) +
           (p->group_mean ? vectors * sizeof(dagpu_row_param) : 0) +
           (size_t)dagpu_stage1_mask_tiles(p, dagpu_stage1_rows(p, slots)) *
               (size_t)((p->num_blocks + 31) / 32) * sizeof(uint32_t);
}

/* Static shared memory of a thread block's threshold search
 * (gpu_group.cuh's scratch; its static_assert keeps the two equal). */
#define DAGPU_GROUP_SCRATCH_BYTES (2 * 9 * 32 * 8)
/* Dynamic shared memory of the decode threshold kernel: one row's scores
 * (DAGPU_GROUP_SCRATCH_BYTES more are static). */
static inline size_t dagpu_decode_threshold_smem(const dagpu_params *p)
{
    return (size_t)p->num_blocks * sizeof(float);
}

/* Dynamic shared memory of the portable decode split with tiles of `tile`
 * tokens: the G queries and outputs, a key tile (rows padded by one), a
 * value tile, the G heads' weights, and (m, l, correction) per head. */
static inline size_t dagpu_decode_split_smem(const dagpu_params *p, int tile)
{
    const size_t D = (size_t)p->head_dim, G = (size_t)p->group_size, T = (size_t)tile;
    return (2 * G * D + T * (D + 1) + T * D + G * T + 3 * G) * sizeof(float);
}

/* The vendor runtime's error code (cudaError_t, hipError_t), 0 for success. */
typedef int dagpu_err;

/* ---- runtime calls (gpu_runtime.cu) ---- */

/* What the host code needs to know of a device. */
typedef struct dagpu_device_info {
    char name[256];
    char arch[64];         /* "sm_90", "gfx90a", ... */
    int sm_count;          /* multiprocessors / compute units */
    int warp_size;         /* physical: 32 or 64 */
    size_t smem_per_block; /* the most dynamic shared memory one block may use */
    size_t total_memory;
    /* A kernel may be launched while the one before it on the stream drains
     * and wait for it on the device (programmatic dependent launch: CUDA on
     * sm_90 and later). */
    int dependent_launch;
} dagpu_device_info;

const char *dagpu_rt_vendor(void); /* "CUDA" or "HIP" */
const char *dagpu_rt_error_string(dagpu_err err);
const char *dagpu_rt_error_name(dagpu_err err);
int dagpu_rt_is_out_of_memory(dagpu_err err);
dagpu_err dagpu_rt_device_count(int *count);
dagpu_err dagpu_rt_device_info(int device, dagpu_device_info *info);
dagpu_err dagpu_rt_versions(int *driver, int *runtime);
dagpu_err dagpu_rt_set_device(int device);
dagpu_err dagpu_rt_malloc(void **ptr, size_t bytes);
void dagpu_rt_free(void *ptr);
/* Clears a non-sticky error (a failed allocation) so later calls see none. */
void dagpu_rt_clear_error(void);
dagpu_err dagpu_rt_to_device(void *dst, const void *src, size_t bytes);
dagpu_err dagpu_rt_to_host(void *dst, const void *src, size_t bytes);
dagpu_err dagpu_rt_to_host_async(void *dst, const void *src, size_t bytes, void *stream);
dagpu_err dagpu_rt_zero(void *ptr, size_t bytes);
dagpu_err dagpu_rt_zero_async(void *ptr, size_t bytes, void *stream);
dagpu_err dagpu_rt_stream_sync(void *stream);

/* ---- portable kernels (any vendor, any warp size) ---- */

/* summary: the learned vectors h (f32 [1, Hkv, 1, D]), NULL for mean pooling;
 * split16 also writes the 16-bit split keys the tensor-core stage 1 reads. */
dagpu_err dagpu_launch_block_keys(const dagpu_params *p, const dashattn_tensor *k,
                                  const dashattn_tensor *summary, const dagpu_forward_ws *ws,
                                  int split16, void *stream);
dagpu_err dagpu_launch_stage1(const dagpu_params *p, const dashattn_tensor *q,
                              const dagpu_forward_ws *ws, const dashattn_selection *sel, int slots,
                              void *stream);
dagpu_err dagpu_launch_stage2(const dagpu_params *p, const dashattn_tensor *q,
                              const dashattn_tensor *k, const dashattn_tensor *v,
                              const dashattn_tensor *out, float *lse, const dagpu_forward_ws *ws,
                              void *stream);
/* Decode stage 1: the block scores (the first kernel of a decode call), then
 * thresholds, weights and the union of blocks to read. */
dagpu_err dagpu_launch_decode_scores(const dagpu_params *p, const dashattn_tensor *q,
                                     const dashattn_kv_cache *cache, const dagpu_decode_ws *ws,
                                     void *stream);
dagpu_err dagpu_launch_decode_select(const dagpu_params *p, const dashattn_kv_cache *cache,
                                     const dagpu_decode_ws *ws, dagpu_device_error *err,
                                     void *stream);
/* Decode split-KV attention with tiles of `tile` tokens (16, 32 or 64:
 * dagpu_decode_split_smem tells the shared memory). */
dagpu_err dagpu_launch_decode_split(const dagpu_params *p, const dashattn_tensor *q,
                                    const dashattn_kv_cache *cache, const dagpu_decode_ws *ws,
                                    int tile, void *stream);
dagpu_err dagpu_launch_decode_merge(const dagpu_params *p, const dashattn_tensor *out, float *lse,
                                    const dagpu_decode_ws *ws, void *stream);
/* Backward: the rows kernel (stage 2's part: ws.dq_s2, Dl and the prior
 * gradients in ws.dz), the stage-1 kernel over `rows` rows per thread block
 * (dz, the caller's dq, and the touch masks, which must be zeroed before),
 * the kv kernel (dk, dv, r_t) and, where dh is asked for, its sum (zeros
 * without a stage-1 gradient or learned summaries). */
dagpu_err dagpu_launch_backward_rows(const dagpu_params *p, const dashattn_tensor *q,
                                     const dashattn_tensor *k, const dashattn_tensor *v,
                                     const dashattn_tensor *out, const dashattn_tensor *dout,
                                     const float *lse, const dagpu_backward_ws *ws, int64_t chunk,
                                     void *stream);
dagpu_err dagpu_launch_backward_stage1(const dagpu_params *p, const dashattn_tensor *q,
                                       const dashattn_tensor *dq, const dagpu_backward_ws *ws,
                                       int64_t rows, void *stream);
dagpu_err dagpu_launch_backward_kv(const dagpu_params *p, const dashattn_tensor *q,
                                   const dashattn_tensor *k, const dashattn_tensor *v,
                                   const dashattn_tensor *dout, const float *lse,
                                   const dashattn_tensor *summary, const dashattn_tensor *dk,
                                   const dashattn_tensor *dv, const dagpu_backward_ws *ws,
                                   void *stream);
dagpu_err dagpu_launch_backward_dh(const dagpu_params *p, const dashattn_tensor *k,
                                   const dashattn_tensor *summary, const dashattn_tensor *dh,
                                   const dagpu_backward_ws *ws, void *stream);
dagpu_err dagpu_launch_append(const dagpu_params *p, const dashattn_kv_cache *cache,
                              const dashattn_tensor *k_new, const dashattn_tensor *v_new,
                              const dashattn_tensor *summary, dagpu_device_error *err,
                              void *stream);

#ifdef __cplusplus
}
#endif

#endif
