/* SPDX-License-Identifier: MIT */
/* Hopper warpgroup matrix products (wgmma, sm_90a) for the stage-2 tiles:
 * shared-memory matrix descriptors of 128-byte swizzled 16-bit tiles, and
 * the two products a tile needs, S = Q K^T (m64n64k16, both operands in
 * shared memory, K-major) and O += P V (m64nDk16, P in registers, V in
 * shared memory MN-major). The accumulators are in the layout of mma.sync's
 * m16n8 C fragments, one per warp's 16 rows: d[4 n + e] is n-tile n's
 * element e. Only compiled for sm_90a. */
#ifndef DASHATTN_GPU_HOPPER_WGMMA_CUH
#define DASHATTN_GPU_HOPPER_WGMMA_CUH

#include "../nv/nv_mma.cuh"

namespace
{

/* Byte offset of element (row, col) of a [64][D] 16-bit tile stored as D / 64
 * column panels of [64][64], each row of a panel 128 bytes whose 16-byte
 * chunks are XOR-swizzled by row % 8: the 128-byte swizzle wgmma reads. The
 * tile must start on a 1024-byte boundary. */
template <int D> struct gmma_layout {
    static __device__ __forceinline__ uint32_t at(int row, int col)
    {
        const int c = col & 63;
        return (uint32_t)((col >> 6) * (64 * 128) + row * 128 + (((c >> 3) ^ (row & 7)) << 4) +
                          (c & 7) * 2);
    }
};

/* A matrix descriptor: start address, leading and stride byte offsets,
 * 128-byte swizzle. */
static __device__ __forceinline__ uint64_t gmma_desc(uint32_t addr, uint32_t lead, uint32_t stride)
{
    return (uint64_t)((addr & 0x3ffffu) >> 4) | (uint64_t)((lead & 0x3ffffu) >> 4) << 16 |
           (uint64_t)((stride & 0x3ffffu) >> 4) << 32 | (uint64_t)1 << 62;
}

/* K-major operand (Q as A, K as B of S = Q K^T) of a gmma_layout tile for
 * the 16 columns from 16 kk: rows 8 apart by 1024 bytes. */
template <int D> static __device__ __forceinline__ uint64_t gmma_desc_k(uint32_t tile, int kk)
{
    return gmma_desc(tile + (kk >> 2) * (64 * 128) + (kk & 3) * 32, 16, 1024);
}

/* MN-major operand (V as B of O = P V) of a gmma_layout tile for its rows
 * (keys) 16 kk .. 16 kk + 15: column panels 8 KiB apart, rows 8 apart by
 * 1024 bytes. */
template <int D> static __device__ __forceinline__ uint64_t gmma_desc_mn(uint32_t tile, int kk)
{
    return gmma_desc(tile + kk * 16 * 128, 64 * 128, 1024);
}

/* Makes shared-memory writes of the generic proxy (cp.async, stores)
 * visible to wgmma's reads. */
static __device__ __forceinline__ void gmma_fence_smem()
{
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}

static __device__ __forceinline__ void gmma_fence()
{
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}

static __device__ __forceinline__ void gmma_commit()
{
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}

template <int N> static __device__ __forceinline__ void gmma_wait()
{
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}

/* Keeps the compiler from moving accesses of an accumulator across the
 * asynchronous products. */
template <int N> static __device__ __forceinline__ void gmma_hold(float *d)
{
#pragma unroll
    for (int i = 0; i < N; i++)
        asm volatile("" : "+f"(d[i])::"memory");
}

template <typename T> struct gmma;

/* The products of one 16-bit type, TY its PTX name ("bf16", "f16"). */
#define DA_GMMA_PRODUCTS(TY)                                                                       \
    /* d (32) = or += A B^T, A and B K-major descriptors (m64n64k16). */                           \
    static __device__ __forceinline__ void ss64(float *d, uint64_t a, uint64_t b, int accumulate)  \
    {                                                                                              \
        asm volatile(                                                                              \
            "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"                                           \
            "wgmma.mma_async.sync.aligned.m64n64k16.f32." TY "." TY " "                            \
            "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, "         \
            "%17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "         \
            "%32, %33, p, 1, 1, 0, 0;\n}\n"                                                        \
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),  \
              "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]),           \
              "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]),        \
              "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]),        \
              "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]),        \
              "+f"(d[31])                                                                          \
            : "l"(a), "l"(b), "r"(accumulate));                                                    \
    }                                                                                              \
    /* d (32) += A B, A in registers, B an MN-major descriptor (m64n64k16). */                     \
    static __device__ __forceinline__ void rs64(float *d, const uint32_t *a, uint64_t b,           \
                                                int accumulate)                                    \
    {                                                                                              \
        asm volatile(                                                                              \
            "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"                                           \
            "wgmma.mma_async.sync.aligned.m64n64k16.f32." TY "." TY " "                            \
            "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, "         \
            "%17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "         \
            "{%32, %33, %34, %35}, %36, p, 1, 1, 1;\n}\n"                                          \
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),  \
              "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]),           \
              "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]),        \
              "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]),        \
              "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]),        \
              "+f"(d[31])                                                                          \
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(accumulate));                \
    }                                                                                              \
    /* The same with 128 columns (m64n128k16, d 64). */                                            \
    static __device__ __forceinline__ void rs128(float *d, const uint32_t *a, uint64_t b,          \
                                                 int accumulate)                                   \
    {                                                                                              \
        asm volatile(                                                                              \
            "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"                                           \
            "wgmma.mma_async.sync.aligned.m64n128k16.f32." TY "." TY " "                           \
            "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, "    \
            "%18, "                                                                                \
            "%19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, "     \
            "%35, "                                                                                \
            "%36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, "     \
            "%52, "                                                                                \
            "%53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "                             \
            "{%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n"                                          \
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),  \
              "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]),           \
              "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]),        \
              "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]),        \
              "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]),        \
              "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]),        \
              "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]),        \
              "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]),        \
              "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]),        \
              "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]),        \
              "+f"(d[61]), "+f"(d[62]), "+f"(d[63])                                                \
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(accumulate));                \
    }

template <> struct gmma<__nv_bfloat16> {
    DA_GMMA_PRODUCTS("bf16")
};
template <> struct gmma<__half> {
    DA_GMMA_PRODUCTS("f16")
};
#undef DA_GMMA_PRODUCTS

} // namespace

#endif
