#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Our GPU backend against the authors' released Triton kernels, on the same inputs.

The released package (`dash_attn`, public repository fasa-org/dash-attention) is
imported from a folder given with --release; nothing of it is kept in this tree.
For each head shape, on bf16 inputs with learned block summaries (head_cls), it
runs

  prefill  released summarize_chunk + score_blocks + full_attn, against our
           dashattn_forward with group-mean selection and the Halley schedule
           (halley:3), the release's defaults;
  decode   released decoding.score_blocks + full_attn over summaries of the
           complete blocks, against our dashattn_cache_append (which computes
           the summaries) + dashattn_decode;

and reports the relative difference of the outputs, ||ours - released|| /
||released||, and the share of (row, block) pairs on which the kept block sets
agree (ours from the selection output of dashattn_forward; for decode from a
forward with len_q 1 over the same keys), with the sparsity of both.
Prints a short table last; --json writes every figure.

Example (GPU machine, from the build tree):
  python3 bench/released_compare.py --lib .libs/libdashattn.so --release /path/to/dash-attention
"""

import argparse
import ctypes as C
import json
import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dashattn_ctypes as da  # noqa: E402
import gpu_bench as gb  # noqa: E402  (the synthetic input model)


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lib", required=True, help="path to libdashattn.so")
    ap.add_argument("--release", required=True,
                    help="folder holding the released dash_attn package (a checkout of "
                         "fasa-org/dash-attention)")
    ap.add_argument("--backend", default="cuda")
    ap.add_argument("--heads", default="32:8,32:2", help="Hq:Hkv pairs, comma-separated")
    ap.add_argument("--prefill-n", type=int, default=8192)
    ap.add_argument("--decode-n", type=int, default=32768)
    ap.add_argument("--decode-batch", type=int, default=4)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--focus", type=float, default=0.5,
                    help="strength of the synthetic inputs' block structure")
    ap.add_argument("--summary-scale", type=float, default=1.0,
                    help="standard deviation of the random head_cls entries")
    ap.add_argument("--family", default="segment", choices=gb.FAMILIES,
                    help="synthetic queries (gpu_bench.make_queries)")
    ap.add_argument("--seed", type=int, default=8)
    ap.add_argument("--json", help="write every figure to this file")
    return ap.parse_args(argv)


def rel(torch, a, b):
    a, b = a.float(), b.float()
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


def unpack_bits(torch, bmask, blocks):
    """[..., n_ints] int32 bit masks -> [..., blocks] bool."""
    bits = torch.arange(32, device=bmask.device, dtype=torch.int64)
    words = bmask.to(torch.int64) & 0xFFFFFFFF
    flags = ((words[..., :, None] >> bits) & 1).bool()
    return flags.reshape(*bmask.shape[:-1], -1)[..., :blocks]


def our_kept(torch, index, count, heads_kv, group, blocks):
    """Our selection output [B, Hq, N, M] -> kept blocks [B, Hkv, N, M] of each
    group's first head (group-mean selection gives every head the same set)."""
    idx = index[:, ::group].long()
    cnt = count[:, ::group].long()
    slots = torch.arange(idx.shape[-1], device=idx.device)
    used = slots < cnt[..., None]
    kept = torch.zeros(*idx.shape[:-1], blocks + 1, dtype=torch.bool, device=idx.device)
    kept.scatter_(-1, torch.where(used, idx, blocks), True)
    return kept[..., :blocks]


def agreement(torch, ours, theirs, visible):
    """Share of visible (row, block) pairs on which both keep or both drop."""
    same = (ours == theirs) & visible
    return float(same.sum()) / float(visible.sum())


def visible_blocks(torch, n_rows, blocks, offset, block_size, device):
    pos = torch.arange(n_rows, device=device) + offset
    own = pos // block_size
    return torch.arange(blocks, device=device)[None, :] <= own[:, None]


class Ours:
    def __init__(self, lib, backend):
        self.lib = lib
        self.ctx = da.Context(lib, backend)

    def problem(self, b, hq, hkv, nq, nk, d, **over):
        fields = dict(dtype=da.BF16, causal=1, block_size=64, alpha=1.5,
                      group_mode=da.GROUP_MEAN, n_sink=0, n_local=1,
                      threshold_schedule=da.SCHEDULE_HALLEY, halley_steps=3)
        fields.update(over)
        return self.ctx.plan(self.lib.problem(b, hq, hkv, nq, nk, d, **fields))


