/* SPDX-License-Identifier: MIT */
/* Declarations shared by the core's files; nothing here is exported. */
#ifndef DASHATTN_INTERNAL_H
#define DASHATTN_INTERNAL_H

#include <dashattn.h>
#include <dashattn/backend.h>
#include <stdarg.h>

#if defined(__GNUC__)
#define DA_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define DA_PRINTF(f, a)
#endif

struct dashattn_context {
    /* The context's own copy of the backend's table (da_plugin.iface says
     * why a copy): it must live as long as the context, and the da_plugin
     * it came from does not. */
    dashattn_backend_iface iface;
    void *state;
    void *dl_handle; /* NULL for the built-in CPU backend */
    char name[40];
};

struct dashattn_plan {
    dashattn_plan_desc desc;
    const dashattn_context *context;
    size_t workspace_size[3]; /* by dashattn_operation */
    /* What plan_prepare returned, kept writable for plan_release; backends
     * see it read-only as desc.backend_plan. */
    void *backend_plan;
};

/* Thread-local last error. */
void da_set_error(const char *format, ...) DA_PRINTF(1, 2);
void da_clear_error(void);
/* Set the message and return status, so failures read `return da_fail(...)`. */
dashattn_status da_fail(dashattn_status status, const char *format, ...) DA_PRINTF(2, 3);

/* The host table plugins receive. */
extern const dashattn_host da_host;

/* The built-in CPU backend's table. */
const dashattn_backend_iface *da_cpu_backend(void);

#endif
