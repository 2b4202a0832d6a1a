/* SPDX-License-Identifier: MIT */
/*
 * Test plugin "faildev": a usable device whose every kernel launch fails.
 * Forward poisons its outputs with NaN and reports a device error through the
 * host's set_error, as a real backend must after a failed launch, so the test
 * can see that the core passes the plugin's status and message through.
 * Backward, decode and append are left NULL: the core must answer
 * DASHATTN_ERR_UNSUPPORTED for them.
 *
 * It has the plan hook: plan_prepare makes a small plan, or refuses the
 * problem when DASHATTN_TEST_FAILDEV_PLAN says so; workspace_size and forward
 * check that the plan they are given carries it, and answer with their own
 * message where it does not, so that reaching the device failure proves the
 * plan arrived. With DASHATTN_TEST_FAILDEV_TABLE=old at load time it returns
 * instead the shorter table of a plugin built before the hook existed.
 */
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "test_plugin.h"

/* Tells faildev's plans from anything else that might arrive as
 * plan->backend_plan. */
#define FAILDEV_PLAN_MAGIC UINT64_C(0xfa11de7c0ffee001)

typedef struct faildev_plan {
    uint64_t magic;
} faildev_plan;

/* Plans made and not yet released. test_plugins reads it (through dlsym) to
 * see every release arrive, in builds without LeakSanitizer too. */
static atomic_int faildev_plans_live;

TEST_PLUGIN_EXPORT int faildev_live_plans(void);
int faildev_live_plans(void)
{
    return atomic_load(&faildev_plans_live);
}

typedef struct faildev_state {
    const dashattn_host *host;
    /* Loaded through the old table, which has no plan_prepare: its plans
     * must come with backend_plan NULL. */
    int before_plan_hook;
    /* workspace_size has no way to fail with a message, so it leaves one
     * for forward: the core must set backend_plan before the first call. */
    atomic_int workspace_saw_wrong_plan;
} faildev_state;

/* Whether plan carries what this state's plan_prepare made for it. */
static int plan_is_expected(const faildev_state *s, const dashattn_plan_desc *plan)
{
    const faildev_plan *p = plan->backend_plan;
    if (s->before_plan_hook)
        return p == NULL;
    return p != NULL && p->magic == FAILDEV_PLAN_MAGIC;
}

/* Score 2 (preferred over the CPU by "auto"), or what
 * DASHATTN_TEST_FAILDEV_SCORE says, so tests can play a plugin whose only
 * device is no better than the CPU (score 1). */
static int faildev_probe(const dashattn_host *host, char *reason, size_t reason_size)
{
    (void)host;
    (void)reason;
    (void)reason_size;
    const char *score = getenv("DASHATTN_TEST_FAILDEV_SCORE");
    return score ? atoi(score) : 2;
}

static dashattn_status start(const dashattn_host *host, int before_plan_hook, void **state)
{
    faildev_state *s = malloc(sizeof(*s));
    if (s == NULL)
        return DASHATTN_ERR_OUT_OF_MEMORY;
    s->host = host;
    s->before_plan_hook = before_plan_hook;
    atomic_init(&s->workspace_saw_wrong_plan, 0);
    *state = s;
    return DASHATTN_OK;
}

static dashattn_status faildev_init(const dashattn_host *host,
                                    const dashattn_context_options *options, void **state)
{
    (void)options;
    return start(host, 0, state);
}

static dashattn_status faildev_init_before_plan_hook(const dashattn_host *host,
                                                     const dashattn_context_options *options,
                                                     void **state)
{
    (void)options;
    return start(host, 1, state);
}

static void faildev_release(void *state)
{
    free(state);
}

static const char *faildev_device_name(void *state)
{
    (void)state;
    return "simulated failing device";
}

/* 0, or SIZE_MAX (a layout that overflowed) when
 * DASHATTN_TEST_FAILDEV_WORKSPACE=max, so tests can see the core refuse it. */
static size_t faildev_workspace_size(void *state, const dashattn_plan_desc *plan,
                                     dashattn_operation operation)
{
    faildev_state *s = state;
    (void)operation;
    if (!plan_is_expected(s, plan))
        atomic_store(&s->workspace_saw_wrong_plan, 1);
    const char *ws = getenv("DASHATTN_TEST_FAILDEV_WORKSPACE");
    return ws && strcmp(ws, "max") == 0 ? SIZE_MAX : 0;
}

static dashattn_status faildev_alloc(void *state, size_t bytes, void **ptr)
{
    (void)state;
    /* malloc(0) may legally return NULL, which is not a failure here. */
    *ptr = malloc(bytes > 0 ? bytes : 1);
    return *ptr != NULL ? DASHATTN_OK : DASHATTN_ERR_OUT_OF_MEMORY;
}

static void faildev_free(void *state, void *ptr)
{
    (void)state;
    free(ptr);
}

