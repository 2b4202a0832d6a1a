/* SPDX-License-Identifier: MIT */
/* KV-cache addressing and the checks of device-resident cache arguments,
 * shared by the append and decode kernels. */
#ifndef DASHATTN_GPU_CACHE_CUH
#define DASHATTN_GPU_CACHE_CUH

#include "gpu_device.cuh"

/* Element offset of token pos, dimension d of sequence b, KV head h in the
 * cache's k or v tensor (page already looked up for paged caches). */
static __device__ __forceinline__ int64_t da_cache_offset(const dashattn_kv_cache &c,
                                                          const dashattn_tensor &t, int64_t S,
                                                          int64_t b, int64_t h, int64_t pos,
                                                          int64_t d)
{
    if (c.layout == DASHATTN_CACHE_PAGED) {
        const int64_t page = c.block_table[b * c.table_stride + pos / S];
        return page * t.strides[0] + h * t.strides[1] + (pos % S) * t.strides[2] + d * t.strides[3];
    }
    return da_offset(t, b, h, pos, d);
}

/* Offset of block j's key in the cache's block_keys tensor. */
static __device__ __forceinline__ int64_t da_block_key_offset(const dashattn_kv_cache &c, int64_t b,
                                                              int64_t h, int64_t j, int64_t d)
{
    const dashattn_tensor &t = c.block_keys;
    if (c.layout == DASHATTN_CACHE_PAGED)
        return da_offset(t, c.block_table[b * c.table_stride + j], h, 0, d);
    return da_offset(t, b, h, j, d);
}

/* The page of a paged cache holding block j of sequence b, or -1 where the
 * block table names none inside the page pool. */
static __device__ __forceinline__ int64_t da_page_of(const dashattn_kv_cache &c, int64_t b,
                                                     int64_t j)
{
    const int32_t page = c.block_table[b * c.table_stride + j];
    return page >= 0 && page < c.k.shape[0] ? page : -1;
}

/* Records the first error the device finds; the next synchronize reports it. */
static __device__ void da_report(dagpu_device_error *e, int code, int b, int value, int what)
{
    if (atomicCAS(&e->code, 0, code) == 0) {
        e->batch = b;
        e->value = value;
        e->what = what;
    }
}

/* Checks sequence b for holding tokens [0, len): len in [lo, capacity] and,
 * for paged caches, every page of those tokens inside the page pool. Returns
 * the failing kind (DAGPU_BAD_*) and sets *value, or 0. */
static __device__ __forceinline__ int da_check_sequence(const dagpu_params &p,
                                                        const dashattn_kv_cache &c, int64_t b,
                                                        int64_t len, int64_t lo,
                                                        int64_t first_block, int *value)
{
    *value = (int)len;
    if (len < lo || len > p.len_k)
        return DAGPU_BAD_SEQ_LEN;
    if (c.layout == DASHATTN_CACHE_PAGED) {
        for (int64_t j = first_block; j * p.block_size < len; j++) {
            if (da_page_of(c, b, j) < 0) {
                *value = c.block_table[b * c.table_stride + j];
                return DAGPU_BAD_PAGE;
            }
        }
    }
    return 0;
}

/* da_check_sequence(p, c, b, len, 1, 0, value) by a whole block: the pages
 * are checked in parallel and the first bad one is reported. Every thread
 * gets the result. */
static __device__ __forceinline__ int da_check_sequence_block(const dagpu_params &p,
                                                              const dashattn_kv_cache &c, int64_t b,
                                                              int64_t len, int *value)
{
    __shared__ int first_bad;
    *value = (int)len;
    if (len < 1 || len > p.len_k)
        return DAGPU_BAD_SEQ_LEN;
    if (c.layout != DASHATTN_CACHE_PAGED)
        return 0;
    if (threadIdx.x == 0)
        first_bad = 0x7fffffff;
    __syncthreads();
    for (int64_t j = threadIdx.x; j * p.block_size < len; j += blockDim.x)
        if (da_page_of(c, b, j) < 0)
            atomicMin(&first_bad, (int)j);
    __syncthreads();
    if (first_bad == 0x7fffffff)
        return 0;
    *value = c.block_table[b * c.table_stride + first_bad];
    return DAGPU_BAD_PAGE;
}

#endif
