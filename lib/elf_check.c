/* SPDX-License-Identifier: MIT */
/* Plugin files are checked before dlopen: the dynamic loader maps the file
 * as its program headers describe it and touches the pages, so a truncated
 * file (a plugin being copied, a full disk) would kill the process with
 * SIGBUS, and opening a FIFO would block forever. A candidate that is not a
 * regular file holding a complete ELF shared object of this machine's class
 * is skipped with a reason, like any other unusable plugin. (The file can
 * still change between this check and dlopen; the check is for mistakes,
 * not for an attacker who can write to the plugin directories.) */
#include <config.h>

#include "loader.h"

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__LP64__) || defined(_LP64)
#define DA_ELF_CLASS ELFCLASS64
#else
#define DA_ELF_CLASS ELFCLASS32
#endif

/* Most program headers accepted; real objects have about a dozen. */
#define MAX_PHDRS 256

static int read_at(int fd, void *buf, size_t size, off_t offset)
{
    size_t done = 0;
    while (done < size) {
        const ssize_t n = pread(fd, (char *)buf + done, size - done, offset + (off_t)done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        done += (size_t)n;
    }
    return 0;
}

static int native_data_encoding(void)
{
    const uint16_t one = 1;
    unsigned char first;
    memcpy(&first, &one, 1);
    return first == 1 ? ELFDATA2LSB : ELFDATA2MSB;
}

/* [offset, offset + size) lies inside a file of file_size bytes. */
static int inside(uint64_t offset, uint64_t size, uint64_t file_size)
{
    return offset <= file_size && size <= file_size - offset;
}

static int check_open_file(int fd, const char *path, char *why, size_t why_size)
{
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(why, why_size, "%s: not a regular file", path);
        return -1;
    }
    const uint64_t size = (uint64_t)st.st_size;
    ElfW(Ehdr) eh;
    if (size < sizeof eh || read_at(fd, &eh, sizeof eh, 0) != 0 ||
        memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0) {
        snprintf(why, why_size, "%s: not an ELF file", path);
        return -1;
    }
    if (eh.e_ident[EI_CLASS] != DA_ELF_CLASS || eh.e_ident[EI_DATA] != native_data_encoding()) {
        snprintf(why, why_size, "%s: an ELF file of another word size or byte order", path);
        return -1;
    }
    if (eh.e_type != ET_DYN) {
        snprintf(why, why_size, "%s: not an ELF shared object", path);
        return -1;
    }
    if (eh.e_phentsize != sizeof(ElfW(Phdr)) || eh.e_phnum == 0 || eh.e_phnum > MAX_PHDRS ||
        !inside(eh.e_phoff, (uint64_t)eh.e_phnum * sizeof(ElfW(Phdr)), size)) {
        snprintf(why, why_size,
                 "%s: damaged or truncated ELF file (program headers outside the "
                 "file's %llu bytes)",
                 path, (unsigned long long)size);
        return -1;
    }
    ElfW(Phdr) ph[MAX_PHDRS];
    if (read_at(fd, ph, (size_t)eh.e_phnum * sizeof(ElfW(Phdr)), (off_t)eh.e_phoff) != 0) {
        snprintf(why, why_size, "%s: cannot read its program headers", path);
        return -1;
    }
    for (unsigned i = 0; i < eh.e_phnum; i++)
        if (ph[i].p_filesz > 0 && !inside(ph[i].p_offset, ph[i].p_filesz, size)) {
            snprintf(why, why_size,
                     "%s: truncated ELF file (a segment ends at byte %llu, the file "
                     "has %llu)",
                     path, (unsigned long long)ph[i].p_offset + (unsigned long long)ph[i].p_filesz,
                     (unsigned long long)size);
            return -1;
        }
    return 0;
}

int da_plugin_file_ok(const char *path, char *why, size_t why_size)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        snprintf(why, why_size, "%s: not found", path);
        return 0;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(why, why_size, "%s: not a regular file", path);
        return 0;
    }
    /* O_NONBLOCK: should a FIFO have replaced the file since stat, opening
     * it must not wait for a writer. */
    const int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        snprintf(why, why_size, "%s: cannot be opened: %s", path, strerror(errno));
        return 0;
    }
    const int rc = check_open_file(fd, path, why, why_size);
    close(fd);
    return rc == 0;
}
