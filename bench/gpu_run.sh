#!/bin/sh
# SPDX-License-Identifier: MIT
# Everything a GPU machine session needs, in one command: configure and build
# out of tree, run the test suite (the CUDA parity test among them), run the
# CUDA parity test under compute-sanitizer (memcheck, racecheck), then the
# benchmark.
#
#   sh bench/gpu_run.sh [test] [quick] [portable] [sanitize] [opencl] [released] [decode] [prefill] [train] [trainprof] [racecheck] [proof] [bench] [BENCH ARGS...]
#
# With no phase named, test, portable, sanitize and bench run. `quick` runs
# only the CUDA tests (not the CPU suite), the parity test once under
# compute-sanitizer memcheck and once with the portable backward
# (DASHATTN_GPU_BACKWARD=portable), and the decode parity cases on 3, 1 and
# 7 split thread blocks (DASHATTN_GPU_DECODE_CTAS, the first under memcheck). `portable`
# runs the GPU tests again on the portable kernels only (what the hip plugin
# runs on AMD: DASHATTN_GPU_KERNELS=portable), once more with AMD's 64 KiB
# of shared memory per block (DASHATTN_GPU_SHARED_MEMORY=65536), on the
# mma.sync kernels without the Hopper-only ones (DASHATTN_GPU_KERNELS=sm80),
# and the portable parity test once under compute-sanitizer. `opencl` registers
# NVIDIA's OpenCL driver where the machine lacks its ICD file, runs the
# OpenCL tests on every OpenCL device (PoCL's CPU device and the GPU), then
# bench/opencl_cache_race.sh on each. `released` compares the
# CUDA backend with the authors' released Triton kernels
# (bench/released_compare.py); it needs a copy of their repository, never
# committed, in $DASHATTN_RELEASE (default: .release in the source tree, which
# .git/info/exclude should ignore). `decode` runs bench/decode_bench.py (our
# decode against SDPA, and against the released decode where $DASHATTN_RELEASE
# or .release exists; extra arguments in $DECODE_ARGS). `prefill` times the
# causal prefill (N $PREFILL_LEN, default 32768) of both head shapes and both
# input families with bench/gpu_bench.py (sparsity calibrated, U, SDPA) and
# with every block forced (`dashattn bench`'s dense column). `train` times
# forward + backward (N $TRAIN_LEN, default 16384) the same way against SDPA's
# forward + backward, and once with every block forced. `racecheck` runs the
# CUDA parity test under compute-sanitizer racecheck alone (only its
# forward, decode or backward cases where $RACECHECK_ONLY names them). `proof` trains
# the two language models of bench/train_proof.py (extra arguments in
# $PROOF_ARGS). `trainprof` reads
# the kernel times of one forward + backward with Nsight Compute (and one
# kernel's launch in detail where $TRAINPROF_KERNEL names it, and its most
# stalled SASS lines where TRAINPROF_SOURCE=1 as well). Logs go to $OUT
# (default /tmp/gpu-run).
# The source tree must already hold ./configure (run ./autogen.sh where
# autotools and libtool are installed and carry the generated files along).
set -u
src=$(cd "$(dirname "$0")/.." && pwd)
out=${OUT:-/tmp/gpu-run}
build=${DASHATTN_GPU_BUILD:-/tmp/dashattn-gpu-build}
mkdir -p "$out" "$build"

phases=
while [ $# -gt 0 ]; do
    case $1 in
    test | quick | portable | sanitize | train | trainprof | racecheck | opencl | bench | profile | released | decode | prefill | proof) phases="$phases $1" ;;
    *) break ;;
    esac
    shift
done
[ -n "$phases" ] || phases=" test portable sanitize bench"

say() { printf '%s\n' "$*" | tee -a "$out/summary.txt"; }

say "== $(date -u +%Y-%m-%dT%H:%M:%SZ) $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null)"
cd "$build" || exit 1
if [ ! -f Makefile ]; then
    "$src/configure" -q ${DASHATTN_CONFIGURE_ARGS:-} >"$out/configure.log" 2>&1 || { say "configure failed"; tail -30 "$out/configure.log"; exit 1; }
