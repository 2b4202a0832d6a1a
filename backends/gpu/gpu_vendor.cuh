/* SPDX-License-Identifier: MIT */
/* The one place that knows which GPU toolchain compiles the kernels: the
 * runtime API, 16-bit float types, and the few intrinsics whose spelling
 * differs. nvcc builds the cuda plugin (CUDA's own API); hipcc builds the
 * hip plugin (HIP's API, for AMD, or for NVIDIA through HIP's nvidia_detail
 * headers when nvcc compiles with __HIP_PLATFORM_NVIDIA__). Everything else
 * in backends/gpu is written once against the names defined here. */
#ifndef DASHATTN_GPU_VENDOR_CUH
#define DASHATTN_GPU_VENDOR_CUH

#if defined(DAGPU_USE_HIP)
#include <hip/hip_fp16.h>
#include <hip/hip_runtime.h>

#define DAGPU_VENDOR "HIP"
typedef hipError_t dagpu_rt_error;
typedef hipStream_t dagpu_rt_stream;
typedef hipDeviceProp_t dagpu_rt_props;
#define dagpu_rt_success hipSuccess
#define dagpu_rt_oom hipErrorOutOfMemory
#define dagpuGetLastError hipGetLastError
#define dagpuGetErrorString hipGetErrorString
#define dagpuGetErrorName hipGetErrorName
#define dagpuGetDeviceCount hipGetDeviceCount
#define dagpuGetDeviceProperties hipGetDeviceProperties
#define dagpuSetDevice hipSetDevice
#define dagpuDriverGetVersion hipDriverGetVersion
#define dagpuRuntimeGetVersion hipRuntimeGetVersion
#define dagpuMalloc hipMalloc
#define dagpuFree hipFree
#define dagpuMemcpy hipMemcpy
#define dagpuMemcpyAsync hipMemcpyAsync
#define dagpuMemsetAsync hipMemsetAsync
#define dagpuMemset hipMemset
#define dagpuStreamSynchronize hipStreamSynchronize
#define dagpuMemcpyHostToDevice hipMemcpyHostToDevice
#define dagpuMemcpyDeviceToHost hipMemcpyDeviceToHost
#define dagpuFuncSetAttribute hipFuncSetAttribute
#define dagpuFuncAttributeMaxDynamicSharedMemorySize hipFuncAttributeMaxDynamicSharedMemorySize
#else
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#define DAGPU_VENDOR "CUDA"
typedef cudaError_t dagpu_rt_error;
typedef cudaStream_t dagpu_rt_stream;
typedef struct cudaDeviceProp dagpu_rt_props;
#define dagpu_rt_success cudaSuccess
#define dagpu_rt_oom cudaErrorMemoryAllocation
#define dagpuGetLastError cudaGetLastError
#define dagpuGetErrorString cudaGetErrorString
#define dagpuGetErrorName cudaGetErrorName
#define dagpuGetDeviceCount cudaGetDeviceCount
#define dagpuGetDeviceProperties cudaGetDeviceProperties
#define dagpuSetDevice cudaSetDevice
#define dagpuDriverGetVersion cudaDriverGetVersion
#define dagpuRuntimeGetVersion cudaRuntimeGetVersion
#define dagpuMalloc cudaMalloc
#define dagpuFree cudaFree
#define dagpuMemcpy cudaMemcpy
#define dagpuMemcpyAsync cudaMemcpyAsync
#define dagpuMemsetAsync cudaMemsetAsync
#define dagpuMemset cudaMemset
#define dagpuStreamSynchronize cudaStreamSynchronize
#define dagpuMemcpyHostToDevice cudaMemcpyHostToDevice
#define dagpuMemcpyDeviceToHost cudaMemcpyDeviceToHost
#define dagpuFuncSetAttribute cudaFuncSetAttribute
#define dagpuFuncAttributeMaxDynamicSharedMemorySize cudaFuncAttributeMaxDynamicSharedMemorySize
#endif

