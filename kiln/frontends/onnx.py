"""Load and save ONNX models (files, bytes, ModelProto)."""

from __future__ import annotations

import os
from pathlib import Path

import onnx

from kiln.errors import ModelLoadError
from kiln.ir import Model
from kiln.ir.serde import deserialize_model, serialize_model


def load(source: str | os.PathLike | bytes | onnx.ModelProto) -> Model:
    """Load an ONNX model from a path, serialized bytes, or a ModelProto."""
    if isinstance(source, onnx.ModelProto):
        return deserialize_model(source)
    if isinstance(source, bytes | bytearray | memoryview):
        proto = onnx.ModelProto()
        try:
            proto.ParseFromString(bytes(source))
        except Exception as exc:
            raise ModelLoadError(f"malformed ONNX protobuf: {exc}") from None
        return deserialize_model(proto)
    path = Path(source)
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(path.read_bytes())
    except OSError as exc:
        raise ModelLoadError(f"cannot read {path}: {exc.strerror}") from None
    except Exception as exc:
        raise ModelLoadError(f"{path}: malformed ONNX protobuf: {exc}") from None
    return deserialize_model(proto)


def save(model: Model, path: str | os.PathLike) -> None:
    """Save a model as an ONNX file."""
    Path(path).write_bytes(serialize_model(model).SerializeToString())
