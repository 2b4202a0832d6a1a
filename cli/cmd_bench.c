/* SPDX-License-Identifier: MIT */
/* `dashattn bench`: DashAttention against the same backend with every block
 * forced (plain attention through the same kernels), on synthetic inputs with
 * block structure, over a sweep of context lengths. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include "commands.h"
#include "json.h"
#include "options.h"
#include "staging.h"
#include "synthetic.h"

#include <dashattn.h>

#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The focus that puts the benchmark (N = 8192, Hq 8, Hkv 2, D 64,
 * S = 64, alpha 1.5, seed 1) in the 70-80% sparsity band it asks for: 76.8%
 * (0.8 gives 74.4%, 1.0 gives 82.8%; shorter contexts are less sparse). */
#define BENCH_DEFAULT_FOCUS 0.85
#define BENCH_MAX_LENGTHS 32
#define BENCH_MAX_REPEAT 1000

const char da_help_bench[] =
    "usage: dashattn bench [OPTIONS]\n"
    "\n"
    "Times DashAttention forward against the same backend with every block forced\n"
    "(n_local >= number of blocks: dense causal attention through the same kernels)\n"
    "on synthetic inputs whose keys come in topic blocks (see cli/synthetic.h), for\n"
    "each context length. Reports sparsity, the best time of each over --repeat\n"
    "runs (the least disturbed by other work on the machine; --json adds the\n"
    "median), and dense/dash, the speedup.\n"
    "With no options at all it runs a quick demo on the CPU backend (lengths\n"
    "1024,2048,4096).\n"
    "\n"
    "bench options:\n"
    "  --lengths N1,N2,...   context lengths, queries = keys (default 1024,2048,4096,8192)\n"
    "  --heads-q H           query heads (default 8)\n"
    "  --heads-kv H          key/value heads (default 2)\n"
    "  --head-dim D          head dimension (default 64)\n"
    "  --batch B             batch size (default 1)\n"
    "  --focus F             how strongly queries lean to a few key blocks; higher is\n"
    "                        sparser (default 0.85; 0 is unstructured Gaussian data)\n"
    "  --family F            synthetic inputs: segment (default; each query row's noise\n"
    "                        its own, the worst case for tiled kernels) or coherent (a\n"
    "                        segment's 64 rows share most of theirs)\n"
    "  --seed S              seed of the synthetic inputs (default 1)\n"
    "  --repeat R            timed runs of each; the best is reported (default 3)\n"
    "  --threads-sweep       run each length with 1 thread and with --threads (default\n"
    "                        every core), to show what threading gains\n";

static const char *family_name(da_synth_family f)
{
    return f == DA_SYNTH_COHERENT ? "coherent" : "segment";
}

typedef struct bench_args {
    da_common_options common;
    int64_t lengths[BENCH_MAX_LENGTHS];
    int n_lengths;
    int64_t batch, heads_q, heads_kv, head_dim;
    double focus;
    da_synth_family family;
    uint64_t seed;
    int repeat;
    int threads_sweep;
    int demo;
} bench_args;

/* One measured configuration. */
typedef struct bench_row {
    int64_t n;
    int threads;
    int64_t num_blocks;
    double sparsity;
    double dense_sparsity;
    double ms_dash, ms_dash_median;
    double ms_dense, ms_dense_median;
} bench_row;

/* The synthetic inputs of one length, in the call's dtype. */
/* Synthetic float32 inputs of one length, in host memory. */
typedef struct bench_inputs {
    float *q, *k, *v;
    int64_t q_shape[4], kv_shape[4];
} bench_inputs;

/* The same inputs in one context's memory, in the benchmark's dtype. */
typedef struct bench_tensors {
    da_device_array q, k, v, out;
    dashattn_tensor tq, tk, tv, tout;
} bench_tensors;

