"""Shared checks for pass tests (STYLE.md item 7): golden Before/Expected models in the
text form, and a numeric check of the rewritten model against ONNX Runtime with its own
optimizations off, so ORT does not hide a bug."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnxruntime as ort
import pytest

from kiln.frontends.onnx import to_bytes
from kiln.ir import Model, parse_model
from kiln.passes import Pass, PassResult
from kiln.testing import assert_models_equal


def run_ort(model: Model, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Run a kiln model with ONNX Runtime, its optimizations off."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(to_bytes(model), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def random_feeds(model: Model, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded random inputs for a model's graph inputs (symbolic dims become 2)."""
    rng = np.random.default_rng(seed)
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


def assert_same_outputs(before: Model, after: Model) -> None:
    """``after`` computes what ``before`` does on random inputs (rtol 1e-4, atol 1e-5)."""
    feeds = random_feeds(after)
    want, got = run_ort(before, feeds), run_ort(after, feeds)
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


def check_pass(pass_: Pass, before: str, expected: str | None, *, numeric: bool = True,
               reference: str | None = None, must_change: bool = False) -> PassResult:
    """Run ``pass_`` on ``before`` and compare with ``expected`` (``None``: the model must
    be left as it was, and the pass must say it changed nothing). With ``must_change``,
    a given ``expected`` also requires the pass to report a change. With ``numeric``,
    check the result against ``reference`` (default: ``before``) with ONNX Runtime."""
    model = parse_model(before)
    result = pass_(model)
    assert_models_equal(result.model, expected if expected is not None else before)
    if expected is None or must_change:
        assert result.changed == (expected is not None)
    if numeric:
        assert_same_outputs(parse_model(reference or before), result.model)
    return result


@pytest.fixture
def golden() -> Callable[..., PassResult]:
    """The golden + numeric check, as a fixture."""
    return check_pass


@pytest.fixture(name="run_ort")
def run_ort_fixture() -> Callable[[Model, dict[str, np.ndarray]], list[np.ndarray]]:
    """Run a kiln model with ONNX Runtime, its optimizations off."""
    return run_ort


@pytest.fixture(name="random_feeds")
def random_feeds_fixture() -> Callable[[Model], dict[str, np.ndarray]]:
    """Seeded random inputs for a model's graph inputs (symbolic dims become 2)."""
    return random_feeds


@pytest.fixture
def same_outputs() -> Callable[[Model, Model], None]:
    """Assert two models compute the same outputs on random inputs (ORT, no optimizations)."""
    return assert_same_outputs
