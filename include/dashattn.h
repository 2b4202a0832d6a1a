/* SPDX-License-Identifier: MIT */
/*
 * dashattn: DashAttention (two-stage hierarchical sparse attention with
 * alpha-entmax block selection) for CPUs and GPUs.
 *
 * Conventions of this API
 * - Every function that can fail returns a dashattn_status; DASHATTN_OK is 0.
 *   On failure dashattn_last_error() returns a message for the calling thread
 *   that names the offending argument. No function aborts, exits or prints.
 * - Tensors are caller-owned memory, described by dashattn_tensor (data,
 *   dtype, logical shape [B, H, N, D] and strides in elements). BHSD and BSHD
 *   layouts are both expressed through strides; nothing is copied.
 *   For the CPU backend data are host pointers; for GPU backends they are
 *   device pointers of that backend's API.
 * - A context (dashattn_context) selects a backend once. A plan
 *   (dashattn_plan) is made once per problem shape and then run many times.
 *   Contexts and plans are immutable after creation and may be shared by
 *   threads; concurrent calls must use distinct workspaces (or pass NULL and
 *   let the call allocate its own).
 * - Every argument is checked before anything is written: a call that fails
 *   validation leaves its outputs untouched. A call that fails later (a device
 *   error after launch) fills its outputs with NaN where it can, so a failed
 *   result never looks valid. NaN in the inputs propagates to the outputs of
 *   the rows it reaches.
 */
#ifndef DASHATTN_H
#define DASHATTN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(DASHATTN_BUILDING) && defined(__GNUC__)
#define DASHATTN_API __attribute__((visibility("default")))
#else
#define DASHATTN_API
#endif

/** Version of the library this header belongs to. */
#define DASHATTN_VERSION_MAJOR 0
#define DASHATTN_VERSION_MINOR 2
#define DASHATTN_VERSION_PATCH 0

/** Version string of the library actually linked, e.g. "0.1.0". */
DASHATTN_API const char *dashattn_version(void);

/* ------------------------------------------------------------------------ */
/* Status codes and errors                                                  */
/* ------------------------------------------------------------------------ */

typedef enum dashattn_status {
    DASHATTN_OK = 0,
    /** An argument is NULL, out of range or inconsistent with another. */
    DASHATTN_ERR_INVALID_ARGUMENT = 1,
    /** Tensor shapes do not agree with the plan or with each other. */
    DASHATTN_ERR_SHAPE_MISMATCH = 2,
    /** The backend does not implement this operation, dtype or layout. */
    DASHATTN_ERR_UNSUPPORTED = 3,
    /** Host or device memory could not be allocated. */
    DASHATTN_ERR_OUT_OF_MEMORY = 4,
    /** The requested backend could not be loaded or found no device. */
    DASHATTN_ERR_BACKEND_UNAVAILABLE = 5,
    /** A backend plugin was built for another plugin ABI version. */
    DASHATTN_ERR_ABI_MISMATCH = 6,
    /** The device runtime reported an error (message carries its text). */
    DASHATTN_ERR_DEVICE = 7,
    /** The workspace passed is smaller than the plan requires. */
    DASHATTN_ERR_WORKSPACE_TOO_SMALL = 8,
    /** A KV cache has no room (capacity or page) for appended tokens. */
    DASHATTN_ERR_CACHE_FULL = 9,
    /** A bug in dashattn; please report it with the message. */
    DASHATTN_ERR_INTERNAL = 10
} dashattn_status;

/** Static English description of a status ("invalid argument", ...). */
DASHATTN_API const char *dashattn_status_string(dashattn_status status);

/**
 * Message describing the last failure on the calling thread, or "" if the
 * last call on this thread succeeded. The pointer stays valid until the next
 * dashattn call on the same thread.
 */
DASHATTN_API const char *dashattn_last_error(void);

/* ------------------------------------------------------------------------ */
/* Tensors                                                                  */
/* ------------------------------------------------------------------------ */

typedef enum dashattn_dtype {
    DASHATTN_F32 = 0,
    DASHATTN_F16 = 1,
    DASHATTN_BF16 = 2
} dashattn_dtype;

