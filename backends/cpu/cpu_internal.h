/* SPDX-License-Identifier: MIT */
/* Pieces of the CPU backend shared between its files. All data handed
 * between them is f32 with a leading dimension (ld) in floats. */
#ifndef DASHATTN_CPU_INTERNAL_H
#define DASHATTN_CPU_INTERNAL_H

#include "checked_size.h"

#include <dashattn/backend.h>
#include <stddef.h>
#include <stdint.h>

/* A forward tile holds up to DACPU_TILE_POSITIONS query positions of all G
 * heads of one KV head, about DACPU_TILE_ROWS rows in all: every key block
 * loaded is reused by those rows while it sits in cache. The decode groups
 * its G heads the same way. */
#define DACPU_TILE_ROWS 256
#define DACPU_TILE_POSITIONS 64

/* Keys (or dims) per register-resident chunk of the stage-2 loops; the
 * transposed layouts below are padded to multiples of it. */
#define DACPU_CHUNK 32

/* Hot loops are compiled for AVX-512 and AVX2 besides the baseline, and the
 * loader picks the best the CPU runs, so portable binaries stay fast. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) &&       \
    !defined(__SANITIZE_ADDRESS__)
#define DACPU_HOT __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define DACPU_HOT
#endif

/* `omp simd` for loops with a max reduction: GCC vectorises them under
 * -fno-trapping-math; Clang does not without fast-math flags and warns when
 * asked to, so there the loop is left to its own judgement. */
#define DACPU_PRAGMA(x) _Pragma(#x)
#if defined(__clang__)
#define DACPU_SIMD_MAX(clauses)
#else
#define DACPU_SIMD_MAX(clauses) DACPU_PRAGMA(omp simd clauses)
#endif

/* The calling thread's index and its team's size inside a parallel region. */
#ifdef _OPENMP
#include <omp.h>
#define DACPU_THREAD_ID() omp_get_thread_num()
#define DACPU_TEAM_SIZE() omp_get_num_threads()
#else
#define DACPU_THREAD_ID() 0
#define DACPU_TEAM_SIZE() 1
#endif

typedef struct dacpu_state {
    int num_threads;
    char device[160];
} dacpu_state;

/* ---- teams (cpu_team.c) ---- */

/* Call before a parallel region of `threads` threads: DASHATTN_OK, or
 * DASHATTN_ERR_OUT_OF_MEMORY (message set, fn named) when the threads it
 * would create could not be started, which libgomp would answer by ending
 * the process. */
dashattn_status dacpu_team_check(const char *fn, int threads);

/* ---- tensor rows (cpu_tensor_io.c) ---- */

/* Rows [r0, r0 + count) of t[i0, i1] as f32: a pointer into t itself when
 * t is f32 with unit element stride, else converted into scratch
 * (count * D floats). *ld receives the row stride of the result. */
const float *dacpu_rows(const dashattn_tensor *t, int64_t i0, int64_t i1, int64_t r0, int64_t count,
                        float *scratch, int64_t *ld);

/* Row r of t[i0, i1] as f32 into dst (D floats), copied or converted. */
void dacpu_load_row(const dashattn_tensor *t, int64_t i0, int64_t i1, int64_t r, float *dst);

/* Write count rows of D floats (stride ld) to t[i0, i1, r0 ...]. */
void dacpu_store_rows(const dashattn_tensor *t, int64_t i0, int64_t i1, int64_t r0, int64_t count,
                      const float *src, int64_t ld);

/* Mean of rows [r0, r0 + count) of t[i0, i1] into dst[D]; scratch holds D
 * floats. */
void dacpu_mean_rows(const dashattn_tensor *t, int64_t i0, int64_t i1, int64_t r0, int64_t count,
                     float *dst, float *scratch);

/* ---- workspace (cpu_scratch.c) ---- */

/* Data one call shares between its threads, at the start of the workspace:
 * block keys as rows and transposed, and (forward) the transposed key
 * blocks, each made by the first tile that needs it. Byte offsets; 0-sized
 * parts are absent for the operation. */
