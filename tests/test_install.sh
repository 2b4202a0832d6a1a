#!/bin/sh
# SPDX-License-Identifier: MIT
# Install the build into a staging directory (make install DESTDIR=...) and
# check the installed tree as a user would meet it: headers, library, CLI and
# pkg-config file are there, test plugins are not, the library exports only
# dashattn_* symbols, and a program built with nothing but
# `pkg-config --cflags --libs dashattn` runs and computes the right result.
# Nothing outside the temporary staging directory is written.
set -u

me=test_install
skip() { echo "$me: SKIP: $*"; exit 77; }
fail() { echo "$me: FAIL: $*"; exit 1; }

if [ -z "${abs_top_builddir:-}" ] || [ -z "${abs_top_srcdir:-}" ]; then
    skip "abs_top_builddir/abs_top_srcdir not set (run through make check or ctest)"
fi
command -v pkg-config >/dev/null 2>&1 || skip "pkg-config not found"
command -v make >/dev/null 2>&1 || skip "make not found"

# Build the consumer with the compiler and flags the library was built with,
# so that e.g. a sanitizer build links its runtime into the consumer too.
makefile_var() { sed -n "s/^$1 = //p" "$abs_top_builddir/Makefile" | head -n 1; }
cc=$(makefile_var CC)
cflags=$(makefile_var CFLAGS)
ldflags=$(makefile_var LDFLAGS)
[ -n "$cc" ] || cc=${CC:-cc}
command -v "${cc%% *}" >/dev/null 2>&1 || skip "C compiler '$cc' not found"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/dashattn-install.XXXXXX") || fail "mktemp failed"
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' HUP INT TERM
stage=$tmp/stage

# DESTDIR leaves the configured prefix untouched; libtool relinks into it.
if ! make -C "$abs_top_builddir" install DESTDIR="$stage" >"$tmp/install.log" 2>&1; then
    cat "$tmp/install.log"
    fail "make install DESTDIR=$stage failed"
fi

find_one() { find "$stage" "$@" | head -n 1; }
header=$(find_one -path '*/include/dashattn.h' -type f)
backend_header=$(find_one -path '*/include/dashattn/backend.h' -type f)
pc=$(find_one -path '*/pkgconfig/dashattn.pc' -type f)
cli=$(find_one -path '*/bin/dashattn' -type f)
lib=$(find_one -name 'libdashattn.so' )
[ -n "$header" ] || fail "dashattn.h not installed"
[ -n "$backend_header" ] || fail "dashattn/backend.h not installed"
[ -n "$pc" ] || fail "dashattn.pc not installed"
[ -n "$cli" ] || fail "dashattn CLI not installed"
[ -x "$cli" ] || fail "dashattn CLI not installed as an executable"
[ -n "$lib" ] || fail "libdashattn.so not installed"
libdir=$(dirname "$lib")
echo "$me: installed $header $backend_header $pc $cli $lib"

leaked=$(find "$stage" -name 'dashattn-abitest*' -o -name 'dashattn-nodevice*' \
    -o -name 'dashattn-faildev*' -o -name 'libtestutil*')
[ -z "$leaked" ] || fail "test-only files installed: $leaked"
if grep -qF "$abs_top_builddir" "$pc"; then
    fail "dashattn.pc refers to the build directory"
fi

# Plugins go to $(libdir)/dashattn/<plugin ABI>, as .so files only.
abi=$(sed -n 's/^#define DASHATTN_BACKEND_ABI_VERSION \([0-9][0-9]*\)u*$/\1/p' \
    "$abs_top_srcdir/include/dashattn/backend.h")
