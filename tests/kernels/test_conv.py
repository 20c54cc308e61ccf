"""Convolutions through kiln's contraction kernel (NHWC implicit GEMM) and the pooling
they come with: numpy references over odd shapes, strides, padding, groups, epilogues."""

from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
from tvm import relax  # noqa: E402

pytestmark = pytest.mark.tvm


def conv2d_ref(x, w, stride, pad, groups):
    """NCHW / OIHW reference convolution."""
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh = (h + 2 * pad - kh) // stride + 1
    ow = (wd + 2 * pad - kw) // stride + 1
    out = np.zeros((n, o, oh, ow), np.float64)
    og = o // groups
    for g in range(groups):
        xs = xp[:, g * cg:(g + 1) * cg]
        for i in range(kh):
            for j in range(kw):
                patch = xs[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride]
                out[:, g * og:(g + 1) * og] += np.einsum(
                    "nchw,oc->nohw", patch, w[g * og:(g + 1) * og, :, i, j])
    return out.astype(np.float32)


CASES = [
    # (N, C, H, W, O, K, stride, pad, groups)
    (1, 3, 13, 13, 16, 3, 1, 1, 1),
    (1, 3, 17, 17, 8, 7, 2, 3, 1),    # stem-like: 7x7 stride 2, 3 input channels
    (2, 17, 7, 7, 33, 1, 1, 0, 1),    # 1x1, odd channels, batch 2
    (1, 16, 9, 9, 16, 3, 2, 1, 16),   # depthwise, stride 2
    (1, 24, 5, 5, 24, 3, 1, 1, 24),   # depthwise, 24 channels (8-wide vectors)
    (1, 6, 5, 5, 4, 3, 1, 1, 2),      # grouped
    (1, 1, 1, 1, 1, 1, 1, 0, 1),
]


@pytest.mark.parametrize("n,c,h,w,o,k,stride,pad,groups", CASES)
def test_conv2d_matches_numpy(run_kernel, n, c, h, w, o, k, stride, pad, groups):
    rng = np.random.default_rng(c * 100 + o + k)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = rng.standard_normal((o, c // groups, k, k)).astype(np.float32)

    def body(xv, wv):
        return relax.op.nn.conv2d(xv, wv, strides=stride, padding=pad, groups=groups)

    out, rules = run_kernel(body, [x, wt])
    np.testing.assert_allclose(out, conv2d_ref(x, wt, stride, pad, groups), rtol=1e-4,
                               atol=1e-4)
    if (c // groups) * k * k > 1:  # a real reduction: the contraction kernel takes it
        assert "Matmul" in rules.values(), rules


def test_conv_bias_relu_residual_epilogue(run_kernel):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1, 8, 11, 11)).astype(np.float32)
    wt = rng.standard_normal((8, 8, 3, 3)).astype(np.float32)
    bias = rng.standard_normal((1, 8, 1, 1)).astype(np.float32)

    def body(xv, wv, bv):
        conv = relax.op.nn.conv2d(xv, wv, padding=1)
        return relax.op.nn.relu(relax.op.add(relax.op.add(conv, bv), xv))

    out, rules = run_kernel(body, [x, wt, bias])
    expected = np.maximum(conv2d_ref(x, wt, 1, 1, 1) + bias + x, 0)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
    assert "Matmul" in rules.values(), rules


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pooling_is_scheduled_and_matches_numpy(run_kernel, kind):
    rng = np.random.default_rng(8)
    x = rng.standard_normal((1, 5, 13, 13)).astype(np.float32)
    op = relax.op.nn.max_pool2d if kind == "max" else relax.op.nn.avg_pool2d
    out, rules = run_kernel(lambda v: op(v, pool_size=3, strides=2), [x])
    windows = np.lib.stride_tricks.sliding_window_view(x, (3, 3), axis=(2, 3))[:, :, ::2, ::2]
    expected = windows.max(axis=(-1, -2)) if kind == "max" else windows.mean(axis=(-1, -2))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    assert all(r is not None for r in rules.values()), rules
