/* SPDX-License-Identifier: MIT */
/* Decode split-KV on the tensor cores (16-bit caches, head dimension 64 or
 * 128, block size 64, at most 16 query heads per KV head): the group's query
 * heads are the rows of one 16-row mma tile, so each key block is read once
 * for all of them. Decode is a memory-bound job, so the kernel is built
 * around keeping bytes in flight: every thread issues cp.async copies of
 * whole 64-token K/V blocks into a ring of DECODE_STAGES buffers, all but one
 * of them ahead of the block being computed, and two thread blocks share each
 * multiprocessor. The four warps take 16 of a block's 64 tokens each, with
 * their own online-softmax state, so one block costs a warp only a quarter
 * of the products; the warps' states are merged at the end.
 *
 * Where a grid of splits per (sequence, KV head) segment would take several
 * waves, one wave of thread blocks shares out the blocks to read of every
 * segment as one stream instead, each thread block an equal run of it: the
 * grid, fixed before the kept blocks are counted, gives each split its own
 * segment's share, so unequal segments leave the last wave partly idle. A
 * run that crosses into the next segment writes its rows for the first (a
 * piece of it) and goes on without draining the copies in flight. */
#include "nv_kernels.h"
#include "nv_mma.cuh"

namespace
{

#define DECODE_WARPS 4
#define DECODE_STAGES 3
#define DECODE_THREADS (DECODE_WARPS * 32)
/* Tokens of a block each warp takes. */
#define WARP_KEYS (MMA_KEYS / DECODE_WARPS)

template <int D> static __host__ __device__ constexpr size_t stage_bytes()
{
    return 2 * (size_t)MMA_KEYS * D * 2; /* a K and a V tile of 16-bit values */
}

/* Where a run of the stream is: segment s (sequence s / Hkv, KV head
 * s % Hkv) holds the stream positions [begin, end). */
struct segment_cursor {
    int64_t s, begin, end;
    /* Its sequence, KV head and length, kept so that the loop over blocks
     * does no 64-bit division (each a long software sequence; with three
     * per block the split took 549.6 us against 518.2 on an H200 at batch
     * 16, Hkv 8, and 45.9 against 43.5 at batch 1). */
    int64_t b, kvh, len;
};

static __device__ __forceinline__ void locate(segment_cursor &cur, const dagpu_params &p,
                                              const dashattn_kv_cache &c)
{
    cur.b = cur.s / p.heads_kv;
    cur.kvh = cur.s - cur.b * p.heads_kv;
    cur.len = c.seq_lens[cur.b];
}

/* Moves the cursor to the segment that holds stream position v (at or after
 * its own; empty segments are passed over). */
static __device__ __forceinline__ void seek(segment_cursor &cur, const dagpu_params &p,
                                            const dashattn_kv_cache &c, const int32_t *nblocks,
                                            int64_t v)
{
    if (v < cur.end)
        return;
    while (v >= cur.end) {
        cur.s++;
        cur.begin = cur.end;
        cur.end = cur.begin + max(nblocks[cur.s], 0);
    }
    locate(cur, p, c);
}

/* The stream's layout, found by every thread block from the segments'
 * counts (a bad sequence's -1 counts 0): its run [u0, u1), the stream's
 * length W and, where u0 < W, the segment holding position u0. Thread block
 * 0 also writes every segment's start for the merge. scan: DECODE_WARPS + 2
 * values of shared memory. */
static __device__ void find_run(const dagpu_params &p, const dagpu_decode_ws &ws, int64_t *scan,
                                int64_t c, int64_t C, int64_t &u0, int64_t &u1, int64_t &W,
                                segment_cursor &cur)
{
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int64_t S = p.batch * p.heads_kv, per = (S + DECODE_THREADS - 1) / DECODE_THREADS;
    const int64_t lo = min(S, tid * per), hi = min(S, lo + per);
    int64_t mine = 0;
    for (int64_t s = lo; s < hi; s++)
        mine += max(ws.nblocks[s], 0);
    int64_t incl = mine;
    for (int o = 1; o < 32; o <<= 1) {
        const int64_t t = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o)
            incl += t;
    }
    if (lane == 31)
        scan[warp] = incl;
    __syncthreads();
    int64_t before = incl - mine;
    W = 0;
    for (int w = 0; w < DECODE_WARPS; w++) {
        before += w < warp ? scan[w] : 0;
        W += scan[w];
    }
    u0 = W * c / C;
    u1 = W * (c + 1) / C;
    if (c == 0) {
        int64_t run = before;
        for (int64_t s = lo; s < hi; s++) {
            ws.prefix[s] = run;
            run += max(ws.nblocks[s], 0);
        }
        if (tid == 0)
            ws.prefix[S] = W;
    }
    if (u0 < W && before <= u0 && u0 < before + mine) { /* one thread */
        int64_t run = before;
        for (int64_t s = lo; s < hi; s++) {
            const int64_t n = max(ws.nblocks[s], 0);
            if (u0 < run + n) {
                scan[DECODE_WARPS] = s;
                scan[DECODE_WARPS + 1] = run;
                break;
            }
            run += n;
        }
    }
    __syncthreads();
    if (u0 < W) {
        cur.s = scan[DECODE_WARPS];
        cur.begin = scan[DECODE_WARPS + 1];
        cur.end = cur.begin + max(ws.nblocks[cur.s], 0);
    }
}

