/* SPDX-License-Identifier: MIT */
/* Stage-1 thresholds on the device: a group of threads per query row (a
 * logical warp or a block, gpu_group.cuh), the row's candidate scores
 * z[0..n) in shared memory. The methods are the CPU backend's
 * (cpu_entmax.c), with reductions in double in place of its loops; the
 * result is the dagpu_row_param that stage 2 applies. */
#ifndef DASHATTN_GPU_ENTMAX_CUH
#define DASHATTN_GPU_ENTMAX_CUH

#include "gpu_device.cuh"
#include "gpu_group.cuh"

/* Exact threshold for r = 1 (sparsemax) or r = 2 (1.5-entmax) by iterating
 * on the support (see da_entmax_threshold_support); false if it did not
 * settle. */
template <typename Grp>
static __device__ bool da_support_threshold(const Grp &grp, const float *z, int n, float zmax,
                                            double scale, int r, double tau, double *tau_out)
{
    const int rank = grp.rank(), stride = grp.size();
    for (int step = 0; step < 64; step++) {
        double k = 0.0, s1 = 0.0, s2 = 0.0, lowest = DA_INF;
        for (int j = rank; j < n; j += stride) {
            const double x = scale * ((double)z[j] - zmax);
            if (x > tau) {
                k += 1.0;
                s1 += x;
                s2 += x * x;
                lowest = fmin(lowest, x);
            }
        }
        double red[3] = {k, s1, s2};
        grp.template sums<double, 3>(red, &lowest);
        k = red[0];
        s1 = red[1];
        s2 = red[2];
        if (k == 0.0)
            return false;
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
            return true;
        }
        if (!(next > tau))
            return false;
        tau = next;
    }
    return false;
}

/* A start for da_support_threshold: the same Newton steps in float (half
 * the cost of double on every reduction) from tau, a lower bound of the
 * threshold (-1, or da_support_bracket's), stopped short of the root by a
 * margin far above float rounding, so the double iteration that follows
 * only confirms the support in a step or two. -1 if float does not settle. */
template <typename Grp>
static __device__ double da_support_start(const Grp &grp, const float *z, int n, float zmax,
                                          float scale, int r, float tau)
{
    const int rank = grp.rank(), stride = grp.size();
    for (int step = 0; step < 64; step++) {
        float k = 0.0f, s1 = 0.0f, s2 = 0.0f;
        for (int j = rank; j < n; j += stride) {
            const float x = scale * (z[j] - zmax);
            if (x > tau) {
                k += 1.0f;
                s1 += x;
                s2 += x * x;
            }
        }
        float red[3] = {k, s1, s2};
        grp.template sums<float, 3>(red, nullptr);
        k = red[0];
        s1 = red[1];
        s2 = red[2];
        if (k == 0.0f)
            return -1.0;
        const float next =
            r == 1 ? (s1 - 1.0f) / k
                   : tau + (s2 - 2.0f * tau * s1 + k * tau * tau - 1.0f) / (2.0f * (s1 - k * tau));
        if (!(next > tau) || next - tau < 1e-6f)
            return fmax(-1.0, (double)tau - 1e-4);
        tau = next;
    }
    return -1.0;
}

/* Trial thresholds of one da_support_bracket pass. */
#define DA_SECTIONS 8

/* A lower bound of the threshold for da_support_start, closer than -1: two
 * passes that each test DA_SECTIONS evenly spaced thresholds at once (one
 * reduction of DA_SECTIONS sums), keeping the highest whose f = sum
 * (x - t)_+^r - 1 is not negative. The threshold lies in [-1, -n^(-1/r)]
 * (all n scores at the maximum), so the bracket shrinks 81-fold, and the
 * Newton steps that follow start near the root: for a whole thread block
 * per row (decode) a pass costs about what a Newton step does, and the
 * steps from -1 were most of the search. */
template <typename Grp>
static __device__ float da_support_bracket(const Grp &grp, const float *z, int n, float zmax,
                                           float scale, int r)
{
    const int rank = grp.rank(), stride = grp.size();
    float lo = -1.0f, hi = r == 1 ? -1.0f / (float)n : -rsqrtf((float)n);
    for (int pass = 0; pass < 2 && hi > lo; pass++) {
        const float step = (hi - lo) / (float)(DA_SECTIONS + 1);
        float f[DA_SECTIONS];
#pragma unroll
        for (int k = 0; k < DA_SECTIONS; k++)
            f[k] = 0.0f;
        for (int j = rank; j < n; j += stride) {
            const float x = scale * (z[j] - zmax);
#pragma unroll
            for (int k = 0; k < DA_SECTIONS; k++) {
                const float u = x - (lo + step * (float)(k + 1));
                if (u > 0.0f)
                    f[k] += r == 1 ? u : u * u;
            }
        }
        grp.template sums<float, DA_SECTIONS>(f, nullptr);
        /* f falls with t: the first trial below 1 ends the bracket. */
        int below = 0;
        while (below < DA_SECTIONS && f[below] >= 1.0f)
            below++;
        if (below < DA_SECTIONS)
            hi = lo + step * (float)(below + 1);
        lo += step * (float)below;
    }
    return lo;
}