typedef struct dacpu_shared {
    size_t keys;     /* float [B * Hkv][M][D] */
    size_t keys_t;   /* float [B * Hkv][D][ld_keys] */
    size_t kt_cache; /* float [B * Hkv][M][D][ld_block] */
    size_t kt_state; /* atomic_int [B * Hkv * M] */
    size_t pool;     /* (backward) float [B * Hkv][Nk]: pooling weight of each key */
    int has_pool;
    size_t total;
    int64_t ld_keys;  /* padded so any candidate range can be read by chunks */
    int64_t ld_block; /* tokens of a block, padded to DACPU_CHUNK */
} dacpu_shared;

dacpu_shared dacpu_shared_layout(const dashattn_plan_desc *plan, dashattn_operation op);

/* Carves aligned pieces out of one thread's slice of the workspace. With
 * base NULL it only counts, which is how the slices are sized: each driver
 * takes its scratch through one function, used both to size and to carve.
 * Sizes are computed with checked_size.h, so an overflow saturates the
 * count at SIZE_MAX (and planning refuses the problem). */
typedef struct dacpu_arena {
    char *base;
    size_t used;
    size_t cap;
} dacpu_arena;

void *dacpu_take(dacpu_arena *arena, size_t bytes);

/* Bytes of scratch one thread needs for an operation. */
size_t dacpu_thread_bytes(const dashattn_plan_desc *plan, dashattn_operation op);

/* The drivers' per-thread scratch, sized by counting. */
size_t dacpu_forward_scratch_bytes(const dashattn_plan_desc *plan);
size_t dacpu_backward_scratch_bytes(const dashattn_plan_desc *plan);
size_t dacpu_decode_scratch_bytes(const dashattn_plan_desc *plan);

/* Total workspace of an operation run by that many threads. */
size_t dacpu_workspace_bytes(const dashattn_plan_desc *plan, dashattn_operation op, int threads);

/* Shared data at a dacpu_shared offset of a (possibly unaligned) workspace. */
void *dacpu_shared_at(void *workspace, size_t offset);

/* The arena of one thread of an operation. */
dacpu_arena dacpu_thread_arena(void *workspace, const dashattn_plan_desc *plan,
                               dashattn_operation op, int thread);

/* ---- block summaries (cpu_block_keys.c) ---- */

/* The largest head_dim (problem validation enforces it). */
#define DACPU_MAX_DIM 256

/* Vector h of KV head g of a block_summary tensor into dst (D floats), or
 * NULL without one (mean pooling). */
const float *dacpu_summary_vector(const dashattn_tensor *h, int64_t g, float *dst);

/* Summary of rows [r0, r0 + count) of t[i0, i1] into dst[D]: the mean, or
 * with h the softmax(h . k / sqrt(D))-weighted sum. weights (optional)
 * receives the count pooling weights; scratch holds D floats. */
void dacpu_summarize_block(const dashattn_tensor *t, int64_t i0, int64_t i1, int64_t r0,
                           int64_t count, const float *h, float *dst, float *weights,
                           float *scratch);

/* Summary of every block of every (batch, kv head) of k (summary may be
 * NULL), as rows into layout->keys and transposed into layout->keys_t of
 * the workspace (located with dacpu_shared_at), and the pooling weights
 * into layout->pool where the layout has it. Must be called by all threads
 * of a parallel region, each with its own scratch of D floats; ends with a
 * barrier. */
void dacpu_block_keys(const dashattn_plan_desc *plan, const dashattn_tensor *k,
                      const dashattn_tensor *summary, const dacpu_shared *layout, void *workspace,
                      float *scratch);

/* ---- stage 1 (cpu_stage1.c) ---- */

/* Candidate weights at or below this are dropped by the flat prior (and
 * their logarithms never taken), as in the released kernels. */
#define DACPU_FLAT_PRIOR_FLOOR 1e-20

typedef struct dacpu_stage1_scratch {
    float *s;     /* scores of one head: ld_keys floats */
    double *z;    /* M */
    double *zsum; /* M */
    double *sort; /* 2M */
    /* Left by dacpu_stage1 for the backward, candidate c of head g at
     * [g * M + c]: p, each head's selection (row 0 only when the group has
     * one selection, see dacpu_stage1_one_selection); w, the weight every
     * head gives the candidate by the group mode, before the prior. */
    double *p; /* G x M */
    double *w; /* G x M */
} dacpu_stage1_scratch;

/* Nonzero if the group's heads share one selection made on their mean
 * score (shared mode, and top-k in mean mode). */
