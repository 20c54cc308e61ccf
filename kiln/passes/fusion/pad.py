"""``fuse-pad``: a constant-mode Pad in front of a Conv, AveragePool or MaxPool folds into
the op's own ``pads`` attribute.

Only a Pad with constant, non-negative pads on the spatial axes (never on N or C) and a
constant value folds, into an op with ``auto_pad=NOTSET`` and ``ceil_mode=0`` (with
``ceil_mode=1`` the output size depends on where the padding sits). The fused op pads with
what it always pads with, so the Pad's value must give the same result:

- Conv pads with zeros: only a zero Pad folds.
- AveragePool: only a zero Pad folds, and the fused pool counts its padding
  (``count_include_pad=1``), as the original did with the Pad's zeros. A pool that already
  has pads of its own with ``count_include_pad=0`` is left alone: one pool cannot count
  some pads and not others.
- MaxPool ignores its padding: a Pad value folds only when it cannot win the max, i.e. it
  is at most a proven lower bound of the input (-inf for floats, the type's minimum for
  integers, 0 after Relu, Sigmoid, Softmax, Abs, ..., the constant min of a Clip), and
  every window of the fused pool holds at least one real element: no pad on an axis may
  reach the window's extent ``dilation * (kernel - 1) + 1`` (with a dilation above 1 the
  input size must be known and every window is checked). A zero Pad before a MaxPool whose
  input can be negative changes the results and never folds. A MaxPool whose Indices
  output exists is left alone (the indices would count the Pad's padding).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from kiln.ir import Node, Value
from kiln.passes._base import register_pass
from kiln.passes.cleanup._util import const_array
from kiln.passes.fusion._pass import RuleSetPass
from kiln.passes.fusion._util import optional_input
from kiln.passes.rewrite import Match, MatchResult, Rule, RuleSet, register_rules

_ZERO_LOWER_BOUND = ("Relu", "Sigmoid", "Softmax", "Abs", "Exp", "Softplus", "HardSigmoid")


def _clip_min(node: Node) -> float | None:
    if "min" in node.attributes:  # Clip before opset 11
        return float(node.attr("min"))
    low = const_array(optional_input(node, 1))
    return None if low is None or low.size != 1 else float(low.reshape(-1)[0])


# op type (default domain) -> the least value its output can take, or None when unknown.
LOWER_BOUNDS: dict[str, Callable[[Node], float | None]] = {
    **{op: (lambda _node: 0.0) for op in _ZERO_LOWER_BOUND},  # Relu(x) >= 0, ...
    "Clip": _clip_min,                                         # Clip(x, lo, hi) >= lo
}


def lower_bound(value: Value) -> float:
    """A proven lower bound of ``value``'s elements: its producer's range and its type's
    minimum (-inf for floats or an unknown type)."""
    bound = -np.inf
    dtype = value.dtype.numpy if value.dtype is not None else None
    if dtype is not None and np.issubdtype(dtype, np.integer):
        bound = float(np.iinfo(dtype).min)
    producer = value.producer()
    rule = LOWER_BOUNDS.get(producer.op_type) if producer and producer.domain == "" else None
    found = rule(producer) if rule is not None else None
    return bound if found is None else max(bound, found)


class _Padding(NamedTuple):
    """What a Pad adds: ``begins``/``ends`` over the spatial axes, and the pad value."""

    begins: list[int]
    ends: list[int]
    value: float


def _ints(value: Value | None, what: str) -> list[int] | MatchResult:
    data = const_array(value)
    if data is None:
        return MatchResult.fail(f"the Pad's {what} are not constant")
    return [int(v) for v in data.reshape(-1)]


def _pad_value(pad: Node) -> float | MatchResult:
    if "value" in pad.attributes:  # Pad before opset 11
        return float(pad.attr("value"))
    given = optional_input(pad, 2)
    if given is None:
        return 0.0
    data = const_array(given)
    if data is None or data.size != 1:
        return MatchResult.fail("the Pad's value is not a constant scalar")
    return float(data.reshape(-1)[0])


def _op_rank(op: Node, x: Value | None) -> int | None:
    """The rank of ``op``'s input: from ``x``'s shape, kernel_shape, or a Conv's weight."""
    if x is not None and x.shape is not None:
        return x.shape.rank
    kernel = op.attr("kernel_shape")
    if kernel is not None:
        return len(kernel) + 2
    weight = optional_input(op, 1) if op.op_type == "Conv" else None
    shape = weight.shape if weight is not None else None
    return shape.rank if shape is not None else None