/* A warp's online-softmax state of its 16 rows (the thread's two). */
template <int D> struct warp_state {
    float o[D / 8][4];
    float m[2], l[2];
    __device__ __forceinline__ void reset()
    {
        for (int n = 0; n < D / 8; n++)
            o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
        m[0] = m[1] = -DA_INF_F;
        l[0] = l[1] = 0.0f;
    }
};

/* Merges the four warps' states of one piece and writes its G rows of
 * (m, l, o) to part, rstride floats apart. rows is a free ring slot
 * ([warp][16][D] floats), ml [warp][16][2]; every thread takes part, and
 * both are free again on return. */
template <int D>
static __device__ void write_piece(const warp_state<D> &st, float *rows, float (*ml)[16][2],
                                   int64_t G, float *part, int64_t rstride)
{
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, qd = lane & 3;
    for (int half = 0; half < 2; half++) {
        float lt = st.l[half];
        lt += __shfl_xor_sync(0xffffffffu, lt, 1);
        lt += __shfl_xor_sync(0xffffffffu, lt, 2);
        const int r = g + 8 * half;
        float *row = rows + (warp * 16 + r) * D;
        for (int n = 0; n < D / 8; n++)
            *reinterpret_cast<float2 *>(row + n * 8 + qd * 2) =
                make_float2(st.o[n][2 * half], st.o[n][2 * half + 1]);
        if (qd == 0) {
            ml[warp][r][0] = st.m[half];
            ml[warp][r][1] = lt;
        }
    }
    __syncthreads();
    for (int64_t e = tid; e < G * (D + 1); e += DECODE_THREADS) {
        const int r = (int)(e / (D + 1)), d = (int)(e % (D + 1)); /* d == D: m and l */
        float mx = -DA_INF_F;
        for (int w = 0; w < DECODE_WARPS; w++)
            mx = fmaxf(mx, ml[w][r][0]);
        float acc = 0.0f;
        for (int w = 0; w < DECODE_WARPS; w++) {
            if (ml[w][r][0] == -DA_INF_F)
                continue;
            acc += (d == D ? ml[w][r][1] : rows[(w * 16 + r) * D + d]) * exp2f(ml[w][r][0] - mx);
        }
        float *out = part + r * rstride;
        if (d == D) {
            out[0] = mx;
            out[1] = acc;
        } else {
            out[2 + d] = acc;
        }
    }
    __syncthreads();
}

