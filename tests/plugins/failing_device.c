/* SPDX-License-Identifier: MIT */
/*
 * Test plugin "faildev": a usable device whose every kernel launch fails.
 * Forward poisons its outputs with NaN and reports a device error through the
 * host's set_error, as a real backend must after a failed launch, so the test
 * can see that the core passes the plugin's status and message through.
 * Backward, decode and append are left NULL: the core must answer
 * DASHATTN_ERR_UNSUPPORTED for them.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "test_plugin.h"

typedef struct faildev_state {
    const dashattn_host *host;
} faildev_state;

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

static dashattn_status faildev_init(const dashattn_host *host,
                                    const dashattn_context_options *options, void **state)
{
    (void)options;
    faildev_state *s = malloc(sizeof(*s));
    if (s == NULL)
        return DASHATTN_ERR_OUT_OF_MEMORY;
    s->host = host;
    *state = s;
    return DASHATTN_OK;
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
    (void)state;
    (void)plan;
    (void)operation;
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
    const faildev_state *s = state;
    fill_nan(args->out);
    if (args->lse != NULL) {
        const int64_t rows = plan->problem.batch * plan->problem.heads_q * plan->problem.len_q;
        for (int64_t i = 0; i < rows; i++)
            args->lse[i] = NAN;
    }
    s->host->set_error("simulated device failure (faildev plugin, forward launch)");
    return DASHATTN_ERR_DEVICE;
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
};

const dashattn_backend_iface *dashattn_backend_entry(void)
{
    return &faildev_iface;
}
