#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Issue #15's proof: two byte-level language models trained with one recipe,
one with PyTorch SDPA and one with dashattn.torch (group-mean selection,
learned block summaries, trained through the selection), on the Python
sources of the packages installed where it runs (held-out files for
validation). Reports validation bits per byte of both, the sparsity the
DashAttention model reaches at the training context and at a longer one, the
tile union U of its selections (blocks a tile of 64 rows of one head reads /
blocks one of its rows keeps), the step time of both, and an
associative-recall probe at long context (key-value pairs early, queries
late; the recipe mixes a share of such sequences into training so that both
models can learn the task).

    python3 bench/train_proof.py --device cuda --json OUT.json
    python3 bench/train_proof.py --device cpu --tiny          # a smoke run

dashattn is imported from python/ of this tree (or an installed package);
DASHATTN_LIBRARY names the libdashattn to load.
"""
import argparse
import glob
import hashlib
import json
import math
import os
import site
import statistics
import sys
import sysconfig
import time

import numpy as np
import torch
import torch.nn.functional as F

_here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(_here, os.pardir, "python"))
sys.path.insert(0, _here)
import dashattn  # noqa: E402
from dashattn.torch import DashAttention, dash_attention  # noqa: E402
from gpu_bench import tile_union_ratios  # noqa: E402

SEPARATOR = b"\n\n# ----\n\n"


def log(*a):
    print(*a, flush=True)


# ---------------------------------------------------------------- corpus

def corpus_files(roots):
    files = set()
    for root in roots:
        if os.path.isdir(root):
            files.update(glob.glob(os.path.join(root, "**", "*.py"), recursive=True))
    return sorted(files)


def held_out(path, share):
    """Whether a file is in the validation split: by a hash of its path, so
    the split is the same on every run."""
    digest = hashlib.sha256(path.encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:4], "little") % 1000 < share * 1000


def load_corpus(roots, max_bytes, val_share):
    train, val, nfiles = [], [], [0, 0]
    size = 0
    for path in corpus_files(roots):
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            continue
        if not data:
            continue
        is_val = held_out(path, val_share)
        (val if is_val else train).append(data)
        nfiles[is_val] += 1
        size += len(data)
        if size >= max_bytes:
            break
    join = lambda parts: np.frombuffer(SEPARATOR.join(parts), dtype=np.uint8)  # noqa: E731
    return join(train), join(val), nfiles


# ---------------------------------------------------------------- recall task

RECALL_ALPHABET = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz0123456789", dtype=np.uint8)


def recall_sequence(rng, length, pairs, key_len, value_len, filler):
    """Bytes of one probe: `k=v;` pairs first, filler from the validation
    text, then the keys again in another order, each followed by `=`, whose
    next value_len bytes are to be predicted. Returns the bytes and a mask of
    the positions whose next byte is a value byte of a query."""
    keys = rng.choice(RECALL_ALPHABET, size=(pairs, key_len))
    values = rng.choice(RECALL_ALPHABET, size=(pairs, value_len))
    head = b"".join(bytes(keys[p]) + b"=" + bytes(values[p]) + b";" for p in range(pairs))
    order = rng.permutation(pairs)
    tail = b"".join(b"\n" + bytes(keys[p]) + b"=" + bytes(values[p]) for p in order)
    room = length - len(head) - len(tail)
    if room < 1:
        raise ValueError(f"a recall probe of {pairs} pairs does not fit {length} bytes")
    start = int(rng.integers(0, max(1, len(filler) - room)))
    fill = filler[start:start + room]
    if len(fill) < room:
        fill = np.resize(filler, room)
    seq = np.concatenate([np.frombuffer(head, dtype=np.uint8), fill,
                          np.frombuffer(tail, dtype=np.uint8)])
    target = np.zeros(length, dtype=bool)
    at = len(head) + room
    for _ in order:
        at += 1 + key_len + 1  # "\n", the key, "="
        target[at - 1:at - 1 + value_len] = True  # predicting value bytes at..at+value_len
        at += value_len
    return seq, target


# ---------------------------------------------------------------- model

def rope(x, base=10000.0):
    """Rotary position embedding of x [B, N, H, D]."""
    n, d = x.shape[1], x.shape[-1]
    inv = 1.0 / base ** (torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d)
    ang = torch.arange(n, device=x.device, dtype=torch.float32)[:, None] * inv[None]
    cos, sin = ang.cos()[None, :, None], ang.sin()[None, :, None]
    x1, x2 = x[..., 0::2].float(), x[..., 1::2].float()
    out = torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)
    return out.to(x.dtype)


class Attention(torch.nn.Module):
    def __init__(self, width, heads_q, heads_kv, kind, block_size, dtype, stage1_factor):
        super().__init__()
        self.hq, self.hkv, self.d = heads_q, heads_kv, width // heads_q
        self.kind, self.dtype = kind, dtype
        self.qkv = torch.nn.Linear(width, (heads_q + 2 * heads_kv) * self.d, bias=False)
        self.out = torch.nn.Linear(heads_q * self.d, width, bias=False)
        self.dash = (DashAttention(heads_kv, self.d, learned_summary=True, causal=True,
                                   block_size=block_size, group_select="mean", layout="bshd",
                                   stage1_scale=stage1_factor / math.sqrt(self.d))
                     if kind == "dash" else None)
        self.last_qkv = None  # set by forward when keep_qkv is on

    def forward(self, x, keep_qkv=False, stats=None):
        b, n, _ = x.shape
        q, k, v = self.qkv(x).split([self.hq * self.d, self.hkv * self.d, self.hkv * self.d], -1)
        q = rope(q.reshape(b, n, self.hq, self.d)).to(self.dtype)
        k = rope(k.reshape(b, n, self.hkv, self.d)).to(self.dtype)
        v = v.reshape(b, n, self.hkv, self.d).to(self.dtype)
        if keep_qkv:
            self.last_qkv = (q.detach(), k.detach(), v.detach())
        if self.dash is not None:
            if stats is not None:
                y, st = dash_attention(q, k, v, block_summary=self.dash.block_summary,
                                       return_stats=True, **self.dash.options)
                stats.append(st["sparsity"])
            else:
                y = self.dash(q, k, v)
        else:
            y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                               v.transpose(1, 2), is_causal=True,
                                               enable_gqa=True).transpose(1, 2)
        return self.out(y.reshape(b, n, self.hq * self.d).to(x.dtype))


class Block(torch.nn.Module):
    def __init__(self, width, heads_q, heads_kv, kind, block_size, dtype, stage1_factor):
        super().__init__()
        self.n1, self.n2 = torch.nn.RMSNorm(width), torch.nn.RMSNorm(width)
        self.attn = Attention(width, heads_q, heads_kv, kind, block_size, dtype, stage1_factor)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(width, 4 * width, bias=False),
                                       torch.nn.GELU(), torch.nn.Linear(4 * width, width,
                                                                        bias=False))

    def forward(self, x, keep_qkv=False, stats=None):
        x = x + self.attn(self.n1(x), keep_qkv, stats)
        return x + self.mlp(self.n2(x))


class ByteLM(torch.nn.Module):
    def __init__(self, layers, width, heads_q, heads_kv, kind, block_size, dtype,
                 stage1_factor=1.0):
        super().__init__()
        self.embed = torch.nn.Embedding(256, width)
        self.blocks = torch.nn.ModuleList(
            Block(width, heads_q, heads_kv, kind, block_size, dtype, stage1_factor)
            for _ in range(layers))
        self.norm = torch.nn.RMSNorm(width)
        # Small embeddings, so that the tied output layer starts near uniform.
        torch.nn.init.normal_(self.embed.weight, std=0.02)

    def forward(self, tokens, keep_qkv=False, stats=None):
        x = self.embed(tokens)
        for blk in self.blocks:
            x = blk(x, keep_qkv, stats)
        return self.norm(x) @ self.embed.weight.t()


# ---------------------------------------------------------------- training

def autocast(device):
    """bf16 matrix products on a GPU, f32 on the CPU (both models alike)."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16,
                          enabled=device.type == "cuda")


