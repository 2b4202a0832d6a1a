/* SPDX-License-Identifier: MIT */
/* Command-line parsing shared by `run`, `grad` and `bench`: flag matching,
 * strict number parsing, the options that shape a dashattn_problem, and the
 * CLI's error reporting (one line on stderr, fixed exit statuses). */
#ifndef DASHATTN_CLI_OPTIONS_H
#define DASHATTN_CLI_OPTIONS_H

#include <dashattn.h>

#include <stdint.h>
#include <stdio.h>

/** Exit statuses of every command. */
enum {
    DA_EXIT_OK = 0,
    /** The library failed (backend unavailable, out of memory, ...). */
    DA_EXIT_FAILURE = 1,
    /** The command line or an input file is wrong. */
    DA_EXIT_USAGE = 2
};

/** Options of the problem and the context, common to run, grad and bench. */
typedef struct da_common_options {
    const char *backend; /**< "cpu" unless --backend */
    int threads;         /**< --threads; 0 uses every core */
    dashattn_dtype dtype;
    int causal;
    int32_t block_size;
    int32_t n_sink;
    int32_t n_local;
    double alpha;
    dashattn_selection_mode selection;
    int32_t topk; /**< 0 unless --topk */
    dashattn_group_mode group_mode;
    double scale;        /**< 0: the library's 1/sqrt(D) */
    double stage1_scale; /**< 0: the same as scale */
    dashattn_prior_mode prior;
    double prior_sigma;
    int sigma_given; /**< --prior-sigma was on the command line */
    dashattn_threshold_schedule threshold;
    int32_t halley_steps;
    int json;
} da_common_options;

/** Defaults: those of dashattn_problem_init, backend "cpu", all threads. */
void da_common_options_init(da_common_options *o);

/**
 * If argv[*i] is one of the common options, consume it (and its value,
 * advancing *i) and return 1; return 0 if it is not one; print an error and
 * return -1 if its value is missing or invalid.
 */
int da_parse_common_option(da_common_options *o, int argc, char **argv, int *i);

/** Checks across options (e.g. --selection topk needs --topk); prints and
 * returns -1 on the first problem. */
int da_check_common_options(const da_common_options *o);

/** Copy the options into a problem made by dashattn_problem_init. */
void da_apply_common_options(const da_common_options *o, dashattn_problem *p);

/** Help text lines describing the common options (for command help). */
extern const char da_common_options_help[];

/**
 * Match a flag that takes a value, as "--name VALUE" or "--name=VALUE".
 * Returns 1 and sets *value if argv[*i] is that flag (advancing *i past a
 * separate value), 0 if it is another argument, -1 (error printed) if the
 * value is missing.
 */
int da_flag_value(int argc, char **argv, int *i, const char *name, const char **value);

/** Parse a whole decimal integer in [min, max] for flag; -1 and an error
 * message if text is not one. */
int da_parse_int(const char *flag, const char *text, long long min, long long max, long long *out);

/** Parse a finite number in [min, max] for flag; -1 and a message if not. */
int da_parse_double(const char *flag, const char *text, double min, double max, double *out);

/** Print "dashattn: <message>" as one line on stderr. */
void da_error(const char *format, ...)
#ifdef __GNUC__
    __attribute__((format(printf, 1, 2)))
#endif
    ;

/** Print "dashattn: <what>: <status>: <dashattn_last_error()>" on one line. */
void da_library_error(const char *what, dashattn_status status);

/** Exit status for a failed library call: inputs the library rejects are
 * usage errors, anything else is a failure. */
int da_library_exit_status(dashattn_status status);

/**
 * Create a context for o's backend and threads. The CLI keeps its arrays in
 * host memory, so a backend other than cpu is refused with a message. Prints
 * errors and returns an exit status (DA_EXIT_OK on success).
 */
int da_open_context(const da_common_options *o, int threads, dashattn_context **context);

/** Write s as a JSON string literal (quoted, escaped) to f. */
void da_json_string(FILE *f, const char *s);

/** Milliseconds of a monotonic clock. */
double da_now_ms(void);

#endif
