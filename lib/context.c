/* SPDX-License-Identifier: MIT */
/* Contexts: choosing and starting a backend, and reporting what exists. */
#include <config.h>

#include "loader.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Bounded text for error messages and reports; truncates rather than fails. */
typedef struct text {
    char buf[8192];
    size_t len;
} text;

static void text_add(text *t, const char *format, ...) DA_PRINTF(2, 3);
static void text_add(text *t, const char *format, ...)
{
    const size_t room = sizeof t->buf - t->len;
    if (room <= 1)
        return;
    va_list ap;
    va_start(ap, format);
    int n = vsnprintf(t->buf + t->len, room, format, ap);
    va_end(ap);
    if (n > 0)
        t->len += (size_t)n < room ? (size_t)n : room - 1;
}

DASHATTN_API void dashattn_context_options_init(dashattn_context_options *options)
{
    if (!options)
        return;
    memset(options, 0, sizeof *options);
    options->backend = "auto";
}

/* ---- opening one named plugin from the search path ---- */

struct named_search {
    const char *name;
    da_plugin plugin;
    int found;
    dashattn_status status; /* the most telling failure so far */
    text why;
};

static void try_dir(const char *dir, void *arg)
{
    struct named_search *s = arg;
    if (s->found)
        return;
    char why[1200];
    dashattn_status st = da_plugin_open(dir, s->name, &s->plugin, why, sizeof why);
    if (st == DASHATTN_OK) {
        s->found = 1;
        return;
    }
    if (st == DASHATTN_ERR_ABI_MISMATCH)
        s->status = st;
    text_add(&s->why, "%s%s", s->why.len ? "; " : "", why);
}

/* Probe a loaded plugin; returns its score (0: unusable, reason in why). */
static int probe(const da_plugin *p, char *why, size_t why_size)
{
    why[0] = '\0';
    int score = p->iface.probe(&da_host, why, why_size);
    if (score <= 0 && !why[0])
        snprintf(why, why_size, "the plugin found no usable device");
    return score > 0 ? score : 0;
}

/* ---- auto selection: every plugin found, best probe score first ---- */

/* The built-in CPU backend's standing: plugins scoring no more are used only
 * when named (backend.h, probe). */
#define DA_SCORE_CPU 1

#define MAX_CANDIDATES 32

struct auto_search {
    da_plugin plugins[MAX_CANDIDATES];
    char names[MAX_CANDIDATES][40];
    int scores[MAX_CANDIDATES];
    int count;
};

static void consider(const char *dir, const char *name, void *arg)
{
    struct auto_search *s = arg;
    if (s->count == MAX_CANDIDATES)
        return;
    for (int i = 0; i < s->count; i++) /* an earlier directory wins */
        if (strcmp(s->names[i], name) == 0)
            return;
    char why[1200];
    da_plugin *p = &s->plugins[s->count];
    if (da_plugin_open(dir, name, p, why, sizeof why) != DASHATTN_OK)
        return;
    const int score = probe(p, why, sizeof why);
    if (score == 0) {
        da_plugin_close(p);
        return;
    }
    snprintf(s->names[s->count], sizeof s->names[0], "%s", name);
    s->scores[s->count++] = score;
}

static dashattn_status init_backend(const dashattn_backend_iface *iface, void *handle,
                                    const char *name, const dashattn_context_options *options,
                                    dashattn_context **context)
{
    dashattn_context *ctx = calloc(1, sizeof *ctx);
    if (!ctx)
        return da_fail(DASHATTN_ERR_OUT_OF_MEMORY, "dashattn_context_create: out of memory");
    da_clear_error();
    dashattn_status st = iface->init(&da_host, options, &ctx->state);
    if (st != DASHATTN_OK) {
        if (!dashattn_last_error()[0])
            da_set_error("backend %s: initialisation failed (%s)", name,
                         dashattn_status_string(st));
        free(ctx);
        return st;
    }
    ctx->iface = *iface;
    ctx->dl_handle = handle;
    snprintf(ctx->name, sizeof ctx->name, "%s", name);
    *context = ctx;
    return DASHATTN_OK;
}

static dashattn_status create_auto(const dashattn_context_options *options,
                                   dashattn_context **context)
{
    struct auto_search s;
    memset(&s, 0, sizeof s);
    da_plugin_scan(consider, &s);
    dashattn_status st = DASHATTN_ERR_BACKEND_UNAVAILABLE;
    /* Best score first; a plugin that fails to start gives way to the next. */
    for (int round = 0; round < s.count && st != DASHATTN_OK; round++) {
        int best = -1;
        for (int i = 0; i < s.count; i++)
            if (s.plugins[i].handle && s.scores[i] > DA_SCORE_CPU &&
                (best < 0 || s.scores[i] > s.scores[best]))
                best = i;
        if (best < 0)
            break;
        da_plugin *p = &s.plugins[best];
        st = init_backend(&p->iface, p->handle, s.names[best], options, context);
        if (st == DASHATTN_OK)
            p->handle = NULL; /* the context owns it now */
        else
            da_plugin_close(p);
    }
    for (int i = 0; i < s.count; i++)
        da_plugin_close(&s.plugins[i]);
    if (st == DASHATTN_OK)
        return st;
    return init_backend(da_cpu_backend(), NULL, "cpu", options, context);
}

