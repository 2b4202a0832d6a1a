/* SPDX-License-Identifier: MIT */
/* Status strings and the per-thread last-error message. */
#include <config.h>

#include "internal.h"

#include <stdio.h>

/* Per thread, so that concurrent calls on one context cannot overwrite each
 * other's diagnostics. */
static _Thread_local char last_error[1024];

static void set_error_va(const char *format, va_list ap)
{
    vsnprintf(last_error, sizeof last_error, format, ap);
}

void da_set_error(const char *format, ...)
{
    va_list ap;
    va_start(ap, format);
    set_error_va(format, ap);
    va_end(ap);
}

void da_clear_error(void)
{
    last_error[0] = '\0';
}

dashattn_status da_fail(dashattn_status status, const char *format, ...)
{
    va_list ap;
    va_start(ap, format);
    set_error_va(format, ap);
    va_end(ap);
    return status;
}

const dashattn_host da_host = {
    .abi_version = DASHATTN_BACKEND_ABI_VERSION,
    .struct_size = sizeof(dashattn_host),
    .set_error = da_set_error,
    .prepares_plans = 1,
};

DASHATTN_API const char *dashattn_last_error(void)
{
    return last_error;
}

DASHATTN_API const char *dashattn_status_string(dashattn_status status)
{
    switch (status) {
    case DASHATTN_OK:
        return "success";
    case DASHATTN_ERR_INVALID_ARGUMENT:
        return "invalid argument";
    case DASHATTN_ERR_SHAPE_MISMATCH:
        return "shape mismatch";
    case DASHATTN_ERR_UNSUPPORTED:
        return "unsupported by this backend";
    case DASHATTN_ERR_OUT_OF_MEMORY:
        return "out of memory";
    case DASHATTN_ERR_BACKEND_UNAVAILABLE:
        return "backend unavailable";
    case DASHATTN_ERR_ABI_MISMATCH:
        return "backend plugin ABI mismatch";
    case DASHATTN_ERR_DEVICE:
        return "device error";
    case DASHATTN_ERR_WORKSPACE_TOO_SMALL:
        return "workspace too small";
    case DASHATTN_ERR_CACHE_FULL:
        return "KV cache full";
    case DASHATTN_ERR_INTERNAL:
        return "internal error";
    }
    return "unknown status";
}

DASHATTN_API const char *dashattn_version(void)
{
    return PACKAGE_VERSION;
}
