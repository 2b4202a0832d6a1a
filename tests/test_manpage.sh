#!/bin/sh
# SPDX-License-Identifier: MIT
# The manual page cli/dashattn.1 and the tool's own help agree: the same
# commands; for each command, every option its help names is in its section
# of the page (or among the common options) and every option of its section
# is in its help; the common options are the same set; every environment
# variable the help names is under ENVIRONMENT; and the page carries the
# tool's version and the plugin directory of the current plugin ABI.
# `man --warnings` (where man is installed) finds no formatting problem.

if [ -z "${DASHATTN_CLI:-}" ] || [ -z "${abs_top_srcdir:-}" ]; then
    echo "test_manpage.sh: DASHATTN_CLI or abs_top_srcdir not set; run it through make check"
    exit 77
fi
CLI=$DASHATTN_CLI
PAGE=$abs_top_srcdir/cli/dashattn.1
[ -f "$PAGE" ] || {
    echo "test_manpage.sh: $PAGE is missing"
    exit 99
}
tmp=$(mktemp -d 2>/dev/null) || {
    tmp=${TMPDIR:-/tmp}/test_manpage.$$
    mkdir "$tmp" || exit 99
}
trap 'rm -rf "$tmp"' 0
trap 'exit 99' INT TERM

failures=0
fail() {
    failures=$((failures + 1))
    echo "FAIL: $*"
}
# The page as text: roff's escaped hyphens and font changes undone.
sed -e 's/\\-/-/g' -e 's/\\f[BIRP]//g' -e 's/\\(..//g' "$PAGE" >"$tmp/page"
options() { grep -o -- '--[a-z][a-z0-9-]*' | sort -u; }
# section START: the page's lines from the header line START to the next
# header of the same or a higher level.
section() {
    awk -v start="$1" '
        $0 == start { on = 1; next }
        on && (/^\.SH/ || (start ~ /^\.SS/ && /^\.SS/)) { exit }
        on { print }' "$tmp/page"
}
# missing WHAT A B: report the names in file A that file B lacks.
missing() {
    comm -23 "$2" "$3" >"$tmp/missing"
    [ -s "$tmp/missing" ] && fail "$1: $(tr '\n' ' ' <"$tmp/missing")"
}

"$CLI" --help >"$tmp/help" || fail "dashattn --help failed"
# The commands: lines "  NAME  description" of --help's command list.
awk '/^commands:/ { on = 1; next } on && /^$/ { exit } on && /^  [a-z]/ { print $1 }' \
    "$tmp/help" | sort -u >"$tmp/commands"
[ -s "$tmp/commands" ] || fail "no commands found in dashattn --help"
sed -n 's/^\.SS "dashattn \([a-z]*\)"$/\1/p' "$tmp/page" | sort -u >"$tmp/page_commands"
missing "commands of --help that the page lacks" "$tmp/commands" "$tmp/page_commands"
missing "commands on the page that --help lacks" "$tmp/page_commands" "$tmp/commands"

section '.SH "PROBLEM AND BACKEND OPTIONS"' | options >"$tmp/page_common"
[ -s "$tmp/page_common" ] || fail "no PROBLEM AND BACKEND OPTIONS on the page"
: >"$tmp/help_common"
: >"$tmp/help_all"
while read -r c; do
    [ "$c" = help ] && continue
    "$CLI" help "$c" >"$tmp/help_$c" || fail "dashattn help $c failed"
    cat "$tmp/help_$c" >>"$tmp/help_all"
    # The command's own part, then the common options it appends.
    sed '/^problem and backend options:$/,$d' "$tmp/help_$c" | options >"$tmp/own"
    sed -n '/^problem and backend options:$/,$p' "$tmp/help_$c" | options >"$tmp/common"
    section ".SS \"dashattn $c\"" | options >"$tmp/page_own"
    if [ -s "$tmp/common" ]; then
        if [ -s "$tmp/help_common" ] && ! cmp -s "$tmp/common" "$tmp/help_common"; then
            fail "$c lists other common options than the other commands"
        fi
        cp "$tmp/common" "$tmp/help_common"
        sort -u "$tmp/page_own" "$tmp/page_common" >"$tmp/page_has"
        sort -u "$tmp/own" "$tmp/common" >"$tmp/help_has"
    else
        cp "$tmp/page_own" "$tmp/page_has"
        cp "$tmp/own" "$tmp/help_has"
    fi
    missing "options of 'dashattn help $c' not on the page" "$tmp/own" "$tmp/page_has"
    missing "options in the page's $c section not in 'dashattn help $c'" "$tmp/page_own" \
        "$tmp/help_has"
done <"$tmp/commands"
missing "common options of the help not on the page" "$tmp/help_common" "$tmp/page_common"
missing "common options on the page not in the help" "$tmp/page_common" "$tmp/help_common"

for opt in --help --version; do
    grep -q -- "$opt" "$tmp/page" || fail "the page does not mention $opt"
done
cat "$tmp/help" >>"$tmp/help_all"
grep -o 'DASHATTN_[A-Z_]*' "$tmp/help_all" | sort -u >"$tmp/env"
section '.SH ENVIRONMENT' | grep -o 'DASHATTN_[A-Z_]*' | sort -u >"$tmp/page_env"
missing "environment variables of the help not under ENVIRONMENT" "$tmp/env" "$tmp/page_env"

version=$("$CLI" --version | sed -n 's/^dashattn \([^ ]*\) .*/\1/p')
grep -q "^\.TH DASHATTN 1 \"[^\"]*\" \"dashattn $version\"" "$tmp/page" ||
    fail "the page's .TH line does not say dashattn $version"
abi=$(sed -n 's/^#define DASHATTN_BACKEND_ABI_VERSION \([0-9]*\)u*$/\1/p' \
    "$abs_top_srcdir/include/dashattn/backend.h")
section '.SH FILES' | grep -q "/dashattn/$abi/dashattn-" ||
    fail "FILES does not name the plugin directory of ABI $abi"

if command -v man >/dev/null 2>&1 && man --version >/dev/null 2>&1; then
    warnings=$(LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -E UTF-8 -l "$PAGE" 2>&1 >/dev/null)
    [ -z "$warnings" ] || fail "man --warnings: $warnings"
fi

if [ "$failures" -ne 0 ]; then
    echo "test_manpage.sh: $failures problems"
    exit 1
fi
echo "test_manpage.sh: PASS ($(wc -l <"$tmp/commands" | tr -d ' ') commands)"
exit 0
