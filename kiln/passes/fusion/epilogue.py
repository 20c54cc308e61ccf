"""``fuse-epilogues``: an activation after a Conv or Gemm becomes one ``ai.kiln`` op, for
backends that run fused kernels (kiln's TVM backend); it is not in the default pipeline.

Design: one op per (base op, activation) pair, ``ai.kiln::<Base><Activation>`` (ConvRelu,
ConvClip, GemmLeakyRelu, ...), plus the residual ``ConvAddRelu``. An ONNX function body
cannot switch on a string attribute, so a single ``FusedConv{activation: "Relu"}`` could
not carry an exact body; with one op per pair each body is the ops it replaces (LeakyRelu
and HardSigmoid written out, see below), exact by construction. Each op:

- takes the base op's inputs, all of them, a missing bias as an empty input
  (``ConvRelu(X, W, B)``, ``GemmTanh(A, B, C)``, ``ConvAddRelu(X, W, B, Z)``);
- passes the base op's attributes through as references (``strides: ints = @strides``,
  ``alpha: float = @alpha``, ...): the fused node carries exactly the attributes the base
  node had, and one the node leaves out is dropped from the body (ONNX function
  semantics), so the base op's default applies;
- names the activation's parameters ``activation_<name>``, as ONNX Runtime's FusedConv and
  FusedGemm do (Gemm's ``alpha``/``beta`` would clash with LeakyRelu's and HardSigmoid's):
  ``activation_alpha``, ``activation_beta``, and for Clip ``activation_min`` and
  ``activation_max``. These are always written (the activation's defaults filled in, -inf
  or +inf for a bound Clip lacks; Clip's bounds must be constants that float32 holds
  exactly) and reach the body through ``Constant`` + ``CastLike``, so those ops need
  opset 15. LeakyRelu is written as ``PRelu`` with that scalar slope (the same function)
  and HardSigmoid as ONNX defines it, ``max(0, min(1, alpha * x + beta))``, because
  onnx.reference cannot pass an attribute reference to a unary op such as LeakyRelu.

Activations: Relu, Clip (e.g. Relu6), Sigmoid, Tanh, LeakyRelu, HardSigmoid, HardSwish
(opset 14). Residual: ``Relu(Add(Conv(...), Z))`` (as in ResNet) becomes ``ConvAddRelu``,
when ``Z`` is known to broadcast to the Conv's output shape without growing it. A Conv/Gemm
(or Add) whose output has other readers stays as it is.

onnx.reference runs a function only when the call gives every attribute the function
declares, so a fused node from a Conv or Gemm that leaves attributes at their defaults runs
on ONNX Runtime (which applies the defaults) but not on onnx.reference.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from kiln.ir import Attr, AttrType, Value, kiln_ops
from kiln.passes._base import register_pass
from kiln.passes.cleanup._util import const_array
from kiln.passes.fusion._kiln_op import KilnOpsRuleSetPass, can_emit
from kiln.passes.fusion._util import optional_input
from kiln.passes.rewrite import Match, MatchResult, Rule, RuleSet, register_rules

DOMAIN = kiln_ops.DOMAIN


@dataclasses.dataclass(frozen=True)
class _Base:
    op_type: str
    inputs: tuple[str, ...]
    attributes: tuple[tuple[str, str], ...]  # (name, ONNX text kind)


@dataclasses.dataclass(frozen=True)
class _Activation:
    op_type: str
    attributes: tuple[tuple[str, float], ...] = ()  # its float attributes and defaults
    min_opset: int = 13


BASES = (
    _Base("Conv", ("X", "W", "B"), (("auto_pad", "string"), ("dilations", "ints"),
                                    ("group", "int"), ("kernel_shape", "ints"),
                                    ("pads", "ints"), ("strides", "ints"))),
    _Base("Gemm", ("A", "B", "C"), (("alpha", "float"), ("beta", "float"), ("transA", "int"),
                                    ("transB", "int"))),
)
ACTIVATIONS = (
    _Activation("Relu"),
    _Activation("Clip", min_opset=15),
    _Activation("Sigmoid"),
    _Activation("Tanh"),
    _Activation("LeakyRelu", (("alpha", 0.01),), min_opset=15),
    _Activation("HardSigmoid", (("alpha", 0.2), ("beta", 0.5)), min_opset=15),
    _Activation("HardSwish", min_opset=14),
)


def _kebab(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower()


def _base_call(base: _Base) -> str:
    refs = ", ".join(f"{name}: {kind} = @{name}" for name, kind in base.attributes)
    return f"y = {base.op_type} <{refs}> ({', '.join(base.inputs)})"


def _constant(name: str, attribute: str, like: str) -> list[str]:
    """Lines making ``name``: the float attribute ``attribute`` cast to ``like``'s type."""
    return [f"{name}_f = Constant <value_float: float = @{attribute}> ()",
            f"{name} = CastLike({name}_f, {like})"]


