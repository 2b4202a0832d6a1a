/* SPDX-License-Identifier: MIT */
/* KV caches and decode: contiguous and paged (shuffled page table) caches
 * filled token by token and in chunks must hold the tokens and the block
 * means, decode must equal the last row of a prefill forward (library and
 * float64 reference) at every step of a short generation, for a batch whose
 * sequences have different lengths, and appends past capacity or onto
 * unmapped pages must fail with CACHE_FULL and change nothing. */
#include "reference.h"
#include "synthetic.h"
#include "testutil.h"

#include <dashattn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define B 2
#define HQ 4
#define HKV 2
#define DIM 16
#define BLK 8
#define CAP 64
#define PAGES_PER_SEQ (CAP / BLK)
#define NUM_PAGES (B * PAGES_PER_SEQ)
#define TABLE_STRIDE (PAGES_PER_SEQ + 1)
/* Sequence 1 starts this many tokens ahead of sequence 0. */
#define LEAD 5
#define PROMPT 37
#define GENERATE 12
#define TOL 1e-5

static dashattn_context *ctx;

/* Selection settings of one pass over the whole test. */
typedef struct decode_config {
    const char *name;
    double alpha;
    int group; /* a dashattn_group_mode */
    int32_t n_sink, n_local, topk;
    double sigma; /* > 0: flat prior */
    int halley;   /* > 0: Halley steps */
    int summary;  /* nonzero: learned summary vectors */
} decode_config;

static const decode_config configs[] = {
    {"per_head a1.5", 1.5, 0, 1, 2, 0, 0, 0, 0},
    {"shared a1.3 sink2 local1", 1.3, 1, 2, 1, 0, 0, 0, 0},
    {"topk2 sink0 local3", 1.5, 0, 0, 3, 2, 0, 0, 0},
    {"released: mean, learned summaries", 1.5, 2, 0, 1, 0, 0, 0, 1},
    {"mean halley3 flat0.5 summaries", 1.5, 2, 0, 1, 0, 0.5, 3, 1},
    {"per_head flat1e6 summaries", 1.5, 0, 0, 1, 0, 1e6, 0, 1},
};

static const decode_config *config;

/* The learned summary vectors [HKV, DIM] of configurations that use them. */
static float *sh;
static dashattn_tensor sh_view;

static const dashattn_tensor *summary(void)
{
    if (!config->summary)
        return NULL;
    sh_view = dashattn_tensor_bhsd(sh, DASHATTN_F32, 1, HKV, 1, DIM);
    return &sh_view;
}

/* Block size and the current configuration's selection settings. */
static void apply_config(dashattn_problem *pr)
{
    pr->block_size = BLK;
    pr->alpha = config->alpha;
    pr->group_mode = (dashattn_group_mode)config->group;
    tu_set_prior_and_schedule(pr, config->sigma, config->halley);
    pr->n_sink = config->n_sink;
    pr->n_local = config->n_local;
    if (config->topk > 0) {
        pr->selection = DASHATTN_SELECT_TOPK;
        pr->topk = config->topk;
    }
}

/* Each sequence's token stream: q [B, HQ, CAP, DIM], k, v [B, HKV, CAP, DIM]. */
static float *sq, *sk, *sv;

typedef struct cache {
    const char *name;
    dashattn_kv_cache c;
    float *k, *v, *bk;
    int32_t seq_lens[B];
    int32_t table[B * TABLE_STRIDE];
    size_t kv_elems, bk_elems;
} cache;

