/* Stage 2: softmax attention over the tokens of kept blocks with the block
 * weight as a log-prior, accumulated block by block with an online softmax
 * (SPEC.md, "Stage 2"). The hot loops live here. */
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

HOT float dacpu_dot(const float *a, const float *b, int64_t n)
{
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < n; i++)
        s += a[i] * b[i];
    return s;
}

void dacpu_row_begin(dacpu_row_state *rs, int64_t d)
{
    rs->m = -INFINITY;
    rs->l = 0.0f;
    memset(rs->acc, 0, (size_t)d * sizeof(float));
}

HOT void dacpu_attend(const float *qs, const float *k, int64_t ldk, const float *v, int64_t ldv,
                      int64_t ntok, float logw, int64_t d, dacpu_row_state *rs, float *s)
{
    float block_max = -INFINITY;
    int has_nan = 0;
    for (int64_t t = 0; t < ntok; t++) {
        const float *kt = k + t * ldk;
        float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
        for (int64_t c = 0; c < d; c++)
            dot += qs[c] * kt[c];
        s[t] = dot + logw;
        block_max = s[t] > block_max ? s[t] : block_max;
        has_nan |= isnan(s[t]);
    }
    if (has_nan) { /* poison the row rather than drop the NaN */
        rs->l = NAN;
        return;
    }
    if (block_max == -INFINITY)
        return;
    const float m_new = block_max > rs->m ? block_max : rs->m;
    if (m_new > rs->m && rs->l != 0.0f) {
        const float corr = expf(rs->m - m_new);
        rs->l *= corr;
        float *acc = rs->acc;
#pragma omp simd
        for (int64_t c = 0; c < d; c++)
            acc[c] *= corr;
    }
    rs->m = m_new;
    float l = rs->l;
    float *acc = rs->acc;
    for (int64_t t = 0; t < ntok; t++) {
        const float p = expf(s[t] - m_new);
        const float *vt = v + t * ldv;
        l += p;
#pragma omp simd
        for (int64_t c = 0; c < d; c++)
            acc[c] += p * vt[c];
    }
    rs->l = l;
}

float dacpu_row_finish(dacpu_row_state *rs, int64_t d)
{
    const float inv = 1.0f / rs->l;
    for (int64_t c = 0; c < d; c++)
        rs->acc[c] *= inv;
    return rs->m + logf(rs->l);
}
