"""fuse-gelu: GELU written out (erf and tanh forms, every arrangement) -> Gelu-20 or
ai.kiln::Gelu/GeluTanh, golden in text and checked against ONNX Runtime; torch exports."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest

from kiln.ir import kiln_ops, parse_model, verify
from kiln.passes import optimize
from kiln.passes.fusion.gelu import FuseGelu
from kiln.passes.rewrite import explain


def _model(text: str, opset: int = 20) -> str:
    return f'model <opset_imports: {{"": {opset}}}>\n{text}'


def _with_kiln_ops(text: str, *names: str):
    """The expected model: ``text`` plus the functions of the ai.kiln ops it calls."""
    model = parse_model(text)
    for name in names:
        kiln_ops.use(model, name)
    return model


TORCHSCRIPT_ERF = """
graph @g(%x: f32[2,5]) {
  init %sqrt2 = f32[]{1.4142135}
  init %one = f32[]{1}
  init %half = f32[]{0.5}
  %d = Div(%x, %sqrt2)
  %e = Erf(%d)
  %s = Add(%e, %one)
  %m = Mul(%x, %s)
  %y = Mul(%m, %half)
  return %y
}
"""

TORCHSCRIPT_TANH = """
graph @g(%x: f32[2,5]) {
  init %c = f32[]{0.044715}
  init %k = f32[]{0.7978846}
  init %one = f32[]{1}
  init %half = f32[]{0.5}
  %x2 = Mul(%x, %x)
  %x3 = Mul(%x, %x2)
  %cx3 = Mul(%c, %x3)
  %inner = Add(%x, %cx3)
  %arg = Mul(%k, %inner)
  %t = Tanh(%arg)
  %s = Add(%one, %t)
  %m = Mul(%x, %s)
  %y = Mul(%half, %m)
  return %y
}
"""


def test_erf_form_becomes_gelu_on_opset_20(golden):
    expected = """
    graph @g(%x: f32[2,5]) {
      %y = Gelu(%x)
      return %y
    }
    """
    result = golden(FuseGelu(), _model(TORCHSCRIPT_ERF), _model(expected))
    assert result.stats == {"fuse-gelu-erf": 1}


def test_tanh_form_becomes_gelu_tanh_on_opset_20(golden):
    expected = """
    graph @g(%x: f32[2,5]) {
      %y = Gelu(%x) {approximate: "tanh"}
      return %y
    }
    """
    result = golden(FuseGelu(), _model(TORCHSCRIPT_TANH), _model(expected))
    assert result.stats == {"fuse-gelu-tanh": 1}


@pytest.mark.parametrize(("before", "op"), [(TORCHSCRIPT_ERF, "Gelu"),
                                            (TORCHSCRIPT_TANH, "GeluTanh")])
def test_older_opsets_get_the_ai_kiln_op_with_its_function(golden, before, op):
    expected = f"""
    model <opset_imports: {{"": 17, "ai.kiln": 1}}>
    graph @g(%x: f32[2,5]) {{
      %y = ai.kiln::{op}(%x)
      return %y
    }}
    """
    result = golden(FuseGelu(), _model(before, 17), _with_kiln_ops(expected, op))
    verify(result.model)


# -- every arrangement, in both operand orders -------------------------------------------
class _Writer:
    """Writes a GELU decomposition in the text form; ``flip`` swaps every Add/Mul's operands."""

    def __init__(self, flip: bool) -> None:
        self.flip = flip
        self.lines: list[str] = []

    def __call__(self, op: str, a: str, b: str) -> str:
        if self.flip and op in ("Add", "Mul"):
            a, b = b, a
        name = f"%t{len(self.lines)}"
        self.lines.append(f"{name} = {op}({a}, {b})")
        return name

    def text(self, result: str, dtype: str = "f32", consts: dict[str, str] | None = None) -> str:
        values = {"half": "0.5", "one": "1", "sqrt2": "1.4142135", "rsqrt2": "0.70710677",
                  "k": "0.7978846", "c": "0.044715", "three": "3", "two": "2",
                  **(consts or {})}
        body = "\n".join(f"  {line}" for line in self.lines).replace(f"{result} =", "%y =")
        inits = "\n".join(f"  init %{n} = {dtype}[]{{{v}}}" for n, v in values.items()
                          if re.search(rf"%{n}\b", body))
        return f"graph @g(%x: {dtype}[3,4]) {{\n{inits}\n{body}\n  return %y\n}}"


def _outer(w: _Writer, arrangement: str, s: str) -> str:
    if arrangement == "half-first":
        return w("Mul", w("Mul", "%x", "%half"), s)
    if arrangement == "half-last":
        return w("Mul", w("Mul", "%x", s), "%half")
    return w("Mul", "%x", w("Mul", s, "%half"))


