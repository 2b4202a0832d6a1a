/* SPDX-License-Identifier: MIT */
/* Small helpers shared by the C tests: random data, checks, tolerances. */
#ifndef DASHATTN_TESTUTIL_H
#define DASHATTN_TESTUTIL_H

#include <dashattn.h>

#include <stddef.h>
#include <stdint.h>

/* Defined when built with AddressSanitizer (GCC or Clang): tests that
 * interpose the allocator or probe address-space limits skip then. */
#if defined(__SANITIZE_ADDRESS__)
#define TU_UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TU_UNDER_ASAN 1
#endif
#endif

/** Exit status a test uses to say "skipped" (automake and CTest agree). */
#define TU_SKIP 77

/** Record a failed check with file:line and a printf message; never aborts. */
#define TU_CHECK(cond, ...) tu_check_at((cond) != 0, __FILE__, __LINE__, __VA_ARGS__)
void tu_check_at(int ok, const char *file, int line, const char *format, ...)
#ifdef __GNUC__
    __attribute__((format(printf, 4, 5)))
#endif
    ;

/** Print "<name>: N checks, F failed" and return the process exit status. */
int tu_finish(const char *name);

/** Allocate n floats (aborting the test on failure) filled N(0, scale^2). */
float *tu_random_floats(uint64_t seed, size_t n, double scale);

/** Allocate n floats set to NaN, so that an element a call should have
 *  written but did not shows in any comparison. */
float *tu_nan_floats(size_t n);

/** ||a - ref|| / max(||ref||, tiny) over n values; NaN anywhere gives +inf. */
double tu_rel_err_f(const float *a, const double *ref, size_t n);

/** Same for two double arrays. */
double tu_rel_err_d(const double *a, const double *ref, size_t n);

/** calloc that fails the test (exit 99) instead of returning NULL. */
void *tu_xcalloc(size_t count, size_t size);

/**
 * Set the released function's options of a test case on pr: the flat prior
 * with sigma when sigma > 0, the Halley schedule with that many steps when
 * halley > 0 (0 leaves the log prior and exact thresholds).
 */
void tu_set_prior_and_schedule(dashattn_problem *pr, double sigma, int halley);

#endif
