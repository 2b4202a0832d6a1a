# SPDX-License-Identifier: MIT
"""dashattn's numpy API on the CPU backend against float64 numpy references."""

import os
import sys
import threading
import unittest

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dashattn  # noqa: E402
import reference  # noqa: E402


def rand(rng, *shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


class Forward(unittest.TestCase):
    def test_all_blocks_forced_is_dense_attention(self):
        rng = np.random.default_rng(1)
        # GQA (4 query heads on 2 KV heads), chunked prefill (Nq < Nk), a
        # partial last block.
        q = rand(rng, 2, 4, 40, 16)
        k, v = rand(rng, 2, 2, 70, 16), rand(rng, 2, 2, 70, 16)
        out, lse, stats = dashattn.attention(q, k, v, block_size=16, n_local=5,
                                             return_stats=True)
        ref, ref_lse = reference.dense(q, k, v)
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(lse, ref_lse, rtol=1e-5, atol=1e-5)
        self.assertEqual(stats["sparsity"], 0.0)
        self.assertEqual(stats["visible_pairs"], stats["attended_pairs"])

    def test_non_causal_forced_is_dense(self):
        rng = np.random.default_rng(2)
        q, k, v = rand(rng, 1, 2, 24, 8), rand(rng, 1, 2, 32, 8), rand(rng, 1, 2, 32, 8)
        # Non-causal rows force only the sinks: n_sink covering every block.
        out, _ = dashattn.attention(q, k, v, causal=False, block_size=8, n_sink=4)
        np.testing.assert_allclose(out, reference.dense(q, k, v, causal=False)[0], rtol=1e-5,
                                   atol=1e-5)

    def test_sparse_selection_matches_reference(self):
        rng = np.random.default_rng(3)
        # Keys with a strong shared direction make stage-1 scores spread out,
        # so entmax drops blocks and the test sees a sparse selection.
        q = rand(rng, 1, 2, 64, 8) * 3
        k, v = rand(rng, 1, 2, 64, 8) * 3, rand(rng, 1, 2, 64, 8)
        out, lse, stats, sel = dashattn.attention(q, k, v, block_size=8, group_select="per_head",
                                                  return_stats=True, return_selection=True)
        ref, ref_lse, ref_w = reference.dash_causal(q, k, v, 8)
        self.assertGreater(stats["sparsity"], 0.05)
        np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(lse, ref_lse, rtol=1e-4, atol=1e-4)
        weight = np.zeros_like(ref_w)
        m = ref_w.shape[-1]
        idx = sel["block_index"]
        for pos in np.ndindex(idx.shape[:3]):
            n = sel["block_count"][pos]
            self.assertTrue(np.all(idx[pos][n:] == -1))
            weight[pos][idx[pos][:n]] = sel["block_weight"][pos][:n]
        self.assertEqual(weight.shape[-1], m)
        np.testing.assert_allclose(weight, ref_w, atol=1e-5)

    def test_bshd_view_equals_bhsd(self):
        rng = np.random.default_rng(4)
        q, k, v = rand(rng, 1, 2, 32, 8), rand(rng, 1, 2, 32, 8), rand(rng, 1, 2, 32, 8)
        out, lse = dashattn.attention(q, k, v, block_size=8)
        # The same tensors stored [B, N, H, D], handed over as transposed views.
        qs, ks, vs = (np.ascontiguousarray(a.transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3)
                      for a in (q, k, v))
        self.assertFalse(qs.flags["C_CONTIGUOUS"])
        out2, lse2 = dashattn.attention(qs, ks, vs, block_size=8)
        np.testing.assert_array_equal(out, out2)
        np.testing.assert_array_equal(lse, lse2)

    def test_f16_close_to_f32(self):
        rng = np.random.default_rng(5)
        q, k, v = rand(rng, 1, 2, 32, 16), rand(rng, 1, 2, 32, 16), rand(rng, 1, 2, 32, 16)
        q, k, v = (a.astype(np.float16).astype(np.float32) for a in (q, k, v))
        out32, _ = dashattn.attention(q, k, v, block_size=8, n_local=4)
        out16, _ = dashattn.attention(*(a.astype(np.float16) for a in (q, k, v)), block_size=8,
                                      n_local=4)
        self.assertEqual(out16.dtype, np.float16)
        rel = np.linalg.norm(out16.astype(np.float32) - out32) / np.linalg.norm(out32)
        self.assertLess(rel, 1e-2)

    def test_threads_share_one_context(self):
        rng = np.random.default_rng(6)
        q, k, v = rand(rng, 1, 2, 32, 8), rand(rng, 1, 2, 32, 8), rand(rng, 1, 2, 32, 8)
        want, _ = dashattn.attention(q, k, v, block_size=8)
        got = [None] * 8

        def work(i):
            got[i] = dashattn.attention(q, k, v, block_size=8, alpha=1.5)[0]

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for g in got:
            np.testing.assert_array_equal(g, want)
        self.assertIs(dashattn.context("cpu"), dashattn.context("cpu"))


class Backward(unittest.TestCase):
    def test_dense_gradients_against_finite_differences(self):
        rng = np.random.default_rng(7)
        q, k, v = rand(rng, 1, 2, 12, 4), rand(rng, 1, 1, 12, 4), rand(rng, 1, 1, 12, 4)
        w = rand(rng, 1, 2, 12, 4)
        dq, dk, dv = dashattn.attention_backward(q, k, v, w, block_size=4, n_local=3)

        def loss(q_, k_, v_):
            return float((reference.dense(q_, k_, v_)[0] * w).sum())

        eps = 1e-6
        args = [a.astype(np.float64) for a in (q, k, v)]
        for which, grad in enumerate((dq, dk, dv)):
            fd = np.zeros(grad.shape)
            for idx in np.ndindex(grad.shape):
                plus = [a.copy() for a in args]
                minus = [a.copy() for a in args]
                plus[which][idx] += eps
                minus[which][idx] -= eps
                fd[idx] = (loss(*plus) - loss(*minus)) / (2 * eps)
            np.testing.assert_allclose(grad, fd, rtol=1e-4, atol=1e-5,
                                       err_msg=f"gradient {'qkv'[which]}")

    def test_broadcast_dout_is_read_in_place(self):
        rng = np.random.default_rng(12)
        q, k, v = rand(rng, 1, 2, 16, 8), rand(rng, 1, 2, 16, 8), rand(rng, 1, 2, 16, 8)
        # What autograd hands over for loss = out.sum(): one value, strides 0.
        ones = np.broadcast_to(np.float32(1), q.shape)
        self.assertEqual(ones.strides, (0, 0, 0, 0))
        got = dashattn.attention_backward(q, k, v, ones, block_size=8)
        want = dashattn.attention_backward(q, k, v, np.ones(q.shape, np.float32), block_size=8)
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)

    def test_block_summary_gradient_shape_and_zero_summary(self):
        rng = np.random.default_rng(8)
        q, k, v = rand(rng, 1, 2, 32, 8), rand(rng, 1, 2, 32, 8), rand(rng, 1, 2, 32, 8)
        dout = rand(rng, 1, 2, 32, 8)
        h = np.zeros((2, 8), np.float32)
        dq, dk, dv, dh = dashattn.attention_backward(q, k, v, dout, block_size=8, block_summary=h)
        dq0, dk0, dv0 = dashattn.attention_backward(q, k, v, dout, block_size=8)
        # h = 0 is mean pooling: the same function, so the same dq, dk, dv.
        np.testing.assert_allclose(dq, dq0, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(dk, dk0, rtol=1e-5, atol=1e-6)
        self.assertEqual(dh.shape, h.shape)
        self.assertTrue(np.all(np.isfinite(dh)))


class Errors(unittest.TestCase):
    def test_mixed_dtypes_are_refused_by_the_library(self):
        rng = np.random.default_rng(9)
        q = rand(rng, 1, 2, 16, 8)
        k = rand(rng, 1, 2, 16, 8, dtype=np.float16)
        with self.assertRaises(dashattn.DashattnError) as cm:
            dashattn.attention(q, k, k.astype(np.float32), block_size=8)
        self.assertIn("k has dtype f16", cm.exception.message)
        self.assertIn(cm.exception.message, str(cm.exception))

    def test_shape_mismatch_names_the_tensor(self):
        rng = np.random.default_rng(10)
        q, k, v = rand(rng, 1, 2, 16, 8), rand(rng, 1, 2, 16, 8), rand(rng, 1, 2, 24, 8)
        with self.assertRaises(dashattn.DashattnError) as cm:
            dashattn.attention(q, k, v, block_size=8)
        self.assertEqual(cm.exception.status, 2)  # DASHATTN_ERR_SHAPE_MISMATCH
        self.assertIn("v has shape [1, 2, 24, 8]", cm.exception.message)

    def test_bad_option_is_the_librarys_message(self):
        rng = np.random.default_rng(11)
        q = rand(rng, 1, 2, 16, 8)
        with self.assertRaises(dashattn.DashattnError) as cm:
            dashattn.attention(q, q, q, alpha=3.0)
        self.assertIn("problem->alpha", cm.exception.message)

    def test_float64_is_a_type_error(self):
        q = np.zeros((1, 1, 8, 8))
        with self.assertRaises(TypeError):
            dashattn.attention(q, q, q)

    def test_unknown_group_select(self):
        q = np.zeros((1, 1, 8, 8), np.float32)
        with self.assertRaises(ValueError):
            dashattn.attention(q, q, q, group_select="avg")


class Binding(unittest.TestCase):
    def test_problem_defaults_read_back_through_the_mirrored_struct(self):
        # dashattn_problem_init writes every field in C; reading the SPEC.md
        # defaults back at the right values checks each ctypes field's offset
        # and width, the fields at the struct's end (added in 0.2) included.
        lib = dashattn.library()
        p = dashattn._capi.problem_dict(lib.problem(2, 4, 2, 3, 5, 8))
        self.assertEqual((p["batch"], p["heads_q"], p["heads_kv"], p["len_q"], p["len_k"],
                          p["head_dim"]), (2, 4, 2, 3, 5, 8))
        self.assertEqual((p["causal"], p["block_size"], p["n_sink"], p["n_local"]), (1, 64, 0, 1))
        self.assertEqual(p["alpha"], 1.5)
        self.assertEqual(p["group_mode"], dashattn._capi.GROUP_MEAN)
        self.assertEqual(p["prior"], dashattn._capi.PRIOR_LOG)
        self.assertEqual(p["prior_sigma"], 1e6)
        self.assertEqual(p["threshold_schedule"], dashattn._capi.SCHEDULE_EXACT)
        self.assertEqual(p["halley_steps"], 3)


class Discovery(unittest.TestCase):
    def test_loaded_library_is_the_one_asked_for_and_matches(self):
        want = os.environ.get("DASHATTN_LIBRARY")
        if want:
            self.assertEqual(dashattn.library_path(), os.path.abspath(want))
        self.assertEqual(dashattn._capi.parse_version(dashattn.library_version())[:2], (0, 2))

    def test_failure_lists_what_was_tried(self):
        import subprocess
        env = dict(os.environ, DASHATTN_LIBRARY="/nonexistent/libdashattn.so.1")
        r = subprocess.run([sys.executable, "-c", "import dashattn"], env=env,
                           capture_output=True, text=True)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("LibraryNotFound", r.stderr)
        self.assertIn("/nonexistent/libdashattn.so.1", r.stderr)
        self.assertIn("DASHATTN_BUILD_DIR", r.stderr)

    def test_old_version_is_refused(self):
        with self.assertRaises(dashattn.VersionMismatch):
            dashattn._capi.check_version_compatible("0.1.0", "libdashattn.so.1")
        dashattn._capi.check_version_compatible("0.3.1", "libdashattn.so.1")


if __name__ == "__main__":
    unittest.main()
