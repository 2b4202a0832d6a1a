/* SPDX-License-Identifier: MIT */
/*
 * Every kind of bad input through the public API. For each case: the status
 * code, a message that names the offending argument, and outputs (filled with
 * a sentinel before the call) left untouched, since the API validates
 * everything before it writes. Each group starts with a valid call, so a
 * broken fixture cannot make the error cases pass for the wrong reason.
 */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dashattn.h>

#include "testutil.h"

#define SENTINEL 0xA5
#define BAD DASHATTN_ERR_INVALID_ARGUMENT

/* ---------------------------------------------------------------------- */
/* Message and sentinel checks                                            */
/* ---------------------------------------------------------------------- */

static int is_ident_char(char c)
{
    return isalnum((unsigned char)c) || c == '_';
}

/* word occurs in msg as a whole identifier ("k" matches "cache.k" but not "k_new"). */
static int has_word(const char *msg, const char *word, size_t len)
{
    for (const char *p = strstr(msg, word); p != NULL; p = strstr(p + 1, word)) {
        if (strncmp(p, word, len) != 0)
            continue;
        if ((p == msg || !is_ident_char(p[-1])) && !is_ident_char(p[len]))
            return 1;
    }
    return 0;
}

/* msg names one of the '|'-separated identifiers in names. */
static int names_any(const char *msg, const char *names)
{
    char word[64];
    while (*names != '\0') {
        size_t len = strcspn(names, "|");
        if (len > 0 && len < sizeof(word)) {
            memcpy(word, names, len);
            word[len] = '\0';
            if (has_word(msg, word, len))
                return 1;
        }
        names += len;
        if (*names == '|')
            names++;
    }
    return 0;
}

static void check_failure(const char *what, dashattn_status got, dashattn_status want,
                          const char *names)
{
    const char *msg = dashattn_last_error();
    TU_CHECK(got == want, "%s: status %d (%s), want %d (%s)", what, (int)got,
             dashattn_status_string(got), (int)want, dashattn_status_string(want));
    TU_CHECK(msg != NULL && msg[0] != '\0', "%s: last error is set", what);
    if (msg != NULL)
        TU_CHECK(names_any(msg, names), "%s: message names %s: '%s'", what, names, msg);
}

static void check_ok(const char *what, dashattn_status got)
{
    TU_CHECK(got == DASHATTN_OK, "%s: status %d, want OK (%s)", what, (int)got,
             dashattn_last_error());
    TU_CHECK(dashattn_last_error()[0] == '\0', "%s: last error is '' after success ('%s')", what,
             dashattn_last_error());
}

static void poison(void *p, size_t bytes)
{
    if (p != NULL)
        memset(p, SENTINEL, bytes);
}

static int untouched(const void *p, size_t bytes)
{
    const unsigned char *c = p;
    for (size_t i = 0; i < bytes; i++)
        if (c[i] != SENTINEL)
            return 0;
    return 1;
}

/* ---------------------------------------------------------------------- */
/* Status strings, dtypes, version                                        */
/* ---------------------------------------------------------------------- */

static void check_status_strings(void)
{
    const char *s[DASHATTN_ERR_INTERNAL + 1];
    for (int i = 0; i <= DASHATTN_ERR_INTERNAL; i++) {
        s[i] = dashattn_status_string((dashattn_status)i);
        TU_CHECK(s[i] != NULL && s[i][0] != '\0', "status_string(%d) is a non-empty string", i);
        if (s[i] == NULL)
            return;
        for (int j = 0; j < i; j++)
            TU_CHECK(strcmp(s[i], s[j]) != 0, "status_string(%d) == status_string(%d) ('%s')", i, j,
                     s[i]);
    }
    TU_CHECK(dashattn_status_string((dashattn_status)999) != NULL,
             "status_string of an unknown status is not NULL");

    TU_CHECK(dashattn_dtype_size(DASHATTN_F32) == 4, "f32 size");
    TU_CHECK(dashattn_dtype_size(DASHATTN_F16) == 2, "f16 size");
    TU_CHECK(dashattn_dtype_size(DASHATTN_BF16) == 2, "bf16 size");
    TU_CHECK(dashattn_dtype_size((dashattn_dtype)42) == 0, "unknown dtype size is 0");
    TU_CHECK(dashattn_dtype_name((dashattn_dtype)42) == NULL, "unknown dtype name is NULL");
    const char *names[] = {"f32", "f16", "bf16"};
    for (int i = 0; i < 3; i++) {
        const char *got = dashattn_dtype_name((dashattn_dtype)i);
        TU_CHECK(got != NULL && strcmp(got, names[i]) == 0, "dtype_name(%d) = '%s'", i,
                 got ? got : "(null)");
    }

    char want[32];
    snprintf(want, sizeof(want), "%d.%d.%d", DASHATTN_VERSION_MAJOR, DASHATTN_VERSION_MINOR,
             DASHATTN_VERSION_PATCH);
    TU_CHECK(strcmp(dashattn_version(), want) == 0, "library version '%s' matches header '%s'",
             dashattn_version(), want);
}

/* dtype conversion helper: bad dtypes and NULL buffers, destination untouched. */
static void check_convert_errors(void)
{
    float src[4] = {1.0f, -2.0f, 0.5f, 3.0f};
    float dst[4];
    uint16_t half[4];
    poison(dst, sizeof(dst));
    check_failure("convert to dtype 9",
                  dashattn_convert(dst, (dashattn_dtype)9, src, DASHATTN_F32, 4), BAD,
                  "dst_dtype|dtype");
    check_failure("convert from dtype 9",
                  dashattn_convert(dst, DASHATTN_F32, src, (dashattn_dtype)9, 4), BAD,
                  "src_dtype|dtype");
    check_failure("convert NULL src", dashattn_convert(dst, DASHATTN_F32, NULL, DASHATTN_F32, 4),
                  BAD, "src");
    TU_CHECK(untouched(dst, sizeof(dst)), "failed conversions leave dst untouched");
    check_failure("convert NULL dst", dashattn_convert(NULL, DASHATTN_F32, src, DASHATTN_F32, 4),
                  BAD, "dst");
    check_ok("convert f32 to f16", dashattn_convert(half, DASHATTN_F16, src, DASHATTN_F32, 4));
    check_ok("convert f16 to f32", dashattn_convert(dst, DASHATTN_F32, half, DASHATTN_F16, 4));
    TU_CHECK(memcmp(dst, src, sizeof(src)) == 0, "f16 round trip of exactly representable values");
}

/* ---------------------------------------------------------------------- */
/* Contexts and plans                                                     */
/* ---------------------------------------------------------------------- */

static dashattn_context *make_cpu_context(void)
{
    dashattn_context_options opt;
    dashattn_context *ctx = NULL;
    dashattn_context_options_init(&opt);
    opt.backend = "cpu";
    opt.num_threads = 1;
    check_failure("create with NULL context pointer", dashattn_context_create(&opt, NULL),
                  DASHATTN_ERR_INVALID_ARGUMENT, "context");
    dashattn_status st = dashattn_context_create(&opt, &ctx);
    check_ok("create cpu context", st);
    return st == DASHATTN_OK ? ctx : NULL;
}

