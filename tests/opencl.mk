# SPDX-License-Identifier: MIT
# Tests of what only the OpenCL backend has (disk program cache, device
# selection, build failures); built where configure found OpenCL. The test
# exits 77 (skipped) on machines without an OpenCL device.
if HAVE_OPENCL
check_PROGRAMS += tests/test_opencl
TESTS += tests/test_opencl
tests_test_opencl_SOURCES = tests/test_opencl.c
tests_test_opencl_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/tests
tests_test_opencl_LDADD = libtestutil.la $(TEST_PUBLIC_LIBS)
endif