def _activation_lines(act: _Activation, x: str) -> list[str]:
    # LeakyRelu and HardSigmoid read their parameters through Constant nodes, not as
    # attribute references on the op: onnx.reference cannot pass a reference to a unary op.
    if act.op_type == "Clip":
        return [*_constant("lo", "activation_min", x), *_constant("hi", "activation_max", x),
                f"Y = Clip({x}, lo, hi)"]
    if act.op_type == "LeakyRelu":  # PRelu with a scalar slope is LeakyRelu
        return [*_constant("alpha", "activation_alpha", x), f"Y = PRelu({x}, alpha)"]
    if act.op_type == "HardSigmoid":  # ONNX's own definition: max(0, min(1, alpha*x + beta))
        return [*_constant("alpha", "activation_alpha", x),
                *_constant("beta", "activation_beta", x),
                "zero_f = Constant <value_float = 0.0> ()", f"zero = CastLike(zero_f, {x})",
                "one_f = Constant <value_float = 1.0> ()", f"one = CastLike(one_f, {x})",
                f"ax = Mul({x}, alpha)", "axb = Add(ax, beta)", "low = Min(axb, one)",
                "Y = Max(low, zero)"]
    return [f"Y = {act.op_type}({x})"]


def _activation_params(act: _Activation) -> list[str]:
    if act.op_type == "Clip":
        return ["activation_min", "activation_max"]
    return [f"activation_{a}" for a, _ in act.attributes]


def _doc(base: _Base, act: _Activation, residual: bool) -> str:
    inner = f"{base.op_type}({', '.join(base.inputs)}){' + Z' if residual else ''}"
    if act.op_type == "Clip":
        args = ", activation_min, activation_max"
    else:
        args = "".join(f", {a}=activation_{a}" for a, _ in act.attributes)
    return f"{act.op_type}({inner}{args}), with {base.op_type}'s attributes passed through."


def _define(name: str, base: _Base, act: _Activation, residual: bool) -> kiln_ops.KilnOp:
    params = [a for a, _ in base.attributes] + _activation_params(act)
    inputs = [*base.inputs, "Z"] if residual else list(base.inputs)
    lines = [_base_call(base)]
    if residual:
        lines.append("s = Add(y, Z)")
    lines += _activation_lines(act, "s" if residual else "y")
    body = "\n".join(f"    {line}" for line in lines)
    source = f"{name} <{', '.join(params)}> ({', '.join(inputs)}) => (Y) {{\n{body}\n}}"
    return kiln_ops.define(name, source, min_opset=act.min_opset,
                           doc=_doc(base, act, residual))


# -- the rules -------------------------------------------------------------------------------

def _float_attr(value: float, name: str) -> Attr:
    return Attr(name, AttrType.FLOAT, float(value))


