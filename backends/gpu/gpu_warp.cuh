/* SPDX-License-Identifier: MIT */
/* Warp-level helpers of the portable kernels, for a logical warp of W lanes
 * (a power of two up to 32) inside a physical warp of 32 (NVIDIA, AMD RDNA
 * in wave32) or 64 lanes (AMD CDNA). A physical warp of 64 holds several
 * logical warps; each shuffles, votes and reduces within its own lanes, so
 * no kernel depends on the physical width. Every helper must be reached by
 * all lanes of the logical warp. */
#ifndef DASHATTN_GPU_WARP_CUH
#define DASHATTN_GPU_WARP_CUH

#include "gpu_vendor.cuh"

/* The logical warp of every portable kernel. */
#define DA_WARP 32

template <int W> static __device__ __forceinline__ int da_lane()
{
    return (int)(threadIdx.x & (W - 1));
}

/* Index of the thread's logical warp in its (one-dimensional) block. */
template <int W> static __device__ __forceinline__ int da_warp_id()
{
    return (int)(threadIdx.x / W);
}

template <int W> static __device__ __forceinline__ int da_warps()
{
    return (int)(blockDim.x / W);
}

template <int W, typename T> static __device__ __forceinline__ T da_shfl_xor(T x, int offset)
{
#if defined(DAGPU_AMD)
    return __shfl_xor(x, offset, W);
#else
    return __shfl_xor_sync(0xffffffffu, x, offset, W);
#endif
}

/* Lane src's x, src counted within the logical warp. */
template <int W, typename T> static __device__ __forceinline__ T da_shfl(T x, int src)
{
#if defined(DAGPU_AMD)
    return __shfl(x, src, W);
#else
    return __shfl_sync(0xffffffffu, x, src, W);
#endif
}

/* Bit l set where lane l of the logical warp has pred. */
template <int W> static __device__ __forceinline__ uint32_t da_ballot(bool pred)
{
    static_assert(W <= 32, "a logical warp's ballot is one 32-bit word");
#if defined(DAGPU_AMD)
    const unsigned long long all = __ballot(pred);
    const int first = (int)(__lane_id() & ~(unsigned)(W - 1));
    const unsigned long long mine = all >> first;
#else
    const uint32_t all = __ballot_sync(0xffffffffu, pred);
    const uint32_t mine = W == 32 ? all : all >> (threadIdx.x & 31 & ~(W - 1));
#endif
    return W == 32 ? (uint32_t)mine : (uint32_t)mine & ((1u << W) - 1u);
}

template <int W> static __device__ __forceinline__ bool da_any(bool pred)
{
    return da_ballot<W>(pred) != 0u;
}

/* Orders the logical warp's shared-memory accesses: what one lane wrote
 * before is visible to the others after. An AMD wavefront runs its lanes in
 * lockstep and needs only the fences. */
template <int W> static __device__ __forceinline__ void da_warp_sync()
{
#if defined(DAGPU_AMD)
    __builtin_amdgcn_fence(__ATOMIC_RELEASE, "wavefront");
    __builtin_amdgcn_wave_barrier();
    __builtin_amdgcn_fence(__ATOMIC_ACQUIRE, "wavefront");
#else
    __syncwarp();
#endif
}

template <int W, typename T> static __device__ __forceinline__ T da_warp_sum(T x)
{
    for (int o = W / 2; o > 0; o >>= 1)
        x += da_shfl_xor<W>(x, o);
    return x;
}

template <int W> static __device__ __forceinline__ float da_warp_max(float x)
{
    for (int o = W / 2; o > 0; o >>= 1)
        x = fmaxf(x, da_shfl_xor<W>(x, o));
    return x;
}

template <int W> static __device__ __forceinline__ double da_warp_min(double x)
{
    for (int o = W / 2; o > 0; o >>= 1)
        x = fmin(x, da_shfl_xor<W>(x, o));
    return x;
}

#endif
