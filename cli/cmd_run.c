/* SPDX-License-Identifier: MIT */
/* `dashattn run` and `dashattn grad`: attention on .npy files.
 *
 * Everything that can be checked is checked before the first output is
 * written: files, shapes, options, the plan. Outputs are written only after
 * every library call succeeded, each atomically, so a failed command leaves
 * no output file behind (and never a partial one). */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include "commands.h"
#include "json.h"
#include "npy.h"
#include "options.h"
#include "outputs.h"
#include "staging.h"

#include <dashattn.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char da_help_run[] =
    "usage: dashattn run --q Q.npy --k K.npy --v V.npy --out O.npy [--lse L.npy]\n"
    "                    [--block-summary H.npy] [OPTIONS]\n"
    "\n"
    "DashAttention forward; with no option it computes the function of the authors'\n"
    "released implementation (group-mean selection, only the own block forced, log\n"
    "prior, exact thresholds). Arrays are NumPy .npy float32 ('<f4'), C order:\n"
    "q [B, Hq, Nq, D], k and v [B, Hkv, Nk, D] with Hq a multiple of Hkv; out gets\n"
    "q's shape and lse (optional) is float32 [B, Hq, Nq], the natural-log logsumexp\n"
    "of each row's logits. --block-summary gives the learned summary vector of each\n"
    "KV head, float32 [Hkv, D] (the released models' head_cls); without it blocks\n"
    "are summarised by their mean key. Prints the backend, sparsity (share of\n"
    "visible query-key pairs skipped) and forward time. Output files are written\n"
    "only when the whole command succeeds; a failed command leaves none of them\n"
    "behind.\n";

const char da_help_grad[] =
    "usage: dashattn grad --q Q.npy --k K.npy --v V.npy --dout DO.npy\n"
    "                     --dq DQ.npy --dk DK.npy --dv DV.npy [--out O.npy] [--lse L.npy]\n"
    "                     [--block-summary H.npy [--dh DH.npy]] [OPTIONS]\n"
    "\n"
    "Runs the forward of `dashattn run`, then the gradients of sum(out * dout) with\n"
    "respect to q, k and v (and the block summary vectors with --dh, float32\n"
    "[Hkv, D]). dout has q's shape; dq, dk, dv get the shapes of q, k, v.\n";

/* Paths and options of one invocation. */
typedef struct run_args {
    da_common_options common;
    const char *q, *k, *v, *out, *lse, *summary;
    const char *dout, *dq, *dk, *dv, *dh;
} run_args;

/* An input or output array in host float32 and in the context's memory in
 * the call's dtype. */
typedef struct staged {
    da_npy_array host;
    da_device_array dev;
    dashattn_tensor t;
} staged;

/* Everything run/grad allocate, released in one place. */
typedef struct run_state {
    staged q, k, v, out, dout, dq, dk, dv, summary, dh;
    float *lse;
    da_device_array lse_dev;
    void *workspace; /* context memory */
    dashattn_context *ctx;
    dashattn_plan *plan;
} run_state;

typedef struct flag_slot {
    const char *name;
    const char **dest;
} flag_slot;