def _erf_text(arrangement: str, divide: bool, flip: bool, **text_options) -> str:
    w = _Writer(flip)
    scaled = w("Div", "%x", "%sqrt2") if divide else w("Mul", "%x", "%rsqrt2")
    erf = f"%t{len(w.lines)}"
    w.lines.append(f"{erf} = Erf({scaled})")
    return w.text(_outer(w, arrangement, w("Add", erf, "%one")), **text_options)


def _term(w: _Writer, form: str, power: str) -> str:
    if form == "pow":
        return w("Mul", "%c", w("Pow", "%x", power))
    if form == "mul":
        cube_or_square = w("Mul", "%x", "%x")
        if power == "%three":
            cube_or_square = w("Mul", cube_or_square, "%x")
        return w("Mul", "%c", cube_or_square)
    chain = w("Mul", w("Mul", "%c", "%x"), "%x")
    return w("Mul", chain, "%x") if power == "%three" else chain


def _tanh_text(arrangement: str, argument: str, term: str, flip: bool,
               **text_options) -> str:
    w = _Writer(flip)
    if argument == "k*(x+cx^3)":
        arg = w("Mul", "%k", w("Add", "%x", _term(w, term, "%three")))
    elif argument == "k*(x*(1+cx^2))":
        arg = w("Mul", "%k", w("Mul", "%x", w("Add", "%one", _term(w, term, "%two"))))
    else:  # (x*k)*(1+cx^2)
        arg = w("Mul", w("Mul", "%x", "%k"), w("Add", "%one", _term(w, term, "%two")))
    tanh = f"%t{len(w.lines)}"
    w.lines.append(f"{tanh} = Tanh({arg})")
    return w.text(_outer(w, arrangement, w("Add", tanh, "%one")), **text_options)


ARRANGEMENTS = ("half-first", "half-last", "half-on-sum")
GELU = """
graph @g(%x: {dtype}[3,4]) {{
  %y = Gelu(%x){attrs}
  return %y
}}
"""


@pytest.mark.parametrize("flip", [False, True], ids=["as-written", "swapped"])
@pytest.mark.parametrize("divide", [True, False], ids=["div-sqrt2", "mul-rsqrt2"])
@pytest.mark.parametrize("arrangement", ARRANGEMENTS)
def test_every_erf_arrangement(golden, arrangement, divide, flip):
    expected = GELU.format(dtype="f32", attrs="")
    golden(FuseGelu(), _erf_text(arrangement, divide, flip), expected)


@pytest.mark.parametrize("flip", [False, True], ids=["as-written", "swapped"])
@pytest.mark.parametrize(("argument", "term"), [
    *itertools.product(["k*(x+cx^3)"], ["pow", "mul", "chain"]),
    *itertools.product(["k*(x*(1+cx^2))", "(x*k)*(1+cx^2)"], ["pow", "mul", "chain"]),
])
@pytest.mark.parametrize("arrangement", ARRANGEMENTS)
def test_every_tanh_arrangement(golden, arrangement, argument, term, flip):
    expected = GELU.format(dtype="f32", attrs=' {approximate: "tanh"}')
    golden(FuseGelu(), _tanh_text(arrangement, argument, term, flip), expected)


def test_float16_and_double_constants_are_read_in_their_type(golden):
    # 0.70710677 rounds to 0.7070 in float16: within the type's epsilon of 1/sqrt(2).
    golden(FuseGelu(), _erf_text("half-last", False, False, dtype="f16"),
           GELU.format(dtype="f16", attrs=""))
    golden(FuseGelu(), _tanh_text("half-on-sum", "k*(x+cx^3)", "pow", True, dtype="f64"),
           GELU.format(dtype="f64", attrs=' {approximate: "tanh"}'))


def test_bfloat16_fuses_without_an_ort_check(golden):
    golden(FuseGelu(), _erf_text("half-first", True, True, dtype="bf16"),
           GELU.format(dtype="bf16", attrs=""), numeric=False)


def test_one_element_tensor_constants_fuse_when_the_rank_is_kept(golden):
    before = _erf_text("half-first", True, False).replace("f32[]{0.5}", "f32[1]{0.5}")
    golden(FuseGelu(), before, GELU.format(dtype="f32", attrs=""))