def _clip_bound(value: Value | None, what: str, default: float) -> float | MatchResult:
    if value is None:
        return default
    data = const_array(value)
    if data is None:
        return MatchResult.fail(f"Clip's {what} is not constant")
    if data.size != 1:
        return MatchResult.fail(f"Clip's {what} has shape {list(data.shape)}, not a scalar")
    bound = data.reshape(-1)[0]
    if not np.issubdtype(data.dtype, np.number) or float(np.float32(bound)) != bound:
        return MatchResult.fail(f"Clip's {what} {bound} is not exactly a float32")
    return float(bound)


def _activation_attrs(m: Match, act: _Activation) -> list[Attr] | MatchResult:
    node = m["act"]
    if act.op_type != "Clip":
        return [_float_attr(node.attr(a, default), f"activation_{a}")
                for a, default in act.attributes]
    low = _clip_bound(optional_input(node, 1), "min", -np.inf)
    if isinstance(low, MatchResult):
        return low
    high = _clip_bound(optional_input(node, 2), "max", np.inf)
    if isinstance(high, MatchResult):
        return high
    return [_float_attr(low, "activation_min"), _float_attr(high, "activation_max")]


def _broadcasts_into(value: Value, target: Value) -> bool:
    """Whether ``value`` broadcasts to ``target``'s shape without growing it."""
    small, big = value.shape, target.shape
    if small is None or big is None or small.rank is None or big.rank is None:
        return False
    if small.rank > big.rank:
        return False
    for d, t in zip(reversed(small.dims), reversed(big.dims), strict=False):
        if d != 1 and (d is None or d != t):
            return False
    return True


def _residual_check(m: Match) -> MatchResult:
    y = m["base"].outputs[0]
    z = m["z"]
    if z is y:
        return MatchResult.fail("the Add adds the Conv's output to itself")
    if y.shape is None:
        return MatchResult.fail("the shape of the Conv's output is unknown")
    if not _broadcasts_into(z, y):
        return MatchResult.fail(f"the residual {z.shape} is not known to broadcast to the "
                                f"Conv's output {y.shape}")
    return MatchResult.ok()


def _rule(name: str, fused_op: kiln_ops.KilnOp, base: _Base, act: _Activation,
          residual: bool) -> Rule:
    def pattern(op, x, w, z):
        fused = getattr(op, base.op_type)(x, w, _bind="base", _allow_other_inputs=True)
        if residual:
            fused = op.Add(fused, z)
        return getattr(op, act.op_type)(fused, _bind="act", _allow_other_inputs=True)

    def check(m: Match) -> MatchResult:
        emit = can_emit(m, fused_op.name)
        if not emit:
            return emit
        if residual:
            verdict = _residual_check(m)
            if not verdict:
                return verdict
        attrs = _activation_attrs(m, act)
        if isinstance(attrs, MatchResult):
            return attrs
        return MatchResult.ok(act_attrs=attrs)

    def replacement(op, x, w, base, act_attrs, z=None, **_) -> Value:
        inputs = [x, w, optional_input(base, 2)] + ([z] if residual else [])
        attrs = {a.name: a for a in [*base.attributes.values(), *act_attrs]}
        return getattr(op, fused_op.name)(*inputs, _domain=DOMAIN, **attrs)

    return Rule(name, pattern, replacement, check)


# (base, activation, residual) for every op: ConvAddRelu, then ConvRelu ... GemmHardSwish.
COMBINATIONS = [(BASES[0], ACTIVATIONS[0], True),
                *((base, act, False) for base in BASES for act in ACTIVATIONS)]
OPS = [_define(f"{base.op_type}{'Add' if residual else ''}{act.op_type}", base, act, residual)
       for base, act, residual in COMBINATIONS]
RULES = register_rules([_rule(f"fuse-{_kebab(op.name)}", op, *combination)
                        for op, combination in zip(OPS, COMBINATIONS, strict=True)],
                       group="fuse-epilogues")


@register_pass
class FuseEpilogues(KilnOpsRuleSetPass):
    """Conv/Gemm + activation (and Conv + Add + Relu) -> one ``ai.kiln`` op each."""

    name = "fuse-epilogues"
    rules = RuleSet(RULES)
    kiln_ops = tuple(op.name for op in OPS)
