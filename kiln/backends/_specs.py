"""Input and output specs of an Executable, and the validation of feeds against them."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from kiln.errors import KilnError
from kiln.ir import DataType, Dim, Model, TensorType, Value


@dataclasses.dataclass(frozen=True, slots=True)
class TensorSpec:
    """What one input or output of an Executable holds.

    Attributes:
        name: the graph input or output name.
        dtype: the element type, or None when the value is not a tensor or its type is
            unknown.
        shape: the dimensions (int static, str symbolic such as ``"N"``, None unknown), or
            None when the rank is unknown.
        type_str: the value's type as text, for messages (``f32[N,3,32,32]``).
    """

    name: str
    dtype: DataType | None
    shape: tuple[Dim, ...] | None
    type_str: str

    @staticmethod
    def from_value(value: Value) -> TensorSpec:
        """The spec of a graph input or output."""
        t = value.type
        if isinstance(t, TensorType):
            shape = None if t.shape is None else tuple(t.shape.dims)
            return TensorSpec(value.name, t.dtype, shape, format_type(t.dtype, shape))
        return TensorSpec(value.name, None, None, "?" if t is None else type(t).__name__)

    @property
    def is_tensor(self) -> bool:
        return self.dtype is not None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form: name, numpy dtype name, ONNX element type, shape."""
        return {
            "name": self.name,
            "dtype": None if self.dtype is None else _numpy_name(self.dtype),
            "elem_type": None if self.dtype is None else int(self.dtype),
            "shape": None if self.shape is None else list(self.shape),
        }


def model_input_specs(model: Model) -> tuple[TensorSpec, ...]:
    """The inputs a run of ``model`` must feed: graph inputs that are not initializers."""
    return tuple(TensorSpec.from_value(v) for v in model.graph.inputs if not v.is_initializer())


def format_type(dtype: DataType | None, shape: tuple[Dim, ...] | None) -> str:
    """``f32[N,3,?]`` style text for a tensor type."""
    name = "?" if dtype is None else dtype.short_name
    if shape is None:
        return f"{name}[...]"
    return name + "[" + ",".join("?" if d is None else str(d) for d in shape) + "]"


def _numpy_name(dtype: DataType) -> str:
    try:
        return str(dtype.numpy)
    except TypeError:
        return dtype.name.lower()


def check_feeds(
    specs: tuple[TensorSpec, ...],
    feeds: Mapping[str, Any],
    optional: Mapping[str, TensorSpec] | None = None,
) -> dict[str, np.ndarray]:
    """Check feeds against the input specs and return them as numpy arrays.

    Args:
        specs: the required inputs.
        feeds: input name -> array.
        optional: inputs that may be fed but need not be (initializers that are also
            graph inputs, which a feed overrides).

    Returns:
        The feeds, as numpy arrays, in spec order (optional ones last).

    Raises:
        KilnError: naming the input, for unknown or missing names, a wrong dtype, a wrong
            rank, a static dimension that differs, or a symbolic dimension bound to two
            different sizes.
    """
    if not isinstance(feeds, Mapping):
        raise KilnError(f"feeds must be a mapping of input name to array, not {type(feeds).__name__}")
    optional = optional or {}
    known = {s.name: s for s in specs}
    unknown = [name for name in feeds if name not in known and name not in optional]
    if unknown:
        expected = ", ".join(repr(s.name) for s in specs) or "none"
        raise KilnError(f"unknown input {unknown[0]!r} (the model's inputs: {expected})")
    missing = [s for s in specs if s.name not in feeds]
    if missing:
        s = missing[0]
        raise KilnError(f"missing input {s.name!r} ({s.type_str})")
    bound: dict[str, tuple[int, str]] = {}
    checked: dict[str, np.ndarray] = {}
    for spec in (*specs, *(optional[n] for n in optional if n in feeds)):
        checked[spec.name] = _check_one(spec, feeds[spec.name], bound)
    return checked


def _check_one(spec: TensorSpec, value: Any, bound: dict[str, tuple[int, str]]) -> np.ndarray:
    if not spec.is_tensor:
        return value
    array = value if isinstance(value, np.ndarray) else np.asarray(value)
    _check_dtype(spec, array)
    if spec.shape is None:
        return array
    if array.ndim != len(spec.shape):
        raise KilnError(
            f"input {spec.name!r}: expected rank {len(spec.shape)} ({spec.type_str}), "
            f"got shape {tuple(array.shape)}"
        )
    for axis, (want, got) in enumerate(zip(spec.shape, array.shape, strict=True)):
        if isinstance(want, int) and want != got:
            raise KilnError(
                f"input {spec.name!r}: dimension {axis} must be {want}, got {got} "
                f"(expected {spec.type_str}, got shape {tuple(array.shape)})"
            )
        if isinstance(want, str):
            size, first = bound.setdefault(want, (got, spec.name))
            if size != got:
                raise KilnError(
                    f"input {spec.name!r}: dimension {axis} ({want!r}) is {got}, but input "
                    f"{first!r} set {want}={size}"
                )
    return array


def _check_dtype(spec: TensorSpec, array: np.ndarray) -> None:
    assert spec.dtype is not None
    if spec.dtype == DataType.STRING:
        if array.dtype.kind not in "USO":
            raise KilnError(f"input {spec.name!r}: expected strings, got {array.dtype}")
        return
    want = spec.dtype.numpy
    if array.dtype != want:
        raise KilnError(
            f"input {spec.name!r}: expected dtype {want} ({spec.type_str}), got {array.dtype} "
            f"(convert it with .astype(numpy.{want}))"
        )