/* Forward plan of the fixture: B 1, Hq 2, Hkv 1, N 8, D 4, S 4 (M = 2). */
enum { FB = 1, FHQ = 2, FHKV = 1, FN = 8, FD = 4, FS = 4, FM = 2 };

static void base_problem(dashattn_problem *p)
{
    dashattn_problem_init(p, FB, FHQ, FHKV, FN, FN, FD);
    p->block_size = FS;
}

typedef enum { F_I64, F_I32, F_DBL, F_ENUM } field_kind;

typedef struct plan_case {
    const char *what;
    const char *names;
    size_t offset;
    field_kind kind;
    double value;
    dashattn_status want;
} plan_case;

#define PC(what, names, field, kind, value, want)                                                  \
    {                                                                                              \
        what, names, offsetof(dashattn_problem, field), kind, value, want                          \
    }

static void set_field(dashattn_problem *p, const plan_case *c)
{
    char *base = (char *)p + c->offset;
    switch (c->kind) {
    case F_I64: {
        int64_t v = (int64_t)c->value;
        memcpy(base, &v, sizeof(v));
        break;
    }
    case F_I32: {
        int32_t v = (int32_t)c->value;
        memcpy(base, &v, sizeof(v));
        break;
    }
    case F_DBL:
        memcpy(base, &c->value, sizeof(c->value));
        break;
    case F_ENUM: {
        /* The enum fields (dtype, selection, group_mode) are int-sized. */
        int v = (int)c->value;
        memcpy(base, &v, sizeof(v));
        break;
    }
    }
}

static void try_plan(dashattn_context *ctx, const dashattn_problem *p, const char *what,
                     dashattn_status want, const char *names)
{
    dashattn_plan *sentinel = (dashattn_plan *)&sentinel;
    dashattn_plan *plan = sentinel;
    dashattn_status st = dashattn_plan_create(ctx, p, &plan);
    if (want == DASHATTN_OK) {
        check_ok(what, st);
    } else {
        check_failure(what, st, want, names);
        TU_CHECK(plan == NULL || plan == sentinel, "%s: no plan returned", what);
    }
    if (st == DASHATTN_OK && plan != sentinel)
        dashattn_plan_destroy(plan);
}

static void check_plan_errors(dashattn_context *ctx)
{
    static const plan_case cases[] = {
        PC("batch 0", "batch", batch, F_I64, 0, BAD),
        PC("batch -1", "batch", batch, F_I64, -1, BAD),
        PC("heads_q 0", "heads_q", heads_q, F_I64, 0, BAD),
        PC("heads_kv 0", "heads_kv", heads_kv, F_I64, 0, BAD),
        PC("len_q 0", "len_q", len_q, F_I64, 0, BAD),
        PC("len_k 0", "len_k", len_k, F_I64, 0, BAD),
        PC("causal len_q 9 > len_k 8", "len_q|len_k", len_q, F_I64, 9, BAD),
        PC("head_dim 0", "head_dim", head_dim, F_I64, 0, BAD),
        PC("head_dim 257", "head_dim", head_dim, F_I64, 257, BAD),
        PC("head_dim 256", "", head_dim, F_I64, 256, DASHATTN_OK),
        PC("block_size 0", "block_size", block_size, F_I32, 0, BAD),
        PC("block_size -4", "block_size", block_size, F_I32, -4, BAD),
        PC("block_size 1", "", block_size, F_I32, 1, DASHATTN_OK),
        PC("n_sink -1", "n_sink", n_sink, F_I32, -1, BAD),
        PC("n_sink 0", "", n_sink, F_I32, 0, DASHATTN_OK),
        PC("n_local -1", "n_local", n_local, F_I32, -1, BAD),
        PC("causal n_local 0", "n_local", n_local, F_I32, 0, BAD),
        PC("alpha NaN", "alpha", alpha, F_DBL, NAN, BAD),
        PC("alpha 0.5", "alpha", alpha, F_DBL, 0.5, BAD),
        PC("alpha 2.5", "alpha", alpha, F_DBL, 2.5, BAD),
        PC("alpha inf", "alpha", alpha, F_DBL, INFINITY, BAD),
        PC("alpha 1", "", alpha, F_DBL, 1.0, DASHATTN_OK),
        PC("alpha 2", "", alpha, F_DBL, 2.0, DASHATTN_OK),
        PC("alpha 1.25", "", alpha, F_DBL, 1.25, DASHATTN_OK),
        PC("selection 7", "selection", selection, F_ENUM, 7, BAD),
        PC("selection -1", "selection", selection, F_ENUM, -1, BAD),
        PC("topk mode with topk 0", "topk", selection, F_ENUM, DASHATTN_SELECT_TOPK, BAD),
        PC("group_mode 5", "group_mode", group_mode, F_ENUM, 5, BAD),
        PC("scale -1", "scale", scale, F_DBL, -1.0, BAD),
        PC("scale inf", "scale", scale, F_DBL, INFINITY, BAD),
        PC("scale NaN", "scale", scale, F_DBL, NAN, BAD),
        PC("scale 0.5", "", scale, F_DBL, 0.5, DASHATTN_OK),
        PC("stage1_scale -1", "stage1_scale", stage1_scale, F_DBL, -1.0, BAD),
        PC("stage1_scale NaN", "stage1_scale", stage1_scale, F_DBL, NAN, BAD),
        PC("dtype 9", "dtype", dtype, F_ENUM, 9, BAD),
        PC("group_mode 3", "group_mode", group_mode, F_ENUM, 3, BAD),
        PC("group_mode per_head", "", group_mode, F_ENUM, DASHATTN_GROUP_PER_HEAD, DASHATTN_OK),
        PC("group_mode shared", "", group_mode, F_ENUM, DASHATTN_GROUP_SHARED, DASHATTN_OK),
        PC("prior 2", "prior", prior, F_ENUM, 2, BAD),
        PC("prior flat", "", prior, F_ENUM, DASHATTN_PRIOR_FLAT, DASHATTN_OK),
        PC("threshold_schedule 2", "threshold_schedule", threshold_schedule, F_ENUM, 2, BAD),
        PC("threshold_schedule halley", "", threshold_schedule, F_ENUM, DASHATTN_SCHEDULE_HALLEY,
           DASHATTN_OK),
        /* Fields an option does not use are not checked. */
        PC("log prior, prior_sigma 0", "", prior_sigma, F_DBL, 0.0, DASHATTN_OK),
        PC("exact schedule, halley_steps 0", "", halley_steps, F_I32, 0, DASHATTN_OK),
    };
    dashattn_problem p;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        base_problem(&p);
        set_field(&p, &cases[i]);
        try_plan(ctx, &p, cases[i].what, cases[i].want, cases[i].names);
    }

    /* Cases that need two fields, or no problem at all. */
    static const struct {
        const char *what;
        double sigma;
        int32_t steps;
        double alpha;
        dashattn_status want;
        const char *names;
    } released[] = {
        {"flat prior, sigma 0", 0.0, 3, 1.5, BAD, "prior_sigma"},
        {"flat prior, sigma -1", -1.0, 3, 1.5, BAD, "prior_sigma"},
        {"flat prior, sigma inf", INFINITY, 3, 1.5, BAD, "prior_sigma"},
        {"flat prior, sigma NaN", NAN, 3, 1.5, BAD, "prior_sigma"},
        {"flat prior, halley_steps 0", 1.0, 0, 1.5, BAD, "halley_steps"},
        {"flat prior, halley_steps 65", 1.0, 65, 1.5, BAD, "halley_steps"},
        {"halley with alpha 2", 1.0, 3, 2.0, BAD, "alpha"},
        {"halley with alpha 1.25", 1.0, 3, 1.25, BAD, "alpha"},
        {"flat prior, halley_steps 64", 1e6, 64, 1.5, DASHATTN_OK, ""},
    };
    for (size_t i = 0; i < sizeof released / sizeof released[0]; i++) {
        base_problem(&p);
        p.prior = DASHATTN_PRIOR_FLAT;
        p.prior_sigma = released[i].sigma;
        p.threshold_schedule = DASHATTN_SCHEDULE_HALLEY;
        p.halley_steps = released[i].steps;
        p.alpha = released[i].alpha;
        try_plan(ctx, &p, released[i].what, released[i].want, released[i].names);
    }
    base_problem(&p);
    p.threshold_schedule = DASHATTN_SCHEDULE_HALLEY;
    p.selection = DASHATTN_SELECT_TOPK;
    p.topk = 1;
    try_plan(ctx, &p, "halley with topk selection", BAD, "topk");
    base_problem(&p);
    p.selection = DASHATTN_SELECT_TOPK;
    p.topk = 1;
    try_plan(ctx, &p, "topk mode with topk 1", DASHATTN_OK, "");
    base_problem(&p);
    p.causal = 0;
    p.n_local = 0;
    try_plan(ctx, &p, "non-causal n_local 0", DASHATTN_OK, "");
    p.len_q = 9;
    try_plan(ctx, &p, "non-causal len_q 9 > len_k 8", DASHATTN_OK, "");
    base_problem(&p);
    p.heads_q = 4;
    p.heads_kv = 2;
    try_plan(ctx, &p, "heads_q 4 heads_kv 2", DASHATTN_OK, "");
    p.heads_q = 3;
    try_plan(ctx, &p, "heads_q 3 not a multiple of heads_kv 2", BAD, "heads_q|heads_kv");

    base_problem(&p);
    try_plan(NULL, &p, "plan with NULL context", BAD, "context");
    try_plan(ctx, NULL, "plan with NULL problem", BAD, "problem");
    check_failure("plan with NULL plan pointer", dashattn_plan_create(ctx, &p, NULL), BAD, "plan");
}

