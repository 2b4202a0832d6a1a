#!/bin/sh
# SPDX-License-Identifier: MIT
# The OpenCL backend against the CPU backend (skips without an OpenCL device).
# make check and ctest run this from the top build directory and export abs_top_builddir.
: "${abs_top_builddir:?is not set: run this through make check or ctest}"
# The whole test on the device's own choice of kernels, then its decode
# cases once on each of decode's select kernels (da_select_wide, the GPUs'
# choice, and da_select, the CPU devices'), so that PoCL tests both.
bin=$abs_top_builddir/tests/test_backend_parity
"$bin" opencl || exit $?
DASHATTN_PARITY_ONLY=decode DASHATTN_OPENCL_WIDE_SELECT=1 "$bin" opencl || exit $?
DASHATTN_PARITY_ONLY=decode DASHATTN_OPENCL_WIDE_SELECT=0 exec "$bin" opencl