static void cache_init(cache *c, const char *name, int paged, uint64_t seed)
{
    memset(c, 0, sizeof *c);
    c->name = name;
    c->c.layout = paged ? DASHATTN_CACHE_PAGED : DASHATTN_CACHE_CONTIGUOUS;
    c->kv_elems = (size_t)B * HKV * CAP * DIM;
    c->bk_elems = (size_t)B * HKV * PAGES_PER_SEQ * DIM;
    /* NaN wherever nothing was appended yet: a decode that reads past
     * seq_lens, or a summary of a block not yet complete, shows as NaN. */
    c->k = tu_nan_floats(c->kv_elems);
    c->v = tu_nan_floats(c->kv_elems);
    c->bk = tu_nan_floats(c->bk_elems);
    c->c.seq_lens = c->seq_lens;
    if (paged) {
        c->c.k = dashattn_tensor_bhsd(c->k, DASHATTN_F32, NUM_PAGES, HKV, BLK, DIM);
        c->c.v = dashattn_tensor_bhsd(c->v, DASHATTN_F32, NUM_PAGES, HKV, BLK, DIM);
        c->c.block_keys = dashattn_tensor_bhsd(c->bk, DASHATTN_F32, NUM_PAGES, HKV, 1, DIM);
        /* A shuffled page order, so that page != block anywhere by accident. */
        int32_t perm[NUM_PAGES];
        for (int i = 0; i < NUM_PAGES; i++)
            perm[i] = i;
        da_synth_rng rng;
        da_synth_seed(&rng, seed);
        for (int i = NUM_PAGES - 1; i > 0; i--) {
            const int j = (int)(da_synth_uniform(&rng) * (i + 1)) % (i + 1);
            const int32_t t = perm[i];
            perm[i] = perm[j];
            perm[j] = t;
        }
        for (int b = 0; b < B; b++) {
            for (int j = 0; j < PAGES_PER_SEQ; j++)
                c->table[b * TABLE_STRIDE + j] = perm[b * PAGES_PER_SEQ + j];
            c->table[b * TABLE_STRIDE + PAGES_PER_SEQ] = -1;
        }
        c->c.block_table = c->table;
        c->c.table_stride = TABLE_STRIDE;
    } else {
        c->c.k = dashattn_tensor_bhsd(c->k, DASHATTN_F32, B, HKV, CAP, DIM);
        c->c.v = dashattn_tensor_bhsd(c->v, DASHATTN_F32, B, HKV, CAP, DIM);
        c->c.block_keys = dashattn_tensor_bhsd(c->bk, DASHATTN_F32, B, HKV, PAGES_PER_SEQ, DIM);
    }
}

static void cache_free(cache *c)
{
    free(c->k);
    free(c->v);
    free(c->bk);
}

/* A view of sequence b alone, for a batch-1 plan. */
static dashattn_kv_cache cache_view_of(cache *c, int b)
{
    dashattn_kv_cache v = c->c;
    v.seq_lens = c->seq_lens + b;
    if (c->c.layout == DASHATTN_CACHE_PAGED) {
        v.block_table = c->table + b * TABLE_STRIDE;
    } else {
        v.k = dashattn_tensor_bhsd(c->k + (size_t)b * HKV * CAP * DIM, DASHATTN_F32, 1, HKV, CAP,
                                   DIM);
        v.v = dashattn_tensor_bhsd(c->v + (size_t)b * HKV * CAP * DIM, DASHATTN_F32, 1, HKV, CAP,
                                   DIM);
        v.block_keys = dashattn_tensor_bhsd(c->bk + (size_t)b * HKV * PAGES_PER_SEQ * DIM,
                                            DASHATTN_F32, 1, HKV, PAGES_PER_SEQ, DIM);
    }
    return v;
}

/* Where token t of sequence b, head h lives in the cache. */
static const float *cache_key(const cache *c, const float *base, int b, int h, int t)
{
    if (c->c.layout == DASHATTN_CACHE_PAGED) {
        const int page = c->table[b * TABLE_STRIDE + t / BLK];
        return base + (((size_t)page * HKV + h) * BLK + t % BLK) * DIM;
    }
    return base + (((size_t)b * HKV + h) * CAP + t) * DIM;
}

static const float *cache_block_key(const cache *c, int b, int h, int j)
{
    if (c->c.layout == DASHATTN_CACHE_PAGED) {
        const int page = c->table[b * TABLE_STRIDE + j];
        return c->bk + ((size_t)page * HKV + h) * DIM;
    }
    return c->bk + (((size_t)b * HKV + h) * PAGES_PER_SEQ + j) * DIM;
}

static const float *stream_kv(const float *s, int b, int h, int t)
{
    return s + (((size_t)b * HKV + h) * CAP + t) * DIM;
}

