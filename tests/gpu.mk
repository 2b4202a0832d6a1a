# SPDX-License-Identifier: MIT
# Tests of the GPU backends against the CPU backend and the float64
# reference of tests/reference.c: one program,
# tests/test_backend_parity BACKEND, run once per backend by a tiny wrapper
# (automake and CTest both run .sh tests through $(SHELL) from the top build
# directory with abs_top_builddir exported). A backend that is not built or
# finds no device makes its test skip (exit 77). The cpu run compares two CPU
# contexts: it proves the harness itself on every machine.
check_PROGRAMS += tests/test_backend_parity
tests_test_backend_parity_SOURCES = tests/test_backend_parity.c
tests_test_backend_parity_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/tests -I$(top_srcdir)/cli
tests_test_backend_parity_LDADD = libtestref.la libtestutil.la $(TEST_PUBLIC_LIBS)

PARITY_TESTS = \
	tests/test_parity_cpu.sh \
	tests/test_parity_opencl.sh \
	tests/test_parity_cuda.sh \
	tests/test_parity_hip.sh
TESTS += $(PARITY_TESTS)
dist_noinst_SCRIPTS += $(PARITY_TESTS)

# The command-line tool on each usable GPU backend.
TESTS += tests/test_cli_gpu.sh
dist_noinst_SCRIPTS += tests/test_cli_gpu.sh
# The cuda and hip plugins load, and answer cleanly where no device is.
TESTS += tests/test_gpu_plugins.sh
dist_noinst_SCRIPTS += tests/test_gpu_plugins.sh

# What only the CUDA backend promises: the caller's stream and CUDA graph
# capture of append + decode. Links the CUDA runtime for streams and graphs.
if HAVE_CUDA
check_PROGRAMS += tests/test_cuda
TESTS += tests/test_cuda
tests_test_cuda_SOURCES = tests/test_cuda.c
tests_test_cuda_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/tests -I$(top_srcdir)/backends/gpu $(CUDA_CPPFLAGS)
tests_test_cuda_LDADD = libtestutil.la $(TEST_PUBLIC_LIBS) $(CUDA_LDFLAGS) -lcudart_static \
	-lrt -ldl -lpthread -lstdc++
endif
