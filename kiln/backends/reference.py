"""The reference backend: onnx's pure-python ReferenceEvaluator.

Slow, but independent of ONNX Runtime: a second opinion on numerics, and the only
runner for ops that ONNX Runtime lacks a kernel for.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

import numpy as np

from kiln.backends._artifact import model_bytes
from kiln.backends._base import (
    Backend,
    Executable,
    model_op_labels,
    one_line,
    register_backend,
)
from kiln.errors import KilnError
from kiln.ir import Model


@dataclasses.dataclass(frozen=True)
class ReferenceOptions:
    """Options of the reference backend (none yet)."""


@register_backend
class ReferenceBackend(Backend):
    """onnx.reference.ReferenceEvaluator (``backend="reference"``), target ``cpu``."""

    name = "reference"
    targets = ("cpu",)
    Options = ReferenceOptions

    def supports(self, model: Model) -> list[str]:
        """Ops the evaluator has no implementation (nor ONNX function body) for."""
        missing = []
        for (domain, op_type), opset in sorted(model_op_labels(model).items()):
            if not _has_implementation(domain, op_type, opset):
                missing.append(f"{domain}::{op_type}" if domain else op_type)
        return missing

    def compile(self, model: Model) -> ReferenceExecutable:
        return ReferenceExecutable(model, self.target)


@functools.cache
def _has_implementation(domain: str, op_type: str, opset: int) -> bool:
    from onnx.reference import ReferenceEvaluator
    from onnx.reference.op_run import RuntimeContextError
    from onnx.reference.ops import aionnxml, load_op

    try:
        if domain == "":
            load_op(domain, op_type, opset, evaluator_cls=ReferenceEvaluator)
        elif domain == "ai.onnx.ml":
            aionnxml.load_op(domain, op_type, opset)
        else:
            return False
    except RuntimeContextError:
        return True  # defined by a context-dependent function, expanded per node
    except (NotImplementedError, RuntimeError, ValueError):
        return False
    return True


class ReferenceExecutable(Executable):
    """A model in an onnx.reference.ReferenceEvaluator."""

    def __init__(self, model: Model, target: str) -> None:
        super().__init__(model, "reference", target, {})
        from onnx.reference import ReferenceEvaluator

        try:
            self.evaluator = ReferenceEvaluator(model_bytes(model))
        except Exception as exc:
            raise KilnError(f"onnx.reference cannot load the model: {one_line(exc)}") from None

    def _run(self, feeds: Mapping[str, Any]) -> list[np.ndarray]:
        try:
            results = self.evaluator.run(self.output_names, dict(feeds))
        except Exception as exc:
            raise KilnError(f"onnx.reference failed to run the model: {one_line(exc)}") from None
        return [np.asarray(r) for r in results]

    def _artifact_runtime(self) -> dict[str, Any]:
        """The artifact runs with ``onnx.reference.ReferenceEvaluator`` (or any runtime)."""
        return {"onnx.reference": {}}
