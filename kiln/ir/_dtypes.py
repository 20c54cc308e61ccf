"""Element types: ONNX's data types, with their numpy (and ml_dtypes) equivalents."""

from __future__ import annotations

import enum

import ml_dtypes
import numpy as np


class DataType(enum.IntEnum):
    """ONNX tensor element types; the integer values are ONNX's TensorProto codes."""

    UNDEFINED = 0
    FLOAT = 1
    UINT8 = 2
    INT8 = 3
    UINT16 = 4
    INT16 = 5
    INT32 = 6
    INT64 = 7
    STRING = 8
    BOOL = 9
    FLOAT16 = 10
    DOUBLE = 11
    UINT32 = 12
    UINT64 = 13
    COMPLEX64 = 14
    COMPLEX128 = 15
    BFLOAT16 = 16
    FLOAT8E4M3FN = 17
    FLOAT8E4M3FNUZ = 18
    FLOAT8E5M2 = 19
    FLOAT8E5M2FNUZ = 20
    UINT4 = 21
    INT4 = 22
    FLOAT4E2M1 = 23
    FLOAT8E8M0 = 24
    UINT2 = 25
    INT2 = 26
    FLOAT6E2M3 = 27
    FLOAT6E3M2 = 28

    @property
    def short_name(self) -> str:
        """The name used in kiln's text form, e.g. ``f32``, ``i64``, ``bf16``."""
        return _SHORT[self]

    @property
    def bitwidth(self) -> int:
        """Bits per element as stored in ONNX raw data (0 for strings)."""
        return _BITS[self]

    @property
    def numpy(self) -> np.dtype:
        """The numpy dtype that holds one element per item (sub-byte types unpacked)."""
        try:
            return _TO_NUMPY[self]
        except KeyError:
            raise TypeError(f"data type {self.name} has no numpy equivalent") from None

    @staticmethod
    def from_numpy(dtype: np.dtype | type) -> DataType:
        """The ONNX data type of a numpy dtype."""
        dt = np.dtype(dtype).newbyteorder("=")
        if dt.kind in ("U", "S", "O"):
            return DataType.STRING
        try:
            return _FROM_NUMPY[dt]
        except KeyError:
            raise TypeError(f"numpy dtype {dt} has no ONNX equivalent") from None

    @staticmethod
    def from_short_name(name: str) -> DataType:
        """Inverse of :attr:`short_name`."""
        try:
            return _FROM_SHORT[name]
        except KeyError:
            raise ValueError(f"unknown element type {name!r}") from None

    def is_floating(self) -> bool:
        return self in _FLOATING

    def is_integer(self) -> bool:
        return self in _INTEGER


_TO_NUMPY: dict[DataType, np.dtype] = {
    DataType.FLOAT: np.dtype(np.float32),
    DataType.UINT8: np.dtype(np.uint8),
    DataType.INT8: np.dtype(np.int8),
    DataType.UINT16: np.dtype(np.uint16),
    DataType.INT16: np.dtype(np.int16),
    DataType.INT32: np.dtype(np.int32),
    DataType.INT64: np.dtype(np.int64),
    DataType.STRING: np.dtype(object),
    DataType.BOOL: np.dtype(np.bool_),
    DataType.FLOAT16: np.dtype(np.float16),
    DataType.DOUBLE: np.dtype(np.float64),
    DataType.UINT32: np.dtype(np.uint32),
    DataType.UINT64: np.dtype(np.uint64),
    DataType.COMPLEX64: np.dtype(np.complex64),
    DataType.COMPLEX128: np.dtype(np.complex128),
    DataType.BFLOAT16: np.dtype(ml_dtypes.bfloat16),
    DataType.FLOAT8E4M3FN: np.dtype(ml_dtypes.float8_e4m3fn),
    DataType.FLOAT8E4M3FNUZ: np.dtype(ml_dtypes.float8_e4m3fnuz),
    DataType.FLOAT8E5M2: np.dtype(ml_dtypes.float8_e5m2),
    DataType.FLOAT8E5M2FNUZ: np.dtype(ml_dtypes.float8_e5m2fnuz),
    DataType.UINT4: np.dtype(ml_dtypes.uint4),
    DataType.INT4: np.dtype(ml_dtypes.int4),
    DataType.FLOAT4E2M1: np.dtype(ml_dtypes.float4_e2m1fn),
    DataType.FLOAT8E8M0: np.dtype(ml_dtypes.float8_e8m0fnu),
    DataType.UINT2: np.dtype(ml_dtypes.uint2),
    DataType.INT2: np.dtype(ml_dtypes.int2),
    DataType.FLOAT6E2M3: np.dtype(ml_dtypes.float6_e2m3fn),
    DataType.FLOAT6E3M2: np.dtype(ml_dtypes.float6_e3m2fn),
}
_FROM_NUMPY: dict[np.dtype, DataType] = {v: k for k, v in _TO_NUMPY.items() if k != DataType.STRING}

