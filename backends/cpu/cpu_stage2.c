/* SPDX-License-Identifier: MIT */
/* Stage 2: softmax attention over the tokens of kept blocks with the block
 * weight as a log-prior, accumulated block by block with an online softmax
 * (SPEC.md, "Stage 2"). The hot loops live here.
 *
 * Keys are used transposed, [D][ldt], so that the logits of one query row
 * against a block's tokens (or stage 1's scores against block keys) are
 * computed with independent vector accumulators and no horizontal
 * reductions. */
#include <config.h>

#include "cpu_internal.h"

#include <math.h>
#include <string.h>

#define HOT DACPU_HOT
#define CHUNK DACPU_CHUNK

HOT float dacpu_dot(const float *a, const float *b, int64_t n)
{
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < n; i++)
        s += a[i] * b[i];
    return s;
}

void dacpu_transpose(const float *rows, int64_t ld, int64_t n, int64_t d, float *kt, int64_t ldt,
                     int64_t col0)
{
    for (int64_t c = 0; c < d; c++) {
        float *out = kt + c * ldt + col0;
        for (int64_t t = 0; t < n; t++)
            out[t] = rows[t * ld + c];
        for (int64_t t = col0 + n; t < ldt; t++)
            kt[c * ldt + t] = 0.0f;
    }
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

/* 16 floats as one value: GCC and Clang lower it to one AVX-512 register,
 * two AVX ones or four SSE ones, whichever the clone targets, and keep such
 * local accumulators in registers (arrays under `omp simd` would live on
 * the stack). Loads go through memcpy, which compiles to unaligned moves. */
typedef float vf16 __attribute__((vector_size(64)));
/* The helpers below are inlined; their vector ABI never crosses a call. */
#pragma GCC diagnostic ignored "-Wpsabi"

static inline vf16 load16(const float *p)
{
    vf16 v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void store16(float *p, vf16 v)
{
    memcpy(p, &v, sizeof v);
}

/* Tokens t0 .. t0 + 31 of s = q . key_t: two token halves times even and
 * odd dims make four independent FMA chains. */
HOT void dacpu_logits(const float *q, const float *kt, int64_t ldt, int64_t n, int64_t d, float *s)
{
    for (int64_t t0 = 0; t0 < n; t0 += 32) {
        vf16 a0 = {0}, a1 = {0}, b0 = {0}, b1 = {0};
        const float *k = kt + t0;
        int64_t c = 0;
        for (; c + 1 < d; c += 2, k += 2 * ldt) {
            const float q0 = q[c], q1 = q[c + 1];
            a0 += q0 * load16(k);
            a1 += q0 * load16(k + 16);
            b0 += q1 * load16(k + ldt);
            b1 += q1 * load16(k + ldt + 16);
        }
        if (c < d) {
            a0 += q[c] * load16(k);
            a1 += q[c] * load16(k + 16);
        }
        store16(s + t0, a0 + b0);
        store16(s + t0 + 16, a1 + b1);
    }
}

/* acc = acc * corr + sum_t p[t] v_t, 32 dims at a time, even and odd
 * tokens in separate accumulators. */
HOT static void block_values(const float *p, const dacpu_kv_block *blk, int64_t ntok, int64_t d,
                             float corr, float *out)
{
    const int64_t ldv = blk->ldv;
    int64_t c0 = 0;
    for (; c0 + 32 <= d; c0 += 32) {
        vf16 a0 = corr * load16(out + c0), a1 = corr * load16(out + c0 + 16);
        vf16 b0 = {0}, b1 = {0};
        const float *v = blk->v + c0;
        int64_t t = 0;
        for (; t + 1 < ntok; t += 2, v += 2 * ldv) {
            a0 += p[t] * load16(v);
            a1 += p[t] * load16(v + 16);
            b0 += p[t + 1] * load16(v + ldv);
            b1 += p[t + 1] * load16(v + ldv + 16);
        }
        if (t < ntok) {
            a0 += p[t] * load16(v);
            a1 += p[t] * load16(v + 16);
        }
        store16(out + c0, a0 + b0);
        store16(out + c0 + 16, a1 + b1);
    }
    if (c0 < d) { /* head dims that are not a multiple of 32 */
        for (int64_t c = c0; c < d; c++)
            out[c] *= corr;
        for (int64_t t = 0; t < ntok; t++) {
            const float pt = p[t];
            const float *vt = blk->v + t * ldv;
            for (int64_t c = c0; c < d; c++)
                out[c] += pt * vt[c];
        }
    }
}

HOT void dacpu_attend(const float *qs, const dacpu_kv_block *blk, int64_t ntok, float logw,
                      int64_t d, dacpu_row_state *rs, float *s)
{
    dacpu_logits(qs, blk->kt, blk->ldt, ntok, d, s);
    float block_max = -INFINITY, finite = 0.0f;
    DACPU_SIMD_MAX(reduction(max : block_max) reduction(+ : finite))
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