/* ---------------------------------------------------------------------- */
/* Forward                                                                */
/* ---------------------------------------------------------------------- */

typedef struct fwd_fixture {
    dashattn_context *ctx;
    dashattn_plan *plan;
    float *q, *k, *v, *out;
    float lse[FB * FHQ * FN];
    int32_t index[FB * FHQ * FN * FM];
    float weight[FB * FHQ * FN * FM];
    int32_t count[FB * FHQ * FN];
    dashattn_forward_stats stats;
    dashattn_tensor tq, tk, tv, tout;
    dashattn_selection sel;
    unsigned char *ws;
    size_t ws_size;
} fwd_fixture;

static const size_t q_elems = (size_t)FB * FHQ * FN * FD;
static const size_t kv_elems = (size_t)FB * FHKV * FN * FD;

static void poison_fwd_outputs(fwd_fixture *f)
{
    poison(f->out, q_elems * sizeof(float));
    poison(f->lse, sizeof(f->lse));
    poison(f->index, sizeof(f->index));
    poison(f->weight, sizeof(f->weight));
    poison(f->count, sizeof(f->count));
    poison(&f->stats, sizeof(f->stats));
}

static int fwd_outputs_untouched(const fwd_fixture *f)
{
    return untouched(f->out, q_elems * sizeof(float)) && untouched(f->lse, sizeof(f->lse)) &&
           untouched(f->index, sizeof(f->index)) && untouched(f->weight, sizeof(f->weight)) &&
           untouched(f->count, sizeof(f->count)) && untouched(&f->stats, sizeof(f->stats));
}

static dashattn_status run_fwd(fwd_fixture *f, const dashattn_plan *plan, const dashattn_tensor *q,
                               const dashattn_tensor *k, const dashattn_tensor *v,
                               const dashattn_tensor *out, const dashattn_selection *sel, void *ws,
                               size_t ws_size)
{
    poison_fwd_outputs(f);
    return dashattn_forward(f->ctx, plan, q, k, v, NULL, out, f->lse, sel, &f->stats, ws, ws_size,
                            NULL);
}

static void fwd_case(fwd_fixture *f, const char *what, dashattn_status st, dashattn_status want,
                     const char *names)
{
    check_failure(what, st, want, names);
    TU_CHECK(fwd_outputs_untouched(f), "%s: outputs untouched", what);
}

