/* SPDX-License-Identifier: MIT */
/* The GPU backend plugins (cuda, hip): device discovery, memory, streams and
 * errors. Plans are made in gpu_plan.c, the compute entry points are in
 * gpu_forward.c and gpu_decode.c. Only the launch interface (gpu_kernels.h)
 * is seen from here. */
#include "gpu_plugin.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const dashattn_host *dagpu_host;

dashattn_status dagpu_fail(dagpu_err err, const char *what)
{
    const dashattn_status st =
        dagpu_rt_is_out_of_memory(err) ? DASHATTN_ERR_OUT_OF_MEMORY : DASHATTN_ERR_DEVICE;
    if (dagpu_host)
        dagpu_host->set_error(DAGPU_NAME " backend: %s: %s (%s)", what, dagpu_rt_error_string(err),
                              dagpu_rt_error_name(err));
    return st;
}

dashattn_status dagpu_enter(const dagpu_state *st)
{
    const dagpu_err err = dagpu_rt_set_device(st->device);
    return err == 0 ? DASHATTN_OK : dagpu_fail(err, "selecting the device");
}

static int gpu_probe(const dashattn_host *host, char *reason, size_t reason_size)
{
    (void)host;
    int count = 0;
    const dagpu_err err = dagpu_rt_device_count(&count);
    if (err != 0) {
        snprintf(reason, reason_size, "no usable %s driver or device: %s", dagpu_rt_vendor(),
                 dagpu_rt_error_string(err));
        return 0;
    }
    if (count == 0) {
        snprintf(reason, reason_size, "no %s device", dagpu_rt_vendor());
        return 0;
    }
    return 100;
}

/* DASHATTN_GPU_KERNELS: unset or "auto" (the fastest kernels a plan and its
 * tensors allow), "portable" (never the NVIDIA-only ones: 1) or "sm80" (the
 * NVIDIA-only ones Ampere runs, never the Hopper-only ones: 2). -1 if
 * invalid. */
static int portable_requested(void)
{
    const char *v = getenv("DASHATTN_GPU_KERNELS");
    if (!v || !v[0] || strcmp(v, "auto") == 0)
        return 0;
    if (strcmp(v, "sm80") == 0)
        return 2;
    return strcmp(v, "portable") == 0 ? 1 : -1;
}

/* The decimal number in environment variable name, into *n: 0 if it is
 * unset or empty (*n untouched), 1 if it is a number in [lo, hi], -1 if
 * not. */
static int env_count(const char *name, unsigned long long lo, unsigned long long hi,
                     unsigned long long *n)
{
    const char *v = getenv(name);
    if (!v || !v[0])
        return 0;
    char *end;
    const unsigned long long x = strtoull(v, &end, 10);
    if (*end || v[0] == '-' || x < lo || x > hi)
        return -1;
    *n = x;
    return 1;
}

/* DASHATTN_GPU_SHARED_MEMORY: bytes of shared memory per thread block the
 * plans may use, below the device's own limit (0 if unset, SIZE_MAX if
 * invalid). With 65536 an NVIDIA card plans as an AMD one does. */
static size_t shared_memory_cap(void)
{
    unsigned long long n = 0;
    const int set = env_count("DASHATTN_GPU_SHARED_MEMORY", 1024, SIZE_MAX, &n);
    return set < 0 ? SIZE_MAX : (size_t)n;
}

/* DASHATTN_GPU_DEPENDENT_LAUNCH: unset or "1" (launch decode's kernels as
 * dependents where the device can), or "0" (plain launches, to measure
 * what the overlap is worth). -1 if invalid. */
static int dependent_launch_requested(void)
{
    const char *v = getenv("DASHATTN_GPU_DEPENDENT_LAUNCH");
    if (!v || !v[0] || strcmp(v, "1") == 0)
        return 1;
    return strcmp(v, "0") == 0 ? 0 : -1;
}

/* DASHATTN_GPU_DECODE_CTAS: thread blocks of the tensor-core decode split
 * in place of one wave of them (0 if unset, -1 if invalid). Few of them
 * make a small call's runs cross from one sequence or KV head into the
 * next, which tests that path without a long cache. */
