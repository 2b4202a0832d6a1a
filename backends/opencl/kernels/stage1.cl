/* SPDX-License-Identifier: MIT */
/* Stage 1 (SPEC.md, "Stage 1"), on the block keys of summary.cl.
 *
 * Rows of one pass (a chunk of query positions) are numbered
 *   r = bh * (chunk * G) + (i - i0) * G + g
 * so that the rows of one KV head are contiguous, positions outer and the
 * group's heads inner, which is the order the stage-2 work-groups take them
 * in. Scores and then block weights live block-major in the workspace,
 * W[j * R + r], so that neighbouring work-items touch neighbouring words. */

#define DA_TS 16

/* Candidate scores q . kbar_j of the rows of one pass, a 16 x 16 tile of
 * (row, block) per work-group with both operands staged through local
 * memory. Only candidate entries are written. */
__kernel __attribute__((reqd_work_group_size(DA_TS, DA_TS, 1))) void
da_scores(__global const elem *q, long4 qs, int heads_kv, int group, long i0, long npos,
          long chunk, long qoff, long len_k, long num_blocks, int8 lay, int d,
          __global float *ws, long kbar_off, long w_off, long rows_total)
{
    __local float qt[DA_TS][DA_TS + 1], kt[DA_TS][DA_TS + 1];
    const int lx = get_local_id(0), ly = get_local_id(1);
    const long bh = get_group_id(2), b = bh / heads_kv, h = bh % heads_kv;
    const long nrows = npos * group;
    const long rt0 = get_group_id(0) * DA_TS, jt0 = get_group_id(1) * DA_TS;
    /* Later rows have the most candidates: the tile's last row bounds them. */
    const long last = min(rt0 + DA_TS, nrows) - 1;
    const da_rows lr = da_row_layout(lay, i0 + last / group + qoff, len_k);
    const da_rows fr = da_row_layout(lay, i0 + rt0 / group + qoff, len_k);
    if (jt0 >= lr.cand_end || jt0 + DA_TS <= fr.cand_begin)
        return;
    __global const float *kbar = ws + kbar_off + bh * num_blocks * d;
    /* Loads: work-item (lx, ly) fetches dim lx of row (block) ly, so
     * consecutive work-items read consecutive dims. */
    const long lrow = rt0 + ly, lblk = jt0 + ly;
    const long qbase = lrow < nrows
                           ? da_off(qs, b, h * group + lrow % group, i0 + lrow / group)
                           : 0;
    float acc = 0.0f;
    for (int c0 = 0; c0 < d; c0 += DA_TS) {
        const int c = c0 + lx;
        qt[ly][lx] = lrow < nrows && c < d ? LOAD(q, qbase + c * qs.s3) : 0.0f;
        kt[ly][lx] = lblk < num_blocks && c < d ? kbar[lblk * d + c] : 0.0f;
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int x = 0; x < DA_TS; x++)
            acc += qt[lx][x] * kt[ly][x];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    const long row = rt0 + lx, j = jt0 + ly;
    if (row >= nrows)
        return;
    const da_rows r = da_row_layout(lay, i0 + row / group + qoff, len_k);
    if (j >= r.cand_begin && j < r.cand_end)
        ws[w_off + j * rows_total + bh * chunk * group + row] = acc;
}

/* ---- alpha-entmax of one row, in the threshold method the plan chose ---- */

/* Score z of candidate column j: one row's (ng = 1), or the mean over the ng
 * consecutive rows of a group (shared mode), as the CPU backend sums it. */
inline real da_z(__global const float *w, long rows_total, long r0, int ng, long j, real scale1)
{
    if (ng == 1)
        return scale1 * (real)w[j * rows_total + r0];
    real z = 0;
    for (int g = 0; g < ng; g++)
        z += scale1 * (real)w[j * rows_total + r0 + g] / (real)ng;
    return z;
}

