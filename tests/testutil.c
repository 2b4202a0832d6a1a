/* SPDX-License-Identifier: MIT */
/* Small helpers shared by the C tests: check counting, random data, error norms. */
#include "testutil.h"

#include "synthetic.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

/* Failures past this many are counted but not printed, so that one broken
 * loop does not bury the rest of the log. */
#define TU_MAX_PRINTED_FAILURES 40

static long tu_checks;
static long tu_failures;

void tu_check_at(int ok, const char *file, int line, const char *format, ...)
{
    tu_checks++;
    if (ok)
        return;
    tu_failures++;
    if (tu_failures > TU_MAX_PRINTED_FAILURES)
        return;
    fprintf(stderr, "%s:%d: FAIL: ", file, line);
    va_list ap;
    va_start(ap, format);
    vfprintf(stderr, format, ap);
    va_end(ap);
    fputc('\n', stderr);
}

int tu_finish(const char *name)
{
    printf("%s: %ld checks, %ld failed\n", name, tu_checks, tu_failures);
    if (tu_failures > TU_MAX_PRINTED_FAILURES)
        printf("%s: (only the first %d failures were printed)\n", name, TU_MAX_PRINTED_FAILURES);
    /* A test that checked nothing has not shown anything: treat it as failed. */
    if (tu_checks == 0) {
        printf("%s: no checks ran\n", name);
        return 1;
    }
    return tu_failures == 0 ? 0 : 1;
}

void *tu_xcalloc(size_t count, size_t size)
{
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (p == NULL) {
        fprintf(stderr, "out of memory allocating %zu x %zu bytes\n", count, size);
        exit(99);
    }
    return p;
}

float *tu_random_floats(uint64_t seed, size_t n, double scale)
{
    float *x = tu_xcalloc(n, sizeof *x);
    da_synth_rng rng;
    da_synth_seed(&rng, seed);
    for (size_t i = 0; i < n; i++)
        x[i] = (float)(scale * da_synth_normal(&rng));
    return x;
}

float *tu_nan_floats(size_t n)
{
    float *x = tu_xcalloc(n, sizeof *x);
    for (size_t i = 0; i < n; i++)
        x[i] = NAN;
    return x;
}

double tu_rel_err_f(const float *a, const double *ref, size_t n)
{
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        const double ai = (double)a[i];
        if (!isfinite(ai) || !isfinite(ref[i]))
            return INFINITY;
        num += (ai - ref[i]) * (ai - ref[i]);
        den += ref[i] * ref[i];
    }
    return sqrt(num) / fmax(sqrt(den), 1e-300);
}

double tu_rel_err_d(const double *a, const double *ref, size_t n)
{
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(a[i]) || !isfinite(ref[i]))
            return INFINITY;
        num += (a[i] - ref[i]) * (a[i] - ref[i]);
        den += ref[i] * ref[i];
    }
    return sqrt(num) / fmax(sqrt(den), 1e-300);
}

void tu_set_prior_and_schedule(dashattn_problem *pr, double sigma, int halley)
{
    if (sigma > 0.0) {
        pr->prior = DASHATTN_PRIOR_FLAT;
        pr->prior_sigma = sigma;
    }
    if (halley > 0) {
        pr->threshold_schedule = DASHATTN_SCHEDULE_HALLEY;
        pr->halley_steps = halley;
    }
}