template <int D, typename T>
__global__ void __launch_bounds__(DECODE_THREADS, 2)
    decode_split_mma_kernel(dagpu_params p, dashattn_tensor q, dashattn_kv_cache c,
                            dagpu_decode_ws ws)
{
    extern __shared__ __align__(128) unsigned char smem_dec[];
    __shared__ float ml[DECODE_WARPS][16][2];
    __shared__ int64_t scan[DECODE_WARPS + 2];
    static_assert(DECODE_WARPS * 16 * D * sizeof(float) <= stage_bytes<D>(),
                  "a piece's rows fit a ring slot");
    constexpr int KSTEPS = D / 16;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, qd = lane & 3;
    const int64_t G = p.group_size, M = p.num_blocks, Hkv = p.heads_kv;
    /* Either one wave sharing the stream (ws.stream_ctas of them), or, where
     * a grid of splits per segment fits one wave, split blockIdx.x of
     * segment (blockIdx.z, blockIdx.y): its query is known before the
     * stage-1 kernels finish, and no run crosses a segment. */
    const bool stream = ws.stream_ctas > 0;
    const int64_t cta = blockIdx.x, C = gridDim.x;
    /* Query rows g and g + 8 of the tile are heads kvh * G + row; rows past
     * G are zero and never written. */
    const bool live[2] = {g < G, g + 8 < G};
    uint32_t qf[KSTEPS][4];
    auto load_query = [&](int64_t s) {
        const int64_t b = s / Hkv, kvh = s % Hkv;
        const T *qrow[2];
        for (int half = 0; half < 2; half++) {
            const int64_t row = min((int64_t)(g + 8 * half), G - 1);
            qrow[half] =
                static_cast<const T *>(q.data) + b * q.strides[0] + (kvh * G + row) * q.strides[1];
        }
        for (int kk = 0; kk < KSTEPS; kk++) {
            const int col = kk * 16 + qd * 2;
            qf[kk][0] = live[0] ? *reinterpret_cast<const uint32_t *>(qrow[0] + col) : 0u;
            qf[kk][1] = live[1] ? *reinterpret_cast<const uint32_t *>(qrow[1] + col) : 0u;
            qf[kk][2] = live[0] ? *reinterpret_cast<const uint32_t *>(qrow[0] + col + 8) : 0u;
            qf[kk][3] = live[1] ? *reinterpret_cast<const uint32_t *>(qrow[1] + col + 8) : 0u;
        }
    };

    const int64_t own = (int64_t)blockIdx.z * Hkv + blockIdx.y;
    if (!stream) /* the query is the caller's, ready before the call */
        load_query(own);
    da_wait_previous();
    int64_t u0, u1, W;
    segment_cursor cur = {own, 0, 0, 0, 0, 0};
    if (stream) {
        find_run(p, ws, scan, cta, C, u0, u1, W, cur);
    } else { /* positions within the segment */
        W = cur.end = max(ws.nblocks[own], 0);
        u0 = W * cta / ws.splits;
        u1 = W * (cta + 1) / ws.splits;
    }
    locate(cur, p, c);
    const int64_t rstride = stream ? D + 2 : ws.splits * (D + 2);
    auto piece = [&](const segment_cursor &sc) {
        return ws.partial + (stream ? (cta + sc.s) * G : sc.s * G * ws.splits + cta) * (D + 2);
    };
    if (u0 >= u1) {
        /* An empty run's rows weigh 0 in the merge, which reads every
         * split's and, in the stream, each run's inside a segment. */
        if (!stream || u0 < W)
            for (int64_t e = tid; e < G * (D + 2); e += DECODE_THREADS)
                piece(cur)[e / (D + 2) * rstride + e % (D + 2)] =
                    e % (D + 2) == 0 ? -DA_INF_F : 0.0f;
        return;
    }
    segment_cursor fcur = cur; /* the copies' segment, up to two blocks ahead */
    const uint32_t base = smem_addr(smem_dec);
    auto block_base = [&](const dashattn_tensor &t, int64_t b, int64_t kvh,
                          int64_t j) -> const T * {
        const T *data = static_cast<const T *>(t.data);
        if (c.layout == DASHATTN_CACHE_PAGED)
            return data + (int64_t)c.block_table[b * c.table_stride + j] * t.strides[0] +
                   kvh * t.strides[1];
        return data + b * t.strides[0] + kvh * t.strides[1] + j * MMA_KEYS * t.strides[2];
    };
    auto ktile = [&](int slot) { return base + (uint32_t)(slot * stage_bytes<D>()); };
    auto vtile = [&](int slot) { return ktile(slot) + (uint32_t)(MMA_KEYS * D * 2); };
    auto fetch = [&](int64_t v) {
        seek(fcur, p, c, ws.nblocks, v);
        const int64_t j = ws.blocks[fcur.s * M + (v - fcur.begin)];
        const int slot = (int)((v - u0) % DECODE_STAGES);
        const int64_t valid = min((int64_t)MMA_KEYS, fcur.len - j * MMA_KEYS);
        load_tile<D>(ktile(slot), block_base(c.k, fcur.b, fcur.kvh, j), c.k.strides[2], 0, valid);
        load_tile<D>(vtile(slot), block_base(c.v, fcur.b, fcur.kvh, j), c.v.strides[2], 0, valid);
    };
    /* One commit group per ring slot, empty ones included, so the wait
     * below always counts the same number of groups. */
    for (int s = 0; s < DECODE_STAGES - 1; s++) {
        if (u0 + s < u1)
            fetch(u0 + s);
        cp_async_commit();
    }
    if (stream)
        load_query(cur.s);

    warp_state<D> st;
    st.reset();
    const float scale2 = p.scale * DA_LOG2E;
    for (int64_t u = u0; u < u1; u++) {
        cp_async_wait<DECODE_STAGES - 2>(); /* block u has landed */
        __syncthreads(); /* ... for every thread, and block u - 1's slot is free */
        const int free_slot = (int)((u - u0 + DECODE_STAGES - 1) % DECODE_STAGES);
        if (u == cur.end) { /* the run enters the next segment */
            write_piece<D>(st, reinterpret_cast<float *>(smem_dec + free_slot * stage_bytes<D>()),
                           ml, G, piece(cur), rstride);
            seek(cur, p, c, ws.nblocks, u);
            load_query(cur.s);
            st.reset();
        }
        if (u + DECODE_STAGES - 1 < u1)
            fetch(u + DECODE_STAGES - 1);
        cp_async_commit();
        const int64_t j = ws.blocks[cur.s * M + (u - cur.begin)];
        const int slot = (int)((u - u0) % DECODE_STAGES);
        const float *log2w = ws.log2w + cur.s * G * M;
        float sc[WARP_KEYS / 8][4];
        tile_scores<D, T>(sc, qf, ktile(slot), lane, warp * WARP_KEYS);
        const int vis_keys = (int)min((int64_t)MMA_KEYS, cur.len - j * MMA_KEYS);
        float prior[2];
        int vis[2];
        for (int half = 0; half < 2; half++) {
            prior[half] = live[half] ? log2w[(g + 8 * half) * ws.wstride + j] : -DA_INF_F;
            vis[half] = prior[half] == -DA_INF_F ? 0 : vis_keys;
        }
        tile_softmax_pv<D, T>(sc, st.o, st.m, st.l, prior, vis, scale2, vtile(slot), lane,
                              warp * WARP_KEYS);
    }
    cp_async_wait<0>();
    __syncthreads(); /* the whole ring is free */
    write_piece<D>(st, reinterpret_cast<float *>(smem_dec), ml, G, piece(cur), rstride);
}

