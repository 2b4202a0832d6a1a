#!/bin/sh
# SPDX-License-Identifier: MIT
# End-to-end tests of the `dashattn` tool: results of `run` and `grad` against
# dense attention computed independently by tests/npy_tool (with every block
# forced, DashAttention is dense attention), option plumbing through --json,
# and the error contract: every bad input exits 1 or 2 with exactly one line
# on stderr, nothing on stdout, and no output file.
#
# Needs DASHATTN_CLI (the built tool) and abs_top_builddir (for npy_tool);
# `make check` exports both.

if [ -z "${DASHATTN_CLI:-}" ] || [ -z "${abs_top_builddir:-}" ]; then
    echo "test_cli.sh: DASHATTN_CLI or abs_top_builddir not set; run it through make check"
    exit 77
fi
CLI=$DASHATTN_CLI
# These tests hold the CPU backend's results; "auto" must not pick a GPU
# plugin from the build tree (tests/test_cli_gpu.sh covers those).
DASHATTN_BACKEND_PATH=
export DASHATTN_BACKEND_PATH
TOOL=$abs_top_builddir/tests/npy_tool
for exe in "$CLI" "$TOOL"; do
    if [ ! -x "$exe" ]; then
        echo "test_cli.sh: $exe is missing (build it first)"
        exit 99
    fi
done

tmp=$(mktemp -d 2>/dev/null) || {
    tmp=${TMPDIR:-/tmp}/test_cli.$$
    mkdir "$tmp" || exit 99
}
trap 'rm -rf "$tmp"' 0
trap 'exit 99' INT TERM
cd "$tmp" || exit 99

# DASHATTN_VALGRIND (a valgrind command line, as .ci/run sets it) runs every
# call of the tool under it, through libtool so that the real binary is the
# one checked; an error reported by valgrind fails the call.
if [ -n "${DASHATTN_VALGRIND:-}" ]; then
    {
        printf '#!/bin/sh\n'
        printf 'exec "%s/libtool" --mode=execute %s "%s" "$@"\n' "$abs_top_builddir" \
            "$DASHATTN_VALGRIND" "$DASHATTN_CLI"
    } >"$tmp/cli-under-valgrind"
    chmod +x "$tmp/cli-under-valgrind"
    CLI=$tmp/cli-under-valgrind
fi

checks=0
failures=0

# check DESCRIPTION COMMAND...: run COMMAND, count a failure if it fails.
check() {
    desc=$1
    shift
    checks=$((checks + 1))
    if ! "$@"; then
        failures=$((failures + 1))
        echo "FAIL: $desc"
    fi
}

# ok DESCRIPTION ARGS...: the CLI must succeed with nothing on stderr.
ok() {
    desc=$1
    shift
    checks=$((checks + 1))
    "$CLI" "$@" >out.txt 2>err.txt
    status=$?
    if [ "$status" -ne 0 ] || [ -s err.txt ]; then
        failures=$((failures + 1))
        echo "FAIL: $desc: exit status $status; stderr:"
        cat err.txt
    fi
}

# json KEY.PATH: print a value of the JSON in out.txt (which must parse).
json() {
    "$TOOL" json-get "$1" <out.txt
}

# is_true AWK-CONDITION VALUE: test a number with awk, e.g. is_true 'x > 0' 0.5
is_true() {
    awk -v x="$2" "BEGIN { exit !($1) }"
}

# fail_with STATUS SUBSTRING ARGS...: the CLI must exit STATUS with exactly one
# line on stderr that starts with "dashattn: " and contains SUBSTRING, print
# nothing on stdout and create no O.npy.
fail_with() {
    want=$1
    text=$2
    shift 2
    checks=$((checks + 1))
    rm -f O.npy
    "$CLI" "$@" >out.txt 2>err.txt
    status=$?
    lines=$(wc -l <err.txt | tr -d ' ')
    problem=""
    [ "$status" -eq "$want" ] || problem="exit status $status, expected $want"
    [ "$lines" -eq 1 ] || problem="$problem; $lines lines on stderr"
    grep -q '^dashattn: ' err.txt || problem="$problem; stderr does not start with 'dashattn: '"
    grep -qF -- "$text" err.txt || problem="$problem; stderr lacks '$text'"
    [ -s out.txt ] && problem="$problem; output on stdout"
    [ -e O.npy ] && problem="$problem; O.npy was created"
    if [ -n "$problem" ]; then
        failures=$((failures + 1))
        echo "FAIL: dashattn $*: $problem"
        cat err.txt
    fi
}

