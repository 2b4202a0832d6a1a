/* SPDX-License-Identifier: MIT */
/*
 * Parity of any backend with the built-in CPU backend, and of both with
 * the float64 reference (tests/reference.c) run on the same rounded inputs,
 * through the public API only. Usage: test_backend_parity BACKEND (cuda,
 * opencl, ..., or cpu, which compares a second CPU context and so proves
 * the harness itself).
 *
 * Both contexts get the same inputs (for f16/bf16 the same rounded bytes) in
 * memory from dashattn_memory_alloc, every array in its own allocation: an
 * OpenCL "pointer" is a cl_mem handle, so no arithmetic is ever done on one.
 * Every output is poisoned before each call, on both sides, so that an
 * element a backend leaves unwritten fails. Covered: forward (out, lse,
 * selection, stats) over causal, non-causal (Nq < Nk and Nq > Nk), chunked
 * prefill, ragged last blocks, head dims 8 to 256, GQA modes (per_head,
 * shared, mean), alphas, topk, the flat prior, the Halley schedule, learned
 * block summaries, block sizes, custom scales, BSHD and padded strides and
 * dtypes; decode after chunked appends (with or without summary vectors)
 * into contiguous and paged caches (whose contents are compared too),
 * refused appends, decode with bad seq_lens; backward, with dh where
 * summary vectors are given, also on BSHD and padded strides. Forward and
 * backward results are also held to the float64 reference; decode is
 * compared with the CPU backend only.
 *
 * Exit status: 0 pass, 1 fail, 77 when the backend is unavailable here.
 */
#include "reference.h"
#include "synthetic.h"
#include "testutil.h"

#include <dashattn.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- tolerances (backend against the CPU backend) ---- */

/* Each fp32 backend is within SPEC's 1e-5 of float64, so two are within
 * 2e-5 of each other; the rest of the margin is for device exp/log
 * intrinsics and summation orders other than the CPU's. Relative norm. */
#define OUT_TOL_F32 1e-4
/* f16/bf16 outputs are rounded to 11 or 8 significant bits, so one rounding
 * step on every element is already up to 4e-3 of the norm; SPEC's contract
 * for 16-bit data is 1e-2. Relative norm. */
#define OUT_TOL_HALF 1e-2
/* The worst single row (D values) may be this many times worse than the
 * whole tensor, relative to max(||row||, 1): a norm over thousands of rows
 * alone would hide one wrong row. */
#define ROW_TOL_FACTOR 10.0
/* lse is fp32 in every dtype and O(log Nk + |logit|); max abs difference.
 * 16-bit kernels may round intermediate products (tensor-core paths do),
 * which moves logits by about 2^-8 of their size. */
#define LSE_TOL_F32 1e-4
#define LSE_TOL_HALF 1e-2
/* Selection weights, compared as dense [row, block] matrices, max abs: fp32
 * stage-1 scores differ by ~1e-6 between summation orders and entmax
 * amplifies score differences by at most 1/(alpha - 1) = 4 for the alphas
 * here. A block may be kept by one backend and not by the other only where
 * its weight is below this, i.e. at a threshold tie. Topk weights are 0 or
 * 1, so there a swap at the k-th score would fail; with continuous random
 * inputs and scores that agree to ~1e-6 such near-ties do not occur. */
#define WEIGHT_TOL_F32 1e-4
#define WEIGHT_TOL_HALF 2e-2
/* Attended pairs may differ by the tokens of tie blocks (see above); each
 * such block moves the count by at most S pairs. Relative. */
#define ATTENDED_TOL_F32 0.005
#define ATTENDED_TOL_HALF 0.02
/* Gradients: sums of terms that cancel, so fp32 differences are a few 1e-6
 * of the norm; 16-bit results are rounded like outputs. Relative norm. */
#define GRAD_TOL_F32 1e-4
#define GRAD_TOL_HALF 2e-2
/* A block key is the mean of S fp32 keys; another summation order moves it
 * by about S * 2^-24 of the largest key. 16-bit keys may round one step the
 * other way. Relative to 1 + |key|. */
#define KEY_TOL_F32 1e-5
#define KEY_TOL_HALF 1e-2

/* ---- tolerances (each side against the float64 reference) ---- */

/* SPEC.md's contract for f32, relative norm, as in test_forward and
 * test_backward: out, lse and the gradients. */
#define REF_TOL_F32 1e-5
/* The flat prior's gradient carries 1 / w into the blocks at the support's
 * edge, whose w f32 scores give with the largest relative error: with sigma
 * below 1e3 SPEC.md's 1e-5 cannot hold there (test_backward's FLAT_GRAD_TOL). */
#define REF_GRAD_TOL_FLAT 1e-4
/* Selection weights against the reference's pi, max abs, scaled for the
 * flat prior by max(1, pi) * flat_factor (test_forward's WEIGHT_TOL). A
 * block whose stage-1 weight is below this may be in or out of the support. */
#define REF_WEIGHT_TOL_F32 1e-5
/* With the flat prior (sigma below 1e3) the kept weights' relative error is
 * that of the mean log w over the support, where edge blocks dominate. The
 * CUDA backend, whose stage-1 probabilities are f32, measured 1.05e-4 after
 * the scaling (H200, 2026-12-02, "causal gqa4:2 per_head summary flat0.5
 * ragged": pi 17340 against 17349.1); the CPU and OpenCL stay under 1e-4. */
#define REF_WEIGHT_TOL_FLAT 3e-4
/* 16-bit results against float64 run on the same rounded inputs, relative
 * norm. What remains is the rounding inside the backend and of its results:
 * the unit roundoff u is 2^-11 = 4.9e-4 for f16 and 2^-8 = 3.9e-3 for bf16,
 * and rounding every output element alone gives about u / sqrt(3) of the
 * norm: 2e-4 for f16 and 1.6e-3 for bf16 are what the CPU and OpenCL
 * backends measure. Intermediate roundings (probabilities or block keys in
 * the dtype, tensor-core products) may add as much again. f16 stays below
 * bf16's 1.6e-3, so an f16 path that loses precision to bf16's fails. */
#define REF_TOL_F16 1e-3
#define REF_TOL_BF16 1e-2
/* Gradients in 16 bits are also differentiated through the forward's
 * rounded out (D_i = dout . out), which cancels against dP: measured up to
 * 8e-4 (f16) and 4.5e-3 (bf16); f16 again below what bf16 rounding gives. */
#define REF_GRAD_TOL_F16 2e-3
#define REF_GRAD_TOL_BF16 2e-2
/* dh is f32, but a sum over every key of stage-1 terms that cancel to a
 * small result, each carrying the rounding of its key and of D_i: the CPU
 * backend's dh is 4e-4 to 8e-2 of the norm from float64 with the inputs
 * here. Loose, yet a missing or wrong term still moves it by O(1). */
#define REF_DH_TOL_HALF 0.2
/* The same cancellation in f32: SPEC.md asks 1e-5, which the CPU backend
 * meets, but the OpenCL backend's dh is 2.0e-5 from float64 on "causal
 * gqa4:2 per_head summary flat1e6" (its other summation order over the keys;
 * 2.8e-5 from the CPU's). Held at 5e-5 until that backend sums dh closer:
 * an open deviation from SPEC.md, not a bound of the method. */
#define REF_DH_TOL_F32 5e-5

/* 0xFF bytes are NaN in f32, f16 and bf16: an unwritten float output
 * element fails any comparison. */
#define POISON_FLOAT 0xFF
/* int32 outputs get 0x80 bytes (-2139062144, neither a count nor a block
 * index): 0xFF bytes would read as -1, the legitimate "unused slot" index,
 * and an unwritten slot would pass. */
#define POISON_INT 0x80

enum { REF = 0, DUT = 1 };

/* Context of each side: REF is the CPU backend, DUT the backend under test,
 * and the names messages give them. */
static dashattn_context *ctxs[2];
static const char *side_name[2] = {"cpu", NULL};

/* ---- per-case bookkeeping: one output line per case ---- */

typedef struct case_log {
    char name[112];
    long failed;
    const char *skip; /* why the case did not run, or NULL */
    char notes[224];
} case_log;

static case_log cur;
static long cases_passed, cases_failed, cases_skipped;

#ifdef __GNUC__
#define PRINTF_LIKE(f, a) __attribute__((format(printf, f, a)))
#else
#define PRINTF_LIKE(f, a)
#endif

static void case_begin(const char *format, ...) PRINTF_LIKE(1, 2);
static void case_begin(const char *format, ...)
{
    memset(&cur, 0, sizeof cur);
    va_list ap;
    va_start(ap, format);
    vsnprintf(cur.name, sizeof cur.name, format, ap);
    va_end(ap);
}

static void case_note(const char *format, ...) PRINTF_LIKE(1, 2);
static void case_note(const char *format, ...)
{
    const size_t used = strlen(cur.notes);
    va_list ap;
    va_start(ap, format);
    vsnprintf(cur.notes + used, sizeof cur.notes - used, format, ap);
    va_end(ap);
}

/* Records a check of the current case (counted by tu_finish too). */
static int case_check_at(int ok, int line, const char *format, ...) PRINTF_LIKE(3, 4);
static int case_check_at(int ok, int line, const char *format, ...)
{
    char msg[480];
    va_list ap;
    va_start(ap, format);
    vsnprintf(msg, sizeof msg, format, ap);
    va_end(ap);
    tu_check_at(ok, __FILE__, line, "%s: %s", cur.name, msg);
    cur.failed += !ok;
    return ok;
}
#define CHECK(cond, ...) case_check_at((cond) != 0, __LINE__, __VA_ARGS__)
#define FAIL(...) case_check_at(0, __LINE__, __VA_ARGS__)

static void case_skip(const char *why)
{
    if (!cur.skip)
        cur.skip = why;
}

static void case_end(void)
{
    const char *verdict = cur.failed ? "FAIL" : cur.skip ? "SKIP" : "PASS";
    if (cur.failed)
        cases_failed++;
    else if (cur.skip)
        cases_skipped++;
    else
        cases_passed++;
    printf("%-60s %s  %s%s\n", cur.name, verdict, cur.skip && !cur.failed ? cur.skip : "",
           cur.skip && !cur.failed ? "" : cur.notes);
    fflush(stdout);
}

/* A call's status and, on failure, its message (dashattn_last_error is
 * per thread and overwritten by the next call). */
typedef struct call_result {
    dashattn_status status;
    int deferred; /* reported by the synchronize after the call */
    char why[240];
} call_result;

static call_result called(dashattn_status status)
{
    call_result r;
    r.status = status;
    r.deferred = 0;
    snprintf(r.why, sizeof r.why, "%s", status == DASHATTN_OK ? "" : dashattn_last_error());
    return r;
}

/* A call that queued its work: GPU backends check device-resident arguments
 * (seq_lens, block tables) on the device and report a bad one from the next
 * dashattn_synchronize instead (README, "Errors"). Either way counts as the
 * call's status; deferred records which. */
static call_result settled(int s, dashattn_status status)
{
    call_result r = called(status);
    if (status == DASHATTN_OK) {
        const dashattn_status later = dashattn_synchronize(ctxs[s], NULL);
        if (later != DASHATTN_OK) {
            r = called(later);
            r.deferred = 1;
        }
    }
    return r;
}

/* The core's answer for an operation whose plugin entry is NULL
 * (lib/calls.c): the only UNSUPPORTED that is not a broken promise. */
#define NOT_IMPLEMENTED "does not implement this operation"

/* Both sides ran `what`: the CPU must succeed, and so must the backend,
 * which may skip the case only where it lacks the whole operation (the CUDA
 * plugin's backward). An UNSUPPORTED for a dtype, shape or layout of an
 * operation it has is a failure: SPEC.md gives every backend every dtype. */
static int both_ran(const call_result r[2], const char *what)
{
    static int told;
    if (!CHECK(r[REF].status == DASHATTN_OK, "cpu %s: %s (%s)", what,
               dashattn_status_string(r[REF].status), r[REF].why))
        return 0;
    if (r[DUT].status == DASHATTN_ERR_UNSUPPORTED && strstr(r[DUT].why, NOT_IMPLEMENTED)) {
        if (!told++)
            printf("%s on %s: %s\n", what, side_name[DUT], r[DUT].why);
        case_skip("not implemented by the backend, skipped");
        return 0;
    }
    return CHECK(r[DUT].status == DASHATTN_OK, "%s %s: %s (%s)", side_name[DUT], what,
                 dashattn_status_string(r[DUT].status), r[DUT].why);
}

/* ---- host data ---- */

static int half(dashattn_dtype dt)
{
    return dt != DASHATTN_F32;
}

/* n f32 values rounded to dt, in a new buffer. */
static void *to_dtype(const float *src, size_t n, dashattn_dtype dt)
{
    void *dst = tu_xcalloc(n, dashattn_dtype_size(dt));
    const dashattn_status st = dashattn_convert(dst, dt, src, DASHATTN_F32, n);
    CHECK(st == DASHATTN_OK, "dashattn_convert to %s: %s", dashattn_dtype_name(dt),
          dashattn_last_error());
    return dst;
}

/* n values of dt as f32, in a new buffer (NaN stays NaN). */
static float *to_f32(const void *src, size_t n, dashattn_dtype dt)
{
    float *dst = tu_xcalloc(n, sizeof *dst);
    const dashattn_status st = dashattn_convert(dst, DASHATTN_F32, src, dt, n);
    CHECK(st == DASHATTN_OK, "dashattn_convert from %s: %s", dashattn_dtype_name(dt),
          dashattn_last_error());
    return dst;
}

/* ||a - b|| / ||b||; +inf if either holds a non-finite value. */
static double rel_norm(const float *a, const float *b, size_t n)
{
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(a[i]) || !isfinite(b[i]))
            return INFINITY;
        const double d = (double)a[i] - (double)b[i];
        num += d * d;
        den += (double)b[i] * (double)b[i];
    }
    return sqrt(num) / fmax(sqrt(den), 1e-300);
}

/* max |a - b|; +inf if either holds a non-finite value. */
static double max_abs(const float *a, const float *b, size_t n)
{
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(a[i]) || !isfinite(b[i]))
            return INFINITY;
        worst = fmax(worst, fabs((double)a[i] - (double)b[i]));
    }
    return worst;
}

/* Worst ||a_r - b_r|| / max(||b_r||, 1) over rows of dim values; +inf on
 * a non-finite value. */
static double worst_row(const float *a, const float *b, size_t n, int64_t dim)
{
    double worst = 0.0;
    for (size_t r = 0; r < n; r += (size_t)dim) {
        double num = 0.0, den = 0.0;
        for (size_t i = r; i < r + (size_t)dim; i++) {
            if (!isfinite(a[i]) || !isfinite(b[i]))
                return INFINITY;
            num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
            den += (double)b[i] * b[i];
        }
        worst = fmax(worst, sqrt(num) / fmax(sqrt(den), 1.0));
    }
    return worst;
}

/* 1 if all n bytes equal byte. */
static int all_bytes(const void *p, int byte, size_t n)
{
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++)
        if (c[i] != (unsigned char)byte)
            return 0;
    return 1;
}

