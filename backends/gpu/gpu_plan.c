/* SPDX-License-Identifier: MIT */
/* Plan-time choices of the GPU plugins: which kernel variants a plan may
 * take on this device, the decode split count and tile, the workspace
 * layouts, and the problems refused because the device cannot run them. */
#include "gpu_plugin.h"
#ifdef DAGPU_HAVE_NV
#include "nv/nv_kernels.h"
#include "hopper/hopper_kernels.h"
#endif

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void dagpu_params_from_plan(const dashattn_plan_desc *plan, dagpu_params *p)
{
    const dashattn_problem *pr = &plan->problem;
    memset(p, 0, sizeof *p);
    p->batch = pr->batch;
    p->heads_q = pr->heads_q;
    p->heads_kv = pr->heads_kv;
    p->len_q = pr->len_q;
    p->len_k = pr->len_k;
    p->head_dim = pr->head_dim;
    p->num_blocks = plan->num_blocks;
    p->group_size = plan->group_size;
    p->query_offset = plan->query_offset;
    p->block_size = pr->block_size;
    p->n_sink = pr->n_sink;
    p->n_local = pr->n_local;
    p->causal = pr->causal != 0;
    p->method = (int32_t)plan->threshold_method;
    p->iterations = plan->threshold_iterations;
    p->topk = pr->topk;
    /* One query head per KV head makes every group mode per-head; top-k in
     * group-mean mode ranks the group's mean score, as shared mode does. */
    const int grouped = plan->group_size > 1;
    const int topk = plan->threshold_method == DASHATTN_THRESHOLD_TOPK;
    p->shared_group = grouped && (pr->group_mode == DASHATTN_GROUP_SHARED ||
                                  (pr->group_mode == DASHATTN_GROUP_MEAN && topk));
    p->group_mean = grouped && pr->group_mode == DASHATTN_GROUP_MEAN && !topk;
    p->prior_table = p->shared_group || p->group_mean;
    p->prior_flat = pr->prior == DASHATTN_PRIOR_FLAT;
    p->dtype = (int32_t)pr->dtype;
    p->alpha = (float)pr->alpha;
    p->scale = (float)pr->scale;
    p->stage1_scale = (float)pr->stage1_scale;
    /* 0 unless the prior is flat; a product, not a division, in the kernels. */
    p->inv_sigma = pr->prior == DASHATTN_PRIOR_FLAT ? (float)(1.0 / pr->prior_sigma) : 0.0f;
}

void *dagpu_carve(dagpu_carver *c, size_t bytes)
{
    c->used = (c->used + 255) & ~(size_t)255;
    void *ptr = c->base ? c->base + c->used : NULL;
    c->used += bytes;
    return ptr;
}

dashattn_status dagpu_check_workspace(const char *op, const void *workspace)
{
    if (((uintptr_t)workspace & 255u) == 0)
        return DASHATTN_OK;
    dagpu_host->set_error(DAGPU_NAME " backend: %s: workspace %p is not 256-byte aligned (memory "
                                     "from the runtime's allocator or dashattn_memory_alloc is)",
                          op, workspace);
    return DASHATTN_ERR_INVALID_ARGUMENT;
}

int dagpu_tensors_vector_ok(const dashattn_tensor *const *t, int count)
{
    for (int i = 0; i < count; i++) {
        if (t[i]->strides[3] != 1 || ((uintptr_t)t[i]->data & 15u) != 0)
            return 0;
        for (int d = 0; d < 3; d++)
            if (t[i]->strides[d] % 8 != 0)
                return 0;
    }
    return 1;
}

/* The forward's arrays, carved from c (split keys only if asked). */
static dagpu_forward_ws forward_arrays(const dagpu_params *p, int split_keys, dagpu_carver *c)
{
    const size_t D = (size_t)p->head_dim, M = (size_t)p->num_blocks;
    const size_t kv_blocks = (size_t)p->batch * (size_t)p->heads_kv * M * D;
    const size_t kv_rows = (size_t)p->batch * (size_t)p->heads_kv * (size_t)p->len_q;
    const size_t rows = (size_t)p->batch * (size_t)p->heads_q * (size_t)p->len_q;
    dagpu_forward_ws w;
    memset(&w, 0, sizeof w);
    w.tiles = dagpu_tile_count(p);
    w.words = (int64_t)(M + 31) / 32;
    w.kbar = dagpu_carve(c, kv_blocks * sizeof(float));
    if (split_keys) {
        w.kbar_hi = dagpu_carve(c, kv_blocks * 2);
        w.kbar_lo = dagpu_carve(c, kv_blocks * 2);
    }
    if (p->prior_table)
        w.prior = dagpu_carve(c, kv_rows * M * sizeof(float));
    w.rows = dagpu_carve(c, rows * sizeof(dagpu_row_param));
    w.masks = dagpu_carve(c, (size_t)p->batch * (size_t)dagpu_tile_heads(p) * (size_t)w.tiles *
                                 (size_t)w.words * sizeof(uint32_t));
    w.counts = dagpu_carve(c, 2 * sizeof(unsigned long long));
    return w;
}

