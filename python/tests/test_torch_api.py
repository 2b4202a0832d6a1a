# SPDX-License-Identifier: MIT
"""dashattn.torch: autograd, layouts, torch.compile, training, entmax, and
the CUDA backend where a GPU is present. Every test skips without torch."""

import os
import sys
import unittest

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference  # noqa: E402

try:
    import torch
except ImportError:
    torch = None
    why_no_torch = "torch is not installed"

if torch is not None:
    import dashattn  # noqa: E402
    try:
        import dashattn.torch as dt  # noqa: E402
    except ImportError as e:
        # An old torch (Debian 12 has 1.13) lacks torch.library.custom_op.
        why_no_torch = str(e)
        torch = None

try:
    import entmax
except ImportError:
    entmax = None

needs_torch = unittest.skipIf(torch is None, why_no_torch if torch is None else "")
needs_cuda = unittest.skipIf(torch is None or not torch.cuda.is_available(),
                             "no CUDA device for torch")


def rand(gen, *shape, dtype=None, device="cpu"):
    return torch.randn(*shape, generator=gen, dtype=dtype or torch.float32).to(device)


@needs_torch
class Forward(unittest.TestCase):
    def test_all_blocks_forced_is_dense(self):
        g = torch.Generator().manual_seed(1)
        q, k, v = rand(g, 2, 4, 40, 16), rand(g, 2, 2, 70, 16), rand(g, 2, 2, 70, 16)
        out = dt.dash_attention(q, k, v, block_size=16, n_local=5)
        ref, _ = reference.dense(q.numpy(), k.numpy(), v.numpy())
        np.testing.assert_allclose(out.numpy(), ref, rtol=1e-5, atol=1e-5)

    def test_bshd_equals_bhsd_without_copies(self):
        g = torch.Generator().manual_seed(2)
        q, k, v = (rand(g, 1, 32, 2, 8).requires_grad_() for _ in range(3))
        out_s = dt.dash_attention(q, k, v, block_size=8, layout="bshd")
        self.assertEqual(out_s.shape, q.shape)
        qh, kh, vh = (t.detach().transpose(1, 2).contiguous().requires_grad_() for t in (q, k, v))
        out_h = dt.dash_attention(qh, kh, vh, block_size=8, layout="bhsd")
        torch.testing.assert_close(out_s.transpose(1, 2), out_h, rtol=0, atol=0)
        w = torch.randn(out_h.shape, generator=g)
        (out_s * w.transpose(1, 2)).sum().backward()
        (out_h * w).sum().backward()
        for a, b in ((q, qh), (k, kh), (v, vh)):
            torch.testing.assert_close(a.grad.transpose(1, 2), b.grad, rtol=1e-6, atol=1e-6)

    def test_half_precisions_close_to_f32(self):
        g = torch.Generator().manual_seed(3)
        q, k, v = rand(g, 1, 2, 64, 16), rand(g, 1, 2, 64, 16), rand(g, 1, 2, 64, 16)
        for dtype in (torch.float16, torch.bfloat16):
            lo = [t.to(dtype) for t in (q, k, v)]
            want = dt.dash_attention(*(t.float() for t in lo), block_size=16, n_local=4)
            got = dt.dash_attention(*lo, block_size=16, n_local=4)
            self.assertEqual(got.dtype, dtype)
            rel = (got.float() - want).norm() / want.norm()
            self.assertLess(rel.item(), 1e-2, str(dtype))

    def test_stats(self):
        g = torch.Generator().manual_seed(4)
        q, k, v = rand(g, 1, 2, 64, 8) * 3, rand(g, 1, 2, 64, 8) * 3, rand(g, 1, 2, 64, 8)
        out, st = dt.dash_attention(q, k, v, block_size=8, return_stats=True)
        _, _, np_stats = dashattn.attention(q.numpy(), k.numpy(), v.numpy(), block_size=8,
                                            return_stats=True)
        self.assertEqual(st["visible_pairs"], np_stats["visible_pairs"])
        self.assertEqual(st["attended_pairs"], np_stats["attended_pairs"])
        self.assertGreater(st["sparsity"], 0.0)
        self.assertEqual(tuple(st["block_count"].shape), (1, 2, 64))
        self.assertTrue(bool((st["block_count"] >= 1).all()))

    def test_bad_dtype_and_shape(self):
        q = torch.zeros(1, 2, 16, 8)
        with self.assertRaises(TypeError):
            dt.dash_attention(q.double(), q.double(), q.double())
        with self.assertRaises(dashattn.DashattnError) as cm:
            dt.dash_attention(q, q, torch.zeros(1, 2, 24, 8), block_size=8)
        self.assertIn("v has shape", cm.exception.message)


