/* SPDX-License-Identifier: MIT */
/* float32 <-> float16 / bfloat16 conversion of the library (the CPU
 * backend's loads and stores, dashattn_convert, the CLI's --dtype): decoding
 * against the format's definition, and rounding against a reference that
 * picks the nearest representable value by distance (ties to even). */
#include "dtype_convert.h"

#include <dashattn.h>
#include <stdint.h>
#include "synthetic.h"
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* The value of binary16 bits, straight from the definition of the format. */
static double f16_definition(uint16_t h)
{
    const int sign = h >> 15, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
    double v;
    if (exp == 0x1f)
        v = mant ? NAN : INFINITY;
    else if (exp == 0)
        v = ldexp(mant, -24);
    else
        v = ldexp(1024 + mant, exp - 25);
    return sign ? -v : v;
}

static float from_bits(uint32_t u)
{
    float x;
    memcpy(&x, &u, 4);
    return x;
}

/* Nearest of two adjacent candidates lo < hi (bit patterns a, b, with
 * magnitude growing with the pattern); ties go to the even pattern. */
static uint16_t nearest(double x, double lo, uint16_t a, double hi, uint16_t b)
{
    const double dl = fabs(x - lo), dh = fabs(hi - x);
    if (dl < dh)
        return a;
    if (dh < dl)
        return b;
    return (a & 1) ? b : a;
}

/* Reference float16 rounding of a finite float by search over magnitudes. */
static uint16_t f16_reference(float xf)
{
    const double x = xf;
    const uint16_t sign = signbit(x) ? 0x8000 : 0;
    const double ax = fabs(x);
    /* Largest finite half is 0x7bff = 65504; the next step would be 65536. */
    if (ax >= 65520.0)
        return sign | 0x7c00;
    unsigned lo = 0, hi = 0x7bff;
    while (hi - lo > 1) { /* invariant: value(lo) <= ax < value(hi), or ax at an end */
        const unsigned mid = (lo + hi) / 2;
        if (f16_definition((uint16_t)mid) <= ax)
            lo = mid;
        else
            hi = mid;
    }
    if (ax >= f16_definition(0x7bff))
        return sign | nearest(ax, 65504.0, 0x7bff, 65536.0, 0x7c00);
    return sign | nearest(ax, f16_definition((uint16_t)lo), (uint16_t)lo,
                          f16_definition((uint16_t)hi), (uint16_t)hi);
}

static uint16_t bf16_reference(float xf)
{
    uint32_t u;
    memcpy(&u, &xf, 4);
    const uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    const uint16_t down = (uint16_t)((u >> 16) & 0x7fff);
    const double lo = from_bits((uint32_t)down << 16);
    /* Past the largest finite value the next step is 2^128, which rounds
     * to infinity (0x7f80), as IEEE rounding does. */
    const double hi = down + 1 == 0x7f80 ? ldexp(1.0, 128) : from_bits((uint32_t)(down + 1) << 16);
    return sign | nearest(fabs((double)xf), lo, down, hi, (uint16_t)(down + 1));
}

static void test_decode_and_round_trip(void)
{
    int f16_bad = 0, bf16_bad = 0;
    for (uint32_t h = 0; h <= 0xffff; h++) {
        const double def = f16_definition((uint16_t)h);
        const float f = da_f16_to_f32((uint16_t)h);
        if (isnan(def)) {
            f16_bad += !isnan(f) || !isnan(da_f16_to_f32(da_f32_to_f16(f)));
        } else {
            f16_bad += (double)f != def || !signbit(f) != !signbit(def);
            f16_bad += da_f32_to_f16(f) != h;
        }
        const float g = da_bf16_to_f32((uint16_t)h);
        if (isnan(g))
            bf16_bad += !isnan(da_bf16_to_f32(da_f32_to_bf16(g)));
        else
            bf16_bad += da_f32_to_bf16(g) != h;
    }
    TU_CHECK(f16_bad == 0, "%d float16 patterns decode or round-trip wrongly", f16_bad);
    TU_CHECK(bf16_bad == 0, "%d bfloat16 patterns round-trip wrongly", bf16_bad);
}

