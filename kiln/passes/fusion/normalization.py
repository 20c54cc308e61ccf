"""``fuse-normalization``: LayerNorm and RMSNorm written out in reductions and elementwise
ops become one op.

Rules:

- ``fuse-layer-norm``: ``(x - ReduceMean(x)) / Sqrt(ReduceMean((x - mean)^2) + eps)``, the
  square as ``Pow(d, 2)`` or ``d * d`` (``x - mean`` computed once, or twice as exporters
  write ``((x - mean) ** 2)`` and ``(x - mean) / ...`` apart), the division as ``Div`` or
  as ``Mul`` by ``Reciprocal``; then optionally ``* gamma`` and ``+ beta``.
- ``fuse-rms-norm``: ``x / Sqrt(ReduceMean(x^2) + eps)``, the division as ``Div``, as
  ``Mul`` by ``Reciprocal`` (torch.export's rsqrt) or as ``Mul`` by ``1 / Sqrt`` (the
  TorchScript exporter's); then optionally ``* gamma``.

Both ReduceMeans of a LayerNorm reduce the same axes, given as the ``axes`` attribute
(opset < 18) or a constant input (opset >= 18), with ``keepdims=1``; the axes must be the
trailing ``k`` axes of ``x`` (``[-1]``, ``[-2, -1]``, or ``[2]`` when ``x`` is known to be
rank 3), which become ``axis=-k``. ``eps`` must be a one-element constant; it becomes
``epsilon``. ``gamma`` and ``beta`` may be any value (a weight or a graph input) whose shape
is known and of rank ``k`` or less, so that they broadcast within the normalized dims as
the fused ops' scale and bias do.

What replaces the match depends on the model's ai.onnx opset:

- LayerNorm: ``LayerNormalization`` (opset 17 or newer); without ``gamma`` its scale is a
  new initializer of ones shaped as the normalized dims (which must then be known), without
  ``beta`` the optional bias is left out. On opsets 15 and 16 it is
  ``ai.kiln::LayerNormalization(X, Scale, B)`` with the same attributes, whose bias is
  required (zeros when there is no ``beta``): kiln's backends see one op, and ONNX Runtime
  runs its body, the same decomposition written once for every opset. Its body (like
  RMSNormalization's) sums with ReduceSum, whose axes are an input from opset 13 on, so one
  body serves opsets before and after ReduceMean moved its axes (18), and uses CastLike
  (opset 15); older models are left alone and ``explain`` says so.
- RMSNorm: ``RMSNormalization`` (opset 23 or newer; ONNX Runtime 1.31 runs it), else
  ``ai.kiln::RMSNormalization(X, scale)`` with ``axis`` and ``epsilon`` (opsets 15 to 22).
  Without ``gamma`` the scale is ones, as above.

The rules are anchored at the last op of the longest form they can take: a normalization
whose result is only multiplied by a gamma (and added to a beta) is left to the larger
match there, so the scale and bias are fused too; when that larger match cannot fire
(``explain`` says why), the normalization is fused alone.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable

import numpy as np

from kiln.ir import Node, Value, kiln_ops
from kiln.passes._base import register_pass
from kiln.passes.cleanup._util import const_array
from kiln.passes.fusion._decomposed import (
    element_type,
    exponent,
    fused_op,
    near_constant,
    one_element,
)
from kiln.passes.fusion._kiln_op import KilnOpsRuleSetPass
from kiln.passes.rewrite import Match, MatchResult, PatternNode, Rule, RuleSet, register_rules

_AXES = """
        shape = Shape (X)
        rank = Size (shape)
        normalized_shape = Shape <start: int = @axis> (X)
        k = Size (normalized_shape)
        first = Sub (rank, k)
        step = Constant <value_int = 1> ()
        axes = Range (first, rank, step)
        count_i = ReduceProd <keepdims = 0> (normalized_shape)
        count = CastLike (count_i, X)
        eps_f = Constant <value_float: float = @epsilon> ()
        eps = CastLike (eps_f, X)
