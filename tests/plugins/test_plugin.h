/* SPDX-License-Identifier: MIT */
/* Shared by the test-only backend plugins: the one symbol a plugin exports. */
#ifndef DASHATTN_TEST_PLUGIN_H
#define DASHATTN_TEST_PLUGIN_H

#include <dashattn/backend.h>

/* The test plugins are built without -fvisibility=hidden, but say it anyway
 * so that they keep working if the project's flags ever add it. */
#if defined(__GNUC__)
#define TEST_PLUGIN_EXPORT __attribute__((visibility("default")))
#else
#define TEST_PLUGIN_EXPORT
#endif

TEST_PLUGIN_EXPORT const dashattn_backend_iface *dashattn_backend_entry(void);

#endif
