/* SPDX-License-Identifier: MIT */
/* Stage-1 solvers of the CPU backend (cpu_entmax.h) against the bisection
 * reference of tests/reference.c: every threshold method, edge cases, top-k,
 * and the entmax backward against finite differences. */
#include "cpu_entmax.h"
#include "reference.h"
#include "synthetic.h"
#include "testutil.h"

#include <dashattn.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_N 256

/* Agreement the solvers must reach with the reference. A guarded step of
 * the bracketed search at least halves the bracket every second iteration, so
 * this many steps reach 2^-50 on the initial width of at most 1; p then moves
 * by at most (1/(alpha-1)) times that, far below P_TOL. */
#define TIGHT_ITERATIONS 100
#define P_TOL 1e-9

static const int tight_iterations = TIGHT_ITERATIONS;

static const char *method_name(dashattn_threshold_method m)
{
    switch (m) {
    case DASHATTN_THRESHOLD_SOFTMAX:
        return "softmax";
    case DASHATTN_THRESHOLD_SORT_15:
        return "sort-1.5";
    case DASHATTN_THRESHOLD_SORT_2:
        return "sort-2";
    case DASHATTN_THRESHOLD_BRACKETED:
        return "bracketed";
    default:
        return "?";
    }
}

/* Run one solver on z and compare with the reference; tag names the input. */
static void check_solver(dashattn_threshold_method m, double alpha, const double *z, int64_t n,
                         const char *tag)
{
    double p[MAX_N], ref[MAX_N], scratch[2 * MAX_N];
    for (int64_t j = 0; j < n; j++)
        p[j] = -7.0; /* poison: every entry must be written */
    const int64_t support = da_entmax_forward(m, alpha, tight_iterations, z, n, p, scratch);
    ref_entmax(alpha, z, n, ref);
    double max_err = 0.0, sum = 0.0;
    int64_t positive = 0, support_mismatch = 0;
    for (int64_t j = 0; j < n; j++) {
        max_err = fmax(max_err, isfinite(p[j]) && p[j] >= 0.0 ? fabs(p[j] - ref[j]) : INFINITY);
        sum += p[j];
        positive += p[j] > 0.0;
        /* Entries within P_TOL of the threshold may fall on either side. */
        if ((p[j] > 0.0) != (ref[j] > 0.0) && fmax(p[j], ref[j]) > P_TOL)
            support_mismatch++;
    }
    TU_CHECK(max_err <= P_TOL, "%s alpha %g %s n=%lld: max |p - ref| = %.3g", method_name(m), alpha,
             tag, (long long)n, max_err);
    TU_CHECK(fabs(sum - 1.0) <= 1e-12, "%s alpha %g %s n=%lld: sum p = %.17g", method_name(m),
             alpha, tag, (long long)n, sum);
    TU_CHECK(support == positive, "%s alpha %g %s: returned support %lld, %lld entries > 0",
             method_name(m), alpha, tag, (long long)support, (long long)positive);
    TU_CHECK(support_mismatch == 0, "%s alpha %g %s: %lld entries differ in support",
             method_name(m), alpha, tag, (long long)support_mismatch);
}

typedef struct solver {
    dashattn_threshold_method method;
    double alpha;
} solver;

static const solver solvers[] = {
    {DASHATTN_THRESHOLD_SOFTMAX, 1.0},   {DASHATTN_THRESHOLD_SORT_15, 1.5},
    {DASHATTN_THRESHOLD_BRACKETED, 1.5}, {DASHATTN_THRESHOLD_SORT_2, 2.0},
    {DASHATTN_THRESHOLD_BRACKETED, 2.0}, {DASHATTN_THRESHOLD_BRACKETED, 1.25},
    {DASHATTN_THRESHOLD_BRACKETED, 1.7}, {DASHATTN_THRESHOLD_BRACKETED, 1.3},
};
#define NUM_SOLVERS (sizeof solvers / sizeof solvers[0])

