# SPDX-License-Identifier: MIT
"""dashattn for PyTorch: dash_attention (autograd, torch.compile) and KVCache.

CPU tensors run on the cpu backend, CUDA tensors on the cuda backend on the
tensor's device and its current stream. Tensors are handed to the library
with their strides, so BHSD and BSHD inputs are read in place.

Gradients do not flow through lse (it is returned non-differentiable).
"""

import ctypes
from typing import Optional, Tuple

import torch

from . import _capi as C
from . import _core

if not hasattr(torch, "library") or not hasattr(torch.library, "custom_op"):
    raise ImportError(f"dashattn.torch needs torch >= 2.4 (torch.library.custom_op); "
                      f"this is torch {torch.__version__}")

_DTYPES = {torch.float32: C.F32, torch.float16: C.F16, torch.bfloat16: C.BF16}
# cudaMalloc's alignment, which the cuda backend's vector loads assume.
WORKSPACE_ALIGN = 256


def _dtype(name, t):
    try:
        return _DTYPES[t.dtype]
    except KeyError:
        raise TypeError(f"{name} has dtype {t.dtype}; dashattn takes float32, float16, "
                        f"bfloat16") from None


def _backend_of(t):
    if t.device.type == "cpu":
        return "cpu", 0
    if t.device.type == "cuda":
        return "cuda", t.device.index if t.device.index is not None else torch.cuda.current_device()
    raise ValueError(f"dashattn runs CPU and CUDA tensors, not {t.device.type}")


def _stream(t):
    if t.device.type == "cuda":
        return ctypes.c_void_p(torch.cuda.current_stream(t.device).cuda_stream)
    return None


def _view(name, t, dtype=None):
    """A dashattn_tensor of a logical [B, H, N, D] tensor, its own strides."""
    if t.dim() != 4:
        raise ValueError(f"{name} must be 4-D, not of shape {tuple(t.shape)}")
    return _core.tensor(t.data_ptr(), _dtype(name, t) if dtype is None else dtype, t.shape,
                        t.stride())


def _bhsd(t, layout):
    """The [B, H, N, D] view of a tensor in layout (a transpose, not a copy)."""
    return t.transpose(1, 2) if layout == "bshd" else t


def _workspace(plan, op, like):
    size = plan.workspace_size(op)
    if size == 0:
        return None, None, 0
    ws = torch.empty(size + WORKSPACE_ALIGN, dtype=torch.uint8, device=like.device)
    ptr = ws.data_ptr()
    # Torch's caching allocator hands out 512-byte aligned blocks, but a
    # tensor may start inside one: the block is one alignment longer and the
    # pointer rounded up within it.
    off = (-ptr) % WORKSPACE_ALIGN
    return ws, ctypes.c_void_p(ptr + off), size


def _summary_view(bs, heads_kv, head_dim):
    if bs is None:
        return None, None
    h = bs.reshape(1, heads_kv, 1, head_dim).to(torch.float32)
    return _view("block_summary", h, C.F32), h


def _fields(causal, block_size, alpha, group_select, prior, n_sink, n_local, scale,
            stage1_scale, prior_sigma):
    return _core.problem_fields(causal=causal, block_size=block_size, alpha=alpha,
                                group_select=group_select, prior=prior, n_sink=n_sink,
                                n_local=n_local, scale=scale, stage1_scale=stage1_scale,
                                prior_sigma=prior_sigma)


