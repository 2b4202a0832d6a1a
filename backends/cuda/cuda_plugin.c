/* SPDX-License-Identifier: MIT */
/* The CUDA backend plugin: device discovery, memory, streams and errors.
 * The compute entry points are in cuda_forward.c and cuda_decode.c. */
#include "cuda_plugin.h"

#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const dashattn_host *dacuda_host;

dashattn_status dacuda_fail(cudaError_t err, const char *what)
{
    const dashattn_status st =
        err == cudaErrorMemoryAllocation ? DASHATTN_ERR_OUT_OF_MEMORY : DASHATTN_ERR_DEVICE;
    if (dacuda_host)
        dacuda_host->set_error("cuda backend: %s: %s (%s)", what, cudaGetErrorString(err),
                               cudaGetErrorName(err));
    return st;
}

dashattn_status dacuda_enter(const dacuda_state *st)
{
    const cudaError_t err = cudaSetDevice(st->device);
    return err == cudaSuccess ? DASHATTN_OK : dacuda_fail(err, "cudaSetDevice");
}

static int cuda_probe(const dashattn_host *host, char *reason, size_t reason_size)
{
    (void)host;
    int count = 0;
    const cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) {
        snprintf(reason, reason_size, "no usable CUDA driver or device: %s",
                 cudaGetErrorString(err));
        return 0;
    }
    if (count == 0) {
        snprintf(reason, reason_size, "no CUDA device");
        return 0;
    }
    return 100;
}

static size_t cuda_describe(char *buffer, size_t size)
{
    int count = 0, driver = 0, runtime = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess)
        count = 0;
    cudaDriverGetVersion(&driver);
    cudaRuntimeGetVersion(&runtime);
    size_t used = 0;
    int n = snprintf(buffer, size, "CUDA driver %d.%d, runtime %d.%d, %d device(s)", driver / 1000,
                     driver % 1000 / 10, runtime / 1000, runtime % 1000 / 10, count);
    used = n > 0 ? (size_t)n : 0;
    for (int d = 0; d < count; d++) {
        struct cudaDeviceProp prop;
        if (cudaGetDeviceProperties(&prop, d) != cudaSuccess)
            continue;
        n = snprintf(used < size ? buffer + used : NULL, used < size ? size - used : 0,
                     "\n  device %d: %s, compute capability %d.%d, %d SMs, %.1f GiB", d, prop.name,
                     prop.major, prop.minor, prop.multiProcessorCount,
                     (double)prop.totalGlobalMem / (1024.0 * 1024.0 * 1024.0));
        used += n > 0 ? (size_t)n : 0;
    }
    return used;
}

static dashattn_status cuda_init(const dashattn_host *host, const dashattn_context_options *options,
                                 void **state)
{
    dacuda_host = host;
    int count = 0;
    cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess)
        return dacuda_fail(err, "cudaGetDeviceCount");
    if (options->device < 0 || options->device >= count) {
        host->set_error("cuda backend: device %d requested, %d device(s) present", options->device,
                        count);
        return DASHATTN_ERR_INVALID_ARGUMENT;
    }
    dacuda_state *st = calloc(1, sizeof *st);
    if (!st) {
        host->set_error("cuda backend: out of host memory");
        return DASHATTN_ERR_OUT_OF_MEMORY;
    }
    st->device = options->device;
    struct cudaDeviceProp prop;
    err = cudaGetDeviceProperties(&prop, st->device);
    if (err == cudaSuccess)
        err = cudaSetDevice(st->device);
    if (err == cudaSuccess)
        err = cudaMalloc((void **)&st->error, sizeof(dacuda_device_error));
    if (err == cudaSuccess)
        err = cudaMemset(st->error, 0, sizeof(dacuda_device_error));
    if (err != cudaSuccess) {
        const dashattn_status s = dacuda_fail(err, "initialising the device");
        if (st->error)
            cudaFree(st->error);
        free(st);
        return s;
    }
    st->sm_count = prop.multiProcessorCount;
    st->smem_optin = prop.sharedMemPerBlockOptin;
    snprintf(st->name, sizeof st->name, "%s (device %d, sm_%d%d)", prop.name, st->device,
             prop.major, prop.minor);
    *state = st;
    return DASHATTN_OK;
}

