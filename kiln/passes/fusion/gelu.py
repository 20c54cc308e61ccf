"""``fuse-gelu``: GELU written out in elementwise ops becomes one op.

Rules:

- ``fuse-gelu-erf``: ``0.5 * x * (1 + Erf(x / sqrt(2)))``, with ``x / 1.4142135`` or
  ``x * 0.70710677``, and the halving first (``(x * 0.5) * s``), last (``(x * s) * 0.5``)
  or on the sum (``x * (0.5 * s)``, as torch.export writes it).
- ``fuse-gelu-tanh``: ``0.5 * x * (1 + Tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))`` in the
  same three arrangements, with ``x^3`` as ``Pow(x, 3)``, ``x * x * x`` or
  ``0.044715 * x * x * x``, and the factorizations ``x * (1 + 0.044715 * x^2)`` (scaled by
  sqrt(2/pi) before or after the multiplication by x, as in ``x * 0.7978845608 * (1 +
  0.044715 * x * x)``).

Operands of Add and Mul may come in any order. Constants must be one-element floats equal
to the expected value within a relative 1e-4 (or their type's epsilon: float16 and bfloat16
constants are rounded); the exponents must be exactly 3 (or 2 in the factorizations).

The result is the standard ``Gelu`` (``approximate="tanh"`` for the tanh form) when the
model imports ai.onnx opset 20 or newer. On older opsets (15 to 19) it is one of two
``ai.kiln`` ops, ``ai.kiln::Gelu`` (the erf form) and ``ai.kiln::GeluTanh`` (the tanh
form): two ops rather than one with an ``approximate`` attribute, because an ONNX function
body cannot branch on a string attribute, and each body is the standard decomposition, so
ONNX Runtime runs the model as before while kiln's backends see one op. Their bodies need
CastLike (opset 15) to make constants of the input's type; on older opsets the rules do not
fire, and ``explain`` says so.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

from kiln.ir import kiln_ops
from kiln.passes._base import register_pass
from kiln.passes.fusion._decomposed import (
    element_type,
    exponent,
    fused_op,
    near_constant,
)
from kiln.passes.fusion._kiln_op import KilnOpsRuleSetPass
from kiln.passes.rewrite import Match, MatchResult, PatternNode, Rule, RuleSet, register_rules

kiln_ops.define("Gelu", """
    Gelu (X) => (Y) {
        half_f = Constant <value_float = 0.5> ()
        one_f = Constant <value_float = 1.0> ()
        rsqrt2_f = Constant <value_float = 0.70710677> ()
        half = CastLike (half_f, X)
        one = CastLike (one_f, X)
        rsqrt2 = CastLike (rsqrt2_f, X)
        scaled = Mul (X, rsqrt2)
        erf = Erf (scaled)
        erf_plus_one = Add (erf, one)
        half_x = Mul (X, half)
        Y = Mul (half_x, erf_plus_one)
    }
""", doc="GELU, exactly: Y = 0.5 * X * (1 + erf(X / sqrt(2))) (ONNX Gelu-20, "
         "approximate='none').", min_opset=15)

kiln_ops.define("GeluTanh", """
    GeluTanh (X) => (Y) {
        half_f = Constant <value_float = 0.5> ()
        one_f = Constant <value_float = 1.0> ()
        k_f = Constant <value_float = 0.7978846> ()
        c_f = Constant <value_float = 0.044715> ()
        half = CastLike (half_f, X)
        one = CastLike (one_f, X)
        k = CastLike (k_f, X)
        c = CastLike (c_f, X)
        x2 = Mul (X, X)
        x3 = Mul (x2, X)
        cx3 = Mul (c, x3)
        inner = Add (X, cx3)
        scaled = Mul (k, inner)
        tanh = Tanh (scaled)
        tanh_plus_one = Add (tanh, one)
        half_x = Mul (X, half)
        Y = Mul (half_x, tanh_plus_one)
    }
