/* SPDX-License-Identifier: MIT */
/* Forward calls on the GPU plugins: the kernel sequence block keys ->
 * stage 1 -> stage 2, all on the caller's stream, with the variants the
 * plan allows and the call's tensors suit. */
#include "gpu_plugin.h"
#ifdef DAGPU_HAVE_NV
#include "hopper/hopper_kernels.h"
#include "nv/nv_kernels.h"
#endif

int dagpu_forward_nv_stages(const dagpu_plan *gp, const dashattn_tensor *q,
                            const dashattn_tensor *k, const dashattn_tensor *v,
                            const dashattn_tensor *out, const dashattn_tensor *summary, int *stage1)
{
    /* The tensor-core stage 2 recomputes a per-head prior from the mean of
     * the block's logits, which is q . kbar only for mean pooling; with
     * learned summaries per-head plans take the portable stage 2, which
     * scores kbar itself. With the portable stage 2 stage 1 is portable too:
     * the former recomputes the latter's scores to the bit. Plans without
     * the nv/ kernels allow neither (gpu_plan.c). */
    const dashattn_tensor *tensors[4] = {q, k, v, out};
    const int nv2 = gp->stage2_nv && dagpu_tensors_vector_ok(tensors, 4) &&
                    (gp->params.prior_table || !summary);
    *stage1 = nv2 && gp->stage1_nv;
    return nv2;
}

dashattn_status dagpu_forward(void *state, const dashattn_plan_desc *plan,
                              const dashattn_forward_args *a)
{
    const dagpu_state *st = state;
    const dagpu_plan *gp = plan->backend_plan;
    if (gp->forward_refusal[0]) {
        dagpu_host->set_error(DAGPU_NAME " backend: %s", gp->forward_refusal);
        return DASHATTN_ERR_UNSUPPORTED;
    }
    DAGPU_TRY(dagpu_enter(st));
    const dagpu_params *p = &gp->params;
    void *stream = a->stream;
    dagpu_forward_ws ws;
    DAGPU_TRY(dagpu_check_workspace("dashattn_forward", a->workspace));
    dagpu_forward_layout(gp, a->workspace, &ws);
    if (!a->stats)
        ws.counts = NULL;
    int nv1;
    const int nv2 = dagpu_forward_nv_stages(gp, a->q, a->k, a->v, a->out, a->block_summary, &nv1);

    const size_t mask_bytes = (size_t)p->batch * (size_t)dagpu_tile_heads(p) * (size_t)ws.tiles *
                              (size_t)ws.words * sizeof(uint32_t);
    DAGPU_TRY(
        dagpu_check(dagpu_rt_zero_async(ws.masks, mask_bytes, stream), "clearing stage-1 masks"));
    if (ws.counts)
        DAGPU_TRY(
            dagpu_check(dagpu_rt_zero_async(ws.counts, 2 * sizeof(unsigned long long), stream),
                        "clearing counters"));
    DAGPU_TRY(dagpu_check(dagpu_launch_block_keys(p, a->k, a->block_summary, &ws, nv1, stream),
                          "block keys kernel"));
#ifdef DAGPU_HAVE_NV
    if (nv1)
        DAGPU_TRY(dagpu_check(dagpu_nv_launch_stage1(p, a->q, &ws, a->selection, stream),
                              "stage-1 tensor-core kernel"));
    else
#endif
        DAGPU_TRY(
            dagpu_check(dagpu_launch_stage1(p, a->q, &ws, a->selection, gp->stage1_slots, stream),
                        "stage-1 kernel"));
#ifdef DAGPU_HAVE_NV
    if (nv2 && gp->stage2_hopper)
        DAGPU_TRY(dagpu_check(
            dagpu_hopper_launch_stage2(p, a->q, a->k, a->v, a->out, a->lse, &ws, stream),
            "stage-2 wgmma kernel"));
    else if (nv2)
        DAGPU_TRY(
            dagpu_check(dagpu_nv_launch_stage2(p, a->q, a->k, a->v, a->out, a->lse, &ws, stream),
                        "stage-2 tensor-core kernel"));
    else
#else
    (void)nv2;
#endif
        DAGPU_TRY(dagpu_check(dagpu_launch_stage2(p, a->q, a->k, a->v, a->out, a->lse, &ws, stream),
                              "stage-2 kernel"));
    if (a->stats) {
        unsigned long long counts[2];
        DAGPU_TRY(dagpu_check(dagpu_rt_to_host_async(counts, ws.counts, sizeof counts, stream),
                              "reading the sparsity counters"));
        DAGPU_TRY(dagpu_check(dagpu_rt_stream_sync(stream), "waiting for the stream"));
        a->stats->visible_pairs = (int64_t)counts[0];
        a->stats->attended_pairs = (int64_t)counts[1];
        a->stats->sparsity = counts[0] ? 1.0 - (double)counts[1] / (double)counts[0] : 0.0;
    }
    return DASHATTN_OK;
}