static dashattn_plan *decode_plan(int64_t batch)
{
    dashattn_problem pr;
    dashattn_problem_init(&pr, batch, HQ, HKV, 1, CAP, DIM);
    apply_config(&pr);
    dashattn_plan *plan = NULL;
    const dashattn_status st = dashattn_plan_create(ctx, &pr, &plan);
    TU_CHECK(st == DASHATTN_OK, "decode plan (batch %lld): %s", (long long)batch,
             dashattn_last_error());
    return plan;
}

/* Append the next t tokens of every sequence in [b0, b0 + nb) to the cache
 * (a view of those sequences when nb < B). */
static dashattn_status append(const dashattn_plan *plan, cache *c, int b0, int nb, int t)
{
    const dashattn_kv_cache view = nb == B ? c->c : cache_view_of(c, b0);
    float *kn = tu_xcalloc((size_t)nb * HKV * (size_t)t * DIM, sizeof(float));
    float *vn = tu_xcalloc((size_t)nb * HKV * (size_t)t * DIM, sizeof(float));
    for (int b = 0; b < nb; b++)
        for (int h = 0; h < HKV; h++)
            for (int i = 0; i < t; i++) {
                /* Past the capacity the stream has no data: any values do. */
                const int pos = c->seq_lens[b0 + b] + i < CAP ? c->seq_lens[b0 + b] + i : 0;
                float *dk = kn + (((size_t)b * HKV + h) * t + i) * DIM;
                float *dv = vn + (((size_t)b * HKV + h) * t + i) * DIM;
                memcpy(dk, stream_kv(sk, b0 + b, h, pos), DIM * sizeof(float));
                memcpy(dv, stream_kv(sv, b0 + b, h, pos), DIM * sizeof(float));
            }
    const dashattn_tensor tk = dashattn_tensor_bhsd(kn, DASHATTN_F32, nb, HKV, t, DIM);
    const dashattn_tensor tv = dashattn_tensor_bhsd(vn, DASHATTN_F32, nb, HKV, t, DIM);
    const dashattn_status st = dashattn_cache_append(ctx, plan, &view, &tk, &tv, summary(), NULL);
    free(kn);
    free(vn);
    return st;
}

/* Summaries of every complete block of the streams, [B, HKV, PAGES_PER_SEQ, DIM], from the
 * float64 reference (with the configuration's summary vectors). */
static double *expected_summaries(void)
{
    dashattn_problem pr;
    dashattn_problem_init(&pr, B, HQ, HKV, CAP, CAP, DIM);
    apply_config(&pr);
    ref_config cfg;
    ref_config_from_problem(&cfg, &pr);
    double *hd = config->summary ? ref_to_double(sh, HKV * DIM) : NULL;
    cfg.h = hd;
    double *kd = ref_to_double(sk, (int64_t)B * HKV * CAP * DIM);
    double *kbar = tu_xcalloc((size_t)B * HKV * PAGES_PER_SEQ * DIM, sizeof(double));
    ref_block_keys(&cfg, kd, kbar);
    free(kd);
    free(hd);
    return kbar;
}

/* Tokens and block summaries of every filled position equal the streams and their summaries. */
static void check_cache_contents(const cache *c, const char *when)
{
    int64_t bad_tokens = 0, bad_keys = 0;
    double worst = 0.0;
    double *kbar = expected_summaries();
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < HKV; h++) {
            for (int t = 0; t < c->seq_lens[b]; t++)
                if (memcmp(cache_key(c, c->k, b, h, t), stream_kv(sk, b, h, t),
                           DIM * sizeof(float)) != 0 ||
                    memcmp(cache_key(c, c->v, b, h, t), stream_kv(sv, b, h, t),
                           DIM * sizeof(float)) != 0)
                    bad_tokens++;
            for (int j = 0; j < c->seq_lens[b] / BLK; j++) {
                const float *bk = cache_block_key(c, b, h, j);
                for (int d = 0; d < DIM; d++) {
                    const double want = kbar[(((size_t)b * HKV + h) * PAGES_PER_SEQ + j) * DIM + d];
                    const double err = fabs(bk[d] - want);
                    worst = isfinite(bk[d]) ? fmax(worst, err) : INFINITY;
                    bad_keys += !(err <= 1e-6 * (1.0 + fabs(want)));
                }
            }
        }
    }
    TU_CHECK(bad_tokens == 0, "%s %s: %lld cached tokens differ from the appended ones", c->name,
             when, (long long)bad_tokens);
    TU_CHECK(bad_keys == 0, "%s %s: block summaries off the reference by up to %.3g", c->name, when,
             worst);
    free(kbar);
}

