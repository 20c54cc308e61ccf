"""``fuse-batchnorm``: an inference BatchNormalization after Conv, ConvTranspose, Gemm or
MatMul with constant weights folds into new weights and bias.

With ``s = scale / sqrt(var + eps)``: ``W' = W * s`` per output channel and
``b' = (b - mean) * s + bias``, computed in float64 and cast back to the weight's dtype.
"""

from __future__ import annotations

import numpy as np

from kiln.passes._base import register_pass
from kiln.passes.fusion._pass import RuleSetPass
from kiln.passes.fusion._util import float_const, optional_input
from kiln.passes.rewrite import Match, MatchResult, Rule, RuleSet, register_rules


def _bn_affine(m: Match, channels: int) -> tuple[np.ndarray, np.ndarray] | MatchResult:
    """(s, shift) with ``BN(y) = y * s + shift`` per channel, or why not."""
    bn = m["bn"]
    if bn.attr("training_mode", 0):
        return MatchResult.fail("BatchNormalization is in training mode")
    params = []
    for name in ("scale", "bias", "mean", "var"):
        data = float_const(m[name], f"BatchNormalization {name}")
        if isinstance(data, MatchResult):
            return data
        if data.shape != (channels,):
            return MatchResult.fail(f"BatchNormalization {name} has shape {list(data.shape)}, "
                                    f"not [{channels}]")
        params.append(data.astype(np.float64))
    scale, bias, mean, var = params
    s = scale / np.sqrt(var + bn.attr("epsilon", 1e-5))
    return s, bias - mean * s


def _conv_check(m: Match, transpose: bool) -> MatchResult:
    conv = m["conv"]
    w = float_const(m["w"], "the weight")
    if isinstance(w, MatchResult):
        return w
    group = conv.attr("group", 1)
    channels = w.shape[1] * group if transpose else w.shape[0]
    b = optional_input(conv, 2)
    bias = np.zeros(channels) if b is None else float_const(b, "the conv bias")
    if isinstance(bias, MatchResult):
        return bias
    affine = _bn_affine(m, channels)
    if isinstance(affine, MatchResult):
        return affine
    s, shift = affine
    if transpose:  # W is (C, M/g, k...): output channel = g * (M/g) + j
        grouped = w.reshape(group, w.shape[0] // group, w.shape[1], *w.shape[2:])
        scaled = grouped * s.reshape(group, 1, w.shape[1], *[1] * (w.ndim - 2))
        new_w = scaled.reshape(w.shape)
    else:
        new_w = w * s.reshape(-1, *[1] * (w.ndim - 1))
    return MatchResult.ok(new_w=new_w.astype(w.dtype), new_b=(bias * s + shift).astype(w.dtype))


def _conv_rule(op_type: str) -> Rule:
    def pattern(op, x, w, scale, bias, mean, var):
        conv = getattr(op, op_type)(x, w, _bind="conv", _allow_other_inputs=True)
        return op.BatchNormalization(conv, scale, bias, mean, var, _bind="bn")

    def replacement(op, x, w, conv, new_w, new_b, **_):
        w2 = op.initializer(new_w, f"{w.name}_bn")
        b2 = op.initializer(new_b, f"{w.name}_bn_bias")
        return getattr(op, op_type)(x, w2, b2, **conv.attributes)

    name = f"fuse-{op_type.lower()}-batchnorm"
    return Rule(name, pattern, replacement, lambda m: _conv_check(m, op_type == "ConvTranspose"))


def _gemm_check(m: Match) -> MatchResult:
    gemm = m.nodes.get("gemm")
    x = m["x"]
    if gemm is None and (x is None or x.shape is None or x.shape.rank != 2):
        return MatchResult.fail("x is not known to be 2-D (BatchNormalization's channel axis "
                                "is then not MatMul's last dim)")
    w = float_const(m["w"], "the weight")
    if isinstance(w, MatchResult):
        return w
    if w.ndim != 2:
        return MatchResult.fail(f"the weight is {w.ndim}-D, not 2-D")
    trans_b = gemm is not None and gemm.attr("transB", 0)
    channels = w.shape[0] if trans_b else w.shape[1]
    c = optional_input(gemm, 2) if gemm is not None else None
    bias = np.zeros(channels) if c is None else float_const(c, "the Gemm bias")
    if isinstance(bias, MatchResult):
        return bias
    affine = _bn_affine(m, channels)
    if isinstance(affine, MatchResult):
        return affine
    s, shift = affine
    beta = gemm.attr("beta", 1.0) if gemm is not None else 1.0
    new_w = w * (s[:, None] if trans_b else s[None, :])
    new_b = bias.astype(np.float64) * beta * s + shift
    return MatchResult.ok(new_w=new_w.astype(w.dtype), new_b=new_b.astype(w.dtype))


def _gemm_pattern(op, x, w, scale, bias, mean, var):
    gemm = op.Gemm(x, w, _bind="gemm", _allow_other_inputs=True)
    return op.BatchNormalization(gemm, scale, bias, mean, var, _bind="bn")


def _matmul_pattern(op, x, w, scale, bias, mean, var):
    return op.BatchNormalization(op.MatMul(x, w), scale, bias, mean, var, _bind="bn")


def _gemm_replacement(op, x, w, new_w, new_b, gemm=None, **_):
    attrs = {k: a for k, a in gemm.attributes.items() if k != "beta"} if gemm else {}
    w2 = op.initializer(new_w, f"{w.name}_bn")
    b2 = op.initializer(new_b, f"{w.name}_bn_bias")
    return op.Gemm(x, w2, b2, **attrs)


RULES = register_rules([
    _conv_rule("Conv"),
    _conv_rule("ConvTranspose"),
    Rule("fuse-gemm-batchnorm", _gemm_pattern, _gemm_replacement, _gemm_check),
    Rule("fuse-matmul-batchnorm", _matmul_pattern, _gemm_replacement, _gemm_check),
], group="fuse-batchnorm")


@register_pass
class FuseBatchNorm(RuleSetPass):
    """Fold inference BatchNormalization into the Conv/ConvTranspose/Gemm/MatMul before it."""

    name = "fuse-batchnorm"
    rules = RuleSet(RULES)
