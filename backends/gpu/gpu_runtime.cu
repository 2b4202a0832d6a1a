/* SPDX-License-Identifier: MIT */
/* The runtime calls of the launch interface (gpu_kernels.h), so that the
 * plugins' C host code never sees a vendor header. */
#include "gpu_vendor.cuh"

#include <stdio.h>
#include <string.h>

extern "C" const char *dagpu_rt_vendor(void)
{
    return DAGPU_VENDOR;
}

extern "C" const char *dagpu_rt_error_string(dagpu_err err)
{
    return dagpuGetErrorString((dagpu_rt_error)err);
}

extern "C" const char *dagpu_rt_error_name(dagpu_err err)
{
    return dagpuGetErrorName((dagpu_rt_error)err);
}

extern "C" int dagpu_rt_is_out_of_memory(dagpu_err err)
{
    return (dagpu_rt_error)err == dagpu_rt_oom;
}

extern "C" dagpu_err dagpu_rt_device_count(int *count)
{
    *count = 0;
    const dagpu_rt_error e = dagpuGetDeviceCount(count);
    if (e != dagpu_rt_success)
        *count = 0;
    return (dagpu_err)e;
}

extern "C" dagpu_err dagpu_rt_device_info(int device, dagpu_device_info *info)
{
    memset(info, 0, sizeof *info);
    dagpu_rt_props prop;
    const dagpu_rt_error e = dagpuGetDeviceProperties(&prop, device);
    if (e != dagpu_rt_success)
        return (dagpu_err)e;
    snprintf(info->name, sizeof info->name, "%s", prop.name);
#if defined(DAGPU_AMD)
    /* gcnArchName carries target features after a colon ("gfx90a:sramecc+"). */
    snprintf(info->arch, sizeof info->arch, "%s", prop.gcnArchName);
    char *colon = strchr(info->arch, ':');
    if (colon)
        *colon = '\0';
    info->smem_per_block = prop.sharedMemPerBlock;
#else
    snprintf(info->arch, sizeof info->arch, "sm_%d%d", prop.major, prop.minor);
    info->smem_per_block = prop.sharedMemPerBlockOptin;
#endif
    info->sm_count = prop.multiProcessorCount;
    info->warp_size = prop.warpSize;
    info->total_memory = prop.totalGlobalMem;
#if !defined(DAGPU_USE_HIP)
    info->dependent_launch = prop.major >= 9;
#endif
    return (dagpu_err)dagpu_rt_success;
}

extern "C" dagpu_err dagpu_rt_versions(int *driver, int *runtime)
{
    *driver = *runtime = 0;
    dagpu_rt_error e = dagpuDriverGetVersion(driver);
    if (e == dagpu_rt_success)
        e = dagpuRuntimeGetVersion(runtime);
    return (dagpu_err)e;
}

extern "C" dagpu_err dagpu_rt_set_device(int device)
{
    return (dagpu_err)dagpuSetDevice(device);
}

extern "C" dagpu_err dagpu_rt_malloc(void **ptr, size_t bytes)
{
    *ptr = NULL;
    const dagpu_rt_error e = dagpuMalloc(ptr, bytes);
    if (e != dagpu_rt_success)
        *ptr = NULL;
    return (dagpu_err)e;
}

extern "C" void dagpu_rt_free(void *ptr)
{
    (void)dagpuFree(ptr);
}

extern "C" void dagpu_rt_clear_error(void)
{
    (void)dagpuGetLastError();
}

extern "C" dagpu_err dagpu_rt_to_device(void *dst, const void *src, size_t bytes)
{
    return (dagpu_err)dagpuMemcpy(dst, src, bytes, dagpuMemcpyHostToDevice);
}

extern "C" dagpu_err dagpu_rt_to_host(void *dst, const void *src, size_t bytes)
{
    return (dagpu_err)dagpuMemcpy(dst, src, bytes, dagpuMemcpyDeviceToHost);
}

extern "C" dagpu_err dagpu_rt_to_host_async(void *dst, const void *src, size_t bytes, void *stream)
{
    return (dagpu_err)dagpuMemcpyAsync(dst, src, bytes, dagpuMemcpyDeviceToHost,
                                       (dagpu_rt_stream)stream);
}

extern "C" dagpu_err dagpu_rt_zero(void *ptr, size_t bytes)
{
    return (dagpu_err)dagpuMemset(ptr, 0, bytes);
}

extern "C" dagpu_err dagpu_rt_zero_async(void *ptr, size_t bytes, void *stream)
{
    return (dagpu_err)dagpuMemsetAsync(ptr, 0, bytes, (dagpu_rt_stream)stream);
}

extern "C" dagpu_err dagpu_rt_stream_sync(void *stream)
{
    return (dagpu_err)dagpuStreamSynchronize((dagpu_rt_stream)stream);
}