# Inputs: B 1, Hq 4, Hkv 2 (GQA), N 256, D 16, blocks of 32 (8 blocks).
S=32
"$TOOL" random q.npy 1 1 1 4 256 16 &&
    "$TOOL" random k.npy 2 1 1 2 256 16 &&
    "$TOOL" random v.npy 3 1 1 2 256 16 &&
    "$TOOL" random do.npy 4 1 1 4 256 16 &&
    "$TOOL" random q100.npy 5 1 1 4 100 16 || exit 99
QKV="--q q.npy --k k.npy --v v.npy"

# --- info, help, version ---------------------------------------------------
ok "info" info
check "info lists the cpu backend" grep -q 'cpu' out.txt
ok "--version" --version
check "--version prints the version" grep -q '^dashattn [0-9]' out.txt
ok "--help" --help
check "--help lists the commands" grep -q 'bench' out.txt
ok "help run" help run
check "help run lists --q" grep -q -- '--q' out.txt
ok "run --help" run --help
check "run --help lists --alpha" grep -q -- '--alpha' out.txt

# The tool in its build tree searches the plugins built beside it, unless
# DASHATTN_BACKEND_PATH is set (as above, even empty).
top=$(cd "$abs_top_builddir" && pwd -P)
(unset DASHATTN_BACKEND_PATH && "$CLI" info) >out.txt 2>&1
check "info in the build tree searches its plugin directories" \
    grep -qF "  $top/backends/opencl/.libs" out.txt
"$CLI" info >out.txt 2>&1
check "a set DASHATTN_BACKEND_PATH wins" sh -c "! grep -qF '$top/backends' out.txt"
# The install directory compiled into the loader is the configured one: a
# configure with another prefix rebuilds the loader.
if [ -n "${DASHATTN_TEST_PLUGINDIR:-}" ]; then
    (unset DASHATTN_PLUGIN_DIR && "$CLI" info) >out.txt 2>&1
    check "info searches the configured install directory $DASHATTN_TEST_PLUGINDIR" \
        grep -qxF "  $DASHATTN_TEST_PLUGINDIR" out.txt
fi

# --- run: defaults, JSON ---------------------------------------------------
ok "run --json" run $QKV --out O.npy --lse L.npy --block-size $S --json
check "run JSON names the backend" [ "$(json backend)" = cpu ]
sparsity=$(json sparsity)
check "run JSON sparsity '$sparsity' in [0, 1)" is_true 'x >= 0 && x < 1' "$sparsity"
check "run JSON has a forward time" is_true 'x >= 0' "$(json ms)"
check "run JSON shape" [ "$(json shape.len_q)/$(json shape.heads_kv)" = 256/2 ]
check "run JSON block size" [ "$(json options.block_size)" = $S ]
mv O.npy O_run.npy

ok "run without --json" run $QKV --out O.npy --block-size $S
check "run prints the sparsity" grep -q 'sparsity' out.txt
check "run is deterministic" "$TOOL" compare O.npy O_run.npy 0

# --- with every block forced, run equals dense attention ------------------
"$TOOL" dense q.npy k.npy v.npy 1 0 O_ref.npy L_ref.npy || exit 99
ok "run, all blocks forced" run $QKV --out O.npy --lse L.npy --block-size $S --local 100 --json
check "all forced: sparsity 0" is_true 'x == 0' "$(json sparsity)"
check "all forced: out = dense attention" "$TOOL" compare O.npy O_ref.npy 1e-5
check "all forced: lse = dense logsumexp" "$TOOL" compare L.npy L_ref.npy 1e-5
check "DashAttention's default differs from dense" sh -c "! '$TOOL' compare O_run.npy O_ref.npy 1e-5 >/dev/null"