static void test_random(void)
{
    static const int64_t sizes[] = {1, 2, 3, 5, 17, 64, 200};
    static const double scales[] = {0.1, 1.0, 4.0, 30.0};
    da_synth_rng rng;
    da_synth_seed(&rng, 11);
    double z[MAX_N];
    for (size_t a = 0; a < sizeof sizes / sizeof sizes[0]; a++) {
        for (size_t b = 0; b < sizeof scales / sizeof scales[0]; b++) {
            for (int rep = 0; rep < 3; rep++) {
                for (int64_t j = 0; j < sizes[a]; j++)
                    z[j] = scales[b] * da_synth_normal(&rng) + 5.0 * rep;
                char tag[64];
                snprintf(tag, sizeof tag, "random(scale %g, rep %d)", scales[b], rep);
                for (size_t s = 0; s < NUM_SOLVERS; s++)
                    check_solver(solvers[s].method, solvers[s].alpha, z, sizes[a], tag);
            }
        }
    }
}

/* Sort-based exact solutions and the bracketed search agree with each other
 * (not only each with the reference). */
static void test_exact_vs_bracketed(void)
{
    da_synth_rng rng;
    da_synth_seed(&rng, 12);
    double z[MAX_N], p1[MAX_N], p2[MAX_N], scratch[2 * MAX_N];
    for (int rep = 0; rep < 40; rep++) {
        const int64_t n = 1 + (int64_t)(da_synth_uniform(&rng) * 150);
        for (int64_t j = 0; j < n; j++)
            z[j] = 3.0 * da_synth_normal(&rng);
        for (int k = 0; k < 2; k++) {
            const double alpha = k == 0 ? 1.5 : 2.0;
            const dashattn_threshold_method exact =
                k == 0 ? DASHATTN_THRESHOLD_SORT_15 : DASHATTN_THRESHOLD_SORT_2;
            const int64_t s1 = da_entmax_forward(exact, alpha, 0, z, n, p1, scratch);
            const int64_t s2 = da_entmax_forward(DASHATTN_THRESHOLD_BRACKETED, alpha,
                                                 tight_iterations, z, n, p2, scratch);
            double err = 0.0;
            for (int64_t j = 0; j < n; j++)
                err = fmax(err, fabs(p1[j] - p2[j]));
            TU_CHECK(err <= P_TOL && s1 == s2,
                     "alpha %g n=%lld: exact vs bracketed max diff %.3g, support %lld vs %lld",
                     alpha, (long long)n, err, (long long)s1, (long long)s2);
        }
    }
}

static void test_edge_cases(void)
{
    const double ninf = -INFINITY;
    double p[MAX_N], scratch[2 * MAX_N];
    for (size_t s = 0; s < NUM_SOLVERS; s++) {
        const dashattn_threshold_method m = solvers[s].method;
        const double alpha = solvers[s].alpha;
        const char *name = method_name(m);

        /* One candidate: all the mass. */
        const double one[1] = {-3.25};
        int64_t sup = da_entmax_forward(m, alpha, tight_iterations, one, 1, p, scratch);
        TU_CHECK(p[0] == 1.0 && sup == 1, "%s alpha %g: single candidate p = %.17g", name, alpha,
                 p[0]);

        /* Exact ties get exactly equal probabilities. */
        const double ties[5] = {2.0, 2.0, 2.0, -1.0, 0.5};
        check_solver(m, alpha, ties, 5, "ties");
        da_entmax_forward(m, alpha, tight_iterations, ties, 5, p, scratch);
        TU_CHECK(p[0] == p[1] && p[1] == p[2], "%s alpha %g: tied entries %.17g %.17g %.17g", name,
                 alpha, p[0], p[1], p[2]);

        /* -inf entries get exactly 0 and do not disturb the rest. */
        const double with_inf[6] = {1.0, ninf, 0.3, ninf, 2.0, -0.5};
        check_solver(m, alpha, with_inf, 6, "-inf entries");
        da_entmax_forward(m, alpha, tight_iterations, with_inf, 6, p, scratch);
        TU_CHECK(p[1] == 0.0 && p[3] == 0.0, "%s alpha %g: -inf entries got %g, %g", name, alpha,
                 p[1], p[3]);

        /* Huge magnitudes: the solution must not lose the O(1) structure. */
        const double huge[4] = {1e30, -1e30, 1e30, 0.0};
        sup = da_entmax_forward(m, alpha, tight_iterations, huge, 4, p, scratch);
        TU_CHECK(fabs(p[0] - 0.5) <= 1e-12 && fabs(p[2] - 0.5) <= 1e-12 && p[1] == 0.0 &&
                     p[3] == 0.0 && sup == 2,
                 "%s alpha %g: huge scores gave %g %g %g %g (support %lld)", name, alpha, p[0],
                 p[1], p[2], p[3], (long long)sup);

        /* All equal: uniform. */
        double equal[7];
        for (int j = 0; j < 7; j++)
            equal[j] = 0.3;
        sup = da_entmax_forward(m, alpha, tight_iterations, equal, 7, p, scratch);
        double err = 0.0;
        for (int j = 0; j < 7; j++)
            err = fmax(err, fabs(p[j] - 1.0 / 7.0));
        TU_CHECK(err <= 1e-14 && sup == 7, "%s alpha %g: all-equal input off uniform by %g", name,
                 alpha, err);

        /* NaN in, NaN out, everywhere. */
        const double with_nan[3] = {1.0, NAN, 2.0};
        da_entmax_forward(m, alpha, tight_iterations, with_nan, 3, p, scratch);
        TU_CHECK(isnan(p[0]) && isnan(p[1]) && isnan(p[2]), "%s alpha %g: NaN input gave %g %g %g",
                 name, alpha, p[0], p[1], p[2]);
    }
}

