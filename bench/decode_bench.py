#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Decode benchmark: dashattn_decode against dense attention and the released Triton decode.

For each case (Hq 32 with Hkv 8 or 2, batch 16 or 1, a cache of N = 131072
tokens, D 128, bf16, block size 64, the plan's defaults) it

- makes inputs of gpu_bench.py's synthetic model (the `segment` family) on the
  device, the focus calibrated so that the decode row's sparsity
  (dashattn_forward with len_q 1 over the same K, V) is 75 +- 3%;
- fills a contiguous KV cache with dashattn_cache_append (the library computes
  the f32 block keys) and times dashattn_decode as plain calls and as CUDA-graph
  replay; the same for a paged cache (pages in shuffled order) and, with
  --block-keys-bf16, for bf16 block keys;
- checks decode against forward(len_q 1) and paged against contiguous, and
  counts NaN/inf outputs;
- times PyTorch SDPA (cuDNN and flash backends, GQA and packed-GQA forms) and,
  with --release, the authors' released Triton decode on the same q, K, V;
- measures the device-to-device copy bandwidth, our effective bandwidth on the
  bytes a decode must read, and where a decode call's device time goes (stage 1,
  attention, merge) from torch.profiler's kernel records;

then prints a verdict per target and a short table last; --json writes every
figure. Exit status 1 only if a library call failed or an output held NaN/inf:
missed targets are reported, never failed.

Example (GPU machine, build tree BUILD):
  DASHATTN_BACKEND_PATH=BUILD/backends/cuda/.libs python3 bench/decode_bench.py \\
      --lib BUILD/.libs/libdashattn.so --release .release --json decode.json
Control-flow smoke test without a GPU (CPU torch, the CPU backend, N 1024, B <= 2;
no graphs, profiler, released decode or SDPA backend selection):
  python3 bench/decode_bench.py --lib BUILD/.libs/libdashattn.so --device cpu