fi
grep -E '(cuda|hip|opencl) plugin' "$out/configure.log" | tee -a "$out/summary.txt"
# One architecture is enough on the machine itself and builds faster.
arch=${NVCC_ARCH_FLAGS:--gencode arch=compute_90,code=sm_90}
if ! make -j16 NVCC_ARCH_FLAGS="$arch" >"$out/build.log" 2>&1; then
    say "build failed"
    tail -40 "$out/build.log"
    exit 1
fi

status=0
backward_mma_ok=0
cuda_tests="tests/test_parity_cuda.sh tests/test_cli_gpu.sh tests/test_gpu_plugins.sh tests/test_cuda"
case $phases in *test*)
    if make -j8 check NVCC_ARCH_FLAGS="$arch" >"$out/check.log" 2>&1; then
        say "make check: passed"
    else
        say "make check: FAILED"
        status=1
    fi
    grep -E '^(PASS|FAIL|SKIP|ERROR|XFAIL)' "$out/check.log" | tee -a "$out/summary.txt"
    cp test-suite.log "$out/" 2>/dev/null
    for t in tests/test_parity_cuda tests/test_parity_opencl; do
        [ -f "$t.log" ] && cp "$t.log" "$out/$(basename "$t").log"
    done
    ;;
esac

case $phases in *quick*)
    log=$out/check-quick.log
    if make check TESTS="$cuda_tests" NVCC_ARCH_FLAGS="$arch" >"$log" 2>&1; then
        say "CUDA tests: passed"
    else
        say "CUDA tests: FAILED"
        status=1
    fi
    grep -E '^(PASS|FAIL|SKIP|ERROR)' "$log" | tee -a "$out/summary.txt"
    cp tests/test_parity_cuda.log tests/test_cli_gpu.sh.log "$out/" 2>/dev/null
    if DASHATTN_BACKEND_PATH="$build/backends/cuda/.libs" compute-sanitizer --tool memcheck \
        --error-exitcode 9 tests/test_backend_parity cuda >"$out/sanitizer-quick.log" 2>&1; then
        say "compute-sanitizer memcheck: clean"
    else
        say "compute-sanitizer memcheck: FAILED (rc $?)"
        status=1
    fi
    tail -3 "$out/sanitizer-quick.log" | tee -a "$out/summary.txt"
    # The tensor-core backward is the default: the CUDA tests above ran it.
    grep -q '^PASS: tests/test_parity_cuda' "$log" && backward_mma_ok=1
    # The portable backward (what the hip plugin runs), DASHATTN_GPU_BACKWARD=portable.
    if DASHATTN_BACKEND_PATH="$build/backends/cuda/.libs" DASHATTN_GPU_BACKWARD=portable \
        tests/test_backend_parity cuda >"$out/parity-backward-portable.log" 2>&1; then
        say "parity with DASHATTN_GPU_BACKWARD=portable: passed"
    else
        say "parity with DASHATTN_GPU_BACKWARD=portable: FAILED"
        grep -E 'FAIL' "$out/parity-backward-portable.log" | head -12 | tee -a "$out/summary.txt"
        status=1
    fi
    # The decode split's runs of blocks crossing from one sequence or KV
    # head into the next: few thread blocks (DASHATTN_GPU_DECODE_CTAS), the
    # first run under memcheck too.
    for n in 3 1 7; do
        tool=
        [ "$n" = 3 ] && tool="compute-sanitizer --tool memcheck --error-exitcode 9"
        if DASHATTN_BACKEND_PATH="$build/backends/cuda/.libs" DASHATTN_PARITY_ONLY=decode \
            DASHATTN_GPU_DECODE_CTAS=$n $tool tests/test_backend_parity cuda \
            >"$out/parity-decode-ctas-$n.log" 2>&1; then
            say "decode parity with DASHATTN_GPU_DECODE_CTAS=$n${tool:+ (memcheck)}: passed"
        else
            say "decode parity with DASHATTN_GPU_DECODE_CTAS=$n${tool:+ (memcheck)}: FAILED"
            grep -E 'FAIL|ERROR' "$out/parity-decode-ctas-$n.log" | head -12 | tee -a "$out/summary.txt"
            status=1
        fi
    done
    ;;
esac