template <int D> static constexpr size_t split_smem()
{
    return DECODE_STAGES * stage_bytes<D>();
}

template <int D, typename T>
dagpu_rt_error launch(const dagpu_params *p, const dashattn_tensor *q, const dashattn_kv_cache *c,
                      const dagpu_decode_ws *ws, cudaStream_t stream)
{
    const size_t smem = split_smem<D>();
    dagpu_rt_error e = da_allow_smem(decode_split_mma_kernel<D, T>, smem);
    if (e != dagpu_rt_success)
        return e;
    const dim3 grid = ws->stream_ctas > 0
                          ? dim3((unsigned)ws->stream_ctas)
                          : dim3((unsigned)ws->splits, (unsigned)p->heads_kv, (unsigned)p->batch);
    return da_launch(decode_split_mma_kernel<D, T>, grid, dim3(DECODE_THREADS), smem, stream,
                     ws->chained, *p, *q, *c, *ws);
}

} // namespace

extern "C" size_t dagpu_nv_decode_split_smem(const dagpu_params *p)
{
    return p->head_dim == 64 ? split_smem<64>() : split_smem<128>();
}

extern "C" int64_t dagpu_nv_decode_split_ctas(int sm_count)
{
    const int64_t ctas = 2 * (int64_t)(sm_count > 0 ? sm_count : 1); /* __launch_bounds__ */
    return ctas < DAGPU_DECODE_MAX_STREAM_CTAS ? ctas : DAGPU_DECODE_MAX_STREAM_CTAS;
}

extern "C" dagpu_err dagpu_nv_launch_decode_split(const dagpu_params *p, const dashattn_tensor *q,
                                                  const dashattn_kv_cache *c,
                                                  const dagpu_decode_ws *ws, void *stream)
{
    cudaStream_t st = (cudaStream_t)stream;
    const bool bf16 = p->dtype == DASHATTN_BF16;
    if (p->head_dim == 64)
        return (dagpu_err)(bf16 ? launch<64, __nv_bfloat16>(p, q, c, ws, st)
                                : launch<64, __half>(p, q, c, ws, st));
    return (dagpu_err)(bf16 ? launch<128, __nv_bfloat16>(p, q, c, ws, st)
                            : launch<128, __half>(p, q, c, ws, st));
}