"""

import argparse
import contextlib
import ctypes
import functools
import json
import os
import sys
import traceback

sys.dont_write_bytecode = True  # leave no __pycache__ in the source tree
HERE = os.path.dirname(os.path.abspath(__file__))

HEAD_DIM = 128
BLOCK = 64
FULL_N, QUICK_N, SMOKE_N = 131072, 8192, 1024
SMOKE_MAX_BATCH = 2
# focus: the calibration's first trial, the focus that put the case in the
# band on the H200 (2026-12-02, N 131072, seed 1), so a run at that size
# usually calibrates in one trial; --focus-start overrides it.
CASES = {
    "kv8-b16": {"heads": (32, 8), "batch": 16, "focus": 0.344},
    "kv2-b16": {"heads": (32, 2), "batch": 16, "focus": 0.743},
    "kv8-b1": {"heads": (32, 8), "batch": 1, "focus": 0.352},
    "kv2-b1": {"heads": (32, 2), "batch": 1, "focus": 0.718},
}
# --group-mode names (dashattn_group_mode values, as in python/dashattn/_capi.py).
GROUP_MODES = {"per_head": 0, "shared": 1, "mean": 2}
# Kernel-name substrings of our decode, by stage (matched lower-case).
STAGES = (
    ("stage1", ("decode_scores", "decode_threshold", "decode_weights", "decode_union",
                "decode_select")),
    ("attention", ("decode_split",)),
    ("merge", ("decode_merge",)),
)
COPY_BYTES = 4 * 2**30


def log(msg=""):
    print(msg, flush=True)


class BenchError(RuntimeError):
    pass


# ---------------------------------------------------------------------------
# Arguments and setup
# ---------------------------------------------------------------------------


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lib", required=True, help="path to libdashattn.so")
    ap.add_argument("--release", help="folder holding the released dash_attn package "
                    "(a checkout of the authors' repository); its decode is timed too")
    ap.add_argument("--json", help="write every figure to this file")
    ap.add_argument("--quick", action="store_true", help=f"N {QUICK_N} instead of {FULL_N}")
    ap.add_argument("--cases", default=",".join(CASES),
                    help="comma-separated subset of " + ",".join(CASES))
    ap.add_argument("--block-keys-bf16", action="store_true",
                    help="also decode with bf16 block keys (time, output vs f32 block keys)")
    ap.add_argument("--repeat", type=int, default=7,
                    help="timed batches per figure; the median is reported (default 7)")
    ap.add_argument("--min-batch-ms", type=float, default=50.0,
                    help="calls per batch are chosen so a batch lasts about this long")
    ap.add_argument("--graph-calls", type=int, default=8,
                    help="decode calls captured in one CUDA graph (default 8)")
    ap.add_argument("--profile-calls", type=int, default=10,
                    help="decode calls recorded by torch.profiler (default 10)")
    ap.add_argument("--length", type=int, help="cached tokens N (overrides --quick)")
    ap.add_argument("--chunk", type=int, default=16384,
                    help="tokens per dashattn_cache_append call (default 16384)")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                    help="where torch keeps the tensors; cpu is the smoke mode")
    ap.add_argument("--backend", help="library backend (default cuda, or cpu with --device cpu)")
    ap.add_argument("--threads", type=int, default=0, help="CPU backend threads (0: all)")
    ap.add_argument("--group-mode", default="mean", choices=sorted(GROUP_MODES),
                    help="GQA group mode of the plan (default mean, the released function); "
                         "per_head reads the union of its heads' blocks")
    ap.add_argument("--family", default="segment", choices=("segment", "coherent"),
                    help="synthetic queries (bench/gpu_bench.py's make_queries); one decode row "
                         "per sequence, so the family changes only its noise")
    ap.add_argument("--seed", type=int, default=1)
    # gpu_bench.calibrate reads the next five by these names.
    ap.add_argument("--focus", type=float, help="use this focus instead of calibrating it")
    ap.add_argument("--focus-start", type=float,
                    help="first focus the calibration tries (default: the case's own)")
    ap.add_argument("--sparsity-target", type=float, default=0.75)
    ap.add_argument("--sparsity-tol", type=float, default=0.03)
    ap.add_argument("--calib-max-trials", type=int, default=14)
    args = ap.parse_args(argv)
    args.cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    for c in args.cases:
        if c not in CASES:
            ap.error(f"--cases: unknown case '{c}' (cases: {', '.join(CASES)})")
    args.smoke = args.device == "cpu"
    if args.backend is None:
        args.backend = "cpu" if args.smoke else "cuda"
    if args.smoke and args.backend != "cpu":
        ap.error("--device cpu keeps tensors in host memory: only --backend cpu can read them")
    if args.length is None:
        args.length = SMOKE_N if args.smoke else (QUICK_N if args.quick else FULL_N)
    if args.length < 2 * BLOCK or args.length % BLOCK:
        ap.error(f"--length must be a multiple of {BLOCK}, at least {2 * BLOCK}")
    if args.smoke:
        args.chunk = min(args.chunk, 320)  # several appends, chunks not block-aligned
        args.repeat = min(args.repeat, 3)
        args.min_batch_ms = min(args.min_batch_ms, 5.0)
    if min(args.repeat, args.chunk, args.graph_calls, args.profile_calls) < 1:
        ap.error("--repeat, --chunk, --graph-calls and --profile-calls must be positive")
    return args


def import_modules():
    """torch and the bench helpers, imported only when running (not for --help):
    gpu_bench needs numpy, and this machine may have neither."""
    import torch

    sys.path.insert(0, HERE)
    import dashattn_ctypes as da
    import gpu_bench as gb
    import released_compare as rc
    return torch, da, gb, rc


def default_backend_path(lib_path):
    """When the caller did not set DASHATTN_BACKEND_PATH, point it at the cuda
    plugin of the build tree the library comes from (BUILD/.libs/..)."""
    if os.environ.get("DASHATTN_BACKEND_PATH"):
        return
    build = os.path.dirname(os.path.dirname(os.path.abspath(lib_path)))
    plugin_dir = os.path.join(build, "backends", "cuda", ".libs")
    if os.path.isdir(plugin_dir):
        os.environ["DASHATTN_BACKEND_PATH"] = plugin_dir
        log(f"DASHATTN_BACKEND_PATH unset: using {plugin_dir}")


class Session:
    """What every case uses: modules, the library context, the device."""

    def __init__(self, args, torch, da, gb, rc):
        self.args, self.torch, self.da, self.gb, self.rc = args, torch, da, gb, rc
        self.gpu = not args.smoke
        self.dev = torch.device(args.device)
        if self.gpu and not torch.cuda.is_available():
            raise BenchError("torch sees no CUDA device (use --device cpu for the smoke mode)")
        self.lib = da.Library(args.lib)
        self.ctx = da.Context(self.lib, args.backend, num_threads=args.threads)
        if self.ctx.backend != args.backend:
            raise BenchError(f"asked for backend '{args.backend}', the context runs on "
                             f"'{self.ctx.backend}' (is DASHATTN_BACKEND set?)")
        self.dtypes = {torch.bfloat16: da.BF16, torch.float32: da.F32}
        # Errors whose message says it all; others also print their traceback.
        self.known_errors = (da.DashattnError, BenchError, gb.BenchError)

    def stream(self):
        """Torch's current stream as the library's stream argument (None on CPU)."""
        return self.torch.cuda.current_stream().cuda_stream if self.gpu else None

    def sync(self):
        """Wait for all queued work; a deferred library error (bad seq_lens or
        block table, full cache) raises here."""
        if self.gpu:
            self.torch.cuda.synchronize()
        self.ctx.synchronize()

    def view(self, t):
        """A dashattn_tensor over a contiguous 4-D torch tensor."""
        if t.dim() != 4 or not t.is_contiguous():
            raise BenchError(f"internal: tensor of shape {tuple(t.shape)} is not contiguous 4-D")
        return self.da.bhsd(t.data_ptr(), self.dtypes[t.dtype], tuple(t.shape))

    def empty(self, shape, dtype):
        return self.torch.empty(shape, dtype=dtype, device=self.dev)

    def workspace(self, plan, op):
        """Our own workspace, so timed and captured calls allocate nothing."""
        size = plan.workspace_size(op)
        return self.torch.empty(max(size, 1), dtype=self.torch.uint8, device=self.dev), size

    def free_memory(self):
        if self.gpu:
            self.torch.cuda.empty_cache()

    def close(self):
        self.ctx.close()


def environment(S):
    env = {"library": S.lib.path, "library_version": S.lib.version(),
           "backend": S.ctx.backend, "backend_device": S.ctx.device,
           "DASHATTN_BACKEND_PATH": os.environ.get("DASHATTN_BACKEND_PATH"),
           "torch": S.torch.__version__, "python": sys.version.split()[0]}
    if S.gpu:
        prop = S.torch.cuda.get_device_properties(S.torch.cuda.current_device())
        env.update(gpu=prop.name, gpu_memory_GiB=prop.total_memory / 2**30,
                   sm_count=prop.multi_processor_count, torch_cuda=S.torch.version.cuda,
                   cudnn=S.torch.backends.cudnn.version())
        try:
            import triton
            env["triton"] = triton.__version__
        except ImportError:
            env["triton"] = None
    return env


# ---------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------


def time_plain(S, call):
    """Median per-call time of batches of calls (CUDA events on the GPU)."""
    a = S.args
    if S.gpu:
        return S.gb.time_cuda(S.torch, call, a.repeat, a.min_batch_ms / 1e3)
    return S.gb.time_host(call, S.ctx.synchronize, a.repeat, a.min_batch_ms / 1e3)


def time_graph(S, make_call):
    """Per-call time of CUDA-graph replay. make_call(stream) returns a callable
    that queues one call on that native stream; graph_calls of them are
    captured on a side stream, after a warm-up there."""
    torch, n = S.torch, S.args.graph_calls
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        warm = make_call(torch.cuda.current_stream().cuda_stream)
        for _ in range(3):
            warm()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=side):
        call = make_call(torch.cuda.current_stream().cuda_stream)
        for _ in range(n):
            call()
    torch.cuda.synchronize()
    t = S.gb.time_cuda(torch, graph.replay, S.args.repeat, S.args.min_batch_ms / 1e3)
    del graph
    for key in ("ms", "ms_min", "ms_max"):
        t[key] /= n
    t["batches_ms_per_call"] = [x / n for x in t["batches_ms_per_call"]]
    t["calls_per_graph"] = n
    t["method"] = "CUDA events around R replays of a graph of calls_per_graph calls"
    return t


def us(t):
    """Microseconds of a timing dict, None if absent or failed."""
    return 1e3 * t["ms"] if isinstance(t, dict) and "ms" in t else None


def best_us(*timings):
    got = [x for x in (us(t) for t in timings) if x is not None]
    return min(got) if got else None


def guarded(S, res, key, fatal, fn):
    """Run one part of a case; a failure is recorded under res[key] and, if the
    part is ours (fatal), in res["errors"] too. Other parts go on."""
    try:
        res[key] = fn()
        return res[key]
    except Exception as e:  # torch, the library, the released code: all recorded
        msg = f"{type(e).__name__}: {e}"
        if not isinstance(e, S.known_errors):
            log(traceback.format_exc().rstrip())
        log(f"  {key}: ERROR: {msg}")
        res[key] = {"error": msg}
        if fatal:
            res["errors"].append(f"{key}: {msg}")
        return None


# ---------------------------------------------------------------------------
# Inputs and caches
# ---------------------------------------------------------------------------


class Cache:
    """A KV cache's tensors and the dashattn_kv_cache pointing at them."""

    def __init__(self, S, k, v, block_keys, lens, table=None):
        da = S.da
        self.k, self.v, self.block_keys, self.lens, self.table = k, v, block_keys, lens, table
        c = da.KVCache()
        c.layout = da.CACHE_CONTIGUOUS if table is None else da.CACHE_PAGED
        c.k, c.v, c.block_keys = S.view(k), S.view(v), S.view(block_keys)
        c.seq_lens = lens.data_ptr()
        c.block_table = None if table is None else table.data_ptr()
        c.table_stride = 0 if table is None else table.shape[1]
        self.struct = c