/* Every one of n values of the dtype is a NaN. */
static int all_nan_values(const void *p, dashattn_dtype dtype, size_t n)
{
    float *f = tu_xcalloc(n ? n : 1, sizeof(float));
    int ok = dashattn_convert(f, DASHATTN_F32, p, dtype, n) == DASHATTN_OK;
    for (size_t i = 0; ok && i < n; i++)
        ok = isnan(f[i]);
    free(f);
    return ok;
}

/* ---- memory of a side's context; each array is its own allocation ---- */

static void *dev_alloc(int s, size_t bytes)
{
    void *p = NULL;
    const dashattn_status st = dashattn_memory_alloc(ctxs[s], bytes, &p);
    if (st != DASHATTN_OK) {
        FAIL("%s: dashattn_memory_alloc(%zu): %s", side_name[s], bytes, dashattn_last_error());
        return NULL;
    }
    return p;
}

/* A new allocation holding a copy of host memory. */
static void *dev_copy(int s, const void *src, size_t bytes)
{
    void *p = dev_alloc(s, bytes);
    if (p) {
        const dashattn_status st = dashattn_memory_upload(ctxs[s], p, src, bytes);
        if (st != DASHATTN_OK) {
            FAIL("%s: dashattn_memory_upload(%zu): %s", side_name[s], bytes, dashattn_last_error());
            dashattn_memory_free(ctxs[s], p);
            p = NULL;
        }
    }
    return p;
}

/* A new allocation with every byte set to byte. */
static void *dev_filled(int s, int byte, size_t bytes)
{
    void *host = tu_xcalloc(bytes, 1);
    memset(host, byte, bytes);
    void *p = dev_copy(s, host, bytes);
    free(host);
    return p;
}

/* Waits for the side's queued work, then copies bytes back to new host memory. */
static void *dev_fetch(int s, const void *src, size_t bytes)
{
    void *host = tu_xcalloc(bytes, 1);
    dashattn_status st = dashattn_synchronize(ctxs[s], NULL);
    if (st == DASHATTN_OK)
        st = dashattn_memory_download(ctxs[s], host, src, bytes);
    CHECK(st == DASHATTN_OK, "%s: synchronize/download(%zu): %s", side_name[s], bytes,
          dashattn_last_error());
    if (st != DASHATTN_OK)
        memset(host, POISON_FLOAT, bytes);
    return host;
}

static void dev_free(int s, void **ptrs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dashattn_memory_free(ctxs[s], ptrs[i]);
}

static int all_allocated(void *const *ptrs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!ptrs[i])
            return 0;
    return 1;
}

/* The workspace a side uses for op: the backend under test gets an explicit
 * one from dashattn_memory_alloc in every other case (how GPU users pass
 * it); otherwise NULL and the call allocates its own. *ok clears on failure. */
static void *workspace_for(int s, const dashattn_plan *plan, dashattn_operation op, int explicit_ws,
                           size_t *size, int *ok)
{
    *size = s == DUT && explicit_ws ? dashattn_plan_operation_workspace_size(plan, op) : 0;
    if (*size == 0)
        return NULL;
    void *ws = dev_alloc(s, *size);
    *ok &= ws != NULL;
    return ws;
}

/* Plans of one problem on both contexts; 0 (after a failed check) if either fails. */
static int make_plans(const dashattn_problem *pr, dashattn_plan *plan[2])
{
    int ok = 1;
    for (int s = 0; s < 2; s++) {
        plan[s] = NULL;
        const dashattn_status st = dashattn_plan_create(ctxs[s], pr, &plan[s]);
        ok &= CHECK(st == DASHATTN_OK, "%s: plan: %s", side_name[s], dashattn_last_error());
    }
    return ok;
}

/* ======================================================================== */
/* Forward and backward                                                     */
/* ======================================================================== */

#define DT_F32 (1u << DASHATTN_F32)
#define DT_F16 (1u << DASHATTN_F16)
#define DT_BF16 (1u << DASHATTN_BF16)
#define DT_ALL (DT_F32 | DT_F16 | DT_BF16)

typedef struct fwd_case {
    const char *name;
    int64_t batch, heads_q, heads_kv, len_q, len_k, dim;
    int causal;
    int32_t block_size, n_sink, n_local;
    double alpha;
    int32_t topk; /* > 0: TOPK selection */
    int group;    /* dashattn_group_mode: 0 per_head, 1 shared, 2 mean */
    int bshd;     /* BSHD-strided tensors instead of BHSD */
    double focus; /* da_synth_qkv's focus: larger is sparser */
    unsigned dtypes;
    double sigma;         /* > 0: the flat prior with this sigma */
    int halley;           /* > 0: the Halley schedule with this many steps */
    double summary;       /* > 0: learned summary vectors h ~ N(0, summary^2) */
    double scale, scale1; /* the problem's scale and stage1_scale (0: default) */
    int pad;              /* rows of D + pad elements, NaN in the gaps */
} fwd_case;

/* name, B, Hq, Hkv, Nq, Nk, D, causal, S, sink, local, alpha, topk, group, bshd, focus, dtypes,
 * sigma, halley, summary[, scale, stage1_scale, pad]. (clang-format would give rows of 20 values
 * one line per value.) */
// clang-format off
static const fwd_case fwd_cases[] = {
    {"causal mha D64 S16 a1.5", 1, 2, 2, 256, 256, 64, 1, 16, 1, 2, 1.5, 0, 0, 0, 3.0, DT_ALL, 0, 0,
     0, 0, 0, 0},
    {"noncausal gqa4:2 per_head D64 Nq<Nk a1.5", 1, 4, 2, 48, 176, 64, 0, 16, 1, 2, 1.5, 0, 0, 0,
     3.0, DT_F32 | DT_BF16, 0, 0, 0, 0, 0, 0},
    {"chunked prefill ragged D128 S64 a1.5", 2, 2, 1, 40, 840, 128, 1, 64, 1, 2, 1.5, 0, 0, 0, 3.0,
     DT_ALL, 0, 0, 0, 0, 0, 0},
    {"causal gqa4:2 per_head D40 ragged a2", 1, 4, 2, 200, 200, 40, 1, 16, 1, 2, 2.0, 0, 0, 0, 3.0,
     DT_F32 | DT_F16, 0, 0, 0, 0, 0, 0},
    {"causal gqa8:2 shared D64 ragged a1.25", 1, 8, 2, 250, 250, 64, 1, 16, 1, 2, 1.25, 0, 1, 0,
     3.0, DT_F32 | DT_BF16, 0, 0, 0, 0, 0, 0},
    {"causal softmax a1 D64", 1, 2, 1, 96, 96, 64, 1, 16, 1, 2, 1.0, 0, 0, 0, 3.0, DT_F32, 0, 0, 0, 0, 0, 0},
    {"causal topk3 gqa4:2 per_head D64", 1, 4, 2, 256, 256, 64, 1, 16, 1, 2, 1.5, 3, 0, 0, 3.0,
     DT_F32 | DT_F16, 0, 0, 0, 0, 0, 0},
    {"noncausal topk2 gqa4:2 shared ragged D64", 1, 4, 2, 30, 90, 64, 0, 16, 1, 2, 1.5, 2, 1, 0,
     3.0, DT_F32, 0, 0, 0, 0, 0, 0},
    {"bshd chunked gqa4:2 shared ragged D64 a1.5", 2, 4, 2, 64, 200, 64, 1, 16, 1, 2, 1.5, 0, 1, 1,
     3.0, DT_F32 | DT_F16, 0, 0, 0, 0, 0, 0},
    {"causal mha D128 S64 a1.5", 1, 2, 2, 576, 576, 128, 1, 64, 1, 2, 1.5, 0, 0, 0, 3.0,
     DT_F32 | DT_BF16, 0, 0, 0, 0, 0, 0},
    {"noncausal sink0 D64 a1.75", 1, 2, 2, 64, 128, 64, 0, 16, 0, 1, 1.75, 0, 0, 0, 1.0, DT_F32, 0,
     0, 0, 0, 0, 0},
    {"causal sink2 local1 S8 D64 a1.5", 1, 2, 1, 96, 96, 64, 1, 8, 2, 1, 1.5, 0, 0, 0, 3.0, DT_F32,
     0, 0, 0, 0, 0, 0},
    /* The released function (SPEC.md version 2): the group mean, learned
     * block summaries, the flat prior (sigma 0.5 flattens hard: a prior far
     * from w) and the Halley schedule, mostly with the default layout. */
    {"released causal gqa4:1 mean summary halley3 ragged", 1, 4, 1, 200, 200, 64, 1, 16, 0, 1, 1.5,
     0, 2, 0, 3.0, DT_ALL, 0, 3, 1.5, 0, 0, 0},
    {"causal gqa8:2 mean summary ragged", 1, 8, 2, 250, 250, 64, 1, 16, 0, 1, 1.5, 0, 2, 0, 3.0,
     DT_F32 | DT_BF16, 0, 0, 1.5, 0, 0, 0},
    {"noncausal gqa4:1 mean summary ragged Nq<Nk", 1, 4, 1, 40, 170, 64, 0, 16, 0, 1, 1.5, 0, 2, 0,
     3.0, DT_F32 | DT_F16, 0, 0, 1.5, 0, 0, 0},
    {"causal gqa4:2 per_head summary flat0.5 ragged", 1, 4, 2, 200, 200, 64, 1, 16, 1, 2, 1.5, 0, 0,
     0, 3.0, DT_F32, 0.5, 0, 1.5, 0, 0, 0},
    {"causal gqa4:2 shared summary halley3", 1, 4, 2, 256, 256, 64, 1, 16, 0, 1, 1.5, 0, 1, 0, 3.0,
     DT_F32, 0, 3, 1.5, 0, 0, 0},
    {"causal gqa8:2 mean flat1e6 halley3 summary", 1, 8, 2, 192, 192, 64, 1, 16, 0, 1, 1.5, 0, 2, 0,
     3.0, DT_F32 | DT_BF16, 1e6, 3, 1.5, 0, 0, 0},
    {"noncausal gqa4:1 mean flat0.5 halley3 ragged", 1, 4, 1, 48, 180, 64, 0, 16, 0, 1, 1.5, 0, 2,
     0, 3.0, DT_F32, 0.5, 3, 0, 0, 0, 0},
    {"causal gqa4:2 mean flat0.5 a2 D40 ragged", 1, 4, 2, 170, 170, 40, 1, 16, 1, 2, 2.0, 0, 2, 0,
     3.0, DT_F32, 0.5, 0, 0, 0, 0, 0},
    {"chunked prefill mean summary D128 S64 ragged", 2, 4, 1, 40, 840, 128, 1, 64, 0, 1, 1.5, 0, 2,
     0, 3.0, DT_ALL, 0, 0, 1.5, 0, 0, 0},
    {"bshd chunked gqa4:2 mean summary flat0.5", 2, 4, 2, 64, 200, 64, 1, 16, 1, 2, 1.5, 0, 2, 1,
     3.0, DT_F32, 0.5, 0, 1.5, 0, 0, 0},
    {"causal topk2 gqa4:2 mean summary", 1, 4, 2, 128, 128, 64, 1, 16, 0, 1, 1.5, 2, 2, 0, 3.0,
     DT_F32, 0, 0, 1.5, 0, 0, 0},
    {"causal gqa4:1 mean a1.25 summary flat1e6", 1, 4, 1, 128, 128, 64, 1, 16, 0, 1, 1.25, 0, 2, 0,
     3.0, DT_F32, 1e6, 0, 1.5, 0, 0, 0},
    /* Scales other than the defaults, stage 1 apart from stage 2. */
    {"causal gqa4:2 per_head scale0.2 stage1 0.05", 1, 4, 2, 128, 128, 64, 1, 16, 1, 2, 1.5, 0, 0,
     0, 3.0, DT_ALL, 0, 0, 0, 0.2, 0.05, 0},
    {"causal gqa4:1 mean summary stage1 0.3", 1, 4, 1, 128, 128, 64, 1, 16, 0, 1, 1.5, 0, 2, 0,
     1.0, DT_F32 | DT_BF16, 0, 0, 1.5, 0, 0.3, 0},
    {"causal mha D8 S16 a1.5", 1, 2, 2, 96, 96, 8, 1, 16, 1, 2, 1.5, 0, 0, 0, 3.0, DT_F32 | DT_F16,
     0, 0, 0, 0, 0, 0},
    {"causal gqa4:2 shared D24 ragged", 1, 4, 2, 90, 90, 24, 1, 16, 1, 2, 1.5, 0, 1, 0, 3.0,
     DT_F32 | DT_BF16, 0, 0, 0, 0, 0, 0},
    {"causal mha D256 S16", 1, 2, 2, 256, 256, 256, 1, 16, 1, 2, 1.5, 0, 0, 0, 3.0, DT_ALL, 0, 0, 0,
     0, 0, 0},
    {"noncausal gqa4:2 per_head Nq>Nk", 1, 4, 2, 120, 56, 64, 0, 16, 1, 1, 1.5, 0, 0, 0, 3.0,
     DT_F32 | DT_F16, 0, 0, 0, 0, 0, 0},
    {"noncausal mean summary Nq>Nk padded", 1, 4, 1, 100, 48, 64, 0, 16, 0, 1, 1.5, 0, 2, 0, 1.0,
     DT_F32, 0, 0, 1.5, 0, 0, 3},
};
// clang-format on

