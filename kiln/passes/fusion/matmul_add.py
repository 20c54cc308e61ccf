"""``fuse-matmul-add``: ``Add(MatMul(x, W), b)`` with constant 2-D ``W`` and a constant
bias along the last dim becomes ``Gemm(x, W, b)`` when ``x`` is 2-D."""

from __future__ import annotations

from kiln.passes._base import register_pass
from kiln.passes.fusion._pass import RuleSetPass
from kiln.passes.fusion._util import float_const
from kiln.passes.rewrite import Match, MatchResult, Rule, RuleSet, register_rules


def _pattern(op, x, w, b):
    return op.Add(op.MatMul(x, w), b)


def _check(m: Match) -> MatchResult:
    x = m["x"]
    if x is None or x.shape is None or x.shape.rank != 2:
        return MatchResult.fail("x is not known to be 2-D (Gemm takes 2-D inputs only)")
    w = float_const(m["w"], "the weight")
    if isinstance(w, MatchResult):
        return w
    if w.ndim != 2:
        return MatchResult.fail(f"the weight is {w.ndim}-D, not 2-D")
    b = float_const(m["b"], "the bias")
    if isinstance(b, MatchResult):
        return b
    if b.ndim > 2 or b.size not in (1, w.shape[1]) or (b.ndim == 2 and b.shape[0] != 1):
        return MatchResult.fail(f"bias of shape {list(b.shape)} does not broadcast along the "
                                f"last dim ({w.shape[1]})")
    if b.dtype != w.dtype:
        return MatchResult.fail(f"bias is {b.dtype}, weight is {w.dtype}")
    return MatchResult.ok()


def _replacement(op, x, w, b, **_):
    return op.Gemm(x, w, b)


RULES = register_rules([Rule("fuse-matmul-add", _pattern, _replacement, _check)],
                       group="fuse-matmul-add")


@register_pass
class FuseMatMulAdd(RuleSetPass):
    """MatMul + Add of a constant bias -> Gemm, for 2-D inputs."""

    name = "fuse-matmul-add"
    rules = RuleSet(RULES)
