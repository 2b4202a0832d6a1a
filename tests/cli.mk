# Tests of the command-line tool and its .npy and dtype helpers.
check_PROGRAMS += tests/test_npy tests/test_convert tests/npy_tool

tests_test_npy_SOURCES = tests/test_npy.c cli/npy.c cli/npy.h
tests_test_npy_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/tests -I$(top_srcdir)/cli
tests_test_npy_LDADD = libtestutil.la $(LIBM)

tests_test_convert_SOURCES = tests/test_convert.c cli/convert.c cli/convert.h
tests_test_convert_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/tests -I$(top_srcdir)/cli
tests_test_convert_LDADD = libtestutil.la $(LIBM)

# Writes test arrays (random, or deliberately malformed), computes dense
# reference attention and its gradients, compares arrays, checks JSON.
tests_npy_tool_SOURCES = tests/npy_tool.c cli/npy.c cli/npy.h
tests_npy_tool_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/tests -I$(top_srcdir)/cli
tests_npy_tool_LDADD = libtestutil.la $(LIBM)

TESTS += tests/test_npy tests/test_convert tests/test_cli.sh
dist_noinst_SCRIPTS += tests/test_cli.sh
