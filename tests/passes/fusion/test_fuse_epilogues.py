"""fuse-epilogues: Conv/Gemm + activation (and Conv + Add + Relu) -> one ai.kiln op each,
golden in text, checked against ONNX Runtime and, with every attribute given, onnx.reference."""

from __future__ import annotations

import numpy as np
import pytest
from onnx.reference import ReferenceEvaluator

from kiln.frontends.onnx import to_proto
from kiln.ir import Model, kiln_ops, parse_model, verify
from kiln.passes.fusion.epilogue import OPS, FuseEpilogues
from kiln.passes.pipelines import pipeline_string
from kiln.passes.rewrite import explain

OPSET = 18
ACTIVATIONS = {  # activation -> (its text after "%y = ", the fused op's extra attributes)
    "Relu": ("Relu(%t)", ""),
    "Clip": ("Clip(%t, %lo, %hi)", "activation_min: 0.0, activation_max: 6.0"),
    "Sigmoid": ("Sigmoid(%t)", ""),
    "Tanh": ("Tanh(%t)", ""),
    "LeakyRelu": ("LeakyRelu(%t) {alpha: 0.2}", "activation_alpha: 0.2"),
    "LeakyReluDefault": ("LeakyRelu(%t)", "activation_alpha: 0.01"),
    "HardSigmoid": ("HardSigmoid(%t) {alpha: 0.3, beta: 0.6}",
                    "activation_alpha: 0.3, activation_beta: 0.6"),
    "HardSwish": ("HardSwish(%t)", ""),
}
CONV_ATTRS = ('auto_pad: "NOTSET", dilations: [1, 1], group: 1, kernel_shape: [3, 3], '
              "pads: [1, 0, 1, 2], strides: [2, 1]")
GEMM_ATTRS = "alpha: 0.5, beta: 2.0, transA: 0, transB: 1"


def _data(dtype: str, shape: tuple[int, ...], seed: int) -> str:
    values = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    return f"{dtype}[{','.join(map(str, shape))}]{{{', '.join(str(v) for v in values.flat)}}}"


def _weights(base: str, attrs: str) -> str:
    if base == "Conv":
        return f"  init %w = {_data('f32', (3, 2, 3, 3), 1)}\n  init %b = {_data('f32', (3,), 2)}"
    w_shape = (5, 6) if "transB: 1" in attrs else (6, 5)
    return f"  init %w = {_data('f32', w_shape, 1)}\n  init %b = {_data('f32', (5,), 2)}"


def _inputs(base: str, attrs: str) -> str:
    if base == "Gemm":
        return "%x: f32[4,6]"
    return "%x: f32[1,2,6,6], %z: f32[1,3,3,6]" if attrs else "%x: f32[1,2,6,6], %z: f32[3,1,4]"


def _conv_type(base: str, attrs: str) -> str:
    """The type of the Conv's output in the text (the residual check reads its shape)."""
    if base == "Gemm":
        return ""
    return ": f32[1,3,3,6]" if attrs else ": f32[1,3,4,4]"


def _base_line(base: str, attrs: str, bias: bool = True) -> str:
    args = "%x, %w, %b" if bias else "%x, %w"
    return f"{base}({args}){f' {{{attrs}}}' if attrs else ''}"


def _before(base: str, act: str, attrs: str, *, residual: bool = False, bias: bool = True,
            opset: int = OPSET) -> str:
    activation, _ = ACTIVATIONS[act]
    add = "\n  %s = Add(%z, %t)" if residual else ""
    bounds = "\n  init %lo = f32[]{0}\n  init %hi = f32[]{6}" if act == "Clip" else ""
    return f"""
    model <opset_imports: {{"": {opset}}}>
    graph @g({_inputs(base, attrs)}) {{
    {_weights(base, attrs)}{bounds}
      %t{_conv_type(base, attrs)} = {_base_line(base, attrs, bias)}{add}
      %y = {activation.replace('%t', '%s' if residual else '%t')}
      return %y
    }}
    """


