"""kiln's Fallback rule: any PrimFunc gets scheduled (parallel, vectorized) and stays
correct: softmax, layer norm, reductions, gathers, scans, broadcasts, transposes."""

from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
from tvm import relax  # noqa: E402

pytestmark = pytest.mark.tvm


def _softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@pytest.mark.parametrize("shape", [(1, 1), (3, 17), (127, 1000), (2, 4, 33, 33)])
def test_softmax(run_kernel, shape):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    out, rules = run_kernel(lambda v: relax.op.nn.softmax(v, axis=-1), [x])
    np.testing.assert_allclose(out, _softmax(x), rtol=1e-5, atol=1e-6)
    assert all(r is not None for r in rules.values()), rules


@pytest.mark.parametrize("shape", [(1, 7), (5, 256), (3, 17, 127)])
def test_layer_norm(run_kernel, shape):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape).astype(np.float32)
    g = rng.standard_normal(shape[-1:]).astype(np.float32)
    b = rng.standard_normal(shape[-1:]).astype(np.float32)
    out, rules = run_kernel(lambda v, gv, bv: relax.op.nn.layer_norm(v, gv, bv, [-1], 1e-5),
                            [x, g, b])
    mean = x.mean(-1, keepdims=True)
    expected = (x - mean) / np.sqrt(x.var(-1, keepdims=True) + 1e-5) * g + b
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)
    assert all(r is not None for r in rules.values()), rules


def test_elementwise_chain_and_broadcast(run_kernel):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 1000)).astype(np.float32)
    y = rng.standard_normal((1000,)).astype(np.float32)

    def body(a, b):
        return relax.op.tanh(relax.op.multiply(relax.op.add(a, b), relax.const(0.5, "float32")))

    out, rules = run_kernel(body, [x, y])
    np.testing.assert_allclose(out, np.tanh((x + y) * 0.5), rtol=1e-5, atol=1e-6)
    assert list(rules.values()) == ["Fallback"], rules


@pytest.mark.parametrize("name", ["argmax", "cumsum", "take", "where", "transpose", "sum"])
def test_odd_ops_still_build_and_match(run_kernel, name):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 37)).astype(np.float32)
    idx = rng.integers(0, 5, size=(7,)).astype(np.int64)
    cases = {
        "argmax": ([x], lambda v: relax.op.argmax(v, axis=1), lambda: x.argmax(1)),
        "cumsum": ([x], lambda v: relax.op.cumsum(v, axis=1), lambda: np.cumsum(x, 1)),
        "take": ([x, idx], lambda v, i: relax.op.take(v, i, axis=0), lambda: x[idx]),
        "where": ([x], lambda v: relax.op.where(relax.op.greater(v, relax.const(0.0)), v,
                                                 relax.op.negative(v)), lambda: np.abs(x)),
        "transpose": ([x], lambda v: relax.op.permute_dims(v, [1, 0]), lambda: x.T),
        "sum": ([x], lambda v: relax.op.sum(v, axis=[0]), lambda: x.sum(0)),
    }
    inputs, body, expected = cases[name]
    out, _ = run_kernel(body, inputs)
    np.testing.assert_allclose(out, expected(), rtol=1e-5, atol=1e-5)