@torch.library.custom_op("dashattn::forward", mutates_args=())
def _forward_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                block_summary: Optional[torch.Tensor], layout: str, causal: bool, block_size: int,
                alpha: float, group_select: str, prior: str, n_sink: int, n_local: int,
                scale: float, stage1_scale: float, prior_sigma: float,
                want_stats: bool) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    qv, kv, vv = _bhsd(q, layout), _bhsd(k, layout), _bhsd(v, layout)
    for name, t in (("k", k), ("v", v)):
        if t.device != q.device:
            raise ValueError(f"{name} is on {t.device}, q on {q.device}")
    backend, device = _backend_of(q)
    ctx = _core.context(backend, device)
    tq, tk, tv = _view("q", qv), _view("k", kv), _view("v", vv)
    b, hq, nq, d = qv.shape
    pref = _core.plan(ctx, tq.dtype, tuple(qv.shape), tuple(kv.shape),
                      _fields(causal, block_size, alpha, group_select, prior, n_sink, n_local,
                              scale, stage1_scale, prior_sigma))
    try:
        out = torch.empty_like(q, memory_format=torch.contiguous_format)
        lse = torch.empty((b, hq, nq), dtype=torch.float32, device=q.device)
        counts = torch.empty((b, hq, nq) if want_stats else (0,), dtype=torch.int32,
                             device=q.device)
        th, _h = _summary_view(block_summary, kv.shape[1], d)
        stats = C.ForwardStats() if want_stats else None
        sel = None
        if want_stats:
            sel = C.Selection(None, None, counts.data_ptr(), pref.plan.num_blocks)
        # ws and _h hold memory the call reads until they go out of scope; on
        # CUDA the caching allocator reuses it only for later work on this stream.
        ws, wptr, wsize = _workspace(pref.plan, C.OP_FORWARD, q)
        C.forward_on_stream(ctx, pref.plan, tq, tk, tv, _view("out", _bhsd(out, layout)),
                            lse=ctypes.c_void_p(lse.data_ptr()), selection=sel, stats=stats,
                            workspace=wptr, workspace_size=wsize, summary=th, stream=_stream(q))
    finally:
        pref.release()
    st = torch.tensor([stats.visible_pairs, stats.attended_pairs, stats.sparsity]
                      if want_stats else [], dtype=torch.float64, device=q.device)
    return out, lse, counts, st


@_forward_op.register_fake
def _forward_fake(q, k, v, block_summary, layout, causal, block_size, alpha, group_select,
                  prior, n_sink, n_local, scale, stage1_scale, prior_sigma, want_stats):
    qv = _bhsd(q, layout)
    b, hq, nq, _ = qv.shape
    out = torch.empty_like(q, memory_format=torch.contiguous_format)
    lse = q.new_empty((b, hq, nq), dtype=torch.float32)
    counts = q.new_empty((b, hq, nq) if want_stats else (0,), dtype=torch.int32)
    st = q.new_empty((3,) if want_stats else (0,), dtype=torch.float64)
    return out, lse, counts, st


@torch.library.custom_op("dashattn::backward", mutates_args=())
def _backward_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                 block_summary: Optional[torch.Tensor], out: torch.Tensor, lse: torch.Tensor,
                 dout: torch.Tensor, layout: str, causal: bool, block_size: int, alpha: float,
                 group_select: str, prior: str, n_sink: int, n_local: int, scale: float,
                 stage1_scale: float, prior_sigma: float
                 ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    backend, device = _backend_of(q)
    ctx = _core.context(backend, device)
    qv, kv, vv = _bhsd(q, layout), _bhsd(k, layout), _bhsd(v, layout)
    b, hq, nq, d = qv.shape
    pref = _core.plan(ctx, _dtype("q", q), tuple(qv.shape), tuple(kv.shape),
                      _fields(causal, block_size, alpha, group_select, prior, n_sink, n_local,
                              scale, stage1_scale, prior_sigma))
    try:
        dout = dout.to(q.dtype)
        lse = lse.contiguous()
        dq = torch.empty_like(q, memory_format=torch.contiguous_format)
        dk = torch.empty_like(k, memory_format=torch.contiguous_format)
        dv = torch.empty_like(v, memory_format=torch.contiguous_format)
        th, _h = _summary_view(block_summary, kv.shape[1], d)
        if block_summary is not None:
            dh = torch.empty((1, kv.shape[1], 1, d), dtype=torch.float32, device=q.device)
            tdh = _view("dh", dh, C.F32)
        else:
            dh = torch.empty((0,), dtype=torch.float32, device=q.device)
            tdh = None
        ws, wptr, wsize = _workspace(pref.plan, C.OP_BACKWARD, q)
        views = [_view(n, _bhsd(t, layout)) for n, t in
                 (("q", q), ("k", k), ("v", v), ("out", out), ("dout", dout), ("dq", dq),
                  ("dk", dk), ("dv", dv))]
        tq, tk, tv, tout, tdo, tdq, tdk, tdv = views
        r = ctypes.byref
        ctx.lib.check("dashattn_backward", ctx.handle, pref.plan.handle, r(tq), r(tk), r(tv),
                      C._ref(th), r(tout), ctypes.c_void_p(lse.data_ptr()), r(tdo), r(tdq),
                      r(tdk), r(tdv), C._ref(tdh), wptr, wsize, _stream(q))
    finally:
        pref.release()
    if block_summary is not None:
        dh = dh.reshape(block_summary.shape).to(block_summary.dtype)
    return dq, dk, dv, dh


