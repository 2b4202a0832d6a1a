# SPDX-License-Identifier: MIT
# The CUDA backend plugin, dashattn-cuda.so: host code in C, kernels in CUDA C
# compiled by nvcc into a fat binary (sm_80, sm_90, and PTX for newer cards).
# libtool does not know nvcc, so nvcc_lt.sh writes the libtool objects.
SUFFIXES = .cu
EXTRA_DIST += backends/cuda/nvcc_lt.sh

# Override on the make command line to build for one card only, e.g.
# make NVCC_ARCH_FLAGS='-gencode arch=compute_90,code=sm_90'.
NVCC_ARCH_FLAGS = -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
	-gencode arch=compute_90,code=compute_90
NVCC_FLAGS = -O3 -std=c++17 -lineinfo $(NVCC_ARCH_FLAGS) -Xcompiler -fvisibility=hidden \
	-Xcompiler -Wall,-Wextra $(DEFS) -I$(top_builddir) -I$(top_srcdir)/include \
	-I$(top_srcdir)/backends/cuda $(CUDA_CPPFLAGS)

.cu.lo:
	$(AM_V_GEN)$(SHELL) $(srcdir)/backends/cuda/nvcc_lt.sh $@ $(NVCC) $(NVCC_FLAGS) -c $<

cuda_headers = \
	backends/cuda/cuda_internal.h \
	backends/cuda/cuda_plugin.h \
	backends/cuda/cuda_device.cuh \
	backends/cuda/cuda_entmax.cuh \
	backends/cuda/cuda_cache.cuh \
	backends/cuda/cuda_summary.cuh \
	backends/cuda/cuda_mma.cuh

if HAVE_CUDA
plugin_LTLIBRARIES += backends/cuda/dashattn-cuda.la
endif
backends_cuda_dashattn_cuda_la_SOURCES = \
	$(cuda_headers) \
	backends/cuda/cuda_plugin.c \
	backends/cuda/cuda_forward.c \
	backends/cuda/cuda_decode.c \
	backends/cuda/cuda_block_keys.cu \
	backends/cuda/cuda_stage1.cu \
	backends/cuda/cuda_stage2.cu \
	backends/cuda/cuda_stage2_mma.cu \
	backends/cuda/cuda_decode_kernels.cu \
	backends/cuda/cuda_decode_mma.cu \
	backends/cuda/cuda_cache.cu
backends_cuda_dashattn_cuda_la_CPPFLAGS = $(AM_CPPFLAGS) $(CUDA_CPPFLAGS) -I$(top_srcdir)/backends/cuda
backends_cuda_dashattn_cuda_la_LDFLAGS = -module -avoid-version -shared -no-undefined \
	-export-symbols-regex '^dashattn_backend_entry$$' $(CUDA_LDFLAGS)
# The static CUDA runtime: the plugin then needs only the driver at run time.
backends_cuda_dashattn_cuda_la_LIBADD = -lcudart_static -lrt -ldl -lpthread -lstdc++ $(LIBM)

# nvcc objects have no dependency tracking: rebuild them when a header changes.
$(backends_cuda_dashattn_cuda_la_OBJECTS): $(cuda_headers)
