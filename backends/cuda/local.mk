# SPDX-License-Identifier: MIT
# The CUDA backend plugin, dashattn-cuda.so: the GPU source tree of
# backends/gpu, its kernels compiled by nvcc into fat binaries, with the
# NVIDIA-only tensor-core units of backends/gpu/nv.

# Override on the make command line to build for one card only, e.g.
# make NVCC_ARCH_FLAGS='-gencode arch=compute_90,code=sm_90'. The portable
# and the nv/ units share these targets (mma.sync with bf16 needs sm_80);
# Hopper-only units (wgmma, TMA) will take sm_90a alone.
NVCC_ARCH_FLAGS = -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
	-gencode arch=compute_90,code=compute_90
# Hopper-only units (backends/gpu/hopper/: wgmma, TMA) hold sm_90a machine
# code alone, which no other card runs; the host launches them only on sm_90.
NVCC_HOPPER_ARCH_FLAGS = -gencode arch=compute_90a,code=sm_90a
# --compiler-options=X, never -Xcompiler X: libtool takes -Xcompiler for its
# own flag and moves its argument.
NVCC_COMMON_FLAGS = -O3 -std=c++17 -lineinfo --compiler-options=-fvisibility=hidden \
	--compiler-options=-Wall,-Wextra $(GPU_KERNEL_CPPFLAGS) $(CUDA_CPPFLAGS)
NVCC_FLAGS = $(NVCC_ARCH_FLAGS) $(NVCC_COMMON_FLAGS)

cuda_kernel_objects = \
	$(gpu_portable_units:%=backends/cuda/obj/%.lo) \
	$(gpu_nv_units:%=backends/cuda/obj/nv/%.lo) \
	$(gpu_hopper_units:%=backends/cuda/obj/hopper/%.lo)

backends/cuda/obj/%.lo: backends/gpu/%.cu
	$(AM_V_GPUCC)$(gpu_compile) $(NVCC) $(NVCC_FLAGS) -x cu -c -o $@ $<
backends/cuda/obj/nv/%.lo: backends/gpu/nv/%.cu
	$(AM_V_GPUCC)$(gpu_compile) $(NVCC) $(NVCC_FLAGS) -x cu -c -o $@ $<
backends/cuda/obj/hopper/%.lo: backends/gpu/hopper/%.cu
	$(AM_V_GPUCC)$(gpu_compile) $(NVCC) $(NVCC_HOPPER_ARCH_FLAGS) $(NVCC_COMMON_FLAGS) -x cu -c -o $@ $<

if HAVE_CUDA
plugin_LTLIBRARIES += backends/cuda/dashattn-cuda.la
-include $(cuda_kernel_objects:.lo=.Plo)
endif
backends_cuda_dashattn_cuda_la_SOURCES = $(gpu_host_sources)
backends_cuda_dashattn_cuda_la_CPPFLAGS = $(AM_CPPFLAGS) -DDAGPU_NAME='"cuda"' -DDAGPU_HAVE_NV
backends_cuda_dashattn_cuda_la_LDFLAGS = -module -avoid-version -shared -no-undefined \
	-export-symbols-regex '^dashattn_backend_entry$$' $(CUDA_LDFLAGS)
# The static CUDA runtime: the plugin then needs only the driver at run time.
backends_cuda_dashattn_cuda_la_LIBADD = $(cuda_kernel_objects) \
	-lcudart_static -lrt -ldl -lpthread -lstdc++ $(LIBM)
# automake cannot read the substitution references above.
backends_cuda_dashattn_cuda_la_DEPENDENCIES = $(cuda_kernel_objects)
