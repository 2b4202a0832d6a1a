/* SPDX-License-Identifier: MIT */
/* Block summaries (SPEC.md, "Block layout and block summaries"): the key of
 * block j is kbar_j = sum_t w_t k_t over its tokens, with w_t = 1/|j| (mean
 * pooling, no h) or w = softmax_t(h . k_t / sqrt(D)) for the KV head's
 * learned vector h (f32, element [0, g, 0, c] of its tensor).
 *
 * The forward and the backward keep the softmax weights in the workspace
 * (POOL[bh * len_k + t], one float per key token), which the backward needs
 * for the gradient through them. An append to a KV cache has no workspace
 * and computes a completed block's summary in one work-item. Both use the
 * same logits and the same weights in the same token order, so that a
 * cache's summaries equal a prefill's. */

/* h . k_t / sqrt(D) of the token whose dims are k[base + c * s3]. */
inline float da_pool_logit(__global const elem *k, long base, long s3, __global const float *h,
                           long hbase, long hs3, int d)
{
    float dot = 0.0f;
    for (int c = 0; c < d; c++)
        dot += h[hbase + c * hs3] * LOAD(k, base + c * s3);
    return dot / sqrt((float)d);
}

/* w_t of every block's tokens into POOL: the logits, then exp(l - max), then
 * divided by their sum. A NaN logit makes the whole block's weights NaN. */
__kernel void da_pool_weights(__global const elem *k, long4 ks, __global const float *h, long4 hs,
                              int heads_kv, long len_k, int block_size, int d, long num_blocks,
                              __global float *ws, long pool_off)
{
    const long j = get_global_id(0), bh = get_global_id(1);
    if (j >= num_blocks)
        return;
    const long b = bh / heads_kv, g = bh % heads_kv, first = j * block_size;
    const long count = min((long)block_size, len_k - first);
    const long base = da_off(ks, b, g, first), hbase = g * hs.s1;
    __global float *w = ws + pool_off + bh * len_k + first;
    float mx = -INFINITY;
    for (long t = 0; t < count; t++) {
        w[t] = da_pool_logit(k, base + t * ks.s2, ks.s3, h, hbase, hs.s3, d);
        mx = fmax(mx, w[t]);
    }
    float sum = 0.0f;
    for (long t = 0; t < count; t++) {
        w[t] = exp(w[t] - mx);
        sum += w[t];
    }
    for (long t = 0; t < count; t++)
        w[t] = w[t] / sum;
}

/* kbar[bh][j][c], summed in token order: the mean key, or (pooled) the keys
 * weighted by POOL. */
__kernel void da_block_keys(__global const elem *k, long4 ks, int heads_kv, long len_k,
                            int block_size, int d, long num_blocks, int pooled,
                            __global float *ws, long kbar_off, long pool_off)
{
    const int c = get_global_id(0);
    const long j = get_global_id(1), bh = get_global_id(2);
    if (c >= d || j >= num_blocks)
        return;
    const long b = bh / heads_kv, h = bh % heads_kv, first = j * block_size;
    const long count = min((long)block_size, len_k - first);
    const long base = da_off(ks, b, h, first) + c * ks.s3;
    float sum = 0.0f;
    if (pooled) {
        __global const float *w = ws + pool_off + bh * len_k + first;
        for (long t = 0; t < count; t++)
            sum += w[t] * LOAD(k, base + t * ks.s2);
    } else {
        for (long t = 0; t < count; t++)
            sum += LOAD(k, base + t * ks.s2);
        sum *= 1.0f / (float)count;
    }
    ws[kbar_off + (bh * num_blocks + j) * d + c] = sum;
}

/* Summaries of the blocks an append completes (the jj-th block from the one
 * holding position seq_lens[b]), from the cache's keys: mean pooling when h
 * is NULL, else the softmax weights as da_pool_weights computes them. */
__kernel void da_append_keys(__global const elem *kc, long4 ks, __global void *keys, long4 bks,
                             int keys_dtype, int paged, __global const int *table,
                             long table_stride, __global const int *seq_lens,
                             __global const float *h, long4 hs, int heads_kv, long tokens,
                             int block_size, int d, long new_blocks)
{
    const long jj = get_global_id(0), bh = get_global_id(1);
    if (jj >= new_blocks)
        return;
    const long b = bh / heads_kv, g = bh % heads_kv, len = seq_lens[b];
    const long j = len / block_size + jj;
    if ((j + 1) * block_size > len + tokens)
        return;
    const long3 loc = da_cache_locate(paged, table, table_stride, b, j, block_size);
    const long base = da_off(ks, loc.x, g, loc.y), hbase = g * hs.s1;
    float mx = -INFINITY, sum = 0.0f;
    if (h) {
        for (int t = 0; t < block_size; t++)
            mx = fmax(mx, da_pool_logit(kc, base + t * ks.s2, ks.s3, h, hbase, hs.s3, d));
        for (int t = 0; t < block_size; t++)
            sum += exp(da_pool_logit(kc, base + t * ks.s2, ks.s3, h, hbase, hs.s3, d) - mx);
    }
    float acc[DA_DPAD];
    for (int c = 0; c < DA_DPAD; c++)
        acc[c] = 0.0f;
    for (int t = 0; t < block_size; t++) {
        const long kt = base + t * ks.s2;
        const float w = h ? exp(da_pool_logit(kc, kt, ks.s3, h, hbase, hs.s3, d) - mx) / sum : 1.0f;
        for (int c = 0; c < d; c++)
            acc[c] += h ? w * LOAD(kc, kt + c * ks.s3) : LOAD(kc, kt + c * ks.s3);
    }
    const long kb = da_off(bks, loc.x, g, loc.z);
    for (int c = 0; c < d; c++)
        da_store_any(keys, kb + c * bks.s3, keys_dtype,
                     h ? acc[c] : acc[c] * (1.0f / (float)block_size));
}

/* dh[g] = sum over the batch and all keys of r_t k_t / sqrt(D), r_t from
 * da_bwd_dkdv (RT[bh * len_k + t], 0 in blocks no row scores), in a fixed
 * order; 0 when nothing reaches stage 1 (scored 0: RT is not written). */
__kernel void da_bwd_dh(__global const elem *k, long4 ks, long batch, int heads_kv, long len_k,
                        int d, int scored, __global const float *ws, long rt_off,
                        __global float *dh, long4 dhs)
{
    const int c = get_global_id(0);
    const long g = get_global_id(1);
    if (c >= d)
        return;
    real sum = 0;
    for (long b = 0; b < batch && scored; b++) {
        __global const float *r = ws + rt_off + (b * heads_kv + g) * len_k;
        const long base = da_off(ks, b, g, 0) + c * ks.s3;
        for (long t = 0; t < len_k; t++)
            sum += (real)r[t] * LOAD(k, base + t * ks.s2);
    }
    dh[da_off(dhs, 0, g, 0) + c * dhs.s3] = (float)(sum / sqrt((real)d));
}