static void check_forward_errors(fwd_fixture *f)
{
    dashattn_status st;
    dashattn_tensor t;
    dashattn_selection sel;

    /* A valid call first, then one with a workspace of exactly the plan's size. */
    st = run_fwd(f, f->plan, &f->tq, &f->tk, &f->tv, &f->tout, &f->sel, NULL, 0);
    check_ok("valid forward", st);
    TU_CHECK(!untouched(f->out, q_elems * sizeof(float)), "valid forward writes out");
    st = run_fwd(f, f->plan, &f->tq, &f->tk, &f->tv, &f->tout, &f->sel, f->ws, f->ws_size);
    check_ok("valid forward with workspace", st);

    /* A plan belongs to the context it was made on. */
    dashattn_context_options opt;
    dashattn_context *other = NULL;
    dashattn_context_options_init(&opt);
    opt.backend = "cpu";
    check_ok("second cpu context", dashattn_context_create(&opt, &other));
    if (other != NULL) {
        poison_fwd_outputs(f);
        st = dashattn_forward(other, f->plan, &f->tq, &f->tk, &f->tv, NULL, &f->tout, f->lse,
                              &f->sel, &f->stats, NULL, 0, NULL);
        fwd_case(f, "forward with another context's plan", st, BAD, "context|plan");
        dashattn_context_destroy(other);
    }

    /* NULL tensors and data. */
    st = dashattn_forward(NULL, f->plan, &f->tq, &f->tk, &f->tv, NULL, &f->tout, NULL, NULL, NULL,
                          NULL, 0, NULL);
    check_failure("forward NULL context", st, BAD, "context");
    fwd_case(f, "forward NULL plan",
             run_fwd(f, NULL, &f->tq, &f->tk, &f->tv, &f->tout, NULL, NULL, 0), BAD, "plan");
    fwd_case(f, "forward NULL q",
             run_fwd(f, f->plan, NULL, &f->tk, &f->tv, &f->tout, NULL, NULL, 0), BAD, "q");
    fwd_case(f, "forward NULL k",
             run_fwd(f, f->plan, &f->tq, NULL, &f->tv, &f->tout, NULL, NULL, 0), BAD, "k");
    fwd_case(f, "forward NULL v",
             run_fwd(f, f->plan, &f->tq, &f->tk, NULL, &f->tout, NULL, NULL, 0), BAD, "v");
    fwd_case(f, "forward NULL out",
             run_fwd(f, f->plan, &f->tq, &f->tk, &f->tv, NULL, NULL, NULL, 0), BAD, "out");
    t = f->tq;
    t.data = NULL;
    fwd_case(f, "forward q.data NULL",
             run_fwd(f, f->plan, &t, &f->tk, &f->tv, &f->tout, NULL, NULL, 0), BAD, "q");
    t = f->tout;
    t.data = NULL;
    fwd_case(f, "forward out.data NULL",
             run_fwd(f, f->plan, &f->tq, &f->tk, &f->tv, &t, NULL, NULL, 0), BAD, "out");

    /* dtype differs from the plan. */
    t = f->tk;
    t.dtype = DASHATTN_F16;
    fwd_case(f, "forward k dtype f16",
             run_fwd(f, f->plan, &f->tq, &t, &f->tv, &f->tout, NULL, NULL, 0), BAD, "k");
    t = f->tout;
    t.dtype = DASHATTN_BF16;
    fwd_case(f, "forward out dtype bf16",
             run_fwd(f, f->plan, &f->tq, &f->tk, &f->tv, &t, NULL, NULL, 0), BAD, "out");

    /* Shapes differ from the plan. */
    t = f->tq;
    t.shape[2] = FN - 1;
    fwd_case(f, "forward q len 7", run_fwd(f, f->plan, &t, &f->tk, &f->tv, &f->tout, NULL, NULL, 0),
             DASHATTN_ERR_SHAPE_MISMATCH, "q");
    t = dashattn_tensor_bhsd(f->k, DASHATTN_F32, FB, 2, FN / 2, FD);
    fwd_case(f, "forward k heads 2",
             run_fwd(f, f->plan, &f->tq, &t, &f->tv, &f->tout, NULL, NULL, 0),
             DASHATTN_ERR_SHAPE_MISMATCH, "k");
    t = f->tv;
    t.shape[3] = FD + 1;
    fwd_case(f, "forward v head_dim 5",
             run_fwd(f, f->plan, &f->tq, &f->tk, &t, &f->tout, NULL, NULL, 0),
             DASHATTN_ERR_SHAPE_MISMATCH, "v");
    t = f->tout;
    t.shape[2] = FN - 1;
    fwd_case(f, "forward out len 7", run_fwd(f, f->plan, &f->tq, &f->tk, &f->tv, &t, NULL, NULL, 0),
             DASHATTN_ERR_SHAPE_MISMATCH, "out");

    /* Strides: negative anywhere, zero on an output dimension of size > 1. */
    t = f->tq;
    t.strides[2] = -t.strides[2];
    fwd_case(f, "forward q negative stride",
             run_fwd(f, f->plan, &t, &f->tk, &f->tv, &f->tout, NULL, NULL, 0), BAD, "q");
    t = f->tout;
    t.strides[1] = 0;
    fwd_case(f, "forward out zero head stride",
             run_fwd(f, f->plan, &f->tq, &f->tk, &f->tv, &t, NULL, NULL, 0), BAD, "out");
    /* A zero stride on an input (broadcast) or on a size-1 output dim is fine. */
    t = f->tk;
    t.strides[2] = 0;
    check_ok("forward k broadcast along seq",
             run_fwd(f, f->plan, &f->tq, &t, &f->tv, &f->tout, NULL, NULL, 0));
    t = f->tout;
    t.strides[0] = 0;
    check_ok("forward out zero stride on batch of 1",
             run_fwd(f, f->plan, &f->tq, &f->tk, &f->tv, &t, NULL, NULL, 0));

    /* Selection too narrow for the plan's blocks. */
    sel = f->sel;
    sel.max_blocks = FM - 1;
    fwd_case(f, "forward selection max_blocks < M",
             run_fwd(f, f->plan, &f->tq, &f->tk, &f->tv, &f->tout, &sel, NULL, 0), BAD,
             "max_blocks|selection");

    /* Workspace smaller than the plan's. */
    const size_t need = dashattn_plan_operation_workspace_size(f->plan, DASHATTN_OP_FORWARD);
    TU_CHECK(need <= f->ws_size, "forward workspace %zu <= plan workspace %zu", need, f->ws_size);
    if (need > 0) {
        fwd_case(f, "forward workspace too small",
                 run_fwd(f, f->plan, &f->tq, &f->tk, &f->tv, &f->tout, NULL, f->ws, need - 1),
                 DASHATTN_ERR_WORKSPACE_TOO_SMALL, "workspace|workspace_size");
    }

    /* After a failure, a successful call clears the message. */
    check_ok("valid forward after failures",
             run_fwd(f, f->plan, &f->tq, &f->tk, &f->tv, &f->tout, NULL, NULL, 0));
}

/* ---------------------------------------------------------------------- */
/* Backward                                                               */
/* ---------------------------------------------------------------------- */

typedef struct bwd_outputs {
    float *dq, *dk, *dv;
    dashattn_tensor tdq, tdk, tdv;
} bwd_outputs;

static void poison_bwd(bwd_outputs *g)
{
    poison(g->dq, q_elems * sizeof(float));
    poison(g->dk, kv_elems * sizeof(float));
    poison(g->dv, kv_elems * sizeof(float));
}

static int bwd_untouched(const bwd_outputs *g)
{
    return untouched(g->dq, q_elems * sizeof(float)) &&
           untouched(g->dk, kv_elems * sizeof(float)) && untouched(g->dv, kv_elems * sizeof(float));
}

static dashattn_status run_bwd(fwd_fixture *f, bwd_outputs *g, const float *lse,
                               const dashattn_tensor *dout, const dashattn_tensor *dq,
                               const dashattn_tensor *dk, const dashattn_tensor *dv, void *ws,
                               size_t ws_size)
{
    poison_bwd(g);
    return dashattn_backward(f->ctx, f->plan, &f->tq, &f->tk, &f->tv, NULL, &f->tout, lse, dout, dq,
                             dk, dv, NULL, ws, ws_size, NULL);
}