def _directional_check(test, fn, inputs, seed):
    """Autograd's gradient along a random direction against a central difference."""
    g = torch.Generator().manual_seed(seed)
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    fn(*leaves).backward()
    for i, leaf in enumerate(leaves):
        u = torch.randn(leaf.shape, generator=g)
        eps = 1e-2
        with torch.no_grad():
            plus = [t.detach().clone() for t in inputs]
            minus = [t.detach().clone() for t in inputs]
            plus[i] += eps * u
            minus[i] -= eps * u
            fd = (fn(*plus).double() - fn(*minus).double()) / (2 * eps)
        analytic = (leaf.grad.double() * u.double()).sum()
        test.assertLess(abs(fd - analytic).item(), 3e-2 * max(1.0, abs(analytic).item()),
                        f"input {i}: finite difference {fd.item()}, autograd {analytic.item()}")


@needs_torch
class Gradients(unittest.TestCase):
    def test_finite_differences_through_the_selection(self):
        g = torch.Generator().manual_seed(5)
        q, k, v = rand(g, 1, 4, 32, 8), rand(g, 1, 2, 32, 8), rand(g, 1, 2, 32, 8)
        h = rand(g, 2, 8) * 0.5
        w = rand(g, 1, 4, 32, 8)

        def loss(q_, k_, v_, h_):
            return (dt.dash_attention(q_, k_, v_, block_size=4, block_summary=h_) * w).sum()

        _directional_check(self, loss, [q, k, v, h], seed=6)

    def test_dense_gradients_match_float64_autograd(self):
        g = torch.Generator().manual_seed(7)
        q, k, v = (rand(g, 1, 2, 24, 8).requires_grad_() for _ in range(3))
        w = rand(g, 1, 2, 24, 8)
        (dt.dash_attention(q, k, v, block_size=8, n_local=3) * w).sum().backward()
        q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
        mask = torch.ones(24, 24, dtype=torch.bool).tril()
        ref = torch.nn.functional.scaled_dot_product_attention(q64, k64, v64, attn_mask=mask)
        (ref * w.double()).sum().backward()
        for a, b in ((q, q64), (k, k64), (v, v64)):
            torch.testing.assert_close(a.grad.double(), b.grad, rtol=1e-4, atol=1e-5)


class _TwoLayer(torch.nn.Module if torch is not None else object):
    def __init__(self, vocab=16, width=32, heads=4, heads_kv=2):
        super().__init__()
        self.heads, self.heads_kv, self.hd = heads, heads_kv, width // heads
        self.emb = torch.nn.Embedding(vocab, width)
        self.layers = torch.nn.ModuleList()
        for _ in range(2):
            self.layers.append(torch.nn.ModuleDict({
                "norm": torch.nn.LayerNorm(width),
                "qkv": torch.nn.Linear(width, (heads + 2 * heads_kv) * self.hd),
                "proj": torch.nn.Linear(width, width),
                "attn": dt.DashAttention(heads_kv, self.hd, block_size=8),
            }))
        self.head = torch.nn.Linear(width, vocab)

    def forward(self, tokens):
        x = self.emb(tokens)
        b, n, _ = x.shape
        for layer in self.layers:
            qkv = layer["qkv"](layer["norm"](x)).view(b, n, self.heads + 2 * self.heads_kv,
                                                       self.hd)
            q, k, v = qkv.split([self.heads, self.heads_kv, self.heads_kv], dim=2)
            # [B, N, H, D] slices of one projection: BSHD views, strided.
            a = dt.dash_attention(
                q, k, v, block_size=8, layout="bshd",
                block_summary=layer["attn"].block_summary)
            x = x + layer["proj"](a.reshape(b, n, -1))
        return self.head(x)


