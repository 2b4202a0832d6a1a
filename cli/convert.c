/* Bit-level float conversions (see convert.h). Done on the bit patterns
 * rather than with compiler half types so that every C11 compiler gives the
 * same, correctly rounded, result. */
#include "convert.h"

#include <string.h>

static uint32_t float_bits(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static float bits_float(uint32_t u)
{
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* v >> shift rounded to nearest, ties to even; 1 <= shift <= 31. */
static uint32_t shift_round_even(uint32_t v, int shift)
{
    const uint32_t q = v >> shift;
    const uint32_t rem = v & ((1u << shift) - 1u);
    const uint32_t half = 1u << (shift - 1);
    return (rem > half || (rem == half && (q & 1u))) ? q + 1u : q;
}

uint16_t da_f32_to_f16(float x)
{
    const uint32_t u = float_bits(x);
    const uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    const uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u)
        return (uint16_t)(sign | 0x7e00u); /* NaN: keep it a (quiet) NaN */
    /* 65520 is halfway between 65504 (largest half, odd mantissa) and 2^16:
     * it and everything above round to infinity. */
    if (a >= 0x477ff000u)
        return (uint16_t)(sign | 0x7c00u);
    if (a >= 0x38800000u) /* normal half: rebias the exponent from 127 to 15 */
        return (uint16_t)(sign | shift_round_even(a - 0x38000000u, 13));
    /* 2^-25 is halfway between 0 and the smallest subnormal; the tie goes to 0. */
    if (a <= 0x33000000u)
        return sign;
    /* Subnormal half: the value in units of 2^-24. The rounding may carry
     * into 0x400, which is exactly the smallest normal's bit pattern. */
    const uint32_t mant = (a & 0x7fffffu) | 0x800000u;
    const int shift = 126 - (int)(a >> 23);
    return (uint16_t)(sign | shift_round_even(mant, shift));
}

float da_f16_to_f32(uint16_t h)
{
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    const uint32_t exp = (h >> 10) & 0x1fu;
    const uint32_t mant = h & 0x3ffu;
    if (exp == 0x1fu)
        return bits_float(sign | 0x7f800000u | (mant << 13));
    if (exp != 0)
        return bits_float(sign | ((exp + 112u) << 23) | (mant << 13));
    /* Zero or subnormal: mant * 2^-24 is exact in float. */
    const float mag = (float)mant * 0x1p-24f;
    return sign ? -mag : mag;
}

uint16_t da_f32_to_bf16(float x)
{
    const uint32_t u = float_bits(x);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x0040u); /* quiet NaN, sign kept */
    /* Rounding may carry into the exponent and up to infinity, as it should. */
    return (uint16_t)(((uint64_t)u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

float da_bf16_to_f32(uint16_t h)
{
    return bits_float((uint32_t)h << 16);
}

void da_convert_to_half(const float *src, uint16_t *dst, size_t n, int bf16)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = bf16 ? da_f32_to_bf16(src[i]) : da_f32_to_f16(src[i]);
}

void da_convert_from_half(const uint16_t *src, float *dst, size_t n, int bf16)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = bf16 ? da_bf16_to_f32(src[i]) : da_f16_to_f32(src[i]);
}