/* Gradients are compared on a few configurations of the same kind. */
// clang-format off
static const fwd_case bwd_cases[] = {
    {"causal mha D64 S16 a1.5", 1, 2, 2, 64, 64, 64, 1, 16, 1, 2, 1.5, 0, 0, 0, 2.0,
     DT_F32 | DT_BF16, 0, 0, 0, 0, 0, 0},
    {"noncausal gqa4:2 per_head D40 ragged", 1, 4, 2, 24, 72, 40, 0, 16, 1, 2, 1.5, 0, 0, 0, 2.0,
     DT_F32, 0, 0, 0, 0, 0, 0},
    {"causal gqa4:2 shared a1.25 ragged", 1, 4, 2, 80, 80, 64, 1, 16, 1, 2, 1.25, 0, 1, 0, 2.0,
     DT_F32 | DT_F16, 0, 0, 0, 0, 0, 0},
    {"causal topk2 D64", 1, 2, 1, 64, 64, 64, 1, 16, 1, 2, 1.5, 2, 0, 0, 2.0, DT_F32, 0, 0, 0, 0, 0, 0},
    /* The released function; dh is compared wherever h is given. */
    {"causal gqa4:1 mean summary ragged", 1, 4, 1, 72, 72, 64, 1, 16, 0, 1, 1.5, 0, 2, 0, 2.0,
     DT_ALL, 0, 0, 1.5, 0, 0, 0},
    {"noncausal gqa8:2 mean summary flat0.5 ragged", 1, 8, 2, 24, 72, 40, 0, 16, 0, 1, 1.5, 0, 2, 0,
     2.0, DT_F32, 0.5, 0, 1.5, 0, 0, 0},
    {"causal gqa4:2 per_head summary flat1e6", 1, 4, 2, 80, 80, 64, 1, 16, 1, 2, 1.5, 0, 0, 0, 2.0,
     DT_F32, 1e6, 0, 1.5, 0, 0, 0},
    {"causal gqa4:2 shared summary halley3 ragged", 1, 4, 2, 90, 90, 64, 1, 16, 0, 1, 1.5, 0, 1, 0,
     2.0, DT_F32, 0, 3, 1.5, 0, 0, 0},
    {"causal gqa8:2 mean halley3 flat0.5 ragged", 1, 8, 2, 70, 70, 32, 1, 8, 0, 1, 1.5, 0, 2, 0,
     2.0, DT_F32 | DT_F16, 0.5, 3, 0, 0, 0, 0},
    {"released chunked b2 gqa4:1 mean halley3 summary", 2, 4, 1, 64, 96, 64, 1, 16, 0, 1, 1.5, 0, 2,
     0, 2.0, DT_F32, 0, 3, 1.5, 0, 0, 0},
    {"causal topk2 gqa4:2 mean summary", 1, 4, 2, 64, 64, 64, 1, 16, 0, 1, 1.5, 2, 2, 0, 2.0,
     DT_F32, 0, 0, 1.5, 0, 0, 0},
    {"causal gqa4:2 scale0.2 stage1 0.05", 1, 4, 2, 64, 64, 64, 1, 16, 1, 2, 1.5, 0, 0, 0, 2.0,
     DT_F32 | DT_F16, 0, 0, 0, 0.2, 0.05, 0},
    {"causal mha D8", 1, 2, 2, 48, 48, 8, 1, 16, 1, 2, 1.5, 0, 0, 0, 2.0, DT_F32, 0, 0, 0, 0, 0, 0},
    {"causal gqa4:2 D24 ragged", 1, 4, 2, 40, 40, 24, 1, 16, 1, 2, 1.5, 0, 0, 0, 2.0, DT_F32, 0, 0,
     0, 0, 0, 0},
    {"causal mha D256 S32", 1, 2, 2, 64, 64, 256, 1, 32, 1, 2, 1.5, 0, 0, 0, 2.0, DT_F32, 0, 0, 0, 0,
     0, 0},
    {"noncausal gqa4:2 Nq>Nk", 1, 4, 2, 56, 32, 64, 0, 16, 1, 1, 1.5, 0, 0, 0, 2.0, DT_F32, 0, 0, 0,
     0, 0, 0},
    {"bshd chunked gqa4:2 shared ragged", 1, 4, 2, 24, 72, 64, 1, 16, 1, 2, 1.5, 0, 1, 1, 2.0,
     DT_F32 | DT_BF16, 0, 0, 0, 0, 0, 0},
    {"padded gqa4:1 mean summary ragged", 1, 4, 1, 90, 90, 64, 1, 16, 0, 1, 1.5, 0, 2, 0, 2.0,
     DT_F32, 0, 0, 1.5, 0, 0, 4},
    {"bshd padded noncausal ragged Nq<Nk", 2, 2, 1, 20, 60, 40, 0, 16, 1, 2, 1.5, 0, 0, 1, 2.0,
     DT_F32 | DT_F16, 0, 0, 0, 0, 0, 2},
};
// clang-format on

/* Backward cases added after the others, run last for the reason of
 * dec_late_cases: the released models' group of 16 over several 64-row
 * tiles, blocks of 128 keys (two thread blocks of the GPU's kv kernel share
 * one block's pooling weights), and softmax selection, whose support is
 * every candidate. */
// clang-format off
static const fwd_case bwd_late_cases[] = {
    {"causal gqa16:1 mean summary D128 S64 ragged", 1, 16, 1, 300, 300, 128, 1, 64, 0, 1, 1.5, 0, 2,
     0, 1.0, DT_F32 | DT_BF16, 0, 0, 1.5, 0, 0, 0},
    {"causal gqa4:2 per_head summary D128 S128 a2 ragged", 1, 4, 2, 600, 600, 128, 1, 128, 1, 1,
     2.0, 0, 0, 0, 0.5, DT_F32, 0, 0, 1.5, 0, 0, 0},
    {"noncausal gqa4:2 shared softmax flat2 D64 S32", 1, 4, 2, 100, 150, 64, 0, 32, 1, 1, 1.0, 0, 1,
     0, 3.0, DT_F32, 2.0, 0, 0, 0, 0, 0},
    /* Shapes of the tensor-core kv kernel (16-bit, D 64 or 128, S 64,
     * priors from stage 1's table). */
    {"causal b2 gqa6:2 shared flat0.5 D64 S64 ragged", 2, 6, 2, 200, 200, 64, 1, 64, 1, 1, 1.5, 0,
     1, 0, 1.0, DT_BF16 | DT_F16, 0.5, 0, 0, 0, 0, 0},
    {"noncausal gqa8:2 mean summary D128 S64 Nq<Nk", 1, 8, 2, 70, 260, 128, 0, 64, 0, 1, 1.5, 0, 2,
     0, 1.0, DT_F16, 0, 0, 1.5, 0, 0, 0},
    {"chunked gqa4:1 mean halley3 D128 S64", 1, 4, 1, 90, 330, 128, 1, 64, 1, 1, 1.5, 0, 2, 0, 1.0,
     DT_BF16, 0, 3, 0, 0, 0, 0},
    /* Groups of more than 64 heads: the GPU's stage-1 backward then takes
     * one row per thread block and its dq in several tiles of 64 pairs. */
    {"causal gqa72:1 mean flat0.5 D16 S16 ragged", 1, 72, 1, 50, 50, 16, 1, 16, 0, 1, 1.5, 0, 2, 0,
     2.0, DT_F32, 0.5, 0, 0, 0, 0, 0},
    {"causal gqa80:1 shared summary D8 S16", 1, 80, 1, 112, 112, 8, 1, 16, 0, 1, 1.5, 0, 1, 0, 2.0,
     DT_F32, 0, 0, 1.5, 0, 0, 0},
};
// clang-format on

/* Forward cases added after the others, run last for the reason of
 * dec_late_cases. */
// clang-format off
static const fwd_case fwd_late_cases[] = {
    /* Stage-2 tiles of (row, head) pairs: 64 / 6 is no whole number of rows,
     * so rows straddle tiles, and a last tile of a pair of warpgroups
     * (hopper/) is left without one. */
    {"causal gqa12:2 mean D64 S64 ragged", 1, 12, 2, 300, 300, 64, 1, 64, 0, 1, 1.5, 0, 2, 0, 3.0,
     DT_F16 | DT_BF16, 0, 0, 0, 0, 0, 0},
    {"causal gqa6:1 shared D128 S64 ragged", 2, 6, 1, 330, 330, 128, 1, 64, 0, 1, 1.5, 0, 1, 0,
     1.0, DT_F16 | DT_BF16, 0, 0, 0, 0, 0, 0},
    {"noncausal gqa8:2 mean D128 S64 Nq<Nk", 1, 8, 2, 100, 330, 128, 0, 64, 1, 0, 1.5, 0, 2, 0,
     3.0, DT_F32 | DT_BF16, 0, 0, 0, 0, 0, 0},
    /* 300 blocks of a 256-dim head: within AMD's 64 KiB the GPU's portable
     * stage 1 scores fewer rows per thread block. */
    {"causal gqa4:1 mean D256 S1", 1, 4, 1, 300, 300, 256, 1, 1, 0, 1, 1.5, 0, 2, 0, 2.0, DT_F32, 0,
     0, 0, 0, 0, 0},
};
// clang-format on

static void fwd_problem(const fwd_case *c, dashattn_dtype dt, dashattn_problem *pr)
{
    dashattn_problem_init(pr, c->batch, c->heads_q, c->heads_kv, c->len_q, c->len_k, c->dim);
    pr->dtype = dt;
    pr->causal = c->causal;
    pr->block_size = c->block_size;
    pr->n_sink = c->n_sink;
    pr->n_local = c->n_local;
    pr->alpha = c->alpha;
    if (c->topk > 0) {
        pr->selection = DASHATTN_SELECT_TOPK;
        pr->topk = c->topk;
    }
    pr->group_mode = (dashattn_group_mode)c->group;
    pr->scale = c->scale;
    pr->stage1_scale = c->scale1;
    tu_set_prior_and_schedule(pr, c->sigma, c->halley);
}

/* Learned summary vectors h of Hkv heads, ~ N(0, scale^2), in an f32
 * buffer whose heads lie SUMMARY_PAD floats apart and NaN in between: a
 * backend ignoring the tensor's strides reads NaN. The same bytes go to both
 * sides. The tensor is [1, Hkv, 1, D]. */
#define SUMMARY_PAD 5

static size_t summary_floats(int64_t heads_kv, int64_t dim)
{
    return (size_t)(heads_kv * (dim + SUMMARY_PAD));
}

static float *summary_make(uint64_t seed, int64_t heads_kv, int64_t dim, double scale)
{
    const size_t n = summary_floats(heads_kv, dim);
    float *h = tu_xcalloc(n, sizeof *h);
    float *r = tu_random_floats(seed, (size_t)(heads_kv * dim), scale);
    for (size_t i = 0; i < n; i++)
        h[i] = NAN;
    for (int64_t g = 0; g < heads_kv; g++)
        memcpy(h + g * (dim + SUMMARY_PAD), r + g * dim, (size_t)dim * sizeof(float));
    free(r);
    return h;
}

static dashattn_tensor summary_view(void *data, int64_t heads_kv, int64_t dim)
{
    dashattn_tensor t = dashattn_tensor_bhsd(data, DASHATTN_F32, 1, heads_kv, 1, dim);
    t.strides[1] = t.strides[2] = dim + SUMMARY_PAD;
    t.strides[0] = heads_kv * (dim + SUMMARY_PAD);
    return t;
}

/* The view of data shaped like q (kv = 0) or like k and v (kv = 1). */
static dashattn_tensor case_view(const fwd_case *c, void *data, dashattn_dtype dt, int kv)
{
    const int64_t heads = kv ? c->heads_kv : c->heads_q, len = kv ? c->len_k : c->len_q;
    const int64_t row = c->dim + c->pad;
    dashattn_tensor t = c->bshd ? dashattn_tensor_bshd(data, dt, c->batch, heads, len, row)
                                : dashattn_tensor_bhsd(data, dt, c->batch, heads, len, row);
    t.shape[3] = c->dim;
    return t;
}

/* Elements of the memory behind case_view (gaps included). */
static size_t view_elems(const fwd_case *c, int kv)
{
    const int64_t heads = kv ? c->heads_kv : c->heads_q, len = kv ? c->len_k : c->len_q;
    return (size_t)(c->batch * heads * len * (c->dim + c->pad));
}

/* Contiguous [B, H, N, D] values laid out as case_view says, NaN in the gaps. */
static float *to_layout(const fwd_case *c, const float *bhsd, int kv)
{
    const size_t mem = view_elems(c, kv);
    const dashattn_tensor t = case_view(c, NULL, DASHATTN_F32, kv);
    float *img = tu_nan_floats(mem);
    size_t i = 0;
    for (int64_t b = 0; b < t.shape[0]; b++)
        for (int64_t h = 0; h < t.shape[1]; h++)
            for (int64_t n = 0; n < t.shape[2]; n++)
                for (int64_t d = 0; d < t.shape[3]; d++)
                    img[b * t.strides[0] + h * t.strides[1] + n * t.strides[2] + d * t.strides[3]] =
                        bhsd[i++];
    return img;
}

/* The inverse of to_layout for a side's output image, checking that the
 * gaps kept their NaN poison (nothing written outside the view). */
static float *from_layout(int s, const fwd_case *c, const float *img, int kv, const char *what)
{
    const size_t mem = view_elems(c, kv);
    const dashattn_tensor t = case_view(c, NULL, DASHATTN_F32, kv);
    float *gaps = tu_xcalloc(mem, sizeof *gaps);
    memcpy(gaps, img, mem * sizeof *gaps);
    float *bhsd =
        tu_xcalloc((size_t)(t.shape[0] * t.shape[1] * t.shape[2] * t.shape[3]), sizeof *bhsd);
    size_t i = 0;
    for (int64_t b = 0; b < t.shape[0]; b++)
        for (int64_t h = 0; h < t.shape[1]; h++)
            for (int64_t n = 0; n < t.shape[2]; n++)
                for (int64_t d = 0; d < t.shape[3]; d++) {
                    const int64_t at =
                        b * t.strides[0] + h * t.strides[1] + n * t.strides[2] + d * t.strides[3];
                    bhsd[i++] = img[at];
                    gaps[at] = NAN;
                }
    size_t written = 0;
    for (size_t j = 0; j < mem; j++)
        written += !isnan(gaps[j]);
    CHECK(written == 0, "%s: %s written in %zu elements between its padded rows", side_name[s],
          what, written);
    free(gaps);
    return bhsd;
}

/* Host inputs of one case in one dtype: the same bytes go to both sides. */
typedef struct fwd_data {
    dashattn_dtype dt;
    size_t nq, nkv, rows, nh; /* values (nq, nkv: [B, H, N, D]) */
    size_t mq, mkv;           /* elements of the memory behind case_view */
    int64_t m_blocks, max_blocks;
    void *q, *k, *v, *dout; /* dt, in the case's layout */
    float *h;               /* summary_make's, NULL for mean pooling */
    /* The values the backends get (rounded to dt), contiguous [B, H, N, D]
     * and h [Hkv, D], for the float64 reference; hd NULL without h. */
    double *qd, *kd, *vd, *doutd, *hd;
} fwd_data;

/* n values rounded to dt, in the case's layout; *d receives the rounded
 * values as contiguous doubles. */
static void *round_input(const fwd_case *c, const float *bhsd, size_t n, int kv, dashattn_dtype dt,
                         double **d)
{
    float *img = to_layout(c, bhsd, kv);
    void *out = to_dtype(img, view_elems(c, kv), dt);
    float *back = to_dtype(bhsd, n, dt), *rounded = to_f32(back, n, dt);
    *d = ref_to_double(rounded, (int64_t)n);
    free(img);
    free(back);
    free(rounded);
    return out;
}

