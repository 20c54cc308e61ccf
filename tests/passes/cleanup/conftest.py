"""Shared checks for the clean-up pass tests: golden text and ONNX Runtime numerics."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnxruntime as ort
import pytest

from kiln.frontends.onnx import to_bytes
from kiln.ir import Model, parse_model
from kiln.passes import Pass, PassResult
from kiln.testing import assert_models_equal


def _run_ort(model: Model, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(to_bytes(model), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _random_feeds(model: Model, rng: np.random.Generator) -> dict[str, np.ndarray]:
    feeds = {}
    for v in model.graph.inputs:
        if v.is_initializer():
            continue
        shape = [d if isinstance(d, int) else 2 for d in v.shape.dims]
        dtype = v.dtype.numpy
        if np.issubdtype(dtype, np.floating):
            feeds[v.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype == np.bool_:
            feeds[v.name] = np.asarray(rng.random(shape) < 0.5)
        else:
            feeds[v.name] = rng.integers(-5, 5, shape).astype(dtype)
    return feeds


def check_pass(pass_: Pass, before: str, expected: str, *, numeric: bool = True,
               reference: str | None = None) -> PassResult:
    """Run ``pass_`` on ``before``, compare with ``expected`` and, with ``numeric``, check
    the result against ONNX Runtime (optimizations off) on random inputs, running
    ``reference`` (default: ``before``) as the model that gives the expected numbers."""
    model = parse_model(before)
    result = pass_(model)
    assert_models_equal(result.model, expected)
    if numeric:
        feeds = _random_feeds(result.model, np.random.default_rng(0))
        want = _run_ort(parse_model(reference or before), feeds)
        got = _run_ort(result.model, feeds)
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)
    return result


@pytest.fixture
def golden() -> Callable[..., PassResult]:
    """The golden + numeric check, as a fixture."""
    return check_pass


@pytest.fixture
def run_ort() -> Callable[[Model, dict[str, np.ndarray]], list[np.ndarray]]:
    """Run a kiln model with ONNX Runtime, its optimizations off."""
    return _run_ort


@pytest.fixture
def random_feeds() -> Callable[[Model], dict[str, np.ndarray]]:
    """Seeded random inputs for a model's graph inputs (symbolic dims become 2)."""
    return lambda model: _random_feeds(model, np.random.default_rng(0))
