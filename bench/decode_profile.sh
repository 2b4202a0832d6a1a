#!/bin/sh
# SPDX-License-Identifier: MIT
# Nsight Compute over one decode call's kernels (stage 1, split, merge) of
# one bench/decode_bench.py case, after gpu_run.sh has built the library:
#
#   sh bench/decode_profile.sh BUILD OUTFILE [CASE [FOCUS]]
#
# CASE is one of decode_bench's cases (default kv2-b1) and FOCUS its focus
# (given, so no calibration runs under the profiler). Writes ncu's report
# as text to OUTFILE and prints each kernel's time, occupancy and top stall.
set -eu
build=$1 out=$2 case=${3:-kv2-b1} focus=${4:-0.718}
src=$(cd "$(dirname "$0")/.." && pwd)
# Kernels per decode call: scores, threshold, weights, union, split, merge.
per_call=6
DASHATTN_BACKEND_PATH="$build/backends/cuda/.libs" ncu -k 'regex:decode_' \
    --launch-skip $((per_call * 4)) --launch-count $per_call \
    --section SpeedOfLight --section LaunchStats --section Occupancy --section WarpStateStats \
    --section MemoryWorkloadAnalysis --section InstructionStats --section SchedulerStats \
    python3 "$src/bench/decode_bench.py" --lib "$build/.libs/libdashattn.so" --cases "$case" \
    --focus "$focus" --repeat 1 --graph-calls 1 --profile-calls 1 --min-batch-ms 1 >"$out" 2>&1
grep -E '^  [a-z_ ]*decode_|Duration|Achieved Occupancy|Grid Size|Registers Per|Memory Throughput|DRAM Throughput|Warp Cycles Per Issued|Executed Instructions |Issued Warp Per Scheduler|Stall|spent' "$out" |
    grep -vE '^ +-+$' | cut -c1-150