"$TOOL" dense q.npy k.npy v.npy 0 0.3 O_ref.npy L_ref.npy || exit 99
ok "run --no-causal --scale, all forced" \
    run $QKV --out O.npy --lse L.npy --block-size $S --no-causal --sink 100 --scale 0.3
check "non-causal, scale 0.3: out = dense" "$TOOL" compare O.npy O_ref.npy 1e-5
check "non-causal, scale 0.3: lse = dense" "$TOOL" compare L.npy L_ref.npy 1e-5

"$TOOL" dense q100.npy k.npy v.npy 1 0 O_ref.npy L_ref.npy || exit 99
ok "run, 100 queries on 256 keys, all forced" \
    run --q q100.npy --k k.npy --v v.npy --out O.npy --block-size $S --local 100
check "chunked prefill: out = bottom-right causal dense" "$TOOL" compare O.npy O_ref.npy 1e-5

# --- grad -------------------------------------------------------------------
"$TOOL" densegrad q.npy k.npy v.npy do.npy 1 0 DQ_ref.npy DK_ref.npy DV_ref.npy || exit 99
ok "run, all blocks forced (grad's reference)" run $QKV --out O.npy --block-size $S --local 100
ok "grad, all blocks forced" grad $QKV --dout do.npy --dq DQ.npy --dk DK.npy --dv DV.npy \
    --out O_grad.npy --block-size $S --local 100 --json
check "grad JSON has a backward time" is_true 'x >= 0' "$(json ms_backward)"
check "grad: dq = dense" "$TOOL" compare DQ.npy DQ_ref.npy 1e-5
check "grad: dk = dense" "$TOOL" compare DK.npy DK_ref.npy 1e-5
check "grad: dv = dense" "$TOOL" compare DV.npy DV_ref.npy 1e-5
check "grad's forward = run's" "$TOOL" compare O_grad.npy O.npy 0

ok "grad, defaults" grad $QKV --dout do.npy --dq DQ.npy --dk DK.npy --dv DV.npy \
    --out O_grad.npy --block-size $S
check "grad's forward = run's (sparse)" "$TOOL" compare O_grad.npy O_run.npy 0

# --- options reach the library --------------------------------------------
ok "run --selection topk --topk 1" run $QKV --out O.npy --block-size $S --selection topk \
    --topk 1 --json
check "top-1 of 8 blocks skips pairs" is_true 'x > 0 && x < 1' "$(json sparsity)"
check "JSON reports topk" [ "$(json options.selection)/$(json options.topk)" = topk/1 ]
ok "run --alpha 2 --group-select shared" run $QKV --out O.npy --block-size $S --alpha 2 \
    --group-select shared --json
check "JSON reports alpha 2, shared" [ "$(json options.alpha)/$(json options.group_select)" = 2/shared ]

# --- the released function and its options ---------------------------------
"$TOOL" random h.npy 6 1.5 2 16 && "$TOOL" random h3.npy 6 1.5 3 16 &&
    "$TOOL" random zero_h.npy 6 0 2 16 || exit 99
ok "run, defaults, JSON" run $QKV --out O.npy --block-size $S --json
check "the default is the released function" \
    [ "$(json options.group_select)/$(json options.n_sink)/$(json options.n_local)/$(json options.prior)/$(json threshold_method)" = mean/0/1/log/sort-1.5 ]
ok "run --block-summary" run $QKV --out O_h.npy --block-size $S --block-summary h.npy --json
check "JSON reports the learned summaries" [ "$(json options.block_summary)" = true ]
check "learned summaries change the result" \
    sh -c "! '$TOOL' compare O_h.npy O_run.npy 1e-5 >/dev/null"