static int64_t decode_ctas_requested(void)
{
    unsigned long long n = 0;
    const int set = env_count("DASHATTN_GPU_DECODE_CTAS", 1, DAGPU_DECODE_MAX_STREAM_CTAS, &n);
    return set < 0 ? -1 : (int64_t)n;
}

/* DASHATTN_GPU_BACKWARD: "mma" (the backward's tensor-core kernels where a
 * plan and its tensors allow) or "portable" (its portable kernels only);
 * unset: DAGPU_BACKWARD_MMA_DEFAULT. -1 if invalid. The tensor-core
 * backward passed the parity harness on an H200 (BENCHMARKS.md, issue #14). */
#define DAGPU_BACKWARD_MMA_DEFAULT 1
static int backward_mma_requested(void)
{
    const char *v = getenv("DASHATTN_GPU_BACKWARD");
    if (!v || !v[0])
        return DAGPU_BACKWARD_MMA_DEFAULT;
    if (strcmp(v, "mma") == 0)
        return 1;
    return strcmp(v, "portable") == 0 ? 0 : -1;
}

static const char *kernels_in_use(int portable)
{
#ifdef DAGPU_HAVE_NV
    if (portable == 1)
        return "portable only (DASHATTN_GPU_KERNELS=portable)";
    return portable == 2
               ? "portable and NVIDIA tensor-core, no Hopper-only (DASHATTN_GPU_KERNELS=sm80)"
               : "portable and NVIDIA tensor-core (wgmma on sm_90)";
#else
    (void)portable;
    return "portable";
#endif
}

static size_t gpu_describe(char *buffer, size_t size)
{
    int count = 0, driver = 0, runtime = 0;
    dagpu_rt_device_count(&count);
    dagpu_rt_versions(&driver, &runtime);
    const int portable = portable_requested();
    size_t used = 0;
    /* CUDA encodes versions as 1000 major + 10 minor, HIP as 10^7 major +
     * 10^5 minor + patch. */
    const int hip = strcmp(dagpu_rt_vendor(), "HIP") == 0;
    const int div = hip ? 10000000 : 1000, mdiv = hip ? 100000 : 10;
    int n = snprintf(buffer, size, "%s driver %d.%d, runtime %d.%d, %d device(s); kernels: %s",
                     dagpu_rt_vendor(), driver / div, driver % div / mdiv, runtime / div,
                     runtime % div / mdiv, count,
                     portable < 0 ? "none (DASHATTN_GPU_KERNELS is not auto or portable)"
                                  : kernels_in_use(portable));
    used = n > 0 ? (size_t)n : 0;
    for (int d = 0; d < count; d++) {
        dagpu_device_info info;
        if (dagpu_rt_device_info(d, &info) != 0)
            continue;
        n = snprintf(used < size ? buffer + used : NULL, used < size ? size - used : 0,
                     "\n  device %d: %s, %s, %d multiprocessors, warp %d, %zu KiB shared memory "
                     "per block, %.1f GiB",
                     d, info.name, info.arch, info.sm_count, info.warp_size,
                     info.smem_per_block / 1024,
                     (double)info.total_memory / (1024.0 * 1024.0 * 1024.0));
        used += n > 0 ? (size_t)n : 0;
    }
    return used;
}

/* The host tables of cores that predate plan_prepare end before
 * prepares_plans. */
static int host_prepares_plans(const dashattn_host *host)
{
    return host->struct_size >= offsetof(dashattn_host, prepares_plans) + sizeof(uint32_t) &&
           host->prepares_plans;
}