typedef struct da_entmax_args {
    __global float *w;
    long rows_total, r0, cb, n;
    int ng, method, iterations, topk;
    real alpha, scale1;
} da_entmax_args;

#define DA_X(a, c, zmax) (((a)->alpha - 1) * (da_z((a)->w, (a)->rows_total, (a)->r0, (a)->ng, (a)->cb + (c), (a)->scale1) - (zmax)))

/* One step of the support iteration from the sums over the scores above
 * tau (k of them, their sum s1 and sum of squares s2): the closed-form
 * threshold of that support and the next Newton iterate. */
inline void da_support_step(int r, real tau, real k, real s1, real s2, real *closed, real *next)
{
    if (r == 1) {
        *closed = *next = (s1 - 1) / k;
    } else {
        const real mean = s1 / k, delta = (1 - (s2 - s1 * mean)) / k;
        *closed = mean - sqrt(delta > 0 ? delta : (real)0);
        *next = tau + (s2 - 2 * tau * s1 + k * tau * tau - 1) / (2 * (s1 - k * tau));
    }
}

/* Exact threshold without sorting (the CPU backend's support iteration);
 * returns 0 if rounding near a tie keeps it from settling. */
inline int da_tau_support(const da_entmax_args *a, real zmax, int r, real *tau_out)
{
    real tau = -1;
    for (int step = 0; step < 64; step++) {
        real k = 0, s1 = 0, s2 = 0, lowest = INFINITY;
        for (long c = 0; c < a->n; c++) {
            const real x = DA_X(a, c, zmax);
            if (x > tau) {
                k += 1;
                s1 += x;
                s2 += x * x;
                lowest = min(lowest, x);
            }
        }
        if (k == 0)
            return 0;
        real closed, next;
        da_support_step(r, tau, k, s1, s2, &closed, &next);
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

/* The same threshold by scanning the scores in descending order (ties by
 * index), each next one found by a pass over the row. */
inline real da_tau_sorted(const da_entmax_args *a, real zmax, int r)
{
    real prev = INFINITY, sum = 0, sumsq = 0, tau = -1;
    long prev_c = -1;
    for (long k = 1; k <= a->n; k++) {
        real best = -INFINITY;
        long best_c = -1;
        for (long c = 0; c < a->n; c++) {
            const real x = DA_X(a, c, zmax);
            const int after = x < prev || (x == prev && c > prev_c);
            if (after && (best_c < 0 || x > best)) {
                best = x;
                best_c = c;
            }
        }
        if (best_c < 0 || !(best > -1))
            break;
        prev = best;
        prev_c = best_c;
        sum += best;
        if (r == 1) {
            if (1 + (real)k * best <= sum)
                break;
            tau = (sum - 1) / (real)k;
        } else {
            sumsq += best * best;
            const real mean = sum / (real)k, delta = (1 - (sumsq - sum * mean)) / (real)k;
            const real t = mean - sqrt(delta > 0 ? delta : (real)0);
            if (t > best)
                break;
            tau = t;
        }
    }
    return tau;
}

inline void da_residual(const da_entmax_args *a, real zmax, real r, real tau, real *f, real *fp)
{
    real s = -1, dv = 0;
    for (long c = 0; c < a->n; c++) {
        const real t = DA_X(a, c, zmax) - tau;
        if (t > 0) {
            const real tr1 = pow(t, r - 1);
            s += tr1 * t;
            dv -= r * tr1;
        }
    }
    *f = s;
    *fp = dv;
}

/* Bracketed search with Newton steps from the lower end on even steps and
 * bisection on odd ones, exactly `iterations` of them (as the plan says). */
inline real da_tau_bracketed(const da_entmax_args *a, real zmax)
{
    const real r = 1 / (a->alpha - 1);
    real lo = -1, hi = -pow((real)a->n, 1 - a->alpha);
    real f_lo, fp_lo;
    da_residual(a, zmax, r, lo, &f_lo, &fp_lo);
    for (int it = 0; it < a->iterations && hi > lo; it++) {
        real trial = (real)0.5 * (lo + hi);
        if (it % 2 == 0 && fp_lo < 0) {
            const real newton = lo - f_lo / fp_lo;
            if (newton > lo && newton < hi)
                trial = newton;
        }
        real f, fp;
        da_residual(a, zmax, r, trial, &f, &fp);
        if (f >= 0) {
            lo = trial;
            f_lo = f;
            fp_lo = fp;
        } else {
            hi = trial;
        }
    }
    return lo;
}

/* The release's threshold (backend.h, DASHATTN_THRESHOLD_HALLEY): exactly
 * `iterations` steps from the middle of [max x - 1, max x], x = z / 2, here
 * on x - max x (as the CPU backend: every step is the same, and the sums
 * carry no large magnitudes). A candidate outside the widened bracket, NaN
 * included, falls back to the middle. */
inline real da_tau_halley(const da_entmax_args *a, real zmax)
{
    real lo = -1, hi = 0, t = (real)-0.5;
    for (int it = 0; it < a->iterations; it++) {
        real s2 = 0, s1 = 0, active = 0;
        for (long c = 0; c < a->n; c++) {
            const real x =
                (real)0.5 * (da_z(a->w, a->rows_total, a->r0, a->ng, a->cb + c, a->scale1) - zmax);
            if (x > t) {
                s2 += (x - t) * (x - t);
                s1 += x - t;
                active += 1;
            }
        }
        const real f = s2 - 1, f1 = -2 * s1, f2 = 2 * active;
        const real cand = t - 2 * f * f1 / (2 * f1 * f1 - f * f2);
        if (f > 0)
            lo = t;
        if (f < 0)
            hi = t;
        t = cand > lo - (real)1e-5 && cand < hi + (real)1e-5 ? cand : (real)0.5 * (lo + hi);
    }
    return t;
}

inline void da_put(const da_entmax_args *a, long c, float p)
{
    for (int g = 0; g < a->ng; g++)
        a->w[(a->cb + c) * a->rows_total + a->r0 + g] = p;
}

/* Candidate c's weight under the exact threshold tau (r 1: sparsemax). */
inline void da_put_exact(const da_entmax_args *a, long c, real zmax, real tau, int r)
{
    const real t = DA_X(a, c, zmax) - tau;
    da_put(a, c, t > 0 ? (float)(r == 1 ? t : t * t) : 0.0f);
}

/* Replaces the candidates' scores in w by their weights. Method numbers are
 * dashattn_threshold_method's. */
inline void da_entmax_row(const da_entmax_args *a)
{
    real zmax = -INFINITY;
    int nan_seen = 0;
    for (long c = 0; c < a->n; c++) {
        const real z = da_z(a->w, a->rows_total, a->r0, a->ng, a->cb + c, a->scale1);
        nan_seen |= isnan(z);
        zmax = max(zmax, z);
    }
    if (nan_seen || !isfinite(zmax)) {
        for (long c = 0; c < a->n; c++)
            da_put(a, c, NAN);
        return;
    }
    if (a->method == 4) { /* top-k: the k best, ties to the lower index */
        /* The k-th best (value, index) first, then one pass that reads
         * each column before overwriting it. */
        real kth = INFINITY;
        long kth_c = -1, found = 0;
        for (long k = 0; k < a->topk; k++) {
            real best = -INFINITY;
            long best_c = -1;
            for (long c = 0; c < a->n; c++) {
                const real z = da_z(a->w, a->rows_total, a->r0, a->ng, a->cb + c, a->scale1);
                const int after = z < kth || (z == kth && c > kth_c);
                if (after && z > -INFINITY && (best_c < 0 || z > best)) {
                    best = z;
                    best_c = c;
                }
            }
            if (best_c < 0)
                break;
            kth = best;
            kth_c = best_c;
            found++;
        }
        for (long c = 0; c < a->n; c++) {
            const real z = da_z(a->w, a->rows_total, a->r0, a->ng, a->cb + c, a->scale1);
            const int keep = found > 0 && z > -INFINITY && (z > kth || (z == kth && c <= kth_c));
            da_put(a, c, keep ? 1.0f : 0.0f);
        }
        return;
    }
    if (a->method == 0) { /* softmax */
        real total = 0;
        for (long c = 0; c < a->n; c++)
            total += exp(da_z(a->w, a->rows_total, a->r0, a->ng, a->cb + c, a->scale1) - zmax);
        const real inv = 1 / total;
        for (long c = 0; c < a->n; c++)
            da_put(a, c,
                   (float)(exp(da_z(a->w, a->rows_total, a->r0, a->ng, a->cb + c, a->scale1) -
                               zmax) *
                           inv));
        return;
    }
    if (a->method == 1 || a->method == 2) { /* exact: 1.5-entmax, sparsemax */
        const int r = a->method == 2 ? 1 : 2;
        real tau;
        if (!da_tau_support(a, zmax, r, &tau))
            tau = da_tau_sorted(a, zmax, r);
        for (long c = 0; c < a->n; c++)
            da_put_exact(a, c, zmax, tau, r);
        return;
    }
    if (a->method == 5) { /* the release's Halley schedule, p not renormalised */
        const real t = da_tau_halley(a, zmax);
        for (long c = 0; c < a->n; c++) {
            const real x =
                (real)0.5 * (da_z(a->w, a->rows_total, a->r0, a->ng, a->cb + c, a->scale1) - zmax) -
                t;
            da_put(a, c, x > 0 ? (float)(x * x) : 0.0f);
        }
        return;
    }
    const real tau = da_tau_bracketed(a, zmax), r = 1 / (a->alpha - 1);
    real total = 0;
    for (long c = 0; c < a->n; c++) {
        const real t = DA_X(a, c, zmax) - tau;
        total += t > 0 ? pow(t, r) : 0;
    }
    const real inv = 1 / total;
    for (long c = 0; c < a->n; c++) {
        const real t = DA_X(a, c, zmax) - tau;
        da_put(a, c, (float)((t > 0 ? pow(t, r) : 0) * inv));
    }
}

/* Group modes as the kernels see them (dashattn_group_mode numbers): mean
 * with top-k selection is top-k on the group's mean score, like shared. */
inline int da_group_shared(int group_mode, int method)
{
    return group_mode == 1 || (group_mode == 2 && method == 4);
}

/* Candidates [cb, cb + n) of the ng rows [r0, r0 + ng) of a (block-major)
 * table each get the rows' mean: the group-mean weight in stage 1, and the
 * gradient of that weight in the backward. */
inline void da_average_column(__global float *a, long rows_total, long r0, int ng, long j)
{
    real sum = 0;
    for (int g = 0; g < ng; g++)
        sum += a[j * rows_total + r0 + g];
    const float mean = (float)(sum / (real)ng);
    for (int g = 0; g < ng; g++)
        a[j * rows_total + r0 + g] = mean;
}

inline void da_average_group(__global float *a, long rows_total, long r0, int ng, long cb, long n)
{
    for (long c = 0; c < n; c++)
        da_average_column(a, rows_total, r0, ng, cb + c);
}

inline int da_group_mean(int group_mode, int method)
{
    return group_mode == 2 && method != 4;
}

/* Candidates the flat prior keeps (SPEC.md, "Stage 2"); a NaN weight is kept
 * so that it reaches the row's output. */
inline int da_flat_kept(float w)
{
    return (real)w > (real)1e-20 || isnan(w);
}

/* One weight under the flat prior whose kept weights' mean log is mu. */
inline void da_flat_apply(__global float *x, real mu, real sigma)
{
    *x = da_flat_kept(*x) ? (float)exp((log((real)*x) - mu) / sigma) : 0.0f;
}

/* The flat prior of one row's candidates, in place of their weights:
 * exp((log w - mu) / sigma), mu the mean log w of the kept ones, else 0. */
inline void da_flat_prior(__global float *w, long rows_total, long r, long cb, long n, real sigma)
{
    real kept = 0, sum = 0;
    for (long c = 0; c < n; c++) {
        const float x = w[(cb + c) * rows_total + r];
        if (da_flat_kept(x)) {
            kept += 1;
            sum += log((real)x);
        }
    }
    const real mu = sum / kept;
    for (long c = 0; c < n; c++)
        da_flat_apply(w + (cb + c) * rows_total + r, mu, sigma);
}

/* Block weights of the rows of one pass (one work-item per row, or per
 * position of a KV head in the shared and mean modes): forced blocks 1,
 * candidates their entmax or top-k weight (the group's mean of its heads'
 * in mean mode) or its flat prior, in place of their scores. Also the
 * tokens each row reads (for the statistics) and the optional selection
 * lists. The backward keeps each row's own entmax probabilities (ph_off)
 * and the weights before the prior (wpre_off); -1 skips either.
 * For decode (seq_lens != NULL) chunk is 1 and row b's query sits at
 * seq_lens[b] - 1 among seq_lens[b] keys. */
__kernel void da_select(__global float *ws, long w_off, long rows_total, long att_off, long ph_off,
                        long wpre_off, int heads_kv, int group, long i0, long npos, long chunk,
                        long qoff, long len_k, long num_blocks, int8 lay, int method,
                        int group_mode, int iterations, int topk, real alpha, real scale1,
                        int flat, real sigma, __global const int *seq_lens,
                        __global int *sel_index, __global float *sel_weight,
                        __global int *sel_count, long max_blocks, long len_q)
{
    const long gid = get_global_id(0);
    const int shared = da_group_shared(group_mode, method);
    const int mean = da_group_mean(group_mode, method);
    const int ng = shared || mean ? group : 1;
    const long per_bh = npos * group / ng;
    if (gid >= per_bh * (rows_total / (chunk * group)))
        return;
    const long bh = gid / per_bh, rr0 = (gid % per_bh) * ng;
    const long b = bh / heads_kv, h = bh % heads_kv;
    const long pi = rr0 / group, i = i0 + pi;
    const long r0 = bh * chunk * group + rr0;
    long pos = i + qoff, keys = len_k;
    if (seq_lens) {
        keys = seq_lens[b];
        pos = keys - 1;
    }
    const da_rows L = da_row_layout(lay, pos, keys);
    const long nvis = da_visible_blocks(lay, &L, num_blocks);
    __global float *w = ws + w_off;
    const long cb = L.cand_begin, n = L.cand_end - L.cand_begin;
    if (n > 0) {
        for (int g = 0; g < (mean ? ng : 1); g++) {
            const da_entmax_args a = {w,      rows_total, r0 + g,     cb,   n,     mean ? 1 : ng,
                                      method, iterations, topk,       alpha, scale1};
            da_entmax_row(&a);
        }
        for (int g = 0; g < ng && ph_off >= 0; g++)
            for (long c = 0; c < n; c++)
                ws[ph_off + (cb + c) * rows_total + r0 + g] = w[(cb + c) * rows_total + r0 + g];
        if (mean)
            da_average_group(w, rows_total, r0, ng, cb, n);
        for (int g = 0; g < ng && wpre_off >= 0; g++)
            for (long c = 0; c < n; c++)
                ws[wpre_off + (cb + c) * rows_total + r0 + g] = w[(cb + c) * rows_total + r0 + g];
        for (int g = 0; g < ng && flat; g++)
            da_flat_prior(w, rows_total, r0 + g, cb, n, sigma);
    }
    __global int *att = (__global int *)(ws + att_off);
    for (int g = 0; g < ng; g++) {
        const long r = r0 + g;
        long attended = 0, kept = 0;
        const long srow = (b * heads_kv * group + h * group + (rr0 + g) % group) * len_q + i;
        for (long j = 0; j < nvis; j++) {
            float wj;
            if (j >= L.cand_begin && j < L.cand_end) {
                wj = w[j * rows_total + r];
            } else {
                wj = da_forced(&L, j) ? 1.0f : 0.0f;
                w[j * rows_total + r] = wj;
            }
            if (wj == 0.0f)
                continue;
            attended += da_visible_tokens(lay, &L, j);
            if (sel_index)
                sel_index[srow * max_blocks + kept] = (int)j;
            if (sel_weight)
                sel_weight[srow * max_blocks + kept] = wj;
            kept++;
        }
        for (long e = kept; e < max_blocks; e++) {
            if (sel_index)
                sel_index[srow * max_blocks + e] = -1;
            if (sel_weight)
                sel_weight[srow * max_blocks + e] = 0.0f;
        }
        if (sel_count)
            sel_count[srow] = (int)kept;
        att[r] = (int)attended;
    }
}

/* ---- da_select for decode: a work-group per row (or group) ---- */

/* Work-items of one da_select_wide work-group. */
#define DA_SEL_WG 64

/* Sums of v[0..3) and the minimum of v[3] over the work-group, in red (4 x
 * DA_SEL_WG); every work-item gets them. Starts and ends with a barrier, so
 * calls may follow one another on the same red. */
inline void da_wg_reduce(__local real *red, real v[4])
{
    const int lid = (int)get_local_id(0);
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int k = 0; k < 4; k++)
        red[k * DA_SEL_WG + lid] = v[k];
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int s = DA_SEL_WG / 2; s > 0; s >>= 1) {
        if (lid < s) {
            for (int k = 0; k < 3; k++)
                red[k * DA_SEL_WG + lid] += red[k * DA_SEL_WG + lid + s];
            red[3 * DA_SEL_WG + lid] = min(red[3 * DA_SEL_WG + lid], red[3 * DA_SEL_WG + lid + s]);
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    for (int k = 0; k < 4; k++)
        v[k] = red[k * DA_SEL_WG];
    barrier(CLK_LOCAL_MEM_FENCE);
}

/* da_entmax_row for the exact methods (1.5-entmax, sparsemax) by the whole
 * work-group: each pass of da_tau_support is one reduction, so a row of
 * thousands of candidates takes microseconds where one work-item took
 * milliseconds. Falls back to da_tau_sorted on work-item 0 where the
 * support iteration does not settle. */
inline void da_entmax_row_wide(const da_entmax_args *a, __local real *red)
{
    const int lid = (int)get_local_id(0);
    real v[4] = {0, 0, 0, INFINITY};
    for (long c = lid; c < a->n; c += DA_SEL_WG) {
        const real z = da_z(a->w, a->rows_total, a->r0, a->ng, a->cb + c, a->scale1);
        v[0] += isnan(z) ? 1 : 0;
        v[3] = min(v[3], -z); /* the maximum, as the minimum of the negation */
    }
    da_wg_reduce(red, v);
    const real zmax = -v[3];
    if (v[0] > 0 || !isfinite(zmax)) {
        for (long c = lid; c < a->n; c += DA_SEL_WG)
            da_put(a, c, NAN);
        return;
    }
    const int r = a->method == 2 ? 1 : 2;
    real tau = -1, found = -1;
    int settled = 0;
    for (int step = 0; step < 64 && !settled; step++) {
        real s[4] = {0, 0, 0, INFINITY};
        for (long c = lid; c < a->n; c += DA_SEL_WG) {
            const real x = DA_X(a, c, zmax);
            if (x > tau) {
                s[0] += 1;
                s[1] += x;
                s[2] += x * x;
                s[3] = min(s[3], x);
            }
        }
        da_wg_reduce(red, s);
        const real k = s[0], s1 = s[1], s2 = s[2], lowest = s[3];
        if (k == 0)
            break;
        real closed, next;
        da_support_step(r, tau, k, s1, s2, &closed, &next);
        if (lowest >= closed) {
            found = closed;
            settled = 1;
        } else if (!(next > tau)) {
            break;
        } else {
            tau = next;
        }
    }
    if (!settled) {
        if (lid == 0)
            red[0] = da_tau_sorted(a, zmax, r);
        barrier(CLK_LOCAL_MEM_FENCE);
        found = red[0];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    for (long c = lid; c < a->n; c += DA_SEL_WG)
        da_put_exact(a, c, zmax, found, r);
}

/* da_select at decode (seq_lens given, chunk 1, no selection output) for the
 * exact methods: the same weights and counts, each unit (a row, or the
 * group's rows) taken by a work-group of DA_SEL_WG. With one unit per
 * sequence and KV head there are too few for a work-item each. */
__kernel __attribute__((reqd_work_group_size(DA_SEL_WG, 1, 1))) void
da_select_wide(__global float *ws, long w_off, long rows_total, long att_off, int heads_kv,
               int group, long num_blocks, int8 lay, int method, int group_mode, real alpha,
               real scale1, int flat, real sigma, __global const int *seq_lens)
{
    __local real red[4 * DA_SEL_WG];
    const long unit = get_group_id(0);
    const int lid = (int)get_local_id(0);
    const int shared = da_group_shared(group_mode, method);
    const int mean = da_group_mean(group_mode, method);
    const int ng = shared || mean ? group : 1;
    const long per_bh = group / ng; /* one position */
    if (unit >= per_bh * (rows_total / group))
        return;
    const long bh = unit / per_bh, rr0 = (unit % per_bh) * ng;
    const long b = bh / heads_kv;
    const long r0 = bh * group + rr0;
    const long keys = seq_lens[b];
    const da_rows L = da_row_layout(lay, keys - 1, keys);
    const long nvis = da_visible_blocks(lay, &L, num_blocks);
    __global float *w = ws + w_off;
    const long cb = L.cand_begin, n = L.cand_end - L.cand_begin;
    if (n > 0) {
        for (int g = 0; g < (mean ? ng : 1); g++) {
            const da_entmax_args a = {w,      rows_total, r0 + g, cb,   n,    mean ? 1 : ng,
                                      method, 0,          0,      alpha, scale1};
            da_entmax_row_wide(&a, red);
        }
        barrier(CLK_GLOBAL_MEM_FENCE);
        if (mean)
            for (long c = lid; c < n; c += DA_SEL_WG)
                da_average_column(w, rows_total, r0, ng, cb + c);
        barrier(CLK_GLOBAL_MEM_FENCE);
        for (int g = 0; g < ng && flat; g++) {
            const long r = r0 + g;
            real s[4] = {0, 0, 0, INFINITY};
            for (long c = lid; c < n; c += DA_SEL_WG) {
                const float x = w[(cb + c) * rows_total + r];
                if (da_flat_kept(x)) {
                    s[0] += 1;
                    s[1] += log((real)x);
                }
            }
            da_wg_reduce(red, s);
            const real mu = s[1] / s[0];
            for (long c = lid; c < n; c += DA_SEL_WG)
                da_flat_apply(w + (cb + c) * rows_total + r, mu, sigma);
        }
    }
    barrier(CLK_GLOBAL_MEM_FENCE);
    __global int *att = (__global int *)(ws + att_off);
    for (int g = 0; g < ng; g++) {
        const long r = r0 + g;
        real s[4] = {0, 0, 0, INFINITY};
        for (long j = lid; j < nvis; j += DA_SEL_WG) {
            float wj;
            if (j >= L.cand_begin && j < L.cand_end) {
                wj = w[j * rows_total + r];
            } else {
                wj = da_forced(&L, j) ? 1.0f : 0.0f;
                w[j * rows_total + r] = wj;
            }
            if (wj != 0.0f)
                s[0] += (real)da_visible_tokens(lay, &L, j);
        }
        da_wg_reduce(red, s);
        if (lid == 0)
            att[r] = (int)s[0];
    }
}
