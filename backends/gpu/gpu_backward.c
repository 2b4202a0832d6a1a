/* SPDX-License-Identifier: MIT */
/* Backward calls on the GPU plugins, all on the caller's stream: block keys
 * and stage 1 again (the kernel the forward took where stage 1 writes a
 * prior table, so that the backward sees the forward's selection; else the
 * portable one, whose scores per-head plans' kernels recompute to the
 * bit), then stage 2's part of dq and the prior
 * gradients (nv/nv_backward_dq.cu where the plan allows, else
 * gpu_backward.cu's rows kernel), stage 1's part (gpu_backward_stage1.cu),
 * the kv kernel (nv/nv_backward.cu's or gpu_backward.cu's) and, where dh is
 * asked for, its sum. */
#include "gpu_plugin.h"
#ifdef DAGPU_HAVE_NV
#include "nv/nv_kernels.h"
#endif

dashattn_status dagpu_backward(void *state, const dashattn_plan_desc *plan,
                               const dashattn_backward_args *a)
{
    const dagpu_state *st = state;
    const dagpu_plan *gp = plan->backend_plan;
    if (gp->backward_refusal[0]) {
        dagpu_host->set_error(DAGPU_NAME " backend: %s", gp->backward_refusal);
        return DASHATTN_ERR_UNSUPPORTED;
    }
    DAGPU_TRY(dagpu_enter(st));
    DAGPU_TRY(dagpu_check_workspace("dashattn_backward", a->workspace));
    const dagpu_params *p = &gp->params;
    void *stream = a->stream;
    dagpu_backward_ws ws;
    dagpu_backward_layout(gp, a->workspace, &ws);
    ws.fwd.counts = NULL;
    if (!a->dh)
        ws.rt = NULL;

    /* The kv kernel is chosen first: each reads its own touch masks (the
     * portable one per pair tile, the tensor-core one per row), and only
     * that one is cleared and written. */
    int kv_nv = 0;
#ifdef DAGPU_HAVE_NV
    const dashattn_tensor *kv_in[6] = {a->q, a->k, a->v, a->dout, a->dk, a->dv};
    kv_nv = gp->backward_kv_nv && dagpu_tensors_vector_ok(kv_in, 6);
#endif
    if (kv_nv)
        ws.touch = NULL;
    else
        ws.row_touch = NULL;

    const size_t mask_bytes = (size_t)p->batch * (size_t)dagpu_tile_heads(p) *
                              (size_t)ws.fwd.tiles * (size_t)ws.fwd.words * sizeof(uint32_t);
    const size_t touch_bytes = (size_t)p->batch * (size_t)p->heads_kv * (size_t)ws.pair_tiles *
                               (size_t)ws.fwd.words * sizeof(uint32_t);
    DAGPU_TRY(dagpu_check(dagpu_rt_zero_async(ws.fwd.masks, mask_bytes, stream),
                          "clearing stage-1 masks"));
    if (ws.touch)
        DAGPU_TRY(dagpu_check(dagpu_rt_zero_async(ws.touch, touch_bytes, stream),
                              "clearing backward masks"));
    if (ws.row_touch)
        DAGPU_TRY(dagpu_check(dagpu_rt_zero_async(ws.row_touch,
                                                  (size_t)p->batch * (size_t)p->heads_kv *
                                                      (size_t)p->num_blocks * (size_t)ws.row_words *
                                                      sizeof(uint32_t),
                                                  stream),
                              "clearing the rows' touch masks"));
    int nv1 = 0;
    if (p->prior_table)
        (void)dagpu_forward_nv_stages(gp, a->q, a->k, a->v, a->out, a->block_summary, &nv1);
    DAGPU_TRY(dagpu_check(dagpu_launch_block_keys(p, a->k, a->block_summary, &ws.fwd, nv1, stream),
                          "block keys kernel"));
#ifdef DAGPU_HAVE_NV
    if (nv1)
        DAGPU_TRY(dagpu_check(dagpu_nv_launch_stage1(p, a->q, &ws.fwd, NULL, stream),
                              "stage-1 tensor-core kernel"));
    else
#endif
        DAGPU_TRY(dagpu_check(dagpu_launch_stage1(p, a->q, &ws.fwd, NULL, gp->stage1_slots, stream),
                              "stage-1 kernel"));
    int dq_nv = 0;
#ifdef DAGPU_HAVE_NV
    const dashattn_tensor *rows_in[5] = {a->q, a->k, a->v, a->out, a->dout};
    dq_nv = gp->backward_dq_nv && dagpu_tensors_vector_ok(rows_in, 5);
    if (dq_nv) {
        if (ws.dz)
            DAGPU_TRY(dagpu_check(dagpu_rt_zero_async(ws.dz,
                                                      (size_t)p->batch * (size_t)p->heads_q *
                                                          (size_t)p->len_q * (size_t)p->num_blocks *
                                                          sizeof(float),
                                                      stream),
                                  "clearing the prior gradients"));
        DAGPU_TRY(dagpu_check(
            dagpu_nv_launch_backward_dq(p, a->q, a->k, a->v, a->out, a->dout, a->lse, &ws, stream),
            "backward tensor-core dq kernel"));
    }
#endif
    if (!dq_nv)
        DAGPU_TRY(
            dagpu_check(dagpu_launch_backward_rows(p, a->q, a->k, a->v, a->out, a->dout, a->lse,
                                                   &ws, gp->backward_rows_chunk, stream),
                        "backward rows kernel"));
    DAGPU_TRY(dagpu_check(
        dagpu_launch_backward_stage1(p, a->q, a->dq, &ws, gp->backward_stage1_rows, stream),
        "backward stage-1 kernel"));
#ifdef DAGPU_HAVE_NV
    if (kv_nv) {
        if (ws.kv_splits > 1)
            DAGPU_TRY(dagpu_check(dagpu_rt_zero_async(ws.kv_arrived,
                                                      (size_t)p->batch * (size_t)p->heads_kv *
                                                          (size_t)p->num_blocks * sizeof(uint32_t),
                                                      stream),
                                  "clearing the kv kernel's counters"));
        DAGPU_TRY(
            dagpu_check(dagpu_nv_launch_backward_kv(p, a->q, a->k, a->v, a->dout, a->lse,
                                                    a->block_summary, a->dk, a->dv, &ws, stream),
                        "backward tensor-core kv kernel"));
    } else
#endif
        DAGPU_TRY(dagpu_check(dagpu_launch_backward_kv(p, a->q, a->k, a->v, a->dout, a->lse,
                                                       a->block_summary, a->dk, a->dv, &ws, stream),
                              "backward kv kernel"));
    if (a->dh)
        DAGPU_TRY(
            dagpu_check(dagpu_launch_backward_dh(p, a->k, a->block_summary, a->dh, &ws, stream),
                        "backward dh kernels"));
    return DASHATTN_OK;
}
