/* SPDX-License-Identifier: MIT */
/* Fuzz target: the .npy reader (cli/npy.c) on any bytes. It must reject
 * what is not a valid float32 C-order file with a message and never read
 * out of bounds; what it accepts must survive a write and a second read
 * unchanged. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include "npy.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    da_npy_array a;
    char err[256] = "";
    if (da_npy_decode(data, size, &a, err, sizeof err) != 0) {
        if (err[0] == '\0' || a.data != NULL || a.count != 0)
            abort(); /* a rejection says why and leaves the array empty */
        return 0;
    }
    size_t count = 1;
    for (int i = 0; i < a.ndim; i++)
        count *= (size_t)a.shape[i];
    if (a.ndim < 0 || a.ndim > DA_NPY_MAX_DIMS || count != a.count || (count > 0 && !a.data))
        abort();

    char *image = NULL;
    size_t image_size = 0;
    FILE *f = open_memstream(&image, &image_size);
    if (f == NULL) {
        da_npy_free(&a);
        return 0;
    }
    const int wrote = da_npy_write_stream(f, a.data, a.ndim, a.shape, err, sizeof err);
    fclose(f);
    if (wrote != 0)
        abort(); /* anything read can be written back */
    da_npy_array b;
    if (da_npy_decode(image, image_size, &b, err, sizeof err) != 0 || b.ndim != a.ndim ||
        b.count != a.count || memcmp(b.shape, a.shape, sizeof(int64_t) * (size_t)a.ndim) != 0 ||
        (a.count > 0 && memcmp(a.data, b.data, a.count * sizeof(float)) != 0))
        abort();
    da_npy_free(&b);
    free(image);
    da_npy_free(&a);
    return 0;
}