ok "run, h = 0" run $QKV --out O.npy --block-size $S --block-summary zero_h.npy
check "h = 0 is mean pooling" "$TOOL" compare O.npy O_run.npy 1e-6
ok "run --threshold halley:3" run $QKV --out O.npy --block-size $S --threshold halley:3 --json
check "JSON reports 3 Halley steps" \
    [ "$(json threshold_method)/$(json options.threshold_iterations)" = halley/3 ]
ok "run --prior flat --prior-sigma 0.5" run $QKV --out O.npy --block-size $S --prior flat \
    --prior-sigma 0.5 --json
check "JSON reports the flat prior" [ "$(json options.prior)/$(json options.prior_sigma)" = flat/0.5 ]
check "the flat prior changes the result" sh -c "! '$TOOL' compare O.npy O_run.npy 1e-5 >/dev/null"
ok "run --group-select per-head" run $QKV --out O.npy --block-size $S --group-select per-head \
    --json
check "JSON reports per-head" [ "$(json options.group_select)" = per-head ]
ok "grad --block-summary --dh" grad $QKV --dout do.npy --dq DQ.npy --dk DK.npy --dv DV.npy \
    --block-summary h.npy --dh DH.npy --block-size $S
check "dh is nonzero" sh -c "! '$TOOL' compare DH.npy zero_h.npy 0 >/dev/null"
ok "grad --dh, all blocks forced" grad $QKV --dout do.npy --dq DQ.npy --dk DK.npy --dv DV.npy \
    --block-summary h.npy --dh DH.npy --block-size $S --local 100
check "all blocks forced: dh = 0" "$TOOL" compare DH.npy zero_h.npy 0
check "all blocks forced: dq = dense" "$TOOL" compare DQ.npy DQ_ref.npy 1e-5
fail_with 2 "must be float32 [Hkv, D]" run $QKV --out O.npy --block-size $S --block-summary h3.npy
fail_with 2 "must be float32 [Hkv, D]" run $QKV --out O.npy --block-summary q.npy
fail_with 2 "--prior-sigma must be greater than 0" run $QKV --out O.npy --prior flat --prior-sigma 0
fail_with 2 "--prior-sigma must be at least 0" run $QKV --out O.npy --prior flat --prior-sigma -1
fail_with 2 "applies only with --prior flat" run $QKV --out O.npy --prior-sigma 2
fail_with 2 "--prior must be log or flat" run $QKV --out O.npy --prior cosine
fail_with 2 "must be in [1, 64]" run $QKV --out O.npy --threshold halley:0
fail_with 2 "not an integer" run $QKV --out O.npy --threshold halley:
fail_with 2 "--threshold must be exact or halley:N" run $QKV --out O.npy --threshold newton
fail_with 2 "needs entmax selection with --alpha 1.5" run $QKV --out O.npy --threshold halley:3 --alpha 2
fail_with 2 "--group-select must be mean, per-head or shared" run $QKV --out O.npy --group-select median
fail_with 2 "--dh needs --block-summary" grad $QKV --dout do.npy --dq DQ.npy --dk DK.npy \
    --dv DV.npy --dh DH.npy --out O.npy
check "a failed grad writes no DH.npy" sh -c "rm -f DH.npy; '$CLI' grad $QKV --dout do.npy \
    --dq DQ.npy --dk DK.npy --dv DV.npy --dh DH.npy --block-summary h3.npy 2>/dev/null; \
    [ ! -e DH.npy ]"

# --- reduced precision ------------------------------------------------------
for dt in bf16 f16; do
    ok "run --dtype $dt" run $QKV --out O.npy --block-size $S --dtype $dt --json
    check "JSON reports $dt" [ "$(json dtype)" = $dt ]
    check "$dt output close to f32" "$TOOL" compare O.npy O_run.npy 1e-2
done

