# SPDX-License-Identifier: MIT
# Fuzzing (README, "Fuzzing"). make check replays each target's committed
# corpus (seeds, and every input that ever crashed a target) with whatever
# compiler built the tree; configure --enable-fuzzers, with clang and
# CFLAGS holding -fsanitize=fuzzer-no-link (.ci/run shows how), also builds
# the libFuzzer binaries that tests/fuzz/run.sh runs.
check_PROGRAMS += tests/fuzz/replay_npy tests/fuzz/replay_plan
tests_fuzz_replay_npy_SOURCES = tests/fuzz/replay.c tests/fuzz/fuzz_npy.c cli/npy.c cli/npy.h
tests_fuzz_replay_npy_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/cli -DCORPUS='"npy"'
tests_fuzz_replay_plan_SOURCES = tests/fuzz/replay.c tests/fuzz/fuzz_plan.c
tests_fuzz_replay_plan_CPPFLAGS = $(AM_CPPFLAGS) -DCORPUS='"plan"'
tests_fuzz_replay_plan_LDADD = $(TEST_PUBLIC_LIBS)
TESTS += tests/fuzz/replay_npy tests/fuzz/replay_plan

if ENABLE_FUZZERS
noinst_PROGRAMS += tests/fuzz/fuzz_npy tests/fuzz/fuzz_plan
tests_fuzz_fuzz_npy_SOURCES = tests/fuzz/fuzz_npy.c cli/npy.c cli/npy.h
tests_fuzz_fuzz_npy_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/cli
tests_fuzz_fuzz_npy_LDFLAGS = -fsanitize=fuzzer
tests_fuzz_fuzz_plan_SOURCES = tests/fuzz/fuzz_plan.c
tests_fuzz_fuzz_plan_LDADD = libdashattn_internal.la $(OPENMP_CFLAGS) $(LIBM)
tests_fuzz_fuzz_plan_LDFLAGS = -fsanitize=fuzzer
endif

EXTRA_DIST += tests/fuzz/corpus tests/fuzz/make_seeds.py
dist_noinst_SCRIPTS += tests/fuzz/run.sh
