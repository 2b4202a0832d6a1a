/* SPDX-License-Identifier: MIT */
/* Memory in the context's space, so that programs (the CLI among them) can
 * feed any backend without knowing its device API. */
#include <config.h>

#include "internal.h"

#include <string.h>

static dashattn_status check_context(const char *fn, const dashattn_context *context)
{
    if (!context)
        return da_fail(DASHATTN_ERR_INVALID_ARGUMENT, "%s: context is NULL", fn);
    return DASHATTN_OK;
}

DASHATTN_API dashattn_status dashattn_memory_alloc(dashattn_context *context, size_t bytes,
                                                   void **ptr)
{
    static const char fn[] = "dashattn_memory_alloc";
    da_clear_error();
    if (!ptr)
        return da_fail(DASHATTN_ERR_INVALID_ARGUMENT, "%s: ptr is NULL", fn);
    *ptr = NULL;
    dashattn_status st = check_context(fn, context);
    if (st != DASHATTN_OK)
        return st;
    /* Zero bytes still yields a pointer that can be freed. */
    st = context->iface.alloc(context->state, bytes ? bytes : 1, ptr);
    if (st != DASHATTN_OK || !*ptr) {
        *ptr = NULL;
        return da_fail(st == DASHATTN_OK ? DASHATTN_ERR_OUT_OF_MEMORY : st,
                       "%s: cannot allocate %zu bytes on backend %s", fn, bytes, context->name);
    }
    return DASHATTN_OK;
}

DASHATTN_API void dashattn_memory_free(dashattn_context *context, void *ptr)
{
    if (context && ptr)
        context->iface.free(context->state, ptr);
}

static dashattn_status copy(const char *fn, dashattn_context *context, void *dst, const void *src,
                            size_t bytes, int upload)
{
    da_clear_error();
    dashattn_status st = check_context(fn, context);
    if (st != DASHATTN_OK)
        return st;
    if (bytes && (!dst || !src))
        return da_fail(DASHATTN_ERR_INVALID_ARGUMENT, "%s: %s is NULL", fn, dst ? "src" : "dst");
    if (!bytes)
        return DASHATTN_OK;
    dashattn_status (*fn_copy)(void *, void *, const void *, size_t) =
        upload ? context->iface.upload : context->iface.download;
    if (!fn_copy) {
        memmove(dst, src, bytes);
        return DASHATTN_OK;
    }
    st = fn_copy(context->state, dst, src, bytes);
    if (st != DASHATTN_OK && !dashattn_last_error()[0])
        da_set_error("%s: backend %s failed to copy %zu bytes", fn, context->name, bytes);
    return st;
}

DASHATTN_API dashattn_status dashattn_memory_upload(dashattn_context *context, void *dst,
                                                    const void *src, size_t bytes)
{
    return copy("dashattn_memory_upload", context, dst, src, bytes, 1);
}

DASHATTN_API dashattn_status dashattn_memory_download(dashattn_context *context, void *dst,
                                                      const void *src, size_t bytes)
{
    return copy("dashattn_memory_download", context, dst, src, bytes, 0);
}

DASHATTN_API dashattn_status dashattn_synchronize(dashattn_context *context, void *stream)
{
    static const char fn[] = "dashattn_synchronize";
    da_clear_error();
    dashattn_status st = check_context(fn, context);
    if (st != DASHATTN_OK || !context->iface.synchronize)
        return st;
    st = context->iface.synchronize(context->state, stream);
    if (st != DASHATTN_OK && !dashattn_last_error()[0])
        da_set_error("%s: backend %s failed: %s", fn, context->name, dashattn_status_string(st));
    return st;
}
