/* SPDX-License-Identifier: MIT */
/* What only the CUDA backend promises (issue 3): calls run on the caller's
 * stream, and an autoregressive step (append one token, then decode) can be
 * captured once in a CUDA graph and replayed, because no call waits on the
 * host and the workspace is fixed. Replays must give exactly what direct
 * calls give. Also the GPU plugins' plan-time limits (issue 11), on a
 * context planning within AMD's 64 KiB of shared memory. Skips (77) without
 * a CUDA device. */
#include "testutil.h"

#include "gpu_kernels.h" /* the plan's shared-memory accounting */

#include <cuda_runtime_api.h>
#include <dashattn.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { B = 2, HQ = 8, HKV = 2, D = 128, S = 64, CAP = 1024, PREFIX = 700, STEPS = 3 };

#define CUDA_OK(call)                                                                              \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) {                                                                   \
            TU_CHECK(0, "%s: %s", #call, cudaGetErrorString(e_));                                  \
            return;                                                                                \
        }                                                                                          \
    } while (0)

#define DA_OK(call)                                                                                \
    do {                                                                                           \
        dashattn_status s_ = (call);                                                               \
        if (s_ != DASHATTN_OK) {                                                                   \
            TU_CHECK(0, "%s: %s", #call, dashattn_last_error());                                   \
            return;                                                                                \
        }                                                                                          \
    } while (0)

/* One decoding setup: a contiguous bf16 cache with its own device arrays. */
typedef struct setup {
    dashattn_context *ctx;
    dashattn_plan *plan;
    dashattn_kv_cache cache;
    void *k, *v, *keys, *lens, *q, *out, *lse, *kn, *vn, *ws;
    size_t ws_size;
} setup;

static void *upload_bf16(dashattn_context *ctx, uint64_t seed, size_t n)
{
    float *f = tu_random_floats(seed, n, 1.0);
    uint16_t *h = tu_xcalloc(n, sizeof *h);
    void *dev = NULL;
    if (dashattn_convert(h, DASHATTN_BF16, f, DASHATTN_F32, n) == DASHATTN_OK &&
        dashattn_memory_alloc(ctx, n * 2, &dev) == DASHATTN_OK &&
        dashattn_memory_upload(ctx, dev, h, n * 2) != DASHATTN_OK) {
        dashattn_memory_free(ctx, dev);
        dev = NULL;
    }
    free(f);
    free(h);
    return dev;
}

static void setup_make(setup *s, dashattn_context *ctx)
{
    memset(s, 0, sizeof *s);
    s->ctx = ctx;
    dashattn_problem p;
    dashattn_problem_init(&p, B, HQ, HKV, 1, CAP, D);
    p.dtype = DASHATTN_BF16;
    DA_OK(dashattn_plan_create(ctx, &p, &s->plan));
    const size_t kv = (size_t)B * HKV * CAP * D, keys = (size_t)B * HKV * (CAP / S) * D;
    s->k = upload_bf16(ctx, 1, kv);
    s->v = upload_bf16(ctx, 2, kv);
    s->keys = upload_bf16(ctx, 3, keys);
    s->q = upload_bf16(ctx, 4, (size_t)B * HQ * D);
    s->kn = upload_bf16(ctx, 5, (size_t)B * HKV * PREFIX * D);
    s->vn = upload_bf16(ctx, 6, (size_t)B * HKV * PREFIX * D);
    const int32_t zero[B] = {0, 0};
    s->ws_size = dashattn_plan_operation_workspace_size(s->plan, DASHATTN_OP_DECODE);
    DA_OK(dashattn_memory_alloc(ctx, sizeof zero, &s->lens));
    DA_OK(dashattn_memory_upload(ctx, s->lens, zero, sizeof zero));
    DA_OK(dashattn_memory_alloc(ctx, (size_t)B * HQ * D * 2, &s->out));
    DA_OK(dashattn_memory_alloc(ctx, (size_t)B * HQ * sizeof(float), &s->lse));
    DA_OK(dashattn_memory_alloc(ctx, s->ws_size, &s->ws));
    s->cache.layout = DASHATTN_CACHE_CONTIGUOUS;
    s->cache.k = dashattn_tensor_bhsd(s->k, DASHATTN_BF16, B, HKV, CAP, D);
    s->cache.v = dashattn_tensor_bhsd(s->v, DASHATTN_BF16, B, HKV, CAP, D);
    s->cache.block_keys = dashattn_tensor_bhsd(s->keys, DASHATTN_BF16, B, HKV, CAP / S, D);
    s->cache.seq_lens = s->lens;
}

static void setup_free(setup *s)
{
    void *mem[] = {s->k, s->v, s->keys, s->lens, s->q, s->out, s->lse, s->kn, s->vn, s->ws};
    for (size_t i = 0; i < sizeof mem / sizeof mem[0]; i++)
        dashattn_memory_free(s->ctx, mem[i]);
    dashattn_plan_destroy(s->plan);
}

/* Appends `tokens` tokens of kn/vn (the first ones) on the stream. */
static dashattn_status append(setup *s, int64_t tokens, cudaStream_t stream)
{
    const dashattn_tensor kn = dashattn_tensor_bhsd(s->kn, DASHATTN_BF16, B, HKV, tokens, D);
    const dashattn_tensor vn = dashattn_tensor_bhsd(s->vn, DASHATTN_BF16, B, HKV, tokens, D);
    return dashattn_cache_append(s->ctx, s->plan, &s->cache, &kn, &vn, NULL, stream);
}

/* One generation step: append one token, decode. */
static dashattn_status step(setup *s, cudaStream_t stream)
{
    dashattn_status st = append(s, 1, stream);
    if (st != DASHATTN_OK)
        return st;
    const dashattn_tensor q = dashattn_tensor_bhsd(s->q, DASHATTN_BF16, B, HQ, 1, D);
    const dashattn_tensor out = dashattn_tensor_bhsd(s->out, DASHATTN_BF16, B, HQ, 1, D);
    return dashattn_decode(s->ctx, s->plan, &q, &s->cache, &out, s->lse, s->ws, s->ws_size, stream);
}

static void fetch(setup *s, uint16_t *out, float *lse, int32_t *lens)
{
    if (dashattn_synchronize(s->ctx, NULL) != DASHATTN_OK ||
        dashattn_memory_download(s->ctx, out, s->out, (size_t)B * HQ * D * 2) != DASHATTN_OK ||
        dashattn_memory_download(s->ctx, lse, s->lse, (size_t)B * HQ * sizeof(float)) !=
            DASHATTN_OK ||
        dashattn_memory_download(s->ctx, lens, s->lens, B * sizeof(int32_t)) != DASHATTN_OK)
        TU_CHECK(0, "download: %s", dashattn_last_error());
}

static void run(dashattn_context *ctx)
{
    setup direct, graphed;
    setup_make(&direct, ctx);
    setup_make(&graphed, ctx);
    cudaStream_t stream;
    CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));

    /* The same prefix in both caches, then STEPS steps: direct calls on the
     * default stream against one captured step replayed on our stream. */
    DA_OK(append(&direct, PREFIX, NULL));
    DA_OK(append(&graphed, PREFIX, stream));
    for (int i = 0; i < STEPS; i++)
        DA_OK(step(&direct, NULL));

    cudaGraph_t graph;
    cudaGraphExec_t exec;
    CUDA_OK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
    const dashattn_status captured = step(&graphed, stream);
    CUDA_OK(cudaStreamEndCapture(stream, &graph));
    TU_CHECK(captured == DASHATTN_OK, "step under capture: %s", dashattn_last_error());
    CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
    for (int i = 0; i < STEPS; i++)
        CUDA_OK(cudaGraphLaunch(exec, stream));
    CUDA_OK(cudaStreamSynchronize(stream));

    const size_t n = (size_t)B * HQ * D;
    uint16_t *o1 = tu_xcalloc(n, 2), *o2 = tu_xcalloc(n, 2);
    float l1[B * HQ], l2[B * HQ];
    int32_t n1[B], n2[B];
    fetch(&direct, o1, l1, n1);
    fetch(&graphed, o2, l2, n2);
    for (int b = 0; b < B; b++)
        TU_CHECK(n1[b] == PREFIX + STEPS && n2[b] == PREFIX + STEPS,
                 "seq_lens[%d]: direct %d, graph %d, want %d", b, n1[b], n2[b], PREFIX + STEPS);
    TU_CHECK(memcmp(o1, o2, n * 2) == 0, "graph replays differ from direct calls (out)");
    TU_CHECK(memcmp(l1, l2, sizeof l1) == 0, "graph replays differ from direct calls (lse)");
    int finite = 1;
    for (int i = 0; i < B * HQ; i++)
        finite &= l1[i] == l1[i] && l1[i] > -1e30f && l1[i] < 1e30f;
    TU_CHECK(finite, "decode lse is not finite");

    free(o1);
    free(o2);
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
    cudaStreamDestroy(stream);
    setup_free(&direct);
    setup_free(&graphed);
}