size_t dagpu_forward_layout(const dagpu_plan *gp, void *base, dagpu_forward_ws *ws)
{
    dagpu_carver c = {base, 0};
    const dagpu_forward_ws w = forward_arrays(&gp->params, gp->split_keys, &c);
    if (ws)
        *ws = w;
    return c.used;
}

int dagpu_backward_stage1_grad(const dagpu_params *p)
{
    return p->method != DASHATTN_THRESHOLD_TOPK;
}

size_t dagpu_backward_layout(const dagpu_plan *gp, void *base, dagpu_backward_ws *ws)
{
    const dagpu_params *p = &gp->params;
    const size_t B = (size_t)p->batch, M = (size_t)p->num_blocks, D = (size_t)p->head_dim;
    const size_t rows = B * (size_t)p->heads_q * (size_t)p->len_q;
    const size_t keys = B * (size_t)p->heads_kv * (size_t)p->len_k;
    dagpu_carver c = {base, 0};
    dagpu_backward_ws w;
    memset(&w, 0, sizeof w);
    w.fwd = forward_arrays(p, gp->split_keys && p->prior_table, &c);
    w.pair_tiles = (p->len_q * p->group_size + DAGPU_TILE_ROWS - 1) / DAGPU_TILE_ROWS;
    w.dh_chunks = (p->len_k + DAGPU_BWD_DH_CHUNK - 1) / DAGPU_BWD_DH_CHUNK;
    if (dagpu_backward_stage1_grad(p)) {
        w.dz = dagpu_carve(&c, rows * M * sizeof(float));
        w.rt = dagpu_carve(&c, keys * sizeof(float));
        w.dh_part = dagpu_carve(&c, (size_t)w.dh_chunks * (size_t)p->heads_kv * D * sizeof(double));
    }
    w.delta = dagpu_carve(&c, rows * sizeof(float));
    w.dq_s2 = dagpu_carve(&c, rows * D * sizeof(float));
    w.touch = dagpu_carve(&c, B * (size_t)p->heads_kv * (size_t)w.pair_tiles * (size_t)w.fwd.words *
                                  sizeof(uint32_t));
    w.kv_splits = gp->backward_kv_splits > 1 ? gp->backward_kv_splits : 1;
    w.row_words = (p->len_q + 31) / 32;
#ifdef DAGPU_HAVE_NV
    if (gp->backward_kv_nv)
        w.row_touch =
            dagpu_carve(&c, B * (size_t)p->heads_kv * M * (size_t)w.row_words * sizeof(uint32_t));
    if (w.kv_splits > 1) {
        const size_t units = B * (size_t)p->heads_kv * M;
        w.kv_part = dagpu_carve(&c, units * (size_t)w.kv_splits *
                                        dagpu_nv_backward_kv_part_floats(p) * sizeof(float));
        w.kv_arrived = dagpu_carve(&c, units * sizeof(uint32_t));
    }
#endif
    if (ws)
        *ws = w;
    return c.used;
}