/** Size in bytes of one element of dtype, 0 for an unknown dtype. */
DASHATTN_API size_t dashattn_dtype_size(dashattn_dtype dtype);

/** Name of a dtype: "f32", "f16" or "bf16" (NULL if unknown). */
DASHATTN_API const char *dashattn_dtype_name(dashattn_dtype dtype);

/**
 * Convert count elements between dtypes in host memory (round to nearest
 * even; NaN and infinity kept). dst and src must not overlap unless equal
 * with equal dtypes. For preparing f16/bf16 inputs and reading results.
 */
DASHATTN_API dashattn_status dashattn_convert(void *dst, dashattn_dtype dst_dtype, const void *src,
                                              dashattn_dtype src_dtype, size_t count);

/**
 * A strided 4-D view of caller-owned memory. shape is the logical
 * [batch, heads, sequence, head_dim]; strides are in elements and may be any
 * non-negative values that keep distinct elements distinct for outputs.
 */
typedef struct dashattn_tensor {
    void *data;
    dashattn_dtype dtype;
    int64_t shape[4];
    int64_t strides[4];
} dashattn_tensor;

/** View of contiguous [B, H, N, D] memory (heads-major, "BHSD"). */
DASHATTN_API dashattn_tensor dashattn_tensor_bhsd(void *data, dashattn_dtype dtype, int64_t batch,
                                                  int64_t heads, int64_t seq, int64_t head_dim);

/** View of contiguous [B, N, H, D] memory ("BSHD"), addressed as [B, H, N, D]. */
DASHATTN_API dashattn_tensor dashattn_tensor_bshd(void *data, dashattn_dtype dtype, int64_t batch,
                                                  int64_t heads, int64_t seq, int64_t head_dim);

/* ------------------------------------------------------------------------ */
/* Contexts and backends                                                    */
/* ------------------------------------------------------------------------ */

typedef struct dashattn_context dashattn_context;

/** Most worker threads a context runs (dashattn_context_options.num_threads). */
#define DASHATTN_MAX_THREADS 1024

typedef struct dashattn_context_options {
    /**
     * Backend name: "auto" (best usable GPU plugin, else CPU), "cpu", "cuda",
     * "hip", "opencl", or the name of any installed plugin. NULL means
     * "auto". The environment variable DASHATTN_BACKEND chooses the backend
     * only where the program asks for "auto" (or NULL): an explicit name
     * here always wins.
     */
    const char *backend;
    /** Device index for GPU backends (default 0). */
    int device;
    /**
     * Worker threads for the CPU backend, 0 to DASHATTN_MAX_THREADS; larger
     * values are refused (DASHATTN_ERR_INVALID_ARGUMENT). 0 takes OpenMP's
     * default (OMP_NUM_THREADS, else every available core), clamped to
     * DASHATTN_MAX_THREADS. A call that cannot start its threads (no address
     * space for their stacks) fails with DASHATTN_ERR_OUT_OF_MEMORY; the
     * process is never ended.
     */
    int num_threads;
} dashattn_context_options;

/** Fill options with defaults (backend "auto", device 0, all cores). */
DASHATTN_API void dashattn_context_options_init(dashattn_context_options *options);

/**
 * Create a context on the selected backend. options may be NULL for
 * defaults. On failure *context is set to NULL and the message says which
 * plugins were tried and why each was rejected.
 */
DASHATTN_API dashattn_status dashattn_context_create(const dashattn_context_options *options,
                                                     dashattn_context **context);

/** Release a context (NULL is accepted). Plans made from it must be gone. */
DASHATTN_API void dashattn_context_destroy(dashattn_context *context);

/** Name of the backend a context runs on ("cpu", "cuda", ...). */
DASHATTN_API const char *dashattn_context_backend(const dashattn_context *context);

/** Human-readable description of the context's device. */
DASHATTN_API const char *dashattn_context_device(const dashattn_context *context);

/** Number of threads the CPU backend uses (1 for GPU backends). */
DASHATTN_API int dashattn_context_num_threads(const dashattn_context *context);

/**
 * Report what backends exist: for every known backend name, whether it
 * loaded, where from, its devices, or why it was skipped. Writes a
 * NUL-terminated multi-line text into buffer (truncated to size) and returns
 * the length the full text needs, excluding the NUL.
 */