static dashattn_status gpu_init(const dashattn_host *host, const dashattn_context_options *options,
                                void **state)
{
    dagpu_host = host;
    if (!host_prepares_plans(host)) {
        host->set_error(DAGPU_NAME " backend: this libdashattn does not prepare plans for its "
                                   "plugins; the plugin needs the libdashattn it was built with");
        return DASHATTN_ERR_ABI_MISMATCH;
    }
    const int portable = portable_requested();
    if (portable < 0) {
        host->set_error(DAGPU_NAME " backend: DASHATTN_GPU_KERNELS must be \"auto\", "
                                   "\"portable\" or \"sm80\"");
        return DASHATTN_ERR_INVALID_ARGUMENT;
    }
    const int dependent = dependent_launch_requested();
    if (dependent < 0) {
        host->set_error(DAGPU_NAME " backend: DASHATTN_GPU_DEPENDENT_LAUNCH must be 0 or 1");
        return DASHATTN_ERR_INVALID_ARGUMENT;
    }
    const int backward_mma = backward_mma_requested();
    if (backward_mma < 0) {
        host->set_error(DAGPU_NAME " backend: DASHATTN_GPU_BACKWARD must be \"mma\" or "
                                   "\"portable\"");
        return DASHATTN_ERR_INVALID_ARGUMENT;
    }
    const int64_t decode_ctas = decode_ctas_requested();
    if (decode_ctas < 0) {
        host->set_error(DAGPU_NAME " backend: DASHATTN_GPU_DECODE_CTAS must be a number from 1 "
                                   "to %d",
                        DAGPU_DECODE_MAX_STREAM_CTAS);
        return DASHATTN_ERR_INVALID_ARGUMENT;
    }
    const size_t cap = shared_memory_cap();
    if (cap == SIZE_MAX) {
        host->set_error(DAGPU_NAME " backend: DASHATTN_GPU_SHARED_MEMORY must be a number of "
                                   "bytes, at least 1024");
        return DASHATTN_ERR_INVALID_ARGUMENT;
    }
    int count = 0;
    dagpu_err err = dagpu_rt_device_count(&count);
    if (err != 0)
        return dagpu_fail(err, "counting devices");
    if (options->device < 0 || options->device >= count) {
        host->set_error(DAGPU_NAME " backend: device %d requested, %d device(s) present",
                        options->device, count);
        return DASHATTN_ERR_INVALID_ARGUMENT;
    }
    dagpu_state *st = calloc(1, sizeof *st);
    if (!st) {
        host->set_error(DAGPU_NAME " backend: out of host memory");
        return DASHATTN_ERR_OUT_OF_MEMORY;
    }
    st->device = options->device;
    st->portable = portable == 1;
    st->backward_mma = backward_mma;
    st->decode_ctas = decode_ctas;
    err = dagpu_rt_device_info(st->device, &st->info);
    if (err == 0)
        err = dagpu_rt_set_device(st->device);
    if (err == 0)
        err = dagpu_rt_malloc((void **)&st->error, sizeof(dagpu_device_error));
    if (err == 0)
        err = dagpu_rt_zero(st->error, sizeof(dagpu_device_error));
    if (err != 0) {
        const dashattn_status s = dagpu_fail(err, "initialising the device");
        if (st->error)
            dagpu_rt_free(st->error);
        free(st);
        return s;
    }
    st->hopper = portable == 0 && strcmp(st->info.arch, "sm_90") == 0;
    if (cap && cap < st->info.smem_per_block)
        st->info.smem_per_block = cap;
    st->info.dependent_launch &= dependent;
    /* The kernels' logical warps of 32 lanes must tile the physical warp. */
    if (st->info.warp_size != 32 && st->info.warp_size != 64) {
        host->set_error(DAGPU_NAME " backend: %s has warps of %d lanes; the kernels need 32 or 64",
                        st->info.name, st->info.warp_size);
        dagpu_rt_free(st->error);
        free(st);
        return DASHATTN_ERR_UNSUPPORTED;
    }
    char capped[64] = "";
    if (cap && cap == st->info.smem_per_block)
        snprintf(capped, sizeof capped, ", shared memory capped at %zu bytes", cap);
    snprintf(st->name, sizeof st->name, "%s (device %d, %s%s%s)", st->info.name, st->device,
             st->info.arch, st->portable ? ", portable kernels" : "", capped);
    *state = st;
    return DASHATTN_OK;
}

static void gpu_release(void *state)
{
    dagpu_state *st = state;
    if (!st)
        return;
    dagpu_rt_set_device(st->device);
    dagpu_rt_free(st->error);
    free(st);
}

