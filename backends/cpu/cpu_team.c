/* SPDX-License-Identifier: MIT */
/* Starting OpenMP teams without letting libgomp end the process. libgomp
 * calls exit() when it cannot create a thread (typically: no address space
 * left for the thread's stack, as under `ulimit -v`). Before a parallel
 * region that will create threads, the backend reserves and releases the
 * address space their stacks take, and fails the call with a status when
 * that is not there. Other reasons for a failed pthread_create (a process
 * limit) cannot be tested without creating the threads; the thread count
 * is bounded (DASHATTN_MAX_THREADS) so that no sane limit is reached. */
#include <config.h>

#include "cpu_internal.h"
#include "internal.h"

#include <ctype.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/mman.h>

#ifdef _OPENMP

/* libgomp keeps, per thread that starts teams, a pool of the threads of its
 * last team; a team of n needs n - 1 pool threads and the pool is resized to
 * that. Regions the backend starts from this thread keep this count. */
static _Thread_local int pool_threads;

/* OMP_STACKSIZE / GOMP_STACKSIZE: a number with an optional B, K, M or G
 * suffix (K without one). 0 if unset or unreadable. */
static size_t env_stack_size(const char *name)
{
    const char *text = getenv(name);
    if (!text)
        return 0;
    char *end;
    const unsigned long long v = strtoull(text, &end, 10);
    if (end == text)
        return 0;
    while (isspace((unsigned char)*end))
        end++;
    unsigned shift = 10;
    switch (toupper((unsigned char)*end)) {
    case 'B':
        shift = 0;
        break;
    case 'M':
        shift = 20;
        break;
    case 'G':
        shift = 30;
        break;
    default:
        break;
    }
    return v > (SIZE_MAX >> shift) ? SIZE_MAX : (size_t)v << shift;
}

/* The stack libgomp gives each thread, plus its guard page and TLS. */
static size_t thread_stack_bytes(void)
{
    size_t bytes = env_stack_size("OMP_STACKSIZE");
    if (!bytes)
        bytes = env_stack_size("GOMP_STACKSIZE");
    if (!bytes) {
        pthread_attr_t attr;
        bytes = (size_t)8 << 20;
        if (pthread_attr_init(&attr) == 0) {
            /* glibc answers the default a thread would get. */
            size_t def = 0;
            if (pthread_attr_getstacksize(&attr, &def) == 0 && def > 0)
                bytes = def;
            pthread_attr_destroy(&attr);
        }
    }
    return da_size_add(bytes, (size_t)64 << 10);
}

dashattn_status dacpu_team_check(const char *fn, int threads)
{
    /* Nested inside an active region beyond the nesting limit, a region runs
     * on the calling thread alone. */
    if (threads <= 1 || omp_get_active_level() >= omp_get_max_active_levels())
        return DASHATTN_OK;
    const int nested = omp_get_level() > 0;
    const int have = nested ? 0 : pool_threads;
    const int missing = threads - 1 - have;
    if (missing > 0) {
        const size_t stack = thread_stack_bytes();
        const size_t bytes = da_size_mul((size_t)missing, stack);
        void *p = bytes == SIZE_MAX ? MAP_FAILED
                                    : mmap(NULL, bytes, PROT_NONE,
                                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED)
            return da_fail(DASHATTN_ERR_OUT_OF_MEMORY,
                           "%s: cpu backend: cannot start %d threads: no address space for "
                           "%d more thread stacks of %zu bytes (use fewer threads: "
                           "dashattn_context_options.num_threads, OMP_NUM_THREADS, or a smaller "
                           "OMP_STACKSIZE)",
                           fn, threads, missing, stack);
        munmap(p, bytes);
    }
    if (!nested)
        pool_threads = threads - 1;
    return DASHATTN_OK;
}

#else

dashattn_status dacpu_team_check(const char *fn, int threads)
{
    (void)fn;
    (void)threads;
    return DASHATTN_OK;
}

#endif
