/* Pieces of the CPU backend shared between its files. All data handed
 * between them is f32 with a leading dimension (ld) in floats. */
#ifndef DASHATTN_CPU_INTERNAL_H
#define DASHATTN_CPU_INTERNAL_H

#include <dashattn/backend.h>
#include <stddef.h>
#include <stdint.h>

/* Query rows of one position tile in the forward: every key block loaded is
 * reused by DACPU_TILE_ROWS * G query rows while it sits in cache. */
#define DACPU_TILE_ROWS 64

typedef struct dacpu_state {
    int num_threads;
    char device[160];
} dacpu_state;

/* ---- tensor rows (cpu_tensor_io.c) ---- */

/* Rows [r0, r0 + count) of t[i0, i1] as f32: a pointer into t itself when
 * t is f32 with unit element stride, else converted into scratch
 * (count * D floats). *ld receives the row stride of the result. */
const float *dacpu_rows(const dashattn_tensor *t, int64_t i0, int64_t i1, int64_t r0, int64_t count,
                        float *scratch, int64_t *ld);

/* Write count rows of D floats (stride ld) to t[i0, i1, r0 ...]. */
void dacpu_store_rows(const dashattn_tensor *t, int64_t i0, int64_t i1, int64_t r0, int64_t count,
                      const float *src, int64_t ld);

/* Mean of rows [r0, r0 + count) of t[i0, i1] into dst[D]; scratch holds D
 * floats. */
void dacpu_mean_rows(const dashattn_tensor *t, int64_t i0, int64_t i1, int64_t r0, int64_t count,
                     float *dst, float *scratch);

/* ---- scratch memory ---- */

/* Carves aligned pieces out of one thread's slice of the workspace. */
typedef struct dacpu_arena {
    char *next;
    char *end;
} dacpu_arena;

void *dacpu_take(dacpu_arena *arena, size_t bytes);

/* Floats of scratch a thread needs for forward/decode and for backward. */
size_t dacpu_forward_thread_bytes(const dashattn_plan_desc *plan);
size_t dacpu_backward_thread_bytes(const dashattn_plan_desc *plan);

/* The thread's arena inside a workspace whose per-thread slices follow
 * `shared` bytes of data common to all threads. */
dacpu_arena dacpu_thread_arena(void *workspace, size_t shared, size_t per_thread, int thread);

/* ---- block keys (cpu_block_keys.c) ---- */

/* Mean key of every block of every (batch, kv head) of k into dst, laid out
 * [B, Hkv, M, D]. Must be called by all threads of a parallel region, each
 * with its own scratch of D floats; ends with a barrier. */
void dacpu_block_keys(const dashattn_plan_desc *plan, const dashattn_tensor *k, float *dst,
                      float *scratch);

/* ---- stage 1 (cpu_stage1.c) ---- */

typedef struct dacpu_stage1_scratch {
    double *z;    /* M */
    double *zsum; /* M */
    double *p;    /* M */
    double *sort; /* 2M */
} dacpu_stage1_scratch;

dacpu_stage1_scratch dacpu_stage1_scratch_take(dacpu_arena *arena, int64_t num_blocks);

/* Block weights of the G query heads of one position: w[g * ldw + j] for
 * blocks j in [0, visible_blocks) is 1 for forced blocks, the entmax (or
 * top-k) weight for candidates, 0 otherwise. q holds G unscaled rows
 * (stride ldq); kbar[j * D] is block j's mean key (read for candidates only). */
void dacpu_stage1(const dashattn_plan_desc *plan, const dashattn_row_blocks *r,
                  int64_t visible_blocks, const float *q, int64_t ldq, const float *kbar, float *w,
                  int64_t ldw, dacpu_stage1_scratch *s);

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

/* A key/value block prepared for many query rows: keys transposed to
 * kt[c * ldt + t] (tokens padded with zeros), values as rows. */
typedef struct dacpu_kv_block {
    const float *kt;
    int64_t ldt;
    const float *v;
    int64_t ldv;
    int64_t ntok;
} dacpu_kv_block;

/* Row stride of a transposed block of block_size tokens. */
int64_t dacpu_block_ldt(int64_t block_size);

/* Transpose ntok keys into kt (D x ldt floats) and describe the block. */
void dacpu_block_prepare(const float *k, int64_t ldk, const float *v, int64_t ldv, int64_t ntok,
                         int64_t d, float *kt, int64_t ldt, dacpu_kv_block *blk);

/* Fold the first ntok tokens of a block into the row: logits are
 * qs . k_t + logw, qs already multiplied by the scale. s holds
 * dacpu_block_ldt(block_size) floats. */
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