def _padding(pad: Node, op: Node) -> _Padding | MatchResult:
    """The spatial padding of a constant-mode Pad in front of ``op``, or why not."""
    mode = pad.attr("mode", "constant")
    if mode not in ("constant", b"constant"):
        return MatchResult.fail(f"the Pad's mode is {mode!r}, not 'constant'")
    old_style = "pads" in pad.attributes  # Pad before opset 11
    pads = list(pad.attr("pads")) if old_style else _ints(optional_input(pad, 1), "pads")
    if isinstance(pads, MatchResult):
        return pads
    value = _pad_value(pad)
    if isinstance(value, MatchResult):
        return value
    axes_input = None if old_style else optional_input(pad, 3)
    rank = len(pads) // 2 if axes_input is None else _op_rank(op, pad.inputs[0])
    if rank is None:
        return MatchResult.fail("the Pad has axes and the rank of its input is unknown")
    axes = list(range(rank)) if axes_input is None else _ints(axes_input, "axes")
    if isinstance(axes, MatchResult):
        return axes
    bad_axes = any(not -rank <= a < rank for a in axes) or len({a % rank for a in axes}) < len(axes)
    if len(pads) != 2 * len(axes) or bad_axes:
        return MatchResult.fail(f"the Pad's pads {pads} do not fit axes {axes} of rank {rank}")
    begins, ends = [0] * rank, [0] * rank
    for axis, begin, end in zip(axes, pads[:len(axes)], pads[len(axes):], strict=True):
        begins[axis % rank], ends[axis % rank] = begin, end
    if min(begins + ends) < 0:
        return MatchResult.fail(f"the Pad crops (negative pads {pads})")
    if any(begins[:2]) or any(ends[:2]):
        return MatchResult.fail(f"the Pad pads the batch or channel axis (pads {pads})")
    return _Padding(begins[2:], ends[2:], value)


def _fused_pads(m: Match) -> tuple[_Padding, list[int]] | MatchResult:
    """The Pad's padding and the fused op's new ``pads``, or why they do not fold."""
    op, pad = m["consumer"], m["pad"]
    if any(a.ref_attr_name for n in (op, pad) for a in n.attributes.values()):
        return MatchResult.fail("an attribute refers to an attribute of the enclosing function")
    padding = _padding(pad, op)
    if isinstance(padding, MatchResult):
        return padding
    spatial = len(padding.begins)
    auto_pad = op.attr("auto_pad", "NOTSET")
    if auto_pad not in ("NOTSET", b"NOTSET"):
        return MatchResult.fail(f"{op.op_type} has auto_pad={auto_pad!r} (only NOTSET folds)")
    if op.attr("ceil_mode", 0):
        return MatchResult.fail(f"{op.op_type} has ceil_mode=1 (its output size depends on "
                                "where the padding is)")
    kernel = op.attr("kernel_shape")
    if kernel is not None and len(kernel) != spatial:
        return MatchResult.fail(f"{op.op_type} has {len(kernel)} spatial axes, the Pad {spatial}")
    old = list(op.attr("pads", [0] * 2 * spatial))
    if len(old) != 2 * spatial:
        return MatchResult.fail(f"{op.op_type} pads {old} do not cover {spatial} spatial axes")
    new = [a + b for a, b in zip(old, padding.begins + padding.ends, strict=True)]
    return padding, new


def _conv_check(m: Match) -> MatchResult:
    fused = _fused_pads(m)
    if isinstance(fused, MatchResult):
        return fused
    padding, pads = fused
    if padding.value != 0:
        return MatchResult.fail(f"Conv pads with zeros, the Pad with {padding.value}")
    return MatchResult.ok(pads=pads, changes={})


