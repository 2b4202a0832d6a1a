/* SPDX-License-Identifier: MIT */
/* `dashattn`: command-line front end of the library. Dispatches to the
 * subcommands and owns the top-level help, version and exit statuses. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include "build_tree.h"
#include "commands.h"
#include "options.h"
#include "outputs.h"

#include <dashattn.h>

#include <stdio.h>
#include <string.h>

static const char usage_text[] =
    "dashattn - DashAttention: sparse attention whose key blocks are picked by alpha-entmax\n"
    "\n"
    "usage: dashattn COMMAND [OPTIONS]\n"
    "\n"
    "commands:\n"
    "  bench     time DashAttention against the same attention with every block kept\n"
    "            (with no options: a quick CPU demo)\n"
    "  run       attention forward on NumPy .npy arrays\n"
    "  grad      forward, then gradients for q, k and v\n"
    "  info      version, backends, devices, and where plugins are searched\n"
    "  help [COMMAND]  this text, or the options of COMMAND\n"
    "\n"
    "  dashattn --help | --version\n"
    "\n"
    "exit status: 0 success; 2 bad command line or input (including an input the library\n"
    "rejects as invalid); 1 any other failure (backend unavailable, out of memory, ...).\n";

typedef struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *help;
    int common_options;
    int writes_files; /* its help says how outputs are written */
} command;

static const command commands[] = {
    {"bench", da_cmd_bench, da_help_bench, 1, 0},
    {"run", da_cmd_run, da_help_run, 1, 1},
    {"grad", da_cmd_grad, da_help_grad, 1, 1},
    {"info", da_cmd_info, da_help_info, 0, 0},
};

static const command *find_command(const char *name)
{
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

static void print_help(const command *c)
{
    fputs(c->help, stdout);
    if (c->writes_files) {
        fputs("\n", stdout);
        fputs(da_outputs_help, stdout);
    }
    if (c->common_options) {
        fputs("\nproblem and backend options:\n", stdout);
        fputs(da_common_options_help, stdout);
    }
}

static int help_command(int argc, char **argv)
{
    if (argc < 2) {
        fputs(usage_text, stdout);
        return DA_EXIT_OK;
    }
    const command *c = find_command(argv[1]);
    if (c == NULL || argc > 2) {
        da_error("help: unknown command '%s' (try 'dashattn --help')", argv[1]);
        return DA_EXIT_USAGE;
    }
    print_help(c);
    return DA_EXIT_OK;
}

static int dispatch(int argc, char **argv)
{
    if (argc < 2) {
        fputs(usage_text, stderr);
        return DA_EXIT_USAGE;
    }
    const char *name = argv[1];
    if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0 || strcmp(name, "help") == 0)
        return help_command(argc - 1, argv + 1);
    if (strcmp(name, "--version") == 0) {
        if (argc > 2) {
            da_error("--version takes no arguments");
            return DA_EXIT_USAGE;
        }
        printf("dashattn %d.%d.%d (library %s)\n", DASHATTN_VERSION_MAJOR, DASHATTN_VERSION_MINOR,
               DASHATTN_VERSION_PATCH, dashattn_version());
        return DA_EXIT_OK;
    }
    const command *c = find_command(name);
    if (c == NULL) {
        if (name[0] == '-')
            da_error("unknown option '%s' (try 'dashattn --help')", name);
        else
            da_error("unknown command '%s' (try 'dashattn --help')", name);
        return DA_EXIT_USAGE;
    }
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            print_help(c);
            return DA_EXIT_OK;
        }
    }
    return c->run(argc - 1, argv + 1);
}

int main(int argc, char **argv)
{
    da_use_build_tree_plugins();
    int status = dispatch(argc, argv);
    /* A full disk or a closed pipe must not look like success. */
    if (fflush(stdout) != 0 || ferror(stdout)) {
        if (status == DA_EXIT_OK) {
            da_error("cannot write to standard output");
            status = DA_EXIT_FAILURE;
        }
    }
    return status;
}