static void fwd_data_make(const fwd_case *c, dashattn_dtype dt, uint64_t seed, int64_t m_blocks,
                          fwd_data *x)
{
    x->dt = dt;
    x->nq = (size_t)(c->batch * c->heads_q * c->len_q * c->dim);
    x->nkv = (size_t)(c->batch * c->heads_kv * c->len_k * c->dim);
    x->mq = view_elems(c, 0);
    x->mkv = view_elems(c, 1);
    x->rows = (size_t)(c->batch * c->heads_q * c->len_q);
    x->m_blocks = m_blocks;
    /* One spare slot per row, which must come back unused. */
    x->max_blocks = m_blocks + 1;
    float *q = tu_xcalloc(x->nq, sizeof *q), *k = tu_xcalloc(x->nkv, sizeof *k);
    float *v = tu_xcalloc(x->nkv, sizeof *v);
    da_synth_qkv(seed, c->batch, c->heads_q, c->heads_kv, c->len_q, c->len_k, c->dim, c->block_size,
                 c->focus, q, k, v);
    float *dout = tu_random_floats(seed ^ 0x9e37u, x->nq, 1.0);
    x->q = round_input(c, q, x->nq, 0, dt, &x->qd);
    x->k = round_input(c, k, x->nkv, 1, dt, &x->kd);
    x->v = round_input(c, v, x->nkv, 1, dt, &x->vd);
    x->dout = round_input(c, dout, x->nq, 0, dt, &x->doutd);
    x->nh = summary_floats(c->heads_kv, c->dim);
    x->h = c->summary > 0.0 ? summary_make(seed ^ 0x51u, c->heads_kv, c->dim, c->summary) : NULL;
    x->hd = NULL;
    if (x->h) {
        x->hd = tu_xcalloc((size_t)(c->heads_kv * c->dim), sizeof *x->hd);
        for (int64_t g = 0; g < c->heads_kv; g++)
            for (int64_t i = 0; i < c->dim; i++)
                x->hd[g * c->dim + i] = x->h[g * (c->dim + SUMMARY_PAD) + i];
    }
    free(q);
    free(k);
    free(v);
    free(dout);
}

static void fwd_data_free(fwd_data *x)
{
    free(x->q);
    free(x->k);
    free(x->v);
    free(x->dout);
    free(x->h);
    free(x->qd);
    free(x->kd);
    free(x->vd);
    free(x->doutd);
    free(x->hd);
}

/* What one side's forward produced, downloaded. */
typedef struct fwd_result {
    call_result call;
    void *out; /* dt bytes */
    float *out32, *lse, *weight;
    int32_t *index, *count;
    dashattn_forward_stats stats;
} fwd_result;

static void fwd_result_free(fwd_result *r)
{
    free(r->out);
    free(r->out32);
    free(r->lse);
    free(r->weight);
    free(r->index);
    free(r->count);
}

static void fwd_run(int s, const dashattn_plan *plan, const fwd_case *c, const fwd_data *x,
                    int explicit_ws, fwd_result *r)
{
    const size_t es = dashattn_dtype_size(x->dt), slots = x->rows * (size_t)x->max_blocks;
    memset(r, 0, sizeof *r);
    r->call = called(DASHATTN_ERR_INTERNAL);
    snprintf(r->call.why, sizeof r->call.why, "not run: device memory failed");
    void *mem[10] = {dev_copy(s, x->q, x->mq * es),
                     dev_copy(s, x->k, x->mkv * es),
                     dev_copy(s, x->v, x->mkv * es),
                     dev_filled(s, POISON_FLOAT, x->mq * es),
                     dev_filled(s, POISON_FLOAT, x->rows * sizeof(float)),
                     dev_filled(s, POISON_INT, slots * sizeof(int32_t)),
                     dev_filled(s, POISON_FLOAT, slots * sizeof(float)),
                     dev_filled(s, POISON_INT, x->rows * sizeof(int32_t)),
                     x->h ? dev_copy(s, x->h, x->nh * sizeof(float)) : NULL,
                     NULL};
    size_t ws_size;
    int ok = all_allocated(mem, 8) && (mem[8] || !x->h);
    mem[9] = workspace_for(s, plan, DASHATTN_OP_FORWARD, explicit_ws, &ws_size, &ok);
    if (ok) {
        const dashattn_tensor tq = case_view(c, mem[0], x->dt, 0);
        const dashattn_tensor tk = case_view(c, mem[1], x->dt, 1);
        const dashattn_tensor tv = case_view(c, mem[2], x->dt, 1);
        const dashattn_tensor to = case_view(c, mem[3], x->dt, 0);
        const dashattn_tensor th = summary_view(mem[8], c->heads_kv, c->dim);
        const dashattn_selection sel = {mem[5], mem[6], mem[7], x->max_blocks};
        r->stats = (dashattn_forward_stats){-1, -1, NAN};
        r->call = called(dashattn_forward(ctxs[s], plan, &tq, &tk, &tv, x->h ? &th : NULL, &to,
                                          mem[4], &sel, &r->stats, mem[9], ws_size, NULL));
    }
    if (r->call.status == DASHATTN_OK) {
        r->out = dev_fetch(s, mem[3], x->mq * es);
        float *img = to_f32(r->out, x->mq, x->dt);
        r->out32 = from_layout(s, c, img, 0, "out");
        free(img);
        r->lse = dev_fetch(s, mem[4], x->rows * sizeof(float));
        r->index = dev_fetch(s, mem[5], slots * sizeof(int32_t));
        r->weight = dev_fetch(s, mem[6], slots * sizeof(float));
        r->count = dev_fetch(s, mem[7], x->rows * sizeof(int32_t));
    }
    dev_free(s, mem, 10);
}

/* Keys [0, visible_end) that query row r sees (SPEC: bottom-right causal). */
static int64_t visible_end(const fwd_case *c, size_t r)
{
    return c->causal ? (int64_t)(r % (size_t)c->len_q) + c->len_k - c->len_q + 1 : c->len_k;
}

/* Visible keys of block j for a row that sees [0, vis). */
static int64_t block_visible(const fwd_case *c, int64_t j, int64_t vis)
{
    const int64_t lo = j * c->block_size, hi = lo + c->block_size;
    const int64_t end = hi < vis ? hi : vis;
    return end > lo ? end - lo : 0;
}

/* A side's selection as a dense [rows, M] weight matrix, after checking its
 * layout (count in [0, M], increasing indices with weights in (0, 1], unused
 * slots -1 and 0; the flat prior's weights may exceed 1). Also the attended
 * pairs the selection implies, and how many weights are partial: strictly
 * inside (0, 1), or for the flat prior other than 1. NULL if the layout is
 * broken. */
static double *dense_weights(int s, const fwd_case *c, const fwd_data *x, const fwd_result *r,
                             int64_t *attended, int64_t *partial)
{
    const int64_t m = x->m_blocks, mb = x->max_blocks;
    double *w = tu_xcalloc(x->rows * (size_t)m, sizeof *w);
    int64_t bad = 0, first_bad = -1;
    *attended = 0;
    *partial = 0;
    for (size_t row = 0; row < x->rows; row++) {
        const int32_t *idx = r->index + row * (size_t)mb;
        const float *wt = r->weight + row * (size_t)mb;
        const int64_t count = r->count[row], vis = visible_end(c, row);
        const int flat = c->sigma > 0.0;
        int ok = count >= 0 && count <= m;
        for (int64_t i = 0; ok && i < count; i++) {
            ok = idx[i] >= 0 && idx[i] < m && (i == 0 || idx[i] > idx[i - 1]) && wt[i] > 0.0f &&
                 (flat ? isfinite(wt[i]) : wt[i] <= 1.0f);
            if (ok) {
                w[row * (size_t)m + (size_t)idx[i]] = wt[i];
                *attended += block_visible(c, idx[i], vis);
                *partial += flat ? wt[i] != 1.0f : wt[i] < 1.0f;
            }
        }
        for (int64_t i = count; ok && i < mb; i++)
            ok = idx[i] == -1 && wt[i] == 0.0f;
        if (!ok && bad++ == 0)
            first_bad = (int64_t)row;
    }
    if (!CHECK(bad == 0, "%s: selection layout broken in %lld rows (first row %lld: count %d)",
               side_name[s], (long long)bad, (long long)first_bad,
               first_bad >= 0 ? r->count[first_bad] : 0)) {
        free(w);
        return NULL;
    }
    return w;
}

/* A side's stats agree with the rows it sees and with its own selection. */
static void check_stats(int s, const fwd_case *c, const fwd_data *x, const fwd_result *r,
                        int64_t attended)
{
    int64_t visible = 0;
    for (size_t row = 0; row < x->rows; row++)
        visible += visible_end(c, row);
    CHECK(r->stats.visible_pairs == visible, "%s: visible_pairs %lld, the rows see %lld",
          side_name[s], (long long)r->stats.visible_pairs, (long long)visible);
    CHECK(r->stats.attended_pairs == attended,
          "%s: attended_pairs %lld, its selection reads %lld pairs", side_name[s],
          (long long)r->stats.attended_pairs, (long long)attended);
    const double sparsity = 1.0 - (double)attended / (double)visible;
    CHECK(fabs(r->stats.sparsity - sparsity) <= 1e-9,
          "%s: sparsity %.9f, 1 - attended/visible %.9f", side_name[s], r->stats.sparsity,
          sparsity);
}

/* The flat prior's log pi = (log w - mu) / sigma carries the errors of log w
 * and of mu, the mean log w of the kept candidates (where a weight at the
 * support's edge has a large relative error), times 1 / sigma: its weights
 * and the lse that includes them get as much more room, as in test_forward. */
static double flat_factor(const fwd_case *c)
{
    return c->sigma > 0.0 ? 1.0 + 2.0 / c->sigma : 1.0;
}

/* Rows (forward) and cases (backward) compared with the float64
 * reference, and those left out for a block on the support's boundary. */
static long ref_rows_compared, ref_rows_skipped, ref_grads_compared, ref_grads_skipped;

static double ref_tol(dashattn_dtype dt)
{
    return dt == DASHATTN_F16 ? REF_TOL_F16 : dt == DASHATTN_BF16 ? REF_TOL_BF16 : REF_TOL_F32;
}

/* Blocks of row `row` that a side's dense weights w (ref->w's layout) keep
 * where the reference drops them or the other way round, at a stage-1 weight
 * so small that either answer is right; f32 scores give such weights a
 * relative error near 1e-6, 16-bit ones up to a few units of the dtype. */
static int64_t boundary_blocks(dashattn_dtype dt, const double *w, const ref_result *ref,
                               size_t row, int64_t m)
{
    const double edge = half(dt) ? WEIGHT_TOL_HALF : REF_WEIGHT_TOL_F32;
    int64_t n = 0;
    for (int64_t j = 0; j < m; j++) {
        const size_t i = row * (size_t)m + (size_t)j;
        n += (w[i] > 0.0) != (ref->w[i] > 0.0) && ref->wsel[i] <= edge;
    }
    return n;
}

/* One side's forward against ref_forward on the same (rounded) inputs: out
 * and lse at SPEC.md's 1e-5 for f32 and the per-dtype tolerance for 16 bits,
 * the weights too for f32. Rows with a block on the support's boundary (see
 * boundary_blocks) are left out: the flat prior with a large sigma gives such
 * a block a weight near 1 on one side and 0 on the other. */
static void fwd_compare_ref(int s, const fwd_case *c, const fwd_data *x, const fwd_result *r,
                            const double *w, const ref_config *cfg, const ref_result *ref)
{
    const int64_t m = x->m_blocks, d = c->dim;
    const double tol = ref_tol(x->dt);
    const double wtol = cfg->flat && cfg->sigma < 1e3 ? REF_WEIGHT_TOL_FLAT : REF_WEIGHT_TOL_F32;
    double on = 0.0, od = 0.0, ln = 0.0, ld = 0.0, worst_r = 0.0, worst_w = 0.0;
    size_t worst_w_at = 0;
    long used = 0, left = 0;
    for (size_t row = 0; row < x->rows; row++) {
        if (boundary_blocks(x->dt, w, ref, row, m) > 0) {
            left++;
            continue;
        }
        used++;
        double rn = 0.0, rd = 0.0;
        for (int64_t i = 0; i < d; i++) {
            const size_t at = row * (size_t)d + (size_t)i;
            const double got = r->out32[at], want = ref->out[at];
            const double e = isfinite(got) ? (got - want) * (got - want) : INFINITY;
            rn += e;
            rd += want * want;
        }
        on += rn;
        od += rd;
        worst_r = fmax(worst_r, sqrt(rn) / fmax(sqrt(rd), 1.0));
        const double gl = r->lse[row], wl = ref->lse[row];
        ln += isfinite(gl) ? (gl - wl) * (gl - wl) : INFINITY;
        ld += wl * wl;
        if (!half(x->dt))
            for (int64_t j = 0; j < m; j++) {
                const size_t at = row * (size_t)m + (size_t)j;
                /* test_forward's scaling: pi^(1 / sigma) scales relative errors. */
                const double scale = cfg->flat ? fmax(1.0, ref->w[at]) * flat_factor(c) : 1.0;
                const double e = fabs(w[at] - ref->w[at]) / scale;
                if (e > worst_w) {
                    worst_w = e;
                    worst_w_at = at;
                }
            }
    }
    ref_rows_compared += used;
    ref_rows_skipped += left;
    /* The case must still test something against the reference. */
    CHECK(used * 2 >= (long)x->rows, "%s: %ld of %zu rows have a block on the support boundary",
          side_name[s], left, x->rows);
    const double eo = sqrt(on) / fmax(sqrt(od), 1e-300), el = sqrt(ln) / fmax(sqrt(ld), 1e-300);
    CHECK(eo <= tol, "%s: out differs from float64 by %.3g (relative norm, tolerance %.0e)",
          side_name[s], eo, tol);
    CHECK(worst_r <= ROW_TOL_FACTOR * tol,
          "%s: an out row differs from float64 by %.3g (relative to max(||row||, 1))", side_name[s],
          worst_r);
    CHECK(el <= tol, "%s: lse differs from float64 by %.3g (relative norm, tolerance %.0e)",
          side_name[s], el, tol);
    CHECK(worst_w <= wtol,
          "%s: block weight differs from float64 by %.3g (row %zu block %zu: %.6g, want %.6g)",
          side_name[s], worst_w, worst_w_at / (size_t)m, worst_w_at % (size_t)m, w[worst_w_at],
          ref->w[worst_w_at]);
    if (s == DUT)
        case_note(" | f64: out %.1e lse %.1e", eo, el);
    if (left)
        case_note(" (%ld boundary rows left out)", left);
}

