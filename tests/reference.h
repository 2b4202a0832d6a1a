/* SPDX-License-Identifier: MIT */
/* A float64 reference implementation of SPEC.md, written straight from its
 * text and sharing no code with the library, so tests can check the library
 * against it. Inputs and outputs are contiguous [B, H, N, D] doubles. Slow on
 * purpose: every quantity is computed the obvious way. */
#ifndef DASHATTN_TEST_REFERENCE_H
#define DASHATTN_TEST_REFERENCE_H

#include <dashattn.h>
#include <stdint.h>

/** A problem with every default resolved. */
typedef struct ref_config {
    int64_t batch, heads_q, heads_kv, len_q, len_k, head_dim;
    int causal;
    int64_t block_size, n_sink, n_local;
    double alpha;
    int topk_mode; /**< nonzero: hard top-k selection instead of entmax */
    int64_t topk;
    int group;     /**< a dashattn_group_mode */
    double scale;  /**< stage 2 */
    double scale1; /**< stage 1 */
    int flat;      /**< nonzero: the flat prior with sigma */
    double sigma;
    int halley;      /**< > 0: the Halley schedule with this many steps */
    const double *h; /**< [Hkv, D] learned summary vectors, or NULL for mean pooling */
} ref_config;

/**
 * Copy a dashattn_problem, resolving scale 0 to 1/sqrt(D) and stage1_scale 0
 * to scale. h is left NULL (the problem does not hold it).
 */
void ref_config_from_problem(ref_config *cfg, const dashattn_problem *problem);

/** M = ceil(len_k / block_size). */
int64_t ref_num_blocks(const ref_config *cfg);

/** Role of block j for a query at absolute position pos (SPEC.md's layout). */
enum { REF_BLOCK_UNUSED = 0, REF_BLOCK_FORCED = 1, REF_BLOCK_CANDIDATE = 2 };
int ref_block_role(const ref_config *cfg, int64_t pos, int64_t j);

/** Keys [0, n) a query at pos sees. */
int64_t ref_visible_keys(const ref_config *cfg, int64_t pos);

/**
 * p = alpha-entmax(z) over n entries by plain bisection on the threshold in
 * long double (alpha = 1: softmax). -inf entries get 0; NaN anywhere gives NaN.
 */
void ref_entmax(double alpha, const double *z, int64_t n, double *p);

/**
 * SPEC.md's halley:N schedule for alpha 1.5: N safeguarded Halley steps on
 * x = z / 2 from the bracket [max x - 1, max x]; p is not renormalised.
 */
void ref_halley(const double *z, int64_t n, int steps, double *p);

/** p_j = 1 for the k largest z_j (ties to the lower index), else 0. */
void ref_topk(const double *z, int64_t n, int64_t k, double *p);

/** Results of ref_forward; free with ref_forward_free. */
typedef struct ref_result {
    double *out; /**< [B, Hq, Nq, D] */
    double *lse; /**< [B, Hq, Nq] */
    double *w;    /**< [B, Hq, Nq, M] block prior pi, 0 for unused blocks */
    double *wsel; /**< [B, Hq, Nq, M] stage-1 weight by the group mode (1 forced), before the prior */
    int64_t visible_pairs;
    int64_t attended_pairs;
    double sparsity;
} ref_result;

/**
 * kbar [B, Hkv, M, D]: summary of every block over its actual tokens (the
 * mean, or softmax(h . k / sqrt(D))-weighted with cfg->h).
 */
void ref_block_keys(const ref_config *cfg, const double *k, double *kbar);

/** DashAttention forward. Allocates res's arrays. */
void ref_forward(const ref_config *cfg, const double *q, const double *k, const double *v,
                 ref_result *res);

void ref_forward_free(ref_result *res);

/**
 * Gradients of sum(dout * out) for q, k, v (overwritten), SPEC.md's backward
 * including the path through stage 1 and the block summaries; dh [Hkv, D]
 * (optional) receives the gradient of cfg->h.
 */
void ref_backward(const ref_config *cfg, const double *q, const double *k, const double *v,
                  const double *dout, double *dq, double *dk, double *dv, double *dh);

/**
 * Dense softmax attention (causal when cfg->causal, bottom-right aligned),
 * with no blocks at all: out [B, Hq, Nq, D], lse [B, Hq, Nq] (may be NULL).
 */
void ref_dense(const ref_config *cfg, const double *q, const double *k, const double *v,
               double *out, double *lse);

/** float -> double copy of n values into a new array. */
double *ref_to_double(const float *x, int64_t n);

#endif
