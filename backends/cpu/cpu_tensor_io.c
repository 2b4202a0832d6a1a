/* SPDX-License-Identifier: MIT */
/* Reading and writing tensor rows in any dtype and layout as f32. */
#include <config.h>

#include "cpu_internal.h"
#include "dtype_convert.h"

#include <string.h>

static int64_t offset_of(const dashattn_tensor *t, int64_t i0, int64_t i1, int64_t i2)
{
    return i0 * t->strides[0] + i1 * t->strides[1] + i2 * t->strides[2];
}

const float *dacpu_rows(const dashattn_tensor *t, int64_t i0, int64_t i1, int64_t r0, int64_t count,
                        float *scratch, int64_t *ld)
{
    const int64_t d = t->shape[3], base = offset_of(t, i0, i1, r0);
    const int64_t s2 = t->strides[2], s3 = t->strides[3];
    if (t->dtype == DASHATTN_F32 && s3 == 1) {
        *ld = s2;
        return (const float *)t->data + base;
    }
    for (int64_t r = 0; r < count; r++) {
        float *dst = scratch + r * d;
        const int64_t o = base + r * s2;
        if (t->dtype == DASHATTN_F32) {
            const float *src = (const float *)t->data + o;
            for (int64_t c = 0; c < d; c++)
                dst[c] = src[c * s3];
        } else {
            const uint16_t *src = (const uint16_t *)t->data + o;
            if (t->dtype == DASHATTN_F16)
                for (int64_t c = 0; c < d; c++)
                    dst[c] = da_f16_to_f32(src[c * s3]);
            else
                for (int64_t c = 0; c < d; c++)
                    dst[c] = da_bf16_to_f32(src[c * s3]);
        }
    }
    *ld = d;
    return scratch;
}

void dacpu_load_row(const dashattn_tensor *t, int64_t i0, int64_t i1, int64_t r, float *dst)
{
    int64_t ld;
    const float *src = dacpu_rows(t, i0, i1, r, 1, dst, &ld);
    if (src != dst)
        memcpy(dst, src, (size_t)t->shape[3] * sizeof(float));
}

void dacpu_store_rows(const dashattn_tensor *t, int64_t i0, int64_t i1, int64_t r0, int64_t count,
                      const float *src, int64_t ld)
{
    const int64_t d = t->shape[3], base = offset_of(t, i0, i1, r0);
    const int64_t s2 = t->strides[2], s3 = t->strides[3];
    for (int64_t r = 0; r < count; r++) {
        const float *row = src + r * ld;
        const int64_t o = base + r * s2;
        if (t->dtype == DASHATTN_F32) {
            float *dst = (float *)t->data + o;
            for (int64_t c = 0; c < d; c++)
                dst[c * s3] = row[c];
        } else {
            uint16_t *dst = (uint16_t *)t->data + o;
            if (t->dtype == DASHATTN_F16)
                for (int64_t c = 0; c < d; c++)
                    dst[c * s3] = da_f32_to_f16(row[c]);
            else
                for (int64_t c = 0; c < d; c++)
                    dst[c * s3] = da_f32_to_bf16(row[c]);
        }
    }
}

void dacpu_mean_rows(const dashattn_tensor *t, int64_t i0, int64_t i1, int64_t r0, int64_t count,
                     float *dst, float *scratch)
{
    const int64_t d = t->shape[3];
    for (int64_t c = 0; c < d; c++)
        dst[c] = 0.0f;
    for (int64_t r = 0; r < count; r++) {
        int64_t ld;
        const float *row = dacpu_rows(t, i0, i1, r0 + r, 1, scratch, &ld);
        for (int64_t c = 0; c < d; c++)
            dst[c] += row[c];
    }
    const float inv = 1.0f / (float)count;
    for (int64_t c = 0; c < d; c++)
        dst[c] *= inv;
}