static dashattn_status plan_of(dashattn_context *ctx, int64_t hq, int64_t hkv, int64_t len_q,
                               int64_t len_k, dashattn_plan **plan)
{
    dashattn_problem pr;
    dashattn_problem_init(&pr, 1, hq, hkv, len_q, len_k, D);
    pr.dtype = DASHATTN_BF16;
    pr.block_size = S;
    *plan = NULL;
    return dashattn_plan_create(ctx, &pr, plan);
}

/* A context is refused, naming the variable, while `name` holds `value`;
 * the variable is restored afterwards. */
static void check_bad_setting(const dashattn_context_options *opt, const char *name,
                              const char *value)
{
    const char *old = getenv(name);
    char *saved = old ? strdup(old) : NULL;
    setenv(name, value, 1);
    dashattn_context *bad = NULL;
    const dashattn_status st = dashattn_context_create(opt, &bad);
    TU_CHECK(st == DASHATTN_ERR_INVALID_ARGUMENT && strstr(dashattn_last_error(), name),
             "%s=%s: %s", name, value, dashattn_last_error());
    dashattn_context_destroy(bad);
    if (saved)
        setenv(name, saved, 1);
    else
        unsetenv(name);
    free(saved);
}

/* Problems a device cannot run are refused when planned, with the reason;
 * a decode plan needs only its decode to fit. */