DASHATTN_API size_t dashattn_backends_report(char *buffer, size_t size);

/* ------------------------------------------------------------------------ */
/* Memory of the context's backend                                          */
/* ------------------------------------------------------------------------ */

/**
 * Allocate bytes in the context's memory space (host memory for the CPU
 * backend, device memory for GPU backends), for tensors and workspaces.
 * Free with dashattn_memory_free().
 *
 * What a "pointer" is depends on the backend, and every array handed to the
 * compute functions (tensor data, lse, selection arrays, cache seq_lens and
 * block_table, workspace) must live in that space:
 * - cpu: host memory;
 * - cuda: device memory of the context's device (cudaMalloc or this
 *   function); stream arguments are cudaStream_t;
 * - opencl: a cl_mem buffer cast to void *, used from offset 0 (no pointer
 *   arithmetic: give every array its own buffer); strides apply inside it;
 *   stream arguments are cl_command_queue objects of the plugin's context.
 * dashattn_forward_stats is host memory on every backend.
 */
DASHATTN_API dashattn_status dashattn_memory_alloc(dashattn_context *context, size_t bytes,
                                                   void **ptr);

/** Free memory from dashattn_memory_alloc() (NULL is accepted). */
DASHATTN_API void dashattn_memory_free(dashattn_context *context, void *ptr);

/**
 * Copy bytes from host memory src to context memory dst; the copy is
 * complete when the call returns.
 */
DASHATTN_API dashattn_status dashattn_memory_upload(dashattn_context *context, void *dst,
                                                    const void *src, size_t bytes);

/**
 * Copy bytes from context memory src to host memory dst, after all work
 * queued on the backend's default stream; complete when the call returns.
 */
DASHATTN_API dashattn_status dashattn_memory_download(dashattn_context *context, void *dst,
                                                      const void *src, size_t bytes);

/**
 * Wait until all work queued by this context on stream (NULL: the default
 * stream) has finished. The CPU backend works synchronously; this returns at
 * once there.
 *
 * GPU backends that never wait inside a call (cuda) check device-resident
 * arguments (seq_lens, block_table entries, room in the cache) on the
 * device: a bad one makes that call write NaN to all its outputs (decode) or
 * change nothing (append), and the next dashattn_synchronize on the context
 * returns its status (DASHATTN_ERR_INVALID_ARGUMENT or
 * DASHATTN_ERR_CACHE_FULL) with a message naming the sequence. Until then,
 * later appends on the context change nothing either.
 */
DASHATTN_API dashattn_status dashattn_synchronize(dashattn_context *context, void *stream);

/* ------------------------------------------------------------------------ */
/* Problems and plans                                                       */
/* ------------------------------------------------------------------------ */

typedef enum dashattn_selection_mode {
    /** Stage 1 keeps blocks by alpha-entmax probabilities (DashAttention). */
    DASHATTN_SELECT_ENTMAX = 0,
    /** Stage 1 keeps the topk best-scoring candidate blocks, weight 1. */
    DASHATTN_SELECT_TOPK = 1
} dashattn_selection_mode;

/** How the G query heads of a KV head share stage 1 (GQA). */
typedef enum dashattn_group_mode {
    /** One entmax per query head; each head keeps its own blocks. */
    DASHATTN_GROUP_PER_HEAD = 0,
    /** One entmax per KV head, on the mean of its query heads' scores. */
    DASHATTN_GROUP_SHARED = 1,
    /**
     * The default, as the released models were trained: one entmax per
     * query head, then the group's mean probability is the weight of a block
     * for every head of the group, which all read the same blocks.
     */
    DASHATTN_GROUP_MEAN = 2
} dashattn_group_mode;

/** The stage-2 prior of a candidate block with stage-1 weight w. */
typedef enum dashattn_prior_mode {
    /** The default: logits get log w. */
    DASHATTN_PRIOR_LOG = 0,
    /**
     * Flattened: logits get (log w - mean of log w over the row's kept
     * candidates) / prior_sigma (the release's estimate_diagonal = True);
     * candidates with w <= 1e-20 are dropped.
     */
    DASHATTN_PRIOR_FLAT = 1
} dashattn_prior_mode;

