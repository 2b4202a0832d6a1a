# SPDX-License-Identifier: MIT
# DA_CHECK_C11: make sure the C compiler accepts C11; add -std=gnu11 if needed.
AC_DEFUN([DA_CHECK_C11], [
  AC_CACHE_CHECK([whether $CC compiles C11], [da_cv_c11], [
    AC_COMPILE_IFELSE([AC_LANG_PROGRAM([[
#if !defined(__STDC_VERSION__) || __STDC_VERSION__ < 201112L
#error not C11
#endif
_Thread_local int da_tls;]], [[return da_tls;]])], [da_cv_c11=yes], [da_cv_c11=no])])
  AS_IF([test "x$da_cv_c11" = xno], [
    da_save_CFLAGS=$CFLAGS
    CFLAGS="$CFLAGS -std=gnu11"
    AC_COMPILE_IFELSE([AC_LANG_PROGRAM([[_Thread_local int da_tls;]], [[return da_tls;]])],
      [], [AC_MSG_ERROR([a C11 compiler with _Thread_local is required])])])
])

# DA_CHECK_VECTOR_EXT: the CPU kernels use GNU vector extensions (GCC, Clang).
AC_DEFUN([DA_CHECK_VECTOR_EXT], [
  AC_CACHE_CHECK([whether $CC supports vector_size vectors], [da_cv_vector_ext], [
    AC_COMPILE_IFELSE([AC_LANG_PROGRAM([[typedef float v16 __attribute__((vector_size(64)));]],
      [[v16 a = {0}, b = {1}; a += 2.0f * b; return (int)a[3];]])],
      [da_cv_vector_ext=yes], [da_cv_vector_ext=no])])
  AS_IF([test "x$da_cv_vector_ext" = xno],
    [AC_MSG_ERROR([the CPU backend needs a compiler with GNU vector extensions (GCC or Clang)])])
])

# DA_CHECK_PTHREAD: find the flag that enables POSIX threads (for tests).
AC_DEFUN([DA_CHECK_PTHREAD], [
  AC_CACHE_CHECK([for the flag that enables POSIX threads], [da_cv_pthread_flag], [
    da_cv_pthread_flag=none
    for da_flag in -pthread -lpthread; do
      da_save_LIBS=$LIBS
      LIBS="$LIBS $da_flag"
      AC_LINK_IFELSE([AC_LANG_PROGRAM([[#include <pthread.h>
static void *f(void *a) { return a; }]], [[pthread_t t; pthread_create(&t, 0, f, 0); pthread_join(t, 0);]])],
        [da_cv_pthread_flag=$da_flag])
      LIBS=$da_save_LIBS
      test "x$da_cv_pthread_flag" != xnone && break
    done])
  AS_IF([test "x$da_cv_pthread_flag" = xnone], [AC_MSG_ERROR([POSIX threads are required])])
  AC_SUBST([PTHREAD_LIBS], [$da_cv_pthread_flag])
])

# DA_WARN_CFLAGS: the warning set the project keeps clean.
AC_DEFUN([DA_WARN_CFLAGS], [
  da_warn=""
  for da_flag in -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wvla; do
    da_save_CFLAGS=$CFLAGS
    CFLAGS="$CFLAGS -Werror $da_flag"
    AC_COMPILE_IFELSE([AC_LANG_PROGRAM([], [])], [da_warn="$da_warn $da_flag"])
    CFLAGS=$da_save_CFLAGS
  done
  AC_SUBST([WARN_CFLAGS], [$da_warn])
])

# DA_CHECK_VISIBILITY: export only the public API from libdashattn.
AC_DEFUN([DA_CHECK_VISIBILITY], [
  AC_CACHE_CHECK([whether $CC accepts -fvisibility=hidden], [da_cv_visibility], [
    da_save_CFLAGS=$CFLAGS
    CFLAGS="$CFLAGS -Werror -fvisibility=hidden"
    AC_COMPILE_IFELSE([AC_LANG_PROGRAM([[__attribute__((visibility("default"))) int f(void);]], [])],
      [da_cv_visibility=yes], [da_cv_visibility=no])
    CFLAGS=$da_save_CFLAGS])
  AS_IF([test "x$da_cv_visibility" = xyes], [AC_SUBST([VISIBILITY_CFLAGS], [-fvisibility=hidden])])
])

# DA_FAST_LOOP_CFLAGS: flags that let the compiler vectorise the CPU kernels'
# selects and min/max without changing results (the library never reads the
# floating-point exception flags).
AC_DEFUN([DA_FAST_LOOP_CFLAGS], [
  da_loop=""
  for da_flag in -fno-trapping-math; do
    da_save_CFLAGS=$CFLAGS
    CFLAGS="$CFLAGS -Werror $da_flag"
    AC_COMPILE_IFELSE([AC_LANG_PROGRAM([], [])], [da_loop="$da_loop $da_flag"])
    CFLAGS=$da_save_CFLAGS
  done
  AC_SUBST([LOOP_CFLAGS], [$da_loop])
])
