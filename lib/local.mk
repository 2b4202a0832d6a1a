# SPDX-License-Identifier: MIT
# The backend-neutral core and the built-in CPU backend are compiled once into
# a convenience library; libdashattn.la exports its public symbols and the
# tests that check internals (solvers, planning) link the convenience library.
noinst_LTLIBRARIES += libdashattn_internal.la
libdashattn_internal_la_SOURCES += \
	lib/internal.h \
	lib/error.c \
	lib/tensor.c \
	lib/dtype_convert.c \
	lib/dtype_convert.h \
	lib/loader.c \
	lib/loader.h \
	lib/context.c \
	lib/plan.c \
	lib/calls.c \
	lib/memory.c \
	lib/validate.c \
	lib/validate.h
libdashattn_internal_la_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/lib -DDASHATTN_BUILDING \
	-DDASHATTN_PLUGIN_DIR='"$(plugindir)"'
libdashattn_internal_la_CFLAGS = $(AM_CFLAGS) $(VISIBILITY_CFLAGS) $(OPENMP_CFLAGS) $(LOOP_CFLAGS)

lib_LTLIBRARIES += libdashattn.la
libdashattn_la_SOURCES =
libdashattn_la_LIBADD = libdashattn_internal.la $(LIBM)
libdashattn_la_LDFLAGS = -version-info $(DASHATTN_LT_VERSION) -no-undefined $(OPENMP_CFLAGS)
# Versioned symbols where the linker can (lib/libdashattn.map lists them);
# elsewhere the same names, unversioned.
if HAVE_LD_VERSION_SCRIPT
libdashattn_la_LDFLAGS += -Wl,--version-script=$(srcdir)/lib/libdashattn.map
else
libdashattn_la_LDFLAGS += -export-symbols-regex '^dashattn_'
endif
EXTRA_libdashattn_la_DEPENDENCIES = lib/libdashattn.map
EXTRA_DIST += lib/libdashattn.map