/** How stage 1 finds the entmax threshold. */
typedef enum dashattn_threshold_schedule {
    /** The default: exact thresholds (to the dtype's tolerance). */
    DASHATTN_SCHEDULE_EXACT = 0,
    /**
     * The released kernels' fixed schedule: halley_steps safeguarded Halley
     * steps from the bracket [max - 1, max] in (alpha - 1) z units, the
     * probabilities not renormalised. alpha 1.5 and entmax selection only.
     */
    DASHATTN_SCHEDULE_HALLEY = 1
} dashattn_threshold_schedule;

/**
 * What to compute. Fill with dashattn_problem_init(), then override fields.
 * SPEC.md in the source tree defines every field precisely; the defaults are
 * the function of the authors' released implementation.
 *
 * ABI: fields are only ever added, and any change to this struct's layout
 * bumps the library's soname (libdashattn.so.1 has this layout), so a
 * program always runs with the struct it was compiled against.
 */
typedef struct dashattn_problem {
    int64_t batch;                     /**< B */
    int64_t heads_q;                   /**< Hq, a multiple of heads_kv */
    int64_t heads_kv;                  /**< Hkv */
    int64_t len_q;                     /**< Nq; for decode plans 1 */
    int64_t len_k;                     /**< Nk; for decode plans the cache capacity */
    int64_t head_dim;                  /**< D, 1..256 */
    dashattn_dtype dtype;              /**< dtype of q, k, v, out and gradients */
    int causal;                        /**< nonzero: bottom-right aligned causal mask */
    int32_t block_size;                /**< S, tokens per key block (default 64) */
    int32_t n_sink;                    /**< leading blocks always kept (default 0) */
    int32_t n_local;                   /**< trailing blocks up to the own block kept (default 1) */
    double alpha;                      /**< entmax alpha in [1, 2] (default 1.5) */
    dashattn_selection_mode selection; /**< default DASHATTN_SELECT_ENTMAX */
    int32_t topk;                      /**< candidate blocks kept in TOPK mode */
    dashattn_group_mode group_mode;    /**< default DASHATTN_GROUP_MEAN */
    double scale;                      /**< stage-2 logit scale; 0 means 1/sqrt(D) */
    /**
     * Stage-1 score scale; 0 means the same as scale. The release's
     * scaling_factor s (queries multiplied by s for stage 1 only) is
     * stage1_scale = s / sqrt(D).
     */
    double stage1_scale;
    dashattn_prior_mode prior; /**< default DASHATTN_PRIOR_LOG */
    double prior_sigma;        /**< sigma of the flat prior, > 0 (default 1e6) */
    dashattn_threshold_schedule threshold_schedule; /**< default DASHATTN_SCHEDULE_EXACT */
    int32_t halley_steps; /**< steps of the Halley schedule, 1..64 (default 3) */
} dashattn_problem;

/** Fill problem with the given shape and every default of SPEC.md. */
DASHATTN_API void dashattn_problem_init(dashattn_problem *problem, int64_t batch, int64_t heads_q,
                                        int64_t heads_kv, int64_t len_q, int64_t len_k,
                                        int64_t head_dim);

typedef struct dashattn_plan dashattn_plan;

/**
 * Validate a problem and plan it on a context: block layout, forced and
 * candidate blocks, entmax threshold schedule, workspace size. A problem
 * whose tensors ([B, H, N, D] as f32) or whose workspace for any operation
 * would exceed the address space (PTRDIFF_MAX bytes) is refused with
 * DASHATTN_ERR_INVALID_ARGUMENT; sizes are never computed modulo 2^64.
 */
DASHATTN_API dashattn_status dashattn_plan_create(dashattn_context *context,
                                                  const dashattn_problem *problem,
                                                  dashattn_plan **plan);

/** Release a plan (NULL is accepted). */
DASHATTN_API void dashattn_plan_destroy(dashattn_plan *plan);

/** The problem as planned, with defaults (scales) resolved. */
DASHATTN_API const dashattn_problem *dashattn_plan_problem(const dashattn_plan *plan);

