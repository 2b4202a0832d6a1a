# SPDX-License-Identifier: MIT
# The `dashattn` command-line tool: info, run, grad and bench.
bin_PROGRAMS += dashattn
dashattn_SOURCES = \
	cli/main.c \
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
	cli/staging.c \
	cli/staging.h \
	cli/synthetic.c \
	cli/synthetic.h
# Per-target flags give the CLI its own object files, so cli/synthetic.c and
# cli/npy.c can also be compiled into the tests' libtool objects.
dashattn_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/cli
dashattn_LDADD = libdashattn.la $(LIBM)

# The manual page; tests/test_manpage.sh holds it to the commands' help.
dist_man_MANS = cli/dashattn.1
