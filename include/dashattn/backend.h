/* SPDX-License-Identifier: MIT */
/*
 * dashattn backend plugin ABI.
 *
 * A backend is a shared object named dashattn-<name>.so that exports one
 * function, dashattn_backend_entry(), returning a static table of function
 * pointers. The core loads it with dlopen(RTLD_NOW | RTLD_LOCAL), reads
 * abi_version first and refuses the plugin if it differs from
 * DASHATTN_BACKEND_ABI_VERSION. The core plans: it hands backends a fully
 * resolved dashattn_plan_desc. A backend may add its own choices for a plan
 * (kernel variants, split counts, limits) once, through the optional
 * plan_prepare entry, and refuse there the problems it cannot run.
 *
 * Stability: this header is installed and versioned. Within one ABI version
 * structures only grow at their end (struct_size tells the core how much a
 * plugin knows: entries past an older plugin's struct_size are treated as
 * absent); any other change bumps DASHATTN_BACKEND_ABI_VERSION.
 */
#ifndef DASHATTN_BACKEND_H
#define DASHATTN_BACKEND_H

#include <dashattn.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DASHATTN_BACKEND_ABI_VERSION 2u

/** Name of the symbol every plugin exports. */
#define DASHATTN_BACKEND_ENTRY_SYMBOL "dashattn_backend_entry"

/** How stage 1 finds each row's entmax threshold tau. */
typedef enum dashattn_threshold_method {
    /** alpha = 1: softmax over the candidates, every candidate kept. */
    DASHATTN_THRESHOLD_SOFTMAX = 0,
    /** alpha = 1.5: exact threshold from the sorted scores. */
    DASHATTN_THRESHOLD_SORT_15 = 1,
    /** alpha = 2 (sparsemax): exact threshold from the sorted scores. */
    DASHATTN_THRESHOLD_SORT_2 = 2,
    /**
     * Other alpha: bracketed search on [max - 1, max - n^(1 - alpha)] in
     * (alpha - 1) z units with safeguarded Newton steps, exactly
     * threshold_iterations of them, then renormalisation.
     */
    DASHATTN_THRESHOLD_BRACKETED = 3,
    /** selection = TOPK: the topk best candidates get weight 1. */
    DASHATTN_THRESHOLD_TOPK = 4,
    /**
     * The release's schedule (alpha 1.5): x = z / 2, bracket
     * [max x - 1, max x], t at its middle, then exactly threshold_iterations
     * steps: f = sum (x - t)_+^2 - 1, f' = -2 sum (x - t)_+,
     * f'' = 2 #{x > t}; the bracket end on f's side moves to t (f > 0: lower,
     * f < 0: upper); t becomes t - 2 f f' / (2 f'^2 - f f'') if that lies in
     * the bracket widened by 1e-5, else the bracket's middle. Then
     * p = (x - t)_+^2, not renormalised.
     */
    DASHATTN_THRESHOLD_HALLEY = 5
} dashattn_threshold_method;

/** A plan as the core resolved it; read-only for backends. */
typedef struct dashattn_plan_desc {
    /** The problem with defaults resolved (scale and stage1_scale > 0). */
    dashattn_problem problem;
    /** M = ceil(len_k / block_size). */
    int64_t num_blocks;
    /** G = heads_q / heads_kv. */
    int64_t group_size;
    /** len_k - len_q: query row i sits at position i + query_offset. */
    int64_t query_offset;
    dashattn_threshold_method threshold_method;
    /** Steps for DASHATTN_THRESHOLD_BRACKETED and _HALLEY, else 0. */
    int32_t threshold_iterations;
    /** Bracket width the search reaches, in (alpha - 1) z units. */
    double threshold_tolerance;
    /**
     * What the backend's plan_prepare returned for this plan (NULL if it has
     * no plan_prepare, or returned NULL). Set before the first
     * workspace_size call on the plan; the same for every call after.
     */
    const void *backend_plan;
} dashattn_plan_desc;