# --- bench ------------------------------------------------------------------
TINY="--lengths 128,256 --heads-q 2 --heads-kv 1 --head-dim 16 --block-size 32 --repeat 1"
ok "bench, tiny" bench $TINY
check "bench prints a table" grep -q 'dense/dash' out.txt
check "bench prints a row per length" [ "$(grep -c '^ *[0-9]' out.txt)" -eq 2 ]
ok "bench --json" bench $TINY --json
check "bench JSON lists each length" [ "$(json results.1.n)" = 256 ]
check "bench sparsity in [0, 1)" is_true 'x >= 0 && x < 1' "$(json results.1.sparsity)"
# (stderr may note that a 1-core machine has nothing to sweep)
check "bench --threads-sweep" sh -c "'$CLI' bench $TINY --threads-sweep >out.txt 2>/dev/null"
check "bench --threads-sweep compares with 1 thread" grep -q 'vs 1 thread' out.txt

# --- thread counts: bounded, never a crash or an exit inside libgomp -------
# (1024 threads take minutes under valgrind, which runs one at a time.)
if [ -z "${DASHATTN_VALGRIND:-}" ]; then
    OMP_NUM_THREADS=100000
    export OMP_NUM_THREADS
    ok "OMP_NUM_THREADS=100000" run $QKV --out O.npy --block-size $S --backend cpu --json
    check "OMP_NUM_THREADS=100000 is clamped to 1024 threads" [ "$(json threads)" = 1024 ]
    check "OMP_NUM_THREADS=100000: same result" "$TOOL" compare O.npy O_run.npy 0
    unset OMP_NUM_THREADS
fi
fail_with 2 "--threads must be in [0, 1024]" run $QKV --out O.npy --threads 100000

# --- bad input: one line on stderr, status 2, no output file ----------------
dd if=q.npy of=trunc.npy bs=1000 count=1 2>/dev/null
dd if=q.npy of=trunchead.npy bs=100 count=1 2>/dev/null
printf 'not a numpy file' >magic.npy
"$TOOL" raw f8.npy "'<f8'" False "(1, 4, 256, 16)" 131072 &&
    "$TOOL" raw i4.npy "'<i4'" False "(1, 4, 256, 16)" 65536 &&
    "$TOOL" raw be.npy "'>f4'" False "(1, 4, 256, 16)" 65536 &&
    "$TOOL" raw fortran.npy "'<f4'" True "(1, 4, 256, 16)" 65536 &&
    "$TOOL" raw short.npy "'<f4'" False "(1, 4, 256, 16)" 65000 &&
    "$TOOL" random q3d.npy 1 1 4 256 16 &&
    "$TOOL" random q3h.npy 1 1 1 3 256 16 &&
    "$TOOL" random q8d.npy 1 1 1 4 256 8 &&
    "$TOOL" random q2b.npy 1 1 2 4 256 16 &&
    "$TOOL" random q300.npy 1 1 1 4 300 16 &&
    "$TOOL" random v128.npy 1 1 1 2 128 16 || exit 99
O="--out O.npy"

fail_with 2 "trunc.npy: truncated data" run --q trunc.npy --k k.npy --v v.npy $O
fail_with 2 "trunchead.npy: header length" run --q trunchead.npy --k k.npy --v v.npy $O
fail_with 2 "short.npy: truncated data: expected 65536 bytes, found 65000" \
    run --q short.npy --k k.npy --v v.npy $O
