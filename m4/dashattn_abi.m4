# SPDX-License-Identifier: MIT
# The library's binary interface as the build installs it.

# DA_PLUGIN_ABI: DASHATTN_PLUGIN_ABI, the plugin ABI version, read from
# include/dashattn/backend.h so that the directory plugins are installed in
# ($(libdir)/dashattn/<abi>) and the loader's number cannot disagree.
AC_DEFUN([DA_PLUGIN_ABI], [
  AC_MSG_CHECKING([for the backend plugin ABI version])
  DASHATTN_PLUGIN_ABI=`sed -n 's/^#define DASHATTN_BACKEND_ABI_VERSION \(@<:@0-9@:>@@<:@0-9@:>@*\)u*$/\1/p' \
    "$srcdir/include/dashattn/backend.h"`
  AS_IF([test -z "$DASHATTN_PLUGIN_ABI"],
    [AC_MSG_ERROR([cannot read DASHATTN_BACKEND_ABI_VERSION from include/dashattn/backend.h])])
  AC_MSG_RESULT([$DASHATTN_PLUGIN_ABI])
  AC_SUBST([DASHATTN_PLUGIN_ABI])
])

# DA_LD_VERSION_SCRIPT: HAVE_LD_VERSION_SCRIPT when the linker takes a GNU
# version script (-Wl,--version-script); elsewhere the build falls back to
# libtool's -export-symbols-regex, which exports the same names unversioned.
AC_DEFUN([DA_LD_VERSION_SCRIPT], [
  AC_CACHE_CHECK([whether the linker accepts version scripts], [da_cv_ld_version_script], [
    da_save_LDFLAGS=$LDFLAGS
    cat >conftest.map <<_DA_EOF
DA_TEST_1 { global: main; local: *; };
_DA_EOF
    LDFLAGS="$LDFLAGS -Wl,--version-script=conftest.map"
    AC_LINK_IFELSE([AC_LANG_PROGRAM([], [])],
      [da_cv_ld_version_script=yes], [da_cv_ld_version_script=no])
    LDFLAGS=$da_save_LDFLAGS
    rm -f conftest.map])
  AC_SUBST([LD_VERSION_SCRIPT], [$da_cv_ld_version_script])
  AM_CONDITIONAL([HAVE_LD_VERSION_SCRIPT], [test "x$da_cv_ld_version_script" = xyes])
])