def contiguous_cache(S, B, hkv, N, bk_dtype, kv=None):
    """[B, Hkv, N, D] k and v (new, or the given pair: see bf16_block_keys)
    and [B, Hkv, N/64, D] block keys."""
    k, v = kv if kv is not None else (S.empty((B, hkv, N, HEAD_DIM), S.torch.bfloat16),
                                      S.empty((B, hkv, N, HEAD_DIM), S.torch.bfloat16))
    bk = S.empty((B, hkv, N // BLOCK, HEAD_DIM), bk_dtype)
    lens = S.torch.zeros(B, dtype=S.torch.int32, device=S.dev)
    return Cache(S, k, v, bk, lens)


def paged_cache(S, B, hkv, N, bk_dtype, seed):
    """Pages of one block each, [P, Hkv, 64, D], mapped in a shuffled order."""
    torch, M = S.torch, N // BLOCK
    P = B * M
    g = torch.Generator().manual_seed(seed)
    table = torch.randperm(P, generator=g).to(torch.int32).view(B, M).to(S.dev)
    k = S.empty((P, hkv, BLOCK, HEAD_DIM), torch.bfloat16)
    v = S.empty((P, hkv, BLOCK, HEAD_DIM), torch.bfloat16)
    bk = S.empty((P, hkv, 1, HEAD_DIM), bk_dtype)
    lens = torch.zeros(B, dtype=torch.int32, device=S.dev)
    return Cache(S, k, v, bk, lens, table)


def fill(S, plan, cache, N, chunk_source):
    """Empty the cache, then append chunk_source(t0, t1) -> (k, v) chunk by
    chunk on torch's stream (the library computes the block keys)."""
    cache.lens.zero_()
    for t0 in range(0, N, S.args.chunk):
        t1 = min(N, t0 + S.args.chunk)
        k_new, v_new = chunk_source(t0, t1)
        tk, tv = S.view(k_new), S.view(v_new)
        S.lib.check("dashattn_cache_append", S.ctx.handle, plan.handle,
                    ctypes.byref(cache.struct), ctypes.byref(tk), ctypes.byref(tv), None,
                    S.stream())
        del k_new, v_new  # the stream orders the next chunk's writes after this append
    S.sync()
    got = cache.lens.tolist()
    if got != [N] * len(got):
        raise BenchError(f"seq_lens {got} after appending {N} tokens")


def copy_source(cache):
    """Chunks of an already filled contiguous cache, for filling another."""
    return lambda t0, t1: (cache.k[:, :, t0:t1].contiguous(), cache.v[:, :, t0:t1].contiguous())


class Inputs:
    """The synthetic model of gpu_bench.py for one case, on torch's device."""

    def __init__(self, S, B, hq, hkv, N, seed):
        gb = S.gb
        self.S, self.B, self.hq, self.hkv, self.N, self.seed = S, B, hq, hkv, N, seed
        self.sx = gb.TorchSynth(S.torch, S.da.BF16)
        self.sx.dev = S.dev  # TorchSynth generates on cuda; the smoke mode wants cpu
        self.topics = gb.make_topics(self.sx, B, hkv, N // BLOCK, HEAD_DIM, seed)
        self.focus = None

    def chunk(self, t0, t1):
        gb, sx = self.S.gb, self.sx
        k = gb.make_keys(sx, self.topics, t0, t1, self.focus, BLOCK, self.seed)
        v = gb.make_values(sx, self.B, self.hkv, t0, t1, HEAD_DIM, self.seed)
        return sx.to_storage(k), sx.to_storage(v)

    def query(self):
        q = self.S.gb.make_queries(self.sx, self.topics, self.hq, 1, self.N, self.focus, BLOCK,
                                   self.seed, self.S.args.family)
        return self.sx.to_storage(q)


def forward_row(S, plan, q, cache, fout):
    """Our forward with len_q 1 over the cache's K, V: the decode row's output
    and sparsity (stats.sparsity)."""
    ws, size = S.workspace(plan, S.da.OP_FORWARD)
    stats = S.da.ForwardStats()
    S.da.forward_on_stream(S.ctx, plan, S.view(q), cache.struct.k, cache.struct.v, S.view(fout),
                           stats=stats, workspace=ws.data_ptr(), workspace_size=size,
                           stream=S.stream())
    S.sync()
    return stats


def calibrated_inputs(S, plan, inputs, cache, label):
    """Fill the cache and make q for a focus whose decode row is 75 +- 3%
    sparse (gpu_bench.calibrate; the accepted trial is the last one run)."""
    state = {}

    def trial(focus):
        inputs.focus = focus
        fill(S, plan, cache, inputs.N, inputs.chunk)
        state["q"] = inputs.query()
        state["fout"] = S.torch.empty_like(state["q"])
        state["stats"] = forward_row(S, plan, state["q"], cache, state["fout"])
        return state["stats"].sparsity

    args = argparse.Namespace(**vars(S.args))
    if args.focus_start is None:
        args.focus_start = CASES[label]["focus"] if label in CASES else 0.85
    focus, sparsity, history = S.gb.calibrate(trial, args, label)
    st = state["stats"]
    return state["q"], state["fout"], {
        "focus": focus, "sparsity": sparsity, "calibration": history,
        "visible_pairs": st.visible_pairs, "attended_pairs": st.attended_pairs}


# ---------------------------------------------------------------------------
# Our decode
# ---------------------------------------------------------------------------


def rel(a, b):
    a, b = a.double(), b.double()
    den = float(b.norm())
    return float((a - b).norm()) / (den if den > 0 else 1.0)


def nonfinite(S, t):
    return int((~S.torch.isfinite(t)).sum())


class Decoder:
    """dashattn_decode of one query tensor against one cache, with its own
    output and workspace; call(stream) queues one call on a native stream."""

    def __init__(self, S, plan, q, cache):
        self.S, self.plan, self.cache = S, plan, cache
        self.q, self.out = q, S.torch.empty_like(q)
        self.tq, self.tout = S.view(q), S.view(self.out)
        self.ws, self.ws_size = S.workspace(plan, S.da.OP_DECODE)

    def call(self, stream):
        S = self.S
        return S.da.bound_call(S.ctx, "dashattn_decode", S.ctx.handle, self.plan.handle,
                               self.tq, self.cache.struct, self.tout, None, self.ws.data_ptr(),
                               self.ws_size, stream)


def measure_decode(S, res, dec, label):
    """One call checked for NaN/inf, then plain and (GPU) graph-replay timings."""
    dec.call(S.stream())()
    S.sync()
    t = {"nonfinite_out": nonfinite(S, dec.out), "workspace_bytes": dec.ws_size}
    if t["nonfinite_out"]:
        res["errors"].append(f"{label}: {t['nonfinite_out']} NaN/inf outputs")
    t["plain"] = time_plain(S, dec.call(S.stream()))
    S.sync()
    msg = f"  ours [{label}]: plain {us(t['plain']):.1f} us"
    if S.gpu:
        g = guarded(S, t, "graph", False, lambda: time_graph(S, dec.call))
        if g is not None:
            S.sync()
            msg += f", graph replay {us(g):.1f} us"
        if "error" in t.get("graph", {}):
            res["errors"].append(f"{label} graph: {t['graph']['error']}")
    log(msg + (f"; {t['nonfinite_out']} NaN/inf outputs" if t["nonfinite_out"] else ""))
    return t


def stage_split(S, dec):
    """Device time per call of each kernel of ~10 decode calls (torch.profiler
    records every library's kernels through CUPTI), summed into our stages."""
    torch = S.torch
    from torch.profiler import ProfilerActivity, profile

    call = dec.call(S.stream())
    call()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(S.args.profile_calls):
            call()
        torch.cuda.synchronize()
    per_name = {}
    for evt in prof.events():
        if evt.device_type == torch.autograd.DeviceType.CUDA:
            per_name[evt.name] = per_name.get(evt.name, 0.0) + evt.time_range.elapsed_us()
    if not per_name:
        raise BenchError("torch.profiler recorded no kernels")
    split = bucket_kernels(per_name, S.args.profile_calls)
    kernels = split["kernels_us_per_call"]
    log(f"  stage split per call: stage 1 {split['stage1_us']:.1f} us, attention "
        f"{split['attention_us']:.1f} us, merge {split['merge_us']:.1f} us, other decode "
        f"{split['other_decode_us']:.1f} us")
    for name, t in kernels:
        log(f"    {t:9.2f} us  {name[:110]}")
    return split


def bucket_kernels(per_name, calls):
    """Device us per call of each kernel name, summed into our stages by name
    substring; ours (names with "decode") matching no stage go to other."""
    kernels = sorted(((name, t / calls) for name, t in per_name.items()), key=lambda x: -x[1])
    split = {f"{stage}_us": 0.0 for stage, _ in STAGES}
    split["other_decode_us"] = 0.0
    for name, t in kernels:
        low = name.lower()
        stage = next((st for st, keys in STAGES if any(k in low for k in keys)), None)
        if stage is not None:
            split[f"{stage}_us"] += t
        elif "decode" in low:
            split["other_decode_us"] += t
    split["kernels_us_per_call"] = kernels
    return split


def bf16_block_keys(S, plan, q, cont, N, f32_out):
    """Decode with bf16 block keys. The cache shares k and v with the f32 one:
    appending the same chunks again rewrites the same values and makes the
    library compute bf16 block keys, without another copy of K and V."""
    B, hkv = cont.k.shape[0], cont.k.shape[1]
    cache = contiguous_cache(S, B, hkv, N, S.torch.bfloat16, kv=(cont.k, cont.v))
    fill(S, plan, cache, N, copy_source(cont))
    dec = Decoder(S, plan, q, cache)
    sub = {"errors": []}
    t = measure_decode(S, sub, dec, "bf16 block keys")
    t["rel_diff_vs_f32_block_keys"] = rel(dec.out, f32_out)
    log(f"  bf16 block keys: output vs f32 block keys rel diff "
        f"{t['rel_diff_vs_f32_block_keys']:.2e}")
    t["errors"] = sub["errors"]
    return t


def paged_decode(S, plan, q, cont, N, contiguous_out, seed):
    """The same sequences in a paged cache: timings and its output against the
    contiguous cache's."""
    B, hkv = cont.k.shape[0], cont.k.shape[1]
    cache = paged_cache(S, B, hkv, N, cont.block_keys.dtype, seed)
    fill(S, plan, cache, N, copy_source(cont))
    dec = Decoder(S, plan, q, cache)
    sub = {"errors": []}
    t = measure_decode(S, sub, dec, "paged")
    t["rel_diff_vs_contiguous"] = rel(dec.out, contiguous_out)
    t["errors"] = sub["errors"]
    log(f"  paged: output vs contiguous rel diff {t['rel_diff_vs_contiguous']:.2e}")
    del dec, cache
    S.free_memory()
    return t


# ---------------------------------------------------------------------------
# Dense attention and the released decode
# ---------------------------------------------------------------------------


def dense_backends(S):
    """(name, context manager factory) of the SDPA backends to time alone."""
    if not S.gpu:
        return [("default", contextlib.nullcontext)]
    from torch.nn.attention import SDPBackend, sdpa_kernel

    out = []
    for name, enum_name in (("cudnn", "CUDNN_ATTENTION"), ("flash", "FLASH_ATTENTION")):
        be = getattr(SDPBackend, enum_name, None)
        if be is not None:
            out.append((name, lambda be=be: sdpa_kernel([be])))
    return out


def dense_forms(q, hkv):
    """The GQA call and the packed-GQA call (the G query heads of a KV head as
    G query rows of one head; one query sees every key, so non-causal)."""
    B, hq, _, D = q.shape
    return {"gqa": (q, {"enable_gqa": True}),
            "packed_gqa": (q.view(B, hkv, hq // hkv, D), {})}


def dense_baselines(S, q, K, V, ours_out):
    """SDPA on the full K, V with each backend and form: plain and graph
    timings; best per backend, and the best of all dense figures."""
    F = S.torch.nn.functional
    out, reference = {}, None
    for be_name, be_ctx in dense_backends(S):
        entry = {}
        out[be_name] = entry
        for form, (qq, kw) in dense_forms(q, K.shape[1]).items():
            def call(qq=qq, kw=kw):
                return F.scaled_dot_product_attention(qq, K, V, **kw)

            t = {}
            entry[form] = t
            try:
                with be_ctx():
                    o = call().reshape(ours_out.shape)
                    if reference is None:
                        reference = o
                    # Forms and backends agree (a check of the forms); ours is
                    # another function (sparse), so it is not compared here.
                    t["rel_diff_vs_first_dense"] = rel(o, reference)
                    del o
                    t["plain"] = time_plain(S, call)
                    if S.gpu:
                        guarded(S, t, "graph", False, lambda: time_graph(S, lambda _s: call))
            except (RuntimeError, TypeError, ValueError) as e:  # this backend cannot run it
                t["error"] = str(e).strip().splitlines()[0][:400] if str(e).strip() else repr(e)
                log(f"  dense {be_name} [{form}]: unavailable: {t['error']}")
                continue
            log(f"  dense {be_name} [{form}]: plain {us(t['plain']):.1f} us"
                + (f", graph {us(t.get('graph')):.1f} us" if us(t.get("graph")) else "")
                + f"; vs first dense {t['rel_diff_vs_first_dense']:.1e}")
        figures = [(us(t.get(k)), f"{form} {k}") for form, t in entry.items()
                   for k in ("plain", "graph") if us(t.get(k)) is not None]
        if figures:
            entry["best_us"], entry["best"] = min(figures)
    S.free_memory()
    best = [(e["best_us"], f"{name} {e['best']}") for name, e in out.items() if "best_us" in e]
    summary = {"backends": out}
    if best:
        summary["best_us"], summary["best"] = min(best)
        log(f"  best dense: {summary['best_us']:.1f} us ({summary['best']})")
    return summary


def load_released(path):
    """(prefill, decoding) modules of the released package, or (None, error)."""
    try:
        sys.path.insert(0, os.path.abspath(path))
        import dash_attn  # noqa: F401  (as the release runs: it sets matmul precision)
        from dash_attn import decoding, prefill
        return (prefill, decoding), None
    except Exception as e:  # any import failure of third-party code
        return None, f"{type(e).__name__}: {e}"


def released_decode(S, released, q, K, V, ours_out):
    """The authors' decode on the same q, K, V: summaries of the complete
    blocks once (head_cls zeros = mean pooling, our function), then
    score_blocks + full_attn timed together."""
    torch, rc = S.torch, S.rc
    prefill, decoding = released
    B, hkv, N, D = K.shape
    complete = (N - 1) // BLOCK  # the query's own block is not summarised yet
    t = {"head_cls": "zeros (mean pooling)"}
    h = torch.zeros(hkv, D, dtype=torch.bfloat16, device=S.dev)
    chunks = prefill.summarize_chunk(K[:, :, :complete * BLOCK].contiguous(), h, BLOCK)
    if nonfinite(S, chunks):  # never seen: zeros give a uniform softmax
        g = torch.Generator(device=S.dev).manual_seed(S.args.seed)
        h = (1e-3 * torch.randn(hkv, D, generator=g, device=S.dev)).to(torch.bfloat16)
        chunks = prefill.summarize_chunk(K[:, :, :complete * BLOCK].contiguous(), h, BLOCK)
        t["head_cls"] = "random N(0, 1e-6) (zeros gave NaN/inf summaries)"
        log("  released: zero head_cls gave NaN/inf block summaries; using small random h")

    def call():
        bmask, prior = decoding.score_blocks(q, chunks, BLOCK)
        return decoding.full_attn(q, K, V, bmask, BLOCK, None, prior), bmask

    out, bmask = call()
    S.sync()
    kept = rc.unpack_bits(torch, bmask, N // BLOCK)
    t["sparsity"] = rc.released_sparsity(torch, kept, 1, N - 1, BLOCK)
    t["rel_diff_vs_ours"] = rel(out, ours_out)
    t["nonfinite_out"] = nonfinite(S, out)
    del out, bmask, kept
    t["plain"] = time_plain(S, call)
    log(f"  released decode: {us(t['plain']):.1f} us, sparsity {100 * t['sparsity']:.1f}%, "
        f"output vs ours rel diff {t['rel_diff_vs_ours']:.2e} (head_cls {t['head_cls']})")
    return t


def copy_bandwidth(S):
    """Device-to-device copy of ~4 GiB: (bytes read + written) / time."""
    torch = S.torch
    src = torch.empty(COPY_BYTES // 2, dtype=torch.bfloat16, device=S.dev).normal_()
    dst = torch.empty_like(src)
    t = S.gb.time_cuda(torch, functools.partial(dst.copy_, src), max(S.args.repeat, 10), 0.0)
    del src, dst
    S.free_memory()
    t["bytes_per_copy"] = COPY_BYTES
    t["GBps"] = 2 * COPY_BYTES / (t["ms"] * 1e-3) / 1e9
    log(f"device-to-device copy of {COPY_BYTES / 2**30:.0f} GiB: {t['ms']:.3f} ms, "
        f"{t['GBps']:.0f} GB/s (read + write)")
    return t


# ---------------------------------------------------------------------------
# One case
# ---------------------------------------------------------------------------


def traffic(S, res, B, hq, hkv, N, bk_dtype):
    """Bytes our decode must read: the kept share of K and V, every block key,
    q and out."""
    es = 2
    bk_es = 4 if bk_dtype == S.torch.float32 else 2
    kv = 2 * B * hkv * N * HEAD_DIM * es
    fixed = B * hkv * (N // BLOCK) * HEAD_DIM * bk_es + 2 * B * hq * HEAD_DIM * es
    return {"kv_bytes": kv, "fixed_bytes": fixed,
            "bytes_must_read": (1.0 - res["sparsity"]) * kv + fixed}


def add_bandwidth(t, nbytes, copy_bw):
    """Effective bandwidth of the best of plain and graph, and its share of copy."""
    best = best_us(t.get("plain"), t.get("graph"))
    if best is None:
        return
    t["bytes_must_read"] = nbytes
    t["eff_bw_GBps"] = nbytes / (best * 1e-6) / 1e9
    t["bw_share_of_copy"] = t["eff_bw_GBps"] / copy_bw if copy_bw else None


def run_case(S, name, spec, released, copy_bw):
    args, torch, da = S.args, S.torch, S.da
    hq, hkv = spec["heads"]
    B = min(spec["batch"], SMOKE_MAX_BATCH) if args.smoke else spec["batch"]
    N = args.length
    res = {"case": name, "family": args.family, "group_mode": args.group_mode, "heads_q": hq,
           "heads_kv": hkv, "batch": B,
           "spec_batch": spec["batch"],
           "N": N, "head_dim": HEAD_DIM, "errors": []}
    log("")
    log(f"{name}: Hq {hq} / Hkv {hkv}, batch {B}, N {N}, D {HEAD_DIM}, bf16")
    plan = S.ctx.plan(S.lib.problem(B, hq, hkv, 1, N, HEAD_DIM, dtype=da.BF16, causal=1,
                                    group_mode=GROUP_MODES[args.group_mode]))
    try:
        p = plan.problem
        res["problem"] = da.problem_dict(p)
        res["threshold_method"] = plan.threshold_method
        log(f"  plan: block {p.block_size}, alpha {p.alpha}, group mode {p.group_mode}, "
            f"n_local {p.n_local}, n_sink {p.n_sink}, threshold {plan.threshold_method}")
        seed = S.gb.seed_of(args.seed, name)
        inputs = Inputs(S, B, hq, hkv, N, seed)
        cont = contiguous_cache(S, B, hkv, N, torch.float32)
        q, fout, calib = calibrated_inputs(S, plan, inputs, cont, name)
        res.update(calib)
        res["traffic"] = traffic(S, res, B, hq, hkv, N, torch.float32)
        dec = Decoder(S, plan, q, cont)
        ours = measure_decode(S, res, dec, "contiguous")
        ours["rel_diff_vs_forward"] = rel(dec.out, fout)
        log(f"  decode vs forward(len_q 1): rel diff {ours['rel_diff_vs_forward']:.2e} "
            "(expected about 1e-3 or less)")
        add_bandwidth(ours, res["traffic"]["bytes_must_read"], copy_bw)
        res["contiguous"] = ours
        if S.gpu:
            guarded(S, res, "stage_split", False, lambda: stage_split(S, dec))
        if args.block_keys_bf16:
            t = guarded(S, res, "bf16_block_keys", True,
                        lambda: bf16_block_keys(S, plan, q, cont, N, dec.out))
            if t is not None:
                res["errors"] += t.pop("errors")
                nbytes = traffic(S, res, B, hq, hkv, N, torch.bfloat16)["bytes_must_read"]
                add_bandwidth(t, nbytes, copy_bw)
            S.free_memory()
        guarded(S, res, "dense", False, lambda: dense_baselines(S, q, cont.k, cont.v, dec.out))
        if released is not None:
            guarded(S, res, "released", False,
                    lambda: released_decode(S, released, q, cont.k, cont.v, dec.out))
        t = guarded(S, res, "paged", True,
                    lambda: paged_decode(S, plan, q, cont, N, dec.out, seed))
        if t is not None:
            res["errors"] += t.pop("errors")
            add_bandwidth(t, res["traffic"]["bytes_must_read"], copy_bw)
        S.sync()
    finally:
        plan.destroy()
    return res


# ---------------------------------------------------------------------------
# Targets and the table
# ---------------------------------------------------------------------------


def verdict(what, need, value, passes, shown="{:.2f}x"):
    """One target: value (None: not measured) and whether passes(value)."""
    met = None if value is None else bool(passes(value))
    return {"what": what, "need": need, "got": value,
            "shown": None if value is None else shown.format(value), "met": met}


def ratio(a, b):
    return a / b if a and b else None


def case_verdicts(res):
    """The issue's targets for one case."""
    ours, paged = res.get("contiguous", {}), res.get("paged", {})
    plain, graph = us(ours.get("plain")), us(ours.get("graph"))
    best = best_us(ours.get("plain"), ours.get("graph"))
    dense = res.get("dense", {}).get("best_us")
    big = res["spec_batch"] >= 16
    out = []
    if big:
        out.append(verdict("best dense / ours", ">= 3x", ratio(dense, best), lambda x: x >= 3))
        out.append(verdict("bandwidth on bytes read / copy", ">= 85%",
                           ours.get("bw_share_of_copy"), lambda x: x >= 0.85, "{:.0%}"))
    else:
        need = 3.0 if res["heads_kv"] >= 8 else 2.0
        out.append(verdict("best dense / ours graph", f">= {need:g}x", ratio(dense, graph),
                           lambda x: x >= need))
        out.append(verdict("ours plain / graph", "<= 1.5", ratio(plain, graph),
                           lambda x: x <= 1.5, "{:.2f}"))
    for kind in ("plain", "graph"):
        out.append(verdict(f"paged / contiguous ({kind})", "<= 1.10",
                           ratio(us(paged.get(kind)), us(ours.get(kind))), lambda x: x <= 1.10,
                           "{:.3f}"))
    need = 3.0 if big else 10.0
    out.append(verdict("released / ours (plain)", f">= {need:g}x",
                       ratio(us(res.get("released", {}).get("plain")), plain),
                       lambda x: x >= need))
    return out


def print_verdicts(results):
    log("")
    log("targets (reported, never failed):")
    for res in results["cases"]:
        for v in res.get("verdicts", []):
            mark = {True: "met", False: "MISSED", None: "n/a"}[v["met"]]
            log(f"  {res['case']:<8} {v['what']:<34} {v['need']:<8} {v['shown'] or '-':<8} "
                f"{mark}")


def table_rows(res):
    """One row per layout measured in a case."""
    dense = res.get("dense", {}).get("best_us")
    released = us(res.get("released", {}).get("plain"))
    split = res.get("stage_split", {})
    rows = []
    for layout in ("contiguous", "paged", "bf16_block_keys"):
        t = res.get(layout)
        if not isinstance(t, dict) or "plain" not in t:
            continue
        plain, graph = us(t.get("plain")), us(t.get("graph"))
        best = best_us(t.get("plain"), t.get("graph"))
        stage = "-"
        if layout == "contiguous" and "stage1_us" in split:
            stage = f"{split['stage1_us']:.1f}/{split['attention_us']:.1f}/{split['merge_us']:.1f}"
        rows.append([res["case"], f"{res['heads_q']}/{res['heads_kv']}", str(res["batch"]),
                     {"bf16_block_keys": "contig bk16"}.get(layout, layout),
                     f"{100 * res['sparsity']:.1f}%", fmt(plain, ".1f"), fmt(graph, ".1f"),
                     fmt(dense, ".1f"), fmt(released, ".1f"),
                     fmt(ratio(dense, best), ".2f", "x"), fmt(ratio(released, plain), ".2f", "x"),
                     fmt(100 * t["bw_share_of_copy"] if t.get("bw_share_of_copy") else None,
                         ".0f", "%"), stage])
    if not rows:
        rows.append([res["case"], f"{res['heads_q']}/{res['heads_kv']}", str(res["batch"]),
                     "ERROR"] + ["-"] * 9)
    return rows


def fmt(x, spec, suffix=""):
    return "-" if x is None else format(x, spec) + suffix


def print_table(results):
    head = ["case", "Hq/Hkv", "B", "layout", "sparsity", "ours plain us", "ours graph us",
            "best dense us", "released us", "x dense", "x released", "BW share",
            "stage1/attn/merge us"]
    body = [row for res in results["cases"] for row in table_rows(res)]
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h)
              for i, h in enumerate(head)]
    log("")
    log("x dense = best dense figure (any backend, form, plain or graph) / best of ours "
        "(plain, graph); x released = released / ours plain; BW share = bytes ours must read "
        "/ best ours time / copy bandwidth")
    log(" | ".join(h.ljust(w) for h, w in zip(head, widths)))
    for r in body:
        log(" | ".join(c.ljust(w) for c, w in zip(r, widths)))


def write_json(path, results, gb):
    with open(path, "w") as fh:
        json.dump(gb.clean_for_json(results), fh, indent=1)
    log(f"\nall figures: {path}")


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------


def run(S, results):
    """Every case; a case that fails is recorded and the others go on."""
    args = S.args
    results["environment"] = env = environment(S)
    log(f"dashattn {env['library_version']} ({S.lib.path}), backend {S.ctx.backend}: "
        f"{S.ctx.device}")
    if S.gpu:
        log(f"torch {env['torch']} (CUDA {env['torch_cuda']}, cuDNN {env['cudnn']}, triton "
            f"{env['triton']}) on {env['gpu']}, {env['sm_count']} SMs")
    else:
        log("smoke mode: host tensors and the cpu backend; no graphs, profiler, released "
            "decode, copy bandwidth or SDPA backend selection")
    copy_bw = None
    if S.gpu:
        results["copy_bandwidth"] = copy_bandwidth(S)
        copy_bw = results["copy_bandwidth"]["GBps"]
    released = None
    if args.release and S.gpu:
        released, err = load_released(args.release)
        results["released_import"] = err or "ok"
        if err:
            log(f"released package from {args.release}: import failed: {err}")
    elif args.release:
        results["released_import"] = "skipped in the smoke mode"
    for name in args.cases:
        try:
            res = run_case(S, name, CASES[name], released, copy_bw)
        except Exception as e:  # the case's own calls (calibration, cache, decode)
            if not isinstance(e, S.known_errors):
                log(traceback.format_exc().rstrip())
            log(f"  {name}: ERROR: {type(e).__name__}: {e}")
            spec = CASES[name]
            res = {"case": name, "heads_q": spec["heads"][0], "heads_kv": spec["heads"][1],
                   "batch": spec["batch"], "spec_batch": spec["batch"],
                   "errors": [f"{type(e).__name__}: {e}"]}
        S.free_memory()  # the case's tensors are gone once run_case has returned
        if "sparsity" in res:
            res["verdicts"] = case_verdicts(res)
        results["cases"].append(res)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        torch, da, gb, rc = import_modules()
    except ImportError as e:
        print(f"decode_bench: error: {e} (it needs torch and numpy)", file=sys.stderr)
        return 1
    default_backend_path(args.lib)
    results = {"args": vars(args), "cases": []}
    try:
        S = Session(args, torch, da, gb, rc)
    except (da.DashattnError, BenchError, FileNotFoundError) as e:
        print(f"decode_bench: error: {e}", file=sys.stderr)
        return 1
    try:
        run(S, results)
    finally:
        S.close()
    errors = [(res["case"], e) for res in results["cases"] for e in res.get("errors", [])]
    print_verdicts(results)
    if args.json:
        write_json(args.json, results, gb)
    if errors:
        log("")
        log("errors (exit status 1):")
        for case, e in errors:
            log(f"  {case}: {e}")
    print_table(results)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
