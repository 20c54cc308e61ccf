"""Constant tensors: numpy arrays, possibly memory-mapped from external data."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import numpy as np

from kiln.ir._dtypes import DataType


@dataclasses.dataclass(frozen=True, slots=True)
class ExternalLocation:
    """Where a tensor's bytes live outside the model file (as read from ONNX external data)."""

    location: str
    offset: int
    length: int
    checksum: str = ""


def _holds(np_dtype: np.dtype, dtype: DataType) -> bool:
    """Whether an array of ``np_dtype`` holds elements of ONNX type ``dtype`` as is."""
    if dtype == DataType.STRING:
        return np_dtype.kind in ("O", "U", "S")
    return dtype != DataType.UNDEFINED and np_dtype.newbyteorder("=") == dtype.numpy


class Tensor:
    """A constant tensor backed by a numpy array.

    The array may be created lazily (``loader``), e.g. memory-mapped from an external data
    file, so loading a model does not read its weights. Sub-byte types (int4, uint4, ...)
    are held unpacked, one element per numpy item, with ml_dtypes dtypes.
    """

    __slots__ = ("_array", "_loader", "dtype", "shape", "name", "doc_string", "metadata_props",
                 "external")

    def __init__(
        self,
        array: np.ndarray | None = None,
        *,
        dtype: DataType | None = None,
        shape: Sequence[int] | None = None,
        loader: Callable[[], np.ndarray] | None = None,
        name: str = "",
        doc_string: str = "",
        metadata_props: dict[str, str] | None = None,
        external: ExternalLocation | None = None,
    ) -> None:
        if array is None and loader is None:
            raise ValueError("a Tensor needs an array or a loader")
        if array is not None:
            array = np.asarray(array)
            if dtype is None:
                dtype = DataType.from_numpy(array.dtype)
            if shape is None:
                shape = array.shape
            if tuple(shape) != array.shape:
                raise ValueError(f"tensor {name!r}: array shape {array.shape} != shape "
                                 f"{tuple(shape)}")
            if not _holds(array.dtype, DataType(dtype)):
                raise ValueError(f"tensor {name!r}: numpy {array.dtype} cannot hold "
                                 f"{DataType(dtype).name}")
        if dtype is None or shape is None:
            raise ValueError("a lazily loaded Tensor needs its dtype and shape")
        self._array = array
        self._loader = loader
        self.dtype = DataType(dtype)
        self.shape: tuple[int, ...] = tuple(int(d) for d in shape)
        self.name = name
        self.doc_string = doc_string
        self.metadata_props = dict(metadata_props or {})
        self.external = external

    def numpy(self) -> np.ndarray:
        """The tensor's data (loaded on first use when lazy)."""
        if self._array is None:
            array = self._loader()  # type: ignore[misc]
            if tuple(array.shape) != self.shape:
                raise ValueError(
                    f"tensor {self.name!r}: loaded shape {array.shape} != declared {self.shape}"
                )
            self._array = array
        return self._array

    @property
    def is_loaded(self) -> bool:
        return self._array is not None

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes this tensor takes in ONNX raw data (sub-byte types packed)."""
        if self.dtype == DataType.STRING:
            return int(sum(len(s.encode() if isinstance(s, str) else s)
                           for s in self.numpy().flat))
        return (self.size * self.dtype.bitwidth + 7) // 8

    def __array__(self, dtype=None, copy=None):
        a = self.numpy()
        return a if dtype is None else a.astype(dtype)

    def __repr__(self) -> str:
        return f"Tensor({self.dtype.short_name}{list(self.shape)}, name={self.name!r})"


class SparseTensor:
    """ONNX's sparse (COO) tensor: values, indices and the dense shape."""

    __slots__ = ("values", "indices", "dims")

    def __init__(self, values: Tensor, indices: Tensor, dims: Sequence[int]) -> None:
        self.values = values
        self.indices = indices
        self.dims = tuple(int(d) for d in dims)

    @property
    def name(self) -> str:
        return self.values.name

    def __repr__(self) -> str:
        return f"SparseTensor({self.values.dtype.short_name}{list(self.dims)}, nnz={self.values.size})"
