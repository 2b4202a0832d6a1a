# SPDX-License-Identifier: MIT
# The one GPU source tree of the cuda and hip plugins. Host code is C,
# compiled once per plugin with its name (DAGPU_NAME); kernels are compiled
# by nvcc (cuda) or hipcc (hip) through libtool, each plugin into its own
# object directory, with header dependencies tracked by gpu_compile.sh.
# nv/ holds the NVIDIA-only kernels, which only the cuda plugin builds;
# hopper/ holds those for sm_90a alone.
# These rules are GNU make pattern rules.
gpu_host_sources = \
	backends/gpu/gpu_kernels.h \
	backends/gpu/gpu_plugin.h \
	backends/gpu/gpu_plugin.c \
	backends/gpu/gpu_plan.c \
	backends/gpu/gpu_forward.c \
	backends/gpu/gpu_backward.c \
	backends/gpu/gpu_decode.c

# Stems of the portable kernel units (backends/gpu/STEM.cu).
gpu_portable_units = gpu_runtime gpu_block_keys gpu_stage1 gpu_stage2 gpu_backward gpu_backward_stage1 gpu_decode_kernels gpu_append
# Stems of the NVIDIA-only units (backends/gpu/nv/STEM.cu).
gpu_nv_units = nv_stage1 nv_stage2 nv_decode nv_decode_scores nv_backward nv_backward_dq
# Stems of the Hopper-only units (backends/gpu/hopper/STEM.cu).
gpu_hopper_units = hopper_stage2

gpu_kernel_headers = \
	backends/gpu/gpu_vendor.cuh \
	backends/gpu/gpu_warp.cuh \
	backends/gpu/gpu_group.cuh \
	backends/gpu/gpu_device.cuh \
	backends/gpu/gpu_entmax.cuh \
	backends/gpu/gpu_summary.cuh \
	backends/gpu/gpu_cache.cuh \
	backends/gpu/gpu_stage1_finish.cuh \
	backends/gpu/gpu_backward.cuh \
	backends/gpu/nv/nv_kernels.h \
	backends/gpu/nv/nv_mma.cuh \
	backends/gpu/nv/nv_stage2_tile.cuh \
	backends/gpu/hopper/hopper_kernels.h \
	backends/gpu/hopper/hopper_wgmma.cuh

EXTRA_DIST += \
	backends/gpu/gpu_compile.sh \
	$(gpu_kernel_headers) \
	$(gpu_portable_units:%=backends/gpu/%.cu) \
	$(gpu_nv_units:%=backends/gpu/nv/%.cu) \
	$(gpu_hopper_units:%=backends/gpu/hopper/%.cu)

# Flags of every kernel compile, either compiler.
GPU_KERNEL_CPPFLAGS = $(DEFS) -I$(top_builddir) -I$(top_srcdir)/include -I$(top_srcdir)/backends/gpu

# compile_gpu_kernel COMPILER FLAGS: the recipe of a kernel object $@ from $<.
AM_V_GPUCC = $(am__v_GPUCC_@AM_V@)
am__v_GPUCC_ = $(am__v_GPUCC_@AM_DEFAULT_V@)
am__v_GPUCC_0 = @echo "  GPUCC   " $@;
am__v_GPUCC_1 =
gpu_compile = $(LIBTOOL) $(AM_V_lt) --tag=CC --mode=compile $(SHELL) \
	$(srcdir)/backends/gpu/gpu_compile.sh $(@:.lo=.Plo) $@

mostlyclean-local: mostlyclean-gpu-objects
mostlyclean-gpu-objects:
	-rm -rf backends/cuda/obj backends/hip/obj
.PHONY: mostlyclean-gpu-objects
