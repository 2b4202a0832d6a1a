/* SPDX-License-Identifier: MIT */
/* Block layout: the plan API's block count and threshold schedule, and
 * dashattn_row_layout() against forced/candidate sets computed here from
 * SPEC.md's text (tests/reference.c's ref_block_role). */
#include "reference.h"
#include "testutil.h"

#include <dashattn.h>
#include <dashattn/backend.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

static dashattn_plan *make_plan(dashattn_context *ctx, const dashattn_problem *pr)
{
    dashattn_plan *plan = NULL;
    const dashattn_status st = dashattn_plan_create(ctx, pr, &plan);
    TU_CHECK(st == DASHATTN_OK && plan != NULL, "plan_create: %s (%s)", dashattn_status_string(st),
             dashattn_last_error());
    return st == DASHATTN_OK ? plan : NULL;
}

static void test_num_blocks(dashattn_context *ctx)
{
    static const int64_t lens[] = {1, 5, 63, 64, 65, 128, 1000};
    static const int32_t sizes[] = {1, 4, 64, 100};
    for (size_t a = 0; a < sizeof lens / sizeof lens[0]; a++) {
        for (size_t b = 0; b < sizeof sizes / sizeof sizes[0]; b++) {
            for (int causal = 0; causal < 2; causal++) {
                dashattn_problem pr;
                dashattn_problem_init(&pr, 1, 2, 1, 1, lens[a], 32);
                pr.block_size = sizes[b];
                pr.causal = causal;
                dashattn_plan *plan = make_plan(ctx, &pr);
                if (plan == NULL)
                    continue;
                const int64_t want = (lens[a] + sizes[b] - 1) / sizes[b];
                TU_CHECK(dashattn_plan_num_blocks(plan) == want,
                         "num_blocks(Nk=%lld, S=%d) = %lld, want %lld", (long long)lens[a],
                         (int)sizes[b], (long long)dashattn_plan_num_blocks(plan), (long long)want);
                const dashattn_problem *got = dashattn_plan_problem(plan);
                TU_CHECK(got != NULL && fabs(got->scale - 1.0 / sqrt(32.0)) < 1e-15 &&
                             got->stage1_scale == got->scale,
                         "plan_problem scales not resolved to 1/sqrt(D)");
                dashattn_plan_destroy(plan);
            }
        }
    }
}

static void check_method(dashattn_context *ctx, double alpha, int topk, const char *want_name,
                         int want_iterative)
{
    dashattn_problem pr;
    dashattn_problem_init(&pr, 1, 1, 1, 16, 256, 64);
    pr.alpha = alpha;
    if (topk > 0) {
        pr.selection = DASHATTN_SELECT_TOPK;
        pr.topk = topk;
    }
    dashattn_plan *plan = make_plan(ctx, &pr);
    if (plan == NULL)
        return;
    const char *name = dashattn_plan_threshold_method(plan);
    const int iters = dashattn_plan_threshold_iterations(plan);
    TU_CHECK(name != NULL && strcmp(name, want_name) == 0,
             "alpha %g topk %d: method '%s', want '%s'", alpha, topk, name ? name : "(null)",
             want_name);
    if (want_iterative)
        TU_CHECK(iters > 0 && iters < 200, "alpha %g: %d iterations for a bracketed search", alpha,
                 iters);
    else
        TU_CHECK(iters == 0, "alpha %g topk %d: exact method reports %d iterations", alpha, topk,
                 iters);
    dashattn_plan_destroy(plan);
}

static void test_methods(dashattn_context *ctx)
{
    check_method(ctx, 1.0, 0, "softmax", 0);
    check_method(ctx, 1.5, 0, "sort-1.5", 0);
    check_method(ctx, 2.0, 0, "sort-2", 0);
    check_method(ctx, 1.3, 0, "bracketed-newton", 1);
    check_method(ctx, 1.5, 4, "topk", 0);

    /* The bracketed search runs as many steps as the dtype's precision needs:
     * no more for 16-bit inputs than for fp32. */
    int iters[2] = {-1, -1};
    for (int i = 0; i < 2; i++) {
        dashattn_problem pr;
        dashattn_problem_init(&pr, 1, 1, 1, 16, 256, 64);
        pr.alpha = 1.3;
        pr.dtype = i == 0 ? DASHATTN_F32 : DASHATTN_F16;
        dashattn_plan *plan = make_plan(ctx, &pr);
        if (plan != NULL)
            iters[i] = dashattn_plan_threshold_iterations(plan);
        dashattn_plan_destroy(plan);
    }
    TU_CHECK(iters[1] > 0 && iters[1] <= iters[0], "iterations: f32 %d, f16 %d", iters[0],
             iters[1]);
}

