/* SPDX-License-Identifier: MIT */
/* `dashattn info --json`: the library's backend report (the text of
 * dashattn_backends_report) as one JSON object, for tools.
 *
 * The report is the library's only account of what it found, so this file
 * reads its layout: "plugin directories searched" with one indented
 * directory a line, then "backends:" with one line per backend at two
 * spaces of indentation ("NAME usable (...)" or "NAME skipped: WHY") and
 * the backend's device listing below it, indented further.
 * tests/test_cli_json.sh holds both to that layout. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include "commands.h"
#include "json.h"
#include "options.h"

#include <dashattn.h>
#include <dashattn/backend.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The indentation of a backend's own line in the report. */
#define BACKEND_INDENT 2

typedef enum section { SECTION_NONE, SECTION_DIRS, SECTION_BACKENDS } section;

/* Lines of one backend's device listing kept; the rest is dropped. */
#define MAX_LISTING 64

/* Where the writer is: which arrays and objects are open. */
typedef struct writer {
    FILE *f;
    section in;
    int n_dirs;
    int n_backends;
    int backend_open; /* a backend object waits for its listing */
    int builtin;      /* of the open backend */
    const char *listing[MAX_LISTING];
    int n_listing;
} writer;

static size_t indent_of(const char *line)
{
    size_t n = 0;
    while (line[n] == ' ')
        n++;
    return n;
}

static void print_env(FILE *f, const char *name, int first)
{
    const char *v = getenv(name);
    fprintf(f, "%s", first ? "" : ", ");
    da_json_string(f, name);
    fputs(": ", f);
    if (v)
        da_json_string(f, v);
    else
        fputs("null", f);
}

/* A listing line that names a device: "device N: ..." (CUDA),
 * "device N (P:D): ..." and "* device ..." for the default one (OpenCL);
 * the built-in CPU backend's listing is its one device. */
static const char *device_text(const writer *w, const char *line)
{
    if (w->builtin)
        return line;
    if (strncmp(line, "* ", 2) == 0)
        line += 2;
    return strncmp(line, "device ", 7) == 0 ? line : NULL;
}

static void close_backend(writer *w)
{
    if (!w->backend_open)
        return;
    fputs(", \"devices\": [", w->f);
    int n = 0;
    for (int i = 0; i < w->n_listing; i++) {
        const char *d = device_text(w, w->listing[i]);
        if (d) {
            fputs(n++ ? ", " : "", w->f);
            da_json_string(w->f, d);
        }
    }
    fputs("], \"listing\": [", w->f);
    for (int i = 0; i < w->n_listing; i++) {
        fputs(i ? ", " : "", w->f);
        da_json_string(w->f, w->listing[i]);
    }
    fputs("]}", w->f);
    w->backend_open = 0;
}

/* "usable (built in)", "usable (priority P; ...): PATH", "skipped: WHY". */
static void backend_line(writer *w, char *line)
{
    close_backend(w);
    char *name = line + indent_of(line);
    char *rest = name + strcspn(name, " ");
    if (*rest)
        *rest++ = '\0';
    rest += indent_of(rest);

    FILE *f = w->f;
    fprintf(f, "%s\n  {\"name\": ", w->n_backends++ ? "," : "");
    da_json_string(f, name);
    int usable = strncmp(rest, "usable", 6) == 0;
    const char *path = NULL, *reason = NULL;
    int builtin = 0, priority = -1, auto_ok = 0;
    if (usable) {
        builtin = strstr(rest, "(built in)") != NULL;
        const char *p = strstr(rest, "(priority ");
        if (p)
            priority = atoi(p + strlen("(priority "));
        /* The CPU backend is what auto falls back to; a plugin that only
         * matches it is used only when named. */
        auto_ok = builtin || strstr(rest, "only when named") == NULL;
        char *colon = strstr(rest, "): ");
        if (colon)
            path = colon + 3;
    } else if (strncmp(rest, "skipped: ", 9) == 0) {
        /* WHY is "PATH: reason" when the plugin file was found. */
        char *why = rest + 9;
        char *sep = why[0] == '/' ? strstr(why, ": ") : NULL;
        if (sep) {
            *sep = '\0';
            path = why;
            reason = sep + 2;
        } else {
            reason = why;
        }
    } else {
        reason = rest;
    }
    fprintf(f, ", \"usable\": %s, \"builtin\": %s, \"auto\": %s, \"priority\": ",
            usable ? "true" : "false", builtin ? "true" : "false",
            usable && auto_ok ? "true" : "false");
    if (priority >= 0)
        fprintf(f, "%d", priority);
    else
        fputs("null", f);
    fputs(", \"path\": ", f);
    if (path)
        da_json_string(f, path);
    else
        fputs("null", f);
    fputs(", \"skip_reason\": ", f);
    if (reason)
        da_json_string(f, reason);
    else
        fputs("null", f);
    w->backend_open = 1;
    w->builtin = builtin;
    w->n_listing = 0;
}

