/* SPDX-License-Identifier: MIT */
/* See build_tree.h. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include "build_tree.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Where libtool puts the plugins of this build tree, from its top. */
static const char *const plugin_dirs[] = {"backends/cuda/.libs", "backends/hip/.libs",
                                          "backends/opencl/.libs"};

/* The directory of the running executable, resolved, into dir. */
static int exe_dir(char *dir, size_t size)
{
    char exe[PATH_MAX];
    const ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return -1;
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash == NULL)
        return -1;
    *slash = '\0';
    return snprintf(dir, size, "%s", exe) < (int)size ? 0 : -1;
}

void da_use_build_tree_plugins(void)
{
#ifdef DA_BUILD_DIR
    if (getenv("DASHATTN_BACKEND_PATH") != NULL)
        return; /* the user (or a test) chose the directories */
    char here[PATH_MAX], top[PATH_MAX], libs[PATH_MAX + 8];
    if (exe_dir(here, sizeof here) != 0 || realpath(DA_BUILD_DIR, top) == NULL)
        return;
    /* libtool runs the uninstalled binary as .libs/lt-dashattn (or
     * .libs/dashattn) behind the ./dashattn wrapper script. */
    snprintf(libs, sizeof libs, "%s/.libs", top);
    if (strcmp(here, top) != 0 && strcmp(here, libs) != 0)
        return;
    char path[4 * PATH_MAX] = "";
    size_t len = 0;
    for (size_t i = 0; i < sizeof plugin_dirs / sizeof plugin_dirs[0]; i++) {
        const int n =
            snprintf(path + len, sizeof path - len, "%s%s/%s", len ? ":" : "", top, plugin_dirs[i]);
        if (n < 0 || (size_t)n >= sizeof path - len)
            return;
        len += (size_t)n;
    }
    setenv("DASHATTN_BACKEND_PATH", path, 1);
#endif
}