static void cuda_release(void *state)
{
    dacuda_state *st = state;
    if (!st)
        return;
    cudaSetDevice(st->device);
    cudaFree(st->error);
    free(st);
}

static const char *cuda_device_name(void *state)
{
    return ((const dacuda_state *)state)->name;
}

static dashattn_status cuda_alloc(void *state, size_t bytes, void **ptr)
{
    dashattn_status s = dacuda_enter(state);
    if (s != DASHATTN_OK)
        return s;
    const cudaError_t err = cudaMalloc(ptr, bytes);
    if (err != cudaSuccess) {
        *ptr = NULL;
        cudaGetLastError(); /* an allocation failure is not sticky */
        return dacuda_fail(err, "cudaMalloc");
    }
    return DASHATTN_OK;
}

static void cuda_free(void *state, void *ptr)
{
    if (dacuda_enter(state) == DASHATTN_OK)
        cudaFree(ptr);
}

static dashattn_status cuda_copy(void *state, void *dst, const void *src, size_t bytes,
                                 enum cudaMemcpyKind kind)
{
    dashattn_status s = dacuda_enter(state);
    if (s != DASHATTN_OK)
        return s;
    const cudaError_t err = cudaMemcpy(dst, src, bytes, kind);
    return err == cudaSuccess ? DASHATTN_OK : dacuda_fail(err, "cudaMemcpy");
}

static dashattn_status cuda_upload(void *state, void *dst, const void *src, size_t bytes)
{
    return cuda_copy(state, dst, src, bytes, cudaMemcpyHostToDevice);
}

static dashattn_status cuda_download(void *state, void *dst, const void *src, size_t bytes)
{
    return cuda_copy(state, dst, src, bytes, cudaMemcpyDeviceToHost);
}

static const char *device_error_what(int what)
{
    switch (what) {
    case DACUDA_BAD_SEQ_LEN:
        return "seq_lens entry out of range";
    case DACUDA_BAD_PAGE:
        return "block_table entry is not a page of the cache";
    default:
        return "no room in the cache for the appended tokens";
    }
}

/* Waits for the stream, then reports the first error a kernel found in
 * device-resident arguments since the last synchronize. */
static dashattn_status cuda_synchronize(void *state, void *stream)
{
    dacuda_state *st = state;
    dashattn_status s = dacuda_enter(st);
    if (s != DASHATTN_OK)
        return s;
    cudaError_t err = cudaStreamSynchronize((cudaStream_t)stream);
    if (err != cudaSuccess)
        return dacuda_fail(err, "cudaStreamSynchronize");
    dacuda_device_error found;
    err = cudaMemcpy(&found, st->error, sizeof found, cudaMemcpyDeviceToHost);
    if (err != cudaSuccess)
        return dacuda_fail(err, "reading the device error word");
    if (found.code == 0)
        return DASHATTN_OK;
    err = cudaMemset(st->error, 0, sizeof found);
    if (err != cudaSuccess)
        return dacuda_fail(err, "clearing the device error word");
    dacuda_host->set_error("cuda backend: an earlier call on this context failed on the device: "
                           "sequence %d: %s (value %d); its outputs were set to NaN and the cache "
                           "left unchanged",
                           found.batch, device_error_what(found.what), found.value);
    return (dashattn_status)found.code;
}

static const dashattn_backend_iface cuda_iface = {
    .abi_version = DASHATTN_BACKEND_ABI_VERSION,
    .struct_size = sizeof(dashattn_backend_iface),
    .name = "cuda",
    .probe = cuda_probe,
    .describe = cuda_describe,
    .init = cuda_init,
    .release = cuda_release,
    .device_name = cuda_device_name,
    .workspace_size = dacuda_workspace_size,
    .alloc = cuda_alloc,
    .free = cuda_free,
    .forward = dacuda_forward,
    .backward = NULL, /* the GPU backward is not written yet: the core answers UNSUPPORTED */
    .cache_append = dacuda_cache_append,
    .decode = dacuda_decode,
    .upload = cuda_upload,
    .download = cuda_download,
    .synchronize = cuda_synchronize,
};

__attribute__((visibility("default"))) const dashattn_backend_iface *dashattn_backend_entry(void);

const dashattn_backend_iface *dashattn_backend_entry(void)
{
    return &cuda_iface;
}