""", doc="GELU, tanh approximation: Y = 0.5 * X * (1 + tanh(sqrt(2/pi) * (X + 0.044715 * "
         "X^3))) (ONNX Gelu-20, approximate='tanh').", min_opset=15)

SQRT2 = math.sqrt(2.0)
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
KAPPA = 0.044715

Outer = Callable[..., PatternNode]


# -- the halving: s is 1 + Erf(...) or 1 + Tanh(...) ---------------------------------------
def _half_first(op, x, s, half):
    return op.Mul(op.Mul(x, half), s)


def _half_last(op, x, s, half):
    return op.Mul(op.Mul(x, s), half)


def _half_on_sum(op, x, s, half):
    return op.Mul(x, op.Mul(s, half))


OUTERS: tuple[Outer, ...] = (_half_first, _half_last, _half_on_sum)


# -- the erf form ---------------------------------------------------------------------------
def _erf_pattern(outer: Outer, scale_op: str) -> Callable[..., PatternNode]:
    def pattern(op, x, half, one, r):
        scaled = getattr(op, scale_op)(x, r, _bind="scale")
        return outer(op, x, op.Add(op.Erf(scaled), one), half)

    return pattern


def _erf_check(m: Match) -> MatchResult:
    dividing = m["scale"].op_type == "Div"
    want, what = (SQRT2, "the divisor") if dividing else (1 / SQRT2, "the factor of x")
    return _check(m, "Gelu", [("r", want, what)])


# -- the tanh form: the argument of Tanh, k * (x + c * x^3) and its factorizations ----------
def _cube_pow(op, x, c, p):
    return op.Mul(c, op.Pow(x, p))


def _cube_mul(op, x, c, p):
    return op.Mul(c, op.Mul(op.Mul(x, x), x))


def _cube_chain(op, x, c, p):
    return op.Mul(op.Mul(op.Mul(c, x), x), x)


def _square_pow(op, x, c, p):
    return op.Mul(c, op.Pow(x, p))


def _square_mul(op, x, c, p):
    return op.Mul(c, op.Mul(x, x))


def _square_chain(op, x, c, p):
    return op.Mul(op.Mul(c, x), x)


def _k_times_sum(op, x, k, c, p, one2, term):  # k * (x + c * x^3)
    return op.Mul(k, op.Add(x, term(op, x, c, p)))


def _k_times_product(op, x, k, c, p, one2, term):  # k * (x * (1 + c * x^2))
    return op.Mul(k, op.Mul(x, op.Add(one2, term(op, x, c, p))))


def _xk_times_sum(op, x, k, c, p, one2, term):  # (x * k) * (1 + c * x^2)
    return op.Mul(op.Mul(x, k), op.Add(one2, term(op, x, c, p)))


ARGUMENTS = (
    *itertools.product([_k_times_sum], [_cube_pow, _cube_mul, _cube_chain]),
    *itertools.product([_k_times_product, _xk_times_sum],
                       [_square_pow, _square_mul, _square_chain]),
)


def _tanh_pattern(outer: Outer, argument: Callable[..., PatternNode],
                  term: Callable[..., PatternNode]) -> Callable[..., PatternNode]:
    def pattern(op, x, half, one, k, c, p, one2):
        tanh = op.Tanh(argument(op, x, k, c, p, one2, term))
        return outer(op, x, op.Add(tanh, one), half)

    return pattern


def _tanh_check(m: Match) -> MatchResult:
    constants = [("k", SQRT_2_OVER_PI, "the factor sqrt(2/pi)"),
                 ("c", KAPPA, "the cubic coefficient")]
    factored = "one2" in m.values
    if factored:
        constants.append(("one2", 1.0, "the 1 of 1 + 0.044715 * x^2"))
    if "p" in m.values:
        power = exponent(m["p"], 2 if factored else 3)
        if not power:
            return power
    return _check(m, "GeluTanh", constants)


# -- shared ---------------------------------------------------------------------------------
def _check(m: Match, kiln_name: str, constants: list[tuple[str, float, str]]) -> MatchResult:
    x = m["x"]
    for name, want, what in [("half", 0.5, "the factor 0.5"), ("one", 1.0, "the 1 of 1 + ..."),
                             *constants]:
        found = near_constant(m[name], want, what, x)
        if isinstance(found, MatchResult):
            return found
    if x.dtype is not None and element_type(x.dtype.numpy) is None:
        return MatchResult.fail(f"x is {x.dtype.short_name}; Gelu takes f16/bf16/f32/f64")
    target = fused_op(m, "Gelu", 20, kiln_name)
    if isinstance(target, MatchResult):
        return target
    domain, op_type = target
    attributes = {"approximate": "tanh"} if kiln_name == "GeluTanh" and not domain else {}
    return MatchResult.ok(domain=domain, op_type=op_type, attributes=attributes)


def _replacement(op, x, domain, op_type, attributes, **_):
    return getattr(op, op_type)(x, _domain=domain, **attributes)


RULES = register_rules([
    Rule("fuse-gelu-erf",
         [_erf_pattern(outer, scale_op) for outer in OUTERS for scale_op in ("Div", "Mul")],
         _replacement, _erf_check),
    Rule("fuse-gelu-tanh",
         [_tanh_pattern(outer, argument, term) for outer in OUTERS
          for argument, term in ARGUMENTS],
         _replacement, _tanh_check),
], group="fuse-gelu")


@register_pass
class FuseGelu(KilnOpsRuleSetPass):
    """GELU written out (erf or tanh form) -> Gelu (opset >= 20) or ai.kiln::Gelu/GeluTanh."""

    name = "fuse-gelu"
    rules = RuleSet(RULES)
    kiln_ops = ("Gelu", "GeluTanh")