static void check_backward_errors(fwd_fixture *f)
{
    bwd_outputs g;
    float *dout = tu_random_floats(21, q_elems, 1.0);
    g.dq = tu_xcalloc(q_elems, sizeof(float));
    g.dk = tu_xcalloc(kv_elems, sizeof(float));
    g.dv = tu_xcalloc(kv_elems, sizeof(float));
    g.tdq = dashattn_tensor_bhsd(g.dq, DASHATTN_F32, FB, FHQ, FN, FD);
    g.tdk = dashattn_tensor_bhsd(g.dk, DASHATTN_F32, FB, FHKV, FN, FD);
    g.tdv = dashattn_tensor_bhsd(g.dv, DASHATTN_F32, FB, FHKV, FN, FD);
    dashattn_tensor tdout = dashattn_tensor_bhsd(dout, DASHATTN_F32, FB, FHQ, FN, FD);
    dashattn_tensor t;
    dashattn_status st;

    /* out and lse of a real forward. */
    st = dashattn_forward(f->ctx, f->plan, &f->tq, &f->tk, &f->tv, NULL, &f->tout, f->lse, NULL,
                          NULL, NULL, 0, NULL);
    check_ok("forward for backward", st);
    st = run_bwd(f, &g, f->lse, &tdout, &g.tdq, &g.tdk, &g.tdv, NULL, 0);
    check_ok("valid backward", st);
    TU_CHECK(!untouched(g.dq, q_elems * sizeof(float)), "valid backward writes dq");

#define BWD_CASE(what, call, want, names)                                                          \
    do {                                                                                           \
        st = (call);                                                                               \
        check_failure(what, st, want, names);                                                      \
        TU_CHECK(bwd_untouched(&g), "%s: gradients untouched", what);                              \
    } while (0)

    BWD_CASE("backward NULL lse", run_bwd(f, &g, NULL, &tdout, &g.tdq, &g.tdk, &g.tdv, NULL, 0),
             BAD, "lse");
    BWD_CASE("backward NULL dout", run_bwd(f, &g, f->lse, NULL, &g.tdq, &g.tdk, &g.tdv, NULL, 0),
             BAD, "dout");
    BWD_CASE("backward NULL dq", run_bwd(f, &g, f->lse, &tdout, NULL, &g.tdk, &g.tdv, NULL, 0), BAD,
             "dq");
    t = g.tdv;
    t.data = NULL;
    BWD_CASE("backward dv.data NULL", run_bwd(f, &g, f->lse, &tdout, &g.tdq, &g.tdk, &t, NULL, 0),
             BAD, "dv");
    t = tdout;
    t.shape[2] = FN - 1;
    BWD_CASE("backward dout len 7", run_bwd(f, &g, f->lse, &t, &g.tdq, &g.tdk, &g.tdv, NULL, 0),
             DASHATTN_ERR_SHAPE_MISMATCH, "dout");
    t = dashattn_tensor_bhsd(g.dq, DASHATTN_F32, FB, FHQ, FN, FD);
    t.dtype = DASHATTN_F16;
    BWD_CASE("backward dq dtype f16", run_bwd(f, &g, f->lse, &tdout, &t, &g.tdk, &g.tdv, NULL, 0),
             BAD, "dq");
    t = dashattn_tensor_bhsd(g.dk, DASHATTN_F32, FB, FHKV, FN / 2, FD * 2);
    BWD_CASE("backward dk shape", run_bwd(f, &g, f->lse, &tdout, &g.tdq, &t, &g.tdv, NULL, 0),
             DASHATTN_ERR_SHAPE_MISMATCH, "dk");
    t = g.tdk;
    t.strides[2] = 0;
    BWD_CASE("backward dk zero seq stride",
             run_bwd(f, &g, f->lse, &tdout, &g.tdq, &t, &g.tdv, NULL, 0), BAD, "dk");
    t = g.tdq;
    t.strides[3] = -1;
    BWD_CASE("backward dq negative stride",
             run_bwd(f, &g, f->lse, &tdout, &t, &g.tdk, &g.tdv, NULL, 0), BAD, "dq");
    const size_t need = dashattn_plan_operation_workspace_size(f->plan, DASHATTN_OP_BACKWARD);
    TU_CHECK(need <= f->ws_size, "backward workspace %zu <= plan workspace %zu", need, f->ws_size);
    if (need > 0)
        BWD_CASE("backward workspace too small",
                 run_bwd(f, &g, f->lse, &tdout, &g.tdq, &g.tdk, &g.tdv, f->ws, need - 1),
                 DASHATTN_ERR_WORKSPACE_TOO_SMALL, "workspace|workspace_size");
#undef BWD_CASE

    free(dout);
    free(g.dq);
    free(g.dk);
    free(g.dv);
}

/* ---------------------------------------------------------------------- */
/* Decode and cache append                                                */
/* ---------------------------------------------------------------------- */

/* Decode plan: B 2, Hq 2, Hkv 1, capacity 16, D 4, S 4; paged caches use 6 pages. */
enum { DB = 2, DHQ = 2, DHKV = 1, CAP = 16, DS = 4, DBLK = CAP / DS, PAGES = 6, TNEW = 2 };
/* Buffers sized for the larger layout (contiguous: DB * CAP tokens; paged: PAGES * DS). */
enum { KV_MAX = DB * DHKV * CAP * FD, BK_MAX = DB * DHKV * DBLK * FD };

typedef struct cache_state {
    float k[KV_MAX], v[KV_MAX], bk[BK_MAX];
    int32_t seq_lens[DB];
} cache_state;

typedef struct dec_fixture {
    dashattn_context *ctx;
    dashattn_plan *plan;
    cache_state s, snapshot;
    int32_t table[DB * DBLK];
    dashattn_kv_cache cache;
    float q[DB * DHQ * FD], out[DB * DHQ * FD], lse[DB * DHQ];
    float knew[DB * DHKV * TNEW * FD], vnew[DB * DHKV * TNEW * FD];
    dashattn_tensor tq, tout, tknew, tvnew;
    unsigned char *ws;
    size_t ws_size;
} dec_fixture;

static void fill_cache_data(dec_fixture *f)
{
    float *r = tu_random_floats(31, 2 * KV_MAX + BK_MAX, 1.0);
    memcpy(f->s.k, r, sizeof(f->s.k));
    memcpy(f->s.v, r + KV_MAX, sizeof(f->s.v));
    memcpy(f->s.bk, r + 2 * KV_MAX, sizeof(f->s.bk));
    free(r);
}

static void load_contiguous(dec_fixture *f, int32_t len0, int32_t len1)
{
    fill_cache_data(f);
    f->s.seq_lens[0] = len0;
    f->s.seq_lens[1] = len1;
    f->cache.layout = DASHATTN_CACHE_CONTIGUOUS;
    f->cache.k = dashattn_tensor_bhsd(f->s.k, DASHATTN_F32, DB, DHKV, CAP, FD);
    f->cache.v = dashattn_tensor_bhsd(f->s.v, DASHATTN_F32, DB, DHKV, CAP, FD);
    f->cache.block_keys = dashattn_tensor_bhsd(f->s.bk, DASHATTN_F32, DB, DHKV, DBLK, FD);
    f->cache.seq_lens = f->s.seq_lens;
    f->cache.block_table = NULL;
    f->cache.table_stride = 0;
}

static void load_paged(dec_fixture *f, int32_t len0, int32_t len1, const int32_t table[DB * DBLK])
{
    fill_cache_data(f);
    f->s.seq_lens[0] = len0;
    f->s.seq_lens[1] = len1;
    memcpy(f->table, table, sizeof(f->table));
    f->cache.layout = DASHATTN_CACHE_PAGED;
    f->cache.k = dashattn_tensor_bhsd(f->s.k, DASHATTN_F32, PAGES, DHKV, DS, FD);
    f->cache.v = dashattn_tensor_bhsd(f->s.v, DASHATTN_F32, PAGES, DHKV, DS, FD);
    f->cache.block_keys = dashattn_tensor_bhsd(f->s.bk, DASHATTN_F32, PAGES, DHKV, 1, FD);
    f->cache.seq_lens = f->s.seq_lens;
    f->cache.block_table = f->table;
    f->cache.table_stride = DBLK;
}

