"""``eliminate-no-ops``: remove ops that return their input unchanged.

The rules are a table, one line per op. Each rule reads only static shapes, known dtypes
and constant inputs, and answers the value the node's first output equals, or None when
it cannot prove the node is a no-op (an unknown shape or a non-constant input).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import numpy as np

from kiln.ir import Model, Node, Value
from kiln.passes._base import Pass, PassResult, register_pass
from kiln.passes.cleanup._util import (
    all_graphs,
    can_take_name,
    const_array,
    replace_value,
    static_shape,
)

INT64_MAX = np.iinfo(np.int64).max


def _input(node: Node, i: int) -> Value | None:
    return node.inputs[i] if i < len(node.inputs) else None


def _ints(node: Node, i: int) -> list[int] | None:
    """Constant input ``i`` as a list of ints, or None when it is not a constant."""
    data = const_array(_input(node, i))
    return None if data is None else [int(x) for x in data.reshape(-1)]


def _rank(value: Value | None) -> int | None:
    shape = value.shape if value is not None else None
    return None if shape is None else shape.rank


def _identity(node: Node) -> Value | None:
    return node.inputs[0]


def _inference_dropout(node: Node) -> Value | None:
    training = const_array(_input(node, 2))
    if _input(node, 2) is not None and (training is None or bool(training.reshape(-1)[0])):
        return None
    mask_read = any(out.uses() or out.is_graph_output() for out in node.outputs[1:])
    return None if mask_read else node.inputs[0]


def _cast_to_same_type(node: Node) -> Value | None:
    x = node.inputs[0]
    same = x is not None and x.dtype is not None and int(x.dtype) == node.attr("to")
    return x if same else None


def _reshape_to_same_shape(node: Node) -> Value | None:
    x, target = node.inputs[0], _ints(node, 1)
    if x is None or x.shape is None or target is None or len(target) != x.shape.rank:
        return None
    copy_zero = not node.attr("allowzero", 0)
    dims = x.shape.dims
    free = [i for i, (t, d) in enumerate(zip(target, dims, strict=True))
            if not (t == d or (t == 0 and copy_zero))]
    # One -1 among otherwise equal dims must be that dim again (unless a dim is zero).
    if free == [] or (len(free) == 1 and target[free[0]] == -1 and 0 not in dims
                      and target.count(-1) == 1):
        return x
    return None


def _transpose_perm(node: Node) -> list[int] | None:
    perm = node.attr("perm")
    if perm is not None:
        return list(perm)
    rank = _rank(node.inputs[0])
    return None if rank is None else list(reversed(range(rank)))


def _identity_transpose(node: Node) -> Value | None:
    perm = _transpose_perm(node)
    if perm is None:
        return None
    if perm == list(range(len(perm))):
        return node.inputs[0]
    first = node.inputs[0].producer() if node.inputs[0] is not None else None
    if first is None or first.domain != "" or first.op_type != "Transpose":
        return None
    inner = _transpose_perm(first)
    if inner is None or len(inner) != len(perm):
        return None
    composed = [inner[p] for p in perm]
    return first.inputs[0] if composed == list(range(len(perm))) else None


def _full_slice(node: Node) -> Value | None:
    x = node.inputs[0]
    starts, ends = _ints(node, 1), _ints(node, 2)
    rank = _rank(x)
    if x is None or x.shape is None or starts is None or ends is None or rank is None:
        return None
    axes = _ints(node, 3) if _input(node, 3) is not None else list(range(len(starts)))
    steps = _ints(node, 4) if _input(node, 4) is not None else [1] * len(starts)
    if axes is None or steps is None or not len(starts) == len(ends) == len(axes) == len(steps):
        return None
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        dim = x.shape.dims[axis % rank]
        reaches_end = end >= INT64_MAX or (isinstance(dim, int) and end >= dim)
        from_start = start == 0 or (isinstance(dim, int) and start <= -dim)
        if step != 1 or not (reaches_end and from_start):
            return None
    return x


def _expand_to_same_shape(node: Node) -> Value | None:
    x, target = node.inputs[0], _ints(node, 1)
    if x is None or x.shape is None or target is None or len(target) > x.shape.rank:
        return None
    dims = x.shape.dims[x.shape.rank - len(target):]
    same = all(t == 1 or t == d for t, d in zip(target, dims, strict=True))
    return x if same else None


def _zero_pad(node: Node) -> Value | None:
    pads = _ints(node, 1)
    return node.inputs[0] if pads is not None and not any(pads) else None


def _flatten_rank2(node: Node) -> Value | None:
    rank = _rank(node.inputs[0])
    return node.inputs[0] if rank == 2 and node.attr("axis", 1) in (1, -1) else None


def _squeeze_nothing(node: Node) -> Value | None:
    shape = static_shape(node.inputs[0])
    no_axes = _input(node, 1) is None and node.attr("axes") is None
    return node.inputs[0] if no_axes and shape is not None and 1 not in shape else None


# op type (default domain) -> rule answering the value the node's output equals.
RULES: dict[str, Callable[[Node], Value | None]] = {
    "Identity": _identity,                  # Identity(x) = x
    "Dropout": _inference_dropout,          # Dropout(x) = x when not training, mask unread
    "Cast": _cast_to_same_type,             # Cast<to=dtype(x)>(x) = x
    "Reshape": _reshape_to_same_shape,      # Reshape(x, shape(x)) = x
    "Transpose": _identity_transpose,       # Transpose<identity perm>(x), T(T(x)) = x
    "Slice": _full_slice,                   # Slice(x, 0, end) over whole axes = x
    "Expand": _expand_to_same_shape,        # Expand(x, s) = x when s broadcasts to shape(x)
    "Pad": _zero_pad,                       # Pad(x, 0...) = x
    "Flatten": _flatten_rank2,              # Flatten<axis=1>(x) = x for rank-2 x
    "Squeeze": _squeeze_nothing,            # Squeeze(x) = x when x has no dim of size 1
}


def _apply(node: Node) -> bool:
    rule = RULES.get(node.op_type) if node.domain == "" else None
    replacement = rule(node) if rule is not None else None
    if replacement is None:
        return False
    old = node.outputs[0]
    if old.is_graph_output() and node.op_type == "Identity" \
            and not can_take_name(old, replacement):
        return False  # it would only come back as an Identity
    replace_value(old, replacement)
    if all(not v.uses() and not v.is_graph_output() for v in node.outputs):
        node.graph.remove(node)
    return True


@register_pass
class EliminateNoOps(Pass):
    """Replace no-op nodes by their input; stats count removals per op type."""

    name = "eliminate-no-ops"

    def call(self, model: Model) -> PassResult:
        stats: Counter[str] = Counter()
        for graph in all_graphs(model):
            for node in graph:
                if _apply(node):
                    stats[node.op_type] += 1
        return PassResult(model, bool(stats), stats)
