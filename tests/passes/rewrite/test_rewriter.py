"""The pattern rewriter: matching (commutative ops, shared intermediates, repeated vars),
checks that say why, replacement with domain-qualified ops, rule sets, explain, CLI."""

from __future__ import annotations

import numpy as np
import pytest

from kiln.cli import main
from kiln.errors import KilnError
from kiln.frontends.onnx import save
from kiln.ir import parse_model
from kiln.passes.rewrite import Match, MatchResult, Rule, RuleSet, explain
from kiln.testing import assert_models_equal


def _gelu_pattern(op, x):
    return op.Mul(op.Mul(x, op.Add(op.Erf(op.Div(x, 1.4142135)), 1.0)), 0.5)


def _square_pattern(op, x):
    return op.Mul(x, x)


def _square_replacement(op, x):
    return op.Pow(x, op.initializer(np.array(2.0, np.float32), "two"))


SQUARE = Rule("square", _square_pattern, _square_replacement)


def _relu_pattern(op, x):
    return op.Relu(op.Neg(x))


def _relu_check(m: Match) -> MatchResult:
    x = m["x"]
    if x.shape is None or x.shape.rank != 1:
        return MatchResult.fail("x is not 1-D")
    return MatchResult.ok(alpha=0.5)


def _relu_replacement(op, x, alpha):
    return op.MyRelu(x, _domain="custom", alpha=alpha)


NEG_RELU = Rule("neg-relu", _relu_pattern, _relu_replacement, _relu_check)


def test_commutative_match_and_same_variable_twice():
    model = parse_model("""
    graph @g(%x: f32[3], %y: f32[3]) {
      %a = Mul(%x, %x)
      %b = Mul(%x, %y)
      return %a, %b
    }
    """)
    stats = RuleSet([SQUARE]).apply(model)
    assert stats == {"square": 1}
    assert_models_equal(model, """
    graph @g(%x: f32[3], %y: f32[3]) {
      init %two = f32[]{2}
      %a = Pow(%x, %two)
      %b = Mul(%x, %y)
      return %a, %b
    }
    """)
    (line,) = explain(model, SQUARE)
    assert "%x is bound to %x and also to %y" in line


def test_check_extras_reach_a_domain_qualified_replacement():
    model = parse_model("""
    graph @g(%x: f32[3], %z: f32[2,3]) {
      %n = Neg(%x)
      %y = Relu(%n)
      %m = Neg(%z)
      %w = Relu(%m)
      return %y, %w
    }
    """)
    assert RuleSet([NEG_RELU]).apply(model) == {"neg-relu": 1}
    (node, _, _) = list(model.graph)
    assert (node.domain, node.op_type, node.attr("alpha")) == ("custom", "MyRelu", 0.5)
    assert node.outputs[0].name == "y"  # the graph output keeps its name
    (line,) = explain(model, NEG_RELU)
    assert line.endswith("does not fire: check: x is not 1-D")


def test_intermediate_graph_output_or_shared_blocks_unless_allowed():
    text = """
    graph @g(%x: f32[3]) {
      %n = Neg(%x)
      %y = Relu(%n)
      return %y, %n
    }
    """
    (line,) = explain(parse_model(text), NEG_RELU)
    assert "%n (of Neg node (outputs 'n')) is a graph output" in line
    shared = Rule("neg-relu-shared", _relu_pattern, _relu_replacement, _relu_check,
                  allow_shared=True)
    model = parse_model(text)
    assert RuleSet([shared]).apply(model) == {"neg-relu-shared": 1}
    assert [n.op_type for n in model.graph] == ["Neg", "MyRelu"]


def test_mismatch_names_the_pattern_node():
    model = parse_model("""
    graph @g(%x: f32[3]) {
      %n = Abs(%x)
      %y = Relu(%n)
      return %y
    }
    """)
    (line,) = explain(model, NEG_RELU)
    assert line == ("neg-relu at Relu node (outputs 'y'): does not fire: Abs node "
                    "(outputs 'n'): expected Neg, found Abs")


def test_explain_unknown_rule_is_a_kiln_error():
    with pytest.raises(KilnError, match="unknown rule 'no-such-rule'; known rules: .*fuse-"):
        explain(parse_model("graph @g(%x: f32[3]) {\n return %x\n}"), "no-such-rule")


def test_pattern_must_return_an_op():
    with pytest.raises(TypeError, match="must return an op"):
        Rule("bad", lambda op, x: x, _square_replacement)


def test_cli_explain_prints_reasons(tmp_path, capsys):
    model = parse_model("""
    graph @g(%x: f32[2,4,3]) {
      init %w = f32[3,2]{1, 2, 3, 4, 5, 6}
      init %b = f32[2]{0.5, -1}
      %m = MatMul(%x, %w)
      %y = Add(%m, %b)
      return %y
    }
    """)
    path = tmp_path / "m.onnx"
    save(model, path)
    code = main(["optimize", str(path), "-o", str(tmp_path / "o.onnx"), "--passes",
                 "fuse-matmul-add", "--explain", "fuse-matmul-add"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "does not fire: check: x is not known to be 2-D" in out
    code = main(["optimize", str(path), "-o", str(tmp_path / "o.onnx"), "--explain", "nope"])
    assert code != 0
    assert "unknown rule 'nope'" in capsys.readouterr().err


def test_result_keeps_the_anchor_name_and_new_values_are_named():
    def pattern(op, x):
        return op.Relu(op.Neg(x))

    def replacement(op, x):
        return op.Relu(op.Sub(op.Neg(x), op.initializer(np.zeros(1, np.float32), "zero")))

    model = parse_model("""
    graph @g(%x: f32[3]) {
      %n = Neg(%x)
      %r = Relu(%n)
      %y = Abs(%r)
      return %y
    }
    """)
    assert RuleSet([Rule("expand", pattern, replacement)]).apply(model, max_rounds=1)
    assert_models_equal(model, """
    graph @g(%x: f32[3]) {
      init %zero = f32[1]{0}
      %r_neg = Neg(%x)
      %r_sub = Sub(%r_neg, %zero)
      %r = Relu(%r_sub)
      %y = Abs(%r)
      return %y
    }
    """)