static int parse_lengths(const char *text, bench_args *b)
{
    b->n_lengths = 0;
    const char *p = text;
    for (;;) {
        char item[32];
        const char *comma = strchr(p, ',');
        const size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (len == 0 || len >= sizeof item) {
            da_error("--lengths: expected positive integers separated by commas, got '%s'", text);
            return -1;
        }
        if (b->n_lengths == BENCH_MAX_LENGTHS) {
            da_error("--lengths: at most %d lengths", BENCH_MAX_LENGTHS);
            return -1;
        }
        memcpy(item, p, len);
        item[len] = '\0';
        long long v;
        if (da_parse_int("--lengths", item, 1, INT32_MAX, &v) != 0)
            return -1;
        b->lengths[b->n_lengths++] = v;
        if (comma == NULL)
            return 0;
        p = comma + 1;
    }
}

static int parse_int64_flag(int argc, char **argv, int *i, const char *name, long long min,
                            long long max, int64_t *dest)
{
    const char *v;
    const int m = da_flag_value(argc, argv, i, name, &v);
    long long x;
    if (m <= 0)
        return m;
    if (da_parse_int(name, v, min, max, &x) != 0)
        return -1;
    *dest = x;
    return 1;
}

static int parse_bench_option(bench_args *b, int argc, char **argv, int *i)
{
    const char *v;
    int m;
    int64_t tmp;
    if (strcmp(argv[*i], "--threads-sweep") == 0) {
        b->threads_sweep = 1;
        return 1;
    }
    if ((m = da_flag_value(argc, argv, i, "--lengths", &v)) != 0)
        return m < 0 ? -1 : (parse_lengths(v, b) ? -1 : 1);
    if ((m = parse_int64_flag(argc, argv, i, "--heads-q", 1, INT32_MAX, &b->heads_q)) != 0)
        return m;
    if ((m = parse_int64_flag(argc, argv, i, "--heads-kv", 1, INT32_MAX, &b->heads_kv)) != 0)
        return m;
    if ((m = parse_int64_flag(argc, argv, i, "--head-dim", 1, 256, &b->head_dim)) != 0)
        return m;
    if ((m = parse_int64_flag(argc, argv, i, "--batch", 1, INT32_MAX, &b->batch)) != 0)
        return m;
    if ((m = parse_int64_flag(argc, argv, i, "--seed", 0, LLONG_MAX, &tmp)) != 0) {
        b->seed = (uint64_t)tmp;
        return m;
    }
    if ((m = parse_int64_flag(argc, argv, i, "--repeat", 1, BENCH_MAX_REPEAT, &tmp)) != 0) {
        b->repeat = (int)tmp;
        return m;
    }
    if ((m = da_flag_value(argc, argv, i, "--focus", &v)) != 0)
        return m < 0 ? -1 : (da_parse_double("--focus", v, 0.0, 1e6, &b->focus) ? -1 : 1);
    if ((m = da_flag_value(argc, argv, i, "--family", &v)) != 0) {
        if (m < 0)
            return -1;
        if (strcmp(v, "segment") == 0 || strcmp(v, "coherent") == 0) {
            b->family = v[0] == 'c' ? DA_SYNTH_COHERENT : DA_SYNTH_SEGMENT;
            return 1;
        }
        da_error("bench: --family takes segment or coherent, not '%s'", v);
        return -1;
    }
    return 0;
}

