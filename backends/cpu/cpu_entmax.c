/* Stage-1 selection for one row: alpha-entmax thresholds and top-k.
 *
 * Every method works on X = (alpha - 1) z shifted so that max X = 0. The
 * threshold then lies in [-1, -n^(1 - alpha)], so entries with X <= -1 can
 * never be in the support: they are dropped before sorting or searching,
 * which also keeps huge negative scores out of every sum. */
#include <config.h>

#include "cpu_entmax.h"

#include <math.h>
#include <stdlib.h>

/* The exact methods consume the contenders in descending order and stop at
 * the first one outside the support, so a heap that yields them one at a
 * time costs O(n + k log n) for support size k instead of a full sort. */
typedef struct max_heap {
    double *v;
    int64_t n;
} max_heap;

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

static void heap_build(max_heap *h)
{
    for (int64_t i = h->n / 2 - 1; i >= 0; i--)
        sift_down(h->v, h->n, i);
}

static double heap_pop(max_heap *h)
{
    const double top = h->v[0];
    h->v[0] = h->v[--h->n];
    if (h->n > 0)
        sift_down(h->v, h->n, 0);
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
static double row_max(const double *z, int64_t n)
{
    double m = -INFINITY;
    for (int64_t j = 0; j < n; j++) {
        if (isnan(z[j]))
            return NAN;
        if (z[j] > m)
            m = z[j];
    }
    return m;
}

/* Shifted values X_j > -1 as a max-heap in out (X_max = 0 is among them). */
static max_heap contenders(const double *z, int64_t n, double scale, double zmax, double *out)
{
    max_heap h = {out, 0};
    for (int64_t j = 0; j < n; j++) {
        const double x = scale * (z[j] - zmax);
        if (x > -1.0)
            out[h.n++] = x;
    }
    heap_build(&h);
    return h;
}

/* tau for sparsemax (alpha = 2): the largest k with 1 + k X_(k) > sum of
 * the k largest gives tau = (that sum - 1) / k. */
static double tau_sparsemax(max_heap *h)
{
    double cum = 0.0, tau = -1.0;
    for (int64_t k = 1; h->n > 0; k++) {
        const double x = heap_pop(h);
        cum += x;
        if (1.0 + (double)k * x <= cum)
            break;
        tau = (cum - 1.0) / (double)k;
    }
    return tau;
}

/* tau for 1.5-entmax: with support size k, tau solves
 * sum (X_j - tau)^2 = 1, i.e. tau = mean - sqrt((1 - k var) / k). */
static double tau_entmax15(max_heap *h)
{
    double sum = 0.0, sumsq = 0.0, tau = -1.0;
    for (int64_t k = 1; h->n > 0; k++) {
        const double x = heap_pop(h);
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

int64_t da_entmax_forward(dashattn_threshold_method method, double alpha, int iterations,
                          const double *z, int64_t n, double *p, double *scratch)
{
    const double zmax = row_max(z, n);
    if (!isfinite(zmax))
        return poison(p, n);
    double total = 0.0;
    if (method == DASHATTN_THRESHOLD_SOFTMAX) {
        for (int64_t j = 0; j < n; j++)
            total += p[j] = exp(z[j] - zmax);
    } else {
        const double scale = alpha - 1.0;
        max_heap h = contenders(z, n, scale, zmax, scratch);
        double tau;
        if (method == DASHATTN_THRESHOLD_SORT_2)
            tau = tau_sparsemax(&h);
        else if (method == DASHATTN_THRESHOLD_SORT_15)
            tau = tau_entmax15(&h);
        else /* the search needs no order */
            tau = tau_bracketed(h.v, h.n, n, alpha, iterations);
        const double r = 1.0 / scale;
        for (int64_t j = 0; j < n; j++) {
            const double t = scale * (z[j] - zmax) - tau;
            p[j] = t > 0.0 ? (r == 1.0 ? t : r == 2.0 ? t * t : pow(t, r)) : 0.0;
            total += p[j];
        }
    }
    /* Renormalise so every method returns an exact distribution. */
    int64_t support = 0;
    for (int64_t j = 0; j < n; j++) {
        p[j] /= total;
        support += p[j] > 0.0;
    }
    return support;
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
