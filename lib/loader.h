/* SPDX-License-Identifier: MIT */
/* Finding, opening and checking backend plugins. */
#ifndef DASHATTN_LOADER_H
#define DASHATTN_LOADER_H

#include "internal.h"

#include <stddef.h>

/* A plugin that loaded and passed the ABI check. iface is a copy of the
 * plugin's table, not a pointer to it: a plugin built before an entry was
 * added returns a shorter table, so the entries past its struct_size are
 * zero (absent) here and the core never reads past the plugin's object. */
typedef struct da_plugin {
    void *handle;
    dashattn_backend_iface iface;
    char path[1024];
} da_plugin;

/* Calls visit(dir, arg) for each plugin directory in search order:
 * DASHATTN_BACKEND_PATH's entries, then the install directory (or
 * DASHATTN_PLUGIN_DIR in its place when that is set). */
void da_plugin_dirs(void (*visit)(const char *dir, void *arg), void *arg);

/* Open dir/dashattn-<name>.so and check its ABI. On failure returns
 * DASHATTN_ERR_BACKEND_UNAVAILABLE (missing, not loadable, a table without
 * every required entry) or DASHATTN_ERR_ABI_MISMATCH, with the reason
 * written into why. */
dashattn_status da_plugin_open(const char *dir, const char *name, da_plugin *plugin, char *why,
                               size_t why_size);

void da_plugin_close(da_plugin *plugin);

/* Nonzero if path is a regular file holding a complete ELF shared object of
 * this machine's class, which dlopen can map without faulting; else 0 with
 * the reason in why (elf_check.c). */
int da_plugin_file_ok(const char *path, char *why, size_t why_size);

/* Nonzero if name is a well-formed plugin name ([a-z0-9_]{1,32}). */
int da_plugin_name_ok(const char *name);

/* Calls visit(dir, name, arg) for every dashattn-<name>.so in every plugin
 * directory, in search order. */
void da_plugin_scan(void (*visit)(const char *dir, const char *name, void *arg), void *arg);

#endif