"""

kiln_ops.define("LayerNormalization", """
    LayerNormalization <axis: int = -1, epsilon: float = 0.00001> (X, Scale, B) => (Y) {""" + _AXES
    + """
        sum = ReduceSum <keepdims = 1> (X, axes)
        mean = Div (sum, count)
        centered = Sub (X, mean)
        squared = Mul (centered, centered)
        sum_squares = ReduceSum <keepdims = 1> (squared, axes)
        variance = Div (sum_squares, count)
        shifted = Add (variance, eps)
        std = Sqrt (shifted)
        normalized = Div (centered, std)
        scaled = Mul (normalized, Scale)
        Y = Add (scaled, B)
    }
""", doc="Layer normalization over the axes from `axis` on: Y = (X - mean) / sqrt(variance + "
         "epsilon) * Scale + B (ONNX LayerNormalization-17 without its optional outputs; "
         "B is required).", min_opset=15)

kiln_ops.define("RMSNormalization", """
    RMSNormalization <axis: int = -1, epsilon: float = 0.00001> (X, scale) => (Y) {""" + _AXES
    + """
        squared = Mul (X, X)
        sum_squares = ReduceSum <keepdims = 1> (squared, axes)
        mean_square = Div (sum_squares, count)
        shifted = Add (mean_square, eps)
        rms = Sqrt (shifted)
        normalized = Div (X, rms)
        Y = Mul (normalized, scale)
    }