/** Number of key blocks M = ceil(len_k / block_size). */
DASHATTN_API int64_t dashattn_plan_num_blocks(const dashattn_plan *plan);

/** The operations a plan serves, for sizing workspace per operation. */
typedef enum dashattn_operation {
    DASHATTN_OP_FORWARD = 0,
    DASHATTN_OP_BACKWARD = 1,
    DASHATTN_OP_DECODE = 2
} dashattn_operation;

/**
 * Bytes of workspace any call with this plan needs (the largest over
 * forward, backward and decode). The workspace is memory of the context's
 * backend (device memory for GPU backends). Calls accept workspace == NULL,
 * in which case they allocate what they need for their own duration and free
 * it before returning.
 */
DASHATTN_API size_t dashattn_plan_workspace_size(const dashattn_plan *plan);

/**
 * Bytes of workspace one operation needs; smaller than
 * dashattn_plan_workspace_size() for users that never run, say, backward.
 * Returns 0 for an unknown operation, and for DASHATTN_OP_DECODE on a plan
 * that cannot decode (len_q other than 1, or not causal).
 */
DASHATTN_API size_t dashattn_plan_operation_workspace_size(const dashattn_plan *plan,
                                                           dashattn_operation operation);

/** Name of the entmax threshold method the plan chose ("sort-1.5", "halley", ...). */
DASHATTN_API const char *dashattn_plan_threshold_method(const dashattn_plan *plan);

/** Threshold search iterations the plan fixed (0 for sort-based methods). */
DASHATTN_API int dashattn_plan_threshold_iterations(const dashattn_plan *plan);

/* ------------------------------------------------------------------------ */
/* Forward and backward                                                     */
/* ------------------------------------------------------------------------ */

/**
 * Optional output of the blocks each query row attends to. Arrays are
 * contiguous [B, Hq, Nq, max_blocks] (block_index, block_weight) and
 * [B, Hq, Nq] (block_count), in the context's memory space. Row entries are
 * sorted by block index; weight is the prior the block gets in stage 2: 1
 * for forced blocks, for candidates the stage-1 weight (the entmax
 * probability, the group's mean of them, or 1 in topk mode) or, with the
 * flat prior, its flattened value. Unused entries
 * hold index -1 and weight 0. max_blocks must be at least
 * dashattn_plan_num_blocks(). Any of the pointers may be NULL.
 */
typedef struct dashattn_selection {
    int32_t *block_index;
    float *block_weight;
    int32_t *block_count;
    int64_t max_blocks;
} dashattn_selection;

/** Counts from a forward call (host memory). */
typedef struct dashattn_forward_stats {
    /** Causally visible (query, key) pairs over all batches and heads. */
    int64_t visible_pairs;
    /** Visible pairs whose block weight is nonzero (the pairs read). */
    int64_t attended_pairs;
    /** 1 - attended / visible: SPEC.md's sparsity of the call. */
    double sparsity;
} dashattn_forward_stats;

/**
 * DashAttention forward.
 * q [B, Hq, Nq, D], k and v [B, Hkv, Nk, D], out [B, Hq, Nq, D], all of the
 * plan's dtype. block_summary (optional, NULL for mean pooling) is the
 * learned vector h of each KV head that weights a block's keys into its
 * summary (the release's head_cls): an f32 tensor of shape [1, Hkv, 1, D];
 * h = 0 gives mean pooling. lse (optional, NULL to skip) is float [B, Hq, Nq] contiguous,
 * natural-log logsumexp of each row's logits. selection and stats are
 * optional. stream is a native stream or queue (cudaStream_t, hipStream_t,
 * cl_command_queue) for GPU backends, ignored by the CPU backend; NULL is the
 * backend's default. On GPU backends the call only queues the work, unless
 * stats is given: the counts then come back to the host, which waits for
 * the call to finish.
 */
DASHATTN_API dashattn_status dashattn_forward(
    dashattn_context *context, const dashattn_plan *plan, const dashattn_tensor *q,
    const dashattn_tensor *k, const dashattn_tensor *v, const dashattn_tensor *block_summary,
    const dashattn_tensor *out, float *lse, const dashattn_selection *selection,
    dashattn_forward_stats *stats, void *workspace, size_t workspace_size, void *stream);