/* One (S, n_sink, n_local, causal, Nk) case: every position, every block. */
static void check_layout_case(int64_t s, int64_t n_sink, int64_t n_local, int causal, int64_t nk)
{
    dashattn_plan_desc desc;
    memset(&desc, 0, sizeof desc);
    dashattn_problem_init(&desc.problem, 1, 1, 1, nk, nk, 16);
    desc.problem.block_size = (int32_t)s;
    desc.problem.n_sink = (int32_t)n_sink;
    desc.problem.n_local = (int32_t)n_local;
    desc.problem.causal = causal;
    desc.num_blocks = (nk + s - 1) / s;
    desc.group_size = 1;
    ref_config cfg;
    ref_config_from_problem(&cfg, &desc.problem);
    const int64_t m_blocks = ref_num_blocks(&cfg);
    TU_CHECK(m_blocks == desc.num_blocks, "reference block count");

    for (int64_t pos = 0; pos < nk; pos++) {
        const dashattn_row_blocks r = dashattn_row_layout(&desc, pos, nk);
        int64_t bad = -1;
        int got_role = 0, want_role = 0;
        for (int64_t j = 0; j < m_blocks && bad < 0; j++) {
            const int forced = dashattn_block_is_forced(&r, j);
            const int cand = j >= r.cand_begin && j < r.cand_end;
            want_role = ref_block_role(&cfg, pos, j);
            /* A block both forced and candidate is an error on its own. */
            got_role = forced && cand ? -1
                       : forced       ? REF_BLOCK_FORCED
                       : cand         ? REF_BLOCK_CANDIDATE
                                      : REF_BLOCK_UNUSED;
            if (got_role != want_role)
                bad = j;
        }
        TU_CHECK(bad < 0,
                 "S=%lld sink=%lld local=%lld causal=%d Nk=%lld pos=%lld: block %lld role %d, "
                 "want %d",
                 (long long)s, (long long)n_sink, (long long)n_local, causal, (long long)nk,
                 (long long)pos, (long long)bad, got_role, want_role);
        TU_CHECK(r.visible_end == ref_visible_keys(&cfg, pos),
                 "S=%lld causal=%d Nk=%lld pos=%lld: visible_end %lld", (long long)s, causal,
                 (long long)nk, (long long)pos, (long long)r.visible_end);
        /* Nothing may point past the blocks that exist. */
        TU_CHECK(r.sink_end <= m_blocks && r.local_end <= m_blocks && r.cand_end <= m_blocks &&
                     r.cand_begin <= r.cand_end,
                 "S=%lld Nk=%lld pos=%lld: ranges out of [0, M]", (long long)s, (long long)nk,
                 (long long)pos);
    }
}

static void test_row_layout(void)
{
    static const int64_t sizes[] = {1, 3, 4, 16};
    static const int64_t sinks[] = {0, 1, 2, 5};
    static const int64_t locals[] = {0, 1, 2, 3, 7};
    static const int64_t lens[] = {1, 7, 16, 17, 50, 64};
    for (size_t a = 0; a < sizeof sizes / sizeof sizes[0]; a++)
        for (size_t b = 0; b < sizeof sinks / sizeof sinks[0]; b++)
            for (size_t c = 0; c < sizeof locals / sizeof locals[0]; c++)
                for (size_t d = 0; d < sizeof lens / sizeof lens[0]; d++)
                    for (int causal = 0; causal < 2; causal++) {
                        /* Causal plans require n_local >= 1. */
                        if (causal && locals[c] < 1)
                            continue;
                        check_layout_case(sizes[a], sinks[b], locals[c], causal, lens[d]);
                    }
}

int main(void)
{
    dashattn_context_options opt;
    dashattn_context_options_init(&opt);
    opt.backend = "cpu";
    opt.num_threads = 1;
    dashattn_context *ctx = NULL;
    const dashattn_status st = dashattn_context_create(&opt, &ctx);
    TU_CHECK(st == DASHATTN_OK, "context_create(cpu): %s", dashattn_last_error());
    if (st == DASHATTN_OK) {
        test_num_blocks(ctx);
        test_methods(ctx);
    }
    test_row_layout();
    dashattn_context_destroy(ctx);
    return tu_finish("test_layout");
}
