/* SPDX-License-Identifier: MIT */
/*
 * Test plugin "abitest": claims a plugin ABI version the core does not speak.
 * The core must refuse it after reading abi_version and before calling
 * anything else. Its probe claims a very high score and its init succeeds, so
 * a core that skipped the version check would visibly pick and use it
 * (forward then fails with a message saying so) instead of refusing it.
 */
#include "test_plugin.h"

static const dashattn_host *abitest_host;

static int abitest_probe(const dashattn_host *host, char *reason, size_t reason_size)
{
    (void)reason;
    (void)reason_size;
    abitest_host = host;
    return 1000;
}

static dashattn_status abitest_init(const dashattn_host *host,
                                    const dashattn_context_options *options, void **state)
{
    (void)options;
    abitest_host = host;
    *state = &abitest_host;
    return DASHATTN_OK;
}

static void abitest_release(void *state)
{
    (void)state;
}

static const char *abitest_device_name(void *state)
{
    (void)state;
    return "abitest (must never be loaded)";
}

static size_t abitest_workspace_size(void *state, const dashattn_plan_desc *plan,
                                     dashattn_operation operation)
{
    (void)state;
    (void)plan;
    (void)operation;
    return 0;
}

static dashattn_status abitest_alloc(void *state, size_t bytes, void **ptr)
{
    (void)state;
    (void)bytes;
    *ptr = NULL;
    return DASHATTN_ERR_OUT_OF_MEMORY;
}

static void abitest_free(void *state, void *ptr)
{
    (void)state;
    (void)ptr;
}

static dashattn_status abitest_forward(void *state, const dashattn_plan_desc *plan,
                                       const dashattn_forward_args *args)
{
    (void)state;
    (void)plan;
    (void)args;
    if (abitest_host != NULL && abitest_host->set_error != NULL)
        abitest_host->set_error("abitest plugin was used despite its wrong ABI version");
    return DASHATTN_ERR_INTERNAL;
}

static const dashattn_backend_iface abitest_iface = {
    .abi_version = DASHATTN_BACKEND_ABI_VERSION + 100u,
    .struct_size = sizeof(dashattn_backend_iface),
    .name = "abitest",
    .probe = abitest_probe,
    .describe = NULL,
    .init = abitest_init,
    .release = abitest_release,
    .device_name = abitest_device_name,
    .workspace_size = abitest_workspace_size,
    .alloc = abitest_alloc,
    .free = abitest_free,
    .forward = abitest_forward,
    .backward = NULL,
    .cache_append = NULL,
    .decode = NULL,
    .num_threads = NULL,
};

const dashattn_backend_iface *dashattn_backend_entry(void)
{
    return &abitest_iface;
}