[ -n "$abi" ] || fail "no DASHATTN_BACKEND_ABI_VERSION in dashattn/backend.h"
for built in "$abs_top_builddir"/backends/*/.libs/dashattn-*.so; do
    [ -f "$built" ] || continue
    f=$(basename "$built")
    [ -f "$libdir/dashattn/$abi/$f" ] || fail "plugin $f not installed in $libdir/dashattn/$abi"
    echo "$me: plugin $libdir/dashattn/$abi/$f"
done
la=$(find "$libdir/dashattn" -name '*.la' 2>/dev/null)
[ -z "$la" ] || fail "libtool archives installed with the plugins: $la"

# Only the public API is exported (names starting with __ come from the
# toolchain, e.g. sanitizer instrumentation; DASHATTN_<n> are the version
# nodes of lib/libdashattn.map, which tests/test_symbols.sh checks).
if command -v nm >/dev/null 2>&1; then
    extra=$(nm -D --defined-only "$lib" | awk 'NF == 3 { print $3 }' |
        grep -v -e '^dashattn_' -e '^__' -e '^_init$' -e '^_fini$' -e '^_edata$' -e '^_end$' \
            -e '^DASHATTN_[0-9.]*$')
    [ -z "$extra" ] || fail "libdashattn.so exports non-API symbols: $(echo "$extra" | tr '\n' ' ')"
    nm -D --defined-only "$lib" | grep -q ' T dashattn_forward\(@@DASHATTN_[0-9.]*\)\{0,1\}$' ||
        fail "libdashattn.so does not export dashattn_forward"
else
    echo "$me: nm not found, not checking exported symbols"
fi

# pkg-config resolves the staged .pc file; the sysroot maps its absolute
# paths into the staging directory, and system paths are not filtered.
PKG_CONFIG_LIBDIR=$(dirname "$pc")
PKG_CONFIG_PATH=
PKG_CONFIG_SYSROOT_DIR=$stage
PKG_CONFIG_ALLOW_SYSTEM_CFLAGS=1
PKG_CONFIG_ALLOW_SYSTEM_LIBS=1
export PKG_CONFIG_LIBDIR PKG_CONFIG_PATH PKG_CONFIG_SYSROOT_DIR
export PKG_CONFIG_ALLOW_SYSTEM_CFLAGS PKG_CONFIG_ALLOW_SYSTEM_LIBS
pc_cflags=$(pkg-config --cflags dashattn) || fail "pkg-config --cflags dashattn failed"
pc_libs=$(pkg-config --libs dashattn) || fail "pkg-config --libs dashattn failed"
pc_plugindir=$(pkg-config --variable=plugindir dashattn) || fail "no plugindir in dashattn.pc"
[ "$pc_plugindir" = "$libdir/dashattn/$abi" ] ||
    fail "dashattn.pc says plugindir=$pc_plugindir, plugins are in $libdir/dashattn/$abi"
echo "$me: pkg-config --cflags: $pc_cflags"
echo "$me: pkg-config --libs: $pc_libs"
# Private libraries (for a static link) are claimed only with a static library.
pc_static=$(pkg-config --static --libs dashattn) || fail "pkg-config --static --libs failed"
if [ "$pc_static" != "$pc_libs" ] && [ -z "$(find_one -name 'libdashattn.a')" ]; then
    fail "pkg-config --static lists '$pc_static' but no libdashattn.a is installed"
fi

# Unquoted on purpose: each holds several words.
# shellcheck disable=SC2086
if ! $cc $cflags -std=c11 -Wall -Wextra -Werror $pc_cflags \
    "$abs_top_srcdir/tests/install_consumer.c" -o "$tmp/consumer" $ldflags $pc_libs -lm; then
    fail "could not build the consumer against the installed tree"
fi

LD_LIBRARY_PATH=$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export LD_LIBRARY_PATH
"$tmp/consumer" || fail "the consumer failed"

# A CMake project finds the staged tree through find_package(dashattn)
# (relocated: the config file is not where it was configured to be) and
# through pkg_check_modules(IMPORTED_TARGET), with the pkg-config set-up above.
config=$(find_one -path '*/cmake/dashattn/dashattnConfig.cmake' -type f)
[ -n "$config" ] || fail "dashattnConfig.cmake not installed"
[ -f "$(dirname "$config")/dashattnConfigVersion.cmake" ] || fail "dashattnConfigVersion.cmake not installed"
if command -v cmake >/dev/null 2>&1; then
    prefix_dir=$(dirname "$(dirname "$header")")
    cc_prog=${cc%% *}
    cc_args=${cc#"$cc_prog"}
    if ! CC=$cc_prog cmake -S "$abs_top_srcdir/tests/cmake_consumer" -B "$tmp/cmake-build" \
        -DCMAKE_PREFIX_PATH="$prefix_dir" -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF \
        -DCMAKE_C_FLAGS="$cc_args $cflags" -DCMAKE_EXE_LINKER_FLAGS="$ldflags" \
        >"$tmp/cmake.log" 2>&1 ||
        ! cmake --build "$tmp/cmake-build" >>"$tmp/cmake.log" 2>&1; then
        cat "$tmp/cmake.log"
        fail "the CMake consumer did not build against the installed tree"
    fi
    grep -q "plugins in $libdir/dashattn/$abi" "$tmp/cmake.log" ||
        fail "dashattnConfig.cmake gives the wrong dashattn_PLUGIN_DIR: $(grep 'plugins in' "$tmp/cmake.log")"
    "$tmp/cmake-build/consumer_config" || fail "the find_package(dashattn) consumer failed"
    "$tmp/cmake-build/consumer_pkgconfig" || fail "the pkg_check_modules consumer failed"
else
    echo "$me: cmake not found, the CMake consumer is not checked"
fi
echo "$me: PASS"
exit 0