static void fwd_compare(const fwd_case *c, const fwd_data *x, const fwd_result r[2],
                        const ref_config *cfg, const ref_result *ref)
{
    const int h = half(x->dt);
    const double eo = rel_norm(r[DUT].out32, r[REF].out32, x->nq);
    const double el = max_abs(r[DUT].lse, r[REF].lse, x->rows);
    const double er = worst_row(r[DUT].out32, r[REF].out32, x->nq, c->dim);
    CHECK(eo <= (h ? OUT_TOL_HALF : OUT_TOL_F32), "out differs by %.3g (relative norm)", eo);
    CHECK(er <= ROW_TOL_FACTOR * (h ? OUT_TOL_HALF : OUT_TOL_F32),
          "an out row differs by %.3g (relative to max(||row||, 1))", er);
    CHECK(el <= flat_factor(c) * (h ? LSE_TOL_HALF : LSE_TOL_F32), "lse differs by %.3g (max abs)",
          el);

    int64_t attended[2], partial[2];
    double *w[2];
    for (int s = 0; s < 2; s++)
        w[s] = dense_weights(s, c, x, &r[s], &attended[s], &partial[s]);
    double ew = INFINITY;
    if (w[REF] && w[DUT]) {
        size_t worst_at = 0;
        ew = 0.0;
        /* Relative above 1: the flat prior's weights reach e^(few / sigma). */
        for (size_t i = 0; i < x->rows * (size_t)x->m_blocks; i++) {
            const double d = fabs(w[DUT][i] - w[REF][i]) / fmax(1.0, fabs(w[REF][i]));
            if (d > ew) {
                ew = d;
                worst_at = i;
            }
        }
        CHECK(ew <= flat_factor(c) * (h ? WEIGHT_TOL_HALF : WEIGHT_TOL_F32),
              "block weights differ by %.3g (row %zu block %zu: %s %.6g, cpu %.6g)", ew,
              worst_at / (size_t)x->m_blocks, worst_at % (size_t)x->m_blocks, side_name[DUT],
              w[DUT][worst_at], w[REF][worst_at]);
        for (int s = 0; s < 2; s++)
            check_stats(s, c, x, &r[s], attended[s]);
        const double ea =
            fabs((double)(attended[DUT] - attended[REF])) / fmax((double)attended[REF], 1.0);
        CHECK(ea <= (h ? ATTENDED_TOL_HALF : ATTENDED_TOL_F32),
              "attended pairs %lld vs cpu %lld (%.3g relative)", (long long)attended[DUT],
              (long long)attended[REF], ea);
        /* The case must exercise what it claims: stage-1 weights strictly
         * inside (0, 1), and for entmax above alpha 1 some dropped pairs. */
        if (c->topk == 0)
            CHECK(partial[REF] > 0, "inputs give no block weight in (0, 1): stage 1 untested");
        if (c->topk > 0 || c->alpha > 1.0)
            CHECK(r[REF].stats.sparsity > 0.0, "inputs give no sparsity: selection untested");
    }
    case_note("out %.1e lse %.1e w %.1e attended %lld/%lld sparsity %.2f", eo, el, ew,
              (long long)r[DUT].stats.attended_pairs, (long long)r[REF].stats.attended_pairs,
              r[REF].stats.sparsity);
    for (int s = 0; s < 2; s++)
        if (w[s])
            fwd_compare_ref(s, c, x, &r[s], w[s], cfg, ref);
    free(w[REF]);
    free(w[DUT]);
}

/* DASHATTN_PARITY_ONLY=forward, decode or backward: the one kind of case
 * to run (all of them under racecheck take too long). The others return at
 * once; their callers still advance the seeds, so each case sees the inputs
 * of a whole run. */
static const char *parity_only;

static int kind_wanted(const char *kind)
{
    return !parity_only || strcmp(parity_only, kind) == 0;
}

static void fwd_case_run(const fwd_case *c, dashattn_dtype dt, uint64_t seed, int explicit_ws)
{
    if (!kind_wanted("forward"))
        return;
    case_begin("forward %s [%s]", c->name, dashattn_dtype_name(dt));
    dashattn_problem pr;
    fwd_problem(c, dt, &pr);
    dashattn_plan *plan[2];
    if (make_plans(&pr, plan)) {
        fwd_data x;
        fwd_data_make(c, dt, seed, dashattn_plan_num_blocks(plan[REF]), &x);
        fwd_result r[2];
        for (int s = 0; s < 2; s++)
            fwd_run(s, plan[s], c, &x, explicit_ws, &r[s]);
        const call_result calls[2] = {r[REF].call, r[DUT].call};
        if (both_ran(calls, "forward")) {
            ref_config cfg;
            ref_config_from_problem(&cfg, &pr);
            cfg.h = x.hd;
            ref_result ref;
            ref_forward(&cfg, x.qd, x.kd, x.vd, &ref);
            fwd_compare(c, &x, r, &cfg, &ref);
            ref_forward_free(&ref);
        }
        fwd_result_free(&r[REF]);
        fwd_result_free(&r[DUT]);
        fwd_data_free(&x);
    }
    dashattn_plan_destroy(plan[REF]);
    dashattn_plan_destroy(plan[DUT]);
    case_end();
}

/* dh's Hkv * D values out of summary_view's padded layout, after checking
 * that the padding kept its poison (nothing written outside the tensor). */
static float *summary_values(int s, const fwd_case *c, const float *padded)
{
    float *v = tu_xcalloc((size_t)(c->heads_kv * c->dim), sizeof *v);
    int pad_ok = 1;
    for (int64_t g = 0; g < c->heads_kv; g++) {
        const float *row = padded + g * (c->dim + SUMMARY_PAD);
        memcpy(v + g * c->dim, row, (size_t)c->dim * sizeof(float));
        pad_ok &= all_bytes(row + c->dim, POISON_FLOAT, SUMMARY_PAD * sizeof(float));
    }
    CHECK(pad_ok, "%s: dh written outside its [1, Hkv, 1, D] strided view", side_name[s]);
    return v;
}

/* Gradients of one side, for the CPU's forward results out and lse: both
 * sides differentiate the same forward, so only backward is compared. dq,
 * dk, dv, and dh where the case has h (else grads[3] is NULL). */
static call_result bwd_run(int s, const dashattn_plan *plan, const fwd_case *c, const fwd_data *x,
                           const fwd_result *fwd, int explicit_ws, float *grads[4])
{
    const size_t es = dashattn_dtype_size(x->dt);
    const size_t n[3] = {x->mq, x->mkv, x->mkv};
    call_result res = called(DASHATTN_ERR_INTERNAL);
    snprintf(res.why, sizeof res.why, "not run: device memory failed");
    const size_t nh = x->nh * sizeof(float);
    void *mem[12] = {dev_copy(s, x->q, x->mq * es),
                     dev_copy(s, x->k, x->mkv * es),
                     dev_copy(s, x->v, x->mkv * es),
                     dev_copy(s, fwd->out, x->mq * es),
                     dev_copy(s, fwd->lse, x->rows * sizeof(float)),
                     dev_copy(s, x->dout, x->mq * es),
                     dev_filled(s, POISON_FLOAT, n[0] * es),
                     dev_filled(s, POISON_FLOAT, n[1] * es),
                     dev_filled(s, POISON_FLOAT, n[2] * es),
                     x->h ? dev_copy(s, x->h, nh) : NULL,
                     x->h ? dev_filled(s, POISON_FLOAT, nh) : NULL,
                     NULL};
    size_t ws_size;
    int ok = all_allocated(mem, 9) && (!x->h || all_allocated(mem + 9, 2));
    mem[11] = workspace_for(s, plan, DASHATTN_OP_BACKWARD, explicit_ws, &ws_size, &ok);
    if (ok) {
        const dashattn_tensor tq = case_view(c, mem[0], x->dt, 0);
        const dashattn_tensor tk = case_view(c, mem[1], x->dt, 1);
        const dashattn_tensor tv = case_view(c, mem[2], x->dt, 1);
        const dashattn_tensor to = case_view(c, mem[3], x->dt, 0);
        const dashattn_tensor tdo = case_view(c, mem[5], x->dt, 0);
        const dashattn_tensor tdq = case_view(c, mem[6], x->dt, 0);
        const dashattn_tensor tdk = case_view(c, mem[7], x->dt, 1);
        const dashattn_tensor tdv = case_view(c, mem[8], x->dt, 1);
        const dashattn_tensor th = summary_view(mem[9], c->heads_kv, c->dim);
        const dashattn_tensor tdh = summary_view(mem[10], c->heads_kv, c->dim);
        res = called(dashattn_backward(ctxs[s], plan, &tq, &tk, &tv, x->h ? &th : NULL, &to, mem[4],
                                       &tdo, &tdq, &tdk, &tdv, x->h ? &tdh : NULL, mem[11], ws_size,
                                       NULL));
    }
    for (int g = 0; g < 4; g++) {
        grads[g] = NULL;
        if (res.status == DASHATTN_OK && g < 3) {
            static const char *names[3] = {"dq", "dk", "dv"};
            void *raw = dev_fetch(s, mem[6 + g], n[g] * es);
            float *img = to_f32(raw, n[g], x->dt);
            grads[g] = from_layout(s, c, img, g > 0, names[g]);
            free(img);
            free(raw);
        } else if (res.status == DASHATTN_OK && x->h) {
            float *raw = dev_fetch(s, mem[10], nh);
            grads[g] = summary_values(s, c, raw);
            free(raw);
        }
    }
    dev_free(s, mem, 12);
    return res;
}

/* The case must exercise what it claims: a stage-1 gradient reaches h
 * (entmax), or, with top-k, none may (dh exactly 0). */
static void check_dh_exercised(const fwd_case *c, const float *dh, size_t n)
{
    double norm = 0.0;
    for (size_t i = 0; i < n; i++)
        norm += (double)dh[i] * dh[i];
    if (c->topk > 0)
        CHECK(norm == 0.0, "cpu dh is not 0 with top-k selection (norm %.3g)", sqrt(norm));
    else
        CHECK(norm > 0.0, "cpu dh is 0: the summary gradient is untested");
}

static double ref_grad_tol(const fwd_case *c, dashattn_dtype dt)
{
    if (dt == DASHATTN_F16)
        return REF_GRAD_TOL_F16;
    if (dt == DASHATTN_BF16)
        return REF_GRAD_TOL_BF16;
    return c->sigma > 0.0 && c->sigma < 1e3 ? REF_GRAD_TOL_FLAT : REF_TOL_F32;
}

/* Both sides' gradients against ref_backward on the same rounded inputs,
 * unless the CPU forward keeps or drops a block on the support's boundary
 * (boundary_blocks): every row's selection feeds dk and dv, so such a case
 * is left out as a whole. dh is f32 in every dtype but sums the rounded
 * inputs' terms: held to the dtype's tolerance too. */
static void bwd_compare_ref(const fwd_case *c, const dashattn_problem *pr, const fwd_data *x,
                            const fwd_result *fwd, float *const g[2][4])
{
    ref_config cfg;
    ref_config_from_problem(&cfg, pr);
    cfg.h = x->hd;
    ref_result ref;
    ref_forward(&cfg, x->qd, x->kd, x->vd, &ref);
    int64_t attended, partial, boundary = 0;
    double *w = dense_weights(REF, c, x, fwd, &attended, &partial);
    for (size_t row = 0; w && row < x->rows; row++)
        boundary += boundary_blocks(x->dt, w, &ref, row, x->m_blocks);
    const int have_w = w != NULL;
    free(w);
    ref_forward_free(&ref);
    if (!have_w)
        return;
    if (boundary) {
        ref_grads_skipped++;
        case_note("| f64: left out, %lld boundary blocks", (long long)boundary);
        return;
    }
    ref_grads_compared++;
    const size_t n[4] = {x->nq, x->nkv, x->nkv, (size_t)(c->heads_kv * c->dim)};
    double *want[4];
    for (int i = 0; i < 4; i++)
        want[i] = tu_xcalloc(n[i], sizeof(double));
    ref_backward(&cfg, x->qd, x->kd, x->vd, x->doutd, want[0], want[1], want[2],
                 x->h ? want[3] : NULL);
    static const char *names[4] = {"dq", "dk", "dv", "dh"};
    const double tol = ref_grad_tol(c, x->dt);
    case_note("| f64:");
    for (int s = 0; s < 2; s++)
        for (int i = 0; i < (x->h ? 4 : 3); i++) {
            const double e = tu_rel_err_f(g[s][i], want[i], n[i]);
            const double t = i < 3         ? tol
                             : half(x->dt) ? REF_DH_TOL_HALF
                                           : fmax(tol, REF_DH_TOL_F32);
            CHECK(e <= t, "%s: %s differs from float64 by %.3g (relative norm, tolerance %.0e)",
                  side_name[s], names[i], e, t);
            if (s == DUT)
                case_note(" %s %.1e", names[i], e);
        }
    for (int i = 0; i < 4; i++)
        free(want[i]);
}

/* The backend's backward again on the same inputs: every backend here
 * promises the same bits (no atomics in the sums, fixed orders). */
static void bwd_check_repeat(const dashattn_plan *plan, const fwd_case *c, const fwd_data *x,
                             const fwd_result *fwd, int explicit_ws, float *const first[4],
                             const size_t n[4])
{
    float *again[4];
    const call_result res = bwd_run(DUT, plan, c, x, fwd, explicit_ws, again);
    if (CHECK(res.status == DASHATTN_OK, "second backward: %s", res.why))
        for (int i = 0; i < (x->h ? 4 : 3); i++)
            CHECK(memcmp(again[i], first[i], n[i] * sizeof(float)) == 0,
                  "a second backward gave other bits in gradient %d", i);
    for (int i = 0; i < 4; i++)
        free(again[i]);
}

static void bwd_case_run(const fwd_case *c, dashattn_dtype dt, uint64_t seed, int explicit_ws)
{
    if (!kind_wanted("backward"))
        return;
    case_begin("backward %s [%s]", c->name, dashattn_dtype_name(dt));
    dashattn_problem pr;
    fwd_problem(c, dt, &pr);
    dashattn_plan *plan[2];
    if (make_plans(&pr, plan)) {
        fwd_data x;
        fwd_data_make(c, dt, seed, dashattn_plan_num_blocks(plan[REF]), &x);
        fwd_result fwd;
        fwd_run(REF, plan[REF], c, &x, 0, &fwd);
        if (CHECK(fwd.call.status == DASHATTN_OK, "cpu forward: %s", fwd.call.why)) {
            float *g[2][4];
            call_result calls[2];
            for (int s = 0; s < 2; s++)
                calls[s] = bwd_run(s, plan[s], c, &x, &fwd, explicit_ws, g[s]);
            /* Backward is optional in the plugin ABI, as a whole operation. */
            if (both_ran(calls, "backward")) {
                static const char *names[4] = {"dq", "dk", "dv", "dh"};
                const size_t n[4] = {x.nq, x.nkv, x.nkv, (size_t)(c->heads_kv * c->dim)};
                for (int i = 0; i < (x.h ? 4 : 3); i++) {
                    /* dh is f32 in every dtype, a sum over all keys. */
                    const double e = rel_norm(g[DUT][i], g[REF][i], n[i]);
                    CHECK(e <= (half(dt) && i < 3 ? GRAD_TOL_HALF : GRAD_TOL_F32),
                          "%s differs by %.3g (relative norm)", names[i], e);
                    case_note("%s %.1e ", names[i], e);
                }
                if (x.h)
                    check_dh_exercised(c, g[REF][3], n[3]);
                bwd_compare_ref(c, &pr, &x, &fwd, g);
                bwd_check_repeat(plan[DUT], c, &x, &fwd, explicit_ws, g[DUT], n);
            }
            for (int s = 0; s < 2; s++)
                for (int i = 0; i < 4; i++)
                    free(g[s][i]);
        }
        fwd_result_free(&fwd);
        fwd_data_free(&x);
    }
    dashattn_plan_destroy(plan[REF]);
    dashattn_plan_destroy(plan[DUT]);
    case_end();
}

/* ======================================================================== */
/* KV caches and decode                                                     */
/* ======================================================================== */

#define MAX_BATCH 3
#define MAX_CHUNKS 6
/* Blocks per sequence a case may have (capacity / block size). */
#define MAX_PAGES_PER_SEQ 64
/* Paged pools hold this many pages nobody maps: they must stay untouched. */
#define SPARE_PAGES 2

