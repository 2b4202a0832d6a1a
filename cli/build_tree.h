/* SPDX-License-Identifier: MIT */
/* The `dashattn` in its build tree finds the plugins built beside it: when
 * the running executable is this build tree's uninstalled binary and
 * DASHATTN_BACKEND_PATH is unset, the tree's plugin directories become the
 * search path (before the install directory). An installed dashattn lives
 * elsewhere and is not affected; a set DASHATTN_BACKEND_PATH, even empty,
 * always wins. */
#ifndef DASHATTN_CLI_BUILD_TREE_H
#define DASHATTN_CLI_BUILD_TREE_H

void da_use_build_tree_plugins(void);

#endif
