/* SPDX-License-Identifier: MIT */
/* Pieces of the OpenCL backend shared between its files.
 *
 * Memory: every pointer the core hands over (tensor data, lse, selection
 * arrays, cache seq_lens and block_table, the workspace) is a cl_mem cast
 * to void *, starting at offset 0. The workspace is one buffer of floats;
 * kernels get it whole with element offsets of its parts. */
#ifndef DASHATTN_OCL_INTERNAL_H
#define DASHATTN_OCL_INTERNAL_H

#ifndef CL_TARGET_OPENCL_VERSION
#define CL_TARGET_OPENCL_VERSION 120
#endif
#include <CL/cl.h>
#include <dashattn/backend.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

/* The embedded kernel sources, all .cl files in order (ocl_sources.c is
 * generated from them at build time by embed_cl.sh). */
extern const char daocl_kernel_source[];

/* The core's callbacks, set by probe and init (the core passes the same
 * table to every call). */
extern const dashattn_host *daocl_host;

/* Device properties the plans are sized from. */
typedef struct daocl_limits {
    size_t max_work_group;
    cl_ulong local_mem;
    cl_ulong max_alloc;
    cl_uint compute_units;
    int fp64, fp16;
    cl_device_type type;
} daocl_limits;

typedef struct daocl_program daocl_program;

typedef struct daocl_state {
    cl_platform_id platform;
    cl_device_id device;
    cl_context context;
    cl_command_queue queue;
    daocl_limits lim;
    char name[400];     /* what device_name() returns */
    char identity[900]; /* platform, device and driver: part of the cache key */
    pthread_mutex_t lock;
    daocl_program *programs; /* built programs, guarded by lock */
} daocl_state;

/* How a plan runs on this device, a function of (plan, device) only, so
 * that workspace sizes are fixed at plan time. Workspace offsets are in
 * floats from the start of the workspace buffer. */
typedef struct daocl_config {
    int dpad;                         /* head_dim rounded up to a power of two >= 16 */
    int wg;                           /* rows per work-group of the row-parallel kernels */
    int kt;                           /* tokens per local tile */
    int dec_heads;                    /* query heads per pass of the decode kernel */
    int direct;                       /* stage 2 reads keys and values from global memory */
    int64_t chunk;                    /* query positions per forward pass */
    int64_t rows;                     /* rows of one pass: batch * heads_q * chunk */
    int64_t splits, blocks_per_split; /* decode: key blocks split among work-groups */
    size_t kbar, w, att, gp, dq, dl, pacc, pml; /* workspace parts */
    size_t pool, rt; /* per key token: pooling weights w_t, the backward's r_t */
    /* Backward: each row's own entmax probabilities and its weights before
     * the prior, kept by stage 1 for the entmax backward; -1 elsewhere. */
    int64_t ph, wpre;
    size_t floats; /* workspace size */
} daocl_config;

int daocl_direct_loads(const daocl_state *st);
int daocl_wide_select(const daocl_state *st);

daocl_config daocl_plan_config(const daocl_state *st, const dashattn_plan_desc *plan,
                               dashattn_operation op);

/* ---- errors (ocl_backend.c) ---- */

/* Records "opencl: <what>: <CL error name> (<code>)" and returns the status
 * the code maps to (out of memory or device error). */
dashattn_status daocl_fail_cl(cl_int err, const char *what);

/* Records a formatted message and returns status. */
dashattn_status daocl_fail(dashattn_status status, const char *format, ...)
#ifdef __GNUC__
    __attribute__((format(printf, 2, 3)))
#endif
    ;

const char *daocl_error_name(cl_int err);

/* ---- programs (ocl_program.c) ---- */

/* The program compiled for a dtype and configuration: from this context's
 * table, else from the disk cache, else built from the embedded source (and
 * saved). A failed build returns DASHATTN_ERR_DEVICE with the build log. */
dashattn_status daocl_program_get(daocl_state *st, dashattn_dtype dtype, const daocl_config *cfg,
                                  cl_program *program);

void daocl_programs_release(daocl_state *st);

/* ---- kernel calls (ocl_launch.c) ---- */

/* A kernel being given its arguments one after the other; the first error
 * sticks and is reported by daocl_launch. */
typedef struct daocl_call {
    cl_kernel kernel;
    const char *name;
    cl_uint next;
    cl_int err;
    int fp64;
} daocl_call;

