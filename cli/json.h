/* SPDX-License-Identifier: MIT */
/* What every JSON document the tool prints has in common: it opens with the
 * schema version and the library version, and a figure that is NaN or
 * infinite is written as null (JSON has no such numbers). */
#ifndef DASHATTN_CLI_JSON_H
#define DASHATTN_CLI_JSON_H

#include <stdio.h>

/**
 * Version of the layout of the tool's JSON. Adding a member keeps it;
 * removing or renaming one, or changing its type or meaning, raises it.
 */
#define DA_JSON_SCHEMA_VERSION 1

/** Open the document: `{"schema_version": N, "library_version": "...",
 * "command": "COMMAND"`, without a trailing comma. */
void da_json_begin(FILE *f, const char *command);

/** Write x as a JSON number that reads back to the same double, or null
 * when x is NaN or infinite. */
void da_json_number(FILE *f, double x);

/** Write x with a fixed number of decimals (times in milliseconds), or
 * null when x is NaN or infinite. */
void da_json_fixed(FILE *f, double x, int decimals);

#endif