static dashattn_status run_decode(dec_fixture *f, const dashattn_plan *plan,
                                  const dashattn_tensor *q, const dashattn_kv_cache *cache,
                                  const dashattn_tensor *out, void *ws, size_t ws_size)
{
    poison(f->out, sizeof(f->out));
    poison(f->lse, sizeof(f->lse));
    f->snapshot = f->s;
    return dashattn_decode(f->ctx, plan, q, cache, out, f->lse, ws, ws_size, NULL);
}

static dashattn_status run_append(dec_fixture *f, const dashattn_plan *plan,
                                  const dashattn_kv_cache *cache, const dashattn_tensor *knew,
                                  const dashattn_tensor *vnew)
{
    poison(f->out, sizeof(f->out));
    poison(f->lse, sizeof(f->lse));
    f->snapshot = f->s;
    return dashattn_cache_append(f->ctx, plan, cache, knew, vnew, NULL, NULL);
}

static void dec_case(dec_fixture *f, const char *what, dashattn_status st, dashattn_status want,
                     const char *names)
{
    check_failure(what, st, want, names);
    TU_CHECK(untouched(f->out, sizeof(f->out)) && untouched(f->lse, sizeof(f->lse)),
             "%s: out and lse untouched", what);
    TU_CHECK(memcmp(&f->snapshot, &f->s, sizeof(f->s)) == 0, "%s: cache unchanged", what);
}

static void check_decode_errors(dec_fixture *f, const dashattn_plan *noncausal)
{
    dashattn_kv_cache c;
    dashattn_tensor t;
    static const int32_t good_table[DB * DBLK] = {0, 1, 2, 3, 4, 5, -1, -1};

    load_contiguous(f, 5, 3);
    check_ok("valid contiguous decode",
             run_decode(f, f->plan, &f->tq, &f->cache, &f->tout, NULL, 0));
    TU_CHECK(!untouched(f->out, sizeof(f->out)), "valid decode writes out");
    if (f->ws_size > 0)
        check_ok("valid decode with workspace",
                 run_decode(f, f->plan, &f->tq, &f->cache, &f->tout, f->ws, f->ws_size));
    load_paged(f, 8, 2, good_table);
    check_ok("valid paged decode", run_decode(f, f->plan, &f->tq, &f->cache, &f->tout, NULL, 0));

    load_contiguous(f, 5, 3);
    dec_case(f, "decode with non-causal plan",
             run_decode(f, noncausal, &f->tq, &f->cache, &f->tout, NULL, 0), BAD, "causal|plan");
    dec_case(f, "decode NULL cache", run_decode(f, f->plan, &f->tq, NULL, &f->tout, NULL, 0), BAD,
             "cache");
    dec_case(f, "decode NULL q", run_decode(f, f->plan, NULL, &f->cache, &f->tout, NULL, 0), BAD,
             "q");
    dec_case(f, "decode NULL out", run_decode(f, f->plan, &f->tq, &f->cache, NULL, NULL, 0), BAD,
             "out");
    c = f->cache;
    c.seq_lens = NULL;
    dec_case(f, "decode NULL seq_lens", run_decode(f, f->plan, &f->tq, &c, &f->tout, NULL, 0), BAD,
             "seq_lens");
    f->s.seq_lens[1] = 0;
    dec_case(f, "decode seq_lens 0", run_decode(f, f->plan, &f->tq, &f->cache, &f->tout, NULL, 0),
             BAD, "seq_lens");
    f->s.seq_lens[1] = 3;
    f->s.seq_lens[0] = CAP + 1;
    dec_case(f, "decode seq_lens > capacity",
             run_decode(f, f->plan, &f->tq, &f->cache, &f->tout, NULL, 0), BAD, "seq_lens");
    f->s.seq_lens[0] = 5;

    t = f->tq;
    t.shape[1] = 1;
    dec_case(f, "decode q heads 1", run_decode(f, f->plan, &t, &f->cache, &f->tout, NULL, 0),
             DASHATTN_ERR_SHAPE_MISMATCH, "q");
    t = f->tout;
    t.strides[1] = 0;
    dec_case(f, "decode out zero head stride",
             run_decode(f, f->plan, &f->tq, &f->cache, &t, NULL, 0), BAD, "out");
    c = f->cache;
    c.k.shape[2] = CAP - 1;
    dec_case(f, "decode cache k capacity 15", run_decode(f, f->plan, &f->tq, &c, &f->tout, NULL, 0),
             DASHATTN_ERR_SHAPE_MISMATCH, "k|cache");
    c = f->cache;
    c.v.data = NULL;
    dec_case(f, "decode cache v.data NULL", run_decode(f, f->plan, &f->tq, &c, &f->tout, NULL, 0),
             BAD, "v|cache");
    c = f->cache;
    c.block_keys.shape[2] = DBLK - 1;
    dec_case(f, "decode block_keys 3 blocks", run_decode(f, f->plan, &f->tq, &c, &f->tout, NULL, 0),
             DASHATTN_ERR_SHAPE_MISMATCH, "block_keys");
    c = f->cache;
    c.layout = (dashattn_cache_layout)7;
    dec_case(f, "decode layout 7", run_decode(f, f->plan, &f->tq, &c, &f->tout, NULL, 0), BAD,
             "layout");
    const size_t need = dashattn_plan_operation_workspace_size(f->plan, DASHATTN_OP_DECODE);
    TU_CHECK(need <= f->ws_size, "decode workspace %zu <= plan workspace %zu", need, f->ws_size);
    if (need > 0)
        dec_case(f, "decode workspace too small",
                 run_decode(f, f->plan, &f->tq, &f->cache, &f->tout, f->ws, need - 1),
                 DASHATTN_ERR_WORKSPACE_TOO_SMALL, "workspace|workspace_size");

    load_paged(f, 8, 2, good_table);
    c = f->cache;
    c.block_table = NULL;
    dec_case(f, "decode paged NULL block_table",
             run_decode(f, f->plan, &f->tq, &c, &f->tout, NULL, 0), BAD, "block_table");
    c = f->cache;
    c.table_stride = DBLK - 1;
    dec_case(f, "decode paged table_stride 3",
             run_decode(f, f->plan, &f->tq, &c, &f->tout, NULL, 0), BAD, "table_stride");
    c = f->cache;
    c.k = dashattn_tensor_bhsd(f->s.k, DASHATTN_F32, DB, DHKV, CAP, FD);
    dec_case(f, "decode paged k in contiguous shape",
             run_decode(f, f->plan, &f->tq, &c, &f->tout, NULL, 0), DASHATTN_ERR_SHAPE_MISMATCH,
             "k|cache");
}

