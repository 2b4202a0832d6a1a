/* SPDX-License-Identifier: MIT */
/* NumPy .npy files holding little-endian float32 arrays in C order: a strict
 * reader that validates every header field before it trusts any size, and a
 * writer of the format to a stream. Independent of the CLI so tests (and the
 * fuzzer) can link it alone. */
#ifndef DASHATTN_NPY_H
#define DASHATTN_NPY_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/** Most dimensions a file may declare (NumPy 1.x's own limit). */
#define DA_NPY_MAX_DIMS 32

/** A float32 array in host byte order, C order. */
typedef struct da_npy_array {
    int ndim;
    int64_t shape[DA_NPY_MAX_DIMS];
    /** Number of elements (the product of shape; 1 for a 0-d array). */
    size_t count;
    /** count floats, malloc'ed; NULL only when count is 0. */
    float *data;
} da_npy_array;

/** What the readers return when memory, not the file, was the problem. */
#define DA_NPY_NO_MEMORY (-2)

/**
 * Decode the full image of a .npy file held in memory. Returns 0 and fills
 * array (release with da_npy_free) or returns -1 (a bad file) or
 * DA_NPY_NO_MEMORY, leaves array empty and writes a one-line reason,
 * without the file name, into err.
 */
int da_npy_decode(const void *bytes, size_t size, da_npy_array *array, char *err, size_t err_size);

/** Read and decode a file; errors as for da_npy_decode (the reason includes
 * the system's message for I/O failures, not the file name). */
int da_npy_read(const char *path, da_npy_array *array, char *err, size_t err_size);

/**
 * Write data [shape] to f as a version 1.0 '<f4' C-order file whose data
 * start on a 64-byte boundary, and flush it. Returns 0, or -1 with a reason
 * in err. Files that must never be left half-written are written through
 * da_npy_write (outputs.h), which uses this on a temporary file.
 */
int da_npy_write_stream(FILE *f, const float *data, int ndim, const int64_t *shape, char *err,
                        size_t err_size);

/** Release the data of an array and reset it to empty (NULL is accepted). */
void da_npy_free(da_npy_array *array);

/**
 * Write a formatted message into err (err_size bytes; err may be NULL) and
 * return -1: the error convention of the .npy and output-file functions.
 */
int da_npy_fail(char *err, size_t err_size, const char *format, ...)
#ifdef __GNUC__
    __attribute__((format(printf, 3, 4)))
#endif
    ;

#endif
