#!/bin/sh
# SPDX-License-Identifier: MIT
# The library's binary interface: the functions include/dashattn.h declares
# (DASHATTN_API), the names lib/libdashattn.map versions, the names the built
# libdashattn.so exports and, in a git checkout, debian/libdashattn1.symbols
# are the same set; every export carries the map's version node; the soname
# follows DASHATTN_LT_VERSION and the node's number follows the soname.
set -u

me=test_symbols
skip() { echo "$me: SKIP: $*"; exit 77; }
fail() { echo "$me: FAIL: $*"; exit 1; }

if [ -z "${abs_top_builddir:-}" ] || [ -z "${abs_top_srcdir:-}" ]; then
    skip "abs_top_builddir/abs_top_srcdir not set (run through make check or ctest)"
fi
command -v readelf >/dev/null 2>&1 || skip "readelf not found"
lib=$abs_top_builddir/.libs/libdashattn.so
[ -f "$lib" ] || skip "no $lib (not an ELF shared build?)"
makefile_var() { sed -n "s/^$1 = //p" "$abs_top_builddir/Makefile" | head -n 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/dashattn-symbols.XXXXXX") || fail "mktemp failed"
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' HUP INT TERM

# The header, as one line, so that a declaration may span lines.
tr '\n' ' ' <"$abs_top_srcdir/include/dashattn.h" | grep -o 'DASHATTN_API[^;(]*(' |
    sed -n 's/.*[^a-z0-9_]\(dashattn_[a-z0-9_]*\) *($/\1/p' | sort -u >"$tmp/header"
map=$abs_top_srcdir/lib/libdashattn.map
sed -e 's,/\*.*\*/,,' -e '/\/\*/,/\*\//d' "$map" | tr -d ' \t' |
    sed -n 's/^\(dashattn_[a-z0-9_]*\);$/\1/p' | sort >"$tmp/map"
[ -s "$tmp/header" ] || fail "no DASHATTN_API declaration found in dashattn.h"
if ! diff -u "$tmp/header" "$tmp/map" >"$tmp/diff"; then
    cat "$tmp/diff"
    fail "dashattn.h (-) and lib/libdashattn.map (+) disagree"
fi
dups=$(sort "$tmp/map" | uniq -d)
[ -z "$dups" ] || fail "listed twice in the map: $dups"

# Every defined dynamic symbol, name@@version (or bare name).
readelf --dyn-syms -W "$lib" | awk '$1 ~ /^[0-9]+:$/ && $7 != "UND" && NF >= 8 { print $8 }' |
    grep -v -e '^_init$' -e '^_fini$' -e '^_edata$' -e '^_end$' -e '^__bss_start$' -e '^__' |
    sort >"$tmp/exported"
nodes=$(sed -n 's/^\(DASHATTN_[0-9.]*\) *{.*/\1/p' "$map")
[ -n "$nodes" ] || fail "no DASHATTN_<n> version node in the map"
if [ "$(makefile_var LD_VERSION_SCRIPT)" = yes ]; then
    # The node names themselves appear as absolute symbols.
    for n in $nodes; do
        grep -qx "$n@@$n" "$tmp/exported" || grep -qx "$n" "$tmp/exported" ||
            fail "version node $n missing from $lib"
    done
    grep -v -e '^DASHATTN_[0-9.]*\(@@.*\)\{0,1\}$' "$tmp/exported" >"$tmp/funcs"
    unversioned=$(grep -v '@@DASHATTN_[0-9.]*$' "$tmp/funcs")
    [ -z "$unversioned" ] || fail "exported without a DASHATTN_ version: $unversioned"
    sed 's/@@.*//' "$tmp/funcs" | sort >"$tmp/names"
else
    echo "$me: the linker takes no version scripts; checking names only"
    sed 's/@.*//' "$tmp/exported" | sort >"$tmp/names"
fi
if ! diff -u "$tmp/map" "$tmp/names" >"$tmp/diff"; then
    cat "$tmp/diff"
    fail "lib/libdashattn.map (-) and the exports of $lib (+) disagree"
fi

# -version-info current:revision:age gives the soname current - age.
lt=$(makefile_var DASHATTN_LT_VERSION)
major=$(echo "$lt" | awk -F: '{ print $1 - $3 }')
soname=$(readelf -d "$lib" | sed -n 's/.*Library soname: \[\(.*\)\]/\1/p')
[ "$soname" = "libdashattn.so.$major" ] ||
    fail "soname $soname, but -version-info $lt means libdashattn.so.$major"
first=$(echo "$nodes" | head -n 1)
[ "$first" = "DASHATTN_$major" ] ||
    fail "the first version node is $first; soname $major wants DASHATTN_$major"

# debian/ is in git checkouts, not in release tarballs.
symbols=$abs_top_srcdir/debian/libdashattn$major.symbols
if [ -f "$symbols" ]; then
    sed -n 's/^ \(dashattn_[a-z0-9_]*\)@DASHATTN_[0-9.]* .*/\1/p' "$symbols" | sort >"$tmp/deb"
    if ! diff -u "$tmp/map" "$tmp/deb" >"$tmp/diff"; then
        cat "$tmp/diff"
        fail "lib/libdashattn.map (-) and $symbols (+) disagree"
    fi
elif [ -d "$abs_top_srcdir/debian" ]; then
    fail "debian/ has no libdashattn$major.symbols for soname $major"
fi
echo "$me: PASS ($(wc -l <"$tmp/map") functions, $soname, nodes: $(echo $nodes))"
exit 0