static void test_topk(void)
{
    da_synth_rng rng;
    da_synth_seed(&rng, 13);
    double z[MAX_N], p[MAX_N], ref[MAX_N], scratch[2 * MAX_N];
    for (int rep = 0; rep < 60; rep++) {
        const int64_t n = 1 + rep % 40;
        /* Integers in [0, 5): plenty of ties. */
        for (int64_t j = 0; j < n; j++)
            z[j] = floor(5.0 * da_synth_uniform(&rng));
        const int64_t ks[4] = {1, 2, 5, n + rep % 3};
        for (int a = 0; a < 4; a++) {
            const int64_t count = da_topk_forward(z, n, ks[a], p, scratch);
            ref_topk(z, n, ks[a], ref);
            int64_t bad = -1, ones = 0;
            for (int64_t j = 0; j < n; j++) {
                if (p[j] != ref[j] && bad < 0)
                    bad = j;
                ones += p[j] == 1.0;
            }
            TU_CHECK(bad < 0, "topk n=%lld k=%lld: entry %lld is %g, want %g", (long long)n,
                     (long long)ks[a], (long long)bad, bad >= 0 ? p[bad] : 0.0,
                     bad >= 0 ? ref[bad] : 0.0);
            const int64_t want = ks[a] < n ? ks[a] : n;
            TU_CHECK(count == want && ones == want, "topk n=%lld k=%lld: count %lld, ones %lld",
                     (long long)n, (long long)ks[a], (long long)count, (long long)ones);
        }
    }
    /* Ties go to the lower index. */
    const double tie[5] = {1.0, 2.0, 2.0, 2.0, 0.0};
    da_topk_forward(tie, 5, 2, p, scratch);
    TU_CHECK(p[0] == 0.0 && p[1] == 1.0 && p[2] == 1.0 && p[3] == 0.0 && p[4] == 0.0,
             "topk ties: got %g %g %g %g %g", p[0], p[1], p[2], p[3], p[4]);
    /* -inf is never selected, even when k leaves room for it. */
    const double with_inf[5] = {-INFINITY, 1.0, -INFINITY, 2.0, 0.0};
    const int64_t count = da_topk_forward(with_inf, 5, 4, p, scratch);
    TU_CHECK(count == 3 && p[0] == 0.0 && p[2] == 0.0 && p[1] == 1.0 && p[3] == 1.0 && p[4] == 1.0,
             "topk with -inf: count %lld, got %g %g %g %g %g", (long long)count, p[0], p[1], p[2],
             p[3], p[4]);
}

