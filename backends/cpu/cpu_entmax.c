/* SPDX-License-Identifier: MIT */
/* Stage-1 selection for one row: alpha-entmax thresholds and top-k.
 *
 * Every method works on X = (alpha - 1) z shifted so that max X = 0. The
 * threshold then lies in [-1, -n^(1 - alpha)], so entries with X <= -1 can
 * never be in the support: they are dropped before sorting or searching,
 * which also keeps huge negative scores out of every sum. */
#include <config.h>

#include "cpu_entmax.h"
#include "cpu_internal.h"

#include <math.h>
#include <stdlib.h>

/* The exact methods consume the contenders in descending order and stop at
 * the first one outside the support. Few contenders are simply sorted; many
 * go into a heap that yields them one at a time, O(n + k log n) for support
 * size k instead of a full sort. */
#define SORT_AT_MOST 32

typedef struct descending {
    double *v;
    int64_t n; /* contenders not yet taken */
    int heap;
} descending;

static void sift_down(double *v, int64_t n, int64_t i)
{
    const double x = v[i];
    for (;;) {
        int64_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && v[c + 1] > v[c])
            c++;
        if (v[c] <= x)
            break;
        v[i] = v[c];
        i = c;
    }
    v[i] = x;
}

static void arrange(descending *d)
{
    d->heap = d->n > SORT_AT_MOST;
    if (d->heap) {
        for (int64_t i = d->n / 2 - 1; i >= 0; i--)
            sift_down(d->v, d->n, i);
        return;
    }
    for (int64_t i = 1; i < d->n; i++) { /* insertion sort, descending */
        const double x = d->v[i];
        int64_t j = i;
        for (; j > 0 && d->v[j - 1] < x; j--)
            d->v[j] = d->v[j - 1];
        d->v[j] = x;
    }
}

static double next_largest(descending *d)
{
    d->n--;
    if (!d->heap)
        return *d->v++;
    const double top = d->v[0];
    d->v[0] = d->v[d->n];
    if (d->n > 0)
        sift_down(d->v, d->n, 0);
    return top;
}

/* Writes p for a row whose scores cannot be used (NaN, or no finite value). */
static int64_t poison(double *p, int64_t n)
{
    for (int64_t j = 0; j < n; j++)
        p[j] = NAN;
    return n;
}

/* Largest score, or NaN if any score is NaN. */
static inline double row_max(const double *z, int64_t n)
{
    /* Counts are doubles: mixed int and double lanes defeat vectorising. */
    double m = -INFINITY, nans = 0.0;
    DACPU_SIMD_MAX(reduction(max : m) reduction(+ : nans))
    for (int64_t j = 0; j < n; j++) {
        m = z[j] > m ? z[j] : m;
        nans += z[j] != z[j] ? 1.0 : 0.0;
    }
    return nans > 0.0 ? NAN : m;
}

/* A lower bound of the exact threshold for r = 1 (sparsemax) or r = 2
 * (1.5-entmax): Newton steps from tau = -1 on the convex, decreasing
 * f(tau) = sum (X - tau)_+^r - 1 never pass its root. */
static double threshold_lower_bound(const double *x, int64_t m, int r)
{
    double tau = -1.0;
    for (int step = 0; step < 2; step++) {
        double f = -1.0, fp = 0.0;
#pragma omp simd reduction(+ : f, fp)
        for (int64_t j = 0; j < m; j++) {
            const double t = x[j] > tau ? x[j] - tau : 0.0;
            f += r == 2 ? t * t : t;
            fp += r == 2 ? 2.0 * t : (t > 0.0 ? 1.0 : 0.0);
        }
        if (!(f > 0.0 && fp > 0.0))
            break;
        tau += f / fp;
    }
    /* A margin far above rounding keeps every support member in play;
     * extra contenders only cost a comparison in the exact scan. */
    return tau - 1e-9;
}

