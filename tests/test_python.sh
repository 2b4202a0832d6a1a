#!/bin/sh
# SPDX-License-Identifier: MIT
# The Python package (python/dashattn) against the library of this build tree:
# its numpy API always, its torch API where torch is importable (those tests
# skip one by one otherwise). Skips as a whole without python3 or numpy.

me=test_python
if [ -z "${abs_top_srcdir:-}" ] || [ -z "${abs_top_builddir:-}" ]; then
    echo "$me: SKIP: abs_top_srcdir/abs_top_builddir not set (run it through make check)"
    exit 77
fi
PYTHON=${PYTHON:-python3}
command -v "$PYTHON" >/dev/null 2>&1 || {
    echo "$me: SKIP: $PYTHON not found"
    exit 77
}
"$PYTHON" -c 'import numpy' 2>/dev/null || {
    echo "$me: SKIP: numpy is not importable by $PYTHON"
    exit 77
}
lib=$abs_top_builddir/.libs/libdashattn.so.1
if [ ! -f "$lib" ]; then
    echo "$me: FAIL: $lib not built"
    exit 1
fi
# A sanitizer-instrumented library can only be loaded by a process whose
# first library is the sanitizer runtime, which python3 is not; the C tests
# cover that build, this one covers the binding.
if grep -a -q -e __asan_init -e __ubsan_handle "$lib"; then
    echo "$me: SKIP: $lib is built with a sanitizer, python3 cannot load it"
    exit 77
fi

# The source tree's package, not one pip may have installed elsewhere; bytecode
# stays out of the (possibly read-only, under distcheck) source tree.
DASHATTN_LIBRARY=$lib
PYTHONPATH=$abs_top_srcdir/python${PYTHONPATH:+:$PYTHONPATH}
PYTHONDONTWRITEBYTECODE=1
export DASHATTN_LIBRARY PYTHONPATH PYTHONDONTWRITEBYTECODE
cd "$abs_top_srcdir/python" || exit 1
"$PYTHON" -c 'import torch; print("test_python: torch", torch.__version__)' 2>/dev/null ||
    echo "$me: torch is not importable: its tests skip"
exec "$PYTHON" -m unittest discover -v -s tests -p 'test_*.py'