int dacpu_stage1_one_selection(const dashattn_plan_desc *plan);

dacpu_stage1_scratch dacpu_stage1_scratch_take(dacpu_arena *arena, const dashattn_plan_desc *plan);

/* Block priors of the G query heads of one position: w[g * ldw + j] for
 * blocks j in [0, visible_blocks) is 1 for forced blocks, the stage-2 prior
 * pi of candidates (from the entmax or top-k weight, the group mode and the
 * prior mode), 0 otherwise. q holds G unscaled rows
 * (stride ldq); keys_t[c * ld_keys + j] is dim c of block j's mean key,
 * read for candidates (and up to DACPU_CHUNK columns past them). */
void dacpu_stage1(const dashattn_plan_desc *plan, const dashattn_row_blocks *r,
                  int64_t visible_blocks, const float *q, int64_t ldq, const float *keys_t,
                  int64_t ld_keys, float *w, int64_t ldw, dacpu_stage1_scratch *s);

/* Blocks a row reads: every block with visible tokens, by its layout. */
int64_t dacpu_visible_blocks(const dashattn_plan_desc *plan, const dashattn_row_blocks *r);

/* ---- stage 2 (cpu_stage2.c) ---- */

/* Online-softmax state of one query row. */
typedef struct dacpu_row_state {
    float m;    /* running max of logits */
    float l;    /* running sum of exp(logit - m) */
    float *acc; /* running sum of exp(logit - m) v, D floats */
} dacpu_row_state;

void dacpu_row_begin(dacpu_row_state *rs, int64_t d);

/* kt[c * ldt + col0 + t] = rows[t * ld + c] for t < n, c < d, and zeros in
 * columns [col0 + n, ldt). */
void dacpu_transpose(const float *rows, int64_t ld, int64_t n, int64_t d, float *kt, int64_t ldt,
                     int64_t col0);

/* s[t] = q . key_t for t < n from transposed keys (s is written up to n
 * rounded up to DACPU_CHUNK, so kt must be readable that far). */
void dacpu_logits(const float *q, const float *kt, int64_t ldt, int64_t n, int64_t d, float *s);

/* A key/value block ready for many query rows: keys transposed to
 * kt[c * ldt + t] (padded with zeros), values as rows. */
typedef struct dacpu_kv_block {
    const float *kt;
    int64_t ldt;
    const float *v;
    int64_t ldv;
} dacpu_kv_block;

/* Fold the first ntok tokens of a block into the row: logits are
 * qs . k_t + logw, qs already multiplied by the scale. s holds ldt floats. */
void dacpu_attend(const float *qs, const dacpu_kv_block *blk, int64_t ntok, float logw, int64_t d,
                  dacpu_row_state *rs, float *s);

/* out = acc / l in place in rs->acc; returns lse = m + log l. */
float dacpu_row_finish(dacpu_row_state *rs, int64_t d);

/* Dot product of two float vectors. */
float dacpu_dot(const float *a, const float *b, int64_t n);

/* ---- KV caches (cpu_cache.c) ---- */

/* Where block j of sequence b lives: tensor index i0 and first row r0 for
 * k and v, and row key_row of block_keys[i0, h]. Paged caches map through
 * the block table. */
typedef struct dacpu_cache_block {
    int64_t i0, r0, key_row;
} dacpu_cache_block;

dacpu_cache_block dacpu_cache_locate(const dashattn_kv_cache *cache, int64_t b, int64_t j,
                                     int64_t block_size);

/* Checks seq_lens (and pages, for paged caches) before decode reads them. */
dashattn_status dacpu_cache_check_readable(const dashattn_plan_desc *plan,
                                           const dashattn_kv_cache *cache);

/* ---- entry points ---- */

dashattn_status dacpu_forward(void *state, const dashattn_plan_desc *plan,
                              const dashattn_forward_args *args);
dashattn_status dacpu_backward(void *state, const dashattn_plan_desc *plan,
                               const dashattn_backward_args *args);
dashattn_status dacpu_cache_append(void *state, const dashattn_plan_desc *plan,
                                   const dashattn_append_args *args);
dashattn_status dacpu_decode(void *state, const dashattn_plan_desc *plan,
                             const dashattn_decode_args *args);

#endif
