#!/bin/sh
# SPDX-License-Identifier: MIT
# The `dashattn` tool on every GPU backend built in this tree and usable here
# (cuda, hip, opencl): `info` lists it, `run` gives the CPU backend's results (f32
# to 1e-4, bf16 and f16 converted on the way in to 1e-2), `grad` either
# matches the CPU or, where the backend has no backward, fails cleanly with
# status 1 and one line saying so, and `bench` runs. Skips (77) when no GPU
# backend is usable.

if [ -z "${DASHATTN_CLI:-}" ] || [ -z "${abs_top_builddir:-}" ]; then
    echo "test_cli_gpu.sh: DASHATTN_CLI or abs_top_builddir not set; run it through make check"
    exit 77
fi
CLI=$DASHATTN_CLI
TOOL=$abs_top_builddir/tests/npy_tool
tmp=$(mktemp -d 2>/dev/null) || exit 99
trap 'rm -rf "$tmp"' 0
cd "$tmp" || exit 99

checks=0
failures=0
fail() {
    failures=$((failures + 1))
    echo "FAIL: $*"
}
# run_ok DESCRIPTION ARGS...: the CLI must succeed.
run_ok() {
    desc=$1
    shift
    checks=$((checks + 1))
    if ! "$CLI" "$@" >out.txt 2>err.txt; then
        fail "$desc: $(cat err.txt)"
        return 1
    fi
}
same() {
    checks=$((checks + 1))
    "$TOOL" compare "$2" "$3" "$4" >cmp.txt 2>&1 || fail "$1: $(cat cmp.txt)"
}

"$CLI" info >info.txt 2>&1 || {
    echo "dashattn info failed"
    exit 1
}
backends=
for b in cuda hip opencl; do
    if grep -Eq "^  $b +usable" info.txt; then
        backends="$backends $b"
    else
        echo "$b: not usable here ($(grep -E "^  $b " info.txt | head -n 1 | sed 's/^ *//'))"
    fi
done
if [ -z "$backends" ]; then
    echo "no GPU backend usable: skipped"
    exit 77
fi

# B 2, Hq 4, Hkv 2, N 300 (a ragged last block), D 64, blocks of 64.
"$TOOL" random q.npy 11 1 2 4 300 64 &&
    "$TOOL" random k.npy 12 1 2 2 300 64 &&
    "$TOOL" random v.npy 13 1 2 2 300 64 &&
    "$TOOL" random do.npy 14 1 2 4 300 64 || exit 99
QKV="--q q.npy --k k.npy --v v.npy"
run_ok "cpu run" run $QKV --out O_cpu.npy --lse L_cpu.npy --backend cpu || exit 1
run_ok "cpu grad" grad $QKV --dout do.npy --dq DQ_cpu.npy --dk DK_cpu.npy --dv DV_cpu.npy \
    --backend cpu || exit 1

for b in $backends; do
    run_ok "$b: run f32" run $QKV --out O.npy --lse L.npy --backend $b &&
        same "$b: out = cpu" O.npy O_cpu.npy 1e-4 && same "$b: lse = cpu" L.npy L_cpu.npy 1e-4
    checks=$((checks + 1))
    grep -q "^backend $b (.*threads)" out.txt && fail "$b: run counts threads: $(head -n 1 out.txt)"
    for dt in bf16 f16; do
        if "$CLI" run $QKV --out O16.npy --backend $b --dtype $dt >out.txt 2>err.txt; then
            checks=$((checks + 1))
            same "$b: $dt out = cpu" O16.npy O_cpu.npy 2e-2
        elif grep -q 'does not support\|unsupported' err.txt; then
            echo "$b: $dt unsupported: $(cat err.txt)"
        else
            fail "$b: run $dt: $(cat err.txt)"
        fi
    done
    checks=$((checks + 1))
    "$CLI" grad $QKV --dout do.npy --dq DQ.npy --dk DK.npy --dv DV.npy --backend $b \
        >out.txt 2>err.txt
    status=$?
    if [ $status -eq 0 ]; then
        same "$b: dq = cpu" DQ.npy DQ_cpu.npy 1e-4
        same "$b: dk = cpu" DK.npy DK_cpu.npy 1e-4
        same "$b: dv = cpu" DV.npy DV_cpu.npy 1e-4
    elif [ $status -eq 1 ] && [ "$(wc -l <err.txt)" -eq 1 ] &&
        grep -q 'unsupported' err.txt && [ ! -e DQ.npy ]; then
        echo "$b: grad unsupported, as expected: $(cat err.txt)"
    else
        fail "$b: grad exited $status: $(cat err.txt)"
    fi
    run_ok "$b: bench" bench --backend $b --lengths 512 --repeat 1 --heads-q 4 --heads-kv 2 &&
        { grep -q 'sparsity\|%' out.txt || fail "$b: bench printed no sparsity"; }
done

echo "test_cli_gpu.sh: $checks checks, $failures failed (backends:$backends)"
[ "$failures" -eq 0 ]
