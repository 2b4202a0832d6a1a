/* SPDX-License-Identifier: MIT */
/* Decode and KV-cache appends on the CUDA backend. Device-resident arguments
 * (seq_lens, block tables) are checked by the kernels, never by copying them
 * to the host, so a call queues work without waiting and can be captured in
 * a CUDA graph; a bad entry is reported by the next dashattn_synchronize. */
#include "cuda_plugin.h"

/* Splits of the selected blocks per (sequence, KV head): about twelve
 * thread blocks per multiprocessor (three run at a time on each), so the
 * last wave is a small share of the work. */
static int64_t decode_splits(const dashattn_plan_desc *plan, int sm_count)
{
    const int64_t pairs = plan->problem.batch * plan->problem.heads_kv;
    int64_t splits = (12 * (int64_t)sm_count + pairs - 1) / pairs;
    if (splits > plan->num_blocks)
        splits = plan->num_blocks;
    return splits < 1 ? 1 : splits;
}

size_t dacuda_decode_layout(const dashattn_plan_desc *plan, int sm_count, void *base,
                            dacuda_decode_ws *ws)
{
    const dashattn_problem *p = &plan->problem;
    const size_t M = (size_t)plan->num_blocks, B = (size_t)p->batch;
    const int64_t splits = decode_splits(plan, sm_count);
    dacuda_carver c = {base, 0};
    dacuda_decode_ws w;
    w.splits = splits;
    w.log2w = dacuda_carve(&c, B * (size_t)p->heads_q * M * sizeof(float));
    w.blocks = dacuda_carve(&c, B * (size_t)p->heads_kv * M * sizeof(int32_t));
    w.nblocks = dacuda_carve(&c, B * (size_t)p->heads_kv * sizeof(int32_t));
    w.partial = dacuda_carve(&c, B * (size_t)p->heads_q * (size_t)splits *
                                     (size_t)(p->head_dim + 2) * sizeof(float));
    if (ws)
        *ws = w;
    return c.used;
}

dashattn_status dacuda_decode(void *state, const dashattn_plan_desc *plan,
                              const dashattn_decode_args *a)
{
    dacuda_state *st = state;
    dashattn_status s = dacuda_enter(st);
    if (s != DASHATTN_OK)
        return s;
    dacuda_params p;
    dacuda_params_from_plan(plan, &p);
    if (p.group_size > 32) {
        dacuda_host->set_error("cuda backend: decode supports at most 32 query heads per KV head, "
                               "the plan has %lld",
                               (long long)p.group_size);
        return DASHATTN_ERR_UNSUPPORTED;
    }
    const size_t select_smem = (size_t)p.group_size * (size_t)p.num_blocks * sizeof(float) +
                               (size_t)(p.num_blocks + 31) / 32 * sizeof(unsigned);
    if (select_smem > st->smem_optin) {
        dacuda_host->set_error("cuda backend: decode over %lld blocks with %lld heads per group "
                               "needs %zu bytes of shared memory, the device offers %zu; use a "
                               "larger block_size",
                               (long long)p.num_blocks, (long long)p.group_size, select_smem,
                               st->smem_optin);
        return DASHATTN_ERR_UNSUPPORTED;
    }
    s = dacuda_check_workspace("dashattn_decode", a->workspace);
    if (s != DASHATTN_OK)
        return s;
    dacuda_decode_ws ws;
    dacuda_decode_layout(plan, st->sm_count, a->workspace, &ws);
    const cudaError_t err = dacuda_launch_decode(&p, a->q, a->cache, a->out, a->lse, &ws, st->error,
                                                 (cudaStream_t)a->stream);
    return err == cudaSuccess ? DASHATTN_OK : dacuda_fail(err, "decode kernels");
}

dashattn_status dacuda_cache_append(void *state, const dashattn_plan_desc *plan,
                                    const dashattn_append_args *a)
{
    dacuda_state *st = state;
    dashattn_status s = dacuda_enter(st);
    if (s != DASHATTN_OK)
        return s;
    dacuda_params p;
    dacuda_params_from_plan(plan, &p);
    const cudaError_t err = dacuda_launch_append(&p, a->cache, a->k_new, a->v_new, a->block_summary,
                                                 st->error, (cudaStream_t)a->stream);
    return err == cudaSuccess ? DASHATTN_OK : dacuda_fail(err, "cache append kernels");
}