/* f(z) = sum_j g_j entmax(z)_j, by the reference. */
static double loss_of(double alpha, const double *z, const double *g, int64_t n, double *p)
{
    ref_entmax(alpha, z, n, p);
    double f = 0.0;
    for (int64_t j = 0; j < n; j++)
        f += g[j] * p[j];
    return f;
}

static int same_support(const double *a, const double *b, int64_t n)
{
    for (int64_t j = 0; j < n; j++)
        if ((a[j] > 0.0) != (b[j] > 0.0))
            return 0;
    return 1;
}

static void test_backward(void)
{
    static const double alphas[] = {1.5, 2.0, 1.3, 1.0};
    const double h = 1e-5;
    da_synth_rng rng;
    da_synth_seed(&rng, 14);
    enum { N = 12 };
    double z[N], g[N], p[N], dz[N], pp[N], pm[N], zz[N];
    for (size_t a = 0; a < sizeof alphas / sizeof alphas[0]; a++) {
        for (int rep = 0; rep < 5; rep++) {
            for (int j = 0; j < N; j++) {
                z[j] = 1.5 * da_synth_normal(&rng);
                g[j] = da_synth_normal(&rng);
            }
            ref_entmax(alphas[a], z, N, p);
            da_entmax_backward(alphas[a], p, g, N, dz);
            int tested = 0;
            double max_err = 0.0;
            for (int j = 0; j < N; j++) {
                for (int m = 0; m < N; m++)
                    zz[m] = z[m];
                zz[j] = z[j] + h;
                const double fp = loss_of(alphas[a], zz, g, N, pp);
                zz[j] = z[j] - h;
                const double fm = loss_of(alphas[a], zz, g, N, pm);
                /* Central differences are only valid where the support is
                 * the same on both sides. */
                if (!same_support(pp, p, N) || !same_support(pm, p, N))
                    continue;
                tested++;
                max_err = fmax(max_err, fabs(dz[j] - (fp - fm) / (2.0 * h)));
                if (p[j] == 0.0)
                    TU_CHECK(dz[j] == 0.0, "alpha %g: dz off the support is %g", alphas[a], dz[j]);
            }
            TU_CHECK(tested >= N / 2, "alpha %g rep %d: only %d coordinates testable", alphas[a],
                     rep, tested);
            TU_CHECK(max_err <= 1e-7, "alpha %g rep %d: backward vs finite differences %.3g",
                     alphas[a], rep, max_err);
        }
    }
}

/* The bracketed search with the iteration count a plan fixes: a guarded step
 * halves the bracket at least every second iteration, so after n steps tau is
 * within 2^(-n/2) (in (alpha - 1) z units) and p within (1/(alpha-1)) times
 * that, doubled for the renormalisation. */
