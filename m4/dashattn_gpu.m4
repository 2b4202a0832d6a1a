# SPDX-License-Identifier: MIT
# GPU toolchain detection for the backend plugins.
#
# Each --with-X option takes "guess" (default: build the plugin if the
# toolchain is found), "yes" (it must be found), "no", or a directory that
# holds the toolchain (bin/, include/, lib/ or lib64/). Only an explicit
# request fails configure when the toolchain is missing.

# DA_GPU_TOOLKIT(NAME, OPTION-VALUE, DEFAULT-DIRS, COMPILER, HEADER, LIBRARY)
# Sets da_NAME_found=yes|no, da_NAME_dir, da_NAME_compiler, da_NAME_libdir
# and da_NAME_why (what was missing).
AC_DEFUN([DA_GPU_TOOLKIT], [
  da_$1_found=no
  da_$1_why="--without-$1 given"
  AS_CASE([$2],
    [no], [],
    [yes|guess], [da_$1_dirs="$3"],
    [da_$1_dirs="$2"])
  AS_IF([test "x$2" != xno], [
    da_$1_why="m4_ifval([$4], [$4, ])$5 and lib$6 not found in:$da_$1_dirs"
    for da_dir in $da_$1_dirs; do
      AS_IF([test -n "$4" && test ! -x "$da_dir/bin/$4"], [continue])
      AS_IF([test ! -f "$da_dir/include/$5"], [continue])
      for da_lib in lib64 lib lib/x86_64-linux-gnu; do
        AS_IF([ls "$da_dir/$da_lib/lib$6".so* >/dev/null 2>&1], [
          da_$1_found=yes
          da_$1_dir=$da_dir
          da_$1_libdir=$da_dir/$da_lib
          AS_IF([test -n "$4"], [da_$1_compiler=$da_dir/bin/$4])
          break 2])
      done
    done])
  AS_IF([test "x$da_$1_found" = xno && test "x$2" != xno && test "x$2" != xguess],
    [AC_MSG_ERROR([--with-$1 was given but $da_$1_why])])
])

AC_DEFUN([DA_WITH_CUDA], [
  AC_ARG_WITH([cuda],
    [AS_HELP_STRING([--with-cuda@<:@=DIR@:>@], [build the CUDA backend plugin (default: guess)])],
    [], [with_cuda=guess])
  AC_MSG_CHECKING([for the CUDA toolkit])
  DA_GPU_TOOLKIT([cuda], [$with_cuda], [${CUDA_HOME:-} ${CUDA_PATH:-} /usr/local/cuda /opt/cuda /usr],
                 [nvcc], [cuda_runtime.h], [cudart])
  AC_MSG_RESULT([$da_cuda_found${da_cuda_dir:+ ($da_cuda_dir)}])
  AC_SUBST([NVCC], [$da_cuda_compiler])
  AC_SUBST([CUDA_CPPFLAGS], [${da_cuda_dir:+-I$da_cuda_dir/include}])
  AC_SUBST([CUDA_LDFLAGS], [${da_cuda_libdir:+-L$da_cuda_libdir}])
  AM_CONDITIONAL([HAVE_CUDA], [test "x$da_cuda_found" = xyes])
  AS_IF([test "x$da_cuda_found" = xyes],
    [da_cuda_summary="built (CUDA toolkit in $da_cuda_dir)"],
    [da_cuda_summary="not built: $da_cuda_why"])
])

