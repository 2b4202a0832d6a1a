/* Stage 2: softmax attention over the tokens of kept blocks with the block
 * weight as a log-prior, accumulated block by block with an online softmax
 * (SPEC.md, "Stage 2"). The hot loops live here.
 *
 * A key block is transposed once into [D][ldt] so that the logits of one
 * query row against all its tokens are computed with independent vector
 * accumulators (no horizontal reductions), and the transposition is shared
 * by every row of the tile that keeps the block. */
#include <config.h>

#include "cpu_internal.h"

#include <math.h>
#include <string.h>

/* Portable binaries still get AVX2/FMA code where the CPU has it. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) &&       \
    !defined(__SANITIZE_ADDRESS__)
#define HOT __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define HOT
#endif

/* Tokens (and head dimensions) handled per register-resident chunk. */
#define CHUNK 32

HOT float dacpu_dot(const float *a, const float *b, int64_t n)
{
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < n; i++)
        s += a[i] * b[i];
    return s;
}

int64_t dacpu_block_ldt(int64_t block_size)
{
    return (block_size + CHUNK - 1) / CHUNK * CHUNK;
}

void dacpu_block_prepare(const float *k, int64_t ldk, const float *v, int64_t ldv, int64_t ntok,
                         int64_t d, float *kt, int64_t ldt, dacpu_kv_block *blk)
{
    const int64_t padded = (ntok + CHUNK - 1) / CHUNK * CHUNK;
    for (int64_t c = 0; c < d; c++) {
        float *row = kt + c * ldt;
        for (int64_t t = 0; t < ntok; t++)
            row[t] = k[t * ldk + c];
        for (int64_t t = ntok; t < padded; t++)
            row[t] = 0.0f;
    }
    blk->kt = kt;
    blk->ldt = ldt;
    blk->v = v;
    blk->ldv = ldv;
    blk->ntok = ntok;
}

void dacpu_row_begin(dacpu_row_state *rs, int64_t d)
{
    rs->m = -INFINITY;
    rs->l = 0.0f;
    memset(rs->acc, 0, (size_t)d * sizeof(float));
}

/* exp(x) to about 2e-7 relative, written so the compiler vectorises it:
 * x = n ln2 + r with |r| <= ln2 / 2, exp(r) by its degree-6 Taylor
 * polynomial, 2^n from the exponent bits. Exactly 0 far below -87.
 * (Vectorising its selects needs -fno-trapping-math, set by configure.) */
static inline float exp_approx(float x)
{
    const float xc = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    const float round_magic = 12582912.0f; /* 1.5 * 2^23: rounds to nearest */
    const float n = (xc * 1.44269504f + round_magic) - round_magic;
    float r = xc - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    union {
        int32_t i;
        float f;
    } scale;
    scale.i = ((int32_t)n + 127) << 23;
    return x < -87.0f ? 0.0f : p * scale.f;
}

/* s[t] = qs . k_t for t < ntok (ntok rounded up to CHUNK, padding is 0). */
HOT static void block_logits(const float *qs, const dacpu_kv_block *blk, int64_t ntok, int64_t d,
                             float *s)
{
    for (int64_t t0 = 0; t0 < ntok; t0 += CHUNK) {
        float acc[CHUNK] = {0};
        for (int64_t c = 0; c < d; c++) {
            const float qc = qs[c];
            const float *kt = blk->kt + c * blk->ldt + t0;
#pragma omp simd
            for (int u = 0; u < CHUNK; u++)
                acc[u] += qc * kt[u];
        }
        memcpy(s + t0, acc, sizeof acc);
    }
}

/* acc = acc * corr + sum_t p[t] v_t, a CHUNK of dimensions at a time. */
HOT static void block_values(const float *p, const dacpu_kv_block *blk, int64_t ntok, int64_t d,
                             float corr, float *out)
{
    int64_t c0 = 0;
    for (; c0 + CHUNK <= d; c0 += CHUNK) {
        float acc[CHUNK];
#pragma omp simd
        for (int u = 0; u < CHUNK; u++)
            acc[u] = out[c0 + u] * corr;
        for (int64_t t = 0; t < ntok; t++) {
            const float pt = p[t];
            const float *vt = blk->v + t * blk->ldv + c0;
#pragma omp simd
            for (int u = 0; u < CHUNK; u++)
                acc[u] += pt * vt[u];
        }
        memcpy(out + c0, acc, sizeof acc);
    }
    if (c0 < d) { /* head dims that are not a multiple of CHUNK */
        for (int64_t c = c0; c < d; c++)
            out[c] *= corr;
        for (int64_t t = 0; t < ntok; t++) {
            const float pt = p[t];
            const float *vt = blk->v + t * blk->ldv;
            for (int64_t c = c0; c < d; c++)
                out[c] += pt * vt[c];
        }
    }
}

HOT void dacpu_attend(const float *qs, const dacpu_kv_block *blk, int64_t ntok, float logw,
                      int64_t d, dacpu_row_state *rs, float *s)
{
    block_logits(qs, blk, ntok, d, s);
    float block_max = -INFINITY, finite = 0.0f;
#pragma omp simd reduction(max : block_max) reduction(+ : finite)
    for (int64_t t = 0; t < ntok; t++) {
        s[t] += logw;
        block_max = s[t] > block_max ? s[t] : block_max;
        finite += s[t] - s[t]; /* NaN once any logit is NaN or infinite */
    }
    if (finite != 0.0f) { /* poison the row rather than drop a NaN */
        rs->l = NAN;
        return;
    }
    const float m_new = block_max > rs->m ? block_max : rs->m;
    const float corr = rs->l != 0.0f ? exp_approx(rs->m - m_new) : 1.0f;
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t t = 0; t < ntok; t++) {
        s[t] = exp_approx(s[t] - m_new);
        sum += s[t];
    }
    block_values(s, blk, ntok, d, corr, rs->acc);
    rs->l = rs->l * corr + sum;
    rs->m = m_new;
}

float dacpu_row_finish(dacpu_row_state *rs, int64_t d)
{
    const float inv = 1.0f / rs->l;
    for (int64_t c = 0; c < d; c++)
        rs->acc[c] *= inv;
    return rs->m + logf(rs->l);
}
