/* SPDX-License-Identifier: MIT */
/* Plugins are plain shared objects opened with dlopen(RTLD_NOW|RTLD_LOCAL):
 * no libltdl, and no symbol of one plugin can leak into another. */
#include <config.h>

#include "loader.h"

#include "lib/plugin_dir.h"

#include <dirent.h>
#include <dlfcn.h>
#include <stddef.h>

#ifdef RTLD_NODELETE
#define DA_RTLD_NODELETE RTLD_NODELETE
#else
#define DA_RTLD_NODELETE 0
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PLUGIN_PREFIX "dashattn-"
#define PLUGIN_SUFFIX ".so"

/* Every ABI 2 table has the entries up to forward, whatever its age: the
 * required ones are all there, and only optional ones came later. */
#define DA_IFACE_REQUIRED_SIZE                                                                     \
    (offsetof(dashattn_backend_iface, forward) + sizeof(((dashattn_backend_iface *)0)->forward))

/* The copy in da_plugin_open rounds struct_size down to whole entries. */
_Static_assert(offsetof(dashattn_backend_iface, name) % sizeof(void *) == 0 &&
                   sizeof(dashattn_backend_iface) % sizeof(void *) == 0,
               "every entry after abi_version and struct_size is one pointer");

int da_plugin_name_ok(const char *name)
{
    size_t n = 0;
    if (!name)
        return 0;
    for (; name[n]; n++) {
        const char c = name[n];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_') || n >= 32)
            return 0;
    }
    return n > 0;
}

void da_plugin_dirs(void (*visit)(const char *dir, void *arg), void *arg)
{
    const char *env = getenv("DASHATTN_BACKEND_PATH");
    if (env) {
        const char *p = env;
        while (*p) {
            const char *end = strchr(p, ':');
            size_t len = end ? (size_t)(end - p) : strlen(p);
            if (len > 0 && len < 1024) {
                char dir[1024];
                memcpy(dir, p, len);
                dir[len] = '\0';
                visit(dir, arg);
            }
            p += len;
            if (*p == ':')
                p++;
        }
    }
    /* The install directory, unless the environment moved it (relocated
     * installs, and tests that must not see installed plugins). */
    const char *installed = getenv("DASHATTN_PLUGIN_DIR");
    visit(installed && installed[0] ? installed : DASHATTN_PLUGIN_DIR, arg);
}

dashattn_status da_plugin_open(const char *dir, const char *name, da_plugin *plugin, char *why,
                               size_t why_size)
{
    memset(plugin, 0, sizeof *plugin);
    int n = snprintf(plugin->path, sizeof plugin->path, "%s/" PLUGIN_PREFIX "%s" PLUGIN_SUFFIX, dir,
                     name);
    if (n < 0 || (size_t)n >= sizeof plugin->path) {
        snprintf(why, why_size, "plugin path too long in %s", dir);
        return DASHATTN_ERR_BACKEND_UNAVAILABLE;
    }
    if (!da_plugin_file_ok(plugin->path, why, why_size))
        return DASHATTN_ERR_BACKEND_UNAVAILABLE;
    /* Plugins stay mapped after dlclose: GPU runtimes (the CUDA runtime, the
     * OpenCL ICD loader and its drivers) keep process-wide state that is
     * not safe to unload, and unloading would strand their allocations. */
    void *handle = dlopen(plugin->path, RTLD_NOW | RTLD_LOCAL | DA_RTLD_NODELETE);
    if (!handle) {
        const char *err = dlerror();
        snprintf(why, why_size, "%s: cannot be loaded: %s", plugin->path, err ? err : "unknown");
        return DASHATTN_ERR_BACKEND_UNAVAILABLE;
    }
    /* The entry point is a function; POSIX allows the object-to-function
     * pointer conversion through memcpy. */
    void *sym = dlsym(handle, DASHATTN_BACKEND_ENTRY_SYMBOL);
    dashattn_backend_entry_fn entry = NULL;
    if (sym)
        memcpy(&entry, &sym, sizeof entry);
    const dashattn_backend_iface *iface = entry ? entry() : NULL;
    if (!iface) {
        snprintf(why, why_size, "%s: no " DASHATTN_BACKEND_ENTRY_SYMBOL "() or it returned NULL",
                 plugin->path);
        dlclose(handle);
        return DASHATTN_ERR_BACKEND_UNAVAILABLE;
    }
    /* Only the two leading fields are read in the plugin's own table: every
     * later entry may lie past the end of an older plugin's shorter one. */
    const unsigned abi_version = iface->abi_version;
    const size_t struct_size = iface->struct_size;
    if (abi_version != DASHATTN_BACKEND_ABI_VERSION) {
        snprintf(why, why_size, "%s: plugin ABI version %u, this library needs ABI version %u",
                 plugin->path, abi_version, DASHATTN_BACKEND_ABI_VERSION);
        dlclose(handle);
        return DASHATTN_ERR_ABI_MISMATCH;
    }
    if (struct_size < DA_IFACE_REQUIRED_SIZE) {
        snprintf(why, why_size,
                 "%s: incomplete backend table: struct_size is %zu bytes, its required entries "
                 "(up to forward) need %zu",
                 plugin->path, struct_size, (size_t)DA_IFACE_REQUIRED_SIZE);
        dlclose(handle);
        return DASHATTN_ERR_BACKEND_UNAVAILABLE;
    }
    /* A newer plugin's entries past ours are unknown here and left out; an
     * entry that struct_size cuts through is absent, not half a pointer. */
    size_t known = struct_size < sizeof plugin->iface ? struct_size : sizeof plugin->iface;
    known -= known % sizeof(void *);
    memcpy(&plugin->iface, iface, known);
    const dashattn_backend_iface *t = &plugin->iface;
    if (!t->probe || !t->init || !t->release || !t->workspace_size || !t->alloc || !t->free ||
        !t->forward) {
        snprintf(why, why_size, "%s: incomplete backend table (a required entry is NULL)",
                 plugin->path);
        memset(&plugin->iface, 0, sizeof plugin->iface);
        dlclose(handle);
        return DASHATTN_ERR_BACKEND_UNAVAILABLE;
    }
    plugin->handle = handle;
    return DASHATTN_OK;
}

void da_plugin_close(da_plugin *plugin)
{
    if (plugin->handle)
        dlclose(plugin->handle);
    plugin->handle = NULL;
    memset(&plugin->iface, 0, sizeof plugin->iface);
}

struct scan_state {
    void (*visit)(const char *dir, const char *name, void *arg);
    void *arg;
};

static void scan_dir(const char *dir, void *arg)
{
    const struct scan_state *s = arg;
    DIR *d = opendir(dir);
    if (!d)
        return;
    const size_t pre = strlen(PLUGIN_PREFIX), suf = strlen(PLUGIN_SUFFIX);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        const size_t len = strlen(e->d_name);
        if (len <= pre + suf || strncmp(e->d_name, PLUGIN_PREFIX, pre) != 0 ||
            strcmp(e->d_name + len - suf, PLUGIN_SUFFIX) != 0)
            continue;
        char name[64];
        const size_t nlen = len - pre - suf;
        if (nlen >= sizeof name)
            continue;
        memcpy(name, e->d_name + pre, nlen);
        name[nlen] = '\0';
        if (da_plugin_name_ok(name))
            s->visit(dir, name, s->arg);
    }
    closedir(d);
}

void da_plugin_scan(void (*visit)(const char *dir, const char *name, void *arg), void *arg)
{
    struct scan_state s = {visit, arg};
    da_plugin_dirs(scan_dir, &s);
}