static void test_plan_iterations(void)
{
    dashattn_context_options opt;
    dashattn_context_options_init(&opt);
    opt.backend = "cpu";
    opt.num_threads = 1;
    dashattn_context *ctx = NULL;
    dashattn_status st = dashattn_context_create(&opt, &ctx);
    TU_CHECK(st == DASHATTN_OK, "context_create(cpu): %s", dashattn_last_error());
    if (st != DASHATTN_OK)
        return;
    static const double alphas[] = {1.1, 1.3, 1.7};
    static const dashattn_dtype dtypes[] = {DASHATTN_F32, DASHATTN_F16, DASHATTN_BF16};
    da_synth_rng rng;
    da_synth_seed(&rng, 15);
    double z[MAX_N], p[MAX_N], ref[MAX_N], scratch[2 * MAX_N];
    for (size_t a = 0; a < sizeof alphas / sizeof alphas[0]; a++) {
        for (size_t t = 0; t < sizeof dtypes / sizeof dtypes[0]; t++) {
            dashattn_problem pr;
            dashattn_problem_init(&pr, 1, 1, 1, 1, 4096, 64);
            pr.alpha = alphas[a];
            pr.dtype = dtypes[t];
            dashattn_plan *plan = NULL;
            st = dashattn_plan_create(ctx, &pr, &plan);
            TU_CHECK(st == DASHATTN_OK, "plan: %s", dashattn_last_error());
            if (st != DASHATTN_OK)
                continue;
            const int iters = dashattn_plan_threshold_iterations(plan);
            /* Pinned: 2 ceil(log2(1 / tolerance)) with tolerance 2^-26 for f32
             * and 2^-14 for f16/bf16 (a guarded step at least halves the
             * bracket every second step). */
            const int pinned = dtypes[t] == DASHATTN_F32 ? 52 : 28;
            TU_CHECK(iters == pinned,
                     "alpha %g %s: the plan fixed %d iterations, SPEC's schedule %d", alphas[a],
                     dashattn_dtype_name(dtypes[t]), iters, pinned);
            const double bound = 2.0 * ldexp(1.0, -iters / 2) / (alphas[a] - 1.0) + 1e-12;
            double worst = 0.0;
            for (int rep = 0; rep < 20; rep++) {
                const int64_t n = 1 + (int64_t)(da_synth_uniform(&rng) * 250);
                for (int64_t j = 0; j < n; j++)
                    z[j] = 3.0 * da_synth_normal(&rng);
                da_entmax_forward(DASHATTN_THRESHOLD_BRACKETED, alphas[a], iters, z, n, p, scratch);
                ref_entmax(alphas[a], z, n, ref);
                for (int64_t j = 0; j < n; j++)
                    worst = fmax(worst, isfinite(p[j]) ? fabs(p[j] - ref[j]) : INFINITY);
            }
            TU_CHECK(worst <= bound, "alpha %g %s, %d plan iterations: max |p - ref| %.3g > %.3g",
                     alphas[a], dashattn_dtype_name(dtypes[t]), iters, worst, bound);
            /* fp32 inputs need p to about fp32 resolution. */
            if (dtypes[t] == DASHATTN_F32)
                TU_CHECK(worst <= 1e-6, "alpha %g f32: plan iterations leave p off by %.3g",
                         alphas[a], worst);
            dashattn_plan_destroy(plan);
        }
    }
    dashattn_context_destroy(ctx);
}

/* The Halley schedule against the reference's, written from SPEC.md: the
 * same steps give the same p (not renormalised: with few steps the sum is
 * off 1), more steps converge to exact 1.5-entmax, and the plan carries
 * halley_steps. */
