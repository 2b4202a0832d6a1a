#!/bin/sh
# SPDX-License-Identifier: MIT
# The GPU plugins built from backends/gpu (cuda, hip) load wherever they are
# built. Without their vendor's device, `dashattn info` lists each as skipped
# with the plugin's own reason (no device, no driver), and a run on it fails
# with status 1 and one line, writing nothing. With a device, info lists it
# as usable and says which kernels it runs. Skips (77) when neither plugin is
# built.

if [ -z "${DASHATTN_CLI:-}" ] || [ -z "${abs_top_builddir:-}" ]; then
    echo "test_gpu_plugins.sh: DASHATTN_CLI or abs_top_builddir not set; run it through make check"
    exit 77
fi
CLI=$DASHATTN_CLI
TOOL=$abs_top_builddir/tests/npy_tool
tmp=$(mktemp -d 2>/dev/null) || exit 99
trap 'rm -rf "$tmp"' 0
cd "$tmp" || exit 99

checks=0
failures=0
check() {
    checks=$((checks + 1))
    desc=$1
    shift
    "$@" || {
        failures=$((failures + 1))
        echo "FAIL: $desc"
    }
}

"$TOOL" random q.npy 1 1 1 2 64 32 && "$TOOL" random k.npy 2 1 1 1 64 32 &&
    "$TOOL" random v.npy 3 1 1 1 64 32 || exit 99
"$CLI" info >info.txt 2>&1 || {
    echo "dashattn info failed:"
    cat info.txt
    exit 1
}

built=0
for name in cuda hip; do
    so=$abs_top_builddir/backends/$name/.libs/dashattn-$name.so
    [ -f "$so" ] || continue
    built=$((built + 1))
    line=$(grep -E "^  $name " info.txt | head -n 1)
    echo "$name: $line"
    check "$name: info lists the plugin" [ -n "$line" ]
    case $line in
    *" skipped: "*)
        check "$name: loaded, refused only for want of a device or driver" \
            sh -c "printf '%s\n' \"\$1\" | grep -Eq 'no (usable [A-Z]+ driver or device|[A-Z]+ device)'" \
            sh "$line"
        "$CLI" run --q q.npy --k k.npy --v v.npy --out o.npy --block-size 16 --backend "$name" \
            >out.txt 2>err.txt
        status=$?
        check "$name: a run exits 1 (got $status)" [ "$status" -eq 1 ]
        check "$name: a run prints one line" [ "$(wc -l <err.txt | tr -d ' ')" -eq 1 ]
        check "$name: the line says why" grep -q "$name" err.txt
        check "$name: nothing on stdout" [ ! -s out.txt ]
        check "$name: no output file" [ ! -e o.npy ]
        ;;
    *" usable ("*)
        # The device line the plugin describes names its kernels.
        check "$name: info names the kernels" grep -q "kernels: " info.txt
        ;;
    *)
        check "$name: listed as usable or skipped" false
        ;;
    esac
done
if [ "$built" -eq 0 ]; then
    echo "no GPU plugin built from backends/gpu: skipped"
    exit 77
fi
echo "$checks checks, $failures failures"
[ "$failures" -eq 0 ]
