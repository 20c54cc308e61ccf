"""``fuse-layout``: chains of Transpose and view ops (Reshape, Flatten, Squeeze, Unsqueeze)
become one op.

- ``fuse-transpose-transpose``: ``Transpose(Transpose(x, p1), p2)`` is one Transpose with
  perm ``p1[p2[i]]``, or ``x`` when that is the identity.
- ``fuse-transpose-as-reshape``: a Transpose that moves only axes of size 1 (the others
  keep their order) moves no data: it is a Reshape to its output shape, or ``x`` when the
  shape stays the same. The input's shape must be known; a symbolic dim counts as not 1
  and at most one may remain (it becomes the Reshape's ``-1``).
- ``fuse-<inner>-<outer>`` for any two view ops: ``outer(inner(x))`` is one
  ``Reshape(x, target)``. The target is the outer op's output shape when it is static, else
  the outer Reshape's own shape when its meaning does not depend on the intermediate shape
  (``allowzero=1``, or no 0 in it; a 0 that copies a dim is resolved from the intermediate
  shape, or kept when the inner Reshape copied the same dim of ``x``), else the outer
  output shape with one symbolic dim as ``-1``.

The intermediate value must have no other reader (the rewriter's default). A Reshape to
its input's own shape is left to ``eliminate-no-ops``.
"""

from __future__ import annotations

import numpy as np

from kiln.ir import Node, Value
from kiln.passes._base import register_pass
from kiln.passes.cleanup._util import const_array
from kiln.passes.fusion._pass import RuleSetPass
from kiln.passes.fusion._util import optional_input
from kiln.passes.rewrite import Match, MatchResult, Rule, RuleSet, register_rules

VIEW_OPS = ("Reshape", "Flatten", "Squeeze", "Unsqueeze")


def _perm(node: Node) -> list[int] | None:
    """The perm of a Transpose (its default reverses the axes of an input of known rank)."""
    perm = node.attr("perm")
    if perm is not None:
        return list(perm)
    shape = node.inputs[0].shape if node.inputs[0] is not None else None
    return None if shape is None else list(reversed(range(shape.rank)))


def _static(dims: list) -> bool:
    return all(isinstance(d, int) and d >= 1 for d in dims)


def _as_target(dims: list, what: str) -> list[int] | MatchResult:
    """``dims`` as a Reshape target: known sizes as they are and one symbolic dim as -1;
    a failure when two dims are unknown or a size is not positive."""
    unknown = [d for d in dims if not isinstance(d, int)]
    text = f"[{', '.join(map(str, dims))}]"
    if len(unknown) > 1:
        return MatchResult.fail(f"{what} {text} has more than one unknown dim (a Reshape "
                                "infers only one)")
    if any(isinstance(d, int) and d < 1 for d in dims):
        return MatchResult.fail(f"{what} {text} has a size that is not positive")
    return [d if isinstance(d, int) else -1 for d in dims]


def _transpose_pair_check(m: Match) -> MatchResult:
    first, second = m["first"], m["second"]
    p1, p2 = _perm(first), _perm(second)
    if p1 is None or p2 is None:
        return MatchResult.fail("a Transpose has no perm and its input's rank is unknown")
    if sorted(p2) != list(range(len(p1))):
        return MatchResult.fail(f"perms {p1} and {p2} have different ranks")
    return MatchResult.ok(perm=[p1[i] for i in p2])


def _transpose_pair_replacement(op, x, second, perm, **_):
    if perm == list(range(len(perm))):
        return x
    out = op.Transpose(x, perm=perm)
    out.type = second.outputs[0].type
    return out


def _as_reshape_check(m: Match) -> MatchResult:
    transpose, x = m["transpose"], m["x"]
    perm = _perm(transpose)
    if perm is None or x is None or x.shape is None or x.shape.rank != len(perm):
        return MatchResult.fail("the rank of the Transpose's input is unknown")
    if perm == list(range(len(perm))):
        return MatchResult.fail("the perm is the identity (eliminate-no-ops removes it)")
    dims = list(x.shape.dims)
    moved = [p for p in perm if dims[p] != 1]
    if moved != sorted(moved):
        return MatchResult.fail(f"perm {perm} reorders axes not known to be of size 1 "
                                f"(input shape {x.shape})")
    out = [dims[p] for p in perm]
    if out == dims:
        return MatchResult.ok(target=None)
    known = transpose.outputs[0].shape
    if known is not None and _static(list(known.dims)):
        return MatchResult.ok(target=list(known.dims))
    target = _as_target(out, "the output shape")
    return target if isinstance(target, MatchResult) else MatchResult.ok(target=target)