static void test_halley(void)
{
    da_synth_rng rng;
    da_synth_seed(&rng, 16);
    double z[MAX_N], p[MAX_N], ref[MAX_N], exact[MAX_N], scratch[2 * MAX_N];
    double worst = 0.0, worst_converged = 0.0, off_one = 0.0;
    for (int rep = 0; rep < 200; rep++) {
        const int64_t n = 1 + (int64_t)(da_synth_uniform(&rng) * 200);
        const double spread = 0.5 + 4.0 * da_synth_uniform(&rng);
        for (int64_t j = 0; j < n; j++)
            z[j] = spread * da_synth_normal(&rng);
        const int steps = 1 + rep % 4;
        da_entmax_forward(DASHATTN_THRESHOLD_HALLEY, 1.5, steps, z, n, p, scratch);
        ref_halley(z, n, steps, ref);
        double sum = 0.0;
        for (int64_t j = 0; j < n; j++) {
            worst = fmax(worst, isfinite(p[j]) ? fabs(p[j] - ref[j]) : INFINITY);
            sum += p[j];
        }
        off_one = fmax(off_one, fabs(sum - 1.0));
        da_entmax_forward(DASHATTN_THRESHOLD_HALLEY, 1.5, 40, z, n, p, scratch);
        ref_entmax(1.5, z, n, exact);
        for (int64_t j = 0; j < n; j++)
            worst_converged = fmax(worst_converged, fabs(p[j] - exact[j]));
    }
    TU_CHECK(worst <= 1e-9, "Halley steps: max |p - reference| %.3g", worst);
    TU_CHECK(off_one > 1e-6, "Halley p sums to 1 within %.3g: renormalised?", off_one);
    TU_CHECK(worst_converged <= 1e-9, "40 Halley steps: max |p - exact| %.3g", worst_converged);
    z[0] = 1.0;
    z[1] = NAN;
    da_entmax_forward(DASHATTN_THRESHOLD_HALLEY, 1.5, 3, z, 2, p, scratch);
    TU_CHECK(isnan(p[0]) && isnan(p[1]), "Halley: a NaN score makes the row NaN");
    z[0] = 2.0;
    da_entmax_forward(DASHATTN_THRESHOLD_HALLEY, 1.5, 3, z, 1, p, scratch);
    TU_CHECK(fabs(p[0] - 1.0) <= 1e-12, "Halley: one candidate gets p %.17g", p[0]);
    printf("halley: max |p - reference| %.2e, 40 steps vs exact %.2e, sum off 1 up to %.2e\n",
           worst, worst_converged, off_one);

    dashattn_context_options opt;
    dashattn_context_options_init(&opt);
    opt.backend = "cpu";
    dashattn_context *ctx = NULL;
    if (dashattn_context_create(&opt, &ctx) != DASHATTN_OK)
        return;
    dashattn_problem pr;
    dashattn_problem_init(&pr, 1, 1, 1, 1, 4096, 64);
    pr.threshold_schedule = DASHATTN_SCHEDULE_HALLEY;
    pr.halley_steps = 5;
    dashattn_plan *plan = NULL;
    TU_CHECK(dashattn_plan_create(ctx, &pr, &plan) == DASHATTN_OK, "halley plan: %s",
             dashattn_last_error());
    if (plan != NULL) {
        TU_CHECK(dashattn_plan_threshold_iterations(plan) == 5 &&
                     strcmp(dashattn_plan_threshold_method(plan), "halley") == 0,
                 "the plan runs 5 Halley steps (got %s, %d)", dashattn_plan_threshold_method(plan),
                 dashattn_plan_threshold_iterations(plan));
        dashattn_plan_destroy(plan);
    }
    dashattn_context_destroy(ctx);
}

/* The exact methods' two threshold finders agree, including on rows with
 * ties at the threshold and with one contender. */
static void test_threshold_finders(void)
{
    da_synth_rng rng;
    da_synth_seed(&rng, 23);
    double x[300], copy[300];
    int settled = 0, total = 0;
    for (int rep = 0; rep < 400; rep++) {
        const int r = 1 + rep % 2;
        const int64_t m = 1 + (int64_t)(da_synth_uniform(&rng) * 299);
        const double spread = rep % 3 == 0 ? 0.05 : rep % 3 == 1 ? 0.4 : 0.9;
        x[0] = 0.0; /* the top score, shifted */
        for (int64_t j = 1; j < m; j++) {
            x[j] = -spread * da_synth_uniform(&rng);
            if (rep % 5 == 0) /* coarse grid: many exact ties */
                x[j] = -0.125 * (double)(int)(-x[j] / 0.125 * 4.0) / 4.0;
        }
        for (int64_t j = 0; j < m; j++)
            copy[j] = x[j];
        double by_support = 0.0;
        const int ok = da_entmax_threshold_support(x, m, r, &by_support);
        const double by_sorting = da_entmax_threshold_sorted(copy, m, r);
        total++;
        settled += ok;
        if (ok)
            TU_CHECK(fabs(by_support - by_sorting) <= 1e-12,
                     "r=%d m=%lld: thresholds %.17g vs %.17g", r, (long long)m, by_support,
                     by_sorting);
        TU_CHECK(by_sorting >= -1.0 && by_sorting < 0.0, "r=%d m=%lld: sorted threshold %g", r,
                 (long long)m, by_sorting);
    }
    /* The fast path must be the one normally taken. */
    TU_CHECK(settled >= total * 9 / 10, "support iteration settled on %d of %d rows", settled,
             total);
}

int main(void)
{
    test_threshold_finders();
    test_random();
    test_exact_vs_bracketed();
    test_edge_cases();
    test_topk();
    test_backward();
    test_plan_iterations();
    test_halley();
    return tu_finish("test_entmax");
}
