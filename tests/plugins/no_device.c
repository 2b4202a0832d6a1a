/* SPDX-License-Identifier: MIT */
/*
 * Test plugin "nodevice": a well-formed plugin whose probe finds no device.
 * The core must report the probe's reason and never call init; "auto" must
 * pass over it. Its table is the shorter one of a plugin built before
 * plan_prepare existed (test_plugin.h): the core must still load it, so that
 * it gets as far as the probe.
 */
#include <stdio.h>

#include "test_plugin.h"

static int nodevice_probe(const dashattn_host *host, char *reason, size_t reason_size)
{
    (void)host;
    if (reason != NULL && reason_size > 0)
        snprintf(reason, reason_size, "%s", "no test device present");
    return 0;
}

static dashattn_status nodevice_init(const dashattn_host *host,
                                     const dashattn_context_options *options, void **state)
{
    (void)options;
    *state = NULL;
    if (host != NULL && host->set_error != NULL)
        host->set_error("nodevice plugin: init called although probe returned 0");
    return DASHATTN_ERR_INTERNAL;
}

static void nodevice_release(void *state)
{
    (void)state;
}

static const char *nodevice_device_name(void *state)
{
    (void)state;
    return "none";
}

static size_t nodevice_workspace_size(void *state, const dashattn_plan_desc *plan,
                                      dashattn_operation operation)
{
    (void)state;
    (void)plan;
    (void)operation;
    return 0;
}

static dashattn_status nodevice_alloc(void *state, size_t bytes, void **ptr)
{
    (void)state;
    (void)bytes;
    *ptr = NULL;
    return DASHATTN_ERR_OUT_OF_MEMORY;
}

static void nodevice_free(void *state, void *ptr)
{
    (void)state;
    (void)ptr;
}

static dashattn_status nodevice_forward(void *state, const dashattn_plan_desc *plan,
                                        const dashattn_forward_args *args)
{
    (void)state;
    (void)plan;
    (void)args;
    return DASHATTN_ERR_INTERNAL;
}

static const test_plugin_iface_before_plan_hook nodevice_iface = {
    .abi_version = DASHATTN_BACKEND_ABI_VERSION,
    .struct_size = sizeof(test_plugin_iface_before_plan_hook),
    .name = "nodevice",
    .probe = nodevice_probe,
    .describe = NULL,
    .init = nodevice_init,
    .release = nodevice_release,
    .device_name = nodevice_device_name,
    .workspace_size = nodevice_workspace_size,
    .alloc = nodevice_alloc,
    .free = nodevice_free,
    .forward = nodevice_forward,
    .backward = NULL,
    .cache_append = NULL,
    .decode = NULL,
    .num_threads = NULL,
};

const dashattn_backend_iface *dashattn_backend_entry(void)
{
    return (const dashattn_backend_iface *)&nodevice_iface;
}
