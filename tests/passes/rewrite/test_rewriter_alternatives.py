"""The pattern rewriter: backtracking through commutative operands, rules with alternative
patterns rooted at different ops, checks that read the model, and removal of a node the
match reads twice."""

from __future__ import annotations

from kiln.ir import parse_model
from kiln.passes.rewrite import Match, MatchResult, Rule, RuleSet, current_model, explain
from kiln.testing import assert_models_equal


def _scaled_erf(op, x, r, one, half):
    return op.Mul(op.Add(op.Erf(op.Mul(x, r)), one), op.Mul(x, half))


def _keep_x(op, x, **_):
    return op.Identity(x)


def test_a_variable_bound_in_one_operand_order_is_unbound_when_that_order_fails():
    # Mul(%r, %x) binds x to %r first; only backtracking finds x = %x.
    model = parse_model("""
    graph @g(%x: f32[3]) {
      init %r = f32[]{0.7}
      init %h = f32[]{0.5}
      init %o = f32[]{1}
      %a = Mul(%r, %x)
      %e = Erf(%a)
      %s = Add(%o, %e)
      %b = Mul(%h, %x)
      %y = Mul(%b, %s)
      return %y
    }
    """)
    assert RuleSet([Rule("scaled-erf", _scaled_erf, _keep_x)]).apply(model) == {"scaled-erf": 1}
    assert [n.op_type for n in model.graph] == ["Identity"]


def _halve_div(op, x, two):
    return op.Div(x, two)


def _halve_mul(op, x, two):
    return op.Mul(op.Reciprocal(two), x)


def _opset_check(m: Match) -> MatchResult:
    model = current_model()
    if model is None or model.opset < 18:
        return MatchResult.fail(f"opset {model.opset if model else None} is older than 18")
    return MatchResult.ok()


HALVE = Rule("halve", [_halve_div, _halve_mul], _keep_x, _opset_check)

TWO_HALVES = """
model <opset_imports: {{"": {opset}}}>
graph @g(%x: f32[3], %t: f32[]) {{
  %a = Div(%x, %t)
  %r = Reciprocal(%t)
  %b = Mul(%x, %r)
  %c = Mul(%x, %x)
  return %a, %b, %c
}}
"""


def test_alternatives_rooted_at_different_ops_and_checks_that_read_the_model():
    assert current_model() is None
    lines = explain(parse_model(TWO_HALVES.format(opset=17)), HALVE)
    assert lines == [
        "halve at Div node (outputs 'a'): does not fire: check: opset 17 is older than 18",
        "halve at Mul node (outputs 'b'): does not fire: check: opset 17 is older than 18",
        "halve at Mul node (outputs 'c'): does not fire: Reciprocal expected, but %x has no "
        "producer",
    ]
    model = parse_model(TWO_HALVES.format(opset=18))
    assert RuleSet([HALVE]).apply(model) == {"halve": 2}
    assert [n.op_type for n in model.graph] == ["Identity", "Identity", "Mul"]
    assert current_model() is None
    assert explain(parse_model("graph @g(%x: f32) { return %x }"), HALVE) == [
        "halve: no Div/Mul node to anchor at"]


def _abs_times_diff(op, x, y, d):
    return op.Mul(op.Abs(d), op.Sub(x, y, _bind="sub"))


def _same_diff(m: Match) -> bool:
    return m["d"] is m["sub"].outputs[0]


def test_a_node_read_twice_in_the_match_is_removed_after_its_last_reader():
    model = parse_model("""
    graph @g(%x: f32[3], %y: f32[3]) {
      %s = Sub(%x, %y)
      %a = Abs(%s)
      %m = Mul(%a, %s)
      return %m
    }
    """)
    rule = Rule("abs-times-diff", _abs_times_diff, lambda op, x, y, **_: op.Max(x, y),
                _same_diff)
    assert RuleSet([rule]).apply(model) == {"abs-times-diff": 1}
    assert_models_equal(model, """
    graph @g(%x: f32[3], %y: f32[3]) {
      %m = Max(%x, %y)
      return %m
    }
    """)
