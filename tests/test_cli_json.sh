#!/bin/sh
# SPDX-License-Identifier: MIT
# `dashattn info --json` and the members every --json of the tool shares:
# the document parses (strictly: tests/npy_tool json-get), opens with
# schema_version and library_version, and carries what the text report says
# about each backend, here the plugin loader's test plugins (one without a
# device, one of another ABI, one usable), with skip reasons and paths.
# A failing default backend still gives a whole document.

if [ -z "${DASHATTN_CLI:-}" ] || [ -z "${abs_top_builddir:-}" ] || [ -z "${abs_top_srcdir:-}" ]; then
    echo "test_cli_json.sh: DASHATTN_CLI, abs_top_builddir or abs_top_srcdir not set; run it through make check"
    exit 77
fi
CLI=$DASHATTN_CLI
TOOL=$abs_top_builddir/tests/npy_tool
PLUGINS=$abs_top_builddir/tests/plugins/.libs
for exe in "$CLI" "$TOOL"; do
    if [ ! -x "$exe" ]; then
        echo "test_cli_json.sh: $exe is missing (build it first)"
        exit 99
    fi
done
[ -f "$PLUGINS/dashattn-faildev.so" ] || {
    echo "test_cli_json.sh: no test plugins in $PLUGINS (make check builds them)"
    exit 99
}

tmp=$(mktemp -d 2>/dev/null) || {
    tmp=${TMPDIR:-/tmp}/test_cli_json.$$
    mkdir "$tmp" || exit 99
}
trap 'rm -rf "$tmp"' 0
trap 'exit 99' INT TERM
cd "$tmp" || exit 99

checks=0
failures=0
fail() {
    failures=$((failures + 1))
    echo "FAIL: $*"
}
# is KEY.PATH WANT: the value at KEY.PATH of out.json is WANT.
is() {
    checks=$((checks + 1))
    got=$("$TOOL" json-get "$1" <out.json 2>&1)
    [ "$got" = "$2" ] || fail "$1 is '$got', want '$2'"
}
# run_json ARGS...: the CLI prints one JSON document that parses; exit 0.
run_json() {
    checks=$((checks + 1))
    "$CLI" "$@" >out.json 2>err.txt
    status=$?
    [ "$status" -eq 0 ] || fail "dashattn $*: exit status $status: $(cat err.txt)"
    [ -s err.txt ] && fail "dashattn $*: stderr: $(cat err.txt)"
    "$TOOL" json-get schema_version <out.json >/dev/null || fail "dashattn $*: invalid JSON"
}
# index_of NAME: the index of backend NAME in out.json ("" if absent).
index_of() {
    i=0
    while name=$("$TOOL" json-get "backends.$i.name" <out.json 2>/dev/null); do
        if [ "$name" = "$1" ]; then
            echo "$i"
            return
        fi
        i=$((i + 1))
    done
}

library=$("$CLI" --version | sed -n 's/.*(library \(.*\))$/\1/p')
[ -n "$library" ] || {
    echo "test_cli_json.sh: no library version in 'dashattn --version'"
    exit 99
}

# Nothing but the CPU backend: no plugin directory holds a plugin.
unset DASHATTN_BACKEND
DASHATTN_BACKEND_PATH=
DASHATTN_PLUGIN_DIR=$tmp/none
export DASHATTN_BACKEND_PATH DASHATTN_PLUGIN_DIR
run_json info --json
is schema_version 1
is library_version "$library"
is command info
is plugin_abi_version "$(sed -n 's/^#define DASHATTN_BACKEND_ABI_VERSION \([0-9]*\)u*$/\1/p' \
    "$abs_top_srcdir/include/dashattn/backend.h")"
