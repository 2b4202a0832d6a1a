/* SPDX-License-Identifier: MIT */
/* Block keys of a forward call: the summary of every block (the mean key,
 * or the learned summary), in f32 and, for the tensor-core stage 1, split
 * into a 16-bit high part and a 16-bit remainder whose sum carries about 16
 * bits of mantissa. */
#include "gpu_summary.cuh"

namespace
{

static __device__ __forceinline__ void store_key(const dagpu_params &p, const dagpu_forward_ws &ws,
                                                 int split16, int64_t at, float key)
{
    ws.kbar[at] = key;
    if (split16) {
        da_store(ws.kbar_hi, p.dtype, at, key);
        const float hi = da_load(ws.kbar_hi, p.dtype, at);
        da_store(ws.kbar_lo, p.dtype, at, key - hi);
    }
}

__global__ void block_keys_kernel(dagpu_params p, dashattn_tensor k, dagpu_forward_ws ws,
                                  int split16)
{
    const int64_t j = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    const int64_t S = p.block_size, D = p.head_dim;
    const int64_t first = j * S, count = min(S, p.len_k - first);
    const int64_t out = ((b * p.heads_kv + h) * p.num_blocks + j) * D;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
        float acc = 0.0f;
        for (int64_t t = 0; t < count; t++)
            acc += da_load(k.data, k.dtype, da_offset(k, b, h, first + t, d));
        store_key(p, ws, split16, out + d, acc / (float)count);
    }
}

/* The same with the learned vectors h; a ragged last block is summarised
 * over its real tokens. */
__global__ void block_summary_kernel(dagpu_params p, dashattn_tensor k, dashattn_tensor hvec,
                                     dagpu_forward_ws ws, int split16)
{
    const int64_t j = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    const int64_t S = p.block_size, D = p.head_dim;
    const int64_t first = j * S, count = min(S, p.len_k - first);
    const int64_t out = ((b * p.heads_kv + h) * p.num_blocks + j) * D;
    da_block_summary(
        hvec, h, D, count,
        [&](int64_t t, int64_t d) {
            return da_load(k.data, k.dtype, da_offset(k, b, h, first + t, d));
        },
        [&](int64_t d, float x) { store_key(p, ws, split16, out + d, x); });
}

} // namespace

extern "C" dagpu_err dagpu_launch_block_keys(const dagpu_params *p, const dashattn_tensor *k,
                                             const dashattn_tensor *summary,
                                             const dagpu_forward_ws *ws, int split16, void *stream)
{
    const dim3 grid((unsigned)p->num_blocks, (unsigned)p->heads_kv, (unsigned)p->batch);
    const unsigned threads = p->head_dim >= 128 ? 128 : 64;
    if (summary)
        block_summary_kernel<<<grid, threads, 0, (dagpu_rt_stream)stream>>>(*p, *k, *summary, *ws,
                                                                            split16);
    else
        block_keys_kernel<<<grid, threads, 0, (dagpu_rt_stream)stream>>>(*p, *k, *ws, split16);
    return (dagpu_err)dagpuGetLastError();
}