@_backward_op.register_fake
def _backward_fake(q, k, v, block_summary, out, lse, dout, layout, causal, block_size, alpha,
                   group_select, prior, n_sink, n_local, scale, stage1_scale, prior_sigma):
    dh = (torch.empty_like(block_summary) if block_summary is not None
          else q.new_empty((0,), dtype=torch.float32))
    return (torch.empty_like(q, memory_format=torch.contiguous_format),
            torch.empty_like(k, memory_format=torch.contiguous_format),
            torch.empty_like(v, memory_format=torch.contiguous_format), dh)


_OPTION_NAMES = ("layout", "causal", "block_size", "alpha", "group_select", "prior", "n_sink",
                 "n_local", "scale", "stage1_scale", "prior_sigma")


def _setup_context(ctx, inputs, output):
    q, k, v, block_summary = inputs[:4]
    ctx.options = inputs[4:4 + len(_OPTION_NAMES)]
    out, lse, counts, st = output
    ctx.has_summary = block_summary is not None
    ctx.save_for_backward(q, k, v, block_summary, out, lse)
    ctx.mark_non_differentiable(lse, counts, st)


def _backward(ctx, dout, _dlse, _dcounts, _dst):
    q, k, v, block_summary, out, lse = ctx.saved_tensors
    dq, dk, dv, dh = _backward_op(q, k, v, block_summary, out, lse, dout, *ctx.options)
    return (dq, dk, dv, dh if ctx.has_summary else None) + (None,) * (len(_OPTION_NAMES) + 1)


torch.library.register_autograd("dashattn::forward", _backward, setup_context=_setup_context)


def dash_attention(q, k, v, *, causal=True, block_size=64, alpha=1.5, group_select="mean",
                   block_summary=None, prior="log", layout="bhsd", n_sink=0, n_local=1,
                   scale=None, stage1_scale=None, prior_sigma=1e6, return_stats=False):
    """DashAttention of q [B, Hq, Nq, D], k, v [B, Hkv, Nk, D] (layout "bhsd")
    or [B, N, H, D] (layout "bshd"); differentiable in q, k, v and
    block_summary ([Hkv, D] or [1, Hkv, 1, D], float32).

    Returns out in q's layout and dtype; with return_stats also a dict of
    lse [B, Hq, Nq], block_count [B, Hq, Nq] (blocks each row reads) and the
    call's visible_pairs, attended_pairs and sparsity (SPEC.md)."""
    if layout not in ("bhsd", "bshd"):
        raise ValueError(f"layout must be 'bhsd' or 'bshd', not {layout!r}")
    out, lse, counts, st = _forward_op(q, k, v, block_summary, layout, bool(causal),
                                       int(block_size), float(alpha), group_select, prior,
                                       int(n_sink), int(n_local), float(scale or 0.0),
                                       float(stage1_scale or 0.0), float(prior_sigma),
                                       bool(return_stats))
    if not return_stats:
        return out
    return out, {"lse": lse, "block_count": counts, "visible_pairs": int(st[0]),
                 "attended_pairs": int(st[1]), "sparsity": float(st[2])}


class DashAttention(torch.nn.Module):
    """dash_attention as a module, with an optional learned block summary h
    per KV head (the release's head_cls), initialised to 0: mean pooling."""

    def __init__(self, heads_kv, head_dim, learned_summary=True, **options):
        super().__init__()
        self.options = options
        self.block_summary = (torch.nn.Parameter(torch.zeros(heads_kv, head_dim))
                              if learned_summary else None)

    def forward(self, q, k, v):
        return dash_attention(q, k, v, block_summary=self.block_summary, **self.options)