/* Shifted values X_j > -1 (X_max = 0 is among them) into out; returns
 * their count. */
static int64_t contenders(const double *z, int64_t n, double scale, double zmax, double *out)
{
    int64_t m = 0;
    /* Store always, advance when kept: no branch to mispredict. */
    for (int64_t j = 0; j < n; j++) {
        const double x = scale * (z[j] - zmax);
        out[m] = x;
        m += x > -1.0;
    }
    return m;
}

/* The exact threshold for r = 1 (sparsemax) or r = 2 (1.5-entmax) without
 * sorting. For a candidate support S = {X > tau} the closed form
 * tau_S (r = 1: (sum - 1) / k; r = 2: mean - sqrt((1 - k var) / k)) is the
 * threshold exactly when every member of S lies at or above it, as the
 * others lie at or below tau <= tau_S. Otherwise tau moves up by a Newton
 * step on the convex f(tau) = sum (X - tau)_+^r - 1, which never passes the
 * root (for r = 1 the step is tau_S itself, Michelot's algorithm). Each step
 * is one vectorised pass; returns 0 if it did not settle (rounding near a
 * tie), and the caller then sorts. */
DACPU_HOT int da_entmax_threshold_support(const double *x, int64_t m, int r, double *tau_out)
{
    double tau = -1.0;
    for (int step = 0; step < 64; step++) {
        double k = 0.0, s1 = 0.0, s2 = 0.0, lowest = INFINITY;
        DACPU_SIMD_MAX(reduction(+ : k, s1, s2) reduction(min : lowest))
        for (int64_t j = 0; j < m; j++) {
            const int in = x[j] > tau;
            k += in ? 1.0 : 0.0;
            s1 += in ? x[j] : 0.0;
            s2 += in ? x[j] * x[j] : 0.0;
            lowest = in && x[j] < lowest ? x[j] : lowest;
        }
        if (k == 0.0)
            return 0;
        double closed, next;
        if (r == 1) {
            closed = next = (s1 - 1.0) / k;
        } else {
            const double mean = s1 / k, delta = (1.0 - (s2 - s1 * mean)) / k;
            closed = mean - sqrt(delta > 0.0 ? delta : 0.0);
            next = tau + (s2 - 2.0 * tau * s1 + k * tau * tau - 1.0) / (2.0 * (s1 - k * tau));
        }
        if (lowest >= closed) {
            *tau_out = closed;
            return 1;
        }
        if (!(next > tau))
            return 0;
        tau = next;
    }
    return 0;
}

static double tau_sparsemax(descending *h);
static double tau_entmax15(descending *h);

/* The same threshold by the sort-based scan: contenders above a lower bound
 * of it, taken in descending order until the support ends. */
double da_entmax_threshold_sorted(double *x, int64_t m, int r)
{
    descending d = {x, m, 0};
    if (m > SORT_AT_MOST) {
        const double bound = threshold_lower_bound(x, m, r);
        int64_t kept = 0;
        for (int64_t j = 0; j < m; j++) {
            x[kept] = x[j];
            kept += x[j] > bound;
        }
        d.n = kept;
    }
    arrange(&d);
    return r == 1 ? tau_sparsemax(&d) : tau_entmax15(&d);
}

/* tau for sparsemax (alpha = 2): the largest k with 1 + k X_(k) > sum of
 * the k largest gives tau = (that sum - 1) / k. */
static double tau_sparsemax(descending *h)
{
    double cum = 0.0, tau = -1.0;
    for (int64_t k = 1; h->n > 0; k++) {
        const double x = next_largest(h);
        cum += x;
        if (1.0 + (double)k * x <= cum)
            break;
        tau = (cum - 1.0) / (double)k;
    }
    return tau;
}

/* tau for 1.5-entmax: with support size k, tau solves
 * sum (X_j - tau)^2 = 1, i.e. tau = mean - sqrt((1 - k var) / k). */
