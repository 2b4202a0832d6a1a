/* SPDX-License-Identifier: MIT */
/* Size arithmetic that saturates at SIZE_MAX instead of wrapping. A size
 * built from saturated parts stays SIZE_MAX, which planning refuses, so a
 * workspace can never be sized smaller than the layout that uses it. */
#ifndef DASHATTN_CHECKED_SIZE_H
#define DASHATTN_CHECKED_SIZE_H

#include <stddef.h>
#include <stdint.h>

static inline size_t da_size_add(size_t a, size_t b)
{
    return a > SIZE_MAX - b ? SIZE_MAX : a + b;
}

static inline size_t da_size_mul(size_t a, size_t b)
{
    /* A saturated factor saturates the product (0 stays 0: nothing to hold). */
    if (a == 0 || b == 0)
        return 0;
    return a > SIZE_MAX / b ? SIZE_MAX : a * b;
}

static inline size_t da_size_mul3(size_t a, size_t b, size_t c)
{
    return da_size_mul(da_size_mul(a, b), c);
}

/* n rounded up to a multiple of align (a power of two or not). */
static inline size_t da_size_round_up(size_t n, size_t align)
{
    const size_t r = n % align;
    return r == 0 ? n : da_size_add(n, align - r);
}

/* Largest workspace a plan may ask for: offsets inside it fit ptrdiff_t and
 * int64_t, so no backend's indexing can overflow either. */
#define DA_MAX_WORKSPACE_BYTES ((size_t)(PTRDIFF_MAX < INT64_MAX ? PTRDIFF_MAX : INT64_MAX))

#endif
