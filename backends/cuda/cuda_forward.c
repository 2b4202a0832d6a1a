/* SPDX-License-Identifier: MIT */
/* Forward calls on the CUDA backend: workspace layout and the kernel
 * sequence block keys -> stage 1 -> stage 2, all on the caller's stream. */
#include "cuda_plugin.h"

#include <math.h>
#include <string.h>

void dacuda_params_from_plan(const dashattn_plan_desc *plan, dacuda_params *p)
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

void *dacuda_carve(dacuda_carver *c, size_t bytes)
{
    c->used = (c->used + 255) & ~(size_t)255;
    void *ptr = c->base ? c->base + c->used : NULL;
    c->used += bytes;
    return ptr;
}

dashattn_status dacuda_check_workspace(const char *op, const void *workspace)
{
    if (((uintptr_t)workspace & 255u) == 0)
        return DASHATTN_OK;
    dacuda_host->set_error("cuda backend: %s: workspace %p is not 256-byte aligned (memory from "
                           "cudaMalloc or dashattn_memory_alloc is)",
                           op, workspace);
    return DASHATTN_ERR_INVALID_ARGUMENT;
}

size_t dacuda_forward_layout(const dashattn_plan_desc *plan, void *base, dacuda_forward_ws *ws)
{
    const dashattn_problem *p = &plan->problem;
    dacuda_params kp;
    dacuda_params_from_plan(plan, &kp);
    const size_t D = (size_t)p->head_dim, M = (size_t)plan->num_blocks;
    const size_t kv_blocks = (size_t)p->batch * (size_t)p->heads_kv * M * D;
    const size_t kv_rows = (size_t)p->batch * (size_t)p->heads_kv * (size_t)p->len_q;
    const size_t rows = (size_t)p->batch * (size_t)p->heads_q * (size_t)p->len_q;
    const size_t half = p->dtype == DASHATTN_F32 ? 0 : 2;
    dacuda_carver c = {base, 0};
    dacuda_forward_ws w;
    memset(&w, 0, sizeof w);
    w.tiles = (p->len_q + DACUDA_TILE_ROWS - 1) / DACUDA_TILE_ROWS;
    w.words = (int64_t)(M + 31) / 32;
    w.kbar = dacuda_carve(&c, kv_blocks * sizeof(float));
    w.kbar_hi = dacuda_carve(&c, kv_blocks * half);
    w.kbar_lo = dacuda_carve(&c, kv_blocks * half);
    if (kp.prior_table)
        w.prior = dacuda_carve(&c, kv_rows * M * sizeof(float));
    w.rows = dacuda_carve(&c, rows * sizeof(dacuda_row_param));
    w.masks = dacuda_carve(&c, (size_t)p->batch * (size_t)p->heads_q * (size_t)w.tiles *
                                   (size_t)w.words * sizeof(uint32_t));
    w.counts = dacuda_carve(&c, 2 * sizeof(unsigned long long));
    if (ws)
        *ws = w;
    return c.used;
}

/* The layouts sum sizes in size_t. This bound, in double with every part
 * at its largest (the prior table always, decode splits at most M), tells
 * whether they could wrap: the core refuses a plan whose workspace size is
 * SIZE_MAX. A part added to a layout must be added here. */
static int layout_may_wrap(const dashattn_plan_desc *plan, dashattn_operation op)
{
    const dashattn_problem *p = &plan->problem;
    const double b = (double)p->batch, hq = (double)p->heads_q, hkv = (double)p->heads_kv;
    const double nq = (double)p->len_q, d = (double)p->head_dim, m = (double)plan->num_blocks;
    double bytes = 0.0;
    if (op == DASHATTN_OP_FORWARD)
        bytes = b * hkv * m * d * 8.0 + b * hkv * nq * m * 4.0 +
                b * hq * nq * (double)sizeof(dacuda_row_param) +
                b * hq * (nq / DACUDA_TILE_ROWS + 1.0) * (m / 32.0 + 1.0) * 4.0;
    else if (op == DASHATTN_OP_DECODE)
        bytes = b * hq * m * 4.0 + b * hkv * (m + 1.0) * 4.0 + b * hq * m * (d + 2.0) * 4.0;
    return bytes + 4096.0 > 0x1p62;
}

size_t dacuda_workspace_size(void *state, const dashattn_plan_desc *plan, dashattn_operation op)
{
    const dacuda_state *st = state;
    if (layout_may_wrap(plan, op))
        return SIZE_MAX;
    switch (op) {
    case DASHATTN_OP_FORWARD:
        return dacuda_forward_layout(plan, NULL, NULL);
    case DASHATTN_OP_DECODE:
        return dacuda_decode_layout(plan, st->sm_count, NULL, NULL);
    default:
        return 0; /* no backward on this backend */
    }
}

static int aligned16(const void *ptr)
{
    return ((uintptr_t)ptr & 15u) == 0;
}