static int parse_args(int argc, char **argv, int grad, run_args *a)
{
    const char *cmd = grad ? "grad" : "run";
    memset(a, 0, sizeof *a);
    da_common_options_init(&a->common);
    const flag_slot slots[] = {
        {"--q", &a->q},       {"--k", &a->k},     {"--v", &a->v},
        {"--out", &a->out},   {"--lse", &a->lse}, {"--block-summary", &a->summary},
        {"--dout", &a->dout}, {"--dq", &a->dq},   {"--dk", &a->dk},
        {"--dv", &a->dv},     {"--dh", &a->dh},
    };
    /* run takes the first six path flags; grad takes them all. */
    const size_t n_slots = grad ? sizeof slots / sizeof slots[0] : 6;
    for (int i = 1; i < argc; i++) {
        int m = 0;
        for (size_t s = 0; s < n_slots && m == 0; s++)
            m = da_flag_value(argc, argv, &i, slots[s].name, slots[s].dest);
        if (m == 0)
            m = da_parse_common_option(&a->common, argc, argv, &i);
        if (m < 0)
            return -1;
        if (m == 0) {
            if (argv[i][0] == '-')
                da_error("%s: unknown option '%s' (try 'dashattn %s --help')", cmd, argv[i], cmd);
            else
                da_error("%s: unexpected argument '%s' (try 'dashattn %s --help')", cmd, argv[i],
                         cmd);
            return -1;
        }
    }
    const char *missing = !a->q ? "--q Q.npy" : !a->k ? "--k K.npy" : !a->v ? "--v V.npy" : NULL;
    if (missing == NULL && grad)
        missing = !a->dout ? "--dout DO.npy"
                  : !a->dq ? "--dq DQ.npy"
                  : !a->dk ? "--dk DK.npy"
                  : !a->dv ? "--dv DV.npy"
                           : NULL;
    if (missing == NULL && !grad && !a->out)
        missing = "--out O.npy";
    if (missing != NULL) {
        da_error("%s: missing %s (try 'dashattn %s --help')", cmd, missing, cmd);
        return -1;
    }
    if (a->dh && !a->summary) {
        da_error("grad: --dh needs --block-summary H.npy (mean pooling has no summary vectors)");
        return -1;
    }
    return da_check_common_options(&a->common);
}

static void format_shape(const da_npy_array *a, char *buf, size_t size)
{
    size_t n = (size_t)snprintf(buf, size, "(");
    for (int i = 0; i < a->ndim && n < size; i++)
        n += (size_t)snprintf(buf + n, size - n, i ? ", %" PRId64 : "%" PRId64, a->shape[i]);
    if (n < size)
        snprintf(buf + n, size - n, a->ndim == 1 ? ",)" : ")");
}

/* Exit status of a failed read: running out of memory is not bad input. */
static int read_failure(const char *path, int rc, const char *err)
{
    da_error("%s: %s", path, err);
    return rc == DA_NPY_NO_MEMORY ? DA_EXIT_FAILURE : DA_EXIT_USAGE;
}

/* Read a 4-D array with no empty dimension; returns an exit status. */
static int load_4d(const char *path, da_npy_array *a)
{
    char err[256];
    const int rc = da_npy_read(path, a, err, sizeof err);
    if (rc != 0)
        return read_failure(path, rc, err);
    char shape[128];
    format_shape(a, shape, sizeof shape);
    if (a->ndim != 4) {
        da_error("%s: expected a 4-D array [B, H, N, D], got shape %s", path, shape);
        return DA_EXIT_USAGE;
    }
    if (a->count == 0) {
        da_error("%s: shape %s has an empty dimension", path, shape);
        return DA_EXIT_USAGE;
    }
    return DA_EXIT_OK;
}

static int same_shape(const da_npy_array *a, const da_npy_array *b)
{
    return a->ndim == b->ndim && memcmp(a->shape, b->shape, sizeof(int64_t) * (size_t)a->ndim) == 0;
}

static int check_shapes(const run_args *a, const run_state *s)
{
    const int64_t *q = s->q.host.shape, *k = s->k.host.shape;
    char sa[128], sb[128];
    if (!same_shape(&s->k.host, &s->v.host)) {
        format_shape(&s->k.host, sa, sizeof sa);
        format_shape(&s->v.host, sb, sizeof sb);
        da_error("%s and %s differ in shape: %s vs %s", a->k, a->v, sa, sb);
        return -1;
    }
    if (q[0] != k[0]) {
        da_error("%s has batch %" PRId64 " but %s has batch %" PRId64, a->q, q[0], a->k, k[0]);
        return -1;
    }
    if (q[3] != k[3]) {
        da_error("%s has head_dim %" PRId64 " but %s has head_dim %" PRId64, a->q, q[3], a->k,
                 k[3]);
        return -1;
    }
    if (q[1] % k[1] != 0) {
        da_error("%s has %" PRId64 " heads, not a multiple of the %" PRId64 " heads of %s", a->q,
                 q[1], k[1], a->k);
        return -1;
    }
    if (a->common.causal && q[2] > k[2]) {
        da_error("causal attention needs no more queries than keys: %s has %" PRId64
                 " rows, %s %" PRId64 " (or use --no-causal)",
                 a->q, q[2], a->k, k[2]);
        return -1;
    }
    if (a->summary != NULL && (s->summary.host.ndim != 2 || s->summary.host.shape[0] != k[1] ||
                               s->summary.host.shape[1] != k[3])) {
        format_shape(&s->summary.host, sa, sizeof sa);
        da_error("%s must be float32 [Hkv, D] = (%" PRId64 ", %" PRId64 ") for %s, got shape %s",
                 a->summary, k[1], k[3], a->k, sa);
        return -1;
    }
    if (a->dout != NULL && !same_shape(&s->q.host, &s->dout.host)) {
        format_shape(&s->q.host, sa, sizeof sa);
        format_shape(&s->dout.host, sb, sizeof sb);
        da_error("%s must have the shape of %s: %s vs %s", a->dout, a->q, sb, sa);
        return -1;
    }
    return 0;
}

