# SPDX-License-Identifier: MIT
# Tests of the command-line tool, its .npy files, and dtype conversion.
check_PROGRAMS += tests/test_npy tests/test_convert tests/npy_tool

tests_test_npy_SOURCES = tests/test_npy.c cli/npy.c cli/npy.h cli/outputs.c cli/outputs.h
tests_test_npy_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/tests -I$(top_srcdir)/cli
tests_test_npy_LDADD = libtestutil.la $(LIBM)

# The conversions are the library's (lib/dtype_convert.h, dashattn_convert).
tests_test_convert_SOURCES = tests/test_convert.c
tests_test_convert_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/tests -I$(top_srcdir)/cli \
	-I$(top_srcdir)/lib
tests_test_convert_LDADD = libtestutil.la $(TEST_INTERNAL_LIBS)

# Writes test arrays (random, or deliberately malformed), computes dense
# reference attention and its gradients, compares arrays, checks JSON.
tests_npy_tool_SOURCES = tests/npy_tool.c cli/npy.c cli/npy.h cli/outputs.c cli/outputs.h
tests_npy_tool_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/tests -I$(top_srcdir)/cli
tests_npy_tool_LDADD = libtestutil.la $(LIBM)

TESTS += tests/test_npy tests/test_convert tests/test_cli.sh
dist_noinst_SCRIPTS += tests/test_cli.sh

# The JSON conventions of every --json (cli/json.c), and `info --json`
# against the plugin loader's test plugins.
check_PROGRAMS += tests/test_json
tests_test_json_SOURCES = tests/test_json.c cli/json.c cli/json.h cli/options.c cli/options.h
tests_test_json_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/cli
tests_test_json_LDADD = $(TEST_PUBLIC_LIBS)
TESTS += tests/test_json tests/test_cli_json.sh
dist_noinst_SCRIPTS += tests/test_cli_json.sh

TESTS += tests/test_manpage.sh
dist_noinst_SCRIPTS += tests/test_manpage.sh

# LD_PRELOAD shim that fails large allocations: test_cli.sh checks that
# running out of memory on an input is a failure (status 1), not bad input.
check_LTLIBRARIES += tests/fault/failmalloc.la
tests_fault_failmalloc_la_SOURCES = tests/fault/failmalloc.c
tests_fault_failmalloc_la_LDFLAGS = -module -avoid-version -shared -rpath /nowhere