def tensor_of(t, dtype):
    return da.bhsd(t.data_ptr(), dtype, tuple(t.shape))


def forward_ours(torch, ours, q, k, v, h):
    b, hq, n, d = q.shape
    hkv, nk = k.shape[1], k.shape[2]
    plan = ours.problem(b, hq, hkv, n, nk, d)
    m = plan.num_blocks
    out = torch.empty_like(q)
    index = torch.empty(b, hq, n, m, dtype=torch.int32, device=q.device)
    weight = torch.empty(b, hq, n, m, dtype=torch.float32, device=q.device)
    count = torch.empty(b, hq, n, dtype=torch.int32, device=q.device)
    sel = da.Selection()
    sel.block_index, sel.block_weight, sel.block_count = (index.data_ptr(), weight.data_ptr(),
                                                          count.data_ptr())
    sel.max_blocks = m
    stats = da.ForwardStats()
    hs = h.float().reshape(1, hkv, 1, d).contiguous()
    da.forward(ours.ctx, plan, tensor_of(q, da.BF16), tensor_of(k, da.BF16),
               tensor_of(v, da.BF16), tensor_of(out, da.BF16), selection=sel, stats=stats,
               summary=tensor_of(hs, da.F32))
    ours.ctx.synchronize()
    plan.destroy()
    return out, index, count, stats.sparsity, m


