#!/bin/sh
# SPDX-License-Identifier: MIT
# Writes a C source defining daocl_kernel_source, the given OpenCL C files
# concatenated in order and NUL-terminated, as a byte array (portable: sh,
# od and sed only). Usage: embed_cl.sh OUTPUT.c FILE.cl...
set -e
out=$1
shift
tmp="$out.tmp$$"
{
    echo '/* Generated from the OpenCL C kernel files by embed_cl.sh; do not edit. */'
    echo 'extern const char daocl_kernel_source[];'
    echo 'const char daocl_kernel_source[] = {'
    for f in "$@"; do
        od -An -v -tx1 "$f" | sed -e 's/[0-9a-f][0-9a-f]/0x&,/g' -e 's/^ *//'
    done
    echo '0};'
} >"$tmp"
mv "$tmp" "$out"
