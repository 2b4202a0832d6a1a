/* SPDX-License-Identifier: MIT */
/* `dashattn info`: what this installation can run on, and why a plugin that
 * exists was not usable. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include "commands.h"
#include "options.h"

#include <dashattn.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char da_help_info[] =
    "usage: dashattn info [--json]\n"
    "\n"
    "Print the library version, every backend found with its devices, the directories\n"
    "searched for backend plugins, why a plugin was skipped, and which backend 'auto'\n"
    "picks. DASHATTN_BACKEND_PATH adds plugin directories, DASHATTN_PLUGIN_DIR\n"
    "replaces the install directory, DASHATTN_BACKEND picks the backend of 'auto'\n"
    "(a backend named explicitly wins).\n"
    "\n"
    "info options:\n"
    "  --json                print the same as one JSON object on stdout (with\n"
    "                        schema_version and library_version, as every --json)\n";

static void print_env(const char *name)
{
    const char *v = getenv(name);
    printf("%s=%s\n", name, v ? v : "(unset)");
}

char *da_info_report(void)
{
    const size_t needed = dashattn_backends_report(NULL, 0);
    char *report = malloc(needed + 1);
    if (report == NULL) {
        da_error("info: out of memory");
        return NULL;
    }
    dashattn_backends_report(report, needed + 1);
    return report;
}

int da_cmd_info(int argc, char **argv)
{
    int json = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            json = 1;
        } else {
            da_error("info: unexpected argument '%s'", argv[i]);
            return DA_EXIT_USAGE;
        }
    }
    if (json)
        return da_info_json();
    printf("dashattn %d.%d.%d (library %s)\n", DASHATTN_VERSION_MAJOR, DASHATTN_VERSION_MINOR,
           DASHATTN_VERSION_PATCH, dashattn_version());
    print_env("DASHATTN_BACKEND");
    print_env("DASHATTN_BACKEND_PATH");
    print_env("DASHATTN_PLUGIN_DIR");

    char *report = da_info_report();
    if (report == NULL)
        return DA_EXIT_FAILURE;
    fputs(report, stdout);
    free(report);

    /* What a program gets by default: the same choice dashattn_context_create
     * makes for "auto" (or for DASHATTN_BACKEND when it is set). */
    dashattn_context_options opts;
    dashattn_context_options_init(&opts);
    dashattn_context *ctx = NULL;
    const dashattn_status st = dashattn_context_create(&opts, &ctx);
    if (st != DASHATTN_OK) {
        da_library_error("info: default backend", st);
        return DA_EXIT_FAILURE;
    }
    printf("default backend: %s, device: %s, threads: %d\n", dashattn_context_backend(ctx),
           dashattn_context_device(ctx), dashattn_context_num_threads(ctx));
    dashattn_context_destroy(ctx);
    return DA_EXIT_OK;
}