/* Give an array of the given shape a tensor of the call's dtype in the
 * context's memory; inputs are uploaded from their float32 data, outputs
 * get zeroed host buffers to download into. */
static int stage(dashattn_context *ctx, staged *s, const int64_t shape[4], dashattn_dtype dtype,
                 int input)
{
    if (!input) {
        s->host.ndim = 4;
        memcpy(s->host.shape, shape, 4 * sizeof(int64_t));
        s->host.count = (size_t)(shape[0] * shape[1] * shape[2] * shape[3]);
        s->host.data = calloc(s->host.count, sizeof(float));
        if (s->host.data == NULL) {
            da_error("out of memory");
            return -1;
        }
    }
    if (da_device_array_alloc(ctx, s->host.count, dtype, &s->dev) != 0)
        return -1;
    if (input && da_device_array_upload(&s->dev, s->host.data) != 0)
        return -1;
    s->t = da_device_array_tensor(&s->dev, shape);
    return 0;
}

static int unstage(staged *s)
{
    return da_device_array_download(&s->dev, s->host.data);
}

static void release_staged(staged *s)
{
    da_npy_free(&s->host);
    da_device_array_free(&s->dev);
}

static void release_state(run_state *s)
{
    staged *all[] = {&s->q,  &s->k,  &s->v,  &s->out,     &s->dout,
                     &s->dq, &s->dk, &s->dv, &s->summary, &s->dh};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        release_staged(all[i]);
    free(s->lse);
    da_device_array_free(&s->lse_dev);
    dashattn_memory_free(s->ctx, s->workspace);
    dashattn_plan_destroy(s->plan);
    dashattn_context_destroy(s->ctx);
}

static const char *selection_name(dashattn_selection_mode m)
{
    return m == DASHATTN_SELECT_TOPK ? "topk" : "entmax";
}

static const char *group_name(dashattn_group_mode m)
{
    return m == DASHATTN_GROUP_SHARED ? "shared" : m == DASHATTN_GROUP_MEAN ? "mean" : "per-head";
}