fail_with 2 "magic.npy: not a .npy file" run --q magic.npy --k k.npy --v v.npy $O
fail_with 2 "'<f8'" run --q f8.npy --k k.npy --v v.npy $O
fail_with 2 "'<i4'" run --q q.npy --k i4.npy --v v.npy $O
fail_with 2 "big-endian" run --q q.npy --k k.npy --v be.npy $O
fail_with 2 "Fortran" run --q fortran.npy --k k.npy --v v.npy $O
fail_with 2 "4-D" run --q q3d.npy --k k.npy --v v.npy $O
fail_with 2 "not a multiple" run --q q3h.npy --k k.npy --v v.npy $O
fail_with 2 "head_dim" run --q q8d.npy --k k.npy --v v.npy $O
fail_with 2 "batch" run --q q2b.npy --k k.npy --v v.npy $O
fail_with 2 "differ in shape" run --q q.npy --k k.npy --v v128.npy $O
fail_with 2 "no more queries than keys" run --q q300.npy --k k.npy --v v.npy $O
fail_with 2 "cannot open" run --q missing.npy --k k.npy --v v.npy $O
fail_with 2 "missing --q" run --k k.npy --v v.npy $O
fail_with 2 "missing --out" run $QKV
fail_with 2 "missing --dv" grad $QKV --dout do.npy --dq DQ.npy --dk DK.npy $O
fail_with 2 "must have the shape" grad $QKV --dout q100.npy --dq DQ.npy --dk DK.npy --dv DV.npy $O
fail_with 2 "--alpha must be in [1, 2]" run $QKV $O --alpha 3
fail_with 2 "--alpha must be in [1, 2]" run $QKV $O --alpha 0.5
fail_with 2 "not a finite number" run $QKV $O --alpha abc
fail_with 2 "not a finite number" run $QKV $O --alpha nan
fail_with 2 "--block-size must be" run $QKV $O --block-size 0
fail_with 2 "not an integer" run $QKV $O --local two
fail_with 2 "not an integer" run $QKV $O --block-size 64k
fail_with 2 "--local must be at least 1" run $QKV $O --local 0
fail_with 2 "needs --topk" run $QKV $O --selection topk
fail_with 2 "--selection must be" run $QKV $O --selection random
fail_with 2 "--dtype must be" run $QKV $O --dtype f64
fail_with 2 "needs a value" run $QKV $O --alpha
fail_with 2 "needs a value" run --q --k k.npy --v v.npy $O
fail_with 2 "unknown option '--bogus'" run $QKV $O --bogus
fail_with 2 "unexpected argument" run $QKV $O stray
fail_with 2 "unknown command 'frobnicate'" frobnicate
fail_with 2 "unknown option '--frobnicate'" --frobnicate
fail_with 2 "unknown option" bench --lengths 128 --bogus
fail_with 2 "--lengths" bench --lengths 128,,256
fail_with 2 "multiple of --heads-kv" bench --heads-q 3 --heads-kv 2
fail_with 2 "O.npy" run $QKV --out no/such/dir/O.npy
# A backend that does not exist is a library failure: status 1.
fail_with 1 "nosuch" run $QKV $O --backend nosuch
# DASHATTN_BACKEND chooses for "auto" only; --backend wins.
DASHATTN_BACKEND=nosuch
export DASHATTN_BACKEND
fail_with 1 "nosuch" run $QKV $O
ok "DASHATTN_BACKEND=nosuch, --backend cpu" run $QKV $O --backend cpu
unset DASHATTN_BACKEND

# Running out of memory while reading an input is a failure (1), not bad
# input (2): allocations above 16 MB fail while a 32 MB q is read.
FAILMALLOC=$abs_top_builddir/tests/fault/.libs/failmalloc.so
"$TOOL" random big.npy 7 1 1 1 2097152 4 || exit 99
# (Not under valgrind, which replaces malloc itself.)
if [ -z "${DASHATTN_VALGRIND:-}" ] && [ -f "$FAILMALLOC" ] &&
    LD_PRELOAD=$FAILMALLOC "$CLI" --version >/dev/null 2>&1; then
    LD_PRELOAD=$FAILMALLOC
    DASHATTN_FAILMALLOC_ABOVE=16000000
    export LD_PRELOAD DASHATTN_FAILMALLOC_ABOVE
    fail_with 1 "big.npy: out of memory" run --q big.npy --k k.npy --v v.npy $O
    unset LD_PRELOAD DASHATTN_FAILMALLOC_ABOVE
else
    echo "test_cli.sh: out of memory while reading not tested (no LD_PRELOAD shim here)"
fi
rm -f big.npy

# --- output files: a user's file is never destroyed -------------------------
# same_bytes A B: the files are identical.
same_bytes() {
    cmp -s "$1" "$2"
}
cp q.npy qq.npy
fail_with 2 "--out qq.npy is the input --q qq.npy" \
    run --q qq.npy --k k.npy --v v.npy --out qq.npy --lse /nonexistent/l.npy