static void check_append_errors(dec_fixture *f, const dashattn_plan *noncausal)
{
    dashattn_kv_cache c;
    dashattn_tensor t;
    static const int32_t good_table[DB * DBLK] = {0, 1, 2, 3, 4, 5, -1, -1};
    static const int32_t unmapped[DB * DBLK] = {0, 1, -1, -1, 4, 5, -1, -1};
    static const int32_t past_pool[DB * DBLK] = {0, 1, PAGES + 3, -1, 4, 5, -1, -1};

    load_contiguous(f, 5, 3);
    check_ok("valid contiguous append", run_append(f, f->plan, &f->cache, &f->tknew, &f->tvnew));
    TU_CHECK(f->s.seq_lens[0] == 5 + TNEW && f->s.seq_lens[1] == 3 + TNEW,
             "valid append advances seq_lens (%d, %d)", (int)f->s.seq_lens[0],
             (int)f->s.seq_lens[1]);
    load_paged(f, 7, 2, good_table);
    check_ok("valid paged append", run_append(f, f->plan, &f->cache, &f->tknew, &f->tvnew));

    load_contiguous(f, CAP - 1, 3);
    dec_case(f, "append past capacity", run_append(f, f->plan, &f->cache, &f->tknew, &f->tvnew),
             DASHATTN_ERR_CACHE_FULL, "capacity|seq_lens|cache");
    load_paged(f, 7, 2, unmapped);
    dec_case(f, "append onto unmapped page",
             run_append(f, f->plan, &f->cache, &f->tknew, &f->tvnew), DASHATTN_ERR_CACHE_FULL,
             "block_table|page|cache");
    load_paged(f, 7, 2, past_pool);
    dec_case(f, "append onto page >= P", run_append(f, f->plan, &f->cache, &f->tknew, &f->tvnew),
             DASHATTN_ERR_CACHE_FULL, "block_table|page|cache");

    load_contiguous(f, 5, 3);
    f->s.seq_lens[0] = -1;
    dec_case(f, "append seq_lens -1", run_append(f, f->plan, &f->cache, &f->tknew, &f->tvnew), BAD,
             "seq_lens");
    f->s.seq_lens[0] = CAP + 1;
    dec_case(f, "append seq_lens > capacity",
             run_append(f, f->plan, &f->cache, &f->tknew, &f->tvnew), BAD, "seq_lens");
    f->s.seq_lens[0] = 5;
    dec_case(f, "append with non-causal plan",
             run_append(f, noncausal, &f->cache, &f->tknew, &f->tvnew), BAD, "causal|plan");
    dec_case(f, "append NULL cache", run_append(f, f->plan, NULL, &f->tknew, &f->tvnew), BAD,
             "cache");
    dec_case(f, "append NULL k_new", run_append(f, f->plan, &f->cache, NULL, &f->tvnew), BAD,
             "k_new");
    c = f->cache;
    c.seq_lens = NULL;
    dec_case(f, "append NULL seq_lens", run_append(f, f->plan, &c, &f->tknew, &f->tvnew), BAD,
             "seq_lens");
    t = f->tvnew;
    t.shape[1] = 2;
    dec_case(f, "append v_new heads 2", run_append(f, f->plan, &f->cache, &f->tknew, &t),
             DASHATTN_ERR_SHAPE_MISMATCH, "v_new");
    t = f->tknew;
    t.shape[0] = 1;
    dec_case(f, "append k_new batch 1", run_append(f, f->plan, &f->cache, &t, &f->tvnew),
             DASHATTN_ERR_SHAPE_MISMATCH, "k_new");
    t = f->tknew;
    t.dtype = DASHATTN_F16;
    dec_case(f, "append k_new dtype f16", run_append(f, f->plan, &f->cache, &t, &f->tvnew), BAD,
             "k_new");
    t = f->tvnew;
    t.strides[3] = -1;
    dec_case(f, "append v_new negative stride", run_append(f, f->plan, &f->cache, &f->tknew, &t),
             BAD, "v_new");
}

static void check_cache_errors(dashattn_context *ctx)
{
    static dec_fixture fx;
    dec_fixture *f = &fx;
    dashattn_problem p;
    dashattn_plan *noncausal = NULL;
    f->ctx = ctx;
    dashattn_problem_init(&p, DB, DHQ, DHKV, 1, CAP, FD);
    p.block_size = DS;
    check_ok("decode plan", dashattn_plan_create(ctx, &p, &f->plan));
    p.causal = 0;
    p.n_local = 0;
    check_ok("non-causal decode-shaped plan", dashattn_plan_create(ctx, &p, &noncausal));
    if (f->plan == NULL || noncausal == NULL) {
        dashattn_plan_destroy(f->plan);
        dashattn_plan_destroy(noncausal);
        return;
    }
    float *r = tu_random_floats(41, sizeof(f->q) / sizeof(float), 1.0);
    memcpy(f->q, r, sizeof(f->q));
    free(r);
    r = tu_random_floats(42, 2 * sizeof(f->knew) / sizeof(float), 1.0);
    memcpy(f->knew, r, sizeof(f->knew));
    memcpy(f->vnew, r + sizeof(f->knew) / sizeof(float), sizeof(f->vnew));
    free(r);
    f->tq = dashattn_tensor_bhsd(f->q, DASHATTN_F32, DB, DHQ, 1, FD);
    f->tout = dashattn_tensor_bhsd(f->out, DASHATTN_F32, DB, DHQ, 1, FD);
    f->tknew = dashattn_tensor_bhsd(f->knew, DASHATTN_F32, DB, DHKV, TNEW, FD);
    f->tvnew = dashattn_tensor_bhsd(f->vnew, DASHATTN_F32, DB, DHKV, TNEW, FD);
    f->ws_size = dashattn_plan_workspace_size(f->plan);
    f->ws = tu_xcalloc(f->ws_size + 1, 1);

    check_decode_errors(f, noncausal);
    check_append_errors(f, noncausal);

    free(f->ws);
    dashattn_plan_destroy(noncausal);
    dashattn_plan_destroy(f->plan);
}

