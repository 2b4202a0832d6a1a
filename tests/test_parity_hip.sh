#!/bin/sh
# SPDX-License-Identifier: MIT
# The HIP backend against the CPU backend (skips without an AMD GPU).
# make check and ctest run this from the top build directory and export abs_top_builddir.
: "${abs_top_builddir:?is not set: run this through make check or ctest}"
exec "$abs_top_builddir/tests/test_backend_parity" hip