static void print_json(const run_args *a, const run_state *s, const dashattn_forward_stats *st,
                       double ms, double ms_backward)
{
    const dashattn_problem *p = dashattn_plan_problem(s->plan);
    da_json_begin(stdout, a->dout ? "grad" : "run");
    printf(", \"backend\": ");
    da_json_string(stdout, dashattn_context_backend(s->ctx));
    printf(", \"device\": ");
    da_json_string(stdout, dashattn_context_device(s->ctx));
    printf(", \"threads\": %d, \"dtype\": \"%s\",\n", dashattn_context_num_threads(s->ctx),
           dashattn_dtype_name(p->dtype));
    printf(" \"shape\": {\"batch\": %" PRId64 ", \"heads_q\": %" PRId64 ", \"heads_kv\": %" PRId64
           ", \"len_q\": %" PRId64 ", \"len_k\": %" PRId64 ", \"head_dim\": %" PRId64 "},\n",
           p->batch, p->heads_q, p->heads_kv, p->len_q, p->len_k, p->head_dim);
    printf(" \"options\": {\"causal\": %s, \"block_size\": %d, \"n_sink\": %d, \"n_local\": %d,"
           " \"alpha\": ",
           p->causal ? "true" : "false", (int)p->block_size, (int)p->n_sink, (int)p->n_local);
    da_json_number(stdout, p->alpha);
    printf(", \"selection\": \"%s\", \"topk\": %d, \"group_select\": \"%s\", \"scale\": ",
           selection_name(p->selection), (int)p->topk, group_name(p->group_mode));
    da_json_number(stdout, p->scale);
    printf(", \"stage1_scale\": ");
    da_json_number(stdout, p->stage1_scale);
    printf(", \"prior\": \"%s\", \"prior_sigma\": ",
           p->prior == DASHATTN_PRIOR_FLAT ? "flat" : "log");
    da_json_number(stdout, p->prior_sigma);
    printf(", \"threshold_iterations\": %d, \"block_summary\": %s},\n",
           dashattn_plan_threshold_iterations(s->plan), a->summary ? "true" : "false");
    printf(" \"num_blocks\": %" PRId64 ", \"threshold_method\": ",
           dashattn_plan_num_blocks(s->plan));
    da_json_string(stdout, dashattn_plan_threshold_method(s->plan));
    printf(",\n \"visible_pairs\": %" PRId64 ", \"attended_pairs\": %" PRId64 ", \"sparsity\": ",
           st->visible_pairs, st->attended_pairs);
    da_json_number(stdout, st->sparsity);
    printf(", \"ms\": ");
    da_json_fixed(stdout, ms, 6);
    if (a->dout) {
        printf(", \"ms_backward\": ");
        da_json_fixed(stdout, ms_backward, 6);
    }
    printf("}\n");
}

static void print_summary(const run_args *a, const run_state *s, const dashattn_forward_stats *st,
                          double ms, double ms_backward)
{
    const dashattn_problem *p = dashattn_plan_problem(s->plan);
    /* Threads mean something on the CPU only; a GPU backend names its device. */
    const char *backend = dashattn_context_backend(s->ctx);
    char where[256];
    if (strcmp(backend, "cpu") == 0)
        snprintf(where, sizeof where, "%d threads", dashattn_context_num_threads(s->ctx));
    else
        snprintf(where, sizeof where, "%s", dashattn_context_device(s->ctx));
    printf("backend %s (%s), %s, q [%" PRId64 ", %" PRId64 ", %" PRId64 ", %" PRId64
           "], k/v [%" PRId64 ", %" PRId64 ", %" PRId64 ", %" PRId64 "]\n",
           backend, where, dashattn_dtype_name(p->dtype), p->batch, p->heads_q, p->len_q,
           p->head_dim, p->batch, p->heads_kv, p->len_k, p->head_dim);
    printf("%s, block size %d, alpha %g, %s selection (%s, %s threshold, %s prior, %s "
           "summaries): sparsity %.4f (%" PRId64 " of %" PRId64 " visible pairs read)\n",
           p->causal ? "causal" : "non-causal", (int)p->block_size, p->alpha,
           selection_name(p->selection), group_name(p->group_mode),
           dashattn_plan_threshold_method(s->plan),
           p->prior == DASHATTN_PRIOR_FLAT ? "flat" : "log", a->summary ? "learned" : "mean",
           st->sparsity, st->attended_pairs, st->visible_pairs);
    printf("forward %.3f ms", ms);
    if (a->dout)
        printf(", backward %.3f ms", ms_backward);
    printf("\n");
}

/* Returns an exit status. */
static int load_inputs(const run_args *a, run_state *s)
{
    int rc = load_4d(a->q, &s->q.host);
    if (rc == DA_EXIT_OK)
        rc = load_4d(a->k, &s->k.host);
    if (rc == DA_EXIT_OK)
        rc = load_4d(a->v, &s->v.host);
    if (rc == DA_EXIT_OK && a->dout)
        rc = load_4d(a->dout, &s->dout.host);
    if (rc == DA_EXIT_OK && a->summary) {
        char err[256];
        const int read = da_npy_read(a->summary, &s->summary.host, err, sizeof err);
        if (read != 0)
            rc = read_failure(a->summary, read, err);
    }
    if (rc == DA_EXIT_OK && check_shapes(a, s) != 0)
        rc = DA_EXIT_USAGE;
    return rc;
}