/* Decode the current last token of every sequence; out [B, HQ, DIM], lse [B, HQ]. */
static dashattn_status decode(const dashattn_plan *plan, cache *c, float *out, float *lse)
{
    float q[B * HQ * DIM];
    for (int b = 0; b < B; b++)
        for (int h = 0; h < HQ; h++)
            memcpy(q + ((size_t)b * HQ + h) * DIM,
                   sq + (((size_t)b * HQ + h) * CAP + c->seq_lens[b] - 1) * DIM,
                   DIM * sizeof(float));
    for (int i = 0; i < B * HQ * DIM; i++)
        out[i] = NAN;
    for (int i = 0; i < B * HQ; i++)
        lse[i] = NAN;
    const dashattn_tensor tq = dashattn_tensor_bhsd(q, DASHATTN_F32, B, HQ, 1, DIM);
    const dashattn_tensor to = dashattn_tensor_bhsd(out, DASHATTN_F32, B, HQ, 1, DIM);
    const dashattn_status st = dashattn_decode(ctx, plan, &tq, &c->c, &to, lse, NULL, 0, NULL);
    TU_CHECK(st == DASHATTN_OK, "%s: decode: %s (%s)", c->name, dashattn_status_string(st),
             dashattn_last_error());
    return st;
}

/* With more threads than (sequence, KV head) pairs, the CPU backend splits
 * each group's heads among threads: the result must be the same bits. */
static void check_split_heads(cache *c, const float *out, const float *lse)
{
    dashattn_context_options opt;
    dashattn_context_options_init(&opt);
    opt.backend = "cpu";
    opt.num_threads = 4 * B * HKV;
    dashattn_context *wide = NULL, *saved = ctx;
    if (dashattn_context_create(&opt, &wide) != DASHATTN_OK) {
        TU_CHECK(0, "context with %d threads: %s", opt.num_threads, dashattn_last_error());
        return;
    }
    ctx = wide;
    dashattn_plan *plan = decode_plan(B);
    float out_w[B * HQ * DIM], lse_w[B * HQ];
    if (plan && decode(plan, c, out_w, lse_w) == DASHATTN_OK)
        TU_CHECK(memcmp(out, out_w, sizeof out_w) == 0 && memcmp(lse, lse_w, sizeof lse_w) == 0,
                 "%s: decode on %d threads differs", c->name, opt.num_threads);
    dashattn_plan_destroy(plan);
    ctx = saved;
    dashattn_context_destroy(wide);
}

/* The last row of a causal prefill over sequence b's first len tokens: the
 * library's forward (out_lib, lse_lib) and the float64 reference. */
