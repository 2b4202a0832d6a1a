/* SPDX-License-Identifier: MIT */
/* The JSON conventions of every command (see json.h). */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include "json.h"
#include "options.h"

#include <dashattn.h>

#include <math.h>
#include <stdio.h>

void da_json_begin(FILE *f, const char *command)
{
    fprintf(f, "{\"schema_version\": %d, \"library_version\": ", DA_JSON_SCHEMA_VERSION);
    da_json_string(f, dashattn_version());
    fputs(", \"command\": ", f);
    da_json_string(f, command);
}

void da_json_number(FILE *f, double x)
{
    if (!isfinite(x)) {
        fputs("null", f);
        return;
    }
    /* 17 significant digits read back to the same double; the tool never
     * calls setlocale, so the decimal point is '.'. */
    fprintf(f, "%.17g", x);
}

void da_json_fixed(FILE *f, double x, int decimals)
{
    if (!isfinite(x)) {
        fputs("null", f);
        return;
    }
    fprintf(f, "%.*f", decimals, x);
}