/* AMD hardware: wave32 or wave64 warps, no _sync intrinsics in HIP 5.2. */
#if defined(DAGPU_USE_HIP) && defined(__HIP_PLATFORM_AMD__)
#define DAGPU_AMD 1
#endif

#include "gpu_kernels.h"

/* Quiet NaN and infinity: the CUDA names live in math_constants.h, which HIP
 * 5.2 lacks. */
#define DA_NAN_F __builtin_nanf("")
#define DA_INF_F __builtin_inff()
#define DA_INF __builtin_inf()

/* Launch bounds with CUDA's minimum of resident blocks per multiprocessor,
 * which only NVIDIA's compiler reads that way (HIP's second argument counts
 * waves per execution unit). */
#if defined(DAGPU_AMD)
#define DA_LAUNCH_BOUNDS(threads, blocks) __launch_bounds__(threads)
#else
#define DA_LAUNCH_BOUNDS(threads, blocks) __launch_bounds__(threads, blocks)
#endif

/* bf16 <-> f32. HIP 5.2 has no __hip_bfloat16 intrinsics usable in both
 * kernels and host code, so AMD builds convert by bits (round to nearest
 * even, NaN kept quiet), which is what the CUDA intrinsics compute. */
#if defined(DAGPU_USE_HIP)
typedef unsigned short da_bf16;
static __device__ __forceinline__ float da_bf16_to_float(da_bf16 x)
{
    return __uint_as_float((unsigned)x << 16);
}
static __device__ __forceinline__ da_bf16 da_float_to_bf16(float x)
{
    const unsigned u = __float_as_uint(x);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (da_bf16)((u >> 16) | 0x40u);
    return (da_bf16)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
#else
typedef __nv_bfloat16 da_bf16;
static __device__ __forceinline__ float da_bf16_to_float(da_bf16 x)
{
    return __bfloat162float(x);
}
static __device__ __forceinline__ da_bf16 da_float_to_bf16(float x)
{
    return __float2bfloat16_rn(x);
}
#endif

/* Raises a kernel's dynamic shared-memory limit to bytes (needed above
 * 48 KiB on NVIDIA; a no-op within AMD's 64 KiB of LDS). */
template <typename Kernel> static inline dagpu_rt_error da_allow_smem(Kernel kernel, size_t bytes)
{
#if defined(DAGPU_AMD)
    (void)kernel;
    (void)bytes;
    return dagpu_rt_success;
#else
    return dagpuFuncSetAttribute(reinterpret_cast<const void *>(kernel),
                                 dagpuFuncAttributeMaxDynamicSharedMemorySize, (int)bytes);
#endif
}

/* Launches kernel on stream st. With chained (dagpu_device_info's
 * dependent_launch) it may start while the kernel before it on the stream
 * drains; it must then call da_wait_previous before it touches anything that
 * kernel writes or reads, and before it can end. */
template <typename... Params, typename... Args>
static inline dagpu_rt_error da_launch(void (*kernel)(Params...), dim3 grid, dim3 block,
                                       size_t smem, dagpu_rt_stream st, int chained, Args... args)
{
#if !defined(DAGPU_USE_HIP)
    if (chained) {
        cudaLaunchAttribute attr[1];
        attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
        attr[0].val.programmaticStreamSerializationAllowed = 1;
        cudaLaunchConfig_t cfg = {};
        cfg.gridDim = grid;
        cfg.blockDim = block;
        cfg.dynamicSmemBytes = smem;
        cfg.stream = st;
        cfg.attrs = attr;
        cfg.numAttrs = 1;
        return cudaLaunchKernelEx(&cfg, kernel, args...);
    }
#else
    (void)chained;
#endif
    kernel<<<grid, block, smem, st>>>(args...);
    return dagpuGetLastError();
}

/* Waits until the kernel before this one on the stream has finished and its
 * writes are visible (a no-op for a plain launch), and lets the kernel after
 * this one be launched now: its blocks then take the slots this grid's last
 * blocks leave, instead of waiting for the whole grid to end. Called by every
 * thread before anything else. */
static __device__ __forceinline__ void da_wait_previous()
{
#if !defined(DAGPU_USE_HIP) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

#endif