static double tau_entmax15(descending *h)
{
    double sum = 0.0, sumsq = 0.0, tau = -1.0;
    for (int64_t k = 1; h->n > 0; k++) {
        const double x = next_largest(h);
        sum += x;
        sumsq += x * x;
        const double mean = sum / (double)k;
        const double ss = sumsq - sum * mean; /* k * variance */
        const double delta = (1.0 - ss) / (double)k;
        const double t = mean - sqrt(delta > 0.0 ? delta : 0.0);
        if (t > x)
            break;
        tau = t;
    }
    return tau;
}

/* f(tau) = sum (X - tau)_+^r - 1 and its derivative. */
static void entmax_residual(const double *xs, int64_t m, double r, double tau, double *f,
                            double *fp)
{
    double s = -1.0, d = 0.0;
    for (int64_t j = 0; j < m; j++) {
        const double t = xs[j] - tau;
        if (t > 0.0) {
            const double tr1 = pow(t, r - 1.0);
            s += tr1 * t;
            d -= r * tr1;
        }
    }
    *f = s;
    *fp = d;
}

/* Bracketed search: even steps are Newton steps from the lower end (f is
 * convex and decreasing, so they never pass the root), odd steps bisect, so
 * the bracket at least halves every two steps whatever the data. */
static double tau_bracketed(const double *xs, int64_t m, int64_t n, double alpha, int iterations)
{
    const double r = 1.0 / (alpha - 1.0);
    double lo = -1.0, hi = -pow((double)n, 1.0 - alpha);
    double f_lo, fp_lo;
    entmax_residual(xs, m, r, lo, &f_lo, &fp_lo);
    for (int it = 0; it < iterations && hi > lo; it++) {
        double trial = 0.5 * (lo + hi);
        if (it % 2 == 0 && fp_lo < 0.0) {
            const double newton = lo - f_lo / fp_lo;
            if (newton > lo && newton < hi)
                trial = newton;
        }
        double f, fp;
        entmax_residual(xs, m, r, trial, &f, &fp);
        if (f >= 0.0) {
            lo = trial;
            f_lo = f;
            fp_lo = fp;
        } else {
            hi = trial;
        }
    }
    return lo;
}

/* The released kernels' fixed schedule for alpha 1.5 (backend.h describes
 * it), on X = (z - max z) / 2: shifting x and t alike leaves every step as
 * it is, and keeps the sums free of large magnitudes. */
static double tau_halley(const double *x, int64_t n, int steps)
{
    double lo = -1.0, hi = 0.0, t = -0.5;
    for (int step = 0; step < steps; step++) {
        double sq = 0.0, lin = 0.0, count = 0.0;
#pragma omp simd reduction(+ : sq, lin, count)
        for (int64_t j = 0; j < n; j++) {
            const double a = x[j] > t ? x[j] - t : 0.0;
            sq += a * a;
            lin += a;
            count += x[j] > t ? 1.0 : 0.0;
        }
        const double f = sq - 1.0, f1 = -2.0 * lin, f2 = 2.0 * count;
        const double next = t - 2.0 * f * f1 / (2.0 * f1 * f1 - f * f2);
        if (f > 0.0)
            lo = t;
        if (f < 0.0)
            hi = t;
        /* A NaN step (0 / 0 on a flat f) fails the test and bisects. */
        t = next > lo - 1e-5 && next < hi + 1e-5 ? next : 0.5 * (lo + hi);
    }
    return t;
}

