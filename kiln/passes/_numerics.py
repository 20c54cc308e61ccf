"""check-numerics: run the model with ONNX Runtime before and after each pass and fail on
the first pass that changes an output beyond tolerance.

ONNX Runtime runs with its own graph optimizations off, so that it does not hide a bug in
a pass. Inputs are given, or random from the input types: floats normal, integers in
[0, 10), booleans uniform; symbolic dimensions are 1 unless given.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from kiln.errors import KilnError
from kiln.ir import Model, TensorType


def random_inputs(model: Model, dims: Mapping[str, int] | None = None, seed: int = 0
                  ) -> dict[str, np.ndarray]:
    """Random inputs for ``model`` (initializers that are also inputs keep their values).

    Raises:
        KilnError: an input is not a tensor of known element type and rank.
    """
    rng = np.random.default_rng(seed)
    dims = dict(dims or {})
    feeds = {}
    for v in model.graph.inputs:
        if v.is_initializer():
            continue
        if not isinstance(v.type, TensorType) or v.type.shape is None:
            raise KilnError(f"check-numerics: cannot make a random value for input {v.name!r} "
                            f"of type {v.type}; give the inputs")
        shape = tuple(d if isinstance(d, int) else dims.get(d, 1) if d else 1
                      for d in v.type.shape.dims)
        dtype = np.dtype(v.type.dtype.numpy)
        if dtype.kind == "f":
            feeds[v.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind in "iu":
            feeds[v.name] = rng.integers(0, 10, shape).astype(dtype)
        elif dtype.kind == "b":
            feeds[v.name] = rng.integers(0, 2, shape).astype(bool)
        else:
            raise KilnError(f"check-numerics: cannot make a random value for input {v.name!r} "
                            f"of type {v.type}; give the inputs")
    return feeds


def run_model(model: Model, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The outputs of ``model`` on ``feeds``, by ONNX Runtime with optimizations off."""
    import onnxruntime as ort

    from kiln.frontends.onnx import to_bytes

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(to_bytes(model), options,
                                       providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, dict(feeds)), strict=True))
    except Exception as exc:  # ORT raises its own exception types
        message = " ".join(str(exc).split())
        raise KilnError(f"check-numerics: ONNX Runtime cannot run the model: {message}") from None


def compare_outputs(before: Mapping[str, np.ndarray], after: Mapping[str, np.ndarray], *,
                    rtol: float, atol: float) -> tuple[str, str] | None:
    """The first output that differs, as ``(name, why)``; None when all agree.

    Outputs are matched by position (a pass may rename them). Floats agree within
    ``rtol``/``atol`` (NaN where the other has NaN); other types agree exactly.
    """
    if len(before) != len(after):
        return "", f"{len(before)} outputs before, {len(after)} after"
    for (name, a), b in zip(before.items(), after.values(), strict=True):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape:
            return name, f"shape {list(a.shape)} became {list(b.shape)}"
        if a.dtype != b.dtype:
            return name, f"dtype {a.dtype} became {b.dtype}"
        if a.dtype.kind in "fc":
            if not np.allclose(b, a, rtol=rtol, atol=atol, equal_nan=True):
                diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
                return name, f"max abs diff {np.nanmax(diff):.3g} (rtol {rtol}, atol {atol})"
        elif not np.array_equal(a, b):
            return name, f"values differ (exact match required for {a.dtype})"
    return None


class NumericsChecker:
    """Checks each pass's result against the model's outputs before that pass."""

    def __init__(self, model: Model, inputs: Mapping[str, np.ndarray] | None = None, *,
                 rtol: float = 1e-4, atol: float = 1e-5) -> None:
        self.feeds = dict(inputs) if inputs is not None else random_inputs(model)
        self.rtol = rtol
        self.atol = atol
        self.outputs = run_model(model, self.feeds)

    def check(self, model: Model, pass_name: str) -> None:
        """Run ``model`` (just changed by ``pass_name``) and compare with the last outputs.

        Raises:
            KilnError: an output changed beyond tolerance; the message names the pass and
                the output.
        """
        try:
            outputs = run_model(model, self.feeds)
        except KilnError as exc:
            raise KilnError(f"after pass {pass_name!r}: {exc}") from None
        found = compare_outputs(self.outputs, outputs, rtol=self.rtol, atol=self.atol)
        if found is not None:
            name, why = found
            where = f" output {name!r}" if name else ""
            raise KilnError(f"check-numerics: pass {pass_name!r} changed{where}: {why}")
        self.outputs = outputs