static const char *gpu_device_name(void *state)
{
    return ((const dagpu_state *)state)->name;
}

static dashattn_status gpu_alloc(void *state, size_t bytes, void **ptr)
{
    dashattn_status s = dagpu_enter(state);
    if (s != DASHATTN_OK)
        return s;
    const dagpu_err err = dagpu_rt_malloc(ptr, bytes);
    if (err != 0) {
        dagpu_rt_clear_error(); /* an allocation failure is not sticky */
        return dagpu_fail(err, "allocating device memory");
    }
    return DASHATTN_OK;
}

static void gpu_free(void *state, void *ptr)
{
    if (dagpu_enter(state) == DASHATTN_OK)
        dagpu_rt_free(ptr);
}

/* One synchronous copy in the direction copy goes. */
static dashattn_status gpu_copy(void *state, dagpu_err (*copy)(void *, const void *, size_t),
                                void *dst, const void *src, size_t bytes, const char *what)
{
    dashattn_status s = dagpu_enter(state);
    if (s != DASHATTN_OK)
        return s;
    const dagpu_err err = copy(dst, src, bytes);
    return err == 0 ? DASHATTN_OK : dagpu_fail(err, what);
}

static dashattn_status gpu_upload(void *state, void *dst, const void *src, size_t bytes)
{
    return gpu_copy(state, dagpu_rt_to_device, dst, src, bytes, "copying to the device");
}

static dashattn_status gpu_download(void *state, void *dst, const void *src, size_t bytes)
{
    return gpu_copy(state, dagpu_rt_to_host, dst, src, bytes, "copying from the device");
}

static const char *device_error_what(int what)
{
    switch (what) {
    case DAGPU_BAD_SEQ_LEN:
        return "seq_lens entry out of range";
    case DAGPU_BAD_PAGE:
        return "block_table entry is not a page of the cache";
    default:
        return "no room in the cache for the appended tokens";
    }
}

/* Waits for the stream, then reports the first error a kernel found in
 * device-resident arguments since the last synchronize. */
static dashattn_status gpu_synchronize(void *state, void *stream)
{
    dagpu_state *st = state;
    dashattn_status s = dagpu_enter(st);
    if (s != DASHATTN_OK)
        return s;
    dagpu_err err = dagpu_rt_stream_sync(stream);
    if (err != 0)
        return dagpu_fail(err, "waiting for the stream");
    dagpu_device_error found;
    err = dagpu_rt_to_host(&found, st->error, sizeof found);
    if (err != 0)
        return dagpu_fail(err, "reading the device error word");
    if (found.code == 0)
        return DASHATTN_OK;
    err = dagpu_rt_zero(st->error, sizeof found);
    if (err != 0)
        return dagpu_fail(err, "clearing the device error word");
    dagpu_host->set_error(DAGPU_NAME
                          " backend: an earlier call on this context failed on the device: "
                          "sequence %d: %s (value %d); its outputs were set to NaN and the cache "
                          "left unchanged",
                          found.batch, device_error_what(found.what), found.value);
    return (dashattn_status)found.code;
}

static const dashattn_backend_iface gpu_iface = {
    .abi_version = DASHATTN_BACKEND_ABI_VERSION,
    .struct_size = sizeof(dashattn_backend_iface),
    .name = DAGPU_NAME,
    .probe = gpu_probe,
    .describe = gpu_describe,
    .init = gpu_init,
    .release = gpu_release,
    .device_name = gpu_device_name,
    .workspace_size = dagpu_workspace_size,
    .alloc = gpu_alloc,
    .free = gpu_free,
    .forward = dagpu_forward,
    .backward = dagpu_backward,
    .cache_append = dagpu_cache_append,
    .decode = dagpu_decode,
    .upload = gpu_upload,
    .download = gpu_download,
    .synchronize = gpu_synchronize,
    .plan_prepare = dagpu_plan_prepare,
    .plan_release = dagpu_plan_release,
};

__attribute__((visibility("default"))) const dashattn_backend_iface *dashattn_backend_entry(void);

const dashattn_backend_iface *dashattn_backend_entry(void)
{
    return &gpu_iface;
}