static void prefill_last_row(int b, int len, float *out_lib, float *lse_lib, double *out_ref,
                             double *lse_ref)
{
    float *q = tu_xcalloc((size_t)HQ * len * DIM, sizeof(float));
    float *k = tu_xcalloc((size_t)HKV * len * DIM, sizeof(float));
    float *v = tu_xcalloc((size_t)HKV * len * DIM, sizeof(float));
    for (int h = 0; h < HQ; h++)
        memcpy(q + (size_t)h * len * DIM, sq + ((size_t)b * HQ + h) * CAP * DIM,
               (size_t)len * DIM * sizeof(float));
    for (int h = 0; h < HKV; h++) {
        memcpy(k + (size_t)h * len * DIM, stream_kv(sk, b, h, 0),
               (size_t)len * DIM * sizeof(float));
        memcpy(v + (size_t)h * len * DIM, stream_kv(sv, b, h, 0),
               (size_t)len * DIM * sizeof(float));
    }
    dashattn_problem pr;
    dashattn_problem_init(&pr, 1, HQ, HKV, len, len, DIM);
    apply_config(&pr);
    dashattn_plan *plan = NULL;
    float *out = tu_xcalloc((size_t)HQ * len * DIM, sizeof(float));
    float *lse = tu_xcalloc((size_t)HQ * len, sizeof(float));
    for (int i = 0; i < HQ * len; i++)
        lse[i] = NAN;
    dashattn_status st = dashattn_plan_create(ctx, &pr, &plan);
    if (st == DASHATTN_OK) {
        const dashattn_tensor tq = dashattn_tensor_bhsd(q, DASHATTN_F32, 1, HQ, len, DIM);
        const dashattn_tensor tk = dashattn_tensor_bhsd(k, DASHATTN_F32, 1, HKV, len, DIM);
        const dashattn_tensor tv = dashattn_tensor_bhsd(v, DASHATTN_F32, 1, HKV, len, DIM);
        const dashattn_tensor to = dashattn_tensor_bhsd(out, DASHATTN_F32, 1, HQ, len, DIM);
        st = dashattn_forward(ctx, plan, &tq, &tk, &tv, summary(), &to, lse, NULL, NULL, NULL, 0,
                              NULL);
    }
    TU_CHECK(st == DASHATTN_OK, "prefill of sequence %d, %d tokens: %s", b, len,
             dashattn_last_error());
    for (int h = 0; h < HQ; h++) {
        for (int d = 0; d < DIM; d++)
            out_lib[h * DIM + d] = out[((size_t)h * len + len - 1) * DIM + d];
        lse_lib[h] = lse[h * len + len - 1];
    }
    /* The reference needs only the last query row: bottom-right alignment. */
    dashattn_problem_init(&pr, 1, HQ, HKV, 1, len, DIM);
    apply_config(&pr);
    ref_config cfg;
    ref_config_from_problem(&cfg, &pr);
    double *hd = config->summary ? ref_to_double(sh, HKV * DIM) : NULL;
    cfg.h = hd;
    double *qd = tu_xcalloc((size_t)HQ * DIM, sizeof(double));
    for (int h = 0; h < HQ; h++)
        for (int d = 0; d < DIM; d++)
            qd[h * DIM + d] = q[((size_t)h * len + len - 1) * DIM + d];
    double *kd = ref_to_double(k, (int64_t)HKV * len * DIM);
    double *vd = ref_to_double(v, (int64_t)HKV * len * DIM);
    ref_result res;
    ref_forward(&cfg, qd, kd, vd, &res);
    memcpy(out_ref, res.out, (size_t)HQ * DIM * sizeof(double));
    memcpy(lse_ref, res.lse, (size_t)HQ * sizeof(double));
    ref_forward_free(&res);
    free(hd);
    free(qd);
    free(kd);
    free(vd);
    free(out);
    free(lse);
    free(q);
    free(k);
    free(v);
    dashattn_plan_destroy(plan);
}

static void check_decode_step(int step, const float *out, const float *lse, const float *out_p,
                              const float *out_c)
{
    for (int b = 0; b < B; b++) {
        const int len = LEAD * b + PROMPT + step + 1;
        float lib_out[HQ * DIM], lib_lse[HQ];
        double ref_out[HQ * DIM], ref_lse[HQ];
        prefill_last_row(b, len, lib_out, lib_lse, ref_out, ref_lse);
        const float *o = out + (size_t)b * HQ * DIM;
        const float *l = lse + (size_t)b * HQ;
        double lib_out_d[HQ * DIM], lib_lse_d[HQ];
        for (int i = 0; i < HQ * DIM; i++)
            lib_out_d[i] = lib_out[i];
        for (int i = 0; i < HQ; i++)
            lib_lse_d[i] = lib_lse[i];
        const double e_ref = tu_rel_err_f(o, ref_out, HQ * DIM);
        const double e_ref_l = tu_rel_err_f(l, ref_lse, HQ);
        const double e_pre = tu_rel_err_f(o, lib_out_d, HQ * DIM);
        const double e_pre_l = tu_rel_err_f(l, lib_lse_d, HQ);
        TU_CHECK(e_ref <= TOL && e_ref_l <= TOL,
                 "step %d seq %d (len %d): decode vs reference out %.3g lse %.3g", step, b, len,
                 e_ref, e_ref_l);
        TU_CHECK(e_pre <= TOL && e_pre_l <= TOL,
                 "step %d seq %d (len %d): decode vs prefill last row out %.3g lse %.3g", step, b,
                 len, e_pre, e_pre_l);
        double *od = ref_to_double(o, HQ * DIM);
        const double e_paged = tu_rel_err_f(out_p + (size_t)b * HQ * DIM, od, HQ * DIM);
        const double e_chunk = tu_rel_err_f(out_c + (size_t)b * HQ * DIM, od, HQ * DIM);
        TU_CHECK(e_paged <= 1e-6, "step %d seq %d: paged decode differs by %.3g", step, b, e_paged);
        TU_CHECK(e_chunk <= 1e-6, "step %d seq %d: chunk-filled cache decodes %.3g apart", step, b,
                 e_chunk);
        free(od);
    }
}