case $phases in *portable*)
    gpu_tests=$cuda_tests
    for cap in "" 65536; do
        log=$out/check-portable${cap:+-$cap}.log
        if DASHATTN_GPU_KERNELS=portable DASHATTN_GPU_SHARED_MEMORY=$cap \
            make check TESTS="$gpu_tests" NVCC_ARCH_FLAGS="$arch" >"$log" 2>&1; then
            say "portable kernels${cap:+, $cap bytes of shared memory}: passed"
        else
            say "portable kernels${cap:+, $cap bytes of shared memory}: FAILED"
            status=1
        fi
        grep -E '^(PASS|FAIL|SKIP|ERROR)' "$log" | tee -a "$out/summary.txt"
        cp tests/test_parity_cuda.log "$out/parity-portable${cap:+-$cap}.log" 2>/dev/null
    done
    # The mma.sync kernels Ampere runs, in place of the Hopper-only ones.
    log=$out/check-sm80.log
    if DASHATTN_GPU_KERNELS=sm80 make check TESTS="$gpu_tests" NVCC_ARCH_FLAGS="$arch" >"$log" 2>&1; then
        say "sm80 kernels (no wgmma): passed"
    else
        say "sm80 kernels (no wgmma): FAILED"
        status=1
    fi
    cp tests/test_parity_cuda.log "$out/parity-sm80.log" 2>/dev/null
    if DASHATTN_BACKEND_PATH="$build/backends/cuda/.libs" DASHATTN_GPU_KERNELS=portable \
        compute-sanitizer --tool memcheck --error-exitcode 9 tests/test_backend_parity cuda \
        >"$out/sanitizer-portable.log" 2>&1; then
        say "compute-sanitizer memcheck, portable kernels: clean"
    else
        say "compute-sanitizer memcheck, portable kernels: FAILED (rc $?)"
        status=1
    fi
    tail -3 "$out/sanitizer-portable.log" | tee -a "$out/summary.txt"
    ;;
esac