static dashattn_status create_named(const char *name, const dashattn_context_options *options,
                                    dashattn_context **context)
{
    struct named_search s;
    memset(&s, 0, sizeof s);
    s.name = name;
    s.status = DASHATTN_ERR_BACKEND_UNAVAILABLE;
    da_plugin_dirs(try_dir, &s);
    if (!s.found)
        return da_fail(s.status, "backend %s is not available: %s", name, s.why.buf);
    char why[1200];
    if (probe(&s.plugin, why, sizeof why) == 0) {
        da_plugin_close(&s.plugin);
        return da_fail(DASHATTN_ERR_BACKEND_UNAVAILABLE, "backend %s (%s) is not usable: %s", name,
                       s.plugin.path, why);
    }
    dashattn_status st = init_backend(&s.plugin.iface, s.plugin.handle, name, options, context);
    if (st != DASHATTN_OK)
        da_plugin_close(&s.plugin);
    return st;
}

DASHATTN_API dashattn_status dashattn_context_create(const dashattn_context_options *options,
                                                     dashattn_context **context)
{
    da_clear_error();
    if (!context)
        return da_fail(DASHATTN_ERR_INVALID_ARGUMENT, "dashattn_context_create: context is NULL");
    *context = NULL;
    dashattn_context_options defaults;
    dashattn_context_options_init(&defaults);
    if (!options)
        options = &defaults;
    if (options->num_threads < 0 || options->num_threads > DASHATTN_MAX_THREADS)
        return da_fail(DASHATTN_ERR_INVALID_ARGUMENT,
                       "dashattn_context_create: options->num_threads is %d, must be in [0, %d] "
                       "(0: OpenMP's default)",
                       options->num_threads, DASHATTN_MAX_THREADS);
    if (options->device < 0)
        return da_fail(DASHATTN_ERR_INVALID_ARGUMENT,
                       "dashattn_context_create: options->device is %d, must be >= 0",
                       options->device);
    /* The program's explicit choice wins: the environment picks only where
     * it asked for "auto" (a host-memory program forced onto a GPU backend
     * would hand the device host pointers). */
    const char *name = options->backend ? options->backend : "auto";
    const char *source = "options->backend";
    const char *env = getenv("DASHATTN_BACKEND");
    if (strcmp(name, "auto") == 0 && env && env[0]) {
        name = env;
        source = "environment variable DASHATTN_BACKEND";
    }
    if (strcmp(name, "auto") == 0)
        return create_auto(options, context);
    if (strcmp(name, "cpu") == 0)
        return init_backend(da_cpu_backend(), NULL, "cpu", options, context);
    if (!da_plugin_name_ok(name))
        return da_fail(DASHATTN_ERR_INVALID_ARGUMENT,
                       "dashattn_context_create: %s \"%.40s\" is not a backend name (auto, cpu, "
                       "cuda, hip, opencl, or a plugin name of 1-32 characters a-z 0-9 _)",
                       source, name);
    return create_named(name, options, context);
}

DASHATTN_API void dashattn_context_destroy(dashattn_context *context)
{
    if (!context)
        return;
    context->iface.release(context->state);
    if (context->dl_handle) {
        da_plugin plugin = {.handle = context->dl_handle};
        da_plugin_close(&plugin);
    }
    free(context);
}

DASHATTN_API const char *dashattn_context_backend(const dashattn_context *context)
{
    return context ? context->name : NULL;
}

DASHATTN_API const char *dashattn_context_device(const dashattn_context *context)
{
    if (!context)
        return NULL;
    return context->iface.device_name ? context->iface.device_name(context->state) : "";
}

DASHATTN_API int dashattn_context_num_threads(const dashattn_context *context)
{
    if (!context)
        return 0;
    return context->iface.num_threads ? context->iface.num_threads(context->state) : 1;
}

/* ---- dashattn_backends_report ---- */

static void report_dir(const char *dir, void *arg)
{
    text_add(arg, "  %s\n", dir);
}

/* A backend's device listing, one indented line per device. */
static void report_devices(text *t, const dashattn_backend_iface *iface)
{
    if (!iface->describe)
        return;
    char devices[2048];
    devices[0] = '\0';
    iface->describe(devices, sizeof devices);
    char *save = NULL;
    for (char *line = strtok_r(devices, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
        text_add(t, "           %s\n", line);
}

static void report_plugin(const char *dir, const char *name, void *arg)
{
    text *t = arg;
    da_plugin p;
    char why[1200];
    if (da_plugin_open(dir, name, &p, why, sizeof why) != DASHATTN_OK) {
        text_add(t, "  %-8s skipped: %s\n", name, why);
        return;
    }
    const int score = probe(&p, why, sizeof why);
    if (score == 0) {
        text_add(t, "  %-8s skipped: %s: %s\n", name, p.path, why);
    } else {
        text_add(t, "  %-8s usable (priority %d%s): %s\n", name, score,
                 score > DA_SCORE_CPU ? "" : "; only when named, auto prefers cpu", p.path);
        report_devices(t, &p.iface);
    }
    da_plugin_close(&p);
}

DASHATTN_API size_t dashattn_backends_report(char *buffer, size_t size)
{
    text *t = calloc(1, sizeof *t);
    if (!t) {
        if (buffer && size)
            buffer[0] = '\0';
        return 0;
    }
    text_add(t, "plugin directories searched, in order:\n");
    da_plugin_dirs(report_dir, t);
    text_add(t, "backends:\n");
    text_add(t, "  %-8s usable (built in)\n", "cpu");
    report_devices(t, da_cpu_backend());
    const size_t before = t->len;
    da_plugin_scan(report_plugin, t);
    if (t->len == before)
        text_add(t, "  (no plugins found: cuda, hip and opencl need their plugin installed)\n");
    const size_t needed = t->len;
    if (buffer && size) {
        const size_t n = needed < size - 1 ? needed : size - 1;
        memcpy(buffer, t->buf, n);
        buffer[n] = '\0';
    }
    free(t);
    return needed;
}
