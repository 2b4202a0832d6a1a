/* SPDX-License-Identifier: MIT */
/* Synthetic attention inputs with block structure, so that stage 1 has
 * something to select: each key block carries a topic vector, and each query
 * leans towards the topics of a few earlier blocks. Shared by
 * `dashattn bench` and the tests. */
#ifndef DASHATTN_SYNTHETIC_H
#define DASHATTN_SYNTHETIC_H

#include <stdint.h>

/** Deterministic generator (splitmix64 / xoshiro-style), no global state. */
typedef struct da_synth_rng {
    uint64_t state;
} da_synth_rng;

void da_synth_seed(da_synth_rng *rng, uint64_t seed);
/** Uniform in [0, 1). */
double da_synth_uniform(da_synth_rng *rng);
/** Standard normal. */
double da_synth_normal(da_synth_rng *rng);

/** The input families (synthetic.c describes both). */
typedef enum da_synth_family {
    /** Each query row's noise its own: neighbouring rows keep different blocks. */
    DA_SYNTH_SEGMENT = 0,
    /** A segment's rows share most of their noise: they keep mostly the same blocks. */
    DA_SYNTH_COHERENT = 1
} da_synth_family;

/**
 * Fill contiguous BHSD float32 q [B, Hq, Nq, D], k and v [B, Hkv, Nk, D].
 * focus >= 0 sets how strongly queries align with a few block topics: 0 gives
 * unstructured Gaussian data, larger values make stage 1 sparser. The
 * `segment` family; keys and values are the same in both families.
 */
void da_synth_qkv(uint64_t seed, int64_t batch, int64_t heads_q, int64_t heads_kv, int64_t len_q,
                  int64_t len_k, int64_t head_dim, int64_t block_size, double focus, float *q,
                  float *k, float *v);

/** da_synth_qkv for either family. */
void da_synth_qkv_family(da_synth_family family, uint64_t seed, int64_t batch, int64_t heads_q,
                         int64_t heads_kv, int64_t len_q, int64_t len_k, int64_t head_dim,
                         int64_t block_size, double focus, float *q, float *k, float *v);

#endif
