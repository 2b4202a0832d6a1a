/* SPDX-License-Identifier: MIT */
/* Stage 2, fast path: FlashAttention-style tiles on the tensor cores
 * (mma.sync m16n8k16, bf16 or f16 in, f32 accumulation) for head dimensions
 * 64 and 128 and block size 64. A thread block owns 64 query rows of one
 * head and walks only the key blocks stage 1 marked for its tile, loading
 * each one with cp.async while the previous one is computed. A candidate's
 * score is recomputed from the very tile of logits: with mean pooling the
 * mean of q.k over the block equals q.kbar, so a per-head prior costs one
 * row sum per block. Weights shared by a KV head's heads come from stage 1. */
#include "nv_kernels.h"
#include "nv_mma.cuh"

namespace
{

#define MMA_ROWS 64
#define MMA_THREADS 128

struct row_state {
    int64_t pos;
    da_rows lr;
    dagpu_row_param rp;
    const float *prior; /* with prior_table: the row's log2 priors from stage 1 */
    bool valid;
};

template <int D, typename T>
__global__ void __launch_bounds__(MMA_THREADS)
    stage2_mma_kernel(dagpu_params p, dashattn_tensor q, dashattn_tensor k, dashattn_tensor v,
                      dashattn_tensor out, float *lse, dagpu_forward_ws ws)
{
    extern __shared__ __align__(128) unsigned char smem[];
    constexpr int KSTEPS = D / 16, DTILES = D / 8;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, qd = lane & 3;
    const int64_t tile = blockIdx.x, h = blockIdx.y, b = blockIdx.z, kvh = h / p.group_size;
    const int64_t row0 = tile * MMA_ROWS;
    const uint32_t qtile = smem_addr(smem);
    const uint32_t ktile[2] = {qtile + MMA_ROWS * D * 2, qtile + (MMA_ROWS + MMA_KEYS) * D * 2};
    const uint32_t vtile[2] = {qtile + (MMA_ROWS + 2 * MMA_KEYS) * D * 2,
                               qtile + (MMA_ROWS + 3 * MMA_KEYS) * D * 2};
    const T *qbase = static_cast<const T *>(q.data) + b * q.strides[0] + h * q.strides[1];
    const T *kbase = static_cast<const T *>(k.data) + b * k.strides[0] + kvh * k.strides[1];
    const T *vbase = static_cast<const T *>(v.data) + b * v.strides[0] + kvh * v.strides[1];
    const uint32_t *mask = ws.masks + ((b * p.heads_q + h) * ws.tiles + tile) * ws.words;
    const int words = (int)ws.words;

    load_tile<D>(qtile, qbase, q.strides[2], row0, p.len_q);
    cp_async_commit();
    int j = next_block(mask, words, -1);
    if (j >= 0) {
        load_tile<D>(ktile[0], kbase, k.strides[2], (int64_t)j * MMA_KEYS, p.len_k);
        load_tile<D>(vtile[0], vbase, v.strides[2], (int64_t)j * MMA_KEYS, p.len_k);
    }
    cp_async_commit();

    row_state rs[2];
    for (int half = 0; half < 2; half++) {
        const int64_t i = row0 + warp * 16 + g + half * 8;
        rs[half].valid = i < p.len_q;
        rs[half].pos = i + p.query_offset;
        rs[half].lr = da_row_layout(p, rs[half].valid ? rs[half].pos : 0, p.len_k);
        rs[half].rp = rs[half].valid && !p.prior_table
                          ? ws.rows[(b * p.heads_q + h) * p.len_q + i]
                          : dagpu_row_param{DAGPU_PRIOR_NONE, 0.0f, 0.0f, 0.0f, 0.0f};
        rs[half].prior = p.prior_table
                             ? ws.prior + ((b * p.heads_kv + kvh) * p.len_q + i) * p.num_blocks
                             : nullptr;
    }

    cp_async_wait<1>();
    __syncthreads();
    uint32_t qf[KSTEPS][4];
    for (int kk = 0; kk < KSTEPS; kk++) {
        const int r = warp * 16 + (lane & 15), c = kk * 16 + (lane >> 4) * 8;
        ldmatrix_x4(qf[kk], qtile + swz<D>(r, c));
    }

    float o[DTILES][4];
    for (int n = 0; n < DTILES; n++)
        o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    float m[2] = {-DA_INF_F, -DA_INF_F}, l[2] = {0.0f, 0.0f};
    const float scale2 = p.scale * DA_LOG2E;
    int buf = 0;
    while (j >= 0) {
        const int jn = next_block(mask, words, j);
        /* Read before the tiles are waited for, which hides the latency;
         * stage 1 wrote the entries of candidates only. */
        float table_prior[2] = {0.0f, 0.0f};
        if (p.prior_table)
            for (int half = 0; half < 2; half++)
                if (rs[half].valid && j >= rs[half].lr.cand_begin && j < rs[half].lr.cand_end)
                    table_prior[half] = rs[half].prior[j];
        if (jn >= 0) {
            load_tile<D>(ktile[buf ^ 1], kbase, k.strides[2], (int64_t)jn * MMA_KEYS, p.len_k);
            load_tile<D>(vtile[buf ^ 1], vbase, v.strides[2], (int64_t)jn * MMA_KEYS, p.len_k);
        }
        cp_async_commit();
        cp_async_wait<1>();
        __syncthreads();

        float s[8][4];
        tile_scores<D, T>(s, qf, ktile[buf], lane);

        /* Each row's prior for this block; a candidate's score is the mean
         * of its raw logits over the block's keys (q . kbar for mean
         * pooling). With one weight per KV head stage 1 wrote the prior: it
         * needs all G heads' scores. */
        const int64_t key0 = (int64_t)j * MMA_KEYS;
        const float real = (float)min((int64_t)MMA_KEYS, p.len_k - key0);
        float prior[2];
        int vis[2];
        for (int half = 0; half < 2; half++) {
            const row_state &r = rs[half];
            float sum = 0.0f;
            if (!p.prior_table) {
                for (int n = 0; n < 8; n++)
                    sum += s[n][2 * half] + s[n][2 * half + 1];
                sum += __shfl_xor_sync(0xffffffffu, sum, 1);
                sum += __shfl_xor_sync(0xffffffffu, sum, 2);
            }
            prior[half] = -DA_INF_F;
            if (r.valid && key0 < r.lr.visible_end) {
                if (da_forced(r.lr, j))
                    prior[half] = 0.0f;
                else if (j >= r.lr.cand_begin && j < r.lr.cand_end)
                    prior[half] = p.prior_table
                                      ? table_prior[half]
                                      : da_candidate_log2(p, r.rp, p.stage1_scale * sum / real);
            }
            /* Keys of this block the row sees: all 64 except on its own
             * (diagonal) block and a ragged last block. */
            vis[half] =
                prior[half] == -DA_INF_F ? 0 : (int)min(r.lr.visible_end - key0, (int64_t)MMA_KEYS);
        }
        tile_softmax_pv<D, T>(s, o, m, l, prior, vis, scale2, vtile[buf], lane);
        __syncthreads(); /* the buffer is refilled by the next iteration */
        buf ^= 1;
        j = jn;
    }

    for (int half = 0; half < 2; half++) {
        float lt = l[half];
        lt += __shfl_xor_sync(0xffffffffu, lt, 1);
        lt += __shfl_xor_sync(0xffffffffu, lt, 2);
        const int64_t i = row0 + warp * 16 + g + half * 8;
        if (!rs[half].valid)
            continue;
        const float inv = 1.0f / lt;
        T *orow = static_cast<T *>(out.data) + b * out.strides[0] + h * out.strides[1] +
                  i * out.strides[2];
        for (int n = 0; n < DTILES; n++) {
            const uint32_t packed =
                mma_type<T>::pack(o[n][2 * half] * inv, o[n][2 * half + 1] * inv);
            *reinterpret_cast<uint32_t *>(orow + n * 8 + qd * 2) = packed;
        }
        if (lse && qd == 0)
            lse[(b * p.heads_q + h) * p.len_q + i] = (m[half] + log2f(lt)) * DA_LN2;
    }
}

template <int D> static constexpr size_t stage2_smem()
{
    return (size_t)(MMA_ROWS + 4 * MMA_KEYS) * D * 2;
}

template <int D, typename T>
dagpu_rt_error launch(const dagpu_params *p, const dashattn_tensor *q, const dashattn_tensor *k,
                      const dashattn_tensor *v, const dashattn_tensor *out, float *lse,
                      const dagpu_forward_ws *ws, cudaStream_t stream)
{
    const size_t smem = stage2_smem<D>();
    dagpu_rt_error e = da_allow_smem(stage2_mma_kernel<D, T>, smem);
    if (e != dagpu_rt_success)
        return e;
    const dim3 grid((unsigned)ws->tiles, (unsigned)p->heads_q, (unsigned)p->batch);
    stage2_mma_kernel<D, T><<<grid, MMA_THREADS, smem, stream>>>(*p, *q, *k, *v, *out, lse, *ws);
    return dagpuGetLastError();
}

} // namespace

extern "C" size_t dagpu_nv_stage2_smem(const dagpu_params *p)
{
    return p->head_dim == 64 ? stage2_smem<64>() : stage2_smem<128>();
}

extern "C" dagpu_err dagpu_nv_launch_stage2(const dagpu_params *p, const dashattn_tensor *q,
                                            const dashattn_tensor *k, const dashattn_tensor *v,
                                            const dashattn_tensor *out, float *lse,
                                            const dagpu_forward_ws *ws, void *stream)
{
    cudaStream_t st = (cudaStream_t)stream;
    const bool bf16 = p->dtype == DASHATTN_BF16;
    if (p->head_dim == 64)
        return (dagpu_err)(bf16 ? launch<64, __nv_bfloat16>(p, q, k, v, out, lse, ws, st)
                                : launch<64, __half>(p, q, k, v, out, lse, ws, st));
    return (dagpu_err)(bf16 ? launch<128, __nv_bfloat16>(p, q, k, v, out, lse, ws, st)
                            : launch<128, __half>(p, q, k, v, out, lse, ws, st));
}