def batch_of(rng, data, batch, length):
    starts = rng.integers(0, len(data) - length - 1, size=batch)
    rows = np.stack([data[s:s + length + 1] for s in starts])
    return torch.from_numpy(rows.astype(np.int64))


def recall_batch(rng, args, filler, batch, length):
    rows = [recall_sequence(rng, length + 1, args.recall_pairs, args.recall_key_len,
                            args.recall_value_len, filler)[0] for _ in range(batch)]
    return torch.from_numpy(np.stack(rows).astype(np.int64))


def train(kind, factor, args, train_data, val_data, device, dtype):
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    model = ByteLM(args.layers, args.width, args.heads_q, args.heads_kv, kind, args.block_size,
                   dtype, factor).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95),
                            weight_decay=0.1)
    warm = max(1, args.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) *
        (0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, s / max(1, args.steps))))))
    times, losses = [], []
    recall_every = int(round(1 / args.recall_train_share)) if args.recall_train_share > 0 else 0
    for step in range(args.steps):
        if recall_every and step % recall_every == recall_every - 1:
            seq = recall_batch(rng, args, train_data, args.batch, args.context)
        else:
            seq = batch_of(rng, train_data, args.batch, args.context)
        seq = seq.to(device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with autocast(device):
            logits = model(seq[:, :-1])
        loss = F.cross_entropy(logits.float().reshape(-1, 256), seq[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        losses.append(loss.item())
        if step % max(1, args.steps // 10) == 0 or step == args.steps - 1:
            log(f"  {kind} step {step}: loss {losses[-1]:.4f} ({times[-1] * 1e3:.1f} ms)")
    settled = times[len(times) // 5:] or times
    return model, {"step_ms": 1e3 * statistics.median(settled), "final_loss": losses[-1]}


@torch.no_grad()
def validation_bpb(model, val_data, args, device):
    rng = np.random.default_rng(args.seed + 1)
    total, count = 0.0, 0
    for _ in range(args.eval_batches):
        seq = batch_of(rng, val_data, args.batch, args.context).to(device)
        with autocast(device):
            logits = model(seq[:, :-1])
        total += float(F.cross_entropy(logits.float().reshape(-1, 256),
                                       seq[:, 1:].reshape(-1), reduction="sum"))
        count += seq[:, 1:].numel()
    return total / count / math.log(2)


@torch.no_grad()
def recall_accuracy(model, val_data, args, device, length):
    rng = np.random.default_rng(args.seed + 2)
    hit, count = 0, 0
    for _ in range(args.recall_probes):
        seq, target = recall_sequence(rng, length + 1, args.recall_pairs, args.recall_key_len,
                                      args.recall_value_len, val_data)
        x = torch.from_numpy(seq.astype(np.int64))[None].to(device)
        with autocast(device):
            pred = model(x[:, :-1]).argmax(-1)[0].cpu().numpy()
        want = seq[1:]
        mask = target[:-1]
        hit += int((pred[mask] == want[mask]).sum())
        count += int(mask.sum())
    return hit / max(1, count)


@torch.no_grad()
def selection_stats(model, val_data, args, device, length, with_union):
    """Mean sparsity over layers at `length` (dashattn's own count), and U
    for tiles of 64 rows of one head from the CPU backend's selection on the
    same q, k, v (f32 copies of them)."""
    rng = np.random.default_rng(args.seed + 3)
    seq = batch_of(rng, val_data, 1, length).to(device)
    sparsity = []
    with autocast(device):
        model(seq[:, :-1], keep_qkv=with_union, stats=sparsity)
    unions = []
    if with_union:
        for blk in model.blocks:
            q, k, v = (t.transpose(1, 2).float().cpu().numpy() for t in blk.attn.last_qkv)
            h = blk.attn.dash.block_summary.detach().float().cpu().numpy()
            _, _, sel = dashattn.attention(q, k, v, block_size=args.block_size,
                                           group_select="mean", block_summary=h,
                                           return_selection=True)
            unions.append(tile_union_ratios(sel["block_index"], sel["block_count"],
                                            sel["block_index"].shape[-1], spans=(64,))["64"])
            blk.attn.last_qkv = None
    return {"sparsity": statistics.mean(sparsity), "sparsity_per_layer": sparsity,
            "tile_union_64": statistics.mean(unions) if unions else None,
            "tile_union_64_per_layer": unions}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--heads-q", type=int, default=8)
    ap.add_argument("--heads-kv", type=int, default=2)
    ap.add_argument("--block-size", type=int, default=64)
    ap.add_argument("--context", type=int, default=8192)
    ap.add_argument("--long-context", type=int, default=32768)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--eval-batches", type=int, default=8)
    ap.add_argument("--corpus-mb", type=float, default=200.0)
    ap.add_argument("--val-share", type=float, default=0.05)
    ap.add_argument("--recall-train-share", type=float, default=0.1)
    ap.add_argument("--recall-pairs", type=int, default=32)
    ap.add_argument("--recall-key-len", type=int, default=4)
    ap.add_argument("--recall-value-len", type=int, default=4)
    ap.add_argument("--recall-probes", type=int, default=8)
    ap.add_argument("--long-union", action="store_true",
                    help="also U at --long-context (a large selection on the CPU backend)")
    ap.add_argument("--stage1-factors", default="1",
                    help="comma-separated s: one DashAttention model per stage-1 scale s/sqrt(D) "
                    "(the release's scaling_factor, its knob for sparsity)")
    ap.add_argument("--time-budget", type=float, default=0.0,
                    help="seconds after which models not yet started are skipped (0: none)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--tiny", action="store_true", help="a small configuration for a smoke run")
    ap.add_argument("--json")
    args = ap.parse_args()
    if args.tiny:
        args.layers, args.width, args.heads_q, args.heads_kv = 2, 64, 2, 1
        args.block_size, args.context, args.long_context = 16, 256, 512
        args.batch, args.eval_batches, args.corpus_mb = 2, 2, 4.0
        args.steps = 6 if args.steps == ap.get_default("steps") else args.steps
        args.recall_pairs, args.recall_probes = 4, 2
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32

    roots = sorted(set(site.getsitepackages() + [sysconfig.get_paths()["stdlib"]]))
    train_data, val_data, nfiles = load_corpus(roots, int(args.corpus_mb * 2**20), args.val_share)
    log(f"corpus: {len(train_data) / 2**20:.1f} MiB from {nfiles[0]} files (train), "
        f"{len(val_data) / 2**20:.1f} MiB from {nfiles[1]} files (validation), under {roots}")
    log(f"dashattn {dashattn.library_version()} ({dashattn.library_path()}); torch "
        f"{torch.__version__} on {device}" +
        (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))
    log(f"model: {args.layers} layers, width {args.width}, {args.heads_q} query / {args.heads_kv} "
        f"KV heads (head dim {args.width // args.heads_q}), context {args.context}, batch "
        f"{args.batch}, {args.steps} steps, {dtype}")

    results = {"args": vars(args), "files": {"train": nfiles[0], "validation": nfiles[1]}}
    factors = [float(f) for f in args.stage1_factors.split(",")]
    models = [("sdpa", "sdpa", 1.0)] + [
        ("dash" if f == 1.0 else f"dash-s{f:g}", "dash", f) for f in factors]
    began = time.perf_counter()
    for name, kind, factor in models:
        if args.time_budget and time.perf_counter() - began > args.time_budget:
            log(f"skipping {name}: past the time budget of {args.time_budget} s")
            continue
        log(f"training {name}" + (f" (stage-1 scale {factor:g}/sqrt(D))" if kind == "dash" else ""))
        model, res = train(kind, factor, args, train_data, val_data, device, dtype)
        model.eval()
        res["stage1_factor"] = factor if kind == "dash" else None
        res["val_bpb"] = validation_bpb(model, val_data, args, device)
        res["recall_accuracy_context"] = recall_accuracy(model, val_data, args, device,
                                                         args.context)
        res["recall_accuracy"] = recall_accuracy(model, val_data, args, device,
                                                 args.long_context)
        if kind == "dash":
            res["at_context"] = selection_stats(model, val_data, args, device, args.context, True)
            res["at_long_context"] = selection_stats(model, val_data, args, device,
                                                     args.long_context, args.long_union)
        results[name] = res
        log(f"  {name}: " + json.dumps(res, default=str))
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=1, default=str)

    s = results["sdpa"]
    dash = [n for n, k, _ in models if k == "dash" and n in results]
    if not dash:
        return
    cols = ["SDPA"] + [f"{n} (scale {results[n]['stage1_factor']:g}/sqrt(D))" for n in dash]

    def row(label, sdpa, fmt, target=None):
        cells = [sdpa] + [fmt(results[n]) for n in dash]
        verdict = "; ".join(f"{n}: {target(results[n])}" for n in dash) if target else ""
        return "| " + " | ".join([label] + cells + [verdict]) + " |"

    def gap(d):
        g = d["val_bpb"] / s["val_bpb"] - 1
        return f"within 2%: {'yes' if g <= 0.02 else 'NO'} ({100 * g:+.2f}%)"

    L = args.long_context
    lines = [
        row("validation bits per byte", f"{s['val_bpb']:.4f}", lambda d: f"{d['val_bpb']:.4f}", gap),
        row("step ms", f"{s['step_ms']:.1f}", lambda d: f"{d['step_ms']:.1f}"),
        row(f"recall accuracy at {args.context}", f"{s['recall_accuracy_context']:.3f}",
            lambda d: f"{d['recall_accuracy_context']:.3f}"),
        row(f"recall accuracy at {L}", f"{s['recall_accuracy']:.3f}",
            lambda d: f"{d['recall_accuracy']:.3f}",
            lambda d: "not below dense: " + ("yes" if d["recall_accuracy"] >= s["recall_accuracy"]
                                             else "NO")),
        row(f"sparsity at {args.context}", "", lambda d: f"{100 * d['at_context']['sparsity']:.1f}%"),
        row(f"sparsity at {L}", "", lambda d: f"{100 * d['at_long_context']['sparsity']:.1f}%",
            lambda d: "at least 75%: " + ("yes" if d["at_long_context"]["sparsity"] >= 0.75
                                          else "NO")),
        row(f"U, tiles of 64 rows, at {args.context}", "",
            lambda d: f"{d['at_context']['tile_union_64']:.2f}")]
    if args.long_union:
        lines.append(row(f"U, tiles of 64 rows, at {L}", "",
                         lambda d: f"{d['at_long_context']['tile_union_64']:.2f}"))
    log("\n| measure | " + " | ".join(cols) + " | target |\n|" + " --- |" * (len(cols) + 2))
    for line in lines:
        log(line)


if __name__ == "__main__":
    main()
