"""Helpers shared by the fusion rules: constant weights and per-channel vectors."""

from __future__ import annotations

import numpy as np

from kiln.ir import Node, Value
from kiln.passes.cleanup._util import const_array
from kiln.passes.rewrite import MatchResult

FLOAT_TYPES = (np.float16, np.float32, np.float64)


def float_const(value: Value | None, what: str) -> np.ndarray | MatchResult:
    """The constant float data of ``value``, or a failure saying why not."""
    data = const_array(value)
    if data is None:
        return MatchResult.fail(f"{what} is not constant")
    if data.dtype.type not in FLOAT_TYPES:
        return MatchResult.fail(f"{what} is {data.dtype}, not a float type")
    return data


def channel_vector(data: np.ndarray, rank: int, channels: int) -> np.ndarray | None:
    """``data`` as a vector over axis 1 of a rank-``rank`` tensor with ``channels``
    channels, when it broadcasts only along that axis; else None."""
    if data.ndim > rank:
        return None
    dims = (1,) * (rank - data.ndim) + data.shape
    if any(d != 1 for i, d in enumerate(dims) if i != 1) or dims[1] not in (1, channels):
        return None
    return np.broadcast_to(data.reshape(-1), (channels,))


def optional_input(node: Node, index: int) -> Value | None:
    """Input ``index`` of ``node``, or None when it is absent."""
    return node.inputs[index] if index < len(node.inputs) else None

