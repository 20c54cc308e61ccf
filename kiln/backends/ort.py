"""The ONNX Runtime backend: serialize to ONNX and run in an InferenceSession.

ONNX Runtime is kiln's reference for numerics (with ``optimize="disable"``) and its
baseline for speed (with the default ``optimize="all"``).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from kiln.backends._artifact import (
    EXTERNAL_DATA_THRESHOLD,
    initializer_bytes,
    model_bytes,
    write_onnx,
)
from kiln.backends._base import (
    Backend,
    Executable,
    model_op_labels,
    one_line,
    register_backend,
)
from kiln.errors import KilnError
from kiln.ir import Model

OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")

_TARGET_PROVIDERS = {
    "cpu": ("CPUExecutionProvider",),
    "cuda": ("CUDAExecutionProvider", "CPUExecutionProvider"),
}


@dataclasses.dataclass(frozen=True)
class OrtOptions:
    """Options of the ort backend.

    Attributes:
        threads: intra-op threads (ONNX Runtime's ``intra_op_num_threads``); None lets
            ONNX Runtime choose (one per physical core).
        optimize: ONNX Runtime's graph optimization level: ``"all"`` (default, fastest),
            ``"extended"``, ``"basic"`` or ``"disable"`` (the numerics reference: the
            model runs as written).
        providers: execution providers in priority order; default from the target
            (``cpu``: CPUExecutionProvider).
    """

    threads: int | None = None
    optimize: str = "all"
    providers: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.threads is not None and (
            isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 1
        ):
            raise KilnError(f"ort option threads must be a positive integer, not {self.threads!r}")
        if self.optimize not in OPTIMIZATION_LEVELS:
            raise KilnError(
                f"ort option optimize must be one of {', '.join(OPTIMIZATION_LEVELS)}, "
                f"not {self.optimize!r}"
            )
        if self.providers is not None:
            object.__setattr__(self, "providers", tuple(self.providers))


@register_backend
class OrtBackend(Backend):
    """ONNX Runtime (``backend="ort"``), targets ``cpu`` and ``cuda``."""

    name = "ort"
    targets = ("cpu", "cuda")
    Options = OrtOptions

    def supports(self, model: Model) -> list[str]:
        """Ops with no ONNX Runtime schema at the model's opset (model-local functions are
        inlined by ONNX Runtime, so their bodies are checked instead)."""
        schemas = _ort_schemas()
        if schemas is None:  # this onnxruntime build does not list its schemas
            return []
        missing = []
        for (domain, op_type), opset in sorted(model_op_labels(model).items()):
            since = schemas.get((domain, op_type))
            if since is None or since > opset:
                missing.append(f"{domain}::{op_type}" if domain else op_type)
        return missing

    def compile(self, model: Model) -> OrtExecutable:
        return OrtExecutable(model, self.target, self.options)


@functools.cache
def _ort_schemas() -> dict[tuple[str, str], int] | None:
    """(domain, op_type) -> the lowest opset at which ONNX Runtime knows the op (None when
    the build cannot say; session creation then reports unknown ops)."""
    from onnxruntime.capi import onnxruntime_pybind11_state as C

    get_all = getattr(C, "get_all_operator_schema", None)
    if get_all is None:
        return None
    found: dict[tuple[str, str], int] = {}
    for s in get_all():
        domain = "" if s.domain == "ai.onnx" else s.domain
        key = (domain, s.name)
        found[key] = min(s.since_version, found.get(key, s.since_version))
    return found


class OrtExecutable(Executable):
    """A model in an ONNX Runtime InferenceSession."""

    def __init__(self, model: Model, target: str, options: OrtOptions) -> None:
        super().__init__(model, "ort", target, dataclasses.asdict(options))
        import onnxruntime as ort

        providers = options.providers or _TARGET_PROVIDERS[target]
        available = ort.get_available_providers()
        absent = [p for p in providers if p not in available]
        if absent:
            raise KilnError(
                f"onnxruntime has no {absent[0]} here (available: {', '.join(available)})"
            )
        self.providers = tuple(providers)
        self.session_options = _session_options(options)
        self._tmp: tempfile.TemporaryDirectory | None = None
        if initializer_bytes(model) > EXTERNAL_DATA_THRESHOLD:
            # Too large for one protobuf message: load from a file with external data.
            self._tmp = tempfile.TemporaryDirectory(prefix="kiln-ort-")
            source: bytes | str = os.fspath(write_onnx(model, Path(self._tmp.name), external_data=True))
        else:
            source = model_bytes(model)
        try:
            self.session = ort.InferenceSession(
                source, self.session_options, providers=list(self.providers)
            )
        except Exception as exc:
            raise KilnError(f"onnxruntime cannot load the model: {one_line(exc)}") from None

    def _run(self, feeds: Mapping[str, Any]) -> list[np.ndarray]:
        try:
            return self.session.run(self.output_names, dict(feeds))
        except Exception as exc:
            raise KilnError(f"onnxruntime failed to run the model: {one_line(exc)}") from None

    def _artifact_runtime(self) -> dict[str, Any]:
        """The session settings that reproduce this Executable with plain onnxruntime:
        ``graph_optimization_level`` (an ``onnxruntime.GraphOptimizationLevel`` member
        name), ``intra_op_num_threads`` (0 = onnxruntime's default) and ``providers``."""
        return {
            "onnxruntime": {
                "graph_optimization_level": self.session_options.graph_optimization_level.name,
                "intra_op_num_threads": self.session_options.intra_op_num_threads,
                "providers": list(self.providers),
            }
        }


def _session_options(options: OrtOptions):
    import onnxruntime as ort

    levels = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    so = ort.SessionOptions()
    so.graph_optimization_level = levels[options.optimize]
    if options.threads is not None:
        so.intra_op_num_threads = options.threads
    so.log_severity_level = 3  # errors only; warnings are not the user's to act on
    return so
