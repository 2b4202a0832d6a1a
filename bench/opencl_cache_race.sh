#!/bin/sh
# SPDX-License-Identifier: MIT
# Where do wrong OpenCL gradients come from (issue 16)? Runs the OpenCL
# parity harness on one device several times at once from cold caches (as
# `make check -j8` does), then alone on the caches they left, then with only
# our program cache or only the driver's (PoCL's kcache, also under
# XDG_CACHE_HOME) emptied. Prints one line per run.
# Usage (build tree): sh bench/opencl_cache_race.sh BUILD DEVICE-INDEX LOGDIR
set -u
build=$1
device=$2
logs=$3
mkdir -p "$logs"
root=$(mktemp -d)
export XDG_CACHE_HOME=$root/cache DASHATTN_OPENCL_DEVICE=$device
export DASHATTN_BACKEND_PATH=$build/backends/opencl/.libs
run() {
    "$build/tests/test_backend_parity" opencl >"$logs/$1.log" 2>&1
    echo "$1: exit $? ($(grep -c 'FAIL' "$logs/$1.log") FAIL lines) $(tail -n 1 "$logs/$1.log")"
}
for i in 1 2 3 4; do run "cold-concurrent-$i" & done
wait
run warm-serial
ls "$XDG_CACHE_HOME" >"$logs/cache-dirs.txt" 2>&1
find "$XDG_CACHE_HOME" -type f | wc -l >>"$logs/cache-dirs.txt"
saved=$root/saved
cp -a "$XDG_CACHE_HOME" "$saved"
rm -rf "$XDG_CACHE_HOME/dashattn"
run "driver-cache-only"
rm -rf "$XDG_CACHE_HOME" && cp -a "$saved" "$XDG_CACHE_HOME"
find "$XDG_CACHE_HOME" -mindepth 1 -maxdepth 1 ! -name dashattn -exec rm -rf {} +
run "our-cache-only"
rm -rf "$root"
