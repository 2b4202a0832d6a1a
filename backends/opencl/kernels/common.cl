/* SPDX-License-Identifier: MIT */
/* Definitions every dashattn OpenCL kernel shares. The host compiles the
 * kernels with:
 *   DA_DT    element type of q, k, v, out and their gradients
 *            (0 f32, 1 f16, 2 bf16; f16 goes through vload_half and
 *            vstore_half, which OpenCL 1.2 has without cl_khr_fp16)
 *   DA_DPAD  head_dim rounded up to a power of two: private rows and local
 *            tiles are that long, padded with zeros
 *   DA_WG    work-items of the row-parallel kernels (rows per work-group)
 *   DA_KT    tokens per local tile of keys and values
 *   DA_DIRECT 1 on CPU devices: stage 2 reads keys and values in place
 *            instead of staging the work-group's blocks in local memory
 * All arithmetic is f32; stage-1 thresholds use double where the device has
 * cl_khr_fp64. */

#ifdef cl_khr_fp64
#pragma OPENCL EXTENSION cl_khr_fp64 : enable
typedef double real;
#else
typedef float real;
#endif

#if DA_DT == 0
typedef float elem;
#define LOAD(p, i) ((p)[i])
#define STORE(p, i, x) ((p)[i] = (x))
#elif DA_DT == 1
typedef half elem;
#define LOAD(p, i) vload_half((i), (p))
#define STORE(p, i, x) vstore_half_rte((x), (i), (p))
#else
typedef ushort elem;
#define LOAD(p, i) as_float((uint)(p)[i] << 16)
#define STORE(p, i, x) ((p)[i] = da_to_bf16(x))
#endif

/* for (X = lid; X < N; X += DA_WG), written with the same trip count for
 * every work-item of the group: PoCL (3.1) miscompiles strided loops whose
 * trip count differs between work-items after a barrier, running the body
 * for X >= N. Use as DA_SPREAD(x, n) statement; needs `lid` in scope;
 * DA_SPREAD_BY for work-groups of another size. */
#define DA_SPREAD(x, n) DA_SPREAD_BY(x, n, DA_WG)
#define DA_SPREAD_BY(x, n, width)                                                                  \
    for (int x##_base = 0; x##_base < (n); x##_base += (width))                                   \
        for (int x = x##_base + lid, x##_once = 1; x##_once; x##_once = 0)                        \
            if (x < (n))

/* Round to nearest even; NaN stays NaN (quiet). */
inline ushort da_to_bf16(float x)
{
    const uint u = as_uint(x);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (ushort)((u >> 16) | 0x40u);
    return (ushort)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

/* Element i of a buffer whose dtype is known only at run time (block keys of
 * a cache may be f32 or the plan's dtype). */
inline float da_load_any(__global const void *p, long i, int dtype)
{
    if (dtype == 0)
        return ((__global const float *)p)[i];
    if (dtype == 1)
        return vload_half(i, (__global const half *)p);
    return as_float((uint)((__global const ushort *)p)[i] << 16);
}

inline void da_store_any(__global void *p, long i, int dtype, float x)
{
    if (dtype == 0)
        ((__global float *)p)[i] = x;
    else if (dtype == 1)
        vstore_half_rte(x, i, (__global half *)p);
    else
        ((__global ushort *)p)[i] = da_to_bf16(x);
}

inline long da_off(long4 st, long i0, long i1, long i2)
{
    return i0 * st.s0 + i1 * st.s1 + i2 * st.s2;
}

/* The plan's block layout (backend.h's dashattn_row_layout), packed into an
 * int8 argument: s0 causal, s1 block size, s2 n_sink, s3 n_local. */
typedef struct da_rows {
    long visible_end, sink_end, local_begin, local_end, cand_begin, cand_end;
} da_rows;

inline da_rows da_row_layout(int8 lay, long pos, long len_k)
{
    const long s = lay.s1;
    da_rows r;
    if (lay.s0) {
        const long own = pos / s;
        r.visible_end = pos + 1;
        r.sink_end = min((long)lay.s2, own + 1);
        r.local_begin = max(own - lay.s3 + 1, 0L);
        r.local_end = own + 1;
    } else {
        const long blocks = (len_k + s - 1) / s;
        r.visible_end = len_k;
        r.sink_end = min((long)lay.s2, blocks);
        r.local_begin = blocks;
        r.local_end = blocks;
    }
    r.cand_begin = r.sink_end;
    r.cand_end = max(r.local_begin, r.cand_begin);
    return r;
}

inline int da_forced(const da_rows *r, long j)
{
    return j < r->sink_end || (j >= r->local_begin && j < r->local_end);
}

/* Blocks with visible tokens. */
inline long da_visible_blocks(int8 lay, const da_rows *r, long num_blocks)
{
    return lay.s0 ? r->local_end : num_blocks;
}

/* Tokens of block j the row can see. */
inline long da_visible_tokens(int8 lay, const da_rows *r, long j)
{
    const long first = j * lay.s1;
    const long end = min(first + lay.s1, r->visible_end);
    return end > first ? end - first : 0;
}

/* Where block j of sequence b lives in a KV cache: tensor index and first
 * row of k and v, and the row of block_keys (contiguous caches: b, jS, j;
 * paged: the page from the block table, 0, 0). */
inline long3 da_cache_locate(int paged, __global const int *table, long table_stride, long b,
                             long j, long s)
{
    if (paged)
        return (long3)(table[b * table_stride + j], 0, 0);
    return (long3)(b, j * s, j);
}