check "an input named as --out is intact" same_bytes qq.npy q.npy
fail_with 2 "directory /nonexistent does not exist" run $QKV --out O.npy --lse /nonexistent/l.npy
ln qq.npy qq_link.npy
fail_with 2 "is the input --q" run --q qq.npy --k k.npy --v v.npy --out qq_link.npy
check "an input's hard link named as --out is intact" same_bytes qq_link.npy q.npy
rm -f x.npy
fail_with 2 "are the same file" run $QKV --out x.npy --lse x.npy
check "--out x --lse x writes nothing" [ ! -e x.npy ]
fail_with 2 "are the same file" grad $QKV --dout do.npy --dq DQ.npy --dk DQ.npy --dv DV.npy
mkfifo fifo.npy
fail_with 2 "not a regular file" run $QKV --out fifo.npy
check "a FIFO as --out stays a FIFO" [ -p fifo.npy ]
# A device node of our own (never one in /dev: a regression run as root
# would replace it), where we may create one: the one of /dev/full.
if mknod full.npy c 1 7 2>/dev/null; then
    fail_with 2 "not a regular file" run $QKV --out full.npy
    check "a device node as --out stays a device node" [ -c full.npy ]
fi
mkdir dir.npy
fail_with 2 "not a regular file" run $QKV --out dir.npy
ln -s nowhere/O.npy dangling.npy
fail_with 2 "symbolic link to nothing" run $QKV --out dangling.npy

# A symlinked --out replaces the file it points to; the link stays.
cp q.npy target.npy
ln -s target.npy link.npy
ok "run --out LINK" run $QKV --out link.npy --block-size $S
check "the link stays a link" [ -L link.npy ]
check "the file it points to holds the result" same_bytes target.npy O_run.npy

# Modes: a new file gets 0666 less the umask, a replaced file keeps its mode.
rm -f O_mode.npy
(umask 027 && "$CLI" run $QKV --out O_mode.npy --block-size $S >/dev/null 2>&1)
check "new output has mode 640 under umask 027" [ "$(stat -c %a O_mode.npy)" = 640 ]
chmod 604 O_mode.npy
ok "run replaces an output" run $QKV --out O_mode.npy --block-size $S
check "a replaced output keeps mode 604" [ "$(stat -c %a O_mode.npy)" = 604 ]

# A write that fails late (here: the file size limit, with SIGXFSZ ignored,
# fails dk, the fourth file: 33 kB where out, lse and dq take 8 kB or less;
# 24 blocks are 12 or 24 kB, as the shell counts) leaves every existing
# output as it was and no temporary file behind.
"$TOOL" random q32.npy 6 1 1 4 32 16 || exit 99
for f in O_keep L_keep DQ_keep DK_keep DV_keep; do printf '%s\n' "$f" >$f.npy; done
checks=$((checks + 1))
(
    trap '' XFSZ
    ulimit -f 24
    exec "$CLI" grad --q q32.npy --k k.npy --v v.npy --dout q32.npy --out O_keep.npy \
        --lse L_keep.npy --dq DQ_keep.npy --dk DK_keep.npy --dv DV_keep.npy --block-size $S
) >out.txt 2>err.txt
status=$?
if [ "$status" -eq 0 ] || ! grep -q 'DK_keep.npy' err.txt; then
    failures=$((failures + 1))
    echo "FAIL: grad past the file size limit: exit status $status; stderr:"
    cat err.txt
fi
for f in O_keep L_keep DQ_keep DK_keep DV_keep; do
    check "a failed grad leaves $f.npy as it was" [ "$(cat $f.npy)" = "$f" ]
done
check "a failed grad leaves no temporary file" [ -z "$(ls -A | grep '^\..*_keep\.npy\.')" ]

echo "test_cli.sh: $checks checks, $failures failed"
[ "$failures" -eq 0 ]