size_t dagpu_decode_layout(const dagpu_plan *gp, void *base, dagpu_decode_ws *ws)
{
    const dagpu_params *p = &gp->params;
    const size_t M = (size_t)p->num_blocks, B = (size_t)p->batch;
    dagpu_carver c = {base, 0};
    dagpu_decode_ws w;
    w.splits = gp->decode_splits;
    w.wstride = p->shared_group || p->group_mean ? 0 : (int64_t)M;
    w.chained = gp->decode_chained;
    w.threshold_threads = gp->decode_threshold_threads;
    w.weight_lanes = gp->decode_weight_lanes;
    w.merge_lane_columns = gp->decode_merge_lane_columns;
    w.log2w = dagpu_carve(&c, B * (size_t)p->heads_q * M * sizeof(float));
    w.rows = dagpu_carve(&c, B * (size_t)p->heads_q * sizeof(dagpu_row_param));
    w.blocks = dagpu_carve(&c, B * (size_t)p->heads_kv * M * sizeof(int32_t));
    w.nblocks = dagpu_carve(&c, B * (size_t)p->heads_kv * sizeof(int32_t));
    w.stream_ctas = gp->decode_stream_ctas;
    const size_t split_rows = B * (size_t)p->heads_q * (size_t)w.splits;
    const size_t stream_rows =
        ((size_t)w.stream_ctas + B * (size_t)p->heads_kv) * (size_t)p->group_size;
    w.partial = dagpu_carve(&c, (split_rows > stream_rows ? split_rows : stream_rows) *
                                    (size_t)(p->head_dim + 2) * sizeof(float));
    w.prefix = dagpu_carve(&c, (B * (size_t)p->heads_kv + 1) * sizeof(int64_t));
    if (ws)
        *ws = w;
    return c.used;
}

/* The layouts sum sizes in size_t. This bound, in double with every part
 * at its largest (the prior table and split keys always, decode splits at
 * most M), tells whether they could wrap: the core refuses a plan whose
 * workspace size is SIZE_MAX. A part added to a layout must be added here. */
static int layout_may_wrap(const dagpu_params *p, dashattn_operation op)
{
    const double b = (double)p->batch, hq = (double)p->heads_q, hkv = (double)p->heads_kv;
    const double nq = (double)p->len_q, d = (double)p->head_dim, m = (double)p->num_blocks;
    const double nk = (double)p->len_k;
    double bytes = 0.0;
    if (op == DASHATTN_OP_FORWARD)
        bytes = b * hkv * m * d * 8.0 + b * hkv * nq * m * 4.0 +
                b * hq * nq * (double)sizeof(dagpu_row_param) +
                b * hq * (nq / DAGPU_TILE_ROWS + 1.0) * (m / 32.0 + 1.0) *
                    4.0; /* masks, packed or not */
    else if (op == DASHATTN_OP_BACKWARD)
        bytes = b * hkv * m * d * 8.0 + b * hkv * nq * m * 4.0 +
                b * hq * nq * (double)sizeof(dagpu_row_param) +
                b * hq * (nq / DAGPU_TILE_ROWS + 1.0) * (m / 32.0 + 1.0) * 4.0 + /* masks */
                b * hq * nq * (m + d + 1.0) * 4.0 + b * hkv * nk * 4.0 + /* dz, dq, delta, rt */
                (nk / DAGPU_BWD_DH_CHUNK + 1.0) * hkv * d * 8.0 +
                b * hq * (nq / DAGPU_TILE_ROWS + 1.0) * (m / 32.0 + 1.0) * 4.0; /* touch */
    else if (op == DASHATTN_OP_DECODE)
        bytes = b * hq * m * 4.0 + b * hq * (double)sizeof(dagpu_row_param) +
                b * hkv * (m + 1.0) * 4.0 + (b * hkv + 1.0) * 8.0 + /* lists, prefix */
                (b * hq * m + (double)DAGPU_DECODE_MAX_STREAM_CTAS * hq + b * hq) * (d + 2.0) *
                    4.0; /* partial rows: splits <= M, or stream pieces */
    return bytes + 4096.0 > 0x1p62;
}

size_t dagpu_workspace_size(void *state, const dashattn_plan_desc *plan, dashattn_operation op)
{
    (void)state;
    const dagpu_plan *gp = plan->backend_plan;
    if (layout_may_wrap(&gp->params, op))
        return SIZE_MAX;
    switch (op) {
    case DASHATTN_OP_FORWARD:
        return gp->forward_refusal[0] ? 0 : dagpu_forward_layout(gp, NULL, NULL);
    case DASHATTN_OP_DECODE:
        return gp->decodes ? dagpu_decode_layout(gp, NULL, NULL) : 0;
    case DASHATTN_OP_BACKWARD:
        return gp->backward_refusal[0] ? 0 : dagpu_backward_layout(gp, NULL, NULL);
    default:
        return 0;
    }
}