static void check_plan_limits(void)
{
    const char *old = getenv("DASHATTN_GPU_SHARED_MEMORY");
    char *saved = old ? strdup(old) : NULL;
    dashattn_context_options opt;
    dashattn_context_options_init(&opt);
    opt.backend = "cuda";
    dashattn_context *full = NULL, *small = NULL;
    /* The whole device, whatever the environment of the test run says. */
    unsetenv("DASHATTN_GPU_SHARED_MEMORY");
    dashattn_status st = dashattn_context_create(&opt, &full);
    TU_CHECK(st == DASHATTN_OK, "uncapped context: %s", dashattn_last_error());
    check_bad_setting(&opt, "DASHATTN_GPU_SHARED_MEMORY", "not-a-number");
    check_bad_setting(&opt, "DASHATTN_GPU_DEPENDENT_LAUNCH", "yes");
    check_bad_setting(&opt, "DASHATTN_GPU_DECODE_CTAS", "0");
    check_bad_setting(&opt, "DASHATTN_GPU_DECODE_CTAS", "12x");
    setenv("DASHATTN_GPU_SHARED_MEMORY", "65536", 1);
    st = dashattn_context_create(&opt, &small);
    if (saved)
        setenv("DASHATTN_GPU_SHARED_MEMORY", saved, 1);
    else
        unsetenv("DASHATTN_GPU_SHARED_MEMORY");
    free(saved);
    TU_CHECK(st == DASHATTN_OK, "capped context: %s", dashattn_last_error());
    if (st != DASHATTN_OK || !full) {
        dashattn_context_destroy(small);
        dashattn_context_destroy(full);
        return;
    }
    /* 1024 key blocks of a 128-dim head: the portable stage 1 takes one
     * row's 4 heads per thread block (about 18 KiB) where 16 vectors would
     * need 72 KiB. 4096 blocks need 65 KiB even so, and are refused. */
    dashattn_plan *plan;
    st = plan_of(small, HQ, HKV, 4096, 65536, &plan);
    TU_CHECK(st == DASHATTN_OK, "a prefill over 1024 blocks within 64 KiB: %s",
             dashattn_last_error());
    dashattn_plan_destroy(plan);
    st = plan_of(small, HQ, HKV, 4096, 4096 * S, &plan);
    TU_CHECK(st == DASHATTN_ERR_UNSUPPORTED && strstr(dashattn_last_error(), "shared memory"),
             "a prefill over 4096 blocks within 64 KiB is refused at plan time: %s (%s)",
             dashattn_status_string(st), dashattn_last_error());
    dashattn_plan_destroy(plan);
    st = plan_of(full, HQ, HKV, 4096, 4096 * S, &plan);
    TU_CHECK(st == DASHATTN_OK, "the same plan on the whole device: %s", dashattn_last_error());
    dashattn_plan_destroy(plan);
    /* Decode over those blocks fits (one row's scores: 16 KiB); its plan's
     * forward is the one part left out. */
    st = plan_of(small, HQ, HKV, 1, 4096 * S, &plan);
    TU_CHECK(st == DASHATTN_OK, "a decode plan over 4096 blocks: %s", dashattn_last_error());
    if (st == DASHATTN_OK)
        TU_CHECK(dashattn_plan_operation_workspace_size(plan, DASHATTN_OP_DECODE) > 0 &&
                     dashattn_plan_operation_workspace_size(plan, DASHATTN_OP_FORWARD) == 0,
                 "decode has a workspace, the refused forward none");
    dashattn_plan_destroy(plan);
    /* 16 heads per KV head over 2048 blocks (the released models' shape at
     * 128K tokens): the thresholds take one row at a time, so this fits
     * AMD's 64 KiB too. */
    st = plan_of(small, 32, 2, 1, 131072, &plan);
    TU_CHECK(st == DASHATTN_OK, "a decode plan with 16 heads per group over 2048 blocks: %s",
             dashattn_last_error());
    dashattn_plan_destroy(plan);
    /* The threshold kernel's static scratch counts too: the most blocks
     * whose scores and scratch fit 64 KiB plan, one more is refused (it was
     * planned, and its launch failed on a device of that limit). */
    const int64_t most = (65536 - DAGPU_GROUP_SCRATCH_BYTES) / 4;
    st = plan_of(small, HQ, HKV, 1, most * S, &plan);
    TU_CHECK(st == DASHATTN_OK, "a decode plan over %lld blocks within 64 KiB: %s", (long long)most,
             dashattn_last_error());
    dashattn_plan_destroy(plan);
    st = plan_of(small, HQ, HKV, 1, (most + 1) * S, &plan);
    TU_CHECK(st == DASHATTN_ERR_UNSUPPORTED && strstr(dashattn_last_error(), "shared memory"),
             "a decode plan over %lld blocks is refused within 64 KiB: %s (%s)",
             (long long)(most + 1), dashattn_status_string(st), dashattn_last_error());
    dashattn_plan_destroy(plan);
    st = plan_of(full, 33, 1, 1, 4096, &plan);
    TU_CHECK(st == DASHATTN_ERR_UNSUPPORTED && strstr(dashattn_last_error(), "at most 32"),
             "decode with 33 heads per KV head is refused at plan time: %s (%s)",
             dashattn_status_string(st), dashattn_last_error());
    dashattn_plan_destroy(plan);
    dashattn_context_destroy(small);
    dashattn_context_destroy(full);
}

int main(void)
{
    dashattn_context_options opt;
    dashattn_context_options_init(&opt);
    opt.backend = "cuda";
    dashattn_context *ctx;
    const dashattn_status st = dashattn_context_create(&opt, &ctx);
    if (st == DASHATTN_ERR_BACKEND_UNAVAILABLE) {
        printf("cuda backend unavailable: %s\n", dashattn_last_error());
        return TU_SKIP;
    }
    TU_CHECK(st == DASHATTN_OK, "context: %s", dashattn_last_error());
    if (st != DASHATTN_OK)
        return tu_finish("test_cuda");
    run(ctx);
    check_plan_limits();
    dashattn_context_destroy(ctx);
    return tu_finish("test_cuda");
}