def _average_check(m: Match) -> MatchResult:
    fused = _fused_pads(m)
    if isinstance(fused, MatchResult):
        return fused
    padding, pads = fused
    pool = m["consumer"]
    if padding.value != 0:
        return MatchResult.fail(f"AveragePool pads with zeros, the Pad with {padding.value}")
    if not pool.attr("count_include_pad", 0) and any(pool.attr("pads", [])):
        return MatchResult.fail("AveragePool has pads of its own that it does not count "
                                "(count_include_pad=0) and would have to count the Pad's")
    return MatchResult.ok(pads=pads, changes={"count_include_pad": 1})


def _all_windows_real(size: int, begin: int, end: int, extent: int, stride: int,
                      dilation: int) -> bool:
    """True when every window along one axis (input ``size``, padding ``begin``/``end``,
    ``ceil_mode=0``) has at least one tap on a real element."""
    count = (size + begin + end - extent) // stride + 1
    for j in range(max(count, 0)):
        taps = range(j * stride, j * stride + extent, dilation)
        if not any(begin <= t < begin + size for t in taps):
            return False
    return True


def _max_check(m: Match) -> MatchResult:
    pool = m["consumer"]
    if len(pool.outputs) > 1:
        return MatchResult.fail("MaxPool has an Indices output (the indices would count the "
                                "Pad's padding)")
    fused = _fused_pads(m)
    if isinstance(fused, MatchResult):
        return fused
    padding, pads = fused
    x = m["x"]
    bound = lower_bound(x)
    if not padding.value <= bound:
        known = "no lower bound is known" if bound == -np.inf else f"it is only known >= {bound}"
        return MatchResult.fail(f"the Pad value {padding.value} can win the max: the input "
                                f"%{x.name} can be smaller ({known})")
    kernel = list(pool.attr("kernel_shape", []))
    spatial = len(kernel)
    if spatial != len(padding.begins):
        return MatchResult.fail("MaxPool has no kernel_shape for the Pad's spatial axes")
    strides = list(pool.attr("strides", [1] * spatial))
    dilations = list(pool.attr("dilations", [1] * spatial))
    dims = list(x.shape.dims[2:]) if x.shape is not None else [None] * spatial
    for axis in range(spatial):
        extent = dilations[axis] * (kernel[axis] - 1) + 1
        begin, end = pads[axis], pads[axis + spatial]
        if max(begin, end) >= extent:
            return MatchResult.fail(f"pads {begin},{end} on spatial axis {axis} reach the window "
                                    f"extent {extent}: a window could hold only padding")
        if dilations[axis] == 1:
            continue
        size = dims[axis]
        if not isinstance(size, int):
            return MatchResult.fail(f"dilation {dilations[axis]} on spatial axis {axis} and "
                                    "the input size is unknown: a window could miss the input")
        if not _all_windows_real(size, begin, end, extent, strides[axis], dilations[axis]):
            return MatchResult.fail(f"with dilation {dilations[axis]} on spatial axis {axis}, "
                                    "a window holds only padding")
    return MatchResult.ok(pads=pads, changes={})


def _rule(op_type: str, check: Callable[[Match], MatchResult]) -> Rule:
    def pattern(op, x):
        padded = op.Pad(x, _bind="pad", _allow_other_inputs=True)
        return getattr(op, op_type)(padded, _bind="consumer", _allow_other_inputs=True)

    def replacement(op, x, consumer, pads, changes, **_):
        attrs = {**consumer.attributes, "pads": pads, **changes}
        out = getattr(op, op_type)(x, *consumer.inputs[1:], **attrs)
        out.type = consumer.outputs[0].type
        return out

    return Rule(f"fuse-pad-{op_type.lower()}", pattern, replacement, check)


RULES = register_rules([
    _rule("Conv", _conv_check),
    _rule("AveragePool", _average_check),
    _rule("MaxPool", _max_check),
], group="fuse-pad")


@register_pass
class FusePad(RuleSetPass):
    """Fold a constant-mode Pad into the pads of the Conv / AveragePool / MaxPool it feeds."""

    name = "fuse-pad"
    rules = RuleSet(RULES)