static int make_plan(const run_args *a, run_state *s)
{
    const int64_t *q = s->q.host.shape, *k = s->k.host.shape;
    int rc = da_open_context(&a->common, a->common.threads, &s->ctx);
    if (rc != DA_EXIT_OK)
        return rc;
    dashattn_problem prob;
    dashattn_problem_init(&prob, q[0], q[1], k[1], q[2], k[2], q[3]);
    da_apply_common_options(&a->common, &prob);
    const dashattn_status st = dashattn_plan_create(s->ctx, &prob, &s->plan);
    if (st != DASHATTN_OK) {
        da_library_error("plan", st);
        return da_library_exit_status(st);
    }
    return DA_EXIT_OK;
}

static int stage_all(const run_args *a, run_state *s)
{
    const dashattn_dtype dt = a->common.dtype;
    const int64_t *q = s->q.host.shape;
    dashattn_context *ctx = s->ctx;
    int bad = stage(ctx, &s->q, q, dt, 1) || stage(ctx, &s->k, s->k.host.shape, dt, 1) ||
              stage(ctx, &s->v, s->v.host.shape, dt, 1) || stage(ctx, &s->out, q, dt, 0);
    if (!bad && a->dout)
        bad = stage(ctx, &s->dout, q, dt, 1) || stage(ctx, &s->dq, q, dt, 0) ||
              stage(ctx, &s->dk, s->k.host.shape, dt, 0) ||
              stage(ctx, &s->dv, s->v.host.shape, dt, 0);
    /* Summary vectors and their gradient are f32 [1, Hkv, 1, D] whatever the dtype. */
    const int64_t hshape[4] = {1, s->k.host.shape[1], 1, s->k.host.shape[3]};
    if (!bad && a->summary)
        bad = stage(ctx, &s->summary, hshape, DASHATTN_F32, 1);
    if (!bad && a->dh)
        bad = stage(ctx, &s->dh, hshape, DASHATTN_F32, 0);
    if (bad)
        return -1;
    const size_t rows = (size_t)(q[0] * q[1] * q[2]);
    s->lse = calloc(rows, sizeof(float));
    if (s->lse == NULL) {
        da_error("out of memory");
        return -1;
    }
    if (da_device_array_alloc(ctx, rows, DASHATTN_F32, &s->lse_dev) != 0)
        return -1;
    const dashattn_status st =
        dashattn_memory_alloc(ctx, dashattn_plan_workspace_size(s->plan), &s->workspace);
    if (st != DASHATTN_OK) {
        da_library_error("workspace", st);
        return -1;
    }
    return 0;
}

/* The file arguments, for outputs.h: checked before anything runs, and the
 * outputs written all or none. */
static void path_args(const run_args *a, da_path_arg in[5], da_path_arg out[6])
{
    const da_path_arg inputs[5] = {{"--q", a->q},
                                   {"--k", a->k},
                                   {"--v", a->v},
                                   {"--dout", a->dout},
                                   {"--block-summary", a->summary}};
    const da_path_arg outputs[6] = {{"--out", a->out}, {"--lse", a->lse}, {"--dq", a->dq},
                                    {"--dk", a->dk},   {"--dv", a->dv},   {"--dh", a->dh}};
    memcpy(in, inputs, sizeof inputs);
    memcpy(out, outputs, sizeof outputs);
}

static int check_files(const run_args *a)
{
    da_path_arg in[5], out[6];
    path_args(a, in, out);
    char err[2600];
    if (da_outputs_check(in, 5, out, 6, err, sizeof err) != 0) {
        da_error("%s", err);
        return -1;
    }
    return 0;
}

