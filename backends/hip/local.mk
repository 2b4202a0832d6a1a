# SPDX-License-Identifier: MIT
# The HIP backend plugin, dashattn-hip.so: the GPU source tree of
# backends/gpu, its portable kernels compiled by hipcc for the AMD targets
# configure was given (HIP_OFFLOAD_ARCHS). No NVIDIA-only unit is built.

HIPCC_FLAGS = -O3 -std=c++17 $(HIP_OFFLOAD_FLAGS) -fvisibility=hidden -Wall -Wextra \
	-DDAGPU_USE_HIP $(GPU_KERNEL_CPPFLAGS) $(ROCM_CPPFLAGS)

hip_kernel_objects = $(gpu_portable_units:%=backends/hip/obj/%.lo)

backends/hip/obj/%.lo: backends/gpu/%.cu
	$(AM_V_GPUCC)$(gpu_compile) $(HIPCC) $(HIPCC_FLAGS) -x hip -c -o $@ $<

if HAVE_ROCM
plugin_LTLIBRARIES += backends/hip/dashattn-hip.la
-include $(hip_kernel_objects:.lo=.Plo)
endif
backends_hip_dashattn_hip_la_SOURCES = $(gpu_host_sources)
backends_hip_dashattn_hip_la_CPPFLAGS = $(AM_CPPFLAGS) -DDAGPU_NAME='"hip"'
backends_hip_dashattn_hip_la_LDFLAGS = -module -avoid-version -shared -no-undefined \
	-export-symbols-regex '^dashattn_backend_entry$$' $(ROCM_LDFLAGS)
backends_hip_dashattn_hip_la_LIBADD = $(hip_kernel_objects) -lamdhip64 -lstdc++ $(LIBM)
# automake cannot read the substitution references above.
backends_hip_dashattn_hip_la_DEPENDENCIES = $(hip_kernel_objects)
