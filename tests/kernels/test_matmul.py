"""kiln's CPU contraction kernel on matmuls: numpy reference, odd shapes, epilogues."""

from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
from tvm import relax  # noqa: E402

pytestmark = pytest.mark.tvm

RTOL, ATOL = 1e-4, 1e-5


def _rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("m,k,n", [
    (1, 64, 10),      # GEMV, N not a multiple of the vector width
    (7, 31, 13),      # primes everywhere
    (3, 2, 5),
    (128, 256, 256),  # BERT projection, packed panels
    (33, 1000, 48),   # K above the block size and not a multiple of it
    (64, 96, 1000),   # N = 8 * 125: narrower vectors
])
def test_matmul_matches_numpy(run_kernel, m, k, n):
    rng = np.random.default_rng(m * 1000 + k + n)
    a, b = _rand(rng, m, k), _rand(rng, k, n)
    out, rules = run_kernel(lambda x, y: relax.op.matmul(x, y), [a, b])
    np.testing.assert_allclose(out, a @ b, rtol=RTOL, atol=ATOL * max(1, k ** 0.5))
    assert list(rules.values()) == ["Matmul"], rules


def test_degenerate_matmul_is_scheduled_by_the_fallback(run_kernel):
    # K = 1 leaves no reduction once TVM drops unit loops: an elementwise product.
    a, b = np.full((1, 1), 3.0, np.float32), np.full((1, 1), -2.0, np.float32)
    out, rules = run_kernel(lambda x, y: relax.op.matmul(x, y), [a, b])
    np.testing.assert_allclose(out, a @ b)
    assert list(rules.values()) == ["Fallback"], rules


def test_batched_matmul_with_broadcast_weights(run_kernel):
    rng = np.random.default_rng(1)
    a, b = _rand(rng, 2, 3, 17, 19), _rand(rng, 19, 32)
    out, rules = run_kernel(lambda x, y: relax.op.matmul(x, y), [a, b])
    np.testing.assert_allclose(out, a @ b, rtol=RTOL, atol=ATOL * 5)
    assert "Matmul" in rules.values(), rules


def test_batched_matmul_both_sides(run_kernel):
    rng = np.random.default_rng(2)
    a, b = _rand(rng, 4, 37, 64), _rand(rng, 4, 64, 48)
    out, rules = run_kernel(lambda x, y: relax.op.matmul(x, y), [a, b])
    np.testing.assert_allclose(out, a @ b, rtol=RTOL, atol=ATOL * 8)
    assert "Matmul" in rules.values(), rules


def test_matmul_with_bias_and_relu_epilogue(run_kernel):
    rng = np.random.default_rng(3)
    a, w, bias = _rand(rng, 29, 70), _rand(rng, 70, 40), _rand(rng, 40)

    def body(x, y, z):
        return relax.op.nn.relu(relax.op.add(relax.op.matmul(x, y), z))

    out, rules = run_kernel(body, [a, w, bias])
    np.testing.assert_allclose(out, np.maximum(a @ w + bias, 0), rtol=RTOL, atol=ATOL * 9)
    assert list(rules.values()) == ["Matmul"], rules  # one fused function, ours


def test_transposed_weight_is_contiguous_after_folding(run_kernel):
    rng = np.random.default_rng(4)
    a, w = _rand(rng, 16, 24), _rand(rng, 20, 24)  # Gemm transB: x @ w.T
    out, _ = run_kernel(lambda x, y: relax.op.matmul(x, relax.op.permute_dims(y, [1, 0])),
                        [a, w])
    np.testing.assert_allclose(out, a @ w.T, rtol=RTOL, atol=ATOL * 5)
