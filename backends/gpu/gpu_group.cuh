/* SPDX-License-Identifier: MIT */
/* The threads that share one row's reductions in the threshold searches:
 * one logical warp (stage 1 of the forward, which gives each row a warp) or
 * a whole thread block (decode, whose few rows must each be spread over many
 * threads to finish quickly). The searches in gpu_entmax.cuh are written
 * once against this interface. Every member must be reached by all threads
 * of the group, with the same arguments' shapes. */
#ifndef DASHATTN_GPU_GROUP_CUH
#define DASHATTN_GPU_GROUP_CUH

#include "gpu_warp.cuh"

struct da_warp_group {
    __device__ __forceinline__ int rank() const
    {
        return da_lane<DA_WARP>();
    }
    __device__ __forceinline__ int size() const
    {
        return DA_WARP;
    }
    template <typename T> __device__ __forceinline__ T sum(T x) const
    {
        return da_warp_sum<DA_WARP>(x);
    }
    __device__ __forceinline__ float max(float x) const
    {
        return da_warp_max<DA_WARP>(x);
    }
    __device__ __forceinline__ double min(double x) const
    {
        return da_warp_min<DA_WARP>(x);
    }
    /* N sums, and a minimum when lo is given, in one go. */
    template <typename T, int N> __device__ __forceinline__ void sums(T (&v)[N], T *lo) const
    {
        for (int i = 0; i < N; i++)
            v[i] = da_warp_sum<DA_WARP>(v[i]);
        if (lo)
            *lo = da_warp_min<DA_WARP>((double)*lo);
    }
};

/* W lanes of a logical warp (W a power of two below DA_WARP), the warp
 * holding DA_WARP / W such groups side by side: a row's threshold search
 * costs a warp the same element work whatever W is, but its reductions,
 * log2 W shuffles per value, and its scalar steps serve DA_WARP / W rows at
 * once, where a whole warp per row of a few hundred candidates spent most
 * of each step reducing. The groups of a warp may leave a search after
 * different numbers of steps, so on NVIDIA each shuffles under the mask of
 * its own lanes. */
template <int W> struct da_lanes_group {
    static_assert(W >= 2 && W < DA_WARP && (W & (W - 1)) == 0, "W: a power of two below a warp");

    __device__ __forceinline__ int rank() const
    {
        return (int)(threadIdx.x & (W - 1));
    }
    __device__ __forceinline__ int size() const
    {
        return W;
    }
    template <typename T> __device__ __forceinline__ T xor_of(T x, int o) const
    {
#if defined(DAGPU_AMD)
        return __shfl_xor(x, o, W);
#else
        const unsigned mask = ((1u << W) - 1u) << (threadIdx.x & 31u & ~(unsigned)(W - 1));
        return __shfl_xor_sync(mask, x, o, W);
#endif
    }
    template <typename T> __device__ __forceinline__ T sum(T x) const
    {
        for (int o = W / 2; o > 0; o >>= 1)
            x += xor_of(x, o);
        return x;
    }
    __device__ __forceinline__ float max(float x) const
    {
        for (int o = W / 2; o > 0; o >>= 1)
            x = fmaxf(x, xor_of(x, o));
        return x;
    }
    __device__ __forceinline__ double min(double x) const
    {
        for (int o = W / 2; o > 0; o >>= 1)
            x = fmin(x, xor_of(x, o));
        return x;
    }
    template <typename T, int N> __device__ __forceinline__ void sums(T (&v)[N], T *lo) const
    {
        for (int i = 0; i < N; i++)
            v[i] = sum(v[i]);
        if (lo)
            *lo = (T)min((double)*lo);
    }
};

/* Values one block reduction carries at most (sums plus a minimum). */
#define DA_GROUP_VALUES 9
/* Logical warps a reducing block may have. */
#define DA_GROUP_MAX_WARPS 32
/* Doubles of a da_block_group's scratch: two buffers, used in turn. */
#define DA_GROUP_SCRATCH (2 * DA_GROUP_VALUES * DA_GROUP_MAX_WARPS)
static_assert(DA_GROUP_SCRATCH * sizeof(double) == DAGPU_GROUP_SCRATCH_BYTES,
              "gpu_kernels.h counts the scratch in the plan's shared memory");

/* A one-dimensional block of at most DA_GROUP_MAX_WARPS logical warps.
 * scratch: shared memory of DA_GROUP_SCRATCH doubles. Each reduction is one
 * shuffle tree per warp, one exchange through shared memory and one
 * barrier, however many values it carries: the searches reduce several sums
 * per step, and the barriers are what costs. The two halves of the scratch
 * take turns, so a reduction's writes never meet a warp still reading the
 * one before: every warp has read reduction k's half before it reaches the
 * barrier of k + 1, and k + 2 writes that half after it. So one object must
 * serve all the reductions that follow one another on a scratch: a new one
 * starts again at the first half and needs a barrier before its first. */
struct da_block_group {
    double *scratch;
    mutable int turn = 0; /* the half the next reduction uses */

    __device__ __forceinline__ int rank() const
    {
        return (int)threadIdx.x;
    }
    __device__ __forceinline__ int size() const
    {
        return (int)blockDim.x;
    }

    /* v[0..N) summed, and *lo minimised when given, over the block (in
     * double across its warps). */
    template <typename T, int N> __device__ void sums(T (&v)[N], T *lo) const
    {
        static_assert(N + 1 <= DA_GROUP_VALUES, "too many values for one reduction");
        const int warp = da_warp_id<DA_WARP>(), warps = da_warps<DA_WARP>();
        double *half = scratch + turn * (DA_GROUP_VALUES * DA_GROUP_MAX_WARPS);
        turn ^= 1;
        for (int i = 0; i < N; i++)
            v[i] = da_warp_sum<DA_WARP>(v[i]);
        double m = lo ? da_warp_min<DA_WARP>((double)*lo) : 0.0;
        if (da_lane<DA_WARP>() == 0) {
            for (int i = 0; i < N; i++)
                half[i * DA_GROUP_MAX_WARPS + warp] = v[i];
            half[N * DA_GROUP_MAX_WARPS + warp] = m;
        }
        __syncthreads();
        /* Every warp reduces the warps' partials itself, a lane each: a
         * loop over them made each thread wait on one add after another. */
        const int lane = da_lane<DA_WARP>();
        for (int i = 0; i < N; i++) {
            const double t = lane < warps ? half[i * DA_GROUP_MAX_WARPS + lane] : 0.0;
            v[i] = (T)da_warp_sum<DA_WARP>(t);
        }
        if (lo) {
            const double t = lane < warps ? half[N * DA_GROUP_MAX_WARPS + lane] : DA_INF;
            *lo = (T)da_warp_min<DA_WARP>(t);
        }
    }
    template <typename T> __device__ T sum(T x) const
    {
        double v[1] = {(double)x};
        sums<double, 1>(v, nullptr);
        return (T)v[0];
    }
    __device__ double min(double x) const
    {
        double v[1] = {0.0};
        sums<double, 1>(v, &x);
        return x;
    }
    /* Through the minimum of the negation: a float's maximum is exact in
     * double, and NaN stays NaN as fmin drops it the same way fmaxf would. */
    __device__ float max(float x) const
    {
        return (float)-min(-(double)x);
    }
};

#endif
