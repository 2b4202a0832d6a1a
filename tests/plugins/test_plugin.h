/* SPDX-License-Identifier: MIT */
/* Shared by the test-only backend plugins: the one symbol a plugin exports. */
#ifndef DASHATTN_TEST_PLUGIN_H
#define DASHATTN_TEST_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#include <dashattn/backend.h>

/* The test plugins are built without -fvisibility=hidden, but say it anyway
 * so that they keep working if the project's flags ever add it. */
#if defined(__GNUC__)
#define TEST_PLUGIN_EXPORT __attribute__((visibility("default")))
#else
#define TEST_PLUGIN_EXPORT
#endif

TEST_PLUGIN_EXPORT const dashattn_backend_iface *dashattn_backend_entry(void);

/*
 * dashattn_backend_iface as plugin ABI 2 had it before plan_prepare and
 * plan_release were added at its end: the table a plugin built against that
 * header returns. A table object of this type ends where its struct_size
 * says, so a core that reads an entry past struct_size reads past the object
 * (AddressSanitizer reports it) instead of finding a zero there by luck.
 */
typedef struct test_plugin_iface_before_plan_hook {
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
    dashattn_status (*backward)(void *state, const dashattn_plan_desc *plan,
                                const dashattn_backward_args *args);
    dashattn_status (*cache_append)(void *state, const dashattn_plan_desc *plan,
                                    const dashattn_append_args *args);
    dashattn_status (*decode)(void *state, const dashattn_plan_desc *plan,
                              const dashattn_decode_args *args);
    int (*num_threads)(void *state);
    dashattn_status (*upload)(void *state, void *dst, const void *src, size_t bytes);
    dashattn_status (*download)(void *state, void *dst, const void *src, size_t bytes);
    dashattn_status (*synchronize)(void *state, void *stream);
} test_plugin_iface_before_plan_hook;

_Static_assert(sizeof(test_plugin_iface_before_plan_hook) ==
                   offsetof(dashattn_backend_iface, plan_prepare),
               "the old table is the current one cut before plan_prepare");
_Static_assert(offsetof(test_plugin_iface_before_plan_hook, forward) ==
                       offsetof(dashattn_backend_iface, forward) &&
                   offsetof(test_plugin_iface_before_plan_hook, synchronize) ==
                       offsetof(dashattn_backend_iface, synchronize),
               "the old table's entries sit where the current table has them");

#endif