# -- where the rules must not fire, and explain says why ---------------------------------
@pytest.mark.parametrize(("text", "reason"), [
    (_erf_text("half-first", True, False, consts={"half": "0.6"}),
     "the factor 0.5 is 0.6, not 0.5"),
    (_erf_text("half-last", True, False, consts={"sqrt2": "1.5"}),
     "the divisor is 1.5, not 1.4142136"),
    (_erf_text("half-last", False, False, consts={"rsqrt2": "1.4142135"}),
     "the factor of x is 1.4142135, not 0.70710678"),
    (_erf_text("half-last", True, False, consts={"one": "2"}), "the 1 of 1 + ... is 2.0, not 1"),
    (_tanh_text("half-first", "k*(x+cx^3)", "pow", False).replace("{3}", "{2}"),
     "the exponent is 2, not 3"),
    (_tanh_text("half-first", "k*(x+cx^3)", "mul", False).replace("{0.044715}", "{0.05}"),
     "the cubic coefficient is 0.05, not 0.044715"),
    (_tanh_text("half-first", "k*(x*(1+cx^2))", "mul", False).replace("{0.7978846}",
                                                                      "{0.8}"),
     "the factor sqrt(2/pi) is 0.8, not 0.79788456"),
])
def test_wrong_constants_are_named(golden, text, reason):
    golden(FuseGelu(), text, None)
    lines = explain(parse_model(text), "fuse-gelu")
    assert any(line.endswith(f"check: {reason}") for line in lines), lines


def test_a_shared_intermediate_blocks_the_fusion(golden):
    text = _erf_text("half-last", True, False).replace("return %y", "return %y, %t1")
    golden(FuseGelu(), text, None)
    (line,) = [x for x in explain(parse_model(text), "fuse-gelu-erf") if "'y'" in x]
    assert line.endswith("%t1 (of Erf node (outputs 't1')) is a graph output")
    text = TORCHSCRIPT_ERF.replace("return %y", "%r = Relu(%s)\n  return %y, %r")
    golden(FuseGelu(), _model(text), None)
    (line,) = [x for x in explain(parse_model(_model(text)), "fuse-gelu-erf") if "'y'" in x]
    assert line.endswith("%s (of Add node (outputs 's')) is also read by Relu node "
                         "(outputs 'r')")


def test_non_constant_factor_and_rank_raising_constant_are_refused(golden):
    text = _erf_text("half-first", True, False).replace("init %half = f32[]{0.5}\n", "")
    text = text.replace("graph @g(%x: f32[3,4])", "graph @g(%x: f32[3,4], %half: f32[])")
    golden(FuseGelu(), text, None)
    assert any("the factor 0.5 is not constant" in line
               for line in explain(parse_model(text), "fuse-gelu-erf"))
    text = _erf_text("half-first", True, False).replace("f32[]{0.5}", "f32[1,1,1]{0.5}")
    golden(FuseGelu(), text, None)
    assert any("the factor 0.5 has shape [1, 1, 1] and may raise the rank of its input, "
               "whose rank is 2" in line for line in explain(parse_model(text), "fuse-gelu"))


def test_opsets_older_than_the_ai_kiln_body_are_left_alone(golden):
    golden(FuseGelu(), _model(TORCHSCRIPT_ERF, 14), None)
    lines = explain(parse_model(_model(TORCHSCRIPT_ERF, 14)), "fuse-gelu-erf")
    assert lines[-1].endswith("check: Gelu needs ai.onnx opset 20, and ai.kiln::Gelu needs "
                              "ai.onnx opset 15; the model imports opset 14")


def test_ir_version_without_functions_gets_no_ai_kiln_op(golden):
    before = _model(TORCHSCRIPT_ERF, 17).replace("model <", "model <ir_version: 7, ")
    golden(FuseGelu(), before, None)
    (*_, line) = explain(parse_model(before), "fuse-gelu-erf")
    assert "IR version 7 has no functions" in line


LOCAL_FUNCTION = """
model <opset_imports: {"": 20, "local": 1}>
graph @g(%x: f32[2,5]) {
  %y = local::MyGelu(%x)
  return %y
}
func local::MyGelu(%x) <opset_imports: {"": 20}> {
  %sqrt2 = Constant() {value: f32[]{1.4142135}}
  %one = Constant() {value: f32[]{1}}
  %half = Constant() {value: f32[]{0.5}}
  %d = Div(%x, %sqrt2)
  %e = Erf(%d)
  %s = Add(%e, %one)
  %m = Mul(%x, %s)
  %y = Mul(%m, %half)
  return %y
}
"""


def test_function_bodies_are_not_rewritten(golden):
    golden(FuseGelu(), LOCAL_FUNCTION, None)
    # explain looks where the passes look: the main graph and its subgraphs only
    assert explain(parse_model(LOCAL_FUNCTION), "fuse-gelu-erf") == [
        "fuse-gelu-erf: no Mul node to anchor at"]


