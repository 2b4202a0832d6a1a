# SPDX-License-Identifier: MIT
# Numerical tests: the library against the float64 reference of SPEC.md in
# tests/reference.c, compiled once into a convenience library.
check_LTLIBRARIES += libtestref.la
libtestref_la_SOURCES = tests/reference.c tests/reference.h
libtestref_la_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/tests

NUMERICS_TESTS = \
	tests/test_layout \
	tests/test_entmax \
	tests/test_forward \
	tests/test_backward \
	tests/test_decode \
	tests/test_needle \
	tests/test_synthetic
check_PROGRAMS += $(NUMERICS_TESTS)
TESTS += $(NUMERICS_TESTS)

NUMERICS_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/tests -I$(top_srcdir)/cli
NUMERICS_PUBLIC_LDADD = libtestref.la libtestutil.la $(TEST_PUBLIC_LIBS)

tests_test_layout_SOURCES = tests/test_layout.c
tests_test_layout_CPPFLAGS = $(NUMERICS_CPPFLAGS)
tests_test_layout_LDADD = $(NUMERICS_PUBLIC_LDADD)

# The stage-1 solvers are internal: link the convenience library.
tests_test_entmax_SOURCES = tests/test_entmax.c
tests_test_entmax_CPPFLAGS = $(NUMERICS_CPPFLAGS) -I$(top_srcdir)/backends/cpu
tests_test_entmax_LDADD = libtestref.la libtestutil.la $(TEST_INTERNAL_LIBS)

# The configurations, inputs and views test_forward and test_backward share.
NUMERICS_CASES = tests/cases.c tests/cases.h

tests_test_forward_SOURCES = tests/test_forward.c $(NUMERICS_CASES)
tests_test_forward_CPPFLAGS = $(NUMERICS_CPPFLAGS)
tests_test_forward_LDADD = $(NUMERICS_PUBLIC_LDADD)

tests_test_backward_SOURCES = tests/test_backward.c $(NUMERICS_CASES)
tests_test_backward_CPPFLAGS = $(NUMERICS_CPPFLAGS)
tests_test_backward_LDADD = $(NUMERICS_PUBLIC_LDADD)

tests_test_decode_SOURCES = tests/test_decode.c
tests_test_decode_CPPFLAGS = $(NUMERICS_CPPFLAGS)
tests_test_decode_LDADD = $(NUMERICS_PUBLIC_LDADD)

tests_test_needle_SOURCES = tests/test_needle.c
tests_test_needle_CPPFLAGS = $(NUMERICS_CPPFLAGS)
tests_test_needle_LDADD = $(NUMERICS_PUBLIC_LDADD)

tests_test_synthetic_SOURCES = tests/test_synthetic.c
tests_test_synthetic_CPPFLAGS = $(NUMERICS_CPPFLAGS)
tests_test_synthetic_LDADD = $(NUMERICS_PUBLIC_LDADD)
