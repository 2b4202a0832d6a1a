/* SPDX-License-Identifier: MIT */
/* What the numerical tests (test_forward, test_backward) share: one
 * configuration record, the problem and plan made from it, its inputs, and
 * tensor views of its shapes, so that both tests build their data the same
 * way from the same fields and seeds. */
#ifndef DASHATTN_TESTS_CASES_H
#define DASHATTN_TESTS_CASES_H

#include <dashattn.h>

#include <stddef.h>
#include <stdint.h>

/** One attention configuration; tables list the fields in this order. */
typedef struct tc_case {
    const char *name;
    int64_t batch, heads_q, heads_kv, len_q, len_k, dim;
    int causal;
    int32_t block_size, n_sink, n_local;
    double alpha;
    int32_t topk; /* > 0 selects TOPK mode */
    int group;    /* a dashattn_group_mode: 0 per_head, 1 shared, 2 mean */
    double focus; /* < 0: plain Gaussian inputs instead of da_synth_qkv */
    double scale, scale1;
    /* Options of the released function; zero keeps the log prior, exact
     * thresholds and mean pooling. */
    double sigma;   /* > 0: the flat prior with this sigma */
    int halley;     /* > 0: the Halley schedule with this many steps */
    double summary; /* > 0: learned summary vectors h ~ N(0, summary^2) */
} tc_case;

/** Fill pr with the problem c describes, in dtype. */
void tc_problem(const tc_case *c, dashattn_dtype dtype, dashattn_problem *pr);

/**
 * Plan of c in dtype on ctx, counted as one check that it was made; NULL if
 * it was not. pr (never NULL) receives the problem.
 */
dashattn_plan *tc_plan(dashattn_context *ctx, const tc_case *c, dashattn_dtype dtype,
                       dashattn_problem *pr);

/** f32 q, k, v of a case in contiguous BHSD, with float64 copies for the reference. */
typedef struct tc_inputs {
    size_t nq, nkv, rows, nh; /* floats in q (and out), in k and v; rows of q; in h */
    float *q, *k, *v;
    float *h; /* [Hkv, D] learned summary vectors, NULL without */
    /* Made with q, k, v (and h) and not updated when a test edits those. */
    double *qd, *kd, *vd, *hd;
} tc_inputs;

/**
 * Inputs of c from seed: da_synth_qkv(seed) when c->focus >= 0, else
 * N(0, 1) from seeds seed, seed + 1 and seed + 2.
 */
void tc_inputs_make(const tc_case *c, uint64_t seed, tc_inputs *in);

/** Free what tc_inputs_make allocated (NULL members are fine). */
void tc_inputs_free(tc_inputs *in);

/** The block_summary tensor of in, or NULL when the case has none (view points into in). */
const dashattn_tensor *tc_summary(const tc_case *c, const tc_inputs *in, dashattn_tensor *view);

/** BHSD views of data shaped like q ([B, Hq, Nq, D]) or like k ([B, Hkv, Nk, D]). */
dashattn_tensor tc_view_q(const tc_case *c, void *data, dashattn_dtype dtype);
dashattn_tensor tc_view_kv(const tc_case *c, void *data, dashattn_dtype dtype);

/**
 * The cpu context the numerical tests run on (2 threads, so that the threaded
 * paths run), counted as one check that it was made; NULL if it was not.
 */
dashattn_context *tc_cpu_context(void);

#endif
