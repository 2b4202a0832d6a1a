/* SPDX-License-Identifier: MIT */
/* The JSON writer every --json of the tool uses (cli/json.c): figures that
 * are NaN or infinite become null, finite ones read back exactly, and every
 * document opens with the schema and library versions. */
#include "json.h"

#include <dashattn.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;

/* What fn(f, x) writes, as a string in buf. */
static const char *written(void (*fn)(FILE *, double), double x, char *buf, size_t size)
{
    FILE *f = tmpfile();
    if (!f) {
        perror("tmpfile");
        exit(99);
    }
    fn(f, x);
    rewind(f);
    const size_t n = fread(buf, 1, size - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static void fixed6(FILE *f, double x)
{
    da_json_fixed(f, x, 6);
}

static void expect(const char *what, const char *got, const char *want)
{
    if (strcmp(got, want) != 0) {
        printf("FAIL: %s: wrote '%s', want '%s'\n", what, got, want);
        failures++;
    }
}

int main(void)
{
    char buf[256];
    expect("NaN", written(da_json_number, NAN, buf, sizeof buf), "null");
    expect("-NaN", written(da_json_number, -NAN, buf, sizeof buf), "null");
    expect("+inf", written(da_json_number, INFINITY, buf, sizeof buf), "null");
    expect("-inf", written(da_json_number, -INFINITY, buf, sizeof buf), "null");
    expect("fixed NaN", written(fixed6, NAN, buf, sizeof buf), "null");
    expect("fixed inf", written(fixed6, -INFINITY, buf, sizeof buf), "null");
    expect("fixed 1.5", written(fixed6, 1.5, buf, sizeof buf), "1.500000");
    expect("0", written(da_json_number, 0.0, buf, sizeof buf), "0");
    expect("-0", written(da_json_number, -0.0, buf, sizeof buf), "-0");
    expect("2", written(da_json_number, 2.0, buf, sizeof buf), "2");

    /* Finite values, tiny to huge, are written so they read back exactly. */
    const double finite[] = {0.1, -1.0 / 3.0, 1e308, -1.7976931348623157e308, 5e-324, 2.5e-310,
                             0.76843, 123456789.125};
    for (size_t i = 0; i < sizeof finite / sizeof finite[0]; i++) {
        const char *s = written(da_json_number, finite[i], buf, sizeof buf);
        char *end;
        const double back = strtod(s, &end);
        if (*end != '\0' || back != finite[i] || strspn(s, "-0123456789.e+") != strlen(s)) {
            printf("FAIL: %.17g written as '%s'\n", finite[i], s);
            failures++;
        }
    }

    FILE *f = tmpfile();
    if (!f)
        return 99;
    da_json_begin(f, "a\"b");
    fputs("}", f);
    rewind(f);
    const size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    char want[256];
    snprintf(want, sizeof want,
             "{\"schema_version\": %d, \"library_version\": \"%s\", \"command\": \"a\\\"b\"}",
             DA_JSON_SCHEMA_VERSION, dashattn_version());
    expect("document start", buf, want);

    if (failures)
        return 1;
    printf("test_json: PASS\n");
    return 0;
}
