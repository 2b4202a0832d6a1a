/* SPDX-License-Identifier: MIT */
/* Tensor-core building blocks shared by the fast stage-1 and stage-2
 * kernels: mma.sync m16n8k16 (and m16n8k8 tf32) with f32 accumulation,
 * ldmatrix, cp.async, and a swizzled shared-memory layout of [64][D] 16-bit
 * tiles. */
#ifndef DASHATTN_GPU_NV_MMA_CUH
#define DASHATTN_GPU_NV_MMA_CUH

#include "../gpu_device.cuh"

/* Rows of a key (or block-key) tile and the threads that load one. */
#define MMA_KEYS 64

namespace
{

template <typename T> struct mma_type;
template <> struct mma_type<__nv_bfloat16> {
    static __device__ __forceinline__ uint32_t pack(float a, float b)
    {
        __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
        return *reinterpret_cast<uint32_t *>(&h);
    }
    static __device__ __forceinline__ void mma(float *c, const uint32_t *a, uint32_t b0,
                                               uint32_t b1)
    {
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                     "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                     : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
};
template <> struct mma_type<__half> {
    static __device__ __forceinline__ uint32_t pack(float a, float b)
    {
        __half2 h = __floats2half2_rn(a, b);
        return *reinterpret_cast<uint32_t *>(&h);
    }
    static __device__ __forceinline__ void mma(float *c, const uint32_t *a, uint32_t b0,
                                               uint32_t b1)
    {
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
                     "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                     : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
};

/* tf32 products (m16n8k8, f32 accumulation) for f32 data, and the
 * rounding of an f32 value to tf32 (its bits, low 13 zero). */
static __device__ __forceinline__ uint32_t to_tf32(float x)
{
    uint32_t r;
    asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(x));
    return r;
}

static __device__ __forceinline__ void mma_tf32(float *c, const uint32_t *a, uint32_t b0,
                                                uint32_t b1)
{
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

static __device__ __forceinline__ uint32_t smem_addr(const void *p)
{
    return (uint32_t)__cvta_generic_to_shared(p);
}

static __device__ __forceinline__ void ldmatrix_x4(uint32_t *r, uint32_t addr)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

static __device__ __forceinline__ void ldmatrix_x4_trans(uint32_t *r, uint32_t addr)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

static __device__ __forceinline__ void cp_async16(uint32_t dst, const void *src, bool valid)
{
    const int bytes = valid ? 16 : 0; /* 0: fill with zeros */
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
                 "r"(bytes));
}

static __device__ __forceinline__ void cp_async_commit()
{
    asm volatile("cp.async.commit_group;\n" ::);
}

template <int N> static __device__ __forceinline__ void cp_async_wait()
{
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

/* Byte offset of element (row, col) in a [rows][D] 16-bit tile whose 16-byte
 * chunks are XOR-swizzled by row, so ldmatrix reads hit distinct banks. */
template <int D> static __device__ __forceinline__ uint32_t swz(int row, int col)
{
    const int chunk = (col >> 3) ^ (row & 7);
    return (uint32_t)(row * D * 2 + chunk * 16 + (col & 7) * 2);
}

/* The tile layout above as a type, for the loaders. */
template <int D> struct swz_layout {
    static __device__ __forceinline__ uint32_t at(int row, int col)
    {
        return swz<D>(row, col);
    }
};

/* Loads rows [first, first + 64) of a [.., D] head slice into a tile of
 * layout L; rows at or past limit read as zeros. */
template <int D, typename T, typename L = swz_layout<D>>
static __device__ __forceinline__ void load_tile(uint32_t tile, const T *base, int64_t row_stride,
                                                 int64_t first, int64_t limit)
{
    constexpr int chunks = D / 8;
    for (int e = threadIdx.x; e < MMA_KEYS * chunks; e += blockDim.x) {
        const int r = e / chunks, c = e % chunks;
        const bool valid = first + r < limit;
        const T *src = base + (valid ? first + r : first) * row_stride + c * 8;
        cp_async16(tile + L::at(r, c * 8), src, valid);
    }
}

/* Next block marked in the tile's mask after block j (-1 for none). */
static __device__ __forceinline__ int next_block(const uint32_t *mask, int words, int j)
{
    int w = (j + 1) >> 5;
    if (w >= words)
        return -1;
    uint32_t bits = mask[w] & (~0u << ((j + 1) & 31));
    while (!bits) {
        if (++w >= words)
            return -1;
        bits = mask[w];
    }
    return w * 32 + __ffs(bits) - 1;
}

/* s = Q K^T of a warp's 16 query rows (A fragments qf) against the NT * 8
 * keys from row key0 of a swizzled 64-key tile (all 64 by default), in the
 * C-fragment layout of NT n-tiles of 8 keys. */
template <int D, typename T, int NT>
static __device__ __forceinline__ void tile_scores(float (&s)[NT][4],
                                                   const uint32_t (&qf)[D / 16][4], uint32_t ktile,
                                                   int lane, int key0 = 0)
{
    static_assert(NT % 2 == 0 && NT * 8 <= MMA_KEYS, "keys come in pairs of n-tiles");
    for (int n = 0; n < NT; n++)
        s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
    for (int kk = 0; kk < D / 16; kk++) {
        for (int np = 0; np < NT / 2; np++) {
            uint32_t bf[4];
            const int r = key0 + np * 16 + (lane >> 4) * 8 + (lane & 7);
            const int c = kk * 16 + ((lane >> 3) & 1) * 8;
            ldmatrix_x4(bf, ktile + swz<D>(r, c));
            mma_type<T>::mma(s[2 * np], qf[kk], bf[0], bf[1]);
            mma_type<T>::mma(s[2 * np + 1], qf[kk], bf[2], bf[3]);
        }
    }
}

/* One online-softmax step over the NT * 8 keys from row key0 of a 64-key
 * tile (tile_scores' s, or a wgmma accumulator of the same layout) for the
 * thread's two rows (half 0: row lane / 4, half 1: that row + 8): logits
 * are s * scale2 + prior[half] (log2 units) for the tile's first vis[half]
 * keys, -inf for the rest. m and l are updated, the accumulator o (DT
 * n-tiles of 8 columns) is rescaled, and s becomes the probabilities P. */
template <int NT, int DT>
static __device__ __forceinline__ void
tile_softmax(float (&s)[NT][4], float (&o)[DT][4], float (&m)[2], float (&l)[2],
             const float (&prior)[2], const int (&vis)[2], float scale2, int lane, int key0 = 0)
{
    const int qd = lane & 3;
    float corr[2];
    for (int half = 0; half < 2; half++) {
        float mx = -DA_INF_F;
#pragma unroll
        for (int n = 0; n < NT; n++) {
#pragma unroll
            for (int e = 0; e < 2; e++) {
                const int col = key0 + n * 8 + qd * 2 + e;
                const float x =
                    col < vis[half] ? s[n][2 * half + e] * scale2 + prior[half] : -DA_INF_F;
                s[n][2 * half + e] = x;
                mx = fmaxf(mx, x);
            }
        }
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float m_new = fmaxf(m[half], mx);
        const float m_use = m_new == -DA_INF_F ? 0.0f : m_new;
        corr[half] = exp2f(m[half] - m_use);
        float ls = 0.0f;
        for (int n = 0; n < NT; n++) {
            for (int e = 0; e < 2; e++) {
                const float pr = exp2f(s[n][2 * half + e] - m_use);
                s[n][2 * half + e] = pr;
                ls += pr;
            }
        }
        l[half] = l[half] * corr[half] + ls;
        m[half] = m_new;
    }
    /* Most blocks past the first few leave every row's maximum where it
     * was: the warp then skips the rescale (multiplying by 1 is exact). */
    if (__any_sync(0xffffffffu, corr[0] != 1.0f || corr[1] != 1.0f))
        for (int n = 0; n < DT; n++) {
            o[n][0] *= corr[0];
            o[n][1] *= corr[0];
            o[n][2] *= corr[1];
            o[n][3] *= corr[1];
        }
}

/* The A fragment (m16n8k16 / wgmma register A) of keys 16 kk .. 16 kk + 15
 * of P from tile_softmax's s. */
template <typename T, int NT>
static __device__ __forceinline__ void p_fragment(uint32_t (&a)[4], const float (&s)[NT][4], int kk)
{
    a[0] = mma_type<T>::pack(s[2 * kk][0], s[2 * kk][1]);
    a[1] = mma_type<T>::pack(s[2 * kk][2], s[2 * kk][3]);
    a[2] = mma_type<T>::pack(s[2 * kk + 1][0], s[2 * kk + 1][1]);
    a[3] = mma_type<T>::pack(s[2 * kk + 1][2], s[2 * kk + 1][3]);
}

/* o += X Y for a warp's 16 x (NT * 8) products X in the accumulator layout
 * (converted to 16-bit A fragments) and Y the rows key0 .. key0 + NT * 8 - 1
 * of a swizzled [64][D] tile: P V in the forward, dS K, P^T dO and dS^T Q
 * in the backward. */
template <int D, typename T, int NT>
static __device__ __forceinline__ void tile_pv(float (&o)[D / 8][4], const float (&x)[NT][4],
                                               uint32_t ytile, int lane, int key0 = 0)
{
#pragma unroll
    for (int kk = 0; kk < NT / 2; kk++) {
        uint32_t a[4];
        p_fragment<T>(a, x, kk);
#pragma unroll
        for (int dp = 0; dp < D / 16; dp++) {
            uint32_t bf[4];
            const int r = key0 + kk * 16 + ((lane >> 3) & 1) * 8 + (lane & 7);
            const int c = dp * 16 + (lane >> 4) * 8;
            ldmatrix_x4_trans(bf, ytile + swz<D>(r, c));
            mma_type<T>::mma(o[2 * dp], a, bf[0], bf[1]);
            mma_type<T>::mma(o[2 * dp + 1], a, bf[2], bf[3]);
        }
    }
}

/* tile_softmax, then o += P V with V from a swizzled tile. s is consumed. */
template <int D, typename T, int NT>
static __device__ __forceinline__ void
tile_softmax_pv(float (&s)[NT][4], float (&o)[D / 8][4], float (&m)[2], float (&l)[2],
                const float (&prior)[2], const int (&vis)[2], float scale2, uint32_t vtile,
                int lane, int key0 = 0)
{
    tile_softmax(s, o, m, l, prior, vis, scale2, lane, key0);
    tile_pv<D, T, NT>(o, s, vtile, lane, key0);
}

/* Element (row, col) of a swizzled [rows][D] 16-bit tile, as f32. */
template <int D, typename T>
static __device__ __forceinline__ float tile_value(uint32_t tile, int row, int col)
{
    unsigned short bits;
    asm volatile("ld.shared.u16 %0, [%1];\n" : "=h"(bits) : "r"(tile + swz<D>(row, col)));
    T x;
    *reinterpret_cast<unsigned short *>(&x) = bits;
    return (float)x;
}

/* Elements col and col + 1 (col even: one 4-byte word) of a row of a
 * swizzled 16-bit tile. */
template <int D, typename T>
static __device__ __forceinline__ float2 tile_pair(uint32_t tile, int row, int col)
{
    uint32_t bits;
    asm volatile("ld.shared.u32 %0, [%1];\n" : "=r"(bits) : "r"(tile + swz<D>(row, col)));
    T x[2];
    memcpy(x, &bits, sizeof bits);
    return make_float2((float)x[0], (float)x[1]);
}

} // namespace

#endif