@needs_torch
class Training(unittest.TestCase):
    def test_two_layer_model_loss_goes_down(self):
        torch.manual_seed(0)
        model = _TwoLayer()
        # A task attention solves: predict the token 17 positions back.
        tokens = torch.randint(0, 16, (4, 64))
        target = torch.roll(tokens, 17, dims=1)
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        losses = []
        for _ in range(30):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(tokens).flatten(0, 1),
                                                     target.flatten())
            loss.backward()
            opt.step()
            losses.append(loss.item())
        self.assertTrue(all(np.isfinite(losses)))
        self.assertLess(np.mean(losses[-5:]), np.mean(losses[:5]) * 0.9, str(losses))
        for layer in model.layers:
            self.assertIsNotNone(layer["attn"].block_summary.grad)


@needs_torch
class Compile(unittest.TestCase):
    def test_compiled_module_keeps_the_op(self):
        try:
            import torch._dynamo
            supported = torch._dynamo.is_dynamo_supported()
        except (ImportError, AttributeError, RuntimeError):
            supported = False
        if not hasattr(torch, "compile") or not supported:
            self.skipTest("torch.compile unavailable")

        class Tiny(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.lin = torch.nn.Linear(8, 8)

            def forward(self, q, k, v):
                return dt.dash_attention(self.lin(q), k, v, block_size=8).sum()

        g = torch.Generator().manual_seed(8)
        q, k, v = rand(g, 1, 2, 32, 8), rand(g, 1, 2, 32, 8), rand(g, 1, 2, 32, 8)
        mod = Tiny()
        want = mod(q, k, v)
        want.backward()
        want_grad = mod.lin.weight.grad.clone()
        mod.zero_grad()
        # aot_eager traces through the fake kernel and the registered autograd
        # without needing a C compiler; fullgraph makes a graph break an error.
        compiled = torch.compile(mod, backend="aot_eager", fullgraph=True)
        got = compiled(q, k, v)
        got.backward()
        torch.testing.assert_close(got, want)
        torch.testing.assert_close(mod.lin.weight.grad, want_grad)

    def test_opcheck(self):
        if not hasattr(torch.library, "opcheck"):
            self.skipTest("torch.library.opcheck unavailable")
        g = torch.Generator().manual_seed(9)
        q, k, v = (rand(g, 1, 2, 16, 8).requires_grad_() for _ in range(3))
        args = (q, k, v, None, "bhsd", True, 8, 1.5, "mean", "log", 0, 1, 0.0, 0.0, 1e6, False)
        torch.library.opcheck(torch.ops.dashattn.forward.default, args)


@needs_torch
@unittest.skipIf(entmax is None, "the entmax package is not installed")
class Entmax(unittest.TestCase):
    def _check(self, alpha, fn):
        rng = np.random.default_rng(10)
        s, n, d = 8, 64, 8
        q = (rng.standard_normal((1, 2, n, d)) * 2).astype(np.float32)
        k = (rng.standard_normal((1, 2, n, d)) * 2).astype(np.float32)
        _, _, sel = dashattn.attention(q, k, k, block_size=s, alpha=alpha, n_sink=0, n_local=1,
                                       group_select="per_head", return_selection=True)
        kbar = k.astype(np.float64).reshape(1, 2, n // s, s, d).mean(axis=3)
        lam = 1 / np.sqrt(d)
        checked = 0
        for h in range(2):
            for i in range(n):
                c = i // s
                if c < 2:
                    continue  # fewer than two candidates: nothing to compare
                z = torch.tensor(lam * kbar[0, h, :c] @ q[0, h, i].astype(np.float64))
                p = fn(z, dim=-1).numpy()
                got = np.zeros(c)
                cnt = sel["block_count"][0, h, i]
                for idx, wt in zip(sel["block_index"][0, h, i, :cnt],
                                   sel["block_weight"][0, h, i, :cnt]):
                    if idx < c:  # candidates; the own block is forced, weight 1
                        got[idx] = wt
                np.testing.assert_allclose(got, p, atol=2e-5, err_msg=f"head {h} row {i}")
                checked += 1
        self.assertGreater(checked, 0)

    def test_entmax15(self):
        self._check(1.5, entmax.entmax15)

    def test_sparsemax(self):
        self._check(2.0, entmax.sparsemax)


def _cpu_cache_check(test, paged, device="cpu", dtype=None, tol=1e-5):
    dtype = dtype or torch.float32
    g = torch.Generator().manual_seed(11)
    b, hq, hkv, n, d, s = 2, 4, 2, 40, 16, 8
    q = rand(g, b, hq, n, d, dtype=dtype, device=device)
    k = rand(g, b, hkv, n, d, dtype=dtype, device=device)
    v = rand(g, b, hkv, n, d, dtype=dtype, device=device)
    h = rand(g, hkv, d, device=device) * 0.5
    cache = dt.KVCache(b, hq, hkv, 64, d, dtype=dtype, device=device, block_size=s,
                       block_summary=h, paged=paged)
    # Prefill in two appends, then decode the last token.
    cache.append(k[:, :, :27], v[:, :, :27])
    cache.append(k[:, :, 27:], v[:, :, 27:])
    out = cache.decode(q[:, :, -1:])
    cache.synchronize()
    full = dt.dash_attention(q, k, v, block_size=s, block_summary=h)
    torch.testing.assert_close(out.float(), full[:, :, -1:].float(), rtol=tol, atol=tol)
    test.assertEqual(cache.seq_lens.tolist(), [n, n])


@needs_torch
class Cache(unittest.TestCase):
    def test_contiguous_decode_is_prefill_last_row(self):
        _cpu_cache_check(self, paged=False)

    def test_paged_decode_is_prefill_last_row(self):
        _cpu_cache_check(self, paged=True)

    def test_full_cache_raises(self):
        cache = dt.KVCache(1, 1, 1, 16, 8, block_size=8)
        kv = torch.zeros(1, 1, 17, 8)
        with self.assertRaises(dashattn.DashattnError) as cm:
            cache.append(kv, kv)
        self.assertEqual(cm.exception.status, 9)  # DASHATTN_ERR_CACHE_FULL


@needs_cuda
class Cuda(unittest.TestCase):
    def test_forward_matches_cpu_backend(self):
        g = torch.Generator().manual_seed(12)
        q, k, v = rand(g, 2, 8, 256, 64), rand(g, 2, 2, 256, 64), rand(g, 2, 2, 256, 64)
        h = rand(g, 2, 64) * 0.1
        want = dt.dash_attention(q, k, v, block_summary=h)
        got = dt.dash_attention(q.cuda(), k.cuda(), v.cuda(), block_summary=h.cuda())
        torch.testing.assert_close(got.cpu(), want, rtol=1e-4, atol=1e-4)
        for dtype in (torch.float16, torch.bfloat16):
            lo = dt.dash_attention(*(t.cuda().to(dtype) for t in (q, k, v)), block_summary=h.cuda())
            rel = (lo.float().cpu() - want).norm() / want.norm()
            self.assertLess(rel.item(), 2e-2, str(dtype))

    def test_bshd_on_a_side_stream(self):
        g = torch.Generator().manual_seed(13)
        q, k, v = (rand(g, 1, 128, 4, 64) for _ in range(3))
        want = dt.dash_attention(q, k, v, layout="bshd")
        stream = torch.cuda.Stream()
        with torch.cuda.stream(stream):
            got = dt.dash_attention(q.cuda(), k.cuda(), v.cuda(), layout="bshd")
        stream.synchronize()
        torch.testing.assert_close(got.cpu(), want, rtol=1e-4, atol=1e-4)

    def test_backward_matches_cpu_backend(self):
        g = torch.Generator().manual_seed(14)
        q, k, v = rand(g, 1, 8, 192, 64), rand(g, 1, 2, 192, 64), rand(g, 1, 2, 192, 64)
        h = rand(g, 2, 64) * 0.1
        dout = rand(g, 1, 8, 192, 64)
        grads = []
        for device in ("cpu", "cuda"):
            leaves = [t.to(device).requires_grad_(True) for t in (q, k, v, h)]
            out = dt.dash_attention(*leaves[:3], block_summary=leaves[3])
            out.backward(dout.to(device))
            grads.append([t.grad.cpu() for t in leaves])
        for name, want, got in zip(("dq", "dk", "dv", "dh"), *grads):
            rel = (got - want).norm() / want.norm()
            self.assertLess(rel.item(), 1e-4, name)

    def test_cache_decode_is_forward_last_row(self):
        _cpu_cache_check(self, paged=False, device="cuda", tol=1e-4)
        _cpu_cache_check(self, paged=True, device="cuda", tol=1e-4)


if __name__ == "__main__":
    unittest.main()
