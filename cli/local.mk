# SPDX-License-Identifier: MIT
# The `dashattn` command-line tool: info, run, grad and bench.
bin_PROGRAMS += dashattn
dashattn_SOURCES = \
	cli/main.c \
	cli/build_tree.c \
	cli/build_tree.h \
	cli/commands.h \
	cli/options.c \
	cli/options.h \
	cli/cmd_info.c \
	cli/info_json.c \
	cli/json.c \
	cli/json.h \
	cli/cmd_run.c \
	cli/cmd_bench.c \
	cli/npy.c \
	cli/npy.h \
	cli/outputs.c \
	cli/outputs.h \
	cli/staging.c \
	cli/staging.h \
	cli/synthetic.c \
	cli/synthetic.h
# Per-target flags give the CLI its own object files, so cli/synthetic.c and
# cli/npy.c can also be compiled into the tests' libtool objects.
# DA_BUILD_DIR lets the uninstalled tool find the plugins built beside it
# (cli/build_tree.h); the installed one runs from elsewhere and ignores it.
dashattn_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/cli -DDA_BUILD_DIR='"$(abs_top_builddir)"'
dashattn_LDADD = libdashattn.la $(LIBM)

# The manual page; tests/test_manpage.sh holds it to the commands' help.
dist_man_MANS = cli/dashattn.1