static int parse_args(int argc, char **argv, bench_args *b)
{
    memset(b, 0, sizeof *b);
    da_common_options_init(&b->common);
    static const int64_t default_lengths[] = {1024, 2048, 4096, 8192};
    static const int64_t demo_lengths[] = {1024, 2048, 4096};
    b->demo = argc == 1;
    if (b->demo) /* the README's first command: the same on every machine */
        b->common.backend = "cpu";
    const int64_t *lengths = b->demo ? demo_lengths : default_lengths;
    b->n_lengths = b->demo ? 3 : 4;
    memcpy(b->lengths, lengths, sizeof(int64_t) * (size_t)b->n_lengths);
    b->batch = 1;
    b->heads_q = 8;
    b->heads_kv = 2;
    b->head_dim = 64;
    b->focus = BENCH_DEFAULT_FOCUS;
    b->seed = 1;
    b->repeat = 3;
    for (int i = 1; i < argc; i++) {
        int m = parse_bench_option(b, argc, argv, &i);
        if (m == 0)
            m = da_parse_common_option(&b->common, argc, argv, &i);
        if (m < 0)
            return -1;
        if (m == 0) {
            if (argv[i][0] == '-')
                da_error("bench: unknown option '%s' (try 'dashattn bench --help')", argv[i]);
            else
                da_error("bench: unexpected argument '%s' (try 'dashattn bench --help')", argv[i]);
            return -1;
        }
    }
    if (b->heads_q % b->heads_kv != 0) {
        da_error("--heads-q (%" PRId64 ") must be a multiple of --heads-kv (%" PRId64 ")",
                 b->heads_q, b->heads_kv);
        return -1;
    }
    return da_check_common_options(&b->common);
}

static int cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void free_inputs(bench_inputs *in)
{
    free(in->q);
    free(in->k);
    free(in->v);
    memset(in, 0, sizeof *in);
}

static int make_inputs(const bench_args *b, int64_t n, bench_inputs *in)
{
    memset(in, 0, sizeof *in);
    /* Refuse sizes whose element counts would overflow before multiplying. */
    const double elems = (double)b->batch * (double)b->heads_q * (double)n * (double)b->head_dim;
    if (elems * sizeof(float) > (double)(SIZE_MAX / 4))
        return -1;
    const int64_t q_shape[4] = {b->batch, b->heads_q, n, b->head_dim};
    const int64_t kv_shape[4] = {b->batch, b->heads_kv, n, b->head_dim};
    memcpy(in->q_shape, q_shape, sizeof q_shape);
    memcpy(in->kv_shape, kv_shape, sizeof kv_shape);
    const size_t nq = (size_t)(b->batch * b->heads_q * n * b->head_dim);
    const size_t nk = (size_t)(b->batch * b->heads_kv * n * b->head_dim);
    in->q = malloc(nq * sizeof(float));
    in->k = malloc(nk * sizeof(float));
    in->v = malloc(nk * sizeof(float));
    if (!in->q || !in->k || !in->v)
        return -1;
    da_synth_qkv_family(b->family, b->seed, b->batch, b->heads_q, b->heads_kv, n, n, b->head_dim,
                        b->common.block_size, b->focus, in->q, in->k, in->v);
    return 0;
}

static void free_tensors(bench_tensors *t)
{
    da_device_array_free(&t->q);
    da_device_array_free(&t->k);
    da_device_array_free(&t->v);
    da_device_array_free(&t->out);
}

/* Upload one length's inputs to a context (errors already printed). */
static int stage_inputs(dashattn_context *ctx, dashattn_dtype dt, const bench_inputs *in,
                        bench_tensors *t)
{
    memset(t, 0, sizeof *t);
    const size_t nq = (size_t)(in->q_shape[0] * in->q_shape[1] * in->q_shape[2] * in->q_shape[3]);
    const size_t nk =
        (size_t)(in->kv_shape[0] * in->kv_shape[1] * in->kv_shape[2] * in->kv_shape[3]);
    if (da_device_array_alloc(ctx, nq, dt, &t->q) || da_device_array_alloc(ctx, nk, dt, &t->k) ||
        da_device_array_alloc(ctx, nk, dt, &t->v) || da_device_array_alloc(ctx, nq, dt, &t->out) ||
        da_device_array_upload(&t->q, in->q) || da_device_array_upload(&t->k, in->k) ||
        da_device_array_upload(&t->v, in->v))
        return -1;
    t->tq = da_device_array_tensor(&t->q, in->q_shape);
    t->tk = da_device_array_tensor(&t->k, in->kv_shape);
    t->tv = da_device_array_tensor(&t->v, in->kv_shape);
    t->tout = da_device_array_tensor(&t->out, in->q_shape);
    return 0;
}

