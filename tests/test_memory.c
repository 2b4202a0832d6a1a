/* SPDX-License-Identifier: MIT */
/* Memory in the context's space: allocation, upload, download, errors. */
#include "testutil.h"

#include <dashattn.h>
#include <string.h>

int main(void)
{
    dashattn_context_options options;
    dashattn_context_options_init(&options);
    options.backend = "cpu";
    dashattn_context *ctx = NULL;
    if (dashattn_context_create(&options, &ctx) != DASHATTN_OK)
        return 99;

    enum { N = 1000 };
    unsigned char src[N], dst[N];
    for (int i = 0; i < N; i++)
        src[i] = (unsigned char)(i * 7 + 3);
    void *buf = NULL;
    TU_CHECK(dashattn_memory_alloc(ctx, N, &buf) == DASHATTN_OK && buf, "alloc %d bytes", N);
    TU_CHECK(dashattn_memory_upload(ctx, buf, src, N) == DASHATTN_OK, "upload");
    memset(dst, 0, sizeof dst);
    TU_CHECK(dashattn_memory_download(ctx, dst, buf, N) == DASHATTN_OK, "download");
    TU_CHECK(memcmp(src, dst, N) == 0, "bytes come back unchanged");
    TU_CHECK(dashattn_synchronize(ctx, NULL) == DASHATTN_OK, "synchronize");
    TU_CHECK(dashattn_memory_upload(ctx, buf, NULL, 0) == DASHATTN_OK, "empty copy is fine");
    dashattn_memory_free(ctx, buf);

    void *empty = NULL;
    TU_CHECK(dashattn_memory_alloc(ctx, 0, &empty) == DASHATTN_OK && empty,
             "zero bytes still give a pointer to free");
    dashattn_memory_free(ctx, empty);
    dashattn_memory_free(ctx, NULL);
    dashattn_memory_free(NULL, NULL);

    /* Each call is made here, in order; its status is checked below. */
    struct {
        const char *what, *name;
        dashattn_status got;
    } bad[] = {
        {"alloc without context", "context", dashattn_memory_alloc(NULL, 8, &buf)},
        {"alloc without ptr", "ptr", dashattn_memory_alloc(ctx, 8, NULL)},
        {"upload to NULL", "dst", dashattn_memory_upload(ctx, NULL, src, 8)},
        {"upload from NULL", "src", dashattn_memory_upload(ctx, dst, NULL, 8)},
        {"download without context", "context", dashattn_memory_download(NULL, dst, src, 8)},
        {"synchronize without context", "context", dashattn_synchronize(NULL, NULL)},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        TU_CHECK(bad[i].got == DASHATTN_ERR_INVALID_ARGUMENT, "%s: status %d (want %s)",
                 bad[i].what, (int)bad[i].got, bad[i].name);
    /* Messages are per call: check one right after it happens. */
    dashattn_memory_upload(ctx, NULL, src, 8);
    TU_CHECK(strstr(dashattn_last_error(), "dst") != NULL, "message names dst: '%s'",
             dashattn_last_error());
    dashattn_context_destroy(ctx);
    return tu_finish("test_memory");
}