static void check_f16(float x, int *bad)
{
    if (isnan(x)) {
        *bad += !isnan(da_f16_to_f32(da_f32_to_f16(x)));
        return;
    }
    const uint16_t got = da_f32_to_f16(x),
                   want = isinf(x) ? (x < 0 ? 0xfc00 : 0x7c00) : f16_reference(x);
    if (got != want && *bad < 5)
        TU_CHECK(0, "f16(%a) = 0x%04x, expected 0x%04x", (double)x, got, want);
    *bad += got != want;
}

static void check_bf16(float x, int *bad)
{
    if (isnan(x)) {
        *bad += !isnan(da_bf16_to_f32(da_f32_to_bf16(x)));
        return;
    }
    const uint16_t got = da_f32_to_bf16(x), want = bf16_reference(x);
    if (got != want && *bad < 5)
        TU_CHECK(0, "bf16(%a) = 0x%04x, expected 0x%04x", (double)x, got, want);
    *bad += got != want;
}

static void test_rounding(void)
{
    int f16_bad = 0, bf16_bad = 0;
    /* Every midpoint between adjacent halves (exact in float) and its two
     * float neighbours: the cases where rounding goes wrong if it does. */
    for (uint32_t h = 0; h < 0x7bff; h++) {
        const float mid =
            (float)(0.5 * (f16_definition((uint16_t)h) + f16_definition((uint16_t)(h + 1))));
        const float around[] = {mid, nextafterf(mid, 0.0f), nextafterf(mid, INFINITY), -mid};
        for (int i = 0; i < 4; i++)
            check_f16(around[i], &f16_bad);
    }
    const float edges[] = {65504.0f,        65519.99f, 65520.0f,  1e9f, 0x1p-25f,
                           0x1.000002p-25f, 0x1p-26f,  0x1p-149f, 0.0f, -0.0f,
                           INFINITY,        -INFINITY, NAN};
    for (size_t i = 0; i < sizeof edges / sizeof edges[0]; i++) {
        check_f16(edges[i], &f16_bad);
        check_bf16(edges[i], &bf16_bad);
    }
    /* Random bit patterns cover every exponent of both formats. */
    da_synth_rng rng;
    da_synth_seed(&rng, 7);
    for (int i = 0; i < 200000; i++) {
        const float x = from_bits((uint32_t)(da_synth_uniform(&rng) * 4294967296.0));
        check_f16(x, &f16_bad);
        check_bf16(x, &bf16_bad);
    }
    /* bfloat16 ties: low half exactly 0x8000. */
    for (uint32_t hi = 0; hi < 0x7f80; hi += 7)
        check_bf16(from_bits(hi << 16 | 0x8000u), &bf16_bad);
    TU_CHECK(f16_bad == 0, "%d float16 roundings differ from the reference", f16_bad);
    TU_CHECK(bf16_bad == 0, "%d bfloat16 roundings differ from the reference", bf16_bad);
}

/* dashattn_convert applies the same scalar conversions to whole arrays. */
static void test_array_conversion(void)
{
    enum { N = 4096 };
    static float src[N], back[N];
    static uint16_t half[N];
    da_synth_rng rng;
    da_synth_seed(&rng, 11);
    for (int i = 0; i < N; i++)
        src[i] = (float)(1000.0 * da_synth_normal(&rng));
    const dashattn_dtype dts[] = {DASHATTN_F16, DASHATTN_BF16};
    for (int d = 0; d < 2; d++) {
        const int bf16 = dts[d] == DASHATTN_BF16;
        TU_CHECK(dashattn_convert(half, dts[d], src, DASHATTN_F32, N) == DASHATTN_OK, "f32 -> %s",
                 dashattn_dtype_name(dts[d]));
        TU_CHECK(dashattn_convert(back, DASHATTN_F32, half, dts[d], N) == DASHATTN_OK, "%s -> f32",
                 dashattn_dtype_name(dts[d]));
        int bad = 0;
        for (int i = 0; i < N; i++) {
            const uint16_t want = bf16 ? da_f32_to_bf16(src[i]) : da_f32_to_f16(src[i]);
            const float want_back = bf16 ? da_bf16_to_f32(want) : da_f16_to_f32(want);
            bad += half[i] != want || back[i] != want_back;
        }
        TU_CHECK(bad == 0, "%d of %d array conversions to %s differ from the scalar ones", bad, N,
                 dashattn_dtype_name(dts[d]));
    }
}

int main(void)
{
    test_decode_and_round_trip();
    test_rounding();
    test_array_conversion();
    return tu_finish("test_convert");
}
