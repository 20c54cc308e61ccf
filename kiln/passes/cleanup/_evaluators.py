"""Exact numpy implementations of the ops that constant folding meets most (shape
arithmetic, weight transposes, broadcasts), so fold-constants need not build an ONNX
reference evaluator for each of them.

``evaluate(node, inputs, size_limit)`` answers the outputs, or None when the node is not
one of these ops or falls outside what they implement here (an opset-1 attribute form,
an unusual dtype, a division by zero, mismatched dtypes): the caller then asks
``onnx.reference``, whose results these match exactly on every case they accept (the
tests compare them). A result larger than ``size_limit`` elements raises
:class:`ResultTooLarge` before it is allocated.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from kiln.ir import DataType, Node, Tensor

Inputs = list[np.ndarray | None]
Evaluator = Callable[[Node, Inputs, int], list[np.ndarray] | None]

# Plain numpy dtypes (bool, ints, IEEE floats): no strings, no ml_dtypes types.
_PLAIN = frozenset(np.dtype(t) for t in (
    np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32,
    np.uint64, np.float16, np.float32, np.float64,
))
_NUMERIC = frozenset(d for d in _PLAIN if d.kind in "iuf")
_INTEGER = frozenset(d for d in _PLAIN if d.kind in "iu")


class ResultTooLarge(Exception):
    """A result would have more elements than the size limit."""


def _check_size(shape: tuple[int, ...], limit: int) -> None:
    if math.prod(shape) > limit:
        raise ResultTooLarge


def _ints(array: np.ndarray | None) -> list[int] | None:
    """A 0-D or 1-D integer tensor as a list of Python ints."""
    if array is None or array.dtype not in _INTEGER or array.ndim > 1:
        return None
    return [int(x) for x in array.reshape(-1)]


def _contiguous(array: np.ndarray) -> np.ndarray:
    """``array`` as a C-contiguous array (0-D stays 0-D; numpy scalars become arrays)."""
    array = np.asarray(array)
    return array if array.flags.c_contiguous else array.copy(order="C")


# ---------------------------------------------------------------------------------- ops
def _binary(ufunc: np.ufunc) -> Evaluator:
    """Add, Sub, Mul: numpy broadcasting, ints wrap around like ONNX Runtime's."""

    def run(node: Node, inputs: Inputs, limit: int) -> list[np.ndarray] | None:
        a, b = inputs
        if a is None or b is None or a.dtype != b.dtype or a.dtype not in _NUMERIC:
            return None
        _check_size(np.broadcast_shapes(a.shape, b.shape), limit)
        with np.errstate(all="ignore"):
            return [ufunc(a, b)]

    return run


def _div(node: Node, inputs: Inputs, limit: int) -> list[np.ndarray] | None:
    """Div; integer division truncates toward zero (C++ semantics), in integer math."""
    a, b = inputs
    if a is None or b is None or a.dtype != b.dtype or a.dtype not in _NUMERIC:
        return None
    _check_size(np.broadcast_shapes(a.shape, b.shape), limit)
    if a.dtype.kind == "f":
        with np.errstate(all="ignore"):
            return [np.divide(a, b)]
    if not np.all(b):
        return None  # division by zero: left to the reference (and the runtime)
    q, r = np.divmod(a, b)
    return [q + ((r != 0) & ((a < 0) ^ (b < 0))).astype(q.dtype)]


def _compare(ufunc: np.ufunc) -> Evaluator:
    """Equal, Less, Greater: a bool tensor."""

    def run(node: Node, inputs: Inputs, limit: int) -> list[np.ndarray] | None:
        a, b = inputs
        if a is None or b is None or a.dtype != b.dtype or a.dtype not in _PLAIN:
            return None
        _check_size(np.broadcast_shapes(a.shape, b.shape), limit)
        return [np.asarray(ufunc(a, b))]

    return run


def _not(node: Node, inputs: Inputs, limit: int) -> list[np.ndarray] | None:
    (x,) = inputs
    return [np.logical_not(x)] if x is not None and x.dtype == np.bool_ else None


def _neg(node: Node, inputs: Inputs, limit: int) -> list[np.ndarray] | None:
    (x,) = inputs
    if x is None or x.dtype not in _NUMERIC or x.dtype.kind == "u":
        return None
    with np.errstate(all="ignore"):
        return [np.negative(x)]


def _identity(node: Node, inputs: Inputs, limit: int) -> list[np.ndarray] | None:
    (x,) = inputs
    return None if x is None else [x.copy()]