/* Best and median forward time over repeat runs, each counted until the
 * backend finished, and the sparsity of the call from one untimed run that
 * also warms up. Statistics cost a reduction, so timed runs ask for none. */
static int time_forward(dashattn_context *ctx, const dashattn_plan *plan, const bench_tensors *in,
                        int repeat, double *best, double *median, double *sparsity)
{
    const size_t ws_size = dashattn_plan_operation_workspace_size(plan, DASHATTN_OP_FORWARD);
    void *ws = NULL;
    dashattn_status st = dashattn_memory_alloc(ctx, ws_size, &ws);
    double times[BENCH_MAX_REPEAT];
    dashattn_forward_stats stats;
    for (int r = -1; r < repeat && st == DASHATTN_OK; r++) {
        const double t0 = da_now_ms();
        st = dashattn_forward(ctx, plan, &in->tq, &in->tk, &in->tv, NULL, &in->tout, NULL, NULL,
                              r < 0 ? &stats : NULL, ws, ws_size, NULL);
        if (st == DASHATTN_OK)
            st = dashattn_synchronize(ctx, NULL);
        if (r >= 0)
            times[r] = da_now_ms() - t0;
    }
    dashattn_memory_free(ctx, ws);
    if (st != DASHATTN_OK) {
        da_library_error("bench: forward", st);
        return da_library_exit_status(st);
    }
    qsort(times, (size_t)repeat, sizeof times[0], cmp_double);
    *best = times[0];
    *median = repeat % 2 ? times[repeat / 2] : 0.5 * (times[repeat / 2 - 1] + times[repeat / 2]);
    *sparsity = stats.sparsity;
    return DA_EXIT_OK;
}

static int make_plan(dashattn_context *ctx, const bench_args *b, int64_t n, int dense,
                     dashattn_plan **plan)
{
    dashattn_problem p;
    dashattn_problem_init(&p, b->batch, b->heads_q, b->heads_kv, n, n, b->head_dim);
    da_apply_common_options(&b->common, &p);
    if (dense) {
        /* Force every block: as local blocks for causal rows, as sinks for
         * non-causal ones. Stage 1 then has no candidates. */
        const int64_t m = (n + p.block_size - 1) / p.block_size;
        p.n_local = (int32_t)m;
        p.n_sink = (int32_t)m;
    }
    const dashattn_status st = dashattn_plan_create(ctx, &p, plan);
    if (st != DASHATTN_OK) {
        da_library_error(dense ? "bench: dense plan" : "bench: plan", st);
        return da_library_exit_status(st);
    }
    return DA_EXIT_OK;
}

static int measure(dashattn_context *ctx, const bench_args *b, int64_t n, const bench_tensors *in,
                   bench_row *row)
{
    dashattn_plan *dash = NULL, *dense = NULL;
    int rc = make_plan(ctx, b, n, 0, &dash);
    if (rc == DA_EXIT_OK)
        rc = make_plan(ctx, b, n, 1, &dense);
    if (rc == DA_EXIT_OK) {
        row->n = n;
        row->threads = dashattn_context_num_threads(ctx);
        row->num_blocks = dashattn_plan_num_blocks(dash);
        rc = time_forward(ctx, dash, in, b->repeat, &row->ms_dash, &row->ms_dash_median,
                          &row->sparsity);
    }
    if (rc == DA_EXIT_OK)
        rc = time_forward(ctx, dense, in, b->repeat, &row->ms_dense, &row->ms_dense_median,
                          &row->dense_sparsity);
    dashattn_plan_destroy(dash);
    dashattn_plan_destroy(dense);
    return rc;
}