/* Write the dtype's quiet NaN into every element of a strided tensor. */
static void fill_nan(const dashattn_tensor *t)
{
    const float f32_nan = NAN;
    const uint16_t f16_nan = 0x7e00u;
    const uint16_t bf16_nan = 0x7fc0u;
    const void *pattern;
    size_t elem;
    switch (t->dtype) {
    case DASHATTN_F32:
        pattern = &f32_nan;
        elem = sizeof(f32_nan);
        break;
    case DASHATTN_F16:
        pattern = &f16_nan;
        elem = sizeof(f16_nan);
        break;
    case DASHATTN_BF16:
        pattern = &bf16_nan;
        elem = sizeof(bf16_nan);
        break;
    default:
        return;
    }
    for (int64_t b = 0; b < t->shape[0]; b++)
        for (int64_t h = 0; h < t->shape[1]; h++)
            for (int64_t n = 0; n < t->shape[2]; n++)
                for (int64_t d = 0; d < t->shape[3]; d++) {
                    const int64_t off = b * t->strides[0] + h * t->strides[1] + n * t->strides[2] +
                                        d * t->strides[3];
                    memcpy((char *)t->data + off * (int64_t)elem, pattern, elem);
                }
}

static dashattn_status faildev_forward(void *state, const dashattn_plan_desc *plan,
                                       const dashattn_forward_args *args)
{
    faildev_state *s = state;
    if (atomic_load(&s->workspace_saw_wrong_plan)) {
        s->host->set_error("faildev plugin: workspace_size was called before plan->backend_plan "
                           "held the plan of faildev's plan_prepare");
        return DASHATTN_ERR_INTERNAL;
    }
    if (!plan_is_expected(s, plan)) {
        s->host->set_error("faildev plugin: forward got plan->backend_plan %p, not %s",
                           plan->backend_plan,
                           s->before_plan_hook ? "NULL (its table has no plan_prepare)"
                                               : "the plan of faildev's plan_prepare");
        return DASHATTN_ERR_INTERNAL;
    }
    fill_nan(args->out);
    if (args->lse != NULL) {
        const int64_t rows = plan->problem.batch * plan->problem.heads_q * plan->problem.len_q;
        for (int64_t i = 0; i < rows; i++)
            args->lse[i] = NAN;
    }
    s->host->set_error("simulated device failure (faildev plugin, forward launch)");
    return DASHATTN_ERR_DEVICE;
}

static dashattn_status faildev_plan_prepare(void *state, const dashattn_plan_desc *plan,
                                            void **plan_state)
{
    const faildev_state *s = state;
    if (plan->backend_plan != NULL) {
        s->host->set_error("faildev plugin: plan_prepare got a plan whose backend_plan is set");
        return DASHATTN_ERR_INTERNAL;
    }
    const char *mode = getenv("DASHATTN_TEST_FAILDEV_PLAN");
    if (mode != NULL && strcmp(mode, "refuse") == 0) {
        s->host->set_error("faildev plugin cannot run this problem "
                           "(DASHATTN_TEST_FAILDEV_PLAN=refuse)");
        return DASHATTN_ERR_UNSUPPORTED;
    }
    /* The core must then say itself which backend refused. */
    if (mode != NULL && strcmp(mode, "refuse-silently") == 0)
        return DASHATTN_ERR_UNSUPPORTED;
    faildev_plan *p = malloc(sizeof(*p));
    if (p == NULL)
        return DASHATTN_ERR_OUT_OF_MEMORY;
    p->magic = FAILDEV_PLAN_MAGIC;
    atomic_fetch_add(&faildev_plans_live, 1);
    *plan_state = p;
    return DASHATTN_OK;
}

static void faildev_plan_release(void *state, void *plan_state)
{
    (void)state;
    free(plan_state);
    atomic_fetch_sub(&faildev_plans_live, 1);
}

static const dashattn_backend_iface faildev_iface = {
    .abi_version = DASHATTN_BACKEND_ABI_VERSION,
    .struct_size = sizeof(dashattn_backend_iface),
    .name = "faildev",
    .probe = faildev_probe,
    .describe = NULL,
    .init = faildev_init,
    .release = faildev_release,
    .device_name = faildev_device_name,
    .workspace_size = faildev_workspace_size,
    .alloc = faildev_alloc,
    .free = faildev_free,
    .forward = faildev_forward,
    .backward = NULL,
    .cache_append = NULL,
    .decode = NULL,
    .num_threads = NULL,
    .plan_prepare = faildev_plan_prepare,
    .plan_release = faildev_plan_release,
};

static const test_plugin_iface_before_plan_hook faildev_iface_before_plan_hook = {
    .abi_version = DASHATTN_BACKEND_ABI_VERSION,
    .struct_size = sizeof(test_plugin_iface_before_plan_hook),
    .name = "faildev",
    .probe = faildev_probe,
    .describe = NULL,
    .init = faildev_init_before_plan_hook,
    .release = faildev_release,
    .device_name = faildev_device_name,
    .workspace_size = faildev_workspace_size,
    .alloc = faildev_alloc,
    .free = faildev_free,
    .forward = faildev_forward,
    .backward = NULL,
    .cache_append = NULL,
    .decode = NULL,
    .num_threads = NULL,
};

const dashattn_backend_iface *dashattn_backend_entry(void)
{
    const char *table = getenv("DASHATTN_TEST_FAILDEV_TABLE");
    if (table != NULL && strcmp(table, "old") == 0)
        return (const dashattn_backend_iface *)&faildev_iface_before_plan_hook;
    return &faildev_iface;
}
