/* SPDX-License-Identifier: MIT */
/* IEEE binary16 <-> binary32 without relying on compiler support for _Float16. */
#include <config.h>

#include "dtype_convert.h"
#include "internal.h"

#include <math.h>

float da_f16_to_f32(uint16_t h)
{
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    const uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
    if (exp == 0x1f)
        return da_bits_f32(sign | 0x7f800000u | (mant << 13));
    if (exp == 0) {
        const float v = ldexpf((float)mant, -24); /* zero or subnormal */
        return sign ? -v : v;
    }
    return da_bits_f32(sign | ((exp + 112u) << 23) | (mant << 13));
}

uint16_t da_f32_to_f16(float f)
{
    const uint32_t x = da_f32_bits(f);
    const uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    const uint32_t a = x & 0x7fffffffu;
    if (a >= 0x7f800000u) /* infinity, or NaN kept quiet */
        return (uint16_t)(sign | 0x7c00u | (a > 0x7f800000u ? 0x200u | ((a >> 13) & 0x3ffu) : 0));
    if (a >= 0x38800000u) { /* normal in f16 unless rounding overflows to inf */
        uint32_t r = (a - 0x38000000u) >> 13;
        const uint32_t rem = a & 0x1fffu;
        if (rem > 0x1000u || (rem == 0x1000u && (r & 1u)))
            r++;
        return (uint16_t)(sign | (r >= 0x7c00u ? 0x7c00u : r));
    }
    if (a < 0x33000000u) /* below half the smallest subnormal */
        return sign;
    /* Subnormal: value = mant * 2^(e - 150) = k * 2^-24. */
    const uint32_t mant = (a & 0x7fffffu) | 0x800000u;
    const int shift = 126 - (int)(a >> 23);
    uint32_t r = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1u), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1u)))
        r++;
    return (uint16_t)(sign | r);
}

static float load_one(const void *src, dashattn_dtype dtype, size_t i)
{
    if (dtype == DASHATTN_F32)
        return ((const float *)src)[i];
    const uint16_t h = ((const uint16_t *)src)[i];
    return dtype == DASHATTN_F16 ? da_f16_to_f32(h) : da_bf16_to_f32(h);
}

DASHATTN_API dashattn_status dashattn_convert(void *dst, dashattn_dtype dst_dtype, const void *src,
                                              dashattn_dtype src_dtype, size_t count)
{
    da_clear_error();
    if (!dashattn_dtype_size(dst_dtype) || !dashattn_dtype_size(src_dtype))
        return da_fail(DASHATTN_ERR_INVALID_ARGUMENT, "dashattn_convert: %s is not a dtype",
                       dashattn_dtype_size(dst_dtype) ? "src_dtype" : "dst_dtype");
    if (count && (!dst || !src))
        return da_fail(DASHATTN_ERR_INVALID_ARGUMENT, "dashattn_convert: %s is NULL",
                       dst ? "src" : "dst");
    for (size_t i = 0; i < count; i++) {
        const float v = load_one(src, src_dtype, i);
        if (dst_dtype == DASHATTN_F32)
            ((float *)dst)[i] = v;
        else
            ((uint16_t *)dst)[i] = dst_dtype == DASHATTN_F16 ? da_f32_to_f16(v) : da_f32_to_bf16(v);
    }
    return DASHATTN_OK;
}