""", doc="RMS normalization over the axes from `axis` on: Y = X / sqrt(mean(X^2) + epsilon) * "
         "scale (ONNX RMSNormalization-23).", min_opset=15)

Pattern = Callable[..., PatternNode]


# -- LayerNorm ------------------------------------------------------------------------------
def _layer_norm_core(op, x, diff, mean_again, p, eps, square: str, divide: bool
                     ) -> PatternNode:
    """The normalization; the check makes sure ``diff`` is ``x - mean`` and ``mean_again``
    is ``mean``."""
    mean = op.ReduceMean(x, _bind="mean", _allow_other_inputs=True)
    centered = op.Sub(x, mean, _bind="centered")
    if square == "pow":
        squared = op.Pow(diff, p)
    elif square == "mul":
        squared = op.Mul(diff, diff)
    else:  # "pow-of-second-sub": x - mean written a second time
        squared = op.Pow(op.Sub(x, mean_again), p)
    variance = op.ReduceMean(squared, _bind="variance", _allow_other_inputs=True)
    std = op.Sqrt(op.Add(variance, eps))
    return op.Div(centered, std) if divide else op.Mul(centered, op.Reciprocal(std))


def _layer_norm_pattern(square: str, divide: bool, scale: bool, bias: bool) -> Pattern:
    def pattern(op, x, diff, mean_again, p, eps, gamma, beta):
        y = _layer_norm_core(op, x, diff, mean_again, p, eps, square, divide)
        y = op.Mul(y, gamma) if scale else y
        return op.Add(y, beta) if bias else y

    return pattern


def _layer_norm_check(m: Match) -> MatchResult:
    x, centered = m["x"], m["centered"].outputs[0]
    if "diff" in m.values and m["diff"] is not centered:
        return MatchResult.fail("the variance is not taken of x - mean")
    if "mean_again" in m.values and m["mean_again"] is not m["mean"].outputs[0]:
        return MatchResult.fail("the second x - mean subtracts another mean")
    if "p" in m.values and not (power := exponent(m["p"], 2)):
        return power
    axes = _reduced_axes(m["mean"], x)
    if isinstance(axes, MatchResult):
        return axes
    variance_axes = _reduced_axes(m["variance"], x)
    if isinstance(variance_axes, MatchResult):
        return variance_axes
    if variance_axes != axes:
        return MatchResult.fail("the mean and the variance reduce different axes")
    target = fused_op(m, "LayerNormalization", 17, "LayerNormalization")
    if isinstance(target, MatchResult):
        return target
    with_bias = bool(target[0])  # ai.kiln::LayerNormalization requires its bias
    return _finish(m, LAYER_NORM, target, axes, with_bias)


# -- RMSNorm --------------------------------------------------------------------------------
def _rms_norm_core(op, x, p, eps, one, square: str, form: str) -> PatternNode:
    squared = op.Pow(x, p) if square == "pow" else op.Mul(x, x)
    mean = op.ReduceMean(squared, _bind="mean", _allow_other_inputs=True)
    rms = op.Sqrt(op.Add(mean, eps))
    if form == "div":
        return op.Div(x, rms)
    if form == "reciprocal":
        return op.Mul(x, op.Reciprocal(rms))
    return op.Mul(x, op.Div(one, rms))


def _rms_norm_pattern(square: str, form: str, scale: bool) -> Pattern:
    def pattern(op, x, p, eps, one, gamma):
        y = _rms_norm_core(op, x, p, eps, one, square, form)
        return op.Mul(y, gamma) if scale else y

    return pattern


def _rms_norm_check(m: Match) -> MatchResult:
    x = m["x"]
    if _is_centered(x):
        return MatchResult.fail("x is y - ReduceMean(y): the RMSNorm is the tail of a "
                                "LayerNorm, left to fuse-layer-norm")
    if "p" in m.values and not (power := exponent(m["p"], 2)):
        return power
    if "one" in m.values:
        one = near_constant(m["one"], 1.0, "the numerator of 1 / Sqrt(...)", x)
        if isinstance(one, MatchResult):
            return one
    axes = _reduced_axes(m["mean"], x)
    if isinstance(axes, MatchResult):
        return axes
    target = fused_op(m, "RMSNormalization", 23, "RMSNormalization")
    if isinstance(target, MatchResult):
        return target
    return _finish(m, RMS_NORM, target, axes, with_bias=False)


def _is_centered(x: Value) -> bool:
    """Whether ``x`` is ``y - ReduceMean(y)``."""
    sub = x.producer()
    if sub is None or sub.op_type != "Sub" or sub.domain or len(sub.inputs) != 2:
        return False
    mean = sub.inputs[1].producer() if sub.inputs[1] is not None else None
    return (mean is not None and mean.op_type == "ReduceMean" and not mean.domain
            and mean.inputs[0] is sub.inputs[0])


# -- shared ---------------------------------------------------------------------------------
def _reduced_axes(reduce: Node, x: Value) -> int | MatchResult:
    """How many trailing axes of ``x`` the ReduceMean ``reduce`` reduces, or why it does not
    reduce trailing axes with ``keepdims=1``."""
    if not reduce.attr("keepdims", 1):
        return MatchResult.fail(f"{reduce.label()} has keepdims=0")
    rank = x.shape.rank if x.shape is not None else None
    if len(reduce.inputs) > 1 and reduce.inputs[1] is not None:
        data = const_array(reduce.inputs[1])
        if data is None:
            return MatchResult.fail(f"the axes of {reduce.label()} are not constant")
        axes = [int(a) for a in data.reshape(-1)]
    else:
        axes = reduce.attr("axes")
    if not axes:  # no axes: every axis, or none with noop_with_empty_axes
        if reduce.attr("noop_with_empty_axes", 0):
            return MatchResult.fail(f"{reduce.label()} reduces nothing")
        if rank is None:
            return MatchResult.fail(f"{reduce.label()} reduces every axis of x, whose rank is "
                                    "not known")
        return rank
    if rank is not None:
        axes = [a - rank if a >= 0 else a for a in axes]
    elif any(a >= 0 for a in axes):
        return MatchResult.fail(f"the rank of x is not known, so axes {list(axes)} of "
                                f"{reduce.label()} may not be its trailing axes")
    k = len(axes)
    if sorted(axes) != list(range(-k, 0)):
        return MatchResult.fail(f"{reduce.label()} reduces axes {list(axes)}, not the trailing "
                                "axes of x")
    return k


def _finish(m: Match, rule: Rule, target: tuple[str, str], k: int,
            with_bias: bool) -> MatchResult:
    """The checks the two rules share, once the axes are known: eps, dtypes, the scale and
    bias (made when absent), and whether a larger match takes this one."""
    x = m["x"]
    eps = one_element(m["eps"], "eps", x)
    if isinstance(eps, MatchResult):
        return eps
    if x.dtype is not None and not x.dtype.is_floating():
        return MatchResult.fail(f"x is {x.dtype.short_name}, not a float type")
    dtype = x.dtype.numpy if x.dtype is not None else eps.dtype
    if element_type(dtype) is None:
        return MatchResult.fail(f"x is {dtype}; the fused op takes f16/bf16/f32/f64")
    epsilon = float(eps.astype(np.float64).reshape(()))
    extras = {"target": target, "axis": -k, "epsilon": epsilon}
    for name, fill, needed in (("gamma", 1, True), ("beta", 0, with_bias)):
        given = m.values.get(name)
        if given is not None:
            reason = _broadcasts_within(given, k, name)
            if reason:
                return MatchResult.fail(reason)
        elif needed:
            made = _filled(x, k, fill, dtype, name)
            if isinstance(made, MatchResult):
                return made
            extras[f"new_{name}"] = made
    larger = _larger_match(m, rule)
    if larger:
        return MatchResult.fail(f"the larger match at {larger.label()} takes it")
    return MatchResult.ok(**extras)


def _broadcasts_within(value: Value, k: int, name: str) -> str:
    """Why ``value`` may not be the scale or bias of a normalization over ``k`` axes, or ""."""
    data = const_array(value)
    if data is not None:
        shape = data.shape
    elif value.shape is not None:
        shape = value.shape.dims
    else:
        return f"{name}'s shape is not known"
    if len(shape) > k:
        return (f"{name} has shape {list(shape)}, of higher rank than the {k} normalized "
                f"axes")
    return ""


def _filled(x: Value, k: int, fill: int, dtype: np.dtype, name: str) -> np.ndarray | MatchResult:
    """``fill`` (1 for a scale, 0 for a bias) shaped as the normalized dims of ``x``."""
    dims = x.shape.dims[-k:] if x.shape is not None else None
    if dims is None or not all(isinstance(d, int) for d in dims):
        shown = "not known" if dims is None else str(list(dims))
        return MatchResult.fail(f"there is no {name}, and the normalized dims of x ({shown}) "
                                f"are not static, so one cannot be made")
    return np.full(dims, fill, dtype=dtype)


_PROBING = contextvars.ContextVar("kiln_normalization_probing", default=False)


def _larger_match(m: Match, rule: Rule) -> Node | None:
    """The only reader of the anchor's output when ``rule`` matches there too, on a match
    that includes this one (the same normalization, with its gamma or beta), else None.

    The probe at the reader leaves out this test (the reader's match may itself wait for
    a still larger one), so each match waits for the largest one, which fires.
    """
    out = m.anchor.outputs[0]
    uses = out.uses()
    if _PROBING.get() or len(uses) != 1 or out.is_graph_output():
        return None
    reader = uses[0][0]
    token = _PROBING.set(True)
    try:
        larger = rule.try_match(reader)
    finally:
        _PROBING.reset(token)
    if isinstance(larger, Match) and any(n is m.anchor for n in larger.matched):
        return reader
    return None


def _replacement(op, x, target, axis, epsilon, gamma=None, beta=None, new_gamma=None,
                 new_beta=None, **_):
    domain, op_type = target
    prefix = "rms_norm" if op_type == "RMSNormalization" else "layer_norm"
    scale = gamma if gamma is not None else op.initializer(new_gamma, f"{prefix}_scale")
    if beta is None and new_beta is not None:
        beta = op.initializer(new_beta, f"{prefix}_bias")
    inputs = [x, scale] if beta is None else [x, scale, beta]
    return getattr(op, op_type)(*inputs, _domain=domain, axis=axis, epsilon=epsilon)


LAYER_NORM = Rule(
    "fuse-layer-norm",
    [_layer_norm_pattern(square, divide, scale, bias)
     for scale, bias in ((True, True), (True, False), (False, True), (False, False))
     for square in ("pow", "mul", "pow-of-second-sub") for divide in (True, False)],
    _replacement, _layer_norm_check)

RMS_NORM = Rule(
    "fuse-rms-norm",
    [_rms_norm_pattern(square, form, scale) for scale in (True, False)
     for square in ("pow", "mul") for form in ("div", "reciprocal", "one-over")],
    _replacement, _rms_norm_check)

RULES = register_rules([LAYER_NORM, RMS_NORM], group="fuse-normalization")


@register_pass
class FuseNormalization(KilnOpsRuleSetPass):
    """LayerNorm / RMSNorm written out -> LayerNormalization / RMSNormalization (or their
    ai.kiln ops on older opsets), with gamma and beta."""

    name = "fuse-normalization"
    rules = RuleSet(RULES)
    kiln_ops = ("LayerNormalization", "RMSNormalization")