/* Splits of the selected blocks per (sequence, KV head). The grid is fixed
 * here, before the kept blocks are counted, and every split of a sequence
 * gets an equal share of them. Two split thread blocks run on each
 * multiprocessor (slots). At least four waves of them, so that unequal
 * sequences even out, while a split still holds 16 blocks at 75% sparsity
 * (M / 64); where four waves would make splits shorter (small batches), one
 * wave, or 16-block splits if those fill more than one: a split's copy
 * pipeline needs a run of blocks to reach its rate, and each split costs
 * the merge a row. Never more than M / 16 splits (4 blocks at 75%). Within
 * a factor of four above the least count, the one whose last wave is
 * fullest. */
static int64_t decode_splits(const dagpu_params *p, int sm_count)
{
    const int64_t pairs = p->batch * p->heads_kv,
                  slots = 2 * (int64_t)(sm_count > 0 ? sm_count : 1);
    const int64_t M = p->num_blocks, most = M / 16 > 1 ? M / 16 : 1;
    const int64_t per_wave = (slots + pairs - 1) / pairs;
    int64_t lo = 4 * per_wave;
    if (lo > M / 64)
        lo = per_wave > M / 64 ? per_wave : M / 64;
    if (lo > most)
        lo = most;
    if (lo < 1)
        lo = 1;
    const int64_t hi = 4 * lo < most ? 4 * lo : most;
    int64_t best = lo;
    double best_fill = 0.0;
    for (int64_t s = lo; s <= hi; s++) {
        const int64_t ctas = pairs * s, waves = (ctas + slots - 1) / slots;
        const double fill = (double)ctas / (double)(waves * slots);
        if (fill > best_fill + 1e-9) {
            best_fill = fill;
            best = s;
        }
    }
    return best;
}

#ifdef DAGPU_HAVE_NV
/* The tensor-core kernels take 16-bit data, head dimension 64 or 128 and
 * blocks of 64 tokens. */
static int nv_shape_ok(const dagpu_state *st, const dagpu_params *p)
{
    return !st->portable && p->dtype != DASHATTN_F32 && p->block_size == 64 &&
           (p->head_dim == 64 || p->head_dim == 128);
}
#endif

/* Why the forward cannot run on this device ("" if it can), and the
 * portable stage 1's vectors per thread block: DAGPU_STAGE1_ROWS, halved
 * while its scores of every key block do not fit. */
static void forward_limits(const dagpu_state *st, dagpu_plan *gp)
{
    const dagpu_params *p = &gp->params;
    const size_t limit = st->info.smem_per_block;
    int slots = DAGPU_STAGE1_ROWS;
    while (slots > 1 && dagpu_stage1_smem(p, slots) > limit)
        slots /= 2;
    gp->stage1_slots = slots;
    const size_t smem = dagpu_stage1_smem(p, slots);
    if (smem > limit)
        snprintf(gp->forward_refusal, sizeof gp->forward_refusal,
                 "%lld key blocks%s need %zu bytes of shared memory in stage 1, the device "
                 "offers %zu; use a larger block_size",
                 (long long)p->num_blocks, p->group_mean ? " for every query head of a group" : "",
                 smem, limit);
}

/* Query rows per thread block of the backward's stage-1 kernel: up to 64
 * (row, head) pairs, as many as let two thread blocks share a
 * multiprocessor (its registers are bounded for two; one alone waits on
 * its own latencies), else as many as fit one. */
static int64_t backward_stage1_rows(const dagpu_params *p, size_t limit)
{
    const int64_t most = 64 / p->group_size > 1 ? 64 / p->group_size : 1;
    const size_t half = limit / 2 > 1024 ? limit / 2 - 1024 : 0;
    int64_t rows = most;
    while (rows > 1 && dagpu_bwd_s1_smem_bytes(p, rows) > half)
        rows--;
    if (dagpu_bwd_s1_smem_bytes(p, rows) <= half)
        return rows;
    rows = most;
    while (rows > 1 && dagpu_bwd_s1_smem_bytes(p, rows) > limit)
        rows--;
    return rows;
}

/* Why the backward cannot run on this device ("" if it can): it runs stage
 * 1 again, its rows kernel holds a row's heads and blocks and a chunk of
 * keys in shared memory, and its stage-1 kernel the scores of at least one
 * row's heads over all blocks. */