def decode_ours(torch, ours, q, k, v, h):
    b, hq, _, d = q.shape
    hkv, n = k.shape[1], k.shape[2]
    plan = ours.problem(b, hq, hkv, 1, n, d)
    kc, vc = torch.empty_like(k), torch.empty_like(v)
    bk = torch.empty(b, hkv, n // 64, d, dtype=torch.float32, device=q.device)
    lens = torch.zeros(b, dtype=torch.int32, device=q.device)
    cache = da.KVCache()
    cache.layout = da.CACHE_CONTIGUOUS
    cache.k, cache.v = tensor_of(kc, da.BF16), tensor_of(vc, da.BF16)
    cache.block_keys = tensor_of(bk, da.F32)
    cache.seq_lens = lens.data_ptr()
    hs = h.float().reshape(1, hkv, 1, d).contiguous()
    da.cache_append(ours.ctx, plan, cache, tensor_of(k, da.BF16), tensor_of(v, da.BF16),
                    summary=tensor_of(hs, da.F32))
    out = torch.empty_like(q)
    da.decode(ours.ctx, plan, tensor_of(q, da.BF16), cache, tensor_of(out, da.BF16))
    ours.ctx.synchronize()
    plan.destroy()
    return out


def inputs(torch, b, hq, hkv, nq, nk, d, focus, seed, family):
    sx = gb.TorchSynth(torch, da.BF16)
    blocks = (nk + 63) // 64
    topics = gb.make_topics(sx, b, hkv, blocks, d, seed)
    k = gb.make_keys(sx, topics, 0, nk, focus, 64, seed)
    v = gb.make_values(sx, b, hkv, 0, nk, d, seed)
    q = gb.make_queries(sx, topics, hq, nq, nk, focus, 64, seed, family)
    bf = torch.bfloat16
    return q.to(bf).contiguous(), k.to(bf).contiguous(), v.to(bf).contiguous()


def prefill_case(torch, rel_mod, ours, hq, hkv, args):
    n, d = args.prefill_n, args.head_dim
    q, k, v = inputs(torch, 1, hq, hkv, n, n, d, args.focus, gb.seed_of(args.seed, "p", hq, hkv),
                     args.family)
    g = torch.Generator(device="cuda").manual_seed(args.seed)
    h = (args.summary_scale * torch.randn(hkv, d, generator=g, device="cuda")).to(torch.bfloat16)
    chunks = rel_mod.prefill.summarize_chunk(k, h, 64)
    bmask, prior = rel_mod.prefill.score_blocks(q, chunks, 64)
    out_rel = rel_mod.prefill.full_attn(q, k, v, bmask, 64, None, prior)
    out, index, count, sparsity, m = forward_ours(torch, ours, q, k, v, h)
    kept = our_kept(torch, index, count, hkv, hq // hkv, m)
    theirs = unpack_bits(torch, bmask, m)
    vis = visible_blocks(torch, n, m, 0, 64, q.device)[None, None].expand_as(kept)
    their_sparsity = released_sparsity(torch, theirs, n, 0, 64)
    return dict(kind="prefill", hq=hq, hkv=hkv, n=n, out_rel_diff=rel(torch, out, out_rel),
                kept_agreement=agreement(torch, kept, theirs, vis), sparsity_ours=sparsity,
                sparsity_released=their_sparsity)


def released_sparsity(torch, kept, n_rows, offset, block_size):
    """Share of visible (row, key) pairs the released mask drops, per KV head
    (the group's heads share the mask)."""
    pos = torch.arange(n_rows, device=kept.device) + offset
    blocks = kept.shape[-1]
    starts = torch.arange(blocks, device=kept.device) * block_size
    seen = (pos[:, None] + 1 - starts[None, :]).clamp(0, block_size)  # visible keys per block
    visible = float(seen.sum()) * kept.shape[0] * kept.shape[1]
    read = float((kept.to(seen.dtype) * seen).sum())
    return 1.0 - read / visible


def decode_case(torch, rel_mod, ours, hq, hkv, args):
    n, d, b = args.decode_n, args.head_dim, args.decode_batch
    q, k, v = inputs(torch, b, hq, hkv, n, n, d, args.focus, gb.seed_of(args.seed, "d", hq, hkv),
                     args.family)
    q = q[:, :, -1:].contiguous()
    g = torch.Generator(device="cuda").manual_seed(args.seed + 1)
    h = (args.summary_scale * torch.randn(hkv, d, generator=g, device="cuda")).to(torch.bfloat16)
    complete = (n - 1) // 64  # the query's own block is not summarised yet
    chunks = rel_mod.prefill.summarize_chunk(k[:, :, :complete * 64].contiguous(), h, 64)
    bmask, prior = rel_mod.decoding.score_blocks(q, chunks, 64)
    out_rel = rel_mod.decoding.full_attn(q, k, v, bmask, 64, None, prior)
    out = decode_ours(torch, ours, q, k, v, h)
    _, index, count, sparsity, m = forward_ours(torch, ours, q, k, v, h)
    kept = our_kept(torch, index, count, hkv, hq // hkv, m)
    theirs = unpack_bits(torch, bmask, m)
    vis = visible_blocks(torch, 1, m, n - 1, 64, q.device)[None, None].expand_as(kept)
    return dict(kind="decode", hq=hq, hkv=hkv, n=n, batch=b,
                out_rel_diff=rel(torch, out, out_rel),
                kept_agreement=agreement(torch, kept, theirs, vis), sparsity_ours=sparsity,
                sparsity_released=released_sparsity(torch, theirs, 1, n - 1, 64))


def main(argv=None):
    args = parse_args(argv)
    import torch
    sys.path.insert(0, os.path.abspath(args.release))
    import dash_attn  # noqa: F401  (sets torch's float32 matmul precision, as the release runs)
    from dash_attn import decoding, prefill

    class Released:
        pass

    rel_mod = Released()
    rel_mod.prefill, rel_mod.decoding = prefill, decoding
    lib = da.Library(args.lib)
    ours = Ours(lib, args.backend)
    rows = []
    for pair in args.heads.split(","):
        hq, hkv = (int(x) for x in pair.split(":"))
        for case in (prefill_case, decode_case):
            r = case(torch, rel_mod, ours, hq, hkv, args)
            rows.append(r)
            print(json.dumps(r), flush=True)
    ours.ctx.close()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(device=torch.cuda.get_device_name(), backend=args.backend,
                           family=args.family, focus=args.focus, rows=rows), f, indent=1)
    print("\nkind     Hq/Hkv  N       out diff   kept agree  sparsity ours / released")
    for r in rows:
        print(f"{r['kind']:<8} {r['hq']}/{r['hkv']:<4} {r['n']:<7} {r['out_rel_diff']:.2e}   "
              f"{100 * r['kept_agreement']:.3f}%     {100 * r['sparsity_ours']:.1f}% / "
              f"{100 * r['sparsity_released']:.1f}%")
    bad = [r for r in rows if not (r["out_rel_diff"] <= 1e-2 and r["kept_agreement"] >= 0.99)]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