/* A bad block_summary or dh is refused before anything is written. */
static void check_summary_errors(fwd_fixture *f)
{
    float h[FHKV * FD], dh[FHKV * FD];
    for (int i = 0; i < FHKV * FD; i++)
        h[i] = 0.5f * (float)i;
    const dashattn_tensor th = dashattn_tensor_bhsd(h, DASHATTN_F32, 1, FHKV, 1, FD);
    dashattn_tensor tdh = dashattn_tensor_bhsd(dh, DASHATTN_F32, 1, FHKV, 1, FD);
    dashattn_status st;
    struct {
        const char *what;
        dashattn_tensor t;
        dashattn_status want;
    } bad[] = {{"block_summary f16", th, BAD},
               {"block_summary [1, 1, 1, 5]", th, DASHATTN_ERR_SHAPE_MISMATCH},
               {"block_summary [2, 1, 1, 4]", th, DASHATTN_ERR_SHAPE_MISMATCH},
               {"block_summary data NULL", th, BAD}};
    bad[0].t.dtype = DASHATTN_F16;
    bad[1].t.shape[3] = FD + 1;
    bad[2].t.shape[0] = 2;
    bad[3].t.data = NULL;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        poison_fwd_outputs(f);
        st = dashattn_forward(f->ctx, f->plan, &f->tq, &f->tk, &f->tv, &bad[i].t, &f->tout, f->lse,
                              &f->sel, &f->stats, NULL, 0, NULL);
        fwd_case(f, bad[i].what, st, bad[i].want, "block_summary");
    }
    poison_fwd_outputs(f);
    st = dashattn_forward(f->ctx, f->plan, &f->tq, &f->tk, &f->tv, &th, &f->tout, f->lse, NULL,
                          NULL, NULL, 0, NULL);
    check_ok("forward with a block_summary", st);

    float *dq = tu_xcalloc(q_elems, sizeof(float)), *dk = tu_xcalloc(kv_elems, sizeof(float));
    float *dv = tu_xcalloc(kv_elems, sizeof(float)), *dout = tu_random_floats(22, q_elems, 1.0);
    const dashattn_tensor tdq = dashattn_tensor_bhsd(dq, DASHATTN_F32, FB, FHQ, FN, FD);
    const dashattn_tensor tdk = dashattn_tensor_bhsd(dk, DASHATTN_F32, FB, FHKV, FN, FD);
    const dashattn_tensor tdv = dashattn_tensor_bhsd(dv, DASHATTN_F32, FB, FHKV, FN, FD);
    const dashattn_tensor tdo = dashattn_tensor_bhsd(dout, DASHATTN_F32, FB, FHQ, FN, FD);
    poison(dq, q_elems * sizeof(float));
    poison(dh, sizeof dh);
    st = dashattn_backward(f->ctx, f->plan, &f->tq, &f->tk, &f->tv, NULL, &f->tout, f->lse, &tdo,
                           &tdq, &tdk, &tdv, &tdh, NULL, 0, NULL);
    check_failure("backward with dh but no block_summary", st, BAD, "dh");
    TU_CHECK(untouched(dq, q_elems * sizeof(float)) && untouched(dh, sizeof dh),
             "backward with dh but no block_summary: outputs untouched");
    tdh.shape[1] = 2;
    st = dashattn_backward(f->ctx, f->plan, &f->tq, &f->tk, &f->tv, &th, &f->tout, f->lse, &tdo,
                           &tdq, &tdk, &tdv, &tdh, NULL, 0, NULL);
    check_failure("backward with dh [1, 2, 1, 4]", st, DASHATTN_ERR_SHAPE_MISMATCH, "dh");
    TU_CHECK(untouched(dq, q_elems * sizeof(float)) && untouched(dh, sizeof dh),
             "backward with a bad dh: outputs untouched");
    tdh.shape[1] = FHKV;
    st = dashattn_backward(f->ctx, f->plan, &f->tq, &f->tk, &f->tv, &th, &f->tout, f->lse, &tdo,
                           &tdq, &tdk, &tdv, &tdh, NULL, 0, NULL);
    check_ok("backward with block_summary and dh", st);
    TU_CHECK(!untouched(dh, sizeof dh), "backward writes dh");
    free(dq);
    free(dk);
    free(dv);
    free(dout);
}

/* SPEC.md's defaults, pinned here and nowhere derived from the library. */
static void check_defaults(void)
{
    dashattn_problem p;
    memset(&p, 0x5a, sizeof p);
    dashattn_problem_init(&p, 2, 32, 2, 100, 200, 128);
    TU_CHECK(p.batch == 2 && p.heads_q == 32 && p.heads_kv == 2 && p.len_q == 100 &&
                 p.len_k == 200 && p.head_dim == 128,
             "problem_init keeps the shape");
    TU_CHECK(p.dtype == DASHATTN_F32 && p.causal == 1, "default dtype f32, causal");
    TU_CHECK(p.block_size == 64, "default block size 64 (got %d)", (int)p.block_size);
    TU_CHECK(p.n_sink == 0 && p.n_local == 1, "default n_sink 0, n_local 1 (got %d, %d)",
             (int)p.n_sink, (int)p.n_local);
    TU_CHECK(p.alpha == 1.5 && p.selection == DASHATTN_SELECT_ENTMAX,
             "default entmax selection with alpha 1.5");
    TU_CHECK(p.group_mode == DASHATTN_GROUP_MEAN, "default group mode mean (got %d)",
             (int)p.group_mode);
    TU_CHECK(p.prior == DASHATTN_PRIOR_LOG && p.prior_sigma == 1e6,
             "default log prior, flat sigma 1e6");
    TU_CHECK(p.threshold_schedule == DASHATTN_SCHEDULE_EXACT && p.halley_steps == 3,
             "default exact thresholds, 3 Halley steps when asked for");
    TU_CHECK(p.scale == 0.0 && p.stage1_scale == 0.0 && p.topk == 0,
             "default scales resolved at plan time");
}

/* ---------------------------------------------------------------------- */

static void check_forward_group(dashattn_context *ctx)
{
    static fwd_fixture fx;
    fwd_fixture *f = &fx;
    dashattn_problem p;
    f->ctx = ctx;
    base_problem(&p);
    check_ok("forward plan", dashattn_plan_create(ctx, &p, &f->plan));
    if (f->plan == NULL)
        return;
    f->q = tu_random_floats(11, q_elems, 1.0);
    f->k = tu_random_floats(12, kv_elems, 1.0);
    f->v = tu_random_floats(13, kv_elems, 1.0);
    f->out = tu_xcalloc(q_elems, sizeof(float));
    f->tq = dashattn_tensor_bhsd(f->q, DASHATTN_F32, FB, FHQ, FN, FD);
    f->tk = dashattn_tensor_bhsd(f->k, DASHATTN_F32, FB, FHKV, FN, FD);
    f->tv = dashattn_tensor_bhsd(f->v, DASHATTN_F32, FB, FHKV, FN, FD);
    f->tout = dashattn_tensor_bhsd(f->out, DASHATTN_F32, FB, FHQ, FN, FD);
    f->sel.block_index = f->index;
    f->sel.block_weight = f->weight;
    f->sel.block_count = f->count;
    f->sel.max_blocks = FM;
    f->ws_size = dashattn_plan_workspace_size(f->plan);
    f->ws = tu_xcalloc(f->ws_size + 1, 1);

    check_forward_errors(f);
    check_backward_errors(f);
    check_summary_errors(f);

    free(f->ws);
    free(f->q);
    free(f->k);
    free(f->v);
    free(f->out);
    dashattn_plan_destroy(f->plan);
}

int main(void)
{
    check_status_strings();
    check_convert_errors();
    check_defaults();
    /* Destroying NULL is a no-op, like free(NULL). */
    dashattn_plan_destroy(NULL);
    dashattn_context_destroy(NULL);

    dashattn_context *ctx = make_cpu_context();
    if (ctx != NULL) {
        check_plan_errors(ctx);
        check_forward_group(ctx);
        check_cache_errors(ctx);
        dashattn_context_destroy(ctx);
    }
    return tu_finish("test_api_errors");
}