static void backward_limits(const dagpu_state *st, dagpu_plan *gp)
{
    const dagpu_params *p = &gp->params;
    const size_t limit = st->info.smem_per_block;
    int64_t chunk = DAGPU_BWD_CHUNK;
    while (chunk > DAGPU_BWD_CHUNK_MIN && dagpu_bwd_rows_smem_bytes(p, chunk) > limit)
        chunk /= 2;
    gp->backward_rows_chunk = chunk;
    const size_t smem = dagpu_bwd_rows_smem_bytes(p, chunk);
    const int64_t rows = backward_stage1_rows(p, limit);
    gp->backward_stage1_rows = rows;
    const size_t s1_smem = dagpu_bwd_s1_smem_bytes(p, rows);
    if (gp->forward_refusal[0])
        memcpy(gp->backward_refusal, gp->forward_refusal, sizeof gp->backward_refusal);
    else if (p->batch * p->heads_kv > 65535 || p->group_size > 256)
        snprintf(gp->backward_refusal, sizeof gp->backward_refusal,
                 "the backward takes at most 65535 (sequence, KV head) pairs and 256 query heads "
                 "per KV head, the plan has %lld and %lld",
                 (long long)(p->batch * p->heads_kv), (long long)p->group_size);
    else if (smem > limit || s1_smem > limit)
        snprintf(gp->backward_refusal, sizeof gp->backward_refusal,
                 "the backward of %lld key blocks with %lld query heads per KV head and head "
                 "dimension %lld needs %zu bytes of shared memory, the device offers %zu; use a "
                 "larger block_size",
                 (long long)p->num_blocks, (long long)p->group_size, (long long)p->head_dim,
                 smem > s1_smem ? smem : s1_smem, limit);
}

/* Decode choices; a refusal's message is set and its status returned. */
static dashattn_status decode_choices(const dagpu_state *st, dagpu_plan *gp)
{
    const dagpu_params *p = &gp->params;
    const size_t limit = st->info.smem_per_block;
    if (p->group_size > DAGPU_DECODE_MAX_GROUP) {
        dagpu_host->set_error(DAGPU_NAME " backend: decode supports at most %d query heads per "
                                         "KV head, the plan has %lld",
                              DAGPU_DECODE_MAX_GROUP, (long long)p->group_size);
        return DASHATTN_ERR_UNSUPPORTED;
    }
    const size_t threshold = dagpu_decode_threshold_smem(p) + DAGPU_GROUP_SCRATCH_BYTES;
    if (threshold > limit) {
        dagpu_host->set_error(DAGPU_NAME " backend: decode over %lld blocks needs %zu bytes of "
                                         "shared memory, the device offers %zu; use a larger "
                                         "block_size",
                              (long long)p->num_blocks, threshold, limit);
        return DASHATTN_ERR_UNSUPPORTED;
    }
    gp->decode_tile = 0;
    for (int tile = 64; tile >= 16 && !gp->decode_tile; tile /= 2)
        if (dagpu_decode_split_smem(p, tile) <= limit)
            gp->decode_tile = tile;
    if (!gp->decode_tile) {
        dagpu_host->set_error(DAGPU_NAME " backend: decode with head dimension %lld and %lld heads "
                                         "per group needs %zu bytes of shared memory, the device "
                                         "offers %zu",
                              (long long)p->head_dim, (long long)p->group_size,
                              dagpu_decode_split_smem(p, 16), limit);
        return DASHATTN_ERR_UNSUPPORTED;
    }
    gp->decode_splits = decode_splits(p, st->info.sm_count);
    /* A row's threshold search is a chain of block reductions, faster the
     * more threads share the row; 512 threads hold a multiprocessor's
     * registers, so they pay only while the rows fit one wave (batch 1), and
     * 128 threads (several rows per multiprocessor) serve larger batches. A
     * warp per row, whose reductions need no barrier, took twice as long at
     * batch 16 (H200: 41 us against 20 at Hkv 8, 29 against 18 at Hkv 2). */
    const int64_t rows = (p->shared_group ? 1 : p->group_size) * p->heads_kv * p->batch;
    gp->decode_threshold_threads = rows <= st->info.sm_count ? 512 : 128;
    /* The same for the weights: a thread per (block, head) where there are
     * few blocks to spread (batch 1), else a thread per block; at batch 16
     * the first took twice as long over the same loads. */
    int lanes = 1;
    while (!p->shared_group && rows <= st->info.sm_count && lanes < p->group_size)
        lanes <<= 1;
    gp->decode_weight_lanes = lanes;
    /* And the merge: a lane per output column of each (sequence, head) and
     * 32 columns per thread block where the rows fit one wave (more blocks
     * to spread 128 splits over: H200, batch 1, Hkv 2: 4.5 us against 6.3),
     * else a lane for all of a head's columns (batch 16: the splits' maxima
     * read once per head, not once per 32 columns: 6.7 us against 10.5). */
    int columns = 1;
    while (rows > st->info.sm_count && columns < 8 && columns * 32 < p->head_dim)
        columns <<= 1;
    gp->decode_merge_lane_columns = columns;
    /* Dependent launches pay where each kernel is a wave or less (batch 1:
     * 2 us of 60-75 on an H200); with many waves of splits they cost 5-7
     * us of 270-670, so larger batches launch plainly. */
    const int64_t split_blocks = gp->decode_splits * p->heads_kv * p->batch;
    gp->decode_chained =
        st->info.dependent_launch && split_blocks <= 2 * (int64_t)st->info.sm_count;
#ifdef DAGPU_HAVE_NV
    gp->decode_split_nv =
        nv_shape_ok(st, p) && p->group_size <= 16 && dagpu_nv_decode_split_smem(p) <= limit;
    /* Its stream of every segment's blocks pays where a grid of splits per
     * segment takes several waves (H200, batch 16: 144 us against 161 at
     * Hkv 2, four waves; 518 against 547 at Hkv 8). Where that grid fits one
     * wave (batch 1) its splits are already even within each segment, load
     * their query before stage 1 ends and never cross a segment; the stream
     * there was measured only in a version slowed by 64-bit divisions. */
    if (gp->decode_split_nv && (st->decode_ctas || split_blocks > 2 * (int64_t)st->info.sm_count))
        gp->decode_stream_ctas =
            st->decode_ctas ? st->decode_ctas : dagpu_nv_decode_split_ctas(st->info.sm_count);
    gp->decode_scores_nv = !st->portable; /* the call checks shape and block keys */
#endif
    return DASHATTN_OK;
}

