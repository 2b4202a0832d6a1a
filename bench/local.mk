# SPDX-License-Identifier: MIT
# Benchmark scripts are shipped, not installed; `dashattn bench` is the CLI's.
dist_noinst_SCRIPTS += bench/cpu_bench.sh
# The GPU benchmark (ours against PyTorch SDPA; one command on a GPU machine)
# and the script that builds, tests and runs it there.
dist_noinst_SCRIPTS += bench/gpu_bench.py bench/gpu_run.sh
# What gpu_run.sh opencl runs.
dist_noinst_SCRIPTS += bench/opencl_devices.sh bench/opencl_cache_race.sh
EXTRA_DIST += bench/dashattn_ctypes.py
# The decode benchmark (gpu_run.sh decode) and the released-kernel comparison,
# whose mask helpers it imports.
dist_noinst_SCRIPTS += bench/decode_bench.py bench/released_compare.py
# Nsight Compute over one decode call's kernels, on a GPU machine.
dist_noinst_SCRIPTS += bench/decode_profile.sh
# Read Nsight Compute CSV reports: metrics (gpu_run.sh profile) and the
# source page of one kernel (gpu_run.sh trainprof, TRAINPROF_SOURCE=1).
dist_noinst_SCRIPTS += bench/ncu_metrics.py
dist_noinst_SCRIPTS += bench/ncu_source_top.py
# gpu_run.sh in one device call: a time limit, the logs packed in one file.
dist_noinst_SCRIPTS += bench/gpu_call.sh
# Issue #15's proof: SDPA and DashAttention language models trained alike.
dist_noinst_SCRIPTS += bench/train_proof.py