AC_DEFUN([DA_WITH_ROCM], [
  AC_ARG_WITH([rocm],
    [AS_HELP_STRING([--with-rocm@<:@=DIR@:>@],
      [build the HIP backend plugin with the hipcc and HIP runtime in DIR (default: guess;
       Debian's hipcc 5.2 in /usr targets gfx90a and gfx1030, gfx942 needs ROCm 6)])],
    [], [with_rocm=guess])
  AC_ARG_VAR([HIP_OFFLOAD_ARCHS],
    [AMD GPU targets of the hip plugin (default: gfx90a gfx1030)])
  : "${HIP_OFFLOAD_ARCHS=gfx90a gfx1030}"
  AC_MSG_CHECKING([for ROCm (HIP)])
  DA_GPU_TOOLKIT([rocm], [$with_rocm], [${ROCM_PATH:-} /opt/rocm /usr],
                 [hipcc], [hip/hip_runtime.h], [amdhip64])
  AC_MSG_RESULT([$da_rocm_found${da_rocm_dir:+ ($da_rocm_dir)}])
  da_hip_offload=
  for da_arch in $HIP_OFFLOAD_ARCHS; do
    da_hip_offload="$da_hip_offload --offload-arch=$da_arch"
  done
  dnl hipcc also needs the device libraries (rocm-device-libs) of every
  dnl target: compile a kernel for all of them to know.
  AS_IF([test "x$da_rocm_found" = xyes], [
    AC_MSG_CHECKING([whether hipcc compiles kernels for $HIP_OFFLOAD_ARCHS])
    cat >conftest.hip <<DA_EOF
#include <hip/hip_runtime.h>
__global__ void da_conftest(float *x) { x@<:@threadIdx.x@:>@ = __shfl_xor(1.0f, 1, 32); }
DA_EOF
    AS_IF([$da_rocm_compiler -x hip $da_hip_offload -fPIC -c conftest.hip -o conftest.$OBJEXT \
             >&AS_MESSAGE_LOG_FD 2>&1],
      [AC_MSG_RESULT([yes])],
      [AC_MSG_RESULT([no])
       da_rocm_found=no
       da_rocm_why="$da_rocm_compiler cannot compile for $HIP_OFFLOAD_ARCHS (device libraries missing? see config.log)"
       AS_IF([test "x$with_rocm" != xguess],
         [AC_MSG_ERROR([--with-rocm was given but $da_rocm_why])])])
    rm -f conftest.hip conftest.$OBJEXT])
  AC_SUBST([HIPCC], [$da_rocm_compiler])
  AC_SUBST([HIP_OFFLOAD_FLAGS], [$da_hip_offload])
  AC_SUBST([ROCM_CPPFLAGS], [${da_rocm_dir:+-I$da_rocm_dir/include}])
  AC_SUBST([ROCM_LDFLAGS], [${da_rocm_libdir:+-L$da_rocm_libdir}])
  AM_CONDITIONAL([HAVE_ROCM], [test "x$da_rocm_found" = xyes])
  AS_IF([test "x$da_rocm_found" = xyes],
    [da_rocm_summary="built for $HIP_OFFLOAD_ARCHS (hipcc in $da_rocm_dir)"],
    [da_rocm_summary="not built: $da_rocm_why"])
])

AC_DEFUN([DA_WITH_OPENCL], [
  AC_ARG_WITH([opencl],
    [AS_HELP_STRING([--with-opencl@<:@=DIR@:>@], [build the OpenCL backend plugin (default: guess)])],
    [], [with_opencl=guess])
  AC_MSG_CHECKING([for OpenCL headers and ICD loader])
  DA_GPU_TOOLKIT([opencl], [$with_opencl], [${OPENCL_ROOT:-} /usr /usr/local],
                 [], [CL/cl.h], [OpenCL])
  AC_MSG_RESULT([$da_opencl_found${da_opencl_dir:+ ($da_opencl_dir)}])
  AC_SUBST([OPENCL_CPPFLAGS], [${da_opencl_dir:+-I$da_opencl_dir/include}])
  AC_SUBST([OPENCL_LDFLAGS], [${da_opencl_libdir:+-L$da_opencl_libdir}])
  AM_CONDITIONAL([HAVE_OPENCL], [test "x$da_opencl_found" = xyes])
  AS_IF([test "x$da_opencl_found" = xyes],
    [da_opencl_summary="built (headers and ICD loader in $da_opencl_dir)"],
    [da_opencl_summary="not built: $da_opencl_why"])
])