typedef struct dec_case {
    const char *name;
    int paged;
    dashattn_dtype dtype, key_dtype; /* block keys: plan dtype or F32 */
    int64_t batch, heads_q, heads_kv, dim, cap;
    int32_t block_size;
    double alpha;
    int32_t topk;
    int group;                /* dashattn_group_mode */
    double sigma;             /* > 0: the flat prior */
    int halley;               /* > 0: the Halley schedule */
    double summary;           /* > 0: learned h ~ N(0, summary^2), given to every append */
    int32_t start[MAX_BATCH]; /* tokens already in the cache, written on the host */
    int chunks[MAX_CHUNKS];   /* appends before decoding; 0 ends the list */
    int steps;                /* then: append one token, decode, this many times */
    int unmapped;             /* paged: block `unmapped` (> 0) of the last sequence has no page */
    int bad_lens;             /* also decode with seq_lens outside [1, capacity] */
    int q_spread;             /* q's elements two apart (strides x2), NaN between them */
} dec_case;

/* Fields left out are 0: BHSD contiguous cache, f32 data and keys, ENTMAX
 * per-head selection, log prior, exact thresholds, mean pooling, empty
 * caches at the start. */
static const dec_case dec_cases[] = {
    {.name = "contiguous f32 gqa4:2 per_head a1.5",
     .batch = 2,
     .heads_q = 4,
     .heads_kv = 2,
     .dim = 64,
     .cap = 128,
     .block_size = 16,
     .alpha = 1.5,
     .chunks = {5, 16, 11, 9},
     .steps = 8,
     .bad_lens = 1},
    {.name = "paged f32 gqa8:2 shared a1.25 D128",
     .paged = 1,
     .batch = 2,
     .heads_q = 8,
     .heads_kv = 2,
     .dim = 128,
     .cap = 128,
     .block_size = 16,
     .alpha = 1.25,
     .group = DASHATTN_GROUP_SHARED,
     .chunks = {3, 13, 24, 7},
     .steps = 6},
    {.name = "paged f32 topk2 unequal lens",
     .paged = 1,
     .batch = 3,
     .heads_q = 4,
     .heads_kv = 2,
     .dim = 64,
     .cap = 112,
     .block_size = 16,
     .alpha = 1.5,
     .topk = 2,
     .start = {21, 50, 7},
     .chunks = {7, 12},
     .steps = 5,
     .bad_lens = 1},
    {.name = "contiguous f32 a2 D40 unequal lens cap120",
     .batch = 2,
     .heads_q = 2,
     .heads_kv = 1,
     .dim = 40,
     .cap = 120,
     .block_size = 16,
     .alpha = 2.0,
     .start = {33, 64},
     .chunks = {10, 17},
     .steps = 4},
    {.name = "paged f32 unmapped page",
     .paged = 1,
     .batch = 2,
     .heads_q = 4,
     .heads_kv = 2,
     .dim = 64,
     .cap = 96,
     .block_size = 16,
     .alpha = 1.5,
     .chunks = {20, 9},
     .steps = 3,
     .unmapped = 2},
    {.name = "paged f16 f32-keys gqa4:2 a1.5",
     .paged = 1,
     .dtype = DASHATTN_F16,
     .batch = 2,
     .heads_q = 4,
     .heads_kv = 2,
     .dim = 64,
     .cap = 96,
     .block_size = 16,
     .alpha = 1.5,
     .chunks = {20, 9},
     .steps = 4},
    {.name = "contiguous bf16 bf16-keys a1.5 unequal lens",
     .dtype = DASHATTN_BF16,
     .key_dtype = DASHATTN_BF16,
     .batch = 2,
     .heads_q = 4,
     .heads_kv = 2,
     .dim = 64,
     .cap = 96,
     .block_size = 16,
     .alpha = 1.5,
     .start = {5, 30},
     .chunks = {11},
     .steps = 3},
    /* Blocks of 64 with D 64 or 128 in f16/bf16: the GPU backends' fast
     * (tensor-core) decode path. */
    {.name = "paged bf16 S64 D128 gqa4:2 a1.5",
     .paged = 1,
     .dtype = DASHATTN_BF16,
     .batch = 2,
     .heads_q = 8,
     .heads_kv = 2,
     .dim = 128,
     .cap = 448,
     .block_size = 64,
     .alpha = 1.5,
     .chunks = {100, 130, 150},
     .steps = 3},
    /* The fast decode path with a q whose elements are not adjacent: a
     * backend that assumes contiguous rows reads the NaN between them. */
    {.name = "contiguous bf16 S64 D128 gqa4:2 spread q",
     .dtype = DASHATTN_BF16,
     .batch = 2,
     .heads_q = 8,
     .heads_kv = 2,
     .dim = 128,
     .cap = 256,
     .block_size = 64,
     .alpha = 1.5,
     .chunks = {150},
     .steps = 2,
     .q_spread = 1},
    {.name = "contiguous f16 S64 D64 gqa4:1 unequal lens",
     .dtype = DASHATTN_F16,
     .batch = 2,
     .heads_q = 4,
     .heads_kv = 1,
     .dim = 64,
     .cap = 512,
     .block_size = 64,
     .alpha = 1.5,
     .start = {70, 200},
     .chunks = {120, 60},
     .steps = 3},
    /* The released function: summaries of the blocks each append completes
     * (and of the host-written start) with the learned h. */
    {.name = "contiguous f32 gqa4:1 mean summary unequal lens",
     .batch = 2,
     .heads_q = 4,
     .heads_kv = 1,
     .dim = 64,
     .cap = 128,
     .block_size = 16,
     .alpha = 1.5,
     .group = DASHATTN_GROUP_MEAN,
     .summary = 1.5,
     .start = {21, 50},
     .chunks = {7, 12, 16},
     .steps = 5,
     .bad_lens = 1},
    {.name = "paged f32 gqa8:2 mean summary flat0.5 halley3",
     .paged = 1,
     .batch = 2,
     .heads_q = 8,
     .heads_kv = 2,
     .dim = 64,
     .cap = 128,
     .block_size = 16,
     .alpha = 1.5,
     .group = DASHATTN_GROUP_MEAN,
     .sigma = 0.5,
     .halley = 3,
     .summary = 1.5,
     .chunks = {3, 13, 24, 7},
     .steps = 6},
    {.name = "paged bf16 bf16-keys per_head summary flat1e6 unequal lens",
     .paged = 1,
     .dtype = DASHATTN_BF16,
     .key_dtype = DASHATTN_BF16,
     .batch = 2,
     .heads_q = 4,
     .heads_kv = 2,
     .dim = 64,
     .cap = 96,
     .block_size = 16,
     .alpha = 1.5,
     .sigma = 1e6,
     .summary = 1.5,
     .start = {5, 30},
     .chunks = {11, 20},
     .steps = 3},
    {.name = "contiguous f32 gqa4:2 shared summary halley3",
     .batch = 2,
     .heads_q = 4,
     .heads_kv = 2,
     .dim = 64,
     .cap = 112,
     .block_size = 16,
     .alpha = 1.5,
     .group = DASHATTN_GROUP_SHARED,
     .halley = 3,
     .summary = 1.5,
     .chunks = {40, 9},
     .steps = 4},
    {.name = "paged f16 f32-keys S64 D128 gqa4:1 mean summary",
     .paged = 1,
     .dtype = DASHATTN_F16,
     .batch = 2,
     .heads_q = 4,
     .heads_kv = 1,
     .dim = 128,
     .cap = 448,
     .block_size = 64,
     .alpha = 1.5,
     .group = DASHATTN_GROUP_MEAN,
     .summary = 1.5,
     .chunks = {100, 130, 150},
     .steps = 3},
};

/* Cases added after the others: they run last, so that the seeds of the
 * cases above (a chain, each case's the previous plus 101) stay what they
 * were. The released models' shape (16 query heads per KV head,
 * group-mean) over enough blocks that the GPU plugins split each
 * sequence's blocks several ways and merge the splits. */
static const dec_case dec_late_cases[] = {
    {.name = "contiguous bf16 S64 D128 gqa16:1 mean long",
     .dtype = DASHATTN_BF16,
     .batch = 2,
     .heads_q = 16,
     .heads_kv = 1,
     .dim = 128,
     .cap = 4096,
     .block_size = 64,
     .alpha = 1.5,
     .group = DASHATTN_GROUP_MEAN,
     .start = {0, 700},
     .chunks = {2900},
     .steps = 2},
    /* More query rows (heads x sequences) than an H200 has multiprocessors:
     * the GPU plugins' decode takes a warp per row's threshold. */
    {.name = "contiguous bf16 S64 D128 gqa48:3 mean many rows",
     .dtype = DASHATTN_BF16,
     .batch = 3,
     .heads_q = 48,
     .heads_kv = 3,
     .dim = 128,
     .cap = 1024,
     .block_size = 64,
     .alpha = 1.5,
     .group = DASHATTN_GROUP_MEAN,
     .start = {0, 400, 130},
     .chunks = {500},
     .steps = 2},
    /* The GPU plugins' tensor-core block scores with 16-bit block keys, a
     * group of 6 (rows of the 16-row tile unused) and a paged cache. */
    {.name = "paged f16 f16-keys gqa12:2 unmapped page",
     .paged = 1,
     .dtype = DASHATTN_F16,
     .key_dtype = DASHATTN_F16,
     .batch = 2,
     .heads_q = 12,
     .heads_kv = 2,
     .dim = 64,
     .cap = 96,
     .block_size = 16,
     .alpha = 1.5,
     .group = DASHATTN_GROUP_MEAN,
     .chunks = {20, 9},
     .steps = 3,
     .unmapped = 2,
     .bad_lens = 1},
};

/* Run after every other case, so that the seeds of those stay what they
 * were. Shared selection with exact thresholds and the flat prior: the
 * group's mean score through OpenCL's work-group select. */
static const dec_case dec_last_cases[] = {
    {.name = "contiguous f32 gqa4:2 shared a1.5 flat0.5 unequal lens",
     .batch = 3,
     .heads_q = 4,
     .heads_kv = 2,
     .dim = 32,
     .cap = 400,
     .block_size = 16,
     .alpha = 1.5,
     .group = DASHATTN_GROUP_SHARED,
     .sigma = 0.5,
     .start = {0, 150, 333},
     .chunks = {40},
     .steps = 2},
};

/* One side's cache in its context's memory. */
typedef struct dev_cache {
    void *k, *v, *keys, *lens, *table;
    dashattn_kv_cache c;
} dev_cache;

typedef struct dec_state {
    const dec_case *d;
    int64_t per_seq, pages, stride; /* blocks of a sequence; pool pages; table stride */
    size_t kv_elems, key_elems, es, kes;
    int32_t table[MAX_BATCH * (MAX_PAGES_PER_SEQ + 1)]; /* host copy of the block table */
    void *sq, *sk, *sv;      /* token streams in dtype: [B, H, capacity, D] */
    float *sk32;             /* the rounded keys as f32, for host block summaries */
    float *h;                /* summary_make's, NULL for mean pooling */
    void *hdev[2];           /* h in each side's memory */
    int32_t lens[MAX_BATCH]; /* expected seq_lens */
    dashattn_plan *plan[2];
    dev_cache dc[2];
    int call_no; /* alternates explicit and NULL workspaces */
    double worst_out, worst_lse, worst_key;
} dec_state;

/* Element offset of token t of sequence b, KV head h, in the cache's k or v. */
static size_t tok_off(const dec_state *ds, int64_t b, int64_t h, int64_t t)
{
    const dec_case *d = ds->d;
    if (d->paged) {
        const int64_t page = ds->table[b * ds->stride + t / d->block_size];
        return (size_t)(((page * d->heads_kv + h) * d->block_size + t % d->block_size) * d->dim);
    }
    return (size_t)(((b * d->heads_kv + h) * d->cap + t) * d->dim);
}

/* Element offset of block j's key of sequence b, KV head h. */
static size_t key_off(const dec_state *ds, int64_t b, int64_t h, int64_t j)
{
    const dec_case *d = ds->d;
    if (d->paged)
        return (size_t)((ds->table[b * ds->stride + j] * d->heads_kv + h) * d->dim);
    return (size_t)(((b * d->heads_kv + h) * (d->cap / d->block_size) + j) * d->dim);
}

/* Element offset of token t of sequence b, head h, in a stream of `heads` heads. */
static size_t stream_off(const dec_state *ds, int64_t heads, int64_t b, int64_t h, int64_t t)
{
    return (size_t)(((b * heads + h) * ds->d->cap + t) * ds->d->dim);
}

