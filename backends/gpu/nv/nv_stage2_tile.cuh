/* SPDX-License-Identifier: MIT */
/* What the tensor-core stage-2 kernels (nv/nv_stage2.cu on mma.sync,
 * hopper/hopper_stage2.cu on wgmma) share: which tile a thread block owns,
 * the state of the two query rows a thread holds in the accumulator layout
 * (rows lane / 4 and lane / 4 + 8 of its warp's 16), the queries' loader,
 * each row's prior for a block, and the output. Both kernels give 64 rows to
 * four warps and walk the key blocks of the tile's mask. */
#ifndef DASHATTN_GPU_NV_STAGE2_TILE_CUH
#define DASHATTN_GPU_NV_STAGE2_TILE_CUH

#include "nv_mma.cuh"

/* Rows of a stage-2 tile and the threads of its thread block. */
#define MMA_ROWS 64
#define MMA_THREADS 128

static_assert(MMA_ROWS == DAGPU_TILE_ROWS, "a thread block owns one stage-1 tile");

namespace
{

/* A tile (gpu_kernels.h: packed (row, head) pairs of one KV head, or rows
 * of one head) of tile head hb of batch b. Kernels number their tiles
 * heaviest first: causal rows at the end see the most blocks. */
struct s2_tile {
    bool packed;
    int64_t b, hb, kvh, row0, total;
    const uint32_t *mask; /* null for a tile past the last */
    int words;
};

static __device__ __forceinline__ s2_tile s2_tile_at(const dagpu_params &p,
                                                     const dagpu_forward_ws &ws, int64_t hb,
                                                     int64_t b, int64_t tile)
{
    s2_tile t;
    const int64_t heads = dagpu_tile_heads(&p);
    t.packed = dagpu_tiles_packed(&p);
    t.total = dagpu_tile_rows_total(&p);
    t.b = b;
    t.hb = hb;
    t.kvh = t.packed ? t.hb : t.hb / p.group_size;
    t.row0 = tile * MMA_ROWS;
    t.mask =
        tile < ws.tiles ? ws.masks + ((t.b * heads + t.hb) * ws.tiles + tile) * ws.words : nullptr;
    t.words = (int)ws.words;
    return t;
}

/* The next block after j the tile reads (-1 for none), and whether it reads
 * block j. */
static __device__ __forceinline__ int s2_next(const s2_tile &t, int j)
{
    return t.mask ? next_block(t.mask, t.words, j) : -1;
}

static __device__ __forceinline__ bool s2_reads(const s2_tile &t, int j)
{
    return t.mask && (t.mask[j >> 5] >> (j & 31) & 1u);
}

/* The block after j the tile reads (-1 for none), its keys and values
 * started into the tiles ktile and vtile: one cp.async group, committed
 * either way. */
template <int D, typename T>
static __device__ __forceinline__ int
s2_prefetch(const s2_tile &t, int j, uint32_t ktile, uint32_t vtile, const T *kbase, const T *vbase,
            const dashattn_tensor &k, const dashattn_tensor &v, int64_t len_k)
{
    const int jn = s2_next(t, j);
    if (jn >= 0) {
        load_tile<D>(ktile, kbase, k.strides[2], (int64_t)jn * MMA_KEYS, len_k);
        load_tile<D>(vtile, vbase, v.strides[2], (int64_t)jn * MMA_KEYS, len_k);
    }
    cp_async_commit();
    return jn;
}

/* Grid of thread blocks that own `per_block` consecutive tiles each: every
 * such group of every tile head, then batch. */
static inline dim3 s2_grid(const dagpu_params *p, const dagpu_forward_ws *ws, int per_block)
{
    const int64_t groups = (ws->tiles + per_block - 1) / per_block;
    return dim3((unsigned)(groups * dagpu_tile_heads(p)), (unsigned)p->batch);
}

/* Tile `k` of the `per_block` tiles of this thread block (s2_grid), the
 * heaviest group first. */
static __device__ __forceinline__ s2_tile s2_block_tile(const dagpu_params &p,
                                                        const dagpu_forward_ws &ws, int per_block,
                                                        int k)
{
    const int64_t heads = dagpu_tile_heads(&p);
    const int64_t groups = (ws.tiles + per_block - 1) / per_block;
    const int64_t group = groups - 1 - blockIdx.x / heads;
    return s2_tile_at(p, ws, blockIdx.x % heads, blockIdx.y, group * per_block + k);
}

/* Query row and head of the tile's row r (r < 64; t.row0 + r < t.total). */
static __device__ __forceinline__ void s2_row_of(const dagpu_params &p, const s2_tile &t, int r,
                                                 int64_t &i, int64_t &h)
{
    const int64_t pr = t.row0 + r;
    i = t.packed ? pr / p.group_size : pr;
    h = t.packed ? t.kvh * p.group_size + pr % p.group_size : t.hb;
}

struct row_state {
    int64_t i, head;
    da_rows lr;
    dagpu_row_param rp;
    const float *prior; /* with prior_table: the row's log2 priors from stage 1 */
    bool valid;
};

/* The thread's two rows (lane / 4 and + 8 of warp `warp`'s 16 of the
 * tile). */
static __device__ __forceinline__ void s2_rows(const dagpu_params &p, const dagpu_forward_ws &ws,
                                               const s2_tile &t, int warp, int lane,
                                               row_state (&rs)[2])
{
    for (int half = 0; half < 2; half++) {
        const int r = warp * 16 + (lane >> 2) + half * 8;
        row_state &s = rs[half];
        s.valid = t.row0 + r < t.total;
        s.i = 0;
        s.head = 0;
        if (s.valid)
            s2_row_of(p, t, r, s.i, s.head);
        s.lr = da_row_layout(p, s.i + p.query_offset, p.len_k);
        s.rp = s.valid && !p.prior_table
                   ? ws.rows[(t.b * p.heads_q + s.head) * p.len_q + s.i]
                   : dagpu_row_param{DAGPU_PRIOR_NONE, 0.0f, 0.0f, 0.0f, 0.0f};
        s.prior = p.prior_table
                      ? ws.prior + ((t.b * p.heads_kv + t.kvh) * p.len_q + s.i) * p.num_blocks
                      : nullptr;
    }
}

/* Loads the tile's 64 query rows into a tile of layout L (rows past the end
 * read as zeros). */
template <int D, typename T, typename L>
static __device__ __forceinline__ void s2_load_queries(uint32_t tile, const dagpu_params &p,
                                                       const dashattn_tensor &q, const s2_tile &t,
                                                       int tid, int threads)
{
    constexpr int chunks = D / 8;
    for (int e = tid; e < MMA_ROWS * chunks; e += threads) {
        const int r = e / chunks, c = e % chunks;
        const bool valid = t.row0 + r < t.total;
        int64_t i = 0, h = 0;
        if (valid)
            s2_row_of(p, t, r, i, h);
        const T *src = static_cast<const T *>(q.data) + t.b * q.strides[0] + h * q.strides[1] +
                       i * q.strides[2] + c * 8;
        cp_async16(tile + L::at(r, c * 8), src, valid);
    }
}

/* Stage 1's prior of block j for each row, read before the block's tiles
 * are waited for (which hides the latency); stage 1 wrote the entries of
 * candidates only. */
static __device__ __forceinline__ void
s2_table_priors(const dagpu_params &p, const row_state (&rs)[2], int j, float (&table_prior)[2])
{
    for (int half = 0; half < 2; half++) {
        table_prior[half] = 0.0f;
        if (p.prior_table && rs[half].valid && j >= rs[half].lr.cand_begin &&
            j < rs[half].lr.cand_end)
            table_prior[half] = rs[half].prior[j];
    }
}

/* Row r's log2 prior for block j, -inf where it reads none of it, and the
 * number of the block's keys it sees; score: the candidate's recomputed
 * score (per-head priors), table_prior: stage 1's (prior_table). */
static __device__ __forceinline__ void block_prior(const dagpu_params &p, const row_state &r, int j,
                                                   float score, float table_prior, float &prior,
                                                   int &vis)
{
    const int64_t key0 = (int64_t)j * MMA_KEYS;
    prior = -DA_INF_F;
    if (r.valid && key0 < r.lr.visible_end) {
        if (da_forced(r.lr, j))
            prior = 0.0f;
        else if (j >= r.lr.cand_begin && j < r.lr.cand_end)
            prior = p.prior_table ? table_prior : da_candidate_log2(p, r.rp, score);
    }
    /* Keys of this block the row sees: all 64 except on its own (diagonal)
     * block and a ragged last block. */
    vis = prior == -DA_INF_F ? 0 : (int)min(r.lr.visible_end - key0, (int64_t)MMA_KEYS);
}

/* The rows' outputs o / l and log-sum-exp from the accumulator layout. */
template <int D, typename T>
static __device__ __forceinline__ void
s2_store(const dagpu_params &p, const dashattn_tensor &out, float *lse, const s2_tile &t,
         const row_state (&rs)[2], const float (&o)[D / 8][4], const float (&m)[2],
         const float (&l)[2], int lane)
{
    const int qd = lane & 3;
    for (int half = 0; half < 2; half++) {
        float lt = l[half];
        lt += __shfl_xor_sync(0xffffffffu, lt, 1);
        lt += __shfl_xor_sync(0xffffffffu, lt, 2);
        if (!rs[half].valid)
            continue;
        const int64_t i = rs[half].i, h = rs[half].head;
        const float inv = 1.0f / lt;
        T *orow = static_cast<T *>(out.data) + t.b * out.strides[0] + h * out.strides[1] +
                  i * out.strides[2];
        for (int n = 0; n < D / 8; n++) {
            const uint32_t packed =
                mma_type<T>::pack(o[n][2 * half] * inv, o[n][2 * half + 1] * inv);
            *reinterpret_cast<uint32_t *>(orow + n * 8 + qd * 2) = packed;
        }
        if (lse && qd == 0)
            lse[(t.b * p.heads_q + h) * p.len_q + i] = (m[half] + log2f(lt)) * DA_LN2;
    }
}

/* Launching a stage-2 kernel: K<D, T> names it (kernel), its dynamic shared
 * memory (smem), threads and tiles per thread block (threads, per_block),
 * for head dimension D (64 or 128) and 16-bit type T. */
template <typename S>
static dagpu_rt_error s2_launch_one(const dagpu_params *p, const dashattn_tensor *q,
                                    const dashattn_tensor *k, const dashattn_tensor *v,
                                    const dashattn_tensor *out, float *lse,
                                    const dagpu_forward_ws *ws, cudaStream_t stream)
{
    dagpu_rt_error e = da_allow_smem(S::kernel, S::smem);
    if (e != dagpu_rt_success)
        return e;
    S::kernel<<<s2_grid(p, ws, S::per_block), S::threads, S::smem, stream>>>(*p, *q, *k, *v, *out,
                                                                             lse, *ws);
    return dagpuGetLastError();
}

template <template <int, typename> class K>
static dagpu_err s2_launch(const dagpu_params *p, const dashattn_tensor *q,
                           const dashattn_tensor *k, const dashattn_tensor *v,
                           const dashattn_tensor *out, float *lse, const dagpu_forward_ws *ws,
                           void *stream)
{
    cudaStream_t st = (cudaStream_t)stream;
    const bool bf16 = p->dtype == DASHATTN_BF16;
    if (p->head_dim == 64)
        return (dagpu_err)(bf16 ? s2_launch_one<K<64, __nv_bfloat16>>(p, q, k, v, out, lse, ws, st)
                                : s2_launch_one<K<64, __half>>(p, q, k, v, out, lse, ws, st));
    return (dagpu_err)(bf16 ? s2_launch_one<K<128, __nv_bfloat16>>(p, q, k, v, out, lse, ws, st)
                            : s2_launch_one<K<128, __half>>(p, q, k, v, out, lse, ws, st));
}

template <template <int, typename> class K> static size_t s2_smem(const dagpu_params *p)
{
    return p->head_dim == 64 ? K<64, __half>::smem : K<128, __half>::smem;
}

} // namespace

#endif