dashattn_status daocl_call_begin(daocl_call *call, const daocl_state *st, cl_program program,
                                 const char *name);
void daocl_arg_mem(daocl_call *call, const void *mem);
void daocl_arg_int(daocl_call *call, int64_t value);
void daocl_arg_long(daocl_call *call, int64_t value);
void daocl_arg_float(daocl_call *call, double value);
/* double on devices with cl_khr_fp64, else float (the kernels' `real`). */
void daocl_arg_real(daocl_call *call, double value);
void daocl_arg_strides(daocl_call *call, const dashattn_tensor *t);
/* The plan's block layout as the kernels' int8 (causal, S, n_sink, n_local). */
void daocl_arg_layout(daocl_call *call, const dashattn_plan_desc *plan);
/* Enqueue over global (rounded up to local where local is given) and
 * release the kernel. */
dashattn_status daocl_launch(daocl_call *call, cl_command_queue queue, cl_uint dims,
                             const size_t *global, const size_t *local);

/* The queue of a call: the caller's stream, or the context's own. */
cl_command_queue daocl_queue(const daocl_state *st, void *stream);

/* ---- pieces the forward and the backward share (ocl_forward.c) ---- */

/* Whether any query row of the plan has candidate blocks (stage 1 work). */
int daocl_has_candidates(const dashattn_plan_desc *plan);

/* Summary of every block into the workspace (cfg->kbar): the mean key, or
 * with the learned vectors h (NULL: mean pooling) the softmax-weighted one,
 * its weights in cfg->pool. */
dashattn_status daocl_block_keys(const daocl_state *st, cl_program prog,
                                 const dashattn_plan_desc *plan, const daocl_config *cfg,
                                 const dashattn_tensor *k, const dashattn_tensor *h, cl_mem ws,
                                 cl_command_queue queue);

/* The query rows one da_select launch covers: positions first .. first +
 * count - 1 of a pass of chunk positions, at query_offset, of len_q rows. */
typedef struct daocl_select_rows {
    int64_t first, count, chunk, query_offset, len_q;
} daocl_select_rows;

/* Stage-1 thresholds, block weights and the optional selection output of
 * the rows (seq_lens: decode's sequence lengths on the device, else NULL). */
dashattn_status daocl_select(const daocl_state *st, cl_program prog, const dashattn_plan_desc *plan,
                             const daocl_config *cfg, const daocl_select_rows *rows,
                             const void *seq_lens, const dashattn_selection *sel, cl_mem ws,
                             cl_command_queue queue);

/* Stage 1 of query positions [i0, i0 + npos): candidate scores (when there
 * are candidates), then block weights into cfg->w and the tokens each row
 * reads into cfg->att; selection lists too when sel is given. */
dashattn_status daocl_stage1(const daocl_state *st, cl_program prog, const dashattn_plan_desc *plan,
                             const daocl_config *cfg, const dashattn_tensor *q, int64_t i0,
                             int64_t npos, int candidates, const dashattn_selection *sel, cl_mem ws,
                             cl_command_queue queue);

/* ---- entry points ---- */

dashattn_status daocl_forward(void *state, const dashattn_plan_desc *plan,
                              const dashattn_forward_args *args);
dashattn_status daocl_backward(void *state, const dashattn_plan_desc *plan,
                               const dashattn_backward_args *args);
dashattn_status daocl_cache_append(void *state, const dashattn_plan_desc *plan,
                                   const dashattn_append_args *args);
dashattn_status daocl_decode(void *state, const dashattn_plan_desc *plan,
                             const dashattn_decode_args *args);

/* ---- device discovery (ocl_devices.c) ---- */

/* Platform and device picked by DASHATTN_OPENCL_DEVICE ("N": the N-th
 * device over all platforms, "P:D": device D of platform P) or, when it is
 * unset, by index (the context option `device`, over all platforms). On
 * failure writes the reason into why and returns the status. */
dashattn_status daocl_pick_device(int index, cl_platform_id *platform, cl_device_id *device,
                                  char *why, size_t why_size);

/* The types of all devices found, or'ed; 0 (reason in why) if none. */
cl_device_type daocl_best_device_type(char *why, size_t why_size);

/* Everything the kernels' sizing needs about a device. */
daocl_limits daocl_device_limits(cl_device_id device);

/* Listing of every platform and device for `dashattn info`. */
size_t daocl_describe(char *buffer, size_t size);

#endif
