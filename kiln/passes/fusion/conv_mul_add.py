"""``fuse-conv-mul-add``: a constant per-channel Mul or Add after a Conv folds into the
Conv's weights and bias (``Conv(x, W, b) * c = Conv(x, W * c, b * c)``,
``Conv(x, W, b) + c = Conv(x, W, b + c)``), computed in float64."""

from __future__ import annotations

import numpy as np

from kiln.passes._base import register_pass
from kiln.passes.fusion._pass import RuleSetPass
from kiln.passes.fusion._util import channel_vector, float_const, optional_input
from kiln.passes.rewrite import Match, MatchResult, Rule, RuleSet, register_rules


def _check(m: Match, multiply: bool) -> MatchResult:
    conv = m["conv"]
    w = float_const(m["w"], "the weight")
    if isinstance(w, MatchResult):
        return w
    b = optional_input(conv, 2)
    bias = np.zeros(w.shape[0]) if b is None else float_const(b, "the conv bias")
    if isinstance(bias, MatchResult):
        return bias
    c = float_const(m["c"], "the Mul factor" if multiply else "the Add term")
    if isinstance(c, MatchResult):
        return c
    vector = channel_vector(c, w.ndim, w.shape[0])
    if vector is None:
        return MatchResult.fail(f"constant of shape {list(c.shape)} is not per channel "
                                f"({w.shape[0]} channels)")
    if c.dtype != w.dtype:
        return MatchResult.fail(f"constant is {c.dtype}, weight is {w.dtype}")
    v = vector.astype(np.float64)
    if multiply:
        new_w = w * v.reshape(-1, *[1] * (w.ndim - 1))
        new_b = bias * v
    else:
        new_w, new_b = w, bias + v
    return MatchResult.ok(new_w=new_w.astype(w.dtype), new_b=new_b.astype(w.dtype))


def _mul_pattern(op, x, w, c):
    return op.Mul(op.Conv(x, w, _bind="conv", _allow_other_inputs=True), c)


def _add_pattern(op, x, w, c):
    return op.Add(op.Conv(x, w, _bind="conv", _allow_other_inputs=True), c)


def _replacement(op, x, w, conv, new_w, new_b, **_):
    w2 = w if new_w is None else op.initializer(new_w, f"{w.name}_scaled")
    return op.Conv(x, w2, op.initializer(new_b, f"{w.name}_bias"), **conv.attributes)


def _add_check(m: Match) -> MatchResult:
    result = _check(m, multiply=False)
    if result:
        result.extra["new_w"] = None  # the weight stays as it is
    return result


RULES = register_rules([
    Rule("fuse-conv-mul", _mul_pattern, _replacement, lambda m: _check(m, multiply=True)),
    Rule("fuse-conv-add", _add_pattern, _replacement, _add_check),
], group="fuse-conv-mul-add")


@register_pass
class FuseConvMulAdd(RuleSetPass):
    """Fold constant per-channel Mul/Add after a Conv into its weights and bias."""

    name = "fuse-conv-mul-add"
    rules = RuleSet(RULES)