static void print_header(const bench_args *b, dashattn_context *ctx)
{
    const da_common_options *o = &b->common;
    if (b->demo)
        printf(
            "DashAttention demo: attention that reads only the key blocks alpha-entmax picks.\n");
    printf("backend %s (%s), %s, batch %" PRId64 ", %" PRId64 " query heads, %" PRId64
           " KV heads, head dim %" PRId64 "\n",
           dashattn_context_backend(ctx), dashattn_context_device(ctx),
           dashattn_dtype_name(o->dtype), b->batch, b->heads_q, b->heads_kv, b->head_dim);
    printf("%s, block size %d, sink %d, local %d, ", o->causal ? "causal" : "non-causal",
           (int)o->block_size, (int)o->n_sink, (int)o->n_local);
    if (o->selection == DASHATTN_SELECT_TOPK)
        printf("top-%d selection", (int)o->topk);
    else
        printf("alpha-entmax selection (alpha %g)", o->alpha);
    printf("; synthetic inputs (%s), focus %g; best of %d runs\n\n", family_name(b->family),
           b->focus, b->repeat);
    printf("%8s %8s %7s %9s %11s %11s %11s%s\n", "N", "threads", "blocks", "sparsity", "dash ms",
           "dense ms", "dense/dash", b->threads_sweep ? "    vs 1 thread" : "");
}

static void print_row(const bench_row *r, const bench_row *one_thread)
{
    printf("%8" PRId64 " %8d %7" PRId64 " %8.1f%% %11.2f %11.2f %10.2fx", r->n, r->threads,
           r->num_blocks, 100.0 * r->sparsity, r->ms_dash, r->ms_dense, r->ms_dense / r->ms_dash);
    if (one_thread != NULL)
        printf(" %14.2fx", one_thread->ms_dash / r->ms_dash);
    printf("\n");
    fflush(stdout);
}

static void print_footer(const bench_args *b)
{
    printf("\nsparsity: share of the causally visible (query, key) pairs DashAttention skips.\n"
           "dense: the same kernels with every block forced, i.e. plain attention.\n"
           "dense/dash: how many times faster DashAttention is than dense attention.\n");
    if (b->threads_sweep)
        printf("vs 1 thread: how much faster DashAttention runs than on 1 thread.\n");
    if (b->demo)
        printf("Longer contexts skip more: try `dashattn bench --lengths 8192 --threads-sweep`"
               " (options: dashattn bench --help).\n");
}

static void print_json(const bench_args *b, dashattn_context *ctx, const bench_row *rows,
                       int n_rows)
{
    const da_common_options *o = &b->common;
    da_json_begin(stdout, "bench");
    printf(", \"backend\": ");
    da_json_string(stdout, dashattn_context_backend(ctx));
    printf(", \"device\": ");
    da_json_string(stdout, dashattn_context_device(ctx));
    printf(", \"dtype\": \"%s\", \"batch\": %" PRId64 ", \"heads_q\": %" PRId64
           ", \"heads_kv\": %" PRId64 ", \"head_dim\": %" PRId64 ",\n",
           dashattn_dtype_name(o->dtype), b->batch, b->heads_q, b->heads_kv, b->head_dim);
    printf(" \"causal\": %s, \"block_size\": %d, \"n_sink\": %d, \"n_local\": %d, \"alpha\": ",
           o->causal ? "true" : "false", (int)o->block_size, (int)o->n_sink, (int)o->n_local);
    da_json_number(stdout, o->alpha);
    printf(", \"selection\": \"%s\", \"topk\": %d, \"focus\": ",
           o->selection == DASHATTN_SELECT_TOPK ? "topk" : "entmax", (int)o->topk);
    da_json_number(stdout, b->focus);
    printf(", \"family\": \"%s\"", family_name(b->family));
    printf(", \"seed\": %" PRIu64 ", \"repeat\": %d, \"statistic\": \"best\",\n \"results\": [",
           b->seed, b->repeat);
    for (int i = 0; i < n_rows; i++) {
        const bench_row *r = &rows[i];
        /* A time of 0 (a coarse clock) makes the speedup infinite: null. */
        const double fig[] = {r->ms_dash, r->ms_dense, r->ms_dense / r->ms_dash, r->ms_dash_median,
                              r->ms_dense_median};
        static const char *const key[] = {"ms", "ms_dense", "speedup", "ms_median",
                                          "ms_dense_median"};
        printf("%s\n  {\"n\": %" PRId64 ", \"threads\": %d, \"num_blocks\": %" PRId64
               ", \"sparsity\": ",
               i ? "," : "", r->n, r->threads, r->num_blocks);
        da_json_number(stdout, r->sparsity);
        for (size_t k = 0; k < sizeof fig / sizeof fig[0]; k++) {
            printf(", \"%s\": ", key[k]);
            da_json_fixed(stdout, fig[k], 6);
        }
        printf("}");
    }
    printf("\n ]}\n");
}

