# SPDX-License-Identifier: MIT
"""float64 numpy references of SPEC.md for the tests: dense attention, and
DashAttention's selection for the log prior with mean pooling."""

import numpy as np


def causal_visible(nq, nk):
    pos = np.arange(nq)[:, None] + (nk - nq)
    return np.arange(nk)[None, :] <= pos


def dense(q, k, v, causal=True, scale=None):
    """Softmax attention (GQA heads shared), returns out, lse in float64."""
    q, k, v = (np.asarray(a, dtype=np.float64) for a in (q, k, v))
    b, hq, nq, d = q.shape
    g = hq // k.shape[1]
    k = np.repeat(k, g, axis=1)
    v = np.repeat(v, g, axis=1)
    lam = 1 / np.sqrt(d) if scale is None else scale
    logits = lam * np.einsum("bhqd,bhkd->bhqk", q, k)
    if causal:
        logits = np.where(causal_visible(nq, k.shape[2]), logits, -np.inf)
    m = logits.max(axis=-1, keepdims=True)
    e = np.exp(logits - m)
    s = e.sum(axis=-1, keepdims=True)
    return np.einsum("bhqk,bhkd->bhqd", e / s, v), (m + np.log(s))[..., 0]


def entmax15(z):
    """Exact 1.5-entmax of a 1-D vector (the sort-based algorithm)."""
    x = np.asarray(z, dtype=np.float64) / 2
    xs = np.sort(x)[::-1]
    kk = np.arange(1, len(x) + 1)
    mean = np.cumsum(xs) / kk
    mean_sq = np.cumsum(xs ** 2) / kk
    delta = (1 - kk * (mean_sq - mean ** 2)) / kk
    tau = mean - np.sqrt(np.clip(delta, 0, None))
    support = np.nonzero(tau <= xs)[0].max() + 1
    return np.clip(x - tau[support - 1], 0, None) ** 2


def dash_causal(q, k, v, block_size, n_local=1, n_sink=0):
    """DashAttention, causal, alpha 1.5, log prior, mean pooling, Hq = Hkv
    (so every group mode is per head). Returns out, lse, weights [B,H,Nq,M]
    (0 for blocks not read)."""
    q, k, v = (np.asarray(a, dtype=np.float64) for a in (q, k, v))
    b, h, nq, d = q.shape
    nk = k.shape[2]
    s = block_size
    m = -(-nk // s)
    lam = 1 / np.sqrt(d)
    out = np.zeros_like(q)
    lse = np.zeros((b, h, nq))
    weights = np.zeros((b, h, nq, m))
    for bi in range(b):
        for hi in range(h):
            kbar = np.array([k[bi, hi, j * s:min((j + 1) * s, nk)].mean(axis=0)
                             for j in range(m)])
            for i in range(nq):
                pos = i + nk - nq
                c = pos // s
                forced = set(range(min(n_sink, c + 1))) | set(range(max(0, c - n_local + 1),
                                                                     c + 1))
                cand = [j for j in range(c) if j not in forced]
                w = np.zeros(m)
                for j in forced:
                    w[j] = 1.0
                if cand:
                    z = lam * kbar[cand] @ q[bi, hi, i]
                    w[cand] = entmax15(z)
                weights[bi, hi, i] = w
                t = np.arange(pos + 1)
                wt = w[t // s]
                keep = wt > 0
                t = t[keep]
                logits = lam * k[bi, hi, t] @ q[bi, hi, i] + np.log(wt[keep])
                mx = logits.max()
                e = np.exp(logits - mx)
                out[bi, hi, i] = e @ v[bi, hi, t] / e.sum()
                lse[bi, hi, i] = mx + np.log(e.sum())
    return out, lse, weights