def _expected(base: str, act: str, attrs: str, *, residual: bool = False,
              bias: bool = True, opset: int = OPSET) -> Model:
    _, act_attrs = ACTIVATIONS[act]
    op = f"{base}{'Add' if residual else ''}{act.removesuffix('Default')}"
    args = ", ".join(["%x", "%w", "%b" if bias else "_", *(["%z"] if residual else [])])
    all_attrs = ", ".join(a for a in (attrs, act_attrs) if a)
    model = parse_model(f"""
    model <opset_imports: {{"": {opset}, "ai.kiln": 1}}>
    graph @g({_inputs(base, attrs)}) {{
    {_weights(base, attrs)}
      %y = ai.kiln::{op}({args}){f' {{{all_attrs}}}' if all_attrs else ''}
      return %y
    }}
    """)
    kiln_ops.use(model, op)
    return model


def _reference_matches_ort(model: Model, reference: Model, run_ort, random_feeds) -> None:
    """onnx.reference runs the fused model (the function body) as ORT runs the original."""
    feeds = random_feeds(model)
    got = ReferenceEvaluator(to_proto(model)).run(None, feeds)
    for g, w in zip(got, run_ort(reference, feeds), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("act", list(ACTIVATIONS))
@pytest.mark.parametrize("base", ["Conv", "Gemm"])
def test_activation_after_base(golden, run_ort, random_feeds, base, act):
    attrs = CONV_ATTRS if base == "Conv" else GEMM_ATTRS
    before, expected = _before(base, act, attrs), _expected(base, act, attrs)
    result = golden(FuseEpilogues(), before, expected)
    kebab = "".join(f"-{c.lower()}" if c.isupper() else c for c in act.removesuffix("Default"))
    assert result.stats == {f"fuse-{base.lower()}{kebab}": 1}
    verify(result.model)
    _reference_matches_ort(result.model, parse_model(before), run_ort, random_feeds)


def test_residual_conv_add_relu(golden, run_ort, random_feeds):
    before = _before("Conv", "Relu", CONV_ATTRS, residual=True)
    result = golden(FuseEpilogues(), before,
                    _expected("Conv", "Relu", CONV_ATTRS, residual=True))
    assert result.stats == {"fuse-conv-add-relu": 1}
    _reference_matches_ort(result.model, parse_model(before), run_ort, random_feeds)


@pytest.mark.parametrize(("base", "act", "residual"), [
    ("Conv", "Relu", False), ("Conv", "LeakyReluDefault", False), ("Conv", "Relu", True),
    ("Gemm", "HardSigmoid", False), ("Gemm", "Clip", False), ("Gemm", "LeakyReluDefault", False),
])
def test_absent_attributes_and_bias_keep_their_defaults(golden, base, act, residual):
    """The fused node carries only what the base node had; ORT applies the defaults."""
    golden(FuseEpilogues(), _before(base, act, "", residual=residual, bias=False),
           _expected(base, act, "", residual=residual, bias=False))


def test_clip_with_one_bound_gets_an_infinite_other(golden):
    before = """
    model <opset_imports: {"": 18}>
    graph @g(%x: f32[4,6], %w: f32[6,5]) {
      init %lo = f32[]{-1}
      %t = Gemm(%x, %w)
      %y = Clip(%t, %lo)
      return %y
    }
    """
    expected = parse_model("""
    model <opset_imports: {"": 18, "ai.kiln": 1}>
    graph @g(%x: f32[4,6], %w: f32[6,5]) {
      %y = ai.kiln::GemmClip(%x, %w, _) {activation_min: -1.0, activation_max: inf}
      return %y
    }
    """)
    kiln_ops.use(expected, "GemmClip")
    golden(FuseEpilogues(), before, expected)


def test_function_bodies_are_exact_and_pass_attributes_through():
    bodies = {op.name: op.function(OPSET) for op in OPS}
    assert len(bodies) == 15
    conv_relu = bodies["ConvRelu"]
    assert list(conv_relu.attributes) == ["auto_pad", "dilations", "group", "kernel_shape",
                                          "pads", "strides"]
    conv, relu = conv_relu.graph
    assert {a.name: a.ref_attr_name for a in conv.attributes.values()} == {
        name: name for name in conv_relu.attributes}
    assert (conv.op_type, relu.op_type) == ("Conv", "Relu")
    gemm, *rest = bodies["GemmHardSigmoid"].graph
    assert [a.name for a in gemm.attributes.values()] == ["alpha", "beta", "transA", "transB"]
    references = [a.ref_attr_name for n in rest for a in n.attributes.values()]
    assert references == ["activation_alpha", "activation_beta", "", ""]
    assert [n.op_type for n in rest][-4:] == ["Mul", "Add", "Min", "Max"]
    assert [n.op_type for n in bodies["GemmLeakyRelu"].graph] == ["Gemm", "Constant",
                                                                  "CastLike", "PRelu"]
    assert [n.op_type for n in bodies["ConvAddRelu"].graph] == ["Conv", "Add", "Relu"]


# -- where it must not fire ------------------------------------------------------------------
LEFT_ALONE = f"""
model <opset_imports: {{"": {OPSET}}}>
graph @g(%x: f32[1,2,6,6], %big: f32[2,3,6,6], %hi: f32[], %a: f32[1,3,6,6]) {{
{_weights("Conv", "")}
  init %lo = f32[]{{0}}
  %c1 = Conv(%x, %w, %b) {{pads: [1, 1, 1, 1]}}
  %y1 = Relu(%c1) @read_twice
  %c2 = Conv(%x, %w, %b) {{pads: [1, 1, 1, 1]}}
  %y2 = Clip(%c2, %lo, %hi) @dynamic_max
  %c3: f32[1,3,6,6] = Conv(%x, %w, %b) {{pads: [1, 1, 1, 1]}}
  %s3 = Add(%c3, %big)
  %y3 = Relu(%s3) @growing_residual
  %s4 = Add(%a, %a)
  %y4 = Relu(%s4) @no_conv
  return %y1, %c1, %y2, %y3, %y4
}}
"""


def test_left_alone(golden):
    golden(FuseEpilogues(), LEFT_ALONE, None)


def test_explain_says_why():
    model = parse_model(LEFT_ALONE)

    def why(rule: str, node: str) -> str:
        (line,) = [x for x in explain(model, rule) if f"'{node}'" in x]
        return line.split(": does not fire: ")[1]

    assert why("fuse-conv-relu", "read_twice") == (
        "%c1 (of Conv node (outputs 'c1')) is a graph output")
    assert why("fuse-conv-clip", "dynamic_max") == "check: Clip's max is not constant"
    assert why("fuse-conv-add-relu", "growing_residual") == (
        "check: the residual [2,3,6,6] is not known to broadcast to the Conv's output "
        "[1,3,6,6]")
    assert why("fuse-conv-add-relu", "no_conv") == "Conv expected, but %a has no producer"


def test_clip_bound_that_float32_cannot_hold():
    before = """
    model <opset_imports: {"": 18}>
    graph @g(%x: f64[4,6], %w: f64[6,5]) {
      init %lo = f64[]{0.1}
      %t = Gemm(%x, %w)
      %y = Clip(%t, %lo) @clip
      return %y
    }
    """
    model = parse_model(before)
    assert not FuseEpilogues()(model).changed
    (line,) = explain(model, "fuse-gemm-clip")
    assert line.endswith("check: Clip's min 0.1 is not exactly a float32")


def test_opset_too_old_for_the_clip_body(golden):
    before = _before("Gemm", "Clip", GEMM_ATTRS, opset=14)
    golden(FuseEpilogues(), before, None)
    (line,) = explain(parse_model(before), "fuse-gemm-clip")
    assert line.endswith("check: ai.kiln::GemmClip needs ai.onnx opset 15; the model "
                         "imports opset 14")


def test_not_in_the_default_pipeline():
    assert "fuse-epilogues" not in pipeline_string("default")