int dacuda_stage2_fast_ok(const dacuda_params *p, const dashattn_tensor *q,
                          const dashattn_tensor *k, const dashattn_tensor *v,
                          const dashattn_tensor *out)
{
    if (p->dtype == DASHATTN_F32 || p->block_size != 64)
        return 0;
    if (p->head_dim != 64 && p->head_dim != 128)
        return 0;
    const dashattn_tensor *t[4] = {q, k, v, out};
    for (int i = 0; i < 4; i++) {
        if (t[i]->strides[3] != 1 || !aligned16(t[i]->data))
            return 0;
        for (int d = 0; d < 3; d++)
            if (t[i]->strides[d] % 8 != 0)
                return 0;
    }
    return 1;
}

static dashattn_status check(cudaError_t err, const char *what)
{
    return err == cudaSuccess ? DASHATTN_OK : dacuda_fail(err, what);
}

#define TRY(expr)                                                                                  \
    do {                                                                                           \
        dashattn_status try_status_ = (expr);                                                      \
        if (try_status_ != DASHATTN_OK)                                                            \
            return try_status_;                                                                    \
    } while (0)

dashattn_status dacuda_forward(void *state, const dashattn_plan_desc *plan,
                               const dashattn_forward_args *a)
{
    const dacuda_state *st = state;
    TRY(dacuda_enter(st));
    dacuda_params p;
    dacuda_params_from_plan(plan, &p);
    if (dacuda_stage1_smem(&p) > st->smem_optin) {
        dacuda_host->set_error("cuda backend: %lld key blocks%s need %zu bytes of shared memory "
                               "in stage 1, the device offers %zu; use a larger block_size",
                               (long long)p.num_blocks,
                               p.group_mean ? " for every query head of a group" : "",
                               dacuda_stage1_smem(&p), st->smem_optin);
        return DASHATTN_ERR_UNSUPPORTED;
    }
    cudaStream_t stream = (cudaStream_t)a->stream;
    dacuda_forward_ws ws;
    TRY(dacuda_check_workspace("dashattn_forward", a->workspace));
    dacuda_forward_layout(plan, a->workspace, &ws);
    if (!a->stats)
        ws.counts = NULL;
    /* The tensor-core stage 2 recomputes a per-head prior from the mean of
     * the block's logits, which is q . kbar only for mean pooling; with
     * learned summaries per-head plans take the generic stage 2, which
     * scores kbar itself. */
    const int fast2 =
        dacuda_stage2_fast_ok(&p, a->q, a->k, a->v, a->out) && (p.prior_table || !a->block_summary);
    /* The tensor-core stage 1 scores 32 query vectors of single heads
     * (shared mode scores the group's mean query in the generic kernel); a
     * group-mean block needs all G heads of at least one row among them.
     * With the generic stage 2 stage 1 is generic too: the former recomputes
     * the latter's scores to the bit. */
    const int fast1 = fast2 && !p.shared_group && dacuda_stage1_mma_smem(&p) <= st->smem_optin &&
                      (!p.group_mean || p.group_size <= 32);

    const size_t mask_bytes = (size_t)p.batch * (size_t)p.heads_q * (size_t)ws.tiles *
                              (size_t)ws.words * sizeof(uint32_t);
    TRY(check(cudaMemsetAsync(ws.masks, 0, mask_bytes, stream), "clearing stage-1 masks"));
    if (ws.counts)
        TRY(check(cudaMemsetAsync(ws.counts, 0, 2 * sizeof(unsigned long long), stream),
                  "clearing counters"));
    TRY(check(dacuda_launch_block_keys(&p, a->k, a->block_summary, &ws, fast1, stream),
              "block keys kernel"));
    TRY(check(dacuda_launch_stage1(&p, a->q, &ws, a->selection, fast1, stream), "stage-1 kernel"));
    if (fast2)
        TRY(check(dacuda_launch_stage2_mma(&p, a->q, a->k, a->v, a->out, a->lse, &ws, stream),
                  "stage-2 tensor-core kernel"));
    else
        TRY(check(dacuda_launch_stage2(&p, a->q, a->k, a->v, a->out, a->lse, &ws, stream),
                  "stage-2 kernel"));
    if (a->stats) {
        unsigned long long counts[2];
        TRY(check(cudaMemcpyAsync(counts, ws.counts, sizeof counts, cudaMemcpyDeviceToHost, stream),
                  "reading the sparsity counters"));
        TRY(check(cudaStreamSynchronize(stream), "cudaStreamSynchronize"));
        a->stats->visible_pairs = (int64_t)counts[0];
        a->stats->attended_pairs = (int64_t)counts[1];
        a->stats->sparsity = counts[0] ? 1.0 - (double)counts[1] / (double)counts[0] : 0.0;
    }
    return DASHATTN_OK;
}
