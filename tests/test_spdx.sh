#!/bin/sh
# SPDX-License-Identifier: MIT
# Every tracked file of a git checkout names its licence in an
# "SPDX-License-Identifier: MIT" line: the first line, or the second after a
# "#!" line. Exempt: the licence itself, prose (*.md), .gitignore, and the
# Debian files whose format allows no comment (changelog, source/format)
# or that state the licence themselves (copyright), and the fuzz targets'
# inputs (tests/fuzz/corpus/), which are data. A release tarball has no
# git metadata; the test then skips.

me=test_spdx
if [ -z "${abs_top_srcdir:-}" ]; then
    echo "$me: SKIP: abs_top_srcdir not set (run it through make check)"
    exit 77
fi
command -v git >/dev/null 2>&1 || {
    echo "$me: SKIP: git not found"
    exit 77
}
files=$(git -C "$abs_top_srcdir" ls-files 2>/dev/null) || files=
if [ -z "$files" ]; then
    echo "$me: SKIP: $abs_top_srcdir is not a git checkout"
    exit 77
fi

missing=
count=0
for f in $files; do
    case $f in
    LICENSE | *.md | .gitignore | debian/changelog | debian/copyright | debian/source/format) continue ;;
    tests/fuzz/corpus/*) continue ;;
    esac
    p=$abs_top_srcdir/$f
    [ -f "$p" ] || continue
    count=$((count + 1))
    if [ "$(head -c 2 "$p")" = "#!" ]; then
        line=$(sed -n 2p "$p")
    else
        line=$(sed -n 1p "$p")
    fi
    case $line in
    *"SPDX-License-Identifier: MIT"*) ;;
    *) missing="$missing $f" ;;
    esac
done
if [ -n "$missing" ]; then
    echo "$me: FAIL: no SPDX-License-Identifier line at the top of:"
    for f in $missing; do echo "  $f"; done
    exit 1
fi
echo "$me: PASS ($count files)"
exit 0
