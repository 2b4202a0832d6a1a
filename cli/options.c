/* SPDX-License-Identifier: MIT */
/* Shared command-line parsing and error reporting (see options.h). */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include "options.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const char da_common_options_help[] =
    "  --alpha A             entmax alpha in [1, 2] (default 1.5; 2 is sparsemax)\n"
    "  --block-size S        tokens per key block (default 64)\n"
    "  --sink N              leading blocks always kept (default 0)\n"
    "  --local N             trailing blocks up to the query's own always kept (default 1:\n"
    "                        the own block); causal attention only\n"
    "  --causal, --no-causal bottom-right aligned causal mask (default) or none\n"
    "  --selection MODE      entmax (default) or topk\n"
    "  --topk K              candidate blocks kept with --selection topk\n"
    "  --group-select MODE   how the query heads of a GQA group select blocks: mean\n"
    "                        (default: each head's entmax, the group's mean probability\n"
    "                        for all), per-head, or shared (entmax on the mean score)\n"
    "  --prior MODE          log (default: logits get log p) or flat (log p centred on\n"
    "                        the row's mean and divided by --prior-sigma)\n"
    "  --prior-sigma X       sigma of the flat prior, > 0 (default 1e6)\n"
    "  --threshold T         exact (default) or halley:N, the released kernels' N fixed\n"
    "                        Halley steps (alpha 1.5 only; their models use halley:3)\n"
    "  --scale X             logit scale (default 1/sqrt(D))\n"
    "  --stage1-scale X      stage-1 score scale (default: --scale); the released\n"
    "                        models' scaling_factor s is s/sqrt(D)\n"
    "  --dtype T             f32 (default), f16 or bf16: inputs are rounded to T for the call\n"
    "  --backend NAME        auto (default: the best usable GPU plugin, else cpu), cpu,\n"
    "                        cuda, hip, opencl; DASHATTN_BACKEND chooses when NAME is auto\n"
    "  --threads N           CPU worker threads, at most 1024 (default 0: OMP_NUM_THREADS,\n"
    "                        else every core)\n"
    "  --json                print one JSON object on stdout\n";

void da_error(const char *format, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, format);
    vsnprintf(msg, sizeof msg, format, ap);
    va_end(ap);
    /* Keep every error on one line, whatever a message carries. */
    for (char *c = msg; *c; c++)
        if (*c == '\n' || *c == '\r')
            *c = ' ';
    fprintf(stderr, "dashattn: %s\n", msg);
}

void da_library_error(const char *what, dashattn_status status)
{
    /* Library messages may span lines (a context lists every plugin it
     * tried); join them so the error stays one line. */
    char detail[1024];
    snprintf(detail, sizeof detail, "%s", dashattn_last_error());
    size_t n = strlen(detail);
    while (n > 0 && (detail[n - 1] == '\n' || detail[n - 1] == ' '))
        detail[--n] = '\0';
    for (char *c = detail; *c; c++)
        if (*c == '\n')
            *c = ';';
    if (detail[0] != '\0')
        da_error("%s: %s: %s", what, dashattn_status_string(status), detail);
    else
        da_error("%s: %s", what, dashattn_status_string(status));
}

int da_library_exit_status(dashattn_status status)
{
    return status == DASHATTN_ERR_INVALID_ARGUMENT || status == DASHATTN_ERR_SHAPE_MISMATCH
               ? DA_EXIT_USAGE
               : DA_EXIT_FAILURE;
}

double da_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

void da_json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *c = (const unsigned char *)(s ? s : ""); *c; c++) {
        if (*c == '"' || *c == '\\')
            fprintf(f, "\\%c", *c);
        else if (*c < 0x20)
            fprintf(f, "\\u%04x", *c);
        else
            fputc(*c, f);
    }
    fputc('"', f);
}

int da_flag_value(int argc, char **argv, int *i, const char *name, const char **value)
{
    const char *arg = argv[*i];
    const size_t n = strlen(name);
    if (strncmp(arg, name, n) != 0)
        return 0;
    if (arg[n] == '=') {
        *value = arg + n + 1;
    } else if (arg[n] == '\0') {
        /* A following flag is not a value: "--q --k K.npy" lacks Q's path. */
        if (*i + 1 >= argc || strncmp(argv[*i + 1], "--", 2) == 0) {
            da_error("%s needs a value", name);
            return -1;
        }
        *value = argv[++*i];
    } else {
        return 0;
    }
    if ((*value)[0] == '\0') {
        da_error("%s needs a value", name);
        return -1;
    }
    return 1;
}

int da_parse_int(const char *flag, const char *text, long long min, long long max, long long *out)
{
    char *end;
    errno = 0;
    const long long v = strtoll(text, &end, 10);
    if (end == text || *end != '\0') {
        da_error("%s: '%s' is not an integer", flag, text);
        return -1;
    }
    if (errno == ERANGE || v < min || v > max) {
        if (max == LLONG_MAX)
            da_error("%s must be at least %lld, got %s", flag, min, text);
        else
            da_error("%s must be in [%lld, %lld], got %s", flag, min, max, text);
        return -1;
    }
    *out = v;
    return 0;
}