/**
 * The blocks one query row sees, from SPEC.md's layout. Forced blocks are
 * [0, sink_end) and [local_begin, local_end); candidates are
 * [cand_begin, cand_end) (possibly empty); keys [0, visible_end) are visible.
 */
typedef struct dashattn_row_blocks {
    int64_t visible_end;
    int64_t sink_end;
    int64_t local_begin;
    int64_t local_end;
    int64_t cand_begin;
    int64_t cand_end;
} dashattn_row_blocks;

/**
 * Layout for the query at absolute position pos (i + query_offset for
 * prefill, seq_len - 1 for decode) when len_k keys exist. pos >= 0 for
 * causal plans.
 */
static inline dashattn_row_blocks dashattn_row_layout(const dashattn_plan_desc *plan, int64_t pos,
                                                      int64_t len_k)
{
    const dashattn_problem *p = &plan->problem;
    const int64_t s = p->block_size;
    dashattn_row_blocks r;
    if (p->causal) {
        const int64_t own = pos / s;
        r.visible_end = pos + 1;
        r.sink_end = p->n_sink < own + 1 ? p->n_sink : own + 1;
        r.local_begin = own - p->n_local + 1 > 0 ? own - p->n_local + 1 : 0;
        r.local_end = own + 1;
    } else {
        const int64_t blocks = (len_k + s - 1) / s;
        r.visible_end = len_k;
        r.sink_end = p->n_sink < blocks ? p->n_sink : blocks;
        r.local_begin = blocks;
        r.local_end = blocks;
    }
    r.cand_begin = r.sink_end;
    r.cand_end = r.local_begin > r.cand_begin ? r.local_begin : r.cand_begin;
    return r;
}

/** Nonzero if block j is forced (weight 1) for a row. */
static inline int dashattn_block_is_forced(const dashattn_row_blocks *r, int64_t j)
{
    return j < r->sink_end || (j >= r->local_begin && j < r->local_end);
}

/** Callbacks the core offers a plugin. */
typedef struct dashattn_host {
    uint32_t abi_version;
    uint32_t struct_size;
    /** Set the calling thread's last-error message (printf format). */
    void (*set_error)(const char *format, ...)
#ifdef __GNUC__
        __attribute__((format(printf, 1, 2)))
#endif
        ;
    /**
     * Nonzero: this core calls a plugin's plan_prepare and fills
     * dashattn_plan_desc.backend_plan. Absent (past struct_size) in cores
     * older than that hook; a plugin that relies on it refuses such a core
     * in init.
     */
    uint32_t prepares_plans;
} dashattn_host;

/*
 * block_summary, where present, is NULL (mean pooling) or the validated f32
 * [1, Hkv, 1, D] tensor of learned summary vectors h (SPEC.md, "Block layout
 * and block summaries"); dh likewise, and only given with block_summary.
 */
typedef struct dashattn_forward_args {
    const dashattn_tensor *q, *k, *v, *out;
    float *lse;
    const dashattn_selection *selection;
    dashattn_forward_stats *stats;
    void *workspace;
    size_t workspace_size;
    void *stream;
    const dashattn_tensor *block_summary;
} dashattn_forward_args;

typedef struct dashattn_backward_args {
    const dashattn_tensor *q, *k, *v, *out;
    const float *lse;
    const dashattn_tensor *dout, *dq, *dk, *dv;
    void *workspace;
    size_t workspace_size;
    void *stream;
    const dashattn_tensor *block_summary;
    const dashattn_tensor *dh;
} dashattn_backward_args;

typedef struct dashattn_append_args {
    const dashattn_kv_cache *cache;
    const dashattn_tensor *k_new, *v_new;
    void *stream;
    const dashattn_tensor *block_summary;
} dashattn_append_args;

typedef struct dashattn_decode_args {
    const dashattn_tensor *q;
    const dashattn_kv_cache *cache;
    const dashattn_tensor *out;
    float *lse;
    void *workspace;
    size_t workspace_size;
    void *stream;
} dashattn_decode_args;

