#!/bin/sh
# SPDX-License-Identifier: MIT
# Runs the libFuzzer targets of a build configured with --enable-fuzzers, each
# for a bounded time, on a scratch corpus seeded from tests/fuzz/corpus/.
#   sh tests/fuzz/run.sh BUILD_DIR [SECONDS_PER_TARGET [TARGET...]]
# (default 60 seconds; targets npy and plan). Exits 1 if a target crashed,
# leaked or hit undefined behaviour; the input that did it is printed and
# kept in the scratch directory: copy it into tests/fuzz/corpus/TARGET/ under
# a name saying what it hit, fix the bug, and make check replays it forever.
# Extra libFuzzer options go in FUZZ_FLAGS (e.g. FUZZ_FLAGS=-jobs=4).
set -u
build=${1:?usage: run.sh BUILD_DIR [SECONDS [TARGET...]]}
secs=${2:-60}
[ $# -ge 2 ] && shift 2 || shift $#
targets=${*:-npy plan}
src=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/dashattn-fuzz.XXXXXX") || exit 99
status=0
for t in $targets; do
    exe=$build/tests/fuzz/fuzz_$t
    if [ ! -x "$exe" ]; then
        echo "run.sh: $exe is missing (configure with --enable-fuzzers, then make)"
        exit 99
    fi
    mkdir "$work/$t"
    echo "=== fuzz_$t for $secs s ==="
    # New inputs go to the scratch directory (first); the seeds are read only.
    # shellcheck disable=SC2086
    if ! "$exe" -max_total_time="$secs" -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$work/$t-" ${FUZZ_FLAGS:-} "$work/$t" "$src/tests/fuzz/corpus/$t" \
        >"$work/$t.log" 2>&1; then
        status=1
        tail -n 60 "$work/$t.log"
        for f in "$work/$t"-*; do
            [ -f "$f" ] || continue
            echo "input that failed ($f):"
            od -A d -t x1 "$f" | head -n 20
        done
    else
        grep -E '^(#[0-9]+.*DONE|stat::number_of_executed_units|Done )' "$work/$t.log" | tail -n 2
    fi
done
if [ $status -eq 0 ]; then
    rm -rf "$work"
else
    echo "run.sh: failing inputs and logs kept in $work"
fi
exit $status
