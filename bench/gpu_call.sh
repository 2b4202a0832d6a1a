#!/bin/sh
# SPDX-License-Identifier: MIT
# One call on a GPU machine that returns only a few files: bench/gpu_run.sh
# under a time limit (stopped, logs kept, when it runs over), every log packed
# into $OUT/logs.tgz, and the run's summary printed (its indented detail lines
# left to the logs).
#
#   OUT=... sh bench/gpu_call.sh SECONDS PHASE... [BENCH ARGS...]
#
# The environment variables of gpu_run.sh (TRAIN_LEN, TRAINPROF_KERNEL, ...)
# pass through.
set -u
if [ $# -lt 2 ]; then
    echo "usage: OUT=DIR sh $0 SECONDS PHASE... [BENCH ARGS...]" >&2
    exit 2
fi
budget=$1
shift
dest=${OUT:-/tmp/gpu-call}
mkdir -p "$dest"
logs=$(mktemp -d "${TMPDIR:-/tmp}/gpu-call.XXXXXX") || exit 1
timeout -k 10 "$budget" env OUT="$logs" sh "$(dirname "$0")/gpu_run.sh" "$@" >"$logs/run.log" 2>&1
rc=$?
tar czf "$dest/logs.tgz" -C "$logs" . || rc=1
[ "$rc" = 124 ] || [ "$rc" = 137 ] && echo "gpu_run.sh stopped after $budget s (rc $rc)"
if [ -f "$logs/summary.txt" ]; then
    grep -v '^    ' "$logs/summary.txt" | cut -c1-800 | tail -n "${GPU_CALL_LINES:-40}"
else
    tail -n 20 "$logs/run.log"
fi
rm -rf "$logs"
exit "$rc"
