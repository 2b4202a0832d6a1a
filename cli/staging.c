/* SPDX-License-Identifier: MIT */
/* See staging.h. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include "staging.h"

#include "options.h"

#include <stdlib.h>
#include <string.h>

int da_device_array_alloc(dashattn_context *ctx, size_t count, dashattn_dtype dtype,
                          da_device_array *a)
{
    memset(a, 0, sizeof *a);
    void *data = NULL;
    const dashattn_status st =
        dashattn_memory_alloc(ctx, count * dashattn_dtype_size(dtype), &data);
    if (st != DASHATTN_OK) {
        da_library_error("memory", st);
        return -1;
    }
    a->ctx = ctx;
    a->data = data;
    a->count = count;
    a->dtype = dtype;
    return 0;
}

/* Host memory in the array's dtype: host itself for f32, else a copy. */
static void *host_in_dtype(const da_device_array *a, float *host, int *owned)
{
    *owned = a->dtype != DASHATTN_F32;
    if (!*owned)
        return host;
    void *tmp = malloc(a->count * dashattn_dtype_size(a->dtype));
    if (!tmp)
        da_error("out of memory converting %zu values to %s", a->count,
                 dashattn_dtype_name(a->dtype));
    return tmp;
}

int da_device_array_upload(da_device_array *a, const float *host)
{
    int owned;
    void *src = host_in_dtype(a, (float *)host, &owned);
    if (!src)
        return -1;
    dashattn_status st = DASHATTN_OK;
    if (owned)
        st = dashattn_convert(src, a->dtype, host, DASHATTN_F32, a->count);
    if (st == DASHATTN_OK)
        st = dashattn_memory_upload(a->ctx, a->data, src, a->count * dashattn_dtype_size(a->dtype));
    if (owned)
        free(src);
    if (st != DASHATTN_OK) {
        da_library_error("upload", st);
        return -1;
    }
    return 0;
}

int da_device_array_download(const da_device_array *a, float *host)
{
    int owned;
    void *dst = host_in_dtype(a, host, &owned);
    if (!dst)
        return -1;
    dashattn_status st =
        dashattn_memory_download(a->ctx, dst, a->data, a->count * dashattn_dtype_size(a->dtype));
    if (st == DASHATTN_OK && owned)
        st = dashattn_convert(host, DASHATTN_F32, dst, a->dtype, a->count);
    if (owned)
        free(dst);
    if (st != DASHATTN_OK) {
        da_library_error("download", st);
        return -1;
    }
    return 0;
}

dashattn_tensor da_device_array_tensor(const da_device_array *a, const int64_t shape[4])
{
    return dashattn_tensor_bhsd(a->data, a->dtype, shape[0], shape[1], shape[2], shape[3]);
}

void da_device_array_free(da_device_array *a)
{
    if (a->ctx)
        dashattn_memory_free(a->ctx, a->data);
    memset(a, 0, sizeof *a);
}