static int write_outputs(const run_args *a, run_state *s)
{
    if (unstage(&s->out) != 0 || da_device_array_download(&s->lse_dev, s->lse) != 0)
        return DA_EXIT_FAILURE;
    if (a->dout && (unstage(&s->dq) != 0 || unstage(&s->dk) != 0 || unstage(&s->dv) != 0))
        return DA_EXIT_FAILURE;
    if (a->dh && unstage(&s->dh) != 0)
        return DA_EXIT_FAILURE;
    da_path_arg in[5], out[6];
    path_args(a, in, out);
    const da_output_file files[6] = {
        {out[0], s->out.host.data, 4, s->out.host.shape},
        {out[1], s->lse, 3, s->q.host.shape},
        {out[2], s->dq.host.data, 4, s->dq.host.shape},
        {out[3], s->dk.host.data, 4, s->dk.host.shape},
        {out[4], s->dv.host.data, 4, s->dv.host.shape},
        {out[5], s->dh.host.data, 2, s->summary.host.shape},
    };
    char err[2600];
    if (da_outputs_write(files, 6, err, sizeof err) != 0) {
        da_error("%s", err);
        return DA_EXIT_USAGE;
    }
    return DA_EXIT_OK;
}

/* Milliseconds of a library call, counted until its queued work is done. */
static dashattn_status timed_sync(dashattn_context *ctx, dashattn_status st, double t0, double *ms)
{
    if (st == DASHATTN_OK)
        st = dashattn_synchronize(ctx, NULL);
    *ms = da_now_ms() - t0;
    return st;
}

static int execute(const run_args *a, run_state *s)
{
    if (check_files(a) != 0)
        return DA_EXIT_USAGE;
    int rc = load_inputs(a, s);
    if (rc != DA_EXIT_OK)
        return rc;
    rc = make_plan(a, s);
    if (rc != DA_EXIT_OK)
        return rc;
    if (stage_all(a, s) != 0)
        return DA_EXIT_FAILURE;

    const size_t ws = dashattn_plan_workspace_size(s->plan);
    const dashattn_tensor *summary = a->summary ? &s->summary.t : NULL;
    dashattn_forward_stats stats;
    memset(&stats, 0, sizeof stats);
    double t0 = da_now_ms();
    double ms;
    dashattn_status st =
        dashattn_forward(s->ctx, s->plan, &s->q.t, &s->k.t, &s->v.t, summary, &s->out.t,
                         s->lse_dev.data, NULL, &stats, s->workspace, ws, NULL);
    st = timed_sync(s->ctx, st, t0, &ms);
    if (st != DASHATTN_OK) {
        da_library_error("forward", st);
        return da_library_exit_status(st);
    }
    double ms_backward = 0.0;
    if (a->dout) {
        t0 = da_now_ms();
        st = dashattn_backward(s->ctx, s->plan, &s->q.t, &s->k.t, &s->v.t, summary, &s->out.t,
                               s->lse_dev.data, &s->dout.t, &s->dq.t, &s->dk.t, &s->dv.t,
                               a->dh ? &s->dh.t : NULL, s->workspace, ws, NULL);
        st = timed_sync(s->ctx, st, t0, &ms_backward);
        if (st != DASHATTN_OK) {
            da_library_error("backward", st);
            return da_library_exit_status(st);
        }
    }
    rc = write_outputs(a, s);
    if (rc != DA_EXIT_OK)
        return rc;
    if (a->common.json)
        print_json(a, s, &stats, ms, ms_backward);
    else
        print_summary(a, s, &stats, ms, ms_backward);
    return DA_EXIT_OK;
}

static int run_or_grad(int argc, char **argv, int grad)
{
    run_args a;
    if (parse_args(argc, argv, grad, &a) != 0)
        return DA_EXIT_USAGE;
    run_state s;
    memset(&s, 0, sizeof s);
    const int rc = execute(&a, &s);
    release_state(&s);
    return rc;
}

int da_cmd_run(int argc, char **argv)
{
    return run_or_grad(argc, argv, 0);
}

int da_cmd_grad(int argc, char **argv)
{
    return run_or_grad(argc, argv, 1);
}