/**
 * The table a plugin returns. Entries marked optional may be NULL; the core
 * then answers DASHATTN_ERR_UNSUPPORTED. Arguments reaching a backend have
 * been validated against the plan (shapes, dtypes, workspace size).
 */
typedef struct dashattn_backend_iface {
    uint32_t abi_version; /**< DASHATTN_BACKEND_ABI_VERSION; read first */
    uint32_t struct_size; /**< sizeof(dashattn_backend_iface) as built */
    const char *name;     /**< "cuda", "opencl", ... */

    /**
     * How good this backend is here: 0 means unusable (no device, no driver;
     * the reason goes into reason); 1 means usable when named but no better
     * than the built-in CPU backend (an OpenCL CPU device, say), so "auto"
     * passes it over; 2 and above are preferred by "auto", highest first.
     */
    int (*probe)(const dashattn_host *host, char *reason, size_t reason_size);

    /** Optional: multi-line device listing for `dashattn info`. */
    size_t (*describe)(char *buffer, size_t size);

    dashattn_status (*init)(const dashattn_host *host, const dashattn_context_options *options,
                            void **state);
    void (*release)(void *state);
    const char *(*device_name)(void *state);

    /** Workspace bytes one operation of the plan needs. */
    size_t (*workspace_size)(void *state, const dashattn_plan_desc *plan,
                             dashattn_operation operation);
    /** Allocate and free workspace in the backend's memory space. */
    dashattn_status (*alloc)(void *state, size_t bytes, void **ptr);
    void (*free)(void *state, void *ptr);

    dashattn_status (*forward)(void *state, const dashattn_plan_desc *plan,
                               const dashattn_forward_args *args);
    /** Optional. */
    dashattn_status (*backward)(void *state, const dashattn_plan_desc *plan,
                                const dashattn_backward_args *args);
    /** Optional. */
    dashattn_status (*cache_append)(void *state, const dashattn_plan_desc *plan,
                                    const dashattn_append_args *args);
    /** Optional. */
    dashattn_status (*decode)(void *state, const dashattn_plan_desc *plan,
                              const dashattn_decode_args *args);
    /** Optional: worker threads in use (CPU-like backends). */
    int (*num_threads)(void *state);
    /**
     * Host <-> backend memory copies, complete on return. NULL means the
     * backend's memory is host memory and the core copies with memcpy.
     */
    dashattn_status (*upload)(void *state, void *dst, const void *src, size_t bytes);
    dashattn_status (*download)(void *state, void *dst, const void *src, size_t bytes);
    /** Optional: wait for the work queued on stream (NULL: default). */
    dashattn_status (*synchronize)(void *state, void *stream);

    /**
     * Optional. Called by dashattn_plan_create once the core has resolved
     * the plan (plan->backend_plan is still NULL), before any workspace_size
     * call on it; may run on several threads at once for one state. The
     * backend chooses what it would otherwise choose on every call (kernel
     * variants, split counts, shared-memory limits) and stores it in
     * *plan_state (NULL is allowed), which the core then keeps in
     * plan->backend_plan. A status other than DASHATTN_OK refuses the plan:
     * dashattn_plan_create returns that status with the message the backend
     * set through the host's set_error (DASHATTN_ERR_UNSUPPORTED for a
     * problem this backend cannot run).
     */
    dashattn_status (*plan_prepare)(void *state, const dashattn_plan_desc *plan,
                                    void **plan_state);
    /**
     * Optional: frees a non-NULL *plan_state of plan_prepare, when the plan
     * is destroyed (or its creation fails after plan_prepare succeeded).
     */
    void (*plan_release)(void *state, void *plan_state);
} dashattn_backend_iface;

typedef const dashattn_backend_iface *(*dashattn_backend_entry_fn)(void);

#ifdef __cplusplus
}
#endif

#endif /* DASHATTN_BACKEND_H */
