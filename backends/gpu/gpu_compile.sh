#!/bin/sh
# SPDX-License-Identifier: MIT
# Runs nvcc or hipcc for `libtool --mode=compile` and records the source's
# header dependencies for make.
# Usage (from libtool): gpu_compile.sh DEPFILE TARGET COMPILER [ARGS...]
# libtool appends -fPIC, which nvcc takes only as a host compiler option; the
# dependency file names TARGET (the .lo make knows) in place of the object
# libtool asked for. TARGET is not passed on: Debian's hipcc unpacks every
# argument ending in .lo as an archive.
set -e
dep=$1
target=$2
compiler=$3
shift 3
case $(basename "$compiler") in
nvcc*) nvcc=yes ;;
*) nvcc=no ;;
esac
for arg in "$@"; do
    shift
    if [ "$arg" = -fPIC ] && [ $nvcc = yes ]; then
        set -- "$@" --compiler-options=-fPIC
    else
        set -- "$@" "$arg"
    fi
done
mkdir -p "$(dirname "$dep")"
"$compiler" "$@" -MD -MP -MF "$dep.tmp"
# The first rule's target is the object; make must see the .lo instead.
sed "1s|^[^:]*:|$target:|" "$dep.tmp" >"$dep"
rm -f "$dep.tmp"
