/* SPDX-License-Identifier: MIT */
/* Decode and KV-cache appends on the GPU plugins. Device-resident arguments
 * (seq_lens, block tables) are checked by the kernels, never by copying them
 * to the host, so a call queues work without waiting and can be captured in
 * a CUDA graph; a bad entry is reported by the next dashattn_synchronize. */
#include "gpu_plugin.h"
#ifdef DAGPU_HAVE_NV
#include "nv/nv_kernels.h"
#endif

dashattn_status dagpu_decode(void *state, const dashattn_plan_desc *plan,
                             const dashattn_decode_args *a)
{
    dagpu_state *st = state;
    const dagpu_plan *gp = plan->backend_plan;
    dashattn_status s = dagpu_enter(st);
    if (s != DASHATTN_OK)
        return s;
    const dagpu_params *p = &gp->params;
    s = dagpu_check_workspace("dashattn_decode", a->workspace);
    if (s != DASHATTN_OK)
        return s;
    dagpu_decode_ws ws;
    dagpu_decode_layout(gp, a->workspace, &ws);
    dagpu_err err;
#ifdef DAGPU_HAVE_NV
    const dashattn_tensor *score_tensors[2] = {a->q, &a->cache->block_keys};
    if (gp->decode_scores_nv && dagpu_nv_decode_scores_ok(p, a->cache) &&
        dagpu_tensors_vector_ok(score_tensors, 2))
        err = dagpu_nv_launch_decode_scores(p, a->q, a->cache, &ws, a->stream);
    else
#endif
        err = dagpu_launch_decode_scores(p, a->q, a->cache, &ws, a->stream);
    if (err == 0)
        err = dagpu_launch_decode_select(p, a->cache, &ws, st->error, a->stream);
    if (err != 0)
        return dagpu_fail(err, "decode stage-1 kernels");
#ifdef DAGPU_HAVE_NV
    const dashattn_tensor *tensors[3] = {a->q, &a->cache->k, &a->cache->v};
    if (gp->decode_split_nv && dagpu_tensors_vector_ok(tensors, 3))
        err = dagpu_nv_launch_decode_split(p, a->q, a->cache, &ws, a->stream);
    else
#endif
    {
        ws.stream_ctas = 0; /* the merge reads the portable split's rows */
        err = dagpu_launch_decode_split(p, a->q, a->cache, &ws, gp->decode_tile, a->stream);
    }
    if (err != 0)
        return dagpu_fail(err, "decode split kernel");
    err = dagpu_launch_decode_merge(p, a->out, a->lse, &ws, a->stream);
    return err == 0 ? DASHATTN_OK : dagpu_fail(err, "decode merge kernel");
}

dashattn_status dagpu_cache_append(void *state, const dashattn_plan_desc *plan,
                                   const dashattn_append_args *a)
{
    dagpu_state *st = state;
    const dagpu_plan *gp = plan->backend_plan;
    dashattn_status s = dagpu_enter(st);
    if (s != DASHATTN_OK)
        return s;
    const dagpu_err err = dagpu_launch_append(&gp->params, a->cache, a->k_new, a->v_new,
                                              a->block_summary, st->error, a->stream);
    return err == 0 ? DASHATTN_OK : dagpu_fail(err, "cache append kernels");
}