def _cast(node: Node, inputs: Inputs, limit: int) -> list[np.ndarray] | None:
    (x,) = inputs
    to = node.attr("to")
    if x is None or x.dtype not in _PLAIN or to is None:
        return None
    try:
        target = np.dtype(DataType(to).numpy)
    except ValueError:
        return None
    if target not in _PLAIN:
        return None  # strings, float8, bfloat16, 4-bit types: saturation rules differ
    with np.errstate(all="ignore"):
        return [x.astype(target)]


def _reshape(node: Node, inputs: Inputs, limit: int) -> list[np.ndarray] | None:
    x, shape = inputs
    dims = _ints(shape)
    if x is None or dims is None or shape.ndim != 1:
        return None
    if not node.attr("allowzero", 0):
        if any(d == 0 and i >= x.ndim for i, d in enumerate(dims)):
            return None  # a 0 copies a dim the input does not have
        dims = [x.shape[i] if d == 0 else d for i, d in enumerate(dims)]
    return [np.reshape(x, dims)]


def _axes(node: Node, inputs: Inputs) -> tuple[list[int] | None, bool]:
    """(axes, given) of Squeeze/Unsqueeze: from input 1 (opset 13) or the attribute.

    Empty axes answer (None, True): runtimes disagree on what they mean.
    """
    if len(inputs) > 1 and inputs[1] is not None:
        axes = _ints(inputs[1])
    else:
        axes = node.attr("axes")
        if axes is None:
            return None, False
        axes = [int(a) for a in axes]
    return (axes or None), True


def _unsqueeze(node: Node, inputs: Inputs, limit: int) -> list[np.ndarray] | None:
    x = inputs[0]
    axes, given = _axes(node, inputs)
    if x is None or axes is None or not given:
        return None
    rank = x.ndim + len(axes)
    if len({a % rank for a in axes if -rank <= a < rank}) != len(axes):
        return None  # out of range or repeated
    return [np.expand_dims(x, tuple(axes))]


def _squeeze(node: Node, inputs: Inputs, limit: int) -> list[np.ndarray] | None:
    x = inputs[0]
    axes, given = _axes(node, inputs)
    if x is None or (given and axes is None):
        return None
    if not given:
        return [np.squeeze(x)]
    if len({a % x.ndim for a in axes if -x.ndim <= a < x.ndim}) != len(axes):
        return None
    return [np.squeeze(x, tuple(axes))]


def _gather(node: Node, inputs: Inputs, limit: int) -> list[np.ndarray] | None:
    x, indices = inputs
    if x is None or indices is None or indices.dtype not in _INTEGER or x.ndim == 0:
        return None
    axis = node.attr("axis", 0)
    if not -x.ndim <= axis < x.ndim:
        return None
    axis %= x.ndim
    _check_size(x.shape[:axis] + indices.shape + x.shape[axis + 1:], limit)
    return [np.take(x, indices, axis=axis)]  # out-of-range indices raise


def _concat(node: Node, inputs: Inputs, limit: int) -> list[np.ndarray] | None:
    if not inputs or any(a is None for a in inputs):
        return None
    first = inputs[0]
    axis = node.attr("axis")
    if axis is None or first.ndim == 0 or not -first.ndim <= axis < first.ndim:
        return None
    if any(a.dtype != first.dtype or a.ndim != first.ndim for a in inputs):
        return None
    return [np.concatenate(inputs, axis=axis)]


def _slice(node: Node, inputs: Inputs, limit: int) -> list[np.ndarray] | None:
    if node.attr("starts") is not None or not 3 <= len(inputs) <= 5:
        return None  # Slice-1 takes attributes
    x, first, last, axes_in, steps_in = [*inputs, None, None][:5]
    starts, ends = _ints(first), _ints(last)
    if x is None or x.ndim == 0 or starts is None or ends is None:
        return None
    axes = list(range(len(starts))) if axes_in is None else _ints(axes_in)
    steps = [1] * len(starts) if steps_in is None else _ints(steps_in)
    if axes is None or steps is None or 0 in steps or \
            not len(starts) == len(ends) == len(axes) == len(steps):
        return None
    if any(not -x.ndim <= a < x.ndim for a in axes) or \
            len({a % x.ndim for a in axes}) != len(axes):
        return None
    index = [slice(None)] * x.ndim
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        index[axis] = slice(start, end, step)
    return [x[tuple(index)]]


