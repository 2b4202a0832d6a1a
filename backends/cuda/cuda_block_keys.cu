/* SPDX-License-Identifier: MIT */
/* Block keys of a forward call: the mean key of every block, in f32 and, for
 * the tensor-core stage 1, split into a 16-bit high part and a 16-bit
 * remainder whose sum carries about 16 bits of mantissa. */
#include "cuda_device.cuh"

namespace
{

__global__ void block_keys_kernel(dacuda_params p, dashattn_tensor k, dacuda_forward_ws ws,
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
        const float mean = acc / (float)count;
        ws.kbar[out + d] = mean;
        if (split16) {
            da_store(ws.kbar_hi, p.dtype, out + d, mean);
            const float hi = da_load(ws.kbar_hi, p.dtype, out + d);
            da_store(ws.kbar_lo, p.dtype, out + d, mean - hi);
        }
    }
}

} // namespace

extern "C" cudaError_t dacuda_launch_block_keys(const dacuda_params *p, const dashattn_tensor *k,
                                                const dacuda_forward_ws *ws, int split16,
                                                cudaStream_t stream)
{
    const dim3 grid((unsigned)p->num_blocks, (unsigned)p->heads_kv, (unsigned)p->batch);
    const unsigned threads = p->head_dim >= 128 ? 128 : 64;
    block_keys_kernel<<<grid, threads, 0, stream>>>(*p, *k, *ws, split16);
    return cudaGetLastError();
}