int da_parse_double(const char *flag, const char *text, double min, double max, double *out)
{
    char *end;
    errno = 0;
    const double v = strtod(text, &end);
    if (end == text || *end != '\0' || !isfinite(v)) {
        da_error("%s: '%s' is not a finite number", flag, text);
        return -1;
    }
    if (v < min || v > max) {
        if (max == HUGE_VAL)
            da_error("%s must be at least %g, got %s", flag, min, text);
        else
            da_error("%s must be in [%g, %g], got %s", flag, min, max, text);
        return -1;
    }
    *out = v;
    return 0;
}

void da_common_options_init(da_common_options *o)
{
    dashattn_problem p;
    dashattn_problem_init(&p, 1, 1, 1, 1, 1, 1);
    memset(o, 0, sizeof *o);
    o->backend = "auto";
    o->threads = 0;
    o->dtype = p.dtype;
    o->causal = p.causal;
    o->block_size = p.block_size;
    o->n_sink = p.n_sink;
    o->n_local = p.n_local;
    o->alpha = p.alpha;
    o->selection = p.selection;
    o->topk = 0;
    o->group_mode = p.group_mode;
    o->scale = 0.0;
    o->stage1_scale = 0.0;
    o->prior = p.prior;
    o->prior_sigma = p.prior_sigma;
    o->threshold = p.threshold_schedule;
    o->halley_steps = p.halley_steps;
    o->json = 0;
}

/* "exact" or "halley:N". */
static int parse_threshold(const char *text, da_common_options *o)
{
    if (strcmp(text, "exact") == 0) {
        o->threshold = DASHATTN_SCHEDULE_EXACT;
        return 0;
    }
    if (strncmp(text, "halley:", 7) == 0) {
        long long n;
        if (da_parse_int("--threshold halley:N", text + 7, 1, 64, &n) != 0)
            return -1;
        o->threshold = DASHATTN_SCHEDULE_HALLEY;
        o->halley_steps = (int32_t)n;
        return 0;
    }
    da_error("--threshold must be exact or halley:N, got '%s'", text);
    return -1;
}

static int parse_int32(const char *flag, const char *text, long long min, int32_t *out)
{
    long long v;
    if (da_parse_int(flag, text, min, INT32_MAX, &v) != 0)
        return -1;
    *out = (int32_t)v;
    return 0;
}

static int parse_dtype(const char *text, dashattn_dtype *dtype)
{
    static const dashattn_dtype all[] = {DASHATTN_F32, DASHATTN_F16, DASHATTN_BF16};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        const char *name = dashattn_dtype_name(all[i]);
        if (name != NULL && strcmp(text, name) == 0) {
            *dtype = all[i];
            return 0;
        }
    }
    da_error("--dtype must be f32, f16 or bf16, got '%s'", text);
    return -1;
}