dashattn_status dagpu_plan_prepare(void *state, const dashattn_plan_desc *plan, void **plan_state)
{
    const dagpu_state *st = state;
    *plan_state = NULL;
    dagpu_plan *gp = calloc(1, sizeof *gp);
    if (!gp) {
        dagpu_host->set_error(DAGPU_NAME " backend: out of host memory");
        return DASHATTN_ERR_OUT_OF_MEMORY;
    }
    dagpu_params_from_plan(plan, &gp->params);
    const dagpu_params *p = &gp->params;
    gp->decodes = p->len_q == 1 && p->causal;
    forward_limits(st, gp);
    backward_limits(st, gp);
    if (gp->forward_refusal[0] && !gp->decodes) {
        dagpu_host->set_error(DAGPU_NAME " backend: %s", gp->forward_refusal);
        free(gp);
        return DASHATTN_ERR_UNSUPPORTED;
    }
    if (gp->decodes) {
        const dashattn_status s = decode_choices(st, gp);
        if (s != DASHATTN_OK) {
            free(gp);
            return s;
        }
    }
#ifdef DAGPU_HAVE_NV
    gp->stage2_nv = nv_shape_ok(st, p) && dagpu_nv_stage2_smem(p) <= st->info.smem_per_block;
    gp->stage2_hopper =
        gp->stage2_nv && st->hopper && dagpu_hopper_stage2_smem(p) <= st->info.smem_per_block;
    /* The tensor-core stage 1 scores 32 query vectors of single heads
     * (shared mode scores the group's mean query in the portable kernel); a
     * group-mean block needs all G heads of at least one row among them. */
    gp->stage1_nv = gp->stage2_nv && !p->shared_group &&
                    dagpu_nv_stage1_smem(p) <= st->info.smem_per_block &&
                    (!p->group_mean || p->group_size <= 32);
    gp->backward_kv_nv =
        !st->portable && st->backward_mma && dagpu_nv_backward_kv_ok(p, st->info.smem_per_block);
    gp->backward_dq_nv =
        !st->portable && st->backward_mma && dagpu_nv_backward_dq_ok(p, st->info.smem_per_block);
    gp->backward_kv_splits =
        gp->backward_kv_nv ? dagpu_nv_backward_kv_splits(p, st->info.sm_count) : 1;
#endif
    gp->split_keys = gp->stage1_nv;
    *plan_state = gp;
    return DASHATTN_OK;
}

void dagpu_plan_release(void *state, void *plan_state)
{
    (void)state;
    free(plan_state);
}