/**
 * Gradients of a DashAttention forward. out and lse must be the forward's
 * results for the same q, k, v and block_summary; dout has out's shape. dq,
 * dk, dv have the shapes of q, k, v and are overwritten (not accumulated
 * into); dk includes the gradient through the block summaries. dh
 * (optional) receives the gradient of block_summary, f32 [1, Hkv, 1, D],
 * overwritten; it may be given only with a block_summary.
 */
DASHATTN_API dashattn_status dashattn_backward(
    dashattn_context *context, const dashattn_plan *plan, const dashattn_tensor *q,
    const dashattn_tensor *k, const dashattn_tensor *v, const dashattn_tensor *block_summary,
    const dashattn_tensor *out, const float *lse, const dashattn_tensor *dout,
    const dashattn_tensor *dq, const dashattn_tensor *dk, const dashattn_tensor *dv,
    const dashattn_tensor *dh, void *workspace, size_t workspace_size, void *stream);

/* ------------------------------------------------------------------------ */
/* KV caches and decode                                                     */
/* ------------------------------------------------------------------------ */

typedef enum dashattn_cache_layout {
    /** k, v are [B, Hkv, capacity, D]; block_keys [B, Hkv, capacity/S, D]. */
    DASHATTN_CACHE_CONTIGUOUS = 0,
    /**
     * k, v are pages [P, Hkv, S, D] (page size = block size); block_keys are
     * [P, Hkv, 1, D], one per page; block_table[b * table_stride + j] is the
     * page holding block j of sequence b.
     */
    DASHATTN_CACHE_PAGED = 1
} dashattn_cache_layout;

/**
 * A KV cache in caller-owned memory. seq_lens [B] holds each sequence's
 * current token count and is advanced by dashattn_cache_append(). The
 * library keeps block_keys equal to the summary of every complete block
 * (the mean key, or the learned summary given to dashattn_cache_append).
 * block_keys must have the plan's dtype or F32. F32 keeps the summaries
 * exact; 16-bit block keys halve what decode reads to score the blocks
 * (on an H200 at batch 16, 3% of a decode over 128K tokens) and move its
 * output by about 1e-3 in relative norm, less than bf16 output rounding.
 * Arrays live in the context's memory space.
 */
typedef struct dashattn_kv_cache {
    dashattn_cache_layout layout;
    dashattn_tensor k;
    dashattn_tensor v;
    dashattn_tensor block_keys;
    int32_t *seq_lens;
    const int32_t *block_table;
    int64_t table_stride;
} dashattn_kv_cache;

/**
 * Append k_new, v_new [B, Hkv, T, D] to every sequence of the cache: tokens
 * go to positions seq_lens[b] .. seq_lens[b] + T - 1, the summary of each
 * block that becomes complete is computed once (with block_summary, optional
 * f32 [1, Hkv, 1, D] as in dashattn_forward, NULL for mean pooling; pass the
 * same one on every append), and seq_lens advance by T. Fails with
 * DASHATTN_ERR_CACHE_FULL, changing nothing, if any sequence lacks room. The
 * plan is a decode plan (len_q 1, len_k = capacity).
 */
DASHATTN_API dashattn_status dashattn_cache_append(
    dashattn_context *context, const dashattn_plan *plan, const dashattn_kv_cache *cache,
    const dashattn_tensor *k_new, const dashattn_tensor *v_new,
    const dashattn_tensor *block_summary, void *stream);

/**
 * Decode one query token per sequence against a cache: q, out [B, Hq, 1, D];
 * sequence b attends over its seq_lens[b] cached tokens, the query sitting at
 * the last position (append its key and value first). Only forced blocks,
 * selected blocks and cached block summaries are read. lse is optional [B, Hq].
 */
DASHATTN_API dashattn_status dashattn_decode(dashattn_context *context, const dashattn_plan *plan,
                                             const dashattn_tensor *q,
                                             const dashattn_kv_cache *cache,
                                             const dashattn_tensor *out, float *lse,
                                             void *workspace, size_t workspace_size, void *stream);

#ifdef __cplusplus
}
#endif

#endif /* DASHATTN_H */
