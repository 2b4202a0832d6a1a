#!/bin/sh
# SPDX-License-Identifier: MIT
# The CPU benchmark of BENCHMARKS.md in one command: causal DashAttention
# forward at N = 8192 with 8 query heads, 2 KV heads, head dim 64, blocks of
# 64 and alpha 1.5, on synthetic inputs with block structure, against the same
# kernels with every block forced (dense attention); each run with 1 thread
# and with every core. Extra arguments go to `dashattn bench` (e.g.
# --lengths 1024,2048,4096,8192 or --repeat 5).
#
# The tool is $DASHATTN if set, else ./dashattn (a build tree), else the
# dashattn on PATH.
if [ -n "${DASHATTN:-}" ]; then
    tool=$DASHATTN
elif [ -x ./dashattn ]; then
    tool=./dashattn
elif command -v dashattn >/dev/null 2>&1; then
    tool=dashattn
else
    echo "cpu_bench.sh: no dashattn found; build it or set DASHATTN=/path/to/dashattn" >&2
    exit 2
fi

cpu=$(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo 2>/dev/null | head -n 1)
echo "# ${cpu:-$(uname -m)}, $(getconf _NPROCESSORS_ONLN 2>/dev/null || echo '?') cores online, $(uname -sr)"
exec "$tool" bench --backend cpu --lengths 8192 --heads-q 8 --heads-kv 2 --head-dim 64 \
    --block-size 64 --alpha 1.5 --threads-sweep "$@"