static void report_line(writer *w, char *line)
{
    const size_t ind = indent_of(line);
    if (ind == 0) {
        close_backend(w);
        if (w->in == SECTION_DIRS)
            fputs("],\n \"backends\": [", w->f);
        if (strncmp(line, "plugin directories", 18) == 0) {
            w->in = SECTION_DIRS;
            fputs(",\n \"plugin_dirs\": [", w->f);
        } else if (strncmp(line, "backends:", 9) == 0) {
            if (w->in != SECTION_DIRS)
                fputs(",\n \"plugin_dirs\": [],\n \"backends\": [", w->f);
            w->in = SECTION_BACKENDS;
        }
        return;
    }
    if (w->in == SECTION_DIRS) {
        fprintf(w->f, "%s", w->n_dirs++ ? ", " : "");
        da_json_string(w->f, line + ind);
    } else if (w->in == SECTION_BACKENDS) {
        if (ind == BACKEND_INDENT && line[ind] != '(')
            backend_line(w, line);
        else if (ind > BACKEND_INDENT && w->backend_open && w->n_listing < MAX_LISTING)
            w->listing[w->n_listing++] = line + ind;
        /* "(no plugins found: ...)" says no more than an empty list. */
    }
}

int da_info_json(void)
{
    char *report = da_info_report();
    if (report == NULL)
        return DA_EXIT_FAILURE;

    /* The same choice dashattn_context_create makes for "auto" (or for
     * DASHATTN_BACKEND), made before anything is printed so that a failure
     * still gives a whole document. */
    dashattn_context_options opts;
    dashattn_context_options_init(&opts);
    dashattn_context *ctx = NULL;
    const dashattn_status st = dashattn_context_create(&opts, &ctx);

    FILE *f = stdout;
    da_json_begin(f, "info");
    char tool[32];
    snprintf(tool, sizeof tool, "%d.%d.%d", DASHATTN_VERSION_MAJOR, DASHATTN_VERSION_MINOR,
             DASHATTN_VERSION_PATCH);
    fputs(", \"tool_version\": ", f);
    da_json_string(f, tool);
    fprintf(f, ", \"plugin_abi_version\": %u,\n \"environment\": {",
            (unsigned)DASHATTN_BACKEND_ABI_VERSION);
    print_env(f, "DASHATTN_BACKEND", 1);
    print_env(f, "DASHATTN_BACKEND_PATH", 0);
    print_env(f, "DASHATTN_PLUGIN_DIR", 0);
    fputs("}", f);

    writer w = {.f = f, .in = SECTION_NONE};
    for (char *line = report, *next; *line; line = next) {
        next = line + strcspn(line, "\n");
        if (*next)
            *next++ = '\0';
        report_line(&w, line);
    }
    close_backend(&w);
    if (w.in == SECTION_DIRS)
        fputs("],\n \"backends\": [", f);
    else if (w.in == SECTION_NONE)
        fputs(",\n \"plugin_dirs\": [],\n \"backends\": [", f);
    fputs("\n ],\n \"default\": ", f);
    free(report);

    if (st != DASHATTN_OK) {
        fputs("{\"backend\": null, \"error\": ", f);
        char msg[1024];
        snprintf(msg, sizeof msg, "%s: %s", dashattn_status_string(st), dashattn_last_error());
        da_json_string(f, msg);
        fputs("}}\n", f);
        da_library_error("info: default backend", st);
        return DA_EXIT_FAILURE;
    }
    fputs("{\"backend\": ", f);
    da_json_string(f, dashattn_context_backend(ctx));
    fputs(", \"device\": ", f);
    da_json_string(f, dashattn_context_device(ctx));
    fprintf(f, ", \"threads\": %d}}\n", dashattn_context_num_threads(ctx));
    dashattn_context_destroy(ctx);
    return DA_EXIT_OK;
}
