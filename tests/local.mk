# SPDX-License-Identifier: MIT
# Tests: automake's parallel harness (make check) and CTest (ctest) run the
# same list. Exit status 77 means "skipped" for both.
TEST_EXTENSIONS = .sh
SH_LOG_COMPILER = $(SHELL)

# Tests load GPU plugins from the build tree only, never from an installed tree
# (DASHATTN_PLUGIN_DIR points the install directory at a folder that is not there),
# and ignore a DASHATTN_BACKEND the developer may have exported. OpenMP threads
# sleep rather than spin between the many tiny calls, so parallel tests on a
# small machine do not starve each other. Compiled OpenCL programs are cached
# in the build tree, not in the developer's ~/.cache.
DASHATTN_TEST_PLUGIN_PATH = $(abs_top_builddir)/backends/cuda/.libs:$(abs_top_builddir)/backends/hip/.libs:$(abs_top_builddir)/backends/opencl/.libs
AM_TESTS_ENVIRONMENT = \
	unset DASHATTN_BACKEND; \
	OMP_WAIT_POLICY=passive; export OMP_WAIT_POLICY; \
	DASHATTN_BACKEND_PATH='$(DASHATTN_TEST_PLUGIN_PATH)'; export DASHATTN_BACKEND_PATH; \
	DASHATTN_PLUGIN_DIR='$(abs_top_builddir)/tests/no-installed-plugins'; export DASHATTN_PLUGIN_DIR; \
	DASHATTN_CLI='$(abs_top_builddir)/dashattn$(EXEEXT)'; export DASHATTN_CLI; \
	DASHATTN_TEST_PLUGINDIR='$(plugindir)'; export DASHATTN_TEST_PLUGINDIR; \
	XDG_CACHE_HOME='$(abs_top_builddir)/tests/xdg-cache'; export XDG_CACHE_HOME; \
	abs_top_srcdir='$(abs_top_srcdir)'; export abs_top_srcdir; \
	abs_top_builddir='$(abs_top_builddir)'; export abs_top_builddir;

# C tests of the public API link the shared library; tests of internals link
# the convenience library.
TEST_PUBLIC_LIBS = libdashattn.la $(LIBM)
TEST_INTERNAL_LIBS = libdashattn_internal.la $(OPENMP_CFLAGS) $(LIBM)

check_LTLIBRARIES += libtestutil.la
libtestutil_la_SOURCES = tests/testutil.c tests/testutil.h cli/synthetic.c cli/synthetic.h
libtestutil_la_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/tests -I$(top_srcdir)/cli

include $(srcdir)/tests/numerics.mk
include $(srcdir)/tests/cli.mk
include $(srcdir)/tests/infra.mk
include $(srcdir)/tests/gpu.mk
include $(srcdir)/tests/opencl.mk
include $(srcdir)/tests/fuzz.mk
include $(srcdir)/tests/python.mk

EXTRA_DIST += tests/lsan-suppressions.txt

check_PROGRAMS += tests/test_memory
tests_test_memory_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/tests
tests_test_memory_LDADD = libtestutil.la $(TEST_PUBLIC_LIBS)
TESTS += tests/test_memory

# The OpenCL program cache the tests fill (XDG_CACHE_HOME above).
clean-local: clean-test-cache
clean-test-cache:
	-rm -rf tests/xdg-cache
.PHONY: clean-test-cache