DACPU_HOT int64_t da_entmax_forward(dashattn_threshold_method method, double alpha, int iterations,
                                    const double *z, int64_t n, double *p, double *scratch)
{
    const double zmax = row_max(z, n);
    if (!isfinite(zmax))
        return poison(p, n);
    double total = 0.0;
    if (method == DASHATTN_THRESHOLD_HALLEY) {
        for (int64_t j = 0; j < n; j++)
            scratch[j] = 0.5 * (z[j] - zmax);
        const double tau = tau_halley(scratch, n, iterations);
        double support = 0.0;
        for (int64_t j = 0; j < n; j++) {
            const double t = scratch[j] - tau;
            p[j] = t > 0.0 ? t * t : 0.0; /* not renormalised, as released */
            support += t > 0.0 ? 1.0 : 0.0;
        }
        return (int64_t)support;
    }
    if (method == DASHATTN_THRESHOLD_SOFTMAX) {
        for (int64_t j = 0; j < n; j++)
            total += p[j] = exp(z[j] - zmax);
    } else {
        const double scale = alpha - 1.0, r = 1.0 / scale;
        const int exact_r = method == DASHATTN_THRESHOLD_SORT_2    ? 1
                            : method == DASHATTN_THRESHOLD_SORT_15 ? 2
                                                                   : 0;
        const int64_t m = contenders(z, n, scale, zmax, scratch);
        double tau;
        if (exact_r) {
            if (!da_entmax_threshold_support(scratch, m, exact_r, &tau))
                tau = da_entmax_threshold_sorted(scratch, m, exact_r);
        } else {
            tau = tau_bracketed(scratch, m, n, alpha, iterations);
        }
        if (exact_r) {
            /* The exact thresholds make the weights sum to 1 to rounding. */
            double support = 0.0;
#pragma omp simd reduction(+ : support)
            for (int64_t j = 0; j < n; j++) {
                const double t = scale * (z[j] - zmax) - tau;
                p[j] = t > 0.0 ? (exact_r == 1 ? t : t * t) : 0.0;
                support += t > 0.0 ? 1.0 : 0.0;
            }
            return (int64_t)support;
        }
        for (int64_t j = 0; j < n; j++) {
            const double t = scale * (z[j] - zmax) - tau;
            p[j] = t > 0.0 ? pow(t, r) : 0.0;
            total += p[j];
        }
    }
    /* Renormalise: the search and exp leave the sum a little off 1. */
    const double inv = 1.0 / total;
    double support = 0.0;
#pragma omp simd reduction(+ : support)
    for (int64_t j = 0; j < n; j++) {
        p[j] *= inv;
        support += p[j] > 0.0 ? 1.0 : 0.0;
    }
    return (int64_t)support;
}

typedef struct ranked {
    double z;
    int64_t index;
} ranked;

static int by_score_then_index(const void *a, const void *b)
{
    const ranked *x = a, *y = b;
    if (x->z != y->z)
        return x->z < y->z ? 1 : -1;
    return (x->index > y->index) - (x->index < y->index);
}

int64_t da_topk_forward(const double *z, int64_t n, int64_t k, double *p, double *scratch)
{
    if (isnan(row_max(z, n)))
        return poison(p, n);
    ranked *r = (ranked *)(void *)scratch; /* a ranked entry takes two doubles */
    int64_t m = 0;
    for (int64_t j = 0; j < n; j++) {
        p[j] = 0.0;
        if (z[j] > -INFINITY)
            r[m++] = (ranked){z[j], j};
    }
    qsort(r, (size_t)m, sizeof *r, by_score_then_index);
    const int64_t keep = m < k ? m : k;
    for (int64_t i = 0; i < keep; i++)
        p[r[i].index] = 1.0;
    return keep;
}

void da_entmax_backward(double alpha, const double *p, const double *g, int64_t n, double *dz)
{
    double su = 0.0, sug = 0.0;
    for (int64_t j = 0; j < n; j++) {
        if (p[j] > 0.0) {
            const double u = alpha == 2.0 ? 1.0 : alpha == 1.0 ? p[j] : pow(p[j], 2.0 - alpha);
            dz[j] = u;
            su += u;
            sug += u * g[j];
        } else {
            dz[j] = 0.0;
        }
    }
    const double mean = su > 0.0 ? sug / su : 0.0;
    for (int64_t j = 0; j < n; j++)
        dz[j] = dz[j] * (g[j] - mean);
}
