/* SPDX-License-Identifier: MIT */
/*
 * Test plugin "abitest": claims a plugin ABI version the core does not speak.
 * The core must refuse it after reading abi_version and before calling
 * anything else. Its probe claims a very high score and its init succeeds, so
 * a core that skipped the version check would visibly pick and use it
 * (forward then fails with a message saying so) instead of refusing it.
 *
 * DASHATTN_TEST_ABITEST_TABLE, read when the core loads the plugin, swaps in
 * a table of the right ABI version whose struct_size sits at the edge of the
 * required entries (probe to forward): "required" ends right after forward
 * and must load; "short" says it ends one entry earlier and must be refused
 * as incomplete, although the table behind it is the same.
 */
#include <stdlib.h>
#include <string.h>

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
        abitest_host->set_error("abitest plugin was used despite its wrong ABI version or "
                                "incomplete table");
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

/* The ABI 2 table cut right after forward; an object of exactly that size,
 * so that a core reading an optional entry past it reads past the object. */
typedef struct abitest_required_iface {
    uint32_t abi_version;
    uint32_t struct_size;
    const char *name;
    int (*probe)(const dashattn_host *host, char *reason, size_t reason_size);
    size_t (*describe)(char *buffer, size_t size);
    dashattn_status (*init)(const dashattn_host *host, const dashattn_context_options *options,
                            void **state);
    void (*release)(void *state);
    const char *(*device_name)(void *state);
    size_t (*workspace_size)(void *state, const dashattn_plan_desc *plan,
                             dashattn_operation operation);
    dashattn_status (*alloc)(void *state, size_t bytes, void **ptr);
    void (*free)(void *state, void *ptr);
    dashattn_status (*forward)(void *state, const dashattn_plan_desc *plan,
                               const dashattn_forward_args *args);
} abitest_required_iface;

_Static_assert(sizeof(abitest_required_iface) == offsetof(dashattn_backend_iface, backward) &&
                   offsetof(abitest_required_iface, forward) ==
                       offsetof(dashattn_backend_iface, forward),
               "abitest's short tables are the current one cut after forward");

static const abitest_required_iface abitest_required = {
    .abi_version = DASHATTN_BACKEND_ABI_VERSION,
    .struct_size = sizeof(abitest_required_iface),
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
};

static const abitest_required_iface abitest_short = {
    .abi_version = DASHATTN_BACKEND_ABI_VERSION,
    .struct_size = offsetof(dashattn_backend_iface, forward),
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
};

const dashattn_backend_iface *dashattn_backend_entry(void)
{
    const char *table = getenv("DASHATTN_TEST_ABITEST_TABLE");
    if (table != NULL && strcmp(table, "required") == 0)
        return (const dashattn_backend_iface *)&abitest_required;
    if (table != NULL && strcmp(table, "short") == 0)
        return (const dashattn_backend_iface *)&abitest_short;
    return &abitest_iface;
}