_SHORT: dict[DataType, str] = {
    DataType.UNDEFINED: "undef",
    DataType.FLOAT: "f32",
    DataType.UINT8: "u8",
    DataType.INT8: "i8",
    DataType.UINT16: "u16",
    DataType.INT16: "i16",
    DataType.INT32: "i32",
    DataType.INT64: "i64",
    DataType.STRING: "str",
    DataType.BOOL: "bool",
    DataType.FLOAT16: "f16",
    DataType.DOUBLE: "f64",
    DataType.UINT32: "u32",
    DataType.UINT64: "u64",
    DataType.COMPLEX64: "c64",
    DataType.COMPLEX128: "c128",
    DataType.BFLOAT16: "bf16",
    DataType.FLOAT8E4M3FN: "f8e4m3fn",
    DataType.FLOAT8E4M3FNUZ: "f8e4m3fnuz",
    DataType.FLOAT8E5M2: "f8e5m2",
    DataType.FLOAT8E5M2FNUZ: "f8e5m2fnuz",
    DataType.UINT4: "u4",
    DataType.INT4: "i4",
    DataType.FLOAT4E2M1: "f4e2m1",
    DataType.FLOAT8E8M0: "f8e8m0",
    DataType.UINT2: "u2",
    DataType.INT2: "i2",
    DataType.FLOAT6E2M3: "f6e2m3",
    DataType.FLOAT6E3M2: "f6e3m2",
}
_FROM_SHORT = {v: k for k, v in _SHORT.items()}

_BITS: dict[DataType, int] = {
    DataType.UNDEFINED: 0,
    DataType.STRING: 0,
    DataType.BOOL: 8,
    DataType.UINT4: 4,
    DataType.INT4: 4,
    DataType.FLOAT4E2M1: 4,
    DataType.UINT2: 2,
    DataType.INT2: 2,
    DataType.FLOAT6E2M3: 6,
    DataType.FLOAT6E3M2: 6,
}
for _dt, _np in _TO_NUMPY.items():
    _BITS.setdefault(_dt, _np.itemsize * 8)

_FLOATING = frozenset(
    {
        DataType.FLOAT,
        DataType.FLOAT16,
        DataType.DOUBLE,
        DataType.BFLOAT16,
        DataType.FLOAT8E4M3FN,
        DataType.FLOAT8E4M3FNUZ,
        DataType.FLOAT8E5M2,
        DataType.FLOAT8E5M2FNUZ,
        DataType.FLOAT4E2M1,
        DataType.FLOAT8E8M0,
        DataType.FLOAT6E2M3,
        DataType.FLOAT6E3M2,
    }
)
_INTEGER = frozenset(
    {
        DataType.UINT8,
        DataType.INT8,
        DataType.UINT16,
        DataType.INT16,
        DataType.INT32,
        DataType.INT64,
        DataType.UINT32,
        DataType.UINT64,
        DataType.UINT4,
        DataType.INT4,
        DataType.UINT2,
        DataType.INT2,
    }
)