is environment.DASHATTN_BACKEND null
is environment.DASHATTN_PLUGIN_DIR "$tmp/none"
is plugin_dirs.0 "$tmp/none"
is backends.0.name cpu
is backends.0.usable true
is backends.0.builtin true
is backends.0.skip_reason null
is default.backend cpu
checks=$((checks + 1))
"$TOOL" json-get backends.1.name <out.json >/dev/null 2>&1 && fail "a backend besides cpu listed"
checks=$((checks + 1))
"$TOOL" json-get backends.0.devices.0 <out.json >/dev/null || fail "cpu has no device"

# The loader's test plugins, and a search path that needs escaping.
DASHATTN_BACKEND_PATH="$tmp/a\"b\\c:$PLUGINS"
DASHATTN_PLUGIN_DIR=$tmp/none
run_json info --json
is plugin_dirs.0 "$tmp/a\\\"b\\\\c"
is plugin_dirs.1 "$PLUGINS"
is plugin_dirs.2 "$tmp/none"
n=$(index_of nodevice)
if [ -n "$n" ]; then
    is "backends.$n.usable" false
    is "backends.$n.path" "$PLUGINS/dashattn-nodevice.so"
    is "backends.$n.skip_reason" "no test device present"
else
    fail "nodevice not listed"
fi
n=$(index_of abitest)
if [ -n "$n" ]; then
    is "backends.$n.usable" false
    checks=$((checks + 1))
    "$TOOL" json-get "backends.$n.skip_reason" <out.json | grep -q 'plugin ABI version' ||
        fail "abitest's skip reason does not name the ABI"
else
    fail "abitest not listed"
fi
n=$(index_of faildev)
if [ -n "$n" ]; then
    is "backends.$n.usable" true
    is "backends.$n.priority" 2
    is "backends.$n.auto" true
    is "backends.$n.skip_reason" null
    is "backends.$n.path" "$PLUGINS/dashattn-faildev.so"
else
    fail "faildev not listed"
fi
is default.backend faildev

# A default backend that cannot start: exit 1, one line on stderr, and the
# document still whole, with the error in it.
checks=$((checks + 1))
DASHATTN_BACKEND=nosuch "$CLI" info --json >out.json 2>err.txt
status=$?
[ "$status" -eq 1 ] || fail "DASHATTN_BACKEND=nosuch info --json: exit status $status"
[ "$(wc -l <err.txt | tr -d ' ')" -eq 1 ] || fail "DASHATTN_BACKEND=nosuch: stderr: $(cat err.txt)"
is default.backend null
is environment.DASHATTN_BACKEND nosuch
checks=$((checks + 1))
"$TOOL" json-get default.error <out.json | grep -q nosuch || fail "default.error does not name nosuch"

checks=$((checks + 1))
"$CLI" info --jsn >out.txt 2>err.txt
[ $? -eq 2 ] && [ ! -s out.txt ] || fail "info --jsn: not a usage error"

# The other commands' JSON carries the same two versions.
DASHATTN_BACKEND_PATH=
"$TOOL" random q.npy 1 1 1 2 64 8 && "$TOOL" random k.npy 2 1 1 1 64 8 &&
    "$TOOL" random v.npy 3 1 1 1 64 8 && "$TOOL" random do.npy 4 1 1 2 64 8 || exit 99
run_json run --q q.npy --k k.npy --v v.npy --out o.npy --block-size 16 --json
is schema_version 1
is library_version "$library"
is command run
run_json grad --q q.npy --k k.npy --v v.npy --dout do.npy --dq dq.npy --dk dk.npy --dv dv.npy \
    --block-size 16 --json
is schema_version 1
is command grad
run_json bench --lengths 64 --heads-q 2 --heads-kv 1 --head-dim 8 --block-size 16 --repeat 1 \
    --threads 1 --json
is schema_version 1
is library_version "$library"
is command bench

if [ "$failures" -ne 0 ]; then
    echo "test_cli_json.sh: $failures of $checks checks failed"
    exit 1
fi
echo "test_cli_json.sh: all $checks checks passed"
exit 0