class KVCache:
    """A KV cache for decode, in torch tensors on one device.

    k, v hold [B, Hkv, capacity, D] (contiguous) or pages [P, Hkv, S, D]
    (paged: each sequence owns capacity / S pages, block_table[b] lists
    them); block keys are kept in float32. append(k_new, v_new) adds
    [B, Hkv, T, D] tokens to every sequence; decode(q) attends one query
    token per sequence, q [B, Hq, 1, D], over everything appended so far.
    """

    def __init__(self, batch, heads_q, heads_kv, capacity, head_dim, *, dtype=torch.float32,
                 device="cpu", block_size=64, alpha=1.5, group_select="mean", prior="log",
                 n_sink=0, n_local=1, scale=None, stage1_scale=None, prior_sigma=1e6,
                 block_summary=None, paged=False):
        probe = torch.empty(0, dtype=dtype, device=device)
        # The probe's device carries the index ("cuda" becomes "cuda:0"),
        # which the device checks of append and decode compare against.
        self.device = probe.device
        self.dtype = dtype
        backend, index = _backend_of(probe)
        self._ctx = _core.context(backend, index)
        fields = _fields(True, block_size, alpha, group_select, prior, n_sink, n_local, scale,
                         stage1_scale, prior_sigma)
        self._pref = _core.plan(self._ctx, _dtype("cache", probe), (batch, heads_q, 1, head_dim),
                                (batch, heads_kv, capacity, head_dim), fields)
        self.batch, self.heads_q, self.heads_kv = batch, heads_q, heads_kv
        self.capacity, self.head_dim, self.block_size = capacity, head_dim, block_size
        s = block_size
        self.block_summary = block_summary
        cache = C.KVCache()
        if paged:
            per_seq = (capacity + s - 1) // s
            pages = batch * per_seq
            self.k = torch.zeros((pages, heads_kv, s, head_dim), dtype=dtype, device=self.device)
            self.v = torch.zeros_like(self.k)
            self.block_keys = torch.zeros((pages, heads_kv, 1, head_dim), dtype=torch.float32,
                                          device=self.device)
            self.block_table = torch.arange(pages, dtype=torch.int32,
                                            device=self.device).reshape(batch, per_seq)
            cache.layout = C.CACHE_PAGED
            cache.block_table = self.block_table.data_ptr()
            cache.table_stride = per_seq
        else:
            self.k = torch.zeros((batch, heads_kv, capacity, head_dim), dtype=dtype,
                                 device=self.device)
            self.v = torch.zeros_like(self.k)
            self.block_keys = torch.zeros((batch, heads_kv, capacity // s, head_dim),
                                          dtype=torch.float32, device=self.device)
            self.block_table = None
            cache.layout = C.CACHE_CONTIGUOUS
            cache.block_table = None
            cache.table_stride = 0
        self.seq_lens = torch.zeros((batch,), dtype=torch.int32, device=self.device)
        cache.k = _view("cache k", self.k)
        cache.v = _view("cache v", self.v)
        cache.block_keys = _view("cache block_keys", self.block_keys, C.F32)
        cache.seq_lens = self.seq_lens.data_ptr()
        self._cache = cache
        self._summary = (None if block_summary is None else
                         block_summary.detach().reshape(1, heads_kv, 1, head_dim)
                         .to(device=self.device, dtype=torch.float32).contiguous())

    def _check(self, name, t):
        if t.device != self.device or t.dtype != self.dtype:
            raise ValueError(f"{name} is {t.dtype} on {t.device}; the cache holds {self.dtype} "
                             f"on {self.device}")

    def append(self, k_new, v_new, layout="bhsd"):
        self._check("k_new", k_new)
        self._check("v_new", v_new)
        th = None if self._summary is None else _view("block_summary", self._summary, C.F32)
        with torch.no_grad():
            self._ctx.lib.check("dashattn_cache_append", self._ctx.handle, self._pref.plan.handle,
                                ctypes.byref(self._cache),
                                ctypes.byref(_view("k_new", _bhsd(k_new, layout))),
                                ctypes.byref(_view("v_new", _bhsd(v_new, layout))), C._ref(th),
                                _stream(k_new))

    def decode(self, q, layout="bhsd", return_lse=False):
        self._check("q", q)
        out = torch.empty_like(q, memory_format=torch.contiguous_format)
        lse = torch.empty((self.batch, self.heads_q), dtype=torch.float32, device=self.device)
        ws, wptr, wsize = _workspace(self._pref.plan, C.OP_DECODE, q)
        self._ctx.lib.check("dashattn_decode", self._ctx.handle, self._pref.plan.handle,
                            ctypes.byref(_view("q", _bhsd(q, layout))), ctypes.byref(self._cache),
                            ctypes.byref(_view("out", _bhsd(out, layout))),
                            ctypes.c_void_p(lse.data_ptr()), wptr, wsize, _stream(q))
        return (out, lse) if return_lse else out

    def synchronize(self):
        """Wait for the cache's queued work; reports a bad append the device found."""
        self._ctx.lib.check("dashattn_synchronize", self._ctx.handle,
                            _stream(self.k) if self.device.type == "cuda" else None)

    def __del__(self):
        pref = getattr(self, "_pref", None)
        if pref is not None:
            pref.release()
