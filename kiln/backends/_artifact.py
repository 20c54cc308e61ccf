"""ONNX bytes and deployable ONNX artifacts (model.onnx, optional external data, manifest)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kiln.backends._specs import TensorSpec
from kiln.errors import KilnError
from kiln.frontends.onnx import save, to_bytes
from kiln.ir import Model

MODEL_FILE = "model.onnx"
DATA_FILE = "model.onnx.data"
MANIFEST_FILE = "manifest.json"
ARTIFACT_FORMAT = "kiln-artifact"
ARTIFACT_VERSION = 1

EXTERNAL_DATA_THRESHOLD = 1 << 30
"""Initializer bytes above which an artifact keeps its weights in ``model.onnx.data``.

Well below protobuf's 2 GiB limit on one serialized message."""


def model_bytes(model: Model) -> bytes:
    """The model as serialized ONNX (the whole model must fit in one 2 GiB protobuf)."""
    return to_bytes(model)


def initializer_bytes(model: Model) -> int:
    """Bytes of the main graph's initializers, as stored in ONNX."""
    total = 0
    for value in model.graph.initializers.values():
        if value.const_value is not None:
            total += value.const_value.nbytes
    return total


def write_onnx(model: Model, directory: Path, *, external_data: bool) -> Path:
    """Write ``model.onnx`` (and ``model.onnx.data`` with ``external_data``) into ``directory``.

    Returns:
        The path of the model file.
    """
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / MODEL_FILE
    data_path = directory / DATA_FILE
    if data_path.exists():
        data_path.unlink()
    if external_data:
        save(model, path, external_data=True, size_threshold=0, location=DATA_FILE)
    else:
        save(model, path, external_data=False)
    return path


def write_artifact(
    model: Model,
    directory: str | os.PathLike,
    *,
    backend: str,
    target: str,
    inputs: tuple[TensorSpec, ...],
    outputs: tuple[TensorSpec, ...],
    runtime: Mapping[str, Any],
    external_data: bool | None = None,
) -> Path:
    """Write a deployable ONNX artifact: the model and a ``manifest.json`` describing it.

    The manifest records the format, kiln's version, the backend and target, the input
    and output specs, the opset imports, the runtime settings the Executable used and the
    SHA-256 of every file, so the artifact can be loaded and checked without kiln.

    Args:
        model: the model to write.
        directory: created if needed; existing artifact files in it are replaced.
        backend: the backend name recorded in the manifest.
        target: the target recorded in the manifest.
        inputs: input specs.
        outputs: output specs.
        runtime: backend settings to record (threads, optimization level, providers).
        external_data: keep weights in ``model.onnx.data``; by default only when they
            exceed :data:`EXTERNAL_DATA_THRESHOLD`.

    Returns:
        The artifact directory.
    """
    from kiln import __version__

    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise KilnError(f"cannot export to {directory}: it exists and is not a directory")
    if external_data is None:
        external_data = initializer_bytes(model) > EXTERNAL_DATA_THRESHOLD
    model_path = write_onnx(model, directory, external_data=external_data)
    external_data = (directory / DATA_FILE).exists()  # not written when there are no weights
    files = [model_path] + ([directory / DATA_FILE] if external_data else [])
    manifest = {
        "format": ARTIFACT_FORMAT,
        "format_version": ARTIFACT_VERSION,
        "kiln_version": __version__,
        "backend": backend,
        "target": target,
        "model": MODEL_FILE,
        "external_data": DATA_FILE if external_data else None,
        "opset_imports": dict(model.opset_imports),
        "inputs": [s.to_dict() for s in inputs],
        "outputs": [s.to_dict() for s in outputs],
        "runtime": dict(runtime),
        "sha256": {f.name: _sha256(f) for f in files},
    }
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return directory


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
