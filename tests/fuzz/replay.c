/* SPDX-License-Identifier: MIT */
/* Runs a fuzz target's LLVMFuzzerTestOneInput over every file of its
 * committed corpus (tests/fuzz/corpus/CORPUS), so that `make check` replays
 * the seeds and every crash ever found, with any compiler, no libFuzzer
 * needed. The corpus is found under $abs_top_srcdir, or in the directories
 * given as arguments. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int replay_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return -1;
    size_t cap = 4096, size = 0;
    uint8_t *buf = malloc(cap);
    for (size_t got; buf != NULL && (got = fread(buf + size, 1, cap - size, f)) > 0;) {
        size += got;
        if (size == cap) {
            uint8_t *grown = realloc(buf, cap * 2);
            if (grown == NULL) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = grown;
            cap *= 2;
        }
    }
    fclose(f);
    if (buf == NULL)
        return -1;
    LLVMFuzzerTestOneInput(buf, size);
    free(buf);
    return 0;
}

static int replay_dir(const char *dir, int *files)
{
    DIR *d = opendir(dir);
    if (d == NULL) {
        fprintf(stderr, "replay: cannot open %s\n", dir);
        return -1;
    }
    int rc = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (e->d_name[0] == '.')
            continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (replay_file(path) != 0) {
            fprintf(stderr, "replay: cannot read %s\n", path);
            rc = -1;
        }
        ++*files;
    }
    closedir(d);
    return rc;
}

int main(int argc, char **argv)
{
    int files = 0, rc = 0;
    LLVMFuzzerInitialize(&argc, &argv);
    if (argc > 1) {
        for (int i = 1; i < argc; i++)
            rc |= replay_dir(argv[i], &files);
    } else {
        const char *top = getenv("abs_top_srcdir");
        if (top == NULL || top[0] == '\0') {
            fprintf(stderr, "replay: abs_top_srcdir is not set (run through make check)\n");
            return 77;
        }
        char dir[4096];
        snprintf(dir, sizeof dir, "%s/tests/fuzz/corpus/%s", top, CORPUS);
        rc = replay_dir(dir, &files);
    }
    printf("replay (%s): %d inputs, none crashed\n", CORPUS, files);
    return rc == 0 && files > 0 ? 0 : 1;
}