/* A shuffled page order, so that a backend ignoring the table fails. */
static void make_table(dec_state *ds, uint64_t seed)
{
    const dec_case *d = ds->d;
    int32_t perm[MAX_BATCH * MAX_PAGES_PER_SEQ + SPARE_PAGES];
    for (int64_t i = 0; i < ds->pages; i++)
        perm[i] = (int32_t)i;
    da_synth_rng rng;
    da_synth_seed(&rng, seed);
    for (int64_t i = ds->pages - 1; i > 0; i--) {
        const int64_t j = (int64_t)(da_synth_uniform(&rng) * (double)(i + 1)) % (i + 1);
        const int32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    for (int64_t b = 0; b < d->batch; b++) {
        for (int64_t j = 0; j < ds->per_seq; j++)
            ds->table[b * ds->stride + j] = perm[b * ds->per_seq + j];
        ds->table[b * ds->stride + ds->per_seq] = -1;
    }
    if (d->unmapped > 0)
        ds->table[(d->batch - 1) * ds->stride + d->unmapped] = -1;
}

/* Summary of block j of sequence b, KV head g, from the rounded keys, in
 * double: the mean, or weighted by softmax(h . k / sqrt(D)). */
static void host_summary(const dec_state *ds, int64_t b, int64_t g, int64_t j, float *out)
{
    const dec_case *d = ds->d;
    const int64_t s = d->block_size;
    double w[256], most = -INFINITY, total = 0.0; /* dec_setup: block_size <= 256 */
    const float *hg = ds->h ? ds->h + g * (d->dim + SUMMARY_PAD) : NULL;
    for (int64_t t = 0; t < s; t++) {
        const float *kt = ds->sk32 + stream_off(ds, d->heads_kv, b, g, j * s + t);
        double l = 0.0;
        for (int64_t e = 0; hg && e < d->dim; e++)
            l += (double)hg[e] * kt[e];
        w[t] = l / sqrt((double)d->dim);
        most = fmax(most, w[t]);
    }
    for (int64_t t = 0; t < s; t++)
        total += w[t] = exp(w[t] - most);
    for (int64_t e = 0; e < d->dim; e++) {
        double sum = 0.0;
        for (int64_t t = 0; t < s; t++)
            sum +=
                w[t] / total * ds->sk32[stream_off(ds, d->heads_kv, b, g, j * s + t) + (size_t)e];
        out[e] = (float)sum;
    }
}

/* The cache image both sides start from: NaN everywhere (decode must not
 * read past seq_lens), the first start[b] tokens of each sequence, and the
 * summaries of their complete blocks, computed on the host. */
static void initial_image(const dec_state *ds, unsigned char **k, unsigned char **v,
                          unsigned char **keys)
{
    const dec_case *d = ds->d;
    *k = tu_xcalloc(ds->kv_elems, ds->es);
    *v = tu_xcalloc(ds->kv_elems, ds->es);
    *keys = tu_xcalloc(ds->key_elems, ds->kes);
    memset(*k, POISON_FLOAT, ds->kv_elems * ds->es);
    memset(*v, POISON_FLOAT, ds->kv_elems * ds->es);
    memset(*keys, POISON_FLOAT, ds->key_elems * ds->kes);
    float *mean = tu_xcalloc((size_t)d->dim, sizeof *mean);
    for (int64_t b = 0; b < d->batch; b++)
        for (int64_t h = 0; h < d->heads_kv; h++) {
            for (int64_t t = 0; t < d->start[b]; t++) {
                const size_t from = stream_off(ds, d->heads_kv, b, h, t) * ds->es;
                memcpy(*k + tok_off(ds, b, h, t) * ds->es, (unsigned char *)ds->sk + from,
                       (size_t)d->dim * ds->es);
                memcpy(*v + tok_off(ds, b, h, t) * ds->es, (unsigned char *)ds->sv + from,
                       (size_t)d->dim * ds->es);
            }
            for (int64_t j = 0; j < d->start[b] / d->block_size; j++) {
                host_summary(ds, b, h, j, mean);
                CHECK(dashattn_convert(*keys + key_off(ds, b, h, j) * ds->kes, d->key_dtype, mean,
                                       DASHATTN_F32, (size_t)d->dim) == DASHATTN_OK,
                      "dashattn_convert of a block key: %s", dashattn_last_error());
            }
        }
    free(mean);
}

static int dev_cache_make(dec_state *ds, int s)
{
    const dec_case *d = ds->d;
    dev_cache *c = &ds->dc[s];
    unsigned char *k, *v, *keys;
    initial_image(ds, &k, &v, &keys);
    c->k = dev_copy(s, k, ds->kv_elems * ds->es);
    c->v = dev_copy(s, v, ds->kv_elems * ds->es);
    c->keys = dev_copy(s, keys, ds->key_elems * ds->kes);
    c->lens = dev_copy(s, d->start, (size_t)d->batch * sizeof(int32_t));
    c->table =
        d->paged ? dev_copy(s, ds->table, (size_t)(d->batch * ds->stride) * sizeof(int32_t)) : NULL;
    free(k);
    free(v);
    free(keys);
    const int64_t s_blk = d->block_size;
    c->c.layout = d->paged ? DASHATTN_CACHE_PAGED : DASHATTN_CACHE_CONTIGUOUS;
    if (d->paged) {
        c->c.k = dashattn_tensor_bhsd(c->k, d->dtype, ds->pages, d->heads_kv, s_blk, d->dim);
        c->c.v = dashattn_tensor_bhsd(c->v, d->dtype, ds->pages, d->heads_kv, s_blk, d->dim);
        c->c.block_keys =
            dashattn_tensor_bhsd(c->keys, d->key_dtype, ds->pages, d->heads_kv, 1, d->dim);
        c->c.table_stride = ds->stride;
    } else {
        c->c.k = dashattn_tensor_bhsd(c->k, d->dtype, d->batch, d->heads_kv, d->cap, d->dim);
        c->c.v = dashattn_tensor_bhsd(c->v, d->dtype, d->batch, d->heads_kv, d->cap, d->dim);
        c->c.block_keys = dashattn_tensor_bhsd(c->keys, d->key_dtype, d->batch, d->heads_kv,
                                               d->cap / s_blk, d->dim);
        c->c.table_stride = 0;
    }
    c->c.seq_lens = c->lens;
    c->c.block_table = c->table;
    return c->k && c->v && c->keys && c->lens && (c->table || !d->paged);
}

static void dev_cache_free(dec_state *ds, int s)
{
    void *mem[5] = {ds->dc[s].k, ds->dc[s].v, ds->dc[s].keys, ds->dc[s].lens, ds->dc[s].table};
    dev_free(s, mem, 5);
}

static int dec_setup(dec_state *ds, const dec_case *d, uint64_t seed)
{
    memset(ds, 0, sizeof *ds);
    ds->d = d;
    ds->es = dashattn_dtype_size(d->dtype);
    ds->kes = dashattn_dtype_size(d->key_dtype);
    ds->per_seq = (d->cap + d->block_size - 1) / d->block_size;
    if (!CHECK(d->batch >= 2 && d->batch <= MAX_BATCH && ds->per_seq <= MAX_PAGES_PER_SEQ &&
                   d->block_size <= 256,
               "case table: batch must be in [2, %d], capacity / block size <= %d, block size "
               "<= 256",
               MAX_BATCH, MAX_PAGES_PER_SEQ))
        return 0;
    if (d->paged) {
        ds->pages = d->batch * ds->per_seq + SPARE_PAGES;
        ds->stride = ds->per_seq + 1;
        ds->kv_elems = (size_t)(ds->pages * d->heads_kv * d->block_size * d->dim);
        ds->key_elems = (size_t)(ds->pages * d->heads_kv * d->dim);
        make_table(ds, seed + 1);
    } else {
        ds->kv_elems = (size_t)(d->batch * d->heads_kv * d->cap * d->dim);
        ds->key_elems = (size_t)(d->batch * d->heads_kv * (d->cap / d->block_size) * d->dim);
    }
    const size_t nq = (size_t)(d->batch * d->heads_q * d->cap * d->dim);
    const size_t nkv = (size_t)(d->batch * d->heads_kv * d->cap * d->dim);
    float *q = tu_xcalloc(nq, sizeof *q), *k = tu_xcalloc(nkv, sizeof *k);
    float *v = tu_xcalloc(nkv, sizeof *v);
    da_synth_qkv(seed, d->batch, d->heads_q, d->heads_kv, d->cap, d->cap, d->dim, d->block_size,
                 2.0, q, k, v);
    ds->sq = to_dtype(q, nq, d->dtype);
    ds->sk = to_dtype(k, nkv, d->dtype);
    ds->sv = to_dtype(v, nkv, d->dtype);
    ds->sk32 = to_f32(ds->sk, nkv, d->dtype);
    free(q);
    free(k);
    free(v);
    memcpy(ds->lens, d->start, sizeof ds->lens);

    dashattn_problem pr;
    dashattn_problem_init(&pr, d->batch, d->heads_q, d->heads_kv, 1, d->cap, d->dim);
    pr.dtype = d->dtype;
    pr.block_size = d->block_size;
    pr.alpha = d->alpha;
    if (d->topk > 0) {
        pr.selection = DASHATTN_SELECT_TOPK;
        pr.topk = d->topk;
    }
    pr.group_mode = (dashattn_group_mode)d->group;
    if (d->sigma > 0.0) {
        pr.prior = DASHATTN_PRIOR_FLAT;
        pr.prior_sigma = d->sigma;
    }
    if (d->halley > 0) {
        pr.threshold_schedule = DASHATTN_SCHEDULE_HALLEY;
        pr.halley_steps = d->halley;
    }
    const size_t nh = summary_floats(d->heads_kv, d->dim);
    ds->h = d->summary > 0.0 ? summary_make(seed ^ 0x51u, d->heads_kv, d->dim, d->summary) : NULL;
    int ok = make_plans(&pr, ds->plan);
    for (int s = 0; s < 2; s++) {
        ok &= dev_cache_make(ds, s);
        ds->hdev[s] = ds->h ? dev_copy(s, ds->h, nh * sizeof(float)) : NULL;
        ok &= ds->hdev[s] != NULL || !ds->h;
    }
    return ok;
}

static void dec_teardown(dec_state *ds)
{
    for (int s = 0; s < 2; s++) {
        dev_cache_free(ds, s);
        dev_free(s, &ds->hdev[s], 1);
        dashattn_plan_destroy(ds->plan[s]);
    }
    free(ds->h);
    free(ds->sq);
    free(ds->sk);
    free(ds->sv);
    free(ds->sk32);
}

/* Appends the next t tokens of every sequence on one side (positions past
 * the capacity, only used by refused appends, repeat the last token). */
static call_result dec_append_side(dec_state *ds, int s, int64_t t)
{
    const dec_case *d = ds->d;
    const size_t row = (size_t)d->dim * ds->es;
    const size_t n = (size_t)(d->batch * d->heads_kv * t) * row;
    unsigned char *kn = tu_xcalloc(n, 1), *vn = tu_xcalloc(n, 1);
    for (int64_t b = 0; b < d->batch; b++)
        for (int64_t h = 0; h < d->heads_kv; h++)
            for (int64_t i = 0; i < t; i++) {
                const int64_t pos = ds->lens[b] + i < d->cap ? ds->lens[b] + i : d->cap - 1;
                const size_t to = (size_t)((b * d->heads_kv + h) * t + i) * row;
                const size_t from = stream_off(ds, d->heads_kv, b, h, pos) * ds->es;
                memcpy(kn + to, (unsigned char *)ds->sk + from, row);
                memcpy(vn + to, (unsigned char *)ds->sv + from, row);
            }
    void *mem[2] = {dev_copy(s, kn, n), dev_copy(s, vn, n)};
    call_result r = called(DASHATTN_ERR_INTERNAL);
    snprintf(r.why, sizeof r.why, "not run: device memory failed");
    if (all_allocated(mem, 2)) {
        const dashattn_tensor tk =
            dashattn_tensor_bhsd(mem[0], d->dtype, d->batch, d->heads_kv, t, d->dim);
        const dashattn_tensor tv =
            dashattn_tensor_bhsd(mem[1], d->dtype, d->batch, d->heads_kv, t, d->dim);
        const dashattn_tensor th = summary_view(ds->hdev[s], d->heads_kv, d->dim);
        r = settled(s, dashattn_cache_append(ctxs[s], ds->plan[s], &ds->dc[s].c, &tk, &tv,
                                             ds->h ? &th : NULL, NULL));
    }
    dev_free(s, mem, 2);
    free(kn);
    free(vn);
    return r;
}

/* Appends t tokens on both sides; 1 if both did. */
static int dec_append(dec_state *ds, int64_t t)
{
    call_result r[2];
    for (int s = 0; s < 2; s++)
        r[s] = dec_append_side(ds, s, t);
    char what[64];
    snprintf(what, sizeof what, "append of %lld tokens", (long long)t);
    if (!both_ran(r, what))
        return 0;
    for (int64_t b = 0; b < ds->d->batch; b++)
        ds->lens[b] += (int32_t)t;
    return 1;
}

/* Decode of the last token of every sequence on one side, with `lens` (the
 * cache's own seq_lens when NULL). out (dtype bytes) and lse come back as
 * the device held them, poisoned before the call. */
static call_result dec_decode_side(dec_state *ds, int s, const int32_t *lens, void **out,
                                   float **lse)
{
    const dec_case *d = ds->d;
    const size_t row = (size_t)d->dim * ds->es, nq = (size_t)(d->batch * d->heads_q) * row;
    const size_t nl = (size_t)(d->batch * d->heads_q) * sizeof(float);
    unsigned char *q = tu_xcalloc(nq, 1);
    for (int64_t b = 0; b < d->batch; b++)
        for (int64_t h = 0; h < d->heads_q; h++) {
            const int64_t pos = ds->lens[b] - 1 >= 0 ? ds->lens[b] - 1 : 0;
            memcpy(q + (size_t)(b * d->heads_q + h) * row,
                   (unsigned char *)ds->sq + stream_off(ds, d->heads_q, b, h, pos) * ds->es, row);
        }
    /* Spread q: element e of the dense rows goes to slot 2e, NaN between. */
    const size_t spread = d->q_spread ? 2 : 1;
    unsigned char *qs = tu_xcalloc(nq * spread, 1);
    memset(qs, POISON_FLOAT, nq * spread);
    for (size_t e = 0; e < nq / ds->es; e++)
        memcpy(qs + e * spread * ds->es, q + e * ds->es, ds->es);
    dashattn_kv_cache cache = ds->dc[s].c;
    void *mem[5] = {dev_copy(s, qs, nq * spread), dev_filled(s, POISON_FLOAT, nq),
                    dev_filled(s, POISON_FLOAT, nl),
                    lens ? dev_copy(s, lens, (size_t)d->batch * sizeof(int32_t)) : cache.seq_lens,
                    NULL};
    size_t ws_size;
    int ok = all_allocated(mem, 4);
    mem[4] = workspace_for(s, ds->plan[s], DASHATTN_OP_DECODE, ds->call_no++ % 2, &ws_size, &ok);
    call_result r = called(DASHATTN_ERR_INTERNAL);
    snprintf(r.why, sizeof r.why, "not run: device memory failed");
    if (ok) {
        cache.seq_lens = mem[3];
        dashattn_tensor tq =
            dashattn_tensor_bhsd(mem[0], d->dtype, d->batch, d->heads_q, 1, d->dim);
        for (int i = 0; i < 4; i++)
            tq.strides[i] *= (int64_t)spread;
        const dashattn_tensor to =
            dashattn_tensor_bhsd(mem[1], d->dtype, d->batch, d->heads_q, 1, d->dim);
        r = settled(s, dashattn_decode(ctxs[s], ds->plan[s], &tq, &cache, &to, mem[2], mem[4],
                                       ws_size, NULL));
    }
    *out = mem[1] ? dev_fetch(s, mem[1], nq) : NULL;
    *lse = mem[2] ? dev_fetch(s, mem[2], nl) : NULL;
    if (!lens)
        mem[3] = NULL; /* the cache's own */
    dev_free(s, mem, 5);
    free(q);
    free(qs);
    return r;
}

/* One generation step on both sides: append a token, decode, compare. */
static int dec_step(dec_state *ds)
{
    if (!dec_append(ds, 1))
        return 0;
    const dec_case *d = ds->d;
    const size_t nq = (size_t)(d->batch * d->heads_q * d->dim),
                 nl = (size_t)(d->batch * d->heads_q);
    void *out[2];
    float *lse[2];
    call_result r[2];
    for (int s = 0; s < 2; s++)
        r[s] = dec_decode_side(ds, s, NULL, &out[s], &lse[s]);
    const int ran = both_ran(r, "decode");
    if (ran) {
        float *o32[2] = {to_f32(out[REF], nq, d->dtype), to_f32(out[DUT], nq, d->dtype)};
        const double eo = rel_norm(o32[DUT], o32[REF], nq), el = max_abs(lse[DUT], lse[REF], nl);
        const double er = worst_row(o32[DUT], o32[REF], nq, d->dim);
        const double tol = half(d->dtype) ? OUT_TOL_HALF : OUT_TOL_F32;
        CHECK(eo <= tol, "decode at lengths %d, %d: out differs by %.3g (relative norm)",
              ds->lens[0], ds->lens[1], eo);
        CHECK(er <= ROW_TOL_FACTOR * tol,
              "decode at lengths %d, %d: an out row differs by %.3g (relative to max(||row||, 1))",
              ds->lens[0], ds->lens[1], er);
        CHECK(el <= (half(d->dtype) ? LSE_TOL_HALF : LSE_TOL_F32),
              "decode at lengths %d, %d: lse differs by %.3g (max abs)", ds->lens[0], ds->lens[1],
              el);
        ds->worst_out = fmax(ds->worst_out, eo);
        ds->worst_lse = fmax(ds->worst_lse, el);
        free(o32[REF]);
        free(o32[DUT]);
    }
    for (int s = 0; s < 2; s++) {
        free(out[s]);
        free(lse[s]);
    }
    return ran;
}

/* A side's cache as host copies. */
typedef struct cache_copy {
    unsigned char *k, *v, *keys;
    int32_t *lens;
} cache_copy;

static void cache_fetch(dec_state *ds, int s, cache_copy *h)
{
    h->k = dev_fetch(s, ds->dc[s].k, ds->kv_elems * ds->es);
    h->v = dev_fetch(s, ds->dc[s].v, ds->kv_elems * ds->es);
    h->keys = dev_fetch(s, ds->dc[s].keys, ds->key_elems * ds->kes);
    h->lens = dev_fetch(s, ds->dc[s].lens, (size_t)ds->d->batch * sizeof(int32_t));
}

static void cache_copy_free(cache_copy *h)
{
    free(h->k);
    free(h->v);
    free(h->keys);
    free(h->lens);
}

/* Both caches hold what they should: seq_lens as expected, k and v
 * bit-identical (appends copy; unwritten slots keep their poison), and the
 * keys of every complete block equal within KEY_TOL. */
static void dec_compare_caches(dec_state *ds, const char *when)
{
    const dec_case *d = ds->d;
    cache_copy h[2];
    for (int s = 0; s < 2; s++) {
        cache_fetch(ds, s, &h[s]);
        int lens_ok = 1;
        for (int64_t b = 0; b < d->batch; b++)
            lens_ok &= h[s].lens[b] == ds->lens[b];
        CHECK(lens_ok, "%s %s: seq_lens %d, %d, want %d, %d", side_name[s], when, h[s].lens[0],
              h[s].lens[1], ds->lens[0], ds->lens[1]);
    }
    int64_t bad_kv = 0;
    for (size_t i = 0; i < ds->kv_elems; i++)
        bad_kv += memcmp(h[REF].k + i * ds->es, h[DUT].k + i * ds->es, ds->es) != 0 ||
                  memcmp(h[REF].v + i * ds->es, h[DUT].v + i * ds->es, ds->es) != 0;
    CHECK(bad_kv == 0, "%s: %lld k/v cache elements differ from the cpu's", when,
          (long long)bad_kv);
    float *keys[2] = {to_f32(h[REF].keys, ds->key_elems, d->key_dtype),
                      to_f32(h[DUT].keys, ds->key_elems, d->key_dtype)};
    const double tol = half(d->key_dtype) ? KEY_TOL_HALF : KEY_TOL_F32;
    int64_t bad_keys = 0;
    for (int64_t b = 0; b < d->batch; b++)
        for (int64_t h_ = 0; h_ < d->heads_kv; h_++)
            for (int64_t j = 0; j < ds->lens[b] / d->block_size; j++)
                for (int64_t e = 0; e < d->dim; e++) {
                    const size_t at = key_off(ds, b, h_, j) + (size_t)e;
                    const double a = keys[DUT][at], x = keys[REF][at];
                    const double err = isfinite(a) && isfinite(x) ? fabs(a - x) : INFINITY;
                    ds->worst_key = fmax(ds->worst_key, err);
                    bad_keys += !(err <= tol * (1.0 + fabs(x)));
                }
    CHECK(bad_keys == 0, "%s: %lld block-key values of complete blocks differ (worst %.3g)", when,
          (long long)bad_keys, ds->worst_key);
    free(keys[REF]);
    free(keys[DUT]);
    cache_copy_free(&h[REF]);
    cache_copy_free(&h[DUT]);
}

/* An append of t tokens must fail with CACHE_FULL on both sides and leave
 * every byte of both caches as it was. */
static void dec_refused(dec_state *ds, int64_t t, const char *what)
{
    cache_copy before[2], after[2];
    call_result r[2];
    for (int s = 0; s < 2; s++) {
        cache_fetch(ds, s, &before[s]);
        r[s] = dec_append_side(ds, s, t);
        cache_fetch(ds, s, &after[s]);
    }
    for (int s = 0; s < 2; s++) {
        CHECK(r[s].status == DASHATTN_ERR_CACHE_FULL, "%s: append %s gave %s (%s), want cache full",
              side_name[s], what, dashattn_status_string(r[s].status), r[s].why);
        const int same =
            memcmp(before[s].k, after[s].k, ds->kv_elems * ds->es) == 0 &&
            memcmp(before[s].v, after[s].v, ds->kv_elems * ds->es) == 0 &&
            memcmp(before[s].keys, after[s].keys, ds->key_elems * ds->kes) == 0 &&
            memcmp(before[s].lens, after[s].lens, (size_t)ds->d->batch * sizeof(int32_t)) == 0;
        CHECK(same, "%s: refused append %s changed the cache", side_name[s], what);
        cache_copy_free(&before[s]);
        cache_copy_free(&after[s]);
    }
}

/* Appends past capacity (or onto the unmapped page) are refused; filling to
 * exactly the capacity works and decodes the same. */
static void dec_capacity(dec_state *ds)
{
    const dec_case *d = ds->d;
    if (d->unmapped > 0) {
        CHECK(ds->lens[d->batch - 1] == d->unmapped * d->block_size,
              "case table: the last sequence must end where its unmapped page begins");
        dec_refused(ds, 1, "onto an unmapped page");
        dec_compare_caches(ds, "after a refused append");
        case_note("refused: cache full, nothing changed");
        return;
    }
    int32_t longest = 0;
    for (int64_t b = 0; b < d->batch; b++)
        longest = ds->lens[b] > longest ? ds->lens[b] : longest;
    const int64_t room = d->cap - longest;
    dec_refused(ds, room + 1, "past capacity");
    if (room > 1 && dec_append(ds, room - 1) && dec_step(ds)) {
        dec_compare_caches(ds, "filled to capacity");
        dec_refused(ds, 1, "onto a full cache");
    }
    case_note("refused twice, filled to %lld and decoded: out %.1e lse %.1e", (long long)d->cap,
              ds->worst_out, ds->worst_lse);
}

/* Decode with seq_lens holding 0 or more than the capacity: INVALID_ARGUMENT
 * (the CPU defines it) and out and lse left as they were. */
static void dec_bad_lens(dec_state *ds)
{
    const dec_case *d = ds->d;
    const size_t nq = (size_t)(d->batch * d->heads_q * d->dim) * ds->es;
    const size_t nl = (size_t)(d->batch * d->heads_q) * sizeof(float);
    for (int variant = 0; variant < 2; variant++) {
        int32_t lens[MAX_BATCH];
        memcpy(lens, ds->lens, sizeof lens);
        lens[d->batch - 1] = variant == 0 ? 0 : (int32_t)d->cap + 1;
        call_result r[2];
        for (int s = 0; s < 2; s++) {
            void *out;
            float *lse;
            r[s] = dec_decode_side(ds, s, lens, &out, &lse);
            CHECK(r[s].status == r[REF].status, "%s: seq_lens[%lld] = %d: %s, the cpu says %s",
                  side_name[s], (long long)(d->batch - 1), lens[d->batch - 1],
                  dashattn_status_string(r[s].status), dashattn_status_string(r[REF].status));
            /* A call that fails at once leaves the outputs alone; one whose
             * failure surfaces at synchronize has run, and must have set
             * every output to NaN so that none looks valid. */
            const int untouched =
                out && lse && all_bytes(out, POISON_FLOAT, nq) && all_bytes(lse, POISON_FLOAT, nl);
            const int all_nan = out && lse && r[s].deferred &&
                                all_nan_values(out, d->dtype, nq / ds->es) &&
                                all_nan_values(lse, DASHATTN_F32, nl / sizeof(float));
            CHECK(untouched || all_nan,
                  "%s: seq_lens[%lld] = %d: the failing decode left output that looks valid",
                  side_name[s], (long long)(d->batch - 1), lens[d->batch - 1]);
            free(out);
            free(lse);
        }
        CHECK(r[REF].status == DASHATTN_ERR_INVALID_ARGUMENT,
              "cpu: seq_lens[%lld] = %d gave %s, want invalid argument", (long long)(d->batch - 1),
              lens[d->batch - 1], dashattn_status_string(r[REF].status));
    }
    dec_compare_caches(ds, "after failing decodes");
    case_note("0 and capacity + 1 refused, outputs untouched");
}

static void dec_case_run(const dec_case *d, uint64_t seed)
{
    if (!kind_wanted("decode"))
        return;
    dec_state ds;
    case_begin("decode %s", d->name);
    int ok = dec_setup(&ds, d, seed);
    for (int i = 0; ok && i < MAX_CHUNKS && d->chunks[i] > 0; i++)
        ok = dec_append(&ds, d->chunks[i]);
    if (ok)
        dec_compare_caches(&ds, "after the chunked appends");
    for (int i = 0; ok && i < d->steps; i++)
        ok = dec_step(&ds);
    if (ok) {
        dec_compare_caches(&ds, "after the decode steps");
        case_note("%d steps: out %.1e lse %.1e keys %.1e", d->steps, ds.worst_out, ds.worst_lse,
                  ds.worst_key);
    }
    case_end();
    if (ok) {
        case_begin("decode %s: cache full", d->name);
        dec_capacity(&ds);
        case_end();
    }
    if (ok && d->bad_lens) {
        case_begin("decode %s: bad seq_lens", d->name);
        dec_bad_lens(&ds);
        case_end();
    }
    dec_teardown(&ds);
}

/* ======================================================================== */

static const dashattn_dtype all_dtypes[] = {DASHATTN_F32, DASHATTN_F16, DASHATTN_BF16};

/* The CPU reference, and the backend under test; 77 if that is unavailable,
 * 1 on any other failure, else 0. */
static int open_contexts(const char *backend)
{
    case_begin("contexts");
    dashattn_context_options opt;
    dashattn_context_options_init(&opt);
    opt.backend = "cpu";
    opt.num_threads = 2;
    dashattn_status st = dashattn_context_create(&opt, &ctxs[REF]);
    if (!CHECK(st == DASHATTN_OK, "context_create(cpu): %s", dashattn_last_error()))
        return 1;
    opt.backend = backend;
    /* A second CPU context differs from the reference in its thread count,
     * so that the harness run also compares two work splits. */
    opt.num_threads = strcmp(backend, "cpu") == 0 ? 1 : 0;
    st = dashattn_context_create(&opt, &ctxs[DUT]);
    if (st == DASHATTN_ERR_BACKEND_UNAVAILABLE) {
        printf("backend %s unavailable: %s\n", backend, dashattn_last_error());
        return TU_SKIP;
    }
    if (!CHECK(st == DASHATTN_OK, "context_create(%s): %s (%s)", backend,
               dashattn_status_string(st), dashattn_last_error()))
        return 1;
    /* An explicit name wins over DASHATTN_BACKEND; this catches a context
     * that ended up on another backend all the same. */
    const char *asked[2] = {"cpu", backend};
    for (int s = 0; s < 2; s++)
        if (!CHECK(strcmp(dashattn_context_backend(ctxs[s]), asked[s]) == 0,
                   "asked for backend %s, got %s", asked[s], dashattn_context_backend(ctxs[s])))
            return 1;
    printf("backend under test: %s on %s; reference: cpu (%d threads)\n", backend,
           dashattn_context_device(ctxs[DUT]), dashattn_context_num_threads(ctxs[REF]));
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s BACKEND   (cpu, cuda, opencl, ...)\n", argv[0]);
        return 99;
    }
    /* Two "cpu" sides would make every message ambiguous. */
    side_name[DUT] = strcmp(argv[1], "cpu") == 0 ? "cpu#2" : argv[1];
    const int opened = open_contexts(argv[1]);
    if (opened != 0) {
        dashattn_context_destroy(ctxs[REF]);
        dashattn_context_destroy(ctxs[DUT]);
        return opened == TU_SKIP ? TU_SKIP : tu_finish("test_backend_parity");
    }
    parity_only = getenv("DASHATTN_PARITY_ONLY");
    if (parity_only && strcmp(parity_only, "forward") != 0 && strcmp(parity_only, "decode") != 0 &&
        strcmp(parity_only, "backward") != 0) {
        fprintf(stderr, "DASHATTN_PARITY_ONLY must be forward, decode or backward\n");
        return 2;
    }
    uint64_t seed = 7001;
    int n = 0;
    for (size_t i = 0; i < sizeof fwd_cases / sizeof fwd_cases[0]; i++)
        for (size_t t = 0; t < 3; t++)
            if (fwd_cases[i].dtypes & (1u << all_dtypes[t]))
                fwd_case_run(&fwd_cases[i], all_dtypes[t], seed += 101, n++ % 2);
    for (size_t i = 0; i < sizeof dec_cases / sizeof dec_cases[0]; i++)
        dec_case_run(&dec_cases[i], seed += 101);
    for (size_t i = 0; i < sizeof bwd_cases / sizeof bwd_cases[0]; i++)
        for (size_t t = 0; t < 3; t++)
            if (bwd_cases[i].dtypes & (1u << all_dtypes[t]))
                bwd_case_run(&bwd_cases[i], all_dtypes[t], seed += 101, n++ % 2);
    for (size_t i = 0; i < sizeof dec_late_cases / sizeof dec_late_cases[0]; i++)
        dec_case_run(&dec_late_cases[i], seed += 101);
    for (size_t i = 0; i < sizeof fwd_late_cases / sizeof fwd_late_cases[0]; i++)
        for (size_t t = 0; t < 3; t++)
            if (fwd_late_cases[i].dtypes & (1u << all_dtypes[t]))
                fwd_case_run(&fwd_late_cases[i], all_dtypes[t], seed += 101, n++ % 2);
    for (size_t i = 0; i < sizeof bwd_late_cases / sizeof bwd_late_cases[0]; i++)
        for (size_t t = 0; t < 3; t++)
            if (bwd_late_cases[i].dtypes & (1u << all_dtypes[t]))
                bwd_case_run(&bwd_late_cases[i], all_dtypes[t], seed += 101, n++ % 2);
    for (size_t i = 0; i < sizeof dec_last_cases / sizeof dec_last_cases[0]; i++)
        dec_case_run(&dec_last_cases[i], seed += 101);
    printf("%s against cpu: %ld cases passed, %ld failed, %ld skipped\n", side_name[DUT],
           cases_passed, cases_failed, cases_skipped);
    printf("against float64 (both sides): %ld forward rows compared, %ld left out on the support "
           "boundary; %ld backward cases compared, %ld left out\n",
           ref_rows_compared, ref_rows_skipped, ref_grads_compared, ref_grads_skipped);
    dashattn_context_destroy(ctxs[DUT]);
    dashattn_context_destroy(ctxs[REF]);
    return tu_finish("test_backend_parity");
}
