# SPDX-License-Identifier: MIT
"""What the numpy and torch front ends share: the library, cached contexts and
plans, and the translation of keyword options into a dashattn_problem."""

import threading

from . import _capi as C
from ._find import load_library

_lock = threading.Lock()
_lib = None
_contexts = {}
_plans = {}
# Plans are never destroyed while the process runs (a thread may be inside a
# call with one), so the cache stops growing here and further shapes get a
# plan of their own per call.
MAX_CACHED_PLANS = 256

GROUP_MODES = {"per_head": C.GROUP_PER_HEAD, "shared": C.GROUP_SHARED, "mean": C.GROUP_MEAN}
PRIORS = {"log": C.PRIOR_LOG, "flat": C.PRIOR_FLAT}
SELECTIONS = {"entmax": C.SELECT_ENTMAX, "topk": C.SELECT_TOPK}
SCHEDULES = {"exact": C.SCHEDULE_EXACT, "halley": C.SCHEDULE_HALLEY}


def library():
    global _lib
    with _lock:
        if _lib is None:
            _lib = load_library()
        return _lib


def context(backend="cpu", device=0):
    """The process's one context for (backend, device), created once."""
    lib = library()
    key = (backend, int(device))
    with _lock:
        ctx = _contexts.get(key)
        if ctx is None:
            ctx = C.Context(lib, backend, device=int(device))
            _contexts[key] = ctx
        return ctx


def _choice(table, value, what):
    try:
        return table[value]
    except KeyError:
        raise ValueError(f"{what} must be one of {sorted(table)}, not {value!r}") from None


def problem_fields(causal=True, block_size=64, alpha=1.5, group_select="mean", prior="log",
                   prior_sigma=1e6, n_sink=0, n_local=1, scale=0.0, stage1_scale=0.0,
                   selection="entmax", topk=0, threshold_schedule="exact", halley_steps=3):
    """The dashattn_problem fields the keyword options set (shape excluded)."""
    return dict(
        causal=1 if causal else 0,
        block_size=int(block_size),
        n_sink=int(n_sink),
        n_local=int(n_local),
        alpha=float(alpha),
        selection=_choice(SELECTIONS, selection, "selection"),
        topk=int(topk),
        group_mode=_choice(GROUP_MODES, group_select, "group_select"),
        scale=float(scale or 0.0),
        stage1_scale=float(stage1_scale or 0.0),
        prior=_choice(PRIORS, prior, "prior"),
        prior_sigma=float(prior_sigma),
        threshold_schedule=_choice(SCHEDULES, threshold_schedule, "threshold_schedule"),
        halley_steps=int(halley_steps),
    )


class PlanRef:
    """A plan for one call; release() destroys it unless the cache holds it."""

    def __init__(self, plan, cached):
        self.plan = plan
        self.cached = cached

    def release(self):
        if not self.cached:
            with _lock:
                self.plan.destroy()


def plan(ctx, dtype, shape_q, shape_k, fields):
    b, hq, nq, d = shape_q
    _, hkv, nk, _ = shape_k
    key = (id(ctx), dtype, b, hq, hkv, nq, nk, d, tuple(sorted(fields.items())))
    with _lock:
        p = _plans.get(key)
        if p is not None:
            return PlanRef(p, True)
    prob = ctx.lib.problem(b, hq, hkv, nq, nk, d, dtype=dtype, **fields)
    with _lock:
        p = _plans.get(key)
        if p is not None:
            return PlanRef(p, True)
        p = C.Plan(ctx, prob)
        if len(_plans) < MAX_CACHED_PLANS:
            _plans[key] = p
            return PlanRef(p, True)
        return PlanRef(p, False)


def tensor(data_ptr, dtype, shape, strides):
    t = C.Tensor()
    t.data = data_ptr
    t.dtype = dtype
    t.shape[:] = [int(x) for x in shape]
    t.strides[:] = [int(x) for x in strides]
    return t
