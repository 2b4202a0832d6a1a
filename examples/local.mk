# SPDX-License-Identifier: MIT
# Examples are compiled (and run) by `make check`, so they cannot rot.
check_PROGRAMS += examples/quickstart
examples_quickstart_LDADD = libdashattn.la
TESTS += examples/quickstart