def test_the_ai_kiln_body_is_not_fused_again():
    model = parse_model(_model(TORCHSCRIPT_ERF, 17))
    assert FuseGelu()(model).changed
    assert not FuseGelu()(model).changed
    assert list(model.functions) == [("ai.kiln", "Gelu", "")]


def test_constant_nodes_are_read_and_left_to_dead_code_elimination():
    text = TORCHSCRIPT_TANH.replace("init %c = f32[]{0.044715}",
                                    "%c = Constant() {value_float: 0.044715}")
    model = optimize(parse_model(_model(text)), passes="fuse-gelu,eliminate-dead-code")
    assert [n.op_type for n in model.graph] == ["Gelu"]


# -- torch exporters ----------------------------------------------------------------------
def _torch_modules():
    import math

    import torch

    class TanhGelu(torch.nn.Module):
        def forward(self, x):
            inner = math.sqrt(2 / math.pi) * (x + 0.044715 * torch.pow(x, 3))
            return 0.5 * x * (1 + torch.tanh(inner))

    class FastGelu(torch.nn.Module):  # as in Hugging Face's FastGELUActivation
        def forward(self, x):
            return 0.5 * x * (1.0 + torch.tanh(x * 0.7978845608 * (1.0 + 0.044715 * x * x)))

    return {"erf": torch.nn.GELU(), "tanh": torch.nn.GELU(approximate="tanh"),
            "hand-tanh": TanhGelu(), "fast-tanh": FastGelu()}


def _fused_matches_torch(module, exporter: str, opset: int, run_ort) -> list[str]:
    torch = pytest.importorskip("torch")
    import kiln

    x = torch.randn(2, 3, 16, generator=torch.Generator().manual_seed(0))
    model = kiln.from_torch(module, (x,), exporter=exporter, opset=opset)
    model = kiln.optimize(model)
    model = optimize(model, passes="fuse-gelu,eliminate-dead-code")
    (name,) = [v.name for v in model.graph.inputs]
    (got,) = run_ort(model, {name: x.numpy()})
    np.testing.assert_allclose(got, module(x).detach().numpy(), rtol=1e-4, atol=1e-5)
    return [n.qualified_op for n in model.graph]


@pytest.mark.torch
@pytest.mark.parametrize("case", ["erf", "tanh", "hand-tanh", "fast-tanh"])
def test_torchscript_opset_17_gelus_fuse_to_ai_kiln_ops(run_ort, case):
    module = _torch_modules()[case]
    ops = _fused_matches_torch(module, "torchscript", 17, run_ort)
    assert ops == ["ai.kiln::Gelu" if case == "erf" else "ai.kiln::GeluTanh"]


@pytest.mark.torch
def test_torchscript_opset_20_hand_written_gelu_fuses_to_gelu(run_ort):
    ops = _fused_matches_torch(_torch_modules()["hand-tanh"], "torchscript", 20, run_ort)
    assert ops == ["Gelu"]


@pytest.mark.torch
def test_dynamo_opset_18_gelus_fuse(run_ort):
    torch = pytest.importorskip("torch")
    modules = _torch_modules()

    class Both(torch.nn.Module):  # one export (~2 s) for the two forms torch.export writes
        def forward(self, x):
            return modules["erf"](x) + modules["tanh"](x)

    ops = _fused_matches_torch(Both(), "dynamo", 18, run_ort)
    assert sorted(ops) == ["Add", "ai.kiln::Gelu", "ai.kiln::GeluTanh"]


@pytest.mark.slow
@pytest.mark.torch
def test_bert_torchscript_opset_17_ends_with_its_gelus_fused(run_ort, random_feeds):
    pytest.importorskip("torch")
    import kiln
    from kiln.zoo import to_model

    # the clean-up passes only: the default pipeline fuses the GELUs itself
    model = kiln.optimize(to_model("bert", exporter="torchscript", opset=17),
                          passes="infer-shapes,lift-constants,fold-constants,cse,"
                                 "eliminate-dead-code")
    rng = np.random.default_rng(0)
    feeds = {v.name: rng.integers(0, 2, v.shape.dims).astype(np.int64)
             for v in model.graph.inputs}  # token ids and an attention mask
    want = run_ort(model, feeds)
    assert sum(n.op_type == "Erf" for n in model.graph) == 4
    model, report = optimize(model, passes="fuse-gelu,eliminate-dead-code", report=True)
    assert report.stats["fuse-gelu.fuse-gelu-erf"] == 4
    assert sum(n.qualified_op == "ai.kiln::Gelu" for n in model.graph) == 4
    assert not [n for n in model.graph if n.op_type == "Erf"]
    for got, w in zip(run_ort(model, feeds), want, strict=True):
        np.testing.assert_allclose(got, w, rtol=1e-4, atol=1e-5)
