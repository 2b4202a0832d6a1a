/* SPDX-License-Identifier: MIT */
/* Output files that never destroy a user's file (see outputs.h). */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include "outputs.h"

#include "npy.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char da_outputs_help[] =
    "output files:\n"
    "  Checked before anything runs: each output must be a regular file or a new name\n"
    "  in an existing directory (a device, directory or FIFO is refused), and no two\n"
    "  outputs, nor an output and an input, may be the same file. Each is written to a\n"
    "  new temporary file beside its target and renamed onto it only when every output\n"
    "  of the command is complete, so a failed command leaves existing files as they\n"
    "  were. An output that is a symbolic link replaces the file the link points to;\n"
    "  the link itself stays.\n";

/* Where an output goes: the file to replace or create, symlinks followed. */
typedef struct target {
    char *final;
    char *dir;        /* final's directory */
    const char *base; /* final's last component (inside final) */
    int exists;
    struct stat st;     /* of final, if it exists */
    struct stat dir_st; /* of dir */
} target;

/* "--out x.npy", or "x.npy" without a flag, for messages. */
static const char *label(const da_path_arg *a, char *buf, size_t size)
{
    snprintf(buf, size, "%s%s%s", a->flag ? a->flag : "", a->flag && a->flag[0] ? " " : "",
             a->path);
    return buf;
}

static void target_free(target *t)
{
    free(t->final);
    free(t->dir);
    memset(t, 0, sizeof *t);
}

static int resolve(const da_path_arg *a, target *t, char *err, size_t err_size)
{
    char what[1100];
    label(a, what, sizeof what);
    memset(t, 0, sizeof *t);
    struct stat lst;
    if (lstat(a->path, &lst) == 0) {
        if (S_ISLNK(lst.st_mode)) {
            if (stat(a->path, &t->st) != 0)
                return da_npy_fail(err, err_size, "%s: a symbolic link to nothing (%s)", what,
                                   strerror(errno));
            t->final = realpath(a->path, NULL);
            if (t->final == NULL)
                return da_npy_fail(err, err_size, "%s: cannot follow the symbolic link: %s", what,
                                   strerror(errno));
        } else {
            t->st = lst;
            t->final = strdup(a->path);
        }
        t->exists = 1;
        if (t->final && !S_ISREG(t->st.st_mode))
            return da_npy_fail(err, err_size,
                               "%s: not a regular file (outputs are never written to devices, "
                               "directories or FIFOs)",
                               what);
    } else if (errno == ENOENT) {
        t->final = strdup(a->path);
    } else {
        return da_npy_fail(err, err_size, "%s: %s", what, strerror(errno));
    }
    if (t->final == NULL)
        return da_npy_fail(err, err_size, "%s: out of memory", what);
    char *slash = strrchr(t->final, '/');
    if (slash == NULL) {
        t->dir = strdup(".");
        t->base = t->final;
    } else {
        t->dir = slash == t->final ? strdup("/") : strndup(t->final, (size_t)(slash - t->final));
        t->base = slash + 1;
    }
    if (t->dir == NULL)
        return da_npy_fail(err, err_size, "%s: out of memory", what);
    if (t->base[0] == '\0')
        return da_npy_fail(err, err_size, "%s: names a directory, not a file", what);
    if (stat(t->dir, &t->dir_st) != 0 || !S_ISDIR(t->dir_st.st_mode))
        return da_npy_fail(err, err_size, "%s: directory %s does not exist", what, t->dir);
    if (access(t->dir, W_OK | X_OK) != 0)
        return da_npy_fail(err, err_size, "%s: cannot create files in directory %s: %s", what,
                           t->dir, strerror(errno));
    return 0;
}

static int same_target(const target *a, const target *b)
{
    if (a->exists != b->exists)
        return 0;
    if (a->exists)
        return a->st.st_dev == b->st.st_dev && a->st.st_ino == b->st.st_ino;
    return a->dir_st.st_dev == b->dir_st.st_dev && a->dir_st.st_ino == b->dir_st.st_ino &&
           strcmp(a->base, b->base) == 0;
}

int da_outputs_check(const da_path_arg *inputs, size_t n_inputs, const da_path_arg *outputs,
                     size_t n_outputs, char *err, size_t err_size)
{
    target *t = calloc(n_outputs ? n_outputs : 1, sizeof *t);
    if (t == NULL)
        return da_npy_fail(err, err_size, "out of memory");
    char la[1100], lb[1100];
    int rc = 0;
    /* An output that is an input is the worst mistake: report it first. */
    for (size_t k = 0; k < n_inputs && rc == 0; k++) {
        struct stat in, o;
        if (!inputs[k].path || stat(inputs[k].path, &in) != 0)
            continue; /* reading it will say what is wrong */
        for (size_t i = 0; i < n_outputs && rc == 0; i++)
            if (outputs[i].path && stat(outputs[i].path, &o) == 0 && o.st_dev == in.st_dev &&
                o.st_ino == in.st_ino)
                rc = da_npy_fail(
                    err, err_size, "%s is the input %s: an output never overwrites an input",
                    label(&outputs[i], la, sizeof la), label(&inputs[k], lb, sizeof lb));
    }
    for (size_t i = 0; i < n_outputs && rc == 0; i++)
        if (outputs[i].path)
            rc = resolve(&outputs[i], &t[i], err, err_size);
    for (size_t i = 0; i < n_outputs && rc == 0; i++)
        for (size_t j = i + 1; j < n_outputs && rc == 0 && outputs[i].path; j++)
            if (outputs[j].path && same_target(&t[i], &t[j]))
                rc = da_npy_fail(
                    err, err_size, "%s and %s are the same file: each output needs its own",
                    label(&outputs[i], la, sizeof la), label(&outputs[j], lb, sizeof lb));
    for (size_t i = 0; i < n_outputs; i++)
        target_free(&t[i]);
    free(t);
    return rc;
}