/* f(tau) = sum (X - tau)_+^r - 1 and its derivative, over the warp. */
template <typename Grp>
static __device__ void da_residual(const Grp &grp, const float *z, int n, float zmax, double scale,
                                   double r, double tau, double *f, double *fp)
{
    const int rank = grp.rank(), stride = grp.size();
    double s = 0.0, d = 0.0;
    for (int j = rank; j < n; j += stride) {
        const double t = scale * ((double)z[j] - zmax) - tau;
        if (t > 0.0) {
            const double tr1 = r == 2.0 ? t : r == 1.0 ? 1.0 : pow(t, r - 1.0);
            s += tr1 * t;
            d -= r * tr1;
        }
    }
    double red[2] = {s, d};
    grp.template sums<double, 2>(red, nullptr);
    *f = red[0] - 1.0;
    *fp = red[1];
}

/* The bracketed search of the plan (tau_bracketed in cpu_entmax.c). With
 * exact = true it is the fallback of the exact methods: enough bisection
 * steps to reach double precision. */
template <typename Grp>
static __device__ double da_bracketed_threshold(const Grp &grp, const float *z, int n, float zmax,
                                                double alpha, int iterations)
{
    const double scale = alpha - 1.0, r = 1.0 / scale;
    double lo = -1.0, hi = -pow((double)n, 1.0 - alpha);
    double f_lo, fp_lo;
    da_residual(grp, z, n, zmax, scale, r, lo, &f_lo, &fp_lo);
    for (int it = 0; it < iterations && hi > lo; it++) {
        double trial = 0.5 * (lo + hi);
        if (it % 2 == 0 && fp_lo < 0.0) {
            const double newton = lo - f_lo / fp_lo;
            if (newton > lo && newton < hi)
                trial = newton;
        }
        double f, fp;
        da_residual(grp, z, n, zmax, scale, r, trial, &f, &fp);
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

/* The release's fixed schedule (DASHATTN_THRESHOLD_HALLEY, alpha 1.5), in
 * units x = (z - zmax) / 2: shifting x by its maximum moves t, the bracket
 * and every test by the same amount, so this is the release's iteration on
 * x = z / 2 up to rounding. Returns t; p = (x - t)_+^2, not renormalised. */
template <typename Grp>
static __device__ double da_halley_threshold(const Grp &grp, const float *z, int n, float zmax,
                                             int steps)
{
    const int rank = grp.rank(), stride = grp.size();
    double lo = -1.0, hi = 0.0, t = -0.5;
    for (int step = 0; step < steps; step++) {
        double s2 = 0.0, s1 = 0.0, above = 0.0;
        for (int j = rank; j < n; j += stride) {
            const double u = 0.5 * ((double)z[j] - zmax) - t;
            if (u > 0.0) {
                s2 += u * u;
                s1 += u;
                above += 1.0;
            }
        }
        double red[3] = {s2, s1, above};
        grp.template sums<double, 3>(red, nullptr);
        const double f = red[0] - 1.0, f1 = -2.0 * red[1], f2 = 2.0 * red[2];
        const double next = t - 2.0 * f * f1 / (2.0 * f1 * f1 - f * f2);
        if (f > 0.0)
            lo = t;
        if (f < 0.0)
            hi = t;
        /* A NaN or infinite step fails the test and bisects. */
        t = next > lo - 1e-5 && next < hi + 1e-5 ? next : 0.5 * (lo + hi);
    }
    return t;
}

/* Order-preserving map of a float onto unsigned integers. */
static __device__ __forceinline__ unsigned da_float_key(float x)
{
    const unsigned u = __float_as_uint(x);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

static __device__ __forceinline__ float da_key_float(unsigned k)
{
    return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

template <typename Grp>
static __device__ int da_count_ge(const Grp &grp, const float *z, int n, unsigned key)
{
    const int rank = grp.rank(), stride = grp.size();
    int c = 0;
    for (int j = rank; j < n; j += stride)
        c += z[j] > -DA_INF_F && da_float_key(z[j]) >= key;
    c = grp.sum(c);
    return c;
}

/* Top-k as a threshold on z: a lies between the k-th and the (k+1)-th best
 * score, so a score recomputed to within rounding keeps the same side. Ties
 * at the k-th score keep every tied block (the CPU keeps the lower indices). */
template <typename Grp>
static __device__ float da_topk_threshold(const Grp &grp, const float *z, int n, int k)
{
    const int rank = grp.rank(), stride = grp.size();
    if (da_count_ge(grp, z, n, 0u) <= k)
        return -DA_INF_F;
    unsigned res = 0;
    for (int bit = 31; bit >= 0; bit--) {
        const unsigned trial = res | (1u << bit);
        if (da_count_ge(grp, z, n, trial) >= k)
            res = trial;
    }
    const float vk = da_key_float(res);
    if (da_count_ge(grp, z, n, res) > k)
        return nextafterf(vk, -DA_INF_F);
    float below = -DA_INF_F;
    for (int j = rank; j < n; j += stride)
        if (z[j] < vk)
            below = fmaxf(below, z[j]);
    below = grp.max(below);
    const float mid = below + 0.5f * (vk - below);
    return mid < vk && mid >= below ? mid : below;
}

/* The row's prior parameters from its n >= 1 candidate scores. bracket: the
 * exact searches start from da_support_bracket (worth it where a step is a
 * block-wide reduction, not for a warp whose steps are cheap). */
template <typename Grp>
static __device__ dagpu_row_param da_row_threshold(const Grp &grp, const float *z, int n,
                                                   const dagpu_params &p, bool bracket = false)
{
    const int rank = grp.rank(), stride = grp.size();
    dagpu_row_param rp = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    float zmax = -DA_INF_F;
    int nans = 0;
    for (int j = rank; j < n; j += stride) {
        zmax = fmaxf(zmax, z[j]);
        nans += isnan(z[j]);
    }
    /* The maximum and the NaN count in one reduction (a block's costs a
     * barrier): the maximum as the minimum of the negation. */
    double count[1] = {(double)nans}, lowest = -(double)zmax;
    grp.template sums<double, 1>(count, &lowest);
    zmax = (float)-lowest;
    nans = (int)count[0];
    if (p.method == DASHATTN_THRESHOLD_TOPK) {
        rp.mode = DAGPU_PRIOR_TOPK;
        rp.a = nans ? DA_NAN_F : da_topk_threshold(grp, z, n, p.topk);
        return rp;
    }
    rp.mode = p.method == DASHATTN_THRESHOLD_SOFTMAX ? DAGPU_PRIOR_SOFTMAX : DAGPU_PRIOR_ENTMAX;
    if (nans || !isfinite(zmax)) {
        rp.a = DA_NAN_F;
        return rp;
    }
    rp.a = zmax;
    if (p.method == DASHATTN_THRESHOLD_SOFTMAX) {
        double total = 0.0;
        for (int j = rank; j < n; j += stride)
            total += exp((double)z[j] - zmax);
        rp.a = (float)(zmax + log(grp.sum(total)));
        return rp;
    }
    const double alpha = p.alpha;
    if (p.method == DASHATTN_THRESHOLD_HALLEY) {
        /* Stage 2's p = ((alpha - 1)(z - a) - tau)_+^2 with alpha 1.5 and
         * log2 norm 0 is exactly (x - t)_+^2. */
        rp.tau = (float)da_halley_threshold(grp, z, n, zmax, p.iterations);
        return rp;
    }
    if (p.method == DASHATTN_THRESHOLD_SORT_15 || p.method == DASHATTN_THRESHOLD_SORT_2) {
        const int r = p.method == DASHATTN_THRESHOLD_SORT_2 ? 1 : 2;
        double tau;
        const float scale = (float)(alpha - 1.0);
        const float lo = bracket ? da_support_bracket(grp, z, n, zmax, scale, r) : -1.0f;
        const double start = da_support_start(grp, z, n, zmax, scale, r, lo);
        if (!da_support_threshold(grp, z, n, zmax, alpha - 1.0, r, start, &tau) &&
            !da_support_threshold(grp, z, n, zmax, alpha - 1.0, r, -1.0, &tau))
            tau = da_bracketed_threshold(grp, z, n, zmax, alpha, 128);
        rp.tau = (float)tau;
        return rp;
    }
    const double tau = da_bracketed_threshold(grp, z, n, zmax, alpha, p.iterations);
    rp.tau = (float)tau;
    /* The search stops short of the root: renormalise as the CPU does. */
    const double scale = alpha - 1.0, r = 1.0 / scale;
    double total = 0.0;
    for (int j = rank; j < n; j += stride) {
        const double t = scale * ((double)z[j] - zmax) - tau;
        if (t > 0.0)
            total += pow(t, r);
    }
    rp.log2norm = (float)log2(grp.sum(total));
    return rp;
}

#endif
