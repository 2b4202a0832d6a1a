# Benchmark scripts are shipped, not installed; `dashattn bench` is the CLI's.
dist_noinst_SCRIPTS += bench/cpu_bench.sh