/* Temporaries of the write in progress, for the signal handler to remove
 * (those already renamed are gone from their names). */
static char *volatile *pending;
static volatile sig_atomic_t n_pending;

static void remove_pending(int sig)
{
    for (sig_atomic_t i = 0; i < n_pending; i++)
        if (pending[i] != NULL)
            unlink(pending[i]);
    signal(sig, SIG_DFL);
    raise(sig);
}

static const int cleanup_signals[] = {SIGINT, SIGTERM, SIGHUP, SIGPIPE};
#define N_SIGNALS (sizeof cleanup_signals / sizeof cleanup_signals[0])

/* Write one file to a new temporary beside its target; *tmp receives its
 * name (malloc'ed) as soon as it exists. */
static int write_temporary(const da_output_file *file, const target *t, mode_t umask_bits,
                           char **tmp, char *err, size_t err_size)
{
    char what[1100];
    label(&file->arg, what, sizeof what);
    const size_t size = strlen(t->dir) + strlen(t->base) + 16;
    char *name = malloc(size);
    if (name == NULL)
        return da_npy_fail(err, err_size, "%s: out of memory", what);
    snprintf(name, size, "%s/.%s.XXXXXX", t->dir, t->base);
    const int fd = mkstemp(name);
    if (fd < 0) {
        const int e = errno;
        free(name);
        return da_npy_fail(err, err_size, "%s: cannot create a temporary file in %s: %s", what,
                           t->dir, strerror(e));
    }
    *tmp = name;
    /* The new file gets the mode a replaced file had, else the usual one. */
    const mode_t mode = t->exists ? (t->st.st_mode & 0777) : (0666 & ~umask_bits);
    if (fchmod(fd, mode) != 0) {
        const int e = errno;
        close(fd);
        return da_npy_fail(err, err_size, "%s: cannot set the mode of %s: %s", what, name,
                           strerror(e));
    }
    if (t->exists && geteuid() == 0 && fchown(fd, t->st.st_uid, t->st.st_gid) != 0) {
        /* Keeping root's ownership is harmless; go on. */
    }
    FILE *f = fdopen(fd, "wb");
    if (f == NULL) {
        const int e = errno;
        close(fd);
        return da_npy_fail(err, err_size, "%s: %s", what, strerror(e));
    }
    char why[256] = "";
    int rc = da_npy_write_stream(f, file->data, file->ndim, file->shape, why, sizeof why);
    if (rc == 0 && fsync(fileno(f)) != 0)
        rc = da_npy_fail(why, sizeof why, "cannot write: %s", strerror(errno));
    if (fclose(f) != 0 && rc == 0)
        rc = da_npy_fail(why, sizeof why, "cannot write: %s", strerror(errno));
    return rc == 0 ? 0 : da_npy_fail(err, err_size, "%s: %s", what, why);
}

int da_outputs_write(const da_output_file *files, size_t n, char *err, size_t err_size)
{
    target *t = calloc(n ? n : 1, sizeof *t);
    char **names = calloc(n ? n : 1, sizeof *names);
    if (t == NULL || names == NULL) {
        free(t);
        free(names);
        return da_npy_fail(err, err_size, "out of memory");
    }
    const mode_t umask_bits = umask(0);
    umask(umask_bits);
    struct sigaction old[N_SIGNALS], act;
    memset(&act, 0, sizeof act);
    act.sa_handler = remove_pending;
    sigemptyset(&act.sa_mask);
    pending = names;
    n_pending = (sig_atomic_t)n;
    for (size_t s = 0; s < N_SIGNALS; s++)
        sigaction(cleanup_signals[s], &act, &old[s]);

    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++)
        if (files[i].arg.path != NULL) {
            rc = resolve(&files[i].arg, &t[i], err, err_size);
            if (rc == 0)
                rc = write_temporary(&files[i], &t[i], umask_bits, &names[i], err, err_size);
        }
    size_t renamed = 0;
    for (; renamed < n && rc == 0; renamed++)
        if (names[renamed] != NULL && rename(names[renamed], t[renamed].final) != 0) {
            char what[1100];
            rc = da_npy_fail(err, err_size, "%s: cannot replace %s: %s",
                             label(&files[renamed].arg, what, sizeof what), t[renamed].final,
                             strerror(errno));
            break;
        }
    for (size_t i = renamed; i < n; i++)
        if (names[i] != NULL)
            unlink(names[i]);
    for (size_t s = 0; s < N_SIGNALS; s++)
        sigaction(cleanup_signals[s], &old[s], NULL);
    n_pending = 0;
    pending = NULL;
    for (size_t i = 0; i < n; i++) {
        free(names[i]);
        target_free(&t[i]);
    }
    free(names);
    free(t);
    return rc;
}

int da_npy_write(const char *path, const float *data, int ndim, const int64_t *shape, char *err,
                 size_t err_size)
{
    const da_output_file file = {{"", path}, data, ndim, shape};
    if (da_outputs_check(NULL, 0, &file.arg, 1, err, err_size) != 0)
        return -1;
    return da_outputs_write(&file, 1, err, err_size);
}
