# SPDX-License-Identifier: MIT
"""dashattn on numpy arrays in host memory (the CPU backend)."""

import ctypes

import numpy as np

from . import _capi as C
from . import _core

# bf16 has no numpy dtype; its bits travel as uint16, as dashattn_convert and
# the CLI's .npy files keep them.
_DTYPES = {np.dtype(np.float32): C.F32, np.dtype(np.float16): C.F16, np.dtype(np.uint16): C.BF16}
_NP_OF = {C.F32: np.float32, C.F16: np.float16, C.BF16: np.uint16}


def _dtype_of(name, a):
    try:
        return _DTYPES[a.dtype]
    except KeyError:
        raise TypeError(f"{name} has dtype {a.dtype}; dashattn takes float32, float16, or "
                        f"bfloat16 bits as uint16") from None


def _view(name, a, dtype=None):
    """A dashattn_tensor over a numpy array's own memory, strides included."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, not {type(a).__name__}")
    if a.ndim != 4:
        raise ValueError(f"{name} must be 4-D [B, H, N, D], not of shape {a.shape}")
    dt = _dtype_of(name, a) if dtype is None else dtype
    item = a.dtype.itemsize
    if any(s < 0 or s % item for s in a.strides):
        # Negative or unaligned strides have no element-stride form.
        a = np.ascontiguousarray(a)
    return _core.tensor(a.ctypes.data, dt, a.shape, [s // item for s in a.strides]), a


def _summary(block_summary):
    if block_summary is None:
        return None, None
    h = np.ascontiguousarray(block_summary, dtype=np.float32)
    # [Hkv, D], the release's head_cls, is accepted as well as the C shape.
    if h.ndim == 2:
        h = h.reshape(1, h.shape[0], 1, h.shape[1])
    t, h = _view("block_summary", h, C.F32)
    return t, h


def _prepare(q, k, v, backend, device, options):
    if backend != "cpu":
        raise ValueError(f"the numpy API runs on the cpu backend (host memory), not {backend!r}; "
                         "dashattn.torch takes GPU tensors")
    tq, q = _view("q", q)
    tk, k = _view("k", k)
    tv, v = _view("v", v)
    ctx = _core.context(backend, device)
    fields = _core.problem_fields(**options)
    plan = _core.plan(ctx, tq.dtype, q.shape, k.shape, fields)
    return ctx, plan, (tq, q), (tk, k), (tv, v)


def attention(q, k, v, *, causal=True, block_size=64, alpha=1.5, group_select="mean", prior="log",
              n_sink=0, n_local=1, block_summary=None, backend="cpu", device=0, return_stats=False,
              return_selection=False, **options):
    """DashAttention forward on numpy arrays q [B, Hq, Nq, D], k, v [B, Hkv, Nk, D].

    Any strides (BHSD, or BSHD through a transpose) are read in place. Returns
    out [B, Hq, Nq, D] (q's dtype), then lse [B, Hq, Nq] float32, then with
    return_stats a dict (visible_pairs, attended_pairs, sparsity), then with
    return_selection a dict of block_index, block_weight [B, Hq, Nq, M] and
    block_count [B, Hq, Nq]. Other keywords (scale, stage1_scale, prior_sigma,
    selection, topk, threshold_schedule, halley_steps) are dashattn_problem's.
    """
    options.update(causal=causal, block_size=block_size, alpha=alpha, group_select=group_select,
                   prior=prior, n_sink=n_sink, n_local=n_local)
    ctx, pref, (tq, q), (tk, k), (tv, v) = _prepare(q, k, v, backend, device, options)
    try:
        b, hq, nq, d = q.shape
        out = np.empty(q.shape, dtype=_NP_OF[tq.dtype])
        tout = _core.tensor(out.ctypes.data, tq.dtype, out.shape,
                            [s // out.itemsize for s in out.strides])
        lse = np.empty((b, hq, nq), dtype=np.float32)
        th, h = _summary(block_summary)
        stats = C.ForwardStats()
        sel = None
        if return_selection:
            m = pref.plan.num_blocks
            index = np.empty((b, hq, nq, m), dtype=np.int32)
            weight = np.empty((b, hq, nq, m), dtype=np.float32)
            count = np.empty((b, hq, nq), dtype=np.int32)
            sel = C.Selection(index.ctypes.data, weight.ctypes.data, count.ctypes.data, m)
        C.forward(ctx, pref.plan, tq, tk, tv, tout, lse=lse.ctypes.data_as(ctypes.c_void_p),
                  selection=sel, stats=stats, summary=th)
    finally:
        pref.release()
    result = [out, lse]
    if return_stats:
        result.append({"visible_pairs": stats.visible_pairs,
                       "attended_pairs": stats.attended_pairs, "sparsity": stats.sparsity})
    if return_selection:
        result.append({"block_index": index, "block_weight": weight, "block_count": count})
    return tuple(result)


def attention_backward(q, k, v, dout, *, out=None, lse=None, causal=True, block_size=64,
                       alpha=1.5, group_select="mean", prior="log", n_sink=0, n_local=1,
                       block_summary=None, backend="cpu", device=0, **options):
    """Gradients of attention(): returns dq, dk, dv (q's dtype, BHSD), and dh
    (float32, block_summary's shape) when a block_summary is given. out and
    lse are the forward's; without them the forward runs here first."""
    kw = dict(causal=causal, block_size=block_size, alpha=alpha, group_select=group_select,
              prior=prior, n_sink=n_sink, n_local=n_local)
    if out is None or lse is None:
        out, lse = attention(q, k, v, block_summary=block_summary, backend=backend,
                             device=device, **kw, **options)
    options.update(kw)
    ctx, pref, (tq, q), (tk, k), (tv, v) = _prepare(q, k, v, backend, device, options)
    try:
        tout, out = _view("out", out)
        tdo, dout = _view("dout", dout)
        lse = np.ascontiguousarray(lse, dtype=np.float32)
        if lse.shape != q.shape[:3]:
            raise ValueError(f"lse must have shape {q.shape[:3]}, not {lse.shape}")
        grads = []
        for a in (q, k, v):
            g = np.empty(a.shape, dtype=_NP_OF[tq.dtype])
            grads.append((g, _core.tensor(g.ctypes.data, tq.dtype, g.shape,
                                          [s // g.itemsize for s in g.strides])))
        th, h = _summary(block_summary)
        dh = tdh = None
        if th is not None:
            dh = np.empty(h.shape, dtype=np.float32)
            tdh = _core.tensor(dh.ctypes.data, C.F32, dh.shape, [s // 4 for s in dh.strides])
        ctx.lib.check("dashattn_backward", ctx.handle, pref.plan.handle, ctypes.byref(tq),
                      ctypes.byref(tk), ctypes.byref(tv), C._ref(th), ctypes.byref(tout),
                      lse.ctypes.data_as(ctypes.c_void_p), ctypes.byref(tdo),
                      ctypes.byref(grads[0][1]), ctypes.byref(grads[1][1]),
                      ctypes.byref(grads[2][1]), C._ref(tdh), None, 0, None)
    finally:
        pref.release()
    result = tuple(g for g, _ in grads)
    if dh is not None:
        dh = dh.reshape(np.shape(block_summary))
        result += (dh,)
    return result
