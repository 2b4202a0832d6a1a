/* SPDX-License-Identifier: MIT */
/* Arrays the CLI hands to the library live in the context's memory (host
 * memory for the CPU backend, device memory for GPU backends): host float32
 * data are converted to the call's dtype and uploaded, results are
 * downloaded and converted back. This is what lets every command run on any
 * backend. Failures print one line (da_library_error) and return -1. */
#ifndef DASHATTN_CLI_STAGING_H
#define DASHATTN_CLI_STAGING_H

#include <dashattn.h>
#include <stddef.h>

typedef struct da_device_array {
    dashattn_context *ctx;
    void *data; /* context memory */
    size_t count;
    dashattn_dtype dtype;
} da_device_array;

/* count elements of dtype in the context's memory; a zeroed struct after
 * da_device_array_free() or a failure. */
int da_device_array_alloc(dashattn_context *ctx, size_t count, dashattn_dtype dtype,
                          da_device_array *a);

/* Convert count floats from host into the array's dtype and upload them. */
int da_device_array_upload(da_device_array *a, const float *host);

/* Download the array and convert it into count floats at host. */
int da_device_array_download(const da_device_array *a, float *host);

/* A contiguous [B, H, N, D] view of the array. */
dashattn_tensor da_device_array_tensor(const da_device_array *a, const int64_t shape[4]);

void da_device_array_free(da_device_array *a);

#endif
