# SPDX-License-Identifier: MIT
# The CPU backend: always built, linked into libdashattn, the reference for
# every other backend.
libdashattn_internal_la_SOURCES = \
	backends/cpu/cpu_internal.h \
	backends/cpu/cpu_backend.c \
	backends/cpu/cpu_tensor_io.c \
	backends/cpu/cpu_scratch.c \
	backends/cpu/cpu_team.c \
	backends/cpu/cpu_entmax.c \
	backends/cpu/cpu_entmax.h \
	backends/cpu/cpu_block_keys.c \
	backends/cpu/cpu_stage1.c \
	backends/cpu/cpu_stage2.c \
	backends/cpu/cpu_forward.c \
	backends/cpu/cpu_backward.c \
	backends/cpu/cpu_cache.c \
	backends/cpu/cpu_decode.c
