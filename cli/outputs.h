/* SPDX-License-Identifier: MIT */
/* Output files of the CLI, written so that no run destroys a user's file:
 * - before anything runs, outputs are refused if they are not regular files
 *   (devices, directories and FIFOs are never written), if their directory
 *   is missing, or if two outputs, or an output and an input, are one file;
 * - each output is written to a new temporary file (mkstemp, so nothing
 *   planted under a predictable name is followed) in its target's
 *   directory, and only when all of them are complete are they renamed onto
 *   their targets; a failure removes the temporaries and leaves every
 *   existing file as it was;
 * - a symbolic link as an output is followed: the file it points to is
 *   replaced, the link itself stays (da_outputs_help says so to users).
 * Errors are returned as one line of text, for the caller to print. */
#ifndef DASHATTN_CLI_OUTPUTS_H
#define DASHATTN_CLI_OUTPUTS_H

#include <stddef.h>
#include <stdint.h>

/** A path given on the command line, with the flag that named it. */
typedef struct da_path_arg {
    const char *flag; /**< "--out", "--q", ... */
    const char *path; /**< NULL: not given */
} da_path_arg;

/** An array to write as a .npy file. */
typedef struct da_output_file {
    da_path_arg arg;
    const float *data;
    int ndim;
    const int64_t *shape;
} da_output_file;

/**
 * Check outputs against each other and against inputs before a command
 * runs. Returns 0, or -1 with the reason (naming flags and paths) in err.
 */
int da_outputs_check(const da_path_arg *inputs, size_t n_inputs, const da_path_arg *outputs,
                     size_t n_outputs, char *err, size_t err_size);

/**
 * Write every file whose path is given: all to temporaries first, then each
 * renamed onto its target. Returns 0, or -1 with the reason in err, having
 * removed the temporaries (once renaming has begun, a failed rename -- which
 * only a concurrent change to the directory can cause -- leaves the files
 * renamed before it in place).
 */
int da_outputs_write(const da_output_file *files, size_t n, char *err, size_t err_size);

/** da_outputs_check and da_outputs_write for one file. */
int da_npy_write(const char *path, const float *data, int ndim, const int64_t *shape, char *err,
                 size_t err_size);

/** Help text: what happens to output files. */
extern const char da_outputs_help[];

#endif