/* An append that cannot fit must change nothing at all. */
static void check_append_refused(const dashattn_plan *plan, cache *c, int t, const char *what)
{
    float *k0 = tu_xcalloc(c->kv_elems, sizeof(float)),
          *v0 = tu_xcalloc(c->kv_elems, sizeof(float));
    float *bk0 = tu_xcalloc(c->bk_elems, sizeof(float));
    int32_t lens0[B];
    memcpy(k0, c->k, c->kv_elems * sizeof(float));
    memcpy(v0, c->v, c->kv_elems * sizeof(float));
    memcpy(bk0, c->bk, c->bk_elems * sizeof(float));
    memcpy(lens0, c->seq_lens, sizeof lens0);
    const dashattn_status st = append(plan, c, 0, B, t);
    TU_CHECK(st == DASHATTN_ERR_CACHE_FULL, "%s %s: append of %d gave %s, want cache full", c->name,
             what, t, dashattn_status_string(st));
    TU_CHECK(memcmp(lens0, c->seq_lens, sizeof lens0) == 0, "%s %s: seq_lens changed", c->name,
             what);
    TU_CHECK(memcmp(k0, c->k, c->kv_elems * sizeof(float)) == 0 &&
                 memcmp(v0, c->v, c->kv_elems * sizeof(float)) == 0 &&
                 memcmp(bk0, c->bk, c->bk_elems * sizeof(float)) == 0,
             "%s %s: refused append modified the cache", c->name, what);
    free(k0);
    free(v0);
    free(bk0);
}

/* A paged cache whose table maps only two pages of sequence 0. */
static void check_unmapped_page(const dashattn_plan *plan)
{
    cache c;
    cache_init(&c, "paged-unmapped", 1, 5);
    for (int j = 2; j < TABLE_STRIDE; j++)
        c.table[j] = -1;
    dashattn_status st = append(plan, &c, 0, B, 2 * BLK);
    TU_CHECK(st == DASHATTN_OK, "unmapped: filling the mapped pages: %s", dashattn_last_error());
    check_append_refused(plan, &c, 1, "past the mapped pages");
    /* A page index beyond the pool is unmapped too. */
    c.table[2] = NUM_PAGES;
    check_append_refused(plan, &c, 1, "onto page P");
    cache_free(&c);
}