/* Sweep the lengths on one context (or on a 1-thread and an all-threads
 * context for --threads-sweep), printing rows as they come. */
static int run_sweep(const bench_args *b, dashattn_context *const *ctx, int n_ctx, bench_row *rows,
                     int *n_rows)
{
    *n_rows = 0;
    for (int l = 0; l < b->n_lengths; l++) {
        bench_inputs in;
        if (make_inputs(b, b->lengths[l], &in) != 0) {
            free_inputs(&in);
            da_error("bench: out of memory for N = %" PRId64, b->lengths[l]);
            return DA_EXIT_FAILURE;
        }
        for (int c = 0; c < n_ctx; c++) {
            bench_row *r = &rows[*n_rows];
            bench_tensors t;
            int rc = stage_inputs(ctx[c], b->common.dtype, &in, &t);
            if (rc == 0)
                rc = measure(ctx[c], b, b->lengths[l], &t, r);
            else
                rc = DA_EXIT_FAILURE;
            free_tensors(&t);
            if (rc != DA_EXIT_OK) {
                free_inputs(&in);
                return rc;
            }
            if (r->dense_sparsity != 0.0)
                fprintf(stderr, "dashattn: warning: the dense run skipped %.3g%% of the pairs\n",
                        100.0 * r->dense_sparsity);
            ++*n_rows;
            if (!b->common.json)
                print_row(r, b->threads_sweep ? &rows[*n_rows - 1 - c] : NULL);
        }
        free_inputs(&in);
    }
    return DA_EXIT_OK;
}

int da_cmd_bench(int argc, char **argv)
{
    bench_args b;
    if (parse_args(argc, argv, &b) != 0)
        return DA_EXIT_USAGE;
    dashattn_context *ctx[2] = {NULL, NULL};
    int n_ctx = 1;
    int rc = da_open_context(&b.common, b.common.threads, &ctx[0]);
    if (rc == DA_EXIT_OK && b.threads_sweep) {
        /* The many-thread context goes second so its rows follow the
         * 1-thread baseline; with one core the sweep has nothing to add. */
        dashattn_context *one = NULL;
        rc = da_open_context(&b.common, 1, &one);
        if (rc == DA_EXIT_OK && dashattn_context_num_threads(ctx[0]) > 1) {
            ctx[1] = ctx[0];
            ctx[0] = one;
            n_ctx = 2;
        } else {
            dashattn_context_destroy(one);
            if (rc == DA_EXIT_OK)
                fprintf(stderr, "dashattn: warning: only 1 thread available, nothing to sweep\n");
        }
    }
    bench_row *rows = NULL;
    if (rc == DA_EXIT_OK) {
        rows = calloc((size_t)(b.n_lengths * n_ctx), sizeof *rows);
        if (rows == NULL) {
            da_error("bench: out of memory");
            rc = DA_EXIT_FAILURE;
        }
    }
    if (rc == DA_EXIT_OK) {
        int n_rows = 0;
        if (!b.common.json)
            print_header(&b, ctx[n_ctx - 1]);
        rc = run_sweep(&b, ctx, n_ctx, rows, &n_rows);
        if (rc == DA_EXIT_OK && b.common.json)
            print_json(&b, ctx[n_ctx - 1], rows, n_rows);
        else if (rc == DA_EXIT_OK)
            print_footer(&b);
    }
    free(rows);
    dashattn_context_destroy(ctx[0]);
    dashattn_context_destroy(ctx[1]);
    return rc;
}