case $phases in *opencl*)
    if [ -d /etc/OpenCL/vendors ] && ! grep -qs libnvidia-opencl /etc/OpenCL/vendors/*.icd &&
        echo libnvidia-opencl.so.1 >/etc/OpenCL/vendors/nvidia.icd 2>/dev/null; then
        say "registered NVIDIA's OpenCL driver (/etc/OpenCL/vendors/nvidia.icd)"
    fi
    DASHATTN_BACKEND_PATH="$build/backends/opencl/.libs" sh "$src/bench/opencl_devices.sh" ./dashattn \
        >"$out/opencl-devices.txt"
    while read -r index platform; do
        log=$out/check-opencl-$index.log
        if DASHATTN_OPENCL_DEVICE=$index make check \
            TESTS="tests/test_opencl tests/test_parity_opencl.sh tests/test_cli_gpu.sh" \
            NVCC_ARCH_FLAGS="$arch" >"$log" 2>&1; then
            say "OpenCL device $index ($platform): passed"
        else
            say "OpenCL device $index ($platform): FAILED"
            status=1
        fi
        grep -E '^(PASS|FAIL|SKIP|ERROR)' "$log" | tee -a "$out/summary.txt"
        cp tests/test_parity_opencl.log "$out/parity-opencl-$index.log" 2>/dev/null
        sh "$src/bench/opencl_cache_race.sh" "$build" "$index" "$out/race-$index" |
            tee -a "$out/summary.txt"
    done <"$out/opencl-devices.txt"
    ;;
esac

case $phases in *sanitize*)
    export DASHATTN_BACKEND_PATH="$build/backends/cuda/.libs"
    # racecheck: the block reductions of the threshold searches share a
    # scratch between barriers (gpu_group.cuh).
    for tool in memcheck racecheck; do
        log=$out/sanitizer-$tool.log
        if compute-sanitizer --tool $tool --error-exitcode 9 tests/test_backend_parity cuda \
            >"$log" 2>&1; then
            say "compute-sanitizer $tool: clean"
        else
            say "compute-sanitizer $tool: FAILED (rc $?)"
            status=1
        fi
        tail -3 "$log" | tee -a "$out/summary.txt"
    done
    ;;
esac

case $phases in *profile*)
    # Kernel times of one causal prefill at the benchmark's shape (block keys,
    # stage 1, stage 2) for both head shapes and input families, read by
    # Nsight Compute from the CLI's bench at focus $PROFILE_FOCUS (0.93 gives
    # about 75% at N 32768 on both families), then warp stalls and pipe use
    # of the stage kernels (Hkv 2, segment).
    export DASHATTN_BACKEND_PATH="$build/backends/cuda/.libs"
    plen=${PROFILE_LEN:-32768}
    bench_args="bench --backend cuda --dtype bf16 --lengths $plen --heads-q 32 --head-dim 128 --repeat 1 --focus ${PROFILE_FOCUS:-0.93}"
    for hkv in 8 2; do
        for family in segment coherent; do
            ncu --csv --metrics gpu__time_duration.sum -k 'regex:stage|block_keys' --launch-count 3 \
                ./dashattn $bench_args --heads-kv $hkv --family $family \
                >"$out/profile-kv$hkv-$family.csv" 2>"$out/profile.err"
            say "kernel times (ns), N $plen, Hkv $hkv, $family:" \
                "$(grep gpu__time_duration "$out/profile-kv$hkv-$family.csv" | awk -F'","' '{print $5, $NF}' |
                    tr -d '"' | sed 's/(.*)//' | tr '\n' ';')"
        done
    done
    # Where the stage kernels' warps wait, and the tensor pipes' and L2's load.
    metrics="regex:smsp__average_warps_issue_stalled_.*_per_issue_active.ratio"
    metrics="$metrics,regex:sm__pipe_tensor.*cycles_active.avg.pct_of_peak_sustained_active"
    metrics="$metrics,lts__t_bytes.sum.per_second,dram__throughput.avg.pct_of_peak_sustained_elapsed"
    metrics="$metrics,sm__warps_active.avg.pct_of_peak_sustained_active,gpu__time_duration.sum"
    ncu --csv --metrics "$metrics" -k 'regex:stage' --launch-count 2 ./dashattn $bench_args \
        --heads-kv 2 --family segment >"$out/profile-stalls.csv" 2>>"$out/profile.err"
    python3 "$src/bench/ncu_metrics.py" "$out/profile-stalls.csv" | tee -a "$out/summary.txt"
    ;;
esac

case $phases in *released*)
    release=${DASHATTN_RELEASE:-$src/.release}
    export DASHATTN_BACKEND_PATH="$build/backends/cuda/.libs"
    if PYTHONUNBUFFERED=1 python3 "$src/bench/released_compare.py" --lib "$build/.libs/libdashattn.so" \
        --release "$release" --json "$out/released.json" ${RELEASED_ARGS:-} >"$out/released.log" 2>&1; then
        say "released kernels: outputs and kept sets agree"
    else
        say "released kernels: comparison FAILED (rc $?)"
        status=1
    fi
    tail -8 "$out/released.log" | tee -a "$out/summary.txt"
    ;;
esac

case $phases in *decode*)
    release=${DASHATTN_RELEASE:-$src/.release}
    [ -d "$release" ] || release=
    export DASHATTN_BACKEND_PATH="$build/backends/cuda/.libs"
    if PYTHONUNBUFFERED=1 python3 "$src/bench/decode_bench.py" --lib "$build/.libs/libdashattn.so" \
        ${release:+--release "$release"} --json "$out/decode.json" ${DECODE_ARGS:-} \
        >"$out/decode.log" 2>&1; then
        say "decode bench: no errors"
    else
        say "decode bench: FAILED (rc $?)"
        status=1
    fi
    tail -n 24 "$out/decode.log" | tee -a "$out/summary.txt"
    ;;
esac

case $phases in *prefill*)
    export DASHATTN_BACKEND_PATH="$build/backends/cuda/.libs"
    plen=${PREFILL_LEN:-32768}
    for hkv in 8 2; do
        for family in segment coherent; do
            log=$out/prefill-kv$hkv-$family.log
            if PYTHONUNBUFFERED=1 python3 "$src/bench/gpu_bench.py" --builddir "$build" --cases prefill \
                --lengths "$plen" --repeat 3 --skip-check --heads-q 32 --heads-kv $hkv --family $family \
                --json "$out/prefill-kv$hkv-$family.json" >"$log" 2>&1; then
                say "prefill Hkv $hkv $family: $(grep -E 'ours \[|U \(|(cudnn|flash).*ms' "$log" | tr -s ' ' | tr '\n' ' ')"
            else
                say "prefill Hkv $hkv $family: FAILED"
                tail -5 "$log" | tee -a "$out/summary.txt"
                status=1
            fi
        done
        # Every block forced: dense causal attention through the same kernels.
        ./dashattn bench --backend cuda --dtype bf16 --lengths "$plen" --heads-q 32 --heads-kv $hkv \
            --head-dim 128 --repeat 3 --focus 1.7 >"$out/prefill-forced-kv$hkv.log" 2>&1 || status=1
        say "dashattn bench Hkv $hkv: $(grep -E "^ +$plen " "$out/prefill-forced-kv$hkv.log")"
    done
    ;;
esac

case "$phases " in *" train "*) # not trainprof
    export DASHATTN_BACKEND_PATH="$build/backends/cuda/.libs"
    # The tensor-core backward where the quick phase found it right (or
    # TRAIN_BACKWARD names one), else the portable one.
    DASHATTN_GPU_BACKWARD=${TRAIN_BACKWARD:-$([ "$backward_mma_ok" = 1 ] && echo mma || echo portable)}
    export DASHATTN_GPU_BACKWARD
    say "train: DASHATTN_GPU_BACKWARD=$DASHATTN_GPU_BACKWARD"
    tlen=${TRAIN_LEN:-16384}
    train_args="--builddir $build --cases train --lengths $tlen --repeat 3 --min-batch-ms 20 --skip-check --no-tile-stats --heads-q 32"
    for hkv in 8 2; do
        for family in coherent segment; do
            log=$out/train-kv$hkv-$family.log
            if PYTHONUNBUFFERED=1 python3 "$src/bench/gpu_bench.py" $train_args --heads-kv $hkv \
                --family $family --json "$out/train-kv$hkv-$family.json" >"$log" 2>&1; then
                say "train Hkv $hkv $family: $(grep -E 'ours \[|(cudnn|flash).*ms' "$log" | tr -s ' ' | tr '\n' ' ')"
            else
                say "train Hkv $hkv $family: FAILED"
                tail -5 "$log" | tee -a "$out/summary.txt"
                status=1
            fi
        done
    done
    log=$out/train-forced.log
    if PYTHONUNBUFFERED=1 python3 "$src/bench/gpu_bench.py" $train_args --heads-kv 8 --all-forced \
        --focus 1 --family coherent --json "$out/train-forced.json" >"$log" 2>&1; then
        say "train, every block forced, Hkv 8: $(grep -E 'ours \[|(cudnn|flash).*ms' "$log" | tr -s ' ' | tr '\n' ' ')"
    else
        say "train, every block forced: FAILED"
        tail -5 "$log" | tee -a "$out/summary.txt"
        status=1
    fi
    ;;
esac

case $phases in *trainprof*)
    # Kernel times of one forward + backward at the train phase's shape
    # (N $TRAIN_LEN), both head shapes, coherent inputs, read by Nsight
    # Compute: the forward's kernels, then the backward's. The focus is
    # $PROFILE_FOCUS where set, else the one the train phase of this run
    # calibrated for the shape (its target sparsity), else 0.93.
    export DASHATTN_BACKEND_PATH="$build/backends/cuda/.libs"
    tlen=${TRAIN_LEN:-16384}
    one_call="$src/bench/gpu_bench.py --builddir $build --cases train --lengths $tlen --repeat 1
        --min-batch-ms 1 --skip-check --no-tile-stats --heads-q 32 --family coherent"
    focus_of() { # the focus for Hkv $1
        if [ -n "${PROFILE_FOCUS:-}" ]; then
            echo "$PROFILE_FOCUS"
            return
        fi
        python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["cases"][0]["focus"])' \
            "$out/train-kv$1-coherent.json" 2>/dev/null || echo 0.93
    }
    for hkv in 8 2; do
        focus=$(focus_of $hkv)
        ncu --csv --metrics gpu__time_duration.sum -k 'regex:bwd_|stage1|stage2|block_keys' \
            --launch-count 14 python3 $one_call --focus "$focus" --heads-kv $hkv \
            >"$out/trainprof-kv$hkv.csv" 2>"$out/trainprof-kv$hkv.err"
        say "kernel times (ns), train N $tlen, Hkv $hkv, coherent, focus $focus:" \
            "$(grep gpu__time_duration "$out/trainprof-kv$hkv.csv" | awk -F'","' '{print $5, $NF}' |
                tr -d '"' | sed 's/(.*)//' | tr '\n' ';')"
        grep -E 'sparsity' "$out/trainprof-kv$hkv.csv" | head -2 | tee -a "$out/summary.txt"
    done
    # TRAINPROF_KERNEL (a kernel name regex): its first launch at Hkv 8 in
    # detail (occupancy, warp stalls, memory, instruction mix and the SASS
    # lines that stall most), the report in trainprof-detail.txt.
    if [ -n "${TRAINPROF_KERNEL:-}" ]; then
        ncu --section LaunchStats --section Occupancy --section WarpStateStats \
            --section SchedulerStats --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis \
            --section SourceCounters --section InstructionStats \
            -k "regex:$TRAINPROF_KERNEL" --launch-count 1 python3 $one_call --focus "$(focus_of 8)" \
            --heads-kv 8 >"$out/trainprof-detail.txt" 2>&1
        grep -E 'Registers Per|Shared Memory Config|Achieved Occupancy|Theoretical Occupancy|Block Limit|Warp Cycles Per Issued|Issue Slots Busy|Memory Throughput|L1/TEX Hit|L2 Hit|Duration|Executed Ipc|Stall' \
            "$out/trainprof-detail.txt" | head -40 | tee -a "$out/summary.txt"
        # The SASS lines where its warps wait most (TRAINPROF_SOURCE=1).
        if [ "${TRAINPROF_SOURCE:-0}" = 1 ]; then
            ncu --section SourceCounters --section WarpStateStats --page source --csv \
                --print-source sass -k "regex:$TRAINPROF_KERNEL" --launch-count 1 \
                python3 $one_call --focus "$(focus_of 8)" --heads-kv 8 >"$out/trainprof-source.csv" 2>&1
            python3 "$src/bench/ncu_source_top.py" "$out/trainprof-source.csv" 40 |
                tee "$out/trainprof-source-top.txt" | head -42 | tee -a "$out/summary.txt"
        fi
    fi
    ;;
esac

case $phases in *proof*)
    export DASHATTN_BACKEND_PATH="$build/backends/cuda/.libs"
    if DASHATTN_LIBRARY="$build/.libs/libdashattn.so" PYTHONUNBUFFERED=1 python3 \
        "$src/bench/train_proof.py" --device cuda --json "$out/proof.json" ${PROOF_ARGS:-} \
        >"$out/proof.log" 2>&1; then
        say "proof: trained"
    else
        say "proof: FAILED (rc $?)"
        status=1
    fi
    tail -n 12 "$out/proof.log" | tee -a "$out/summary.txt"
    ;;
esac

case $phases in *racecheck*)
    if env ${RACECHECK_ONLY:+DASHATTN_PARITY_ONLY=$RACECHECK_ONLY} \
        DASHATTN_BACKEND_PATH="$build/backends/cuda/.libs" compute-sanitizer --tool racecheck \
        --error-exitcode 9 tests/test_backend_parity cuda >"$out/sanitizer-racecheck.log" 2>&1; then
        say "compute-sanitizer racecheck: clean"
    else
        say "compute-sanitizer racecheck: FAILED (rc $?)"
        status=1
    fi
    tail -3 "$out/sanitizer-racecheck.log" | tee -a "$out/summary.txt"
    ;;
esac

case $phases in *bench*)
    # No pipe: the script's exit status must reach ours.
    PYTHONUNBUFFERED=1 python3 "$src/bench/gpu_bench.py" --builddir "$build" --json "$out/bench.json" "$@" \
        >"$out/bench.log" 2>&1 || status=1
    cat "$out/bench.log"
    ;;
esac
exit $status