static void run_config(void)
{
    dashattn_plan *plan = decode_plan(B), *plan1 = decode_plan(1);
    cache by_token, by_chunk, paged;
    cache_init(&by_token, "contiguous/token", 0, 0);
    cache_init(&by_chunk, "contiguous/chunk", 0, 0);
    cache_init(&paged, "paged/chunk", 1, 9);
    cache *all[3] = {&by_token, &by_chunk, &paged};

    if (plan != NULL && plan1 != NULL) {
        /* Sequence 1 gets a head start through a batch-1 view. */
        for (int i = 0; i < 3; i++)
            TU_CHECK(append(plan1, all[i], 1, 1, LEAD) == DASHATTN_OK, "%s: head start: %s",
                     all[i]->name, dashattn_last_error());
        for (int t = 0; t < PROMPT; t++)
            TU_CHECK(append(plan, &by_token, 0, B, 1) == DASHATTN_OK, "token append %d: %s", t,
                     dashattn_last_error());
        static const int chunks[] = {3, 8, 13, PROMPT - 24};
        for (size_t i = 0; i < sizeof chunks / sizeof chunks[0]; i++) {
            TU_CHECK(append(plan, &by_chunk, 0, B, chunks[i]) == DASHATTN_OK, "chunk append %d: %s",
                     chunks[i], dashattn_last_error());
            TU_CHECK(append(plan, &paged, 0, B, chunks[i]) == DASHATTN_OK,
                     "paged chunk append %d: %s", chunks[i], dashattn_last_error());
        }
        for (int i = 0; i < 3; i++) {
            TU_CHECK(all[i]->seq_lens[0] == PROMPT && all[i]->seq_lens[1] == PROMPT + LEAD,
                     "%s: seq_lens %d %d after the prompt", all[i]->name, all[i]->seq_lens[0],
                     all[i]->seq_lens[1]);
            check_cache_contents(all[i], "after the prompt");
        }

        float out[3][B * HQ * DIM], lse[3][B * HQ];
        for (int step = 0; step < GENERATE; step++) {
            int ok = 1;
            for (int i = 0; i < 3; i++) {
                ok = ok && append(plan, all[i], 0, B, 1) == DASHATTN_OK;
                ok = ok && decode(plan, all[i], out[i], lse[i]) == DASHATTN_OK;
            }
            TU_CHECK(ok, "generation step %d failed: %s", step, dashattn_last_error());
            if (ok)
                check_decode_step(step, out[0], lse[0], out[2], out[1]);
        }
        for (int i = 0; i < 3; i++)
            check_cache_contents(all[i], "after generation");

        /* Decode reads the cache and leaves it alone. */
        float *k0 = tu_xcalloc(paged.kv_elems, sizeof(float));
        memcpy(k0, paged.k, paged.kv_elems * sizeof(float));
        decode(plan, &paged, out[2], lse[2]);
        TU_CHECK(memcmp(k0, paged.k, paged.kv_elems * sizeof(float)) == 0,
                 "decode modified the cache");
        free(k0);
        check_split_heads(&paged, out[2], lse[2]);

        /* Capacity: sequence 1 has CAP - len1 slots left, sequence 0 more. */
        for (int i = 0; i < 3; i += 2) {
            const int room = CAP - all[i]->seq_lens[1];
            check_append_refused(plan, all[i], room + 1, "past capacity");
            TU_CHECK(append(plan, all[i], 0, B, room) == DASHATTN_OK, "%s: filling to capacity: %s",
                     all[i]->name, dashattn_last_error());
            TU_CHECK(all[i]->seq_lens[1] == CAP, "%s: sequence 1 not full", all[i]->name);
            check_append_refused(plan, all[i], 1, "when full");
        }
        check_unmapped_page(plan);
    }
    for (int i = 0; i < 3; i++)
        cache_free(all[i]);
    dashattn_plan_destroy(plan);
    dashattn_plan_destroy(plan1);
}

int main(void)
{
    dashattn_context_options opt;
    dashattn_context_options_init(&opt);
    opt.backend = "cpu";
    opt.num_threads = 2;
    dashattn_status st = dashattn_context_create(&opt, &ctx);
    TU_CHECK(st == DASHATTN_OK, "context_create(cpu): %s", dashattn_last_error());
    if (st != DASHATTN_OK)
        return tu_finish("test_decode");
    sq = tu_xcalloc((size_t)B * HQ * CAP * DIM, sizeof(float));
    sk = tu_xcalloc((size_t)B * HKV * CAP * DIM, sizeof(float));
    sv = tu_xcalloc((size_t)B * HKV * CAP * DIM, sizeof(float));
    da_synth_qkv(42, B, HQ, HKV, CAP, CAP, DIM, BLK, 2.0, sq, sk, sv);
    sh = tu_random_floats(43, (size_t)HKV * DIM, 1.5);
    for (size_t i = 0; i < sizeof configs / sizeof configs[0]; i++) {
        config = &configs[i];
        /* Failures print to stderr; flushing keeps this header before them. */
        printf("configuration: %s\n", config->name);
        fflush(stdout);
        run_config();
    }
    free(sq);
    free(sk);
    free(sv);
    free(sh);
    dashattn_context_destroy(ctx);
    return tu_finish("test_decode");
}
