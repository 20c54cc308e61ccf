"""Types of values: tensors with static or symbolic shapes, sequences, maps, optionals."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from kiln.ir._dtypes import DataType

# A dimension is a static size (int), a symbolic name or expression (str), or unknown (None).
Dim = int | str | None


@dataclasses.dataclass(frozen=True, slots=True)
class Shape:
    """A tensor shape: static, symbolic (named dims such as ``"N"`` or ``"N*2"``) or unknown dims.

    ``denotations`` keeps ONNX's per-dimension denotation strings, when any are set.
    """

    dims: tuple[Dim, ...]
    denotations: tuple[str, ...] | None = None

    def __init__(self, dims: Iterable[Dim], denotations: Iterable[str] | None = None) -> None:
        dims = tuple(dims)
        for d in dims:
            if isinstance(d, bool) or not (d is None or isinstance(d, int | str)):
                raise TypeError(f"a dimension must be int, str or None, not {d!r}")
            if isinstance(d, int) and d < 0:
                raise ValueError(f"negative dimension {d} in shape {dims}")
        object.__setattr__(self, "dims", dims)
        den = tuple(denotations) if denotations is not None else None
        if den is not None and len(den) != len(dims):
            raise ValueError("one denotation per dimension is required")
        if den is not None and not any(den):
            den = None
        object.__setattr__(self, "denotations", den)

    @property
    def rank(self) -> int:
        return len(self.dims)

    def is_static(self) -> bool:
        """True when every dimension is a known integer."""
        return all(isinstance(d, int) for d in self.dims)

    def numel(self) -> int | None:
        """Number of elements, or None when a dimension is not static."""
        if not self.is_static():
            return None
        n = 1
        for d in self.dims:
            n *= d  # type: ignore[operator]
        return n

    def __len__(self) -> int:
        return len(self.dims)

    def __iter__(self):
        return iter(self.dims)

    def __getitem__(self, i):
        return self.dims[i]

    def __str__(self) -> str:
        return "[" + ",".join("?" if d is None else str(d) for d in self.dims) + "]"


class Type:
    """Base class of value types."""

    __slots__ = ()


@dataclasses.dataclass(frozen=True, slots=True)
class _ShapedType(Type):
    """Element type and shape (``shape=None`` means unknown rank); a sequence of dims is
    accepted for ``shape`` and an int for ``dtype``."""

    dtype: DataType
    shape: Shape | None = None
    denotation: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", DataType(self.dtype))
        if self.shape is not None and not isinstance(self.shape, Shape):
            object.__setattr__(self, "shape", Shape(self.shape))


@dataclasses.dataclass(frozen=True, slots=True)
class TensorType(_ShapedType):
    """A dense tensor: element type and shape (``shape=None`` means unknown rank)."""


@dataclasses.dataclass(frozen=True, slots=True)
class SparseTensorType(_ShapedType):
    """A sparse tensor (COO, as ONNX defines it); not a TensorType."""


@dataclasses.dataclass(frozen=True, slots=True)
class SequenceType(Type):
    """A sequence of values of one type (``elem=None`` when unknown)."""

    elem: Type | None
    denotation: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class OptionalType(Type):
    """An optional value of one type."""

    elem: Type | None
    denotation: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class MapType(Type):
    """A map from a scalar key type to values of one type."""

    key: DataType
    value: Type | None
    denotation: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class OpaqueType(Type):
    """An opaque type named by domain and name."""

    domain: str = ""
    name: str = ""
    denotation: str = ""