int da_parse_common_option(da_common_options *o, int argc, char **argv, int *i)
{
    const char *arg = argv[*i];
    const char *v;
    int m;
    if (strcmp(arg, "--causal") == 0) {
        o->causal = 1;
        return 1;
    }
    if (strcmp(arg, "--no-causal") == 0) {
        o->causal = 0;
        return 1;
    }
    if (strcmp(arg, "--json") == 0) {
        o->json = 1;
        return 1;
    }
    if ((m = da_flag_value(argc, argv, i, "--alpha", &v)) != 0)
        return m < 0 ? -1 : (da_parse_double("--alpha", v, 1.0, 2.0, &o->alpha) ? -1 : 1);
    if ((m = da_flag_value(argc, argv, i, "--block-size", &v)) != 0)
        return m < 0 ? -1 : (parse_int32("--block-size", v, 1, &o->block_size) ? -1 : 1);
    if ((m = da_flag_value(argc, argv, i, "--sink", &v)) != 0)
        return m < 0 ? -1 : (parse_int32("--sink", v, 0, &o->n_sink) ? -1 : 1);
    if ((m = da_flag_value(argc, argv, i, "--local", &v)) != 0)
        return m < 0 ? -1 : (parse_int32("--local", v, 0, &o->n_local) ? -1 : 1);
    if ((m = da_flag_value(argc, argv, i, "--topk", &v)) != 0)
        return m < 0 ? -1 : (parse_int32("--topk", v, 1, &o->topk) ? -1 : 1);
    if ((m = da_flag_value(argc, argv, i, "--scale", &v)) != 0)
        return m < 0 ? -1 : (da_parse_double("--scale", v, 0.0, HUGE_VAL, &o->scale) ? -1 : 1);
    if ((m = da_flag_value(argc, argv, i, "--dtype", &v)) != 0)
        return m < 0 ? -1 : (parse_dtype(v, &o->dtype) ? -1 : 1);
    if ((m = da_flag_value(argc, argv, i, "--backend", &v)) != 0) {
        if (m > 0)
            o->backend = v;
        return m;
    }
    if ((m = da_flag_value(argc, argv, i, "--threads", &v)) != 0) {
        long long t;
        if (m < 0 || da_parse_int("--threads", v, 0, DASHATTN_MAX_THREADS, &t) != 0)
            return -1;
        o->threads = (int)t;
        return 1;
    }
    if ((m = da_flag_value(argc, argv, i, "--selection", &v)) != 0) {
        if (m < 0)
            return -1;
        if (strcmp(v, "entmax") == 0) {
            o->selection = DASHATTN_SELECT_ENTMAX;
        } else if (strcmp(v, "topk") == 0) {
            o->selection = DASHATTN_SELECT_TOPK;
        } else {
            da_error("--selection must be entmax or topk, got '%s'", v);
            return -1;
        }
        return 1;
    }
    if ((m = da_flag_value(argc, argv, i, "--group-select", &v)) != 0) {
        if (m < 0)
            return -1;
        if (strcmp(v, "per-head") == 0) {
            o->group_mode = DASHATTN_GROUP_PER_HEAD;
        } else if (strcmp(v, "shared") == 0) {
            o->group_mode = DASHATTN_GROUP_SHARED;
        } else if (strcmp(v, "mean") == 0) {
            o->group_mode = DASHATTN_GROUP_MEAN;
        } else {
            da_error("--group-select must be mean, per-head or shared, got '%s'", v);
            return -1;
        }
        return 1;
    }
    if ((m = da_flag_value(argc, argv, i, "--prior", &v)) != 0) {
        if (m < 0)
            return -1;
        if (strcmp(v, "log") == 0) {
            o->prior = DASHATTN_PRIOR_LOG;
        } else if (strcmp(v, "flat") == 0) {
            o->prior = DASHATTN_PRIOR_FLAT;
        } else {
            da_error("--prior must be log or flat, got '%s'", v);
            return -1;
        }
        return 1;
    }
    if ((m = da_flag_value(argc, argv, i, "--prior-sigma", &v)) != 0) {
        if (m < 0 || da_parse_double("--prior-sigma", v, 0.0, HUGE_VAL, &o->prior_sigma) != 0)
            return -1;
        if (!(o->prior_sigma > 0.0)) {
            da_error("--prior-sigma must be greater than 0, got %s", v);
            return -1;
        }
        o->sigma_given = 1;
        return 1;
    }
    if ((m = da_flag_value(argc, argv, i, "--threshold", &v)) != 0)
        return m < 0 ? -1 : (parse_threshold(v, o) ? -1 : 1);
    if ((m = da_flag_value(argc, argv, i, "--stage1-scale", &v)) != 0)
        return m < 0 ? -1
                     : (da_parse_double("--stage1-scale", v, 0.0, HUGE_VAL, &o->stage1_scale) ? -1
                                                                                              : 1);
    return 0;
}

int da_check_common_options(const da_common_options *o)
{
    if (o->selection == DASHATTN_SELECT_TOPK && o->topk < 1) {
        da_error("--selection topk needs --topk K");
        return -1;
    }
    if (o->selection != DASHATTN_SELECT_TOPK && o->topk > 0) {
        da_error("--topk applies only with --selection topk");
        return -1;
    }
    if (o->causal && o->n_local < 1) {
        da_error("--local must be at least 1 with causal attention (the own block is always kept)");
        return -1;
    }
    if (o->sigma_given && o->prior != DASHATTN_PRIOR_FLAT) {
        da_error("--prior-sigma applies only with --prior flat");
        return -1;
    }
    if (o->threshold == DASHATTN_SCHEDULE_HALLEY &&
        (o->alpha != 1.5 || o->selection != DASHATTN_SELECT_ENTMAX)) {
        da_error("--threshold halley:N needs entmax selection with --alpha 1.5");
        return -1;
    }
    return 0;
}

void da_apply_common_options(const da_common_options *o, dashattn_problem *p)
{
    p->dtype = o->dtype;
    p->causal = o->causal;
    p->block_size = o->block_size;
    p->n_sink = o->n_sink;
    p->n_local = o->n_local;
    p->alpha = o->alpha;
    p->selection = o->selection;
    p->topk = o->topk;
    p->group_mode = o->group_mode;
    p->scale = o->scale;
    p->stage1_scale = o->stage1_scale;
    p->prior = o->prior;
    p->prior_sigma = o->prior_sigma;
    p->threshold_schedule = o->threshold;
    p->halley_steps = o->halley_steps;
}

int da_open_context(const da_common_options *o, int threads, dashattn_context **context)
{
    dashattn_context_options opts;
    dashattn_context_options_init(&opts);
    opts.backend = o->backend;
    opts.num_threads = threads;
    *context = NULL;
    const dashattn_status st = dashattn_context_create(&opts, context);
    if (st != DASHATTN_OK) {
        char what[96];
        snprintf(what, sizeof what, "backend '%s'", o->backend);
        da_library_error(what, st);
        return DA_EXIT_FAILURE;
    }
    return DA_EXIT_OK;
}
