/* SPDX-License-Identifier: MIT */
/* alpha-entmax and top-k block selection for one query row (stage 1), and
 * the entmax backward. Double precision: rows hold at most a few thousand
 * candidates, so accuracy costs nothing here. */
#ifndef DASHATTN_CPU_ENTMAX_H
#define DASHATTN_CPU_ENTMAX_H

#include <dashattn/backend.h>
#include <stdint.h>

/**
 * p[0..n) = alpha-entmax(z) computed by the given threshold method:
 * p_j = [(alpha - 1) z_j - tau]_+ ^ (1 / (alpha - 1)) with sum p = 1
 * (softmax for DASHATTN_THRESHOLD_SOFTMAX). z_j = -inf gives p_j = 0; a NaN
 * in z makes every p_j NaN. iterations is the step count of the bracketed
 * and Halley methods; the Halley method's p is not renormalised.
 * scratch holds at least 2n doubles. Returns the number of p_j > 0.
 * n must be >= 1. DASHATTN_THRESHOLD_TOPK is not accepted here.
 */
int64_t da_entmax_forward(dashattn_threshold_method method, double alpha, int iterations,
                          const double *z, int64_t n, double *p, double *scratch);

/**
 * p_j = 1 for the k largest z_j (ties to the lower index), 0 elsewhere; all
 * ones if n <= k. -inf entries are never selected; a NaN in z makes every p_j
 * NaN. scratch holds at least 2n doubles. Returns the number selected.
 */
int64_t da_topk_forward(const double *z, int64_t n, int64_t k, double *p, double *scratch);

/**
 * Entmax backward: given p = entmax(z) and g = dLoss/dp, writes
 * dz = u * (g - sum(u g) / sum(u)) with u = p^(2 - alpha) on the support
 * (u = p for alpha = 1, the softmax case). dz_j = 0 off the support.
 */
void da_entmax_backward(double alpha, const double *p, const double *g, int64_t n, double *dz);

/*
 * The two ways the exact methods find the threshold, exposed so the tests
 * can hold each to the other. x holds m shifted scores X = (alpha - 1)
 * (z - max z) > -1; r is 1 (sparsemax) or 2 (1.5-entmax).
 * da_entmax_threshold_support iterates on the support without sorting and
 * returns 0 if it did not settle; da_entmax_threshold_sorted always works
 * (and reorders x). da_entmax_forward tries the first, then the second.
 */
int da_entmax_threshold_support(const double *x, int64_t m, int r, double *tau);
double da_entmax_threshold_sorted(double *x, int64_t m, int r);

#endif
