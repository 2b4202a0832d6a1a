/* SPDX-License-Identifier: MIT */
/* LD_PRELOAD shim for the tests: with DASHATTN_FAILMALLOC_ABOVE=N in the
 * environment, every malloc, calloc and realloc of more than N bytes fails
 * (ENOMEM), so that a program's handling of running out of memory can be
 * tested on a moderately large input without exhausting the machine.
 * glibc only: it forwards to glibc's __libc_* allocator entry points. */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

void *__libc_malloc(size_t size);
void *__libc_calloc(size_t count, size_t size);
void *__libc_realloc(void *ptr, size_t size);

/* Read once; getenv does not allocate. */
static size_t limit(void)
{
    static size_t value;
    static int known;
    if (!known) {
        const char *text = getenv("DASHATTN_FAILMALLOC_ABOVE");
        value = text ? (size_t)strtoull(text, NULL, 10) : SIZE_MAX;
        known = 1;
    }
    return value;
}

void *malloc(size_t size)
{
    if (size > limit()) {
        errno = ENOMEM;
        return NULL;
    }
    return __libc_malloc(size);
}

void *calloc(size_t count, size_t size)
{
    if (size != 0 && count > limit() / size) {
        errno = ENOMEM;
        return NULL;
    }
    return __libc_calloc(count, size);
}

void *realloc(void *ptr, size_t size)
{
    if (size > limit()) {
        errno = ENOMEM;
        return NULL;
    }
    return __libc_realloc(ptr, size);
}
