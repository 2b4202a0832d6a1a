/* SPDX-License-Identifier: MIT */
/* The CPU backend's table: built into libdashattn, always usable, and the
 * reference every other backend is tested against. */
#include <config.h>

#include "cpu_internal.h"
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* OpenMP's default (OMP_NUM_THREADS, else the cores), within the bound:
 * libgomp crashes or exits on absurd counts instead of failing. */
static int default_threads(void)
{
#ifdef _OPENMP
    int n = omp_get_max_threads();
    const int limit = omp_get_thread_limit();
    n = n < limit ? n : limit;
    return n < 1 ? 1 : n > DASHATTN_MAX_THREADS ? DASHATTN_MAX_THREADS : n;
#else
    return 1;
#endif
}

/* "model name" from /proc/cpuinfo where there is one. */
static void cpu_model(char *buf, size_t size)
{
    snprintf(buf, size, "unknown CPU");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f)
        return;
    char line[256];
    while (fgets(line, sizeof line, f)) {
        const char *colon = strchr(line, ':');
        if (strncmp(line, "model name", 10) == 0 && colon) {
            colon++;
            while (*colon == ' ' || *colon == '\t')
                colon++;
            snprintf(buf, size, "%.*s", (int)strcspn(colon, "\n"), colon);
            break;
        }
    }
    fclose(f);
}

static int cpu_probe(const dashattn_host *host, char *reason, size_t reason_size)
{
    (void)host;
    (void)reason;
    (void)reason_size;
    return 1;
}

static size_t cpu_describe(char *buffer, size_t size)
{
    char model[128];
    cpu_model(model, sizeof model);
#ifdef _OPENMP
    const char *threads = "OpenMP";
#else
    const char *threads = "single-threaded build";
#endif
    const int n =
        snprintf(buffer, size, "%s, %d threads by default (%s)", model, default_threads(), threads);
    return n > 0 ? (size_t)n : 0;
}

static dashattn_status cpu_init(const dashattn_host *host, const dashattn_context_options *options,
                                void **state)
{
    (void)host;
    dacpu_state *st = calloc(1, sizeof *st);
    if (!st)
        return da_fail(DASHATTN_ERR_OUT_OF_MEMORY, "cpu backend: out of memory");
    st->num_threads = options->num_threads > 0 ? options->num_threads : default_threads();
#ifndef _OPENMP
    st->num_threads = 1;
#endif
    char model[128];
    cpu_model(model, sizeof model);
    snprintf(st->device, sizeof st->device, "%s (%d threads)", model, st->num_threads);
    *state = st;
    return DASHATTN_OK;
}

static void cpu_release(void *state)
{
    free(state);
}

static const char *cpu_device_name(void *state)
{
    return ((const dacpu_state *)state)->device;
}

static int cpu_num_threads(void *state)
{
    return ((const dacpu_state *)state)->num_threads;
}

static size_t cpu_workspace_size(void *state, const dashattn_plan_desc *plan, dashattn_operation op)
{
    const dacpu_state *st = state;
    return dacpu_workspace_bytes(plan, op, st->num_threads);
}

static dashattn_status cpu_alloc(void *state, size_t bytes, void **ptr)
{
    (void)state;
    *ptr = malloc(bytes);
    return *ptr ? DASHATTN_OK : DASHATTN_ERR_OUT_OF_MEMORY;
}

static void cpu_free(void *state, void *ptr)
{
    (void)state;
    free(ptr);
}

static const dashattn_backend_iface cpu_iface = {
    .abi_version = DASHATTN_BACKEND_ABI_VERSION,
    .struct_size = sizeof(dashattn_backend_iface),
    .name = "cpu",
    .probe = cpu_probe,
    .describe = cpu_describe,
    .init = cpu_init,
    .release = cpu_release,
    .device_name = cpu_device_name,
    .workspace_size = cpu_workspace_size,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .forward = dacpu_forward,
    .backward = dacpu_backward,
    .cache_append = dacpu_cache_append,
    .decode = dacpu_decode,
    .num_threads = cpu_num_threads,
};

const dashattn_backend_iface *da_cpu_backend(void)
{
    return &cpu_iface;
}