def _range(node: Node, inputs: Inputs, limit: int) -> list[np.ndarray] | None:
    start, stop, step = inputs
    if any(a is None or a.dtype not in _INTEGER or a.size != 1 for a in inputs):
        return None
    if not start.dtype == stop.dtype == step.dtype:
        return None
    lo, hi, delta = int(start.reshape(-1)[0]), int(stop.reshape(-1)[0]), int(step.reshape(-1)[0])
    if delta == 0:
        return None
    _check_size((max(0, -((lo - hi) // delta)),), limit)
    return [np.arange(lo, hi, delta).astype(start.dtype)]


def _where(node: Node, inputs: Inputs, limit: int) -> list[np.ndarray] | None:
    cond, x, y = inputs
    if cond is None or x is None or y is None or cond.dtype != np.bool_:
        return None
    if x.dtype != y.dtype or x.dtype not in _PLAIN:
        return None
    _check_size(np.broadcast_shapes(cond.shape, x.shape, y.shape), limit)
    return [np.where(cond, x, y)]


def _constant_of_shape(node: Node, inputs: Inputs, limit: int) -> list[np.ndarray] | None:
    (shape,) = inputs
    dims = _ints(shape)
    if dims is None or shape.ndim != 1 or any(d < 0 for d in dims):
        return None
    value = node.attr("value")
    fill = np.zeros(1, np.float32) if value is None else value
    if isinstance(fill, Tensor):
        fill = fill.numpy()
    if not isinstance(fill, np.ndarray) or fill.size != 1 or fill.dtype not in _PLAIN:
        return None
    _check_size(tuple(dims), limit)
    return [np.full(dims, fill.reshape(-1)[0], dtype=fill.dtype)]


def _expand(node: Node, inputs: Inputs, limit: int) -> list[np.ndarray] | None:
    x, shape = inputs
    dims = _ints(shape)
    if x is None or dims is None or shape.ndim != 1 or x.dtype not in _PLAIN:
        return None
    if any(d < 0 for d in dims):
        return None
    out = np.broadcast_shapes(x.shape, tuple(dims))  # ValueError when they do not broadcast
    _check_size(out, limit)
    return [np.array(np.broadcast_to(x, out))]


def _transpose(node: Node, inputs: Inputs, limit: int) -> list[np.ndarray] | None:
    (x,) = inputs
    perm = node.attr("perm")
    if x is None:
        return None
    if perm is None or len(perm) == 0:
        return [np.transpose(x)]
    if sorted(perm) != list(range(x.ndim)):
        return None
    return [np.transpose(x, [int(p) for p in perm])]


def _shape(node: Node, inputs: Inputs, limit: int) -> list[np.ndarray] | None:
    (x,) = inputs
    if x is None:
        return None
    start, end = node.attr("start", 0), node.attr("end")
    return [np.array(x.shape[start:end], dtype=np.int64)]


def _size(node: Node, inputs: Inputs, limit: int) -> list[np.ndarray] | None:
    (x,) = inputs
    return None if x is None else [np.array(x.size, dtype=np.int64)]


# op type (default domain) -> its numpy implementation.
EVALUATORS: dict[str, Evaluator] = {
    "Add": _binary(np.add),
    "Sub": _binary(np.subtract),
    "Mul": _binary(np.multiply),
    "Div": _div,
    "Neg": _neg,
    "Equal": _compare(np.equal),
    "Less": _compare(np.less),
    "Greater": _compare(np.greater),
    "Not": _not,
    "Identity": _identity,
    "Cast": _cast,
    "Reshape": _reshape,
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "Gather": _gather,
    "Concat": _concat,
    "Slice": _slice,
    "Range": _range,
    "Where": _where,
    "ConstantOfShape": _constant_of_shape,
    "Expand": _expand,
    "Transpose": _transpose,
    "Shape": _shape,
    "Size": _size,
}


def evaluate(node: Node, inputs: Inputs, size_limit: int) -> list[np.ndarray] | None:
    """The outputs of ``node`` on constant ``inputs``, computed with numpy, or None when
    this module does not implement the case (or numpy refuses it: the reference decides).

    Raises:
        ResultTooLarge: an output would have more than ``size_limit`` elements.
    """
    run = EVALUATORS.get(node.op_type) if node.domain == "" else None
    if run is None or len(node.outputs) != 1:
        return None
    try:
        results = run(node, inputs, size_limit)
    except (ValueError, IndexError, TypeError):
        return None
    if results is None:
        return None
    return [_contiguous(r) for r in results]
