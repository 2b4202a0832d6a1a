/* float32 <-> float16 / bfloat16 conversion with round-to-nearest-even, so
 * the CLI can feed f32 files to the library's f16 and bf16 paths. */
#ifndef DASHATTN_CONVERT_H
#define DASHATTN_CONVERT_H

#include <stddef.h>
#include <stdint.h>

/** IEEE binary16 bits of x, rounded to nearest even; NaN stays NaN. */
uint16_t da_f32_to_f16(float x);
/** The float of binary16 bits h (exact). */
float da_f16_to_f32(uint16_t h);
/** bfloat16 bits of x, rounded to nearest even; NaN stays NaN. */
uint16_t da_f32_to_bf16(float x);
/** The float of bfloat16 bits h (exact). */
float da_bf16_to_f32(uint16_t h);

/** Convert n floats to 16-bit values; bf16 nonzero selects bfloat16. */
void da_convert_to_half(const float *src, uint16_t *dst, size_t n, int bf16);
/** Convert n 16-bit values to floats; bf16 nonzero selects bfloat16. */
void da_convert_from_half(const uint16_t *src, float *dst, size_t n, int bf16);

#endif
