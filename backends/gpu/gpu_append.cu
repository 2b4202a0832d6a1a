/* SPDX-License-Identifier: MIT */
/* dashattn_cache_append on the CUDA backend: check every sequence, copy the
 * new tokens in, compute the key of each block that became complete, then
 * advance seq_lens. Each step skips its work once an error is recorded, so
 * a failing append changes nothing. */
#include "gpu_cache.cuh"
#include "gpu_summary.cuh"

namespace
{

__global__ void append_check_kernel(dagpu_params p, dashattn_kv_cache c, int64_t tokens,
                                    dagpu_device_error *err)
{
    for (int64_t b = threadIdx.x; b < p.batch; b += blockDim.x) {
        const int64_t len = c.seq_lens[b];
        int value;
        if (len < 0 || len > p.len_k) {
            da_report(err, DASHATTN_ERR_INVALID_ARGUMENT, (int)b, (int)len, DAGPU_BAD_SEQ_LEN);
            continue;
        }
        const int kind = da_check_sequence(p, c, b, len + tokens, 0, len / p.block_size, &value);
        if (kind)
            da_report(err, DASHATTN_ERR_CACHE_FULL, (int)b, value,
                      kind == DAGPU_BAD_SEQ_LEN ? DAGPU_NO_ROOM : kind);
    }
}

/* One thread block per (token, KV head, sequence) row of k_new and v_new. */
__global__ void append_copy_kernel(dagpu_params p, dashattn_kv_cache c, dashattn_tensor k_new,
                                   dashattn_tensor v_new, const dagpu_device_error *err)
{
    if (err->code)
        return;
    const int64_t t = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    const int64_t pos = c.seq_lens[b] + t;
    for (int64_t d = threadIdx.x; d < p.head_dim; d += blockDim.x) {
        const float kx = da_load(k_new.data, k_new.dtype, da_offset(k_new, b, h, t, d));
        const float vx = da_load(v_new.data, v_new.dtype, da_offset(v_new, b, h, t, d));
        da_store(c.k.data, c.k.dtype, da_cache_offset(c, c.k, p.block_size, b, h, pos, d), kx);
        da_store(c.v.data, c.v.dtype, da_cache_offset(c, c.v, p.block_size, b, h, pos, d), vx);
    }
}

/* One thread block per (block that may complete, KV head, sequence); with
 * has_summary the block's learned summary under hvec, else its mean key. */
__global__ void append_block_keys_kernel(dagpu_params p, dashattn_kv_cache c, int64_t tokens,
                                         int has_summary, dashattn_tensor hvec,
                                         const dagpu_device_error *err)
{
    if (err->code)
        return;
    const int64_t h = blockIdx.y, b = blockIdx.z, S = p.block_size;
    const int64_t old_len = c.seq_lens[b], new_len = old_len + tokens;
    const int64_t j = old_len / S + blockIdx.x;
    if ((j + 1) * S > new_len)
        return; /* not complete yet */
    if (has_summary) {
        da_block_summary(
            hvec, h, p.head_dim, S,
            [&](int64_t t, int64_t d) {
                return da_load(c.k.data, c.k.dtype, da_cache_offset(c, c.k, S, b, h, j * S + t, d));
            },
            [&](int64_t d, float x) {
                da_store(c.block_keys.data, c.block_keys.dtype, da_block_key_offset(c, b, h, j, d),
                         x);
            });
        return;
    }
    for (int64_t d = threadIdx.x; d < p.head_dim; d += blockDim.x) {
        float acc = 0.0f;
        for (int64_t t = 0; t < S; t++)
            acc += da_load(c.k.data, c.k.dtype, da_cache_offset(c, c.k, S, b, h, j * S + t, d));
        da_store(c.block_keys.data, c.block_keys.dtype, da_block_key_offset(c, b, h, j, d),
                 acc / (float)S);
    }
}

__global__ void append_advance_kernel(dagpu_params p, dashattn_kv_cache c, int64_t tokens,
                                      const dagpu_device_error *err)
{
    if (err->code)
        return;
    for (int64_t b = threadIdx.x; b < p.batch; b += blockDim.x)
        c.seq_lens[b] += (int32_t)tokens;
}

} // namespace

extern "C" dagpu_err dagpu_launch_append(const dagpu_params *p, const dashattn_kv_cache *cache,
                                         const dashattn_tensor *k_new, const dashattn_tensor *v_new,
                                         const dashattn_tensor *summary, dagpu_device_error *err,
                                         void *stream)
{
    const dagpu_rt_stream st = (dagpu_rt_stream)stream;
    const dashattn_tensor hvec = summary ? *summary : dashattn_tensor{};
    const int64_t tokens = k_new->shape[2];
    append_check_kernel<<<1, 256, 0, st>>>(*p, *cache, tokens, err);
    const unsigned threads = p->head_dim >= 128 ? 128 : 64;
    append_copy_kernel<<<dim3((unsigned)tokens, (unsigned)p->heads_kv, (unsigned)p->batch), threads,
                         0, st>>>(*p, *cache, *k_new, *v_new, err);
    /* Blocks touched: from the one holding the old end to the new end. */
    const int64_t span = tokens / p->block_size + 2;
    append_block_keys_kernel<<<dim3((unsigned)span, (unsigned)p->heads_kv, (unsigned)p->batch),
                               threads, 0, st>>>(*p, *cache, tokens, summary != NULL, hvec, err);
    append_advance_kernel<<<1, 256, 0, st>>>(*p, *cache, tokens, err);
    return (dagpu_err)dagpuGetLastError();
}
