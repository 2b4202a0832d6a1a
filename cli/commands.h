/* SPDX-License-Identifier: MIT */
/* The subcommands of the `dashattn` tool. Each takes the arguments after its
 * name (argv[0] is the subcommand) and returns the process exit status. */
#ifndef DASHATTN_CLI_COMMANDS_H
#define DASHATTN_CLI_COMMANDS_H

/** `dashattn info`: version, backends, devices, plugin search. */
int da_cmd_info(int argc, char **argv);

/** The library's backends report as a new string (free it), or NULL with
 * an error printed. */
char *da_info_report(void);

/** `dashattn info --json` (cli/info_json.c). */
int da_info_json(void);

/** `dashattn run`: forward on .npy files. */
int da_cmd_run(int argc, char **argv);

/** `dashattn grad`: forward, then gradients for a given dout. */
int da_cmd_grad(int argc, char **argv);

/** `dashattn bench`: DashAttention against all blocks forced, over lengths. */
int da_cmd_bench(int argc, char **argv);

/** Help texts of the subcommands (run, grad and bench add
 * da_common_options_help). */
extern const char da_help_info[];
extern const char da_help_run[];
extern const char da_help_grad[];
extern const char da_help_bench[];

#endif
