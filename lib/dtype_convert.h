/* SPDX-License-Identifier: MIT */
/* Scalar conversions between f32 and the 16-bit dtypes, round to nearest
 * even, NaN and infinity preserved. Used by the CPU backend and
 * dashattn_convert(). */
#ifndef DASHATTN_DTYPE_CONVERT_H
#define DASHATTN_DTYPE_CONVERT_H

#include <stdint.h>
#include <string.h>

static inline uint32_t da_f32_bits(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    return x;
}

static inline float da_bits_f32(uint32_t x)
{
    float f;
    memcpy(&f, &x, sizeof f);
    return f;
}

static inline float da_bf16_to_f32(uint16_t h)
{
    return da_bits_f32((uint32_t)h << 16);
}

static inline uint16_t da_f32_to_bf16(float f)
{
    const uint32_t x = da_f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) /* NaN: keep it a (quiet) NaN */
        return (uint16_t)((x >> 16) | 0x40u);
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

float da_f16_to_f32(uint16_t h);
uint16_t da_f32_to_f16(float f);

#endif