def _reshape(op, x: Value, anchor: Node, target: list[int] | None = None,
             shape: Value | None = None, allowzero: int = 0) -> Value:
    """``Reshape(x, shape)`` (a new initializer for ``target`` when ``shape`` is None)
    computing the anchor's output."""
    if shape is None:
        name = anchor.outputs[0].name or "reshape"
        shape = op.initializer(np.array(target, dtype=np.int64), f"{name}_shape")
    out = op.Reshape(x, shape, **({"allowzero": 1} if allowzero else {}))
    out.type = anchor.outputs[0].type
    return out


def _as_reshape_replacement(op, x, transpose, target, **_):
    return x if target is None else _reshape(op, x, transpose, target)


def _resolve_copies(shape: list[int], inner: Node) -> list[int] | None:
    """The outer Reshape's ``shape`` with each copying 0 replaced by the intermediate's
    size, or kept when the inner Reshape copied the same dim of its input; None when a 0
    cannot be resolved."""
    dims = inner.outputs[0].shape
    copied = None
    if inner.op_type == "Reshape" and not inner.attr("allowzero", 0):
        copied = const_array(optional_input(inner, 1))
    resolved = []
    for i, size in enumerate(shape):
        if size != 0:
            resolved.append(size)
        elif copied is not None and i < copied.size and int(copied.reshape(-1)[i]) == 0:
            resolved.append(0)
        elif dims is not None and i < dims.rank and isinstance(dims[i], int) and dims[i] >= 1:
            resolved.append(dims[i])
        else:
            return None
    return resolved


def _outer_reshape(m: Match) -> MatchResult:
    """How an outer Reshape's own shape carries over to ``x``, or why it does not."""
    outer = m["outer"]
    shape = optional_input(outer, 1)
    if outer.attr("allowzero", 0):
        return MatchResult.ok(shape=shape, allowzero=1)  # a 0 is a size, not a copy
    data = const_array(shape)
    if data is None:
        return MatchResult.fail("the Reshape's shape is computed (a 0 in it would copy a dim "
                                "of the intermediate)")
    sizes = [int(v) for v in data.reshape(-1)]
    if 0 not in sizes:
        return MatchResult.ok(shape=shape)
    resolved = _resolve_copies(sizes, m["inner"])
    if resolved is None:
        return MatchResult.fail(f"the Reshape's shape {sizes} copies a dim of the intermediate "
                                "that is not known")
    return MatchResult.ok(target=resolved)


def _chain_check(m: Match) -> MatchResult:
    outer = m["outer"]
    out = outer.outputs[0].shape
    dims = list(out.dims) if out is not None else None
    if dims is not None and _static(dims):
        own = const_array(optional_input(outer, 1)) if outer.op_type == "Reshape" else None
        if own is not None and own.reshape(-1).tolist() == dims:
            return MatchResult.ok(shape=outer.inputs[1])  # the outer Reshape's own shape
        return MatchResult.ok(target=dims)
    reasons = []
    if outer.op_type == "Reshape":
        carried = _outer_reshape(m)
        if carried:
            return carried
        reasons.append(carried.reason)
    what = f"the {outer.op_type}'s output shape"
    target = _as_target(dims, what) if dims is not None else MatchResult.fail(f"{what} is unknown")
    if isinstance(target, MatchResult):
        return MatchResult.fail(", and ".join([*reasons, target.reason]))
    return MatchResult.ok(target=target)


def _chain_rule(inner_op: str, outer_op: str) -> Rule:
    def pattern(op, x):
        inner = getattr(op, inner_op)(x, _bind="inner", _allow_other_inputs=True)
        return getattr(op, outer_op)(inner, _bind="outer", _allow_other_inputs=True)

    def replacement(op, x, outer, target=None, shape=None, allowzero=0, **_):
        return _reshape(op, x, outer, target, shape, allowzero)

    name = f"fuse-{inner_op.lower()}-{outer_op.lower()}"
    return Rule(name, pattern, replacement, _chain_check)


def _transpose_pair_pattern(op, x):
    return op.Transpose(op.Transpose(x, _bind="first"), _bind="second")


def _as_reshape_pattern(op, x):
    return op.Transpose(x, _bind="transpose")


RULES = register_rules([
    Rule("fuse-transpose-transpose", _transpose_pair_pattern, _transpose_pair_replacement,
         _transpose_pair_check),
    Rule("fuse-transpose-as-reshape", _as_reshape_pattern, _as_reshape_replacement,
         _as_reshape_check),
    *(_chain_rule(inner, outer) for outer in VIEW_OPS for inner in VIEW_OPS),
], group="fuse-layout")


@register_pass
class FuseLayout(RuleSetPass):
    """Merge Transpose pairs and chains of view ops; a Transpose of size-1 axes is a Reshape."""

    name = "fuse-layout"
    rules = RuleSet(RULES)
