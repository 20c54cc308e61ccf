"""fuse-normalization: LayerNorm and RMSNorm written out -> LayerNormalization-17 /
RMSNormalization-23 or their ai.kiln ops, golden in text and checked against ONNX Runtime;
negative cases with explain; torch exports."""

from __future__ import annotations

import numpy as np
import pytest

from kiln.ir import kiln_ops, parse_model, verify
from kiln.passes import optimize
from kiln.passes.fusion.normalization import FuseNormalization
from kiln.passes.rewrite import explain

GAMMA_BETA = """
  init %gamma = f32[4]{0.5, -1, 2, 1.5}
  init %beta = f32[4]{0.1, 0.2, -0.3, 0}
"""


def _with_kiln_ops(text: str, *names: str):
    """The expected model: ``text`` plus the functions of the ai.kiln ops it calls."""
    model = parse_model(text)
    for name in names:
        kiln_ops.use(model, name)
    return model


# torch.onnx (TorchScript) at opset 17: axes as an attribute, Pow 2, Div, gamma, beta.
TORCHSCRIPT_LAYER_NORM = f"""
model <opset_imports: {{"": 17}}>
graph @g(%x: f32[2,3,4]) {{
  {GAMMA_BETA}
  init %two = f32[]{{2}}
  init %eps = f32[]{{1e-5}}
  %mean = ReduceMean(%x) {{axes: [-1]}}
  %d = Sub(%x, %mean)
  %sq = Pow(%d, %two)
  %var = ReduceMean(%sq) {{axes: [-1]}}
  %ve = Add(%var, %eps)
  %std = Sqrt(%ve)
  %n = Div(%d, %std)
  %s = Mul(%n, %gamma)
  %y = Add(%s, %beta)
  return %y
}}
"""


def test_layer_norm_with_gamma_and_beta(golden):
    expected = f"""
    model <opset_imports: {{"": 17}}>
    graph @g(%x: f32[2,3,4]) {{
      {GAMMA_BETA}
      %y = LayerNormalization(%x, %gamma, %beta) {{axis: -1, epsilon: 1e-5}}
      return %y
    }}
    """
    result = golden(FuseNormalization(), TORCHSCRIPT_LAYER_NORM, expected)
    assert result.stats == {"fuse-layer-norm": 1}


def test_layer_norm_opset_18_axes_input_reciprocal_square_by_mul_no_affine(golden):
    # axes [2] on a rank-3 x; x - mean squared by Mul; Mul by Reciprocal; no gamma/beta.
    before = """
    model <opset_imports: {"": 18}>
    graph @g(%x: f32[2,3,4]) {
      init %axes = i64[1]{2}
      init %eps = f32[1]{1e-3}
      %mean = ReduceMean(%x, %axes)
      %d = Sub(%x, %mean)
      %sq = Mul(%d, %d)
      %var = ReduceMean(%sq, %axes)
      %ve = Add(%eps, %var)
      %std = Sqrt(%ve)
      %r = Reciprocal(%std)
      %y = Mul(%r, %d)
      return %y
    }
    """
    expected = """
    model <opset_imports: {"": 18}>
    graph @g(%x: f32[2,3,4]) {
      init %layer_norm_scale = f32[4]{1}
      %y = LayerNormalization(%x, %layer_norm_scale) {axis: -1, epsilon: 1e-3}
      return %y
    }
    """
    golden(FuseNormalization(), before, expected)


def test_layer_norm_over_two_axes_written_twice_as_torch_export_does(golden):
    # torch.export writes x - mean twice; gamma only; the last two axes.
    before = """
    model <opset_imports: {"": 18}>
    graph @g(%x: f32[2,3,4]) {
      init %axes = i64[2]{-2, -1}
      init %gamma = f32[3,4]{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
      init %two = f32[]{2}
      init %eps = f32[]{1e-5}
      %mean = ReduceMean(%x, %axes)
      %d = Sub(%x, %mean)
      %sq = Pow(%d, %two)
      %var = ReduceMean(%sq, %axes)
      %d2 = Sub(%x, %mean)
      %ve = Add(%var, %eps)
      %std = Sqrt(%ve)
      %n = Div(%d2, %std)
      %y = Mul(%gamma, %n)
      return %y
    }
    """
    expected = """
    model <opset_imports: {"": 18}>
    graph @g(%x: f32[2,3,4]) {
      init %gamma = f32[3,4]{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
      %y = LayerNormalization(%x, %gamma) {axis: -2, epsilon: 1e-5}
      return %y
    }
    """
    golden(FuseNormalization(), before, expected)


def test_layer_norm_beta_only_on_a_graph_input_bias(golden):
    before = """
    model <opset_imports: {"": 17}>
    graph @g(%x: f32[N,4], %b: f32[4]) {
      init %eps = f32[]{1e-5}
      %mean = ReduceMean(%x) {axes: [1]}
      %d = Sub(%x, %mean)
      %sq = Mul(%d, %d)
      %var = ReduceMean(%sq) {axes: [1]}
      %ve = Add(%var, %eps)
      %std = Sqrt(%ve)
      %n = Div(%d, %std)
      %y = Add(%b, %n)
      return %y
    }
    """
    expected = """
    model <opset_imports: {"": 17}>
    graph @g(%x: f32[N,4], %b: f32[4]) {
      init %layer_norm_scale = f32[4]{1}
      %y = LayerNormalization(%x, %layer_norm_scale, %b) {axis: -1, epsilon: 1e-5}
      return %y
    }
    """
    golden(FuseNormalization(), before, expected)


def test_layer_norm_on_opset_16_is_the_ai_kiln_op_with_a_zero_bias(golden):
    before = TORCHSCRIPT_LAYER_NORM.replace('"": 17', '"": 16').replace(
        "  %y = Add(%s, %beta)\n", "").replace("%s = Mul", "%y = Mul")
    expected = """
    model <opset_imports: {"": 16, "ai.kiln": 1}>
    graph @g(%x: f32[2,3,4]) {
      init %gamma = f32[4]{0.5, -1, 2, 1.5}
      init %beta = f32[4]{0.1, 0.2, -0.3, 0}
      init %layer_norm_bias = f32[4]{0}
      %y = ai.kiln::LayerNormalization(%x, %gamma, %layer_norm_bias) {axis: -1, epsilon: 1e-5}
      return %y
    }
    """
    result = golden(FuseNormalization(), before, _with_kiln_ops(expected, "LayerNormalization"))
    verify(result.model)


def test_layer_norm_f16_keeps_its_type(golden):
    before = TORCHSCRIPT_LAYER_NORM.replace("f32", "f16")
    expected = f"""
    model <opset_imports: {{"": 17}}>
    graph @g(%x: f16[2,3,4]) {{
      {GAMMA_BETA.replace("f32", "f16")}
      %y = LayerNormalization(%x, %gamma, %beta) {{axis: -1, epsilon: 1.0013580322265625e-05}}
      return %y
    }}
    """
    golden(FuseNormalization(), before, expected)


RMS_NORM = """
model <opset_imports: {{"": {opset}}}>
graph @g(%x: f32[2,3,4]) {{
  init %gamma = f32[4]{{0.5, -1, 2, 1.5}}
  init %eps = f32[]{{1e-6}}
{constants}
  %sq = {square}
  %ms = {reduce}
  %mse = Add(%ms, %eps)
  %rms = Sqrt(%mse)
{division}
  %y = Mul(%gamma, %n)
  return %y
}}
"""


def _rms_text(opset: int, square: str, division: str) -> str:
    body = square + DIVISIONS[division]
    constants = [f"  init %{name} = f32[]{{{value}}}" for name, value in (("two", 2), ("one", 1))
                 if f"%{name}" in body]
    if opset >= 18:
        constants.append("  init %axes = i64[1]{-1}")
        reduce = "ReduceMean(%sq, %axes)"
    else:
        reduce = "ReduceMean(%sq) {axes: [-1]}"
    return RMS_NORM.format(opset=opset, square=square, division=DIVISIONS[division],
                           constants="\n".join(constants), reduce=reduce)


DIVISIONS = {
    "div": "  %n = Div(%x, %rms)",
    "reciprocal": "  %r = Reciprocal(%rms)\n  %n = Mul(%x, %r)",
    "one-over": "  %r = Div(%one, %rms)\n  %n = Mul(%r, %x)",
}


@pytest.mark.parametrize("square", ["Pow(%x, %two)", "Mul(%x, %x)"])
@pytest.mark.parametrize("division", DIVISIONS)
def test_rms_norm_on_opset_23_is_rms_normalization(golden, square, division):
    before = _rms_text(23, square, division)
    expected = """
    model <opset_imports: {"": 23}>
    graph @g(%x: f32[2,3,4]) {
      init %gamma = f32[4]{0.5, -1, 2, 1.5}
      %y = RMSNormalization(%x, %gamma) {axis: -1, epsilon: 1e-6}
      return %y
    }
    """
    result = golden(FuseNormalization(), before, expected)
    assert result.stats == {"fuse-rms-norm": 1}


def test_rms_norm_on_opset_17_is_the_ai_kiln_op(golden):
    before = _rms_text(17, "Pow(%x, %two)", "one-over")
    expected = """
    model <opset_imports: {"": 17, "ai.kiln": 1}>
    graph @g(%x: f32[2,3,4]) {
      init %gamma = f32[4]{0.5, -1, 2, 1.5}
      %y = ai.kiln::RMSNormalization(%x, %gamma) {axis: -1, epsilon: 1e-6}
      return %y
    }
    """
    golden(FuseNormalization(), before, _with_kiln_ops(expected, "RMSNormalization"))


def test_rms_norm_without_gamma_gets_a_scale_of_ones(golden):
    before = """
    model <opset_imports: {"": 20}>
    graph @g(%x: f64[3,5]) {
      init %axes = i64[1]{-1}
      init %eps = f64[]{1e-6}
      %sq = Mul(%x, %x)
      %ms = ReduceMean(%sq, %axes)
      %mse = Add(%ms, %eps)
      %rms = Sqrt(%mse)
      %y = Div(%x, %rms)
      return %y
    }
    """
    expected = """
    model <opset_imports: {"": 20, "ai.kiln": 1}>
    graph @g(%x: f64[3,5]) {
      init %rms_norm_scale = f64[5]{1}
      %y = ai.kiln::RMSNormalization(%x, %rms_norm_scale) {axis: -1, epsilon: 1e-6}
      return %y
    }
    """
    golden(FuseNormalization(), before, _with_kiln_ops(expected, "RMSNormalization"))


# -- where the rules must not fire (or fire on less), and explain says why ----------------
def _layer_norm_explained(text: str) -> list[str]:
    return [line for line in explain(parse_model(text), "fuse-layer-norm") if "fires" in line
            or "check:" in line or "read" in line or "output" in line]


@pytest.mark.parametrize(("change", "reason"), [
    (("{axes: [-1]}", "{axes: [1]}"), "reduces axes [-2], not the trailing axes of x"),
    (("%mean = ReduceMean(%x) {axes: [-1]}", "%mean = ReduceMean(%x) {axes: [-2, -1]}"),
     "the mean and the variance reduce different axes"),
    (("init %eps = f32[]{1e-5}\n", ""), "eps is not constant"),
    (("init %two = f32[]{2}", "init %two = f32[]{3}"), "the exponent is 3, not 2"),
    (("{axes: [-1]}", "{axes: [-1], keepdims: 0}"), "has keepdims=0"),
    (('"": 17', '"": 14'), "LayerNormalization needs ai.onnx opset 17, and "
                           "ai.kiln::LayerNormalization needs ai.onnx opset 15; the model "
                           "imports opset 14"),
    (("return %y", "return %y, %mean"), "%mean (of ReduceMean node (outputs 'mean')) is a "
                                        "graph output"),
])
def test_layer_norm_refusals_are_explained(golden, change, reason):
    text = TORCHSCRIPT_LAYER_NORM.replace(*change)
    if "%eps" not in text.split("%mean")[0]:
        text = text.replace("graph @g(%x: f32[2,3,4])", "graph @g(%x: f32[2,3,4], %eps: f32[])")
    golden(FuseNormalization(), text, None, numeric="keepdims" not in reason)
    lines = explain(parse_model(text), "fuse-layer-norm")
    assert any(line.endswith(reason) for line in lines), lines
    rms_lines = explain(parse_model(text), "fuse-rms-norm")  # nor is its tail an RMSNorm
    assert not any(line.endswith("fires") for line in rms_lines)


def test_positive_axes_need_a_known_rank(golden):
    text = TORCHSCRIPT_LAYER_NORM.replace("{axes: [-1]}", "{axes: [2]}").replace(
        "%x: f32[2,3,4]", "%x: f32")
    golden(FuseNormalization(), text, None, numeric=False)  # no shape to make inputs
    assert any(line.endswith("the rank of x is not known, so axes [2] of ReduceMean node "
                             "(outputs 'mean') may not be its trailing axes")
               for line in explain(parse_model(text), "fuse-layer-norm"))


def test_the_larger_match_waits_and_an_unfusable_gamma_stays_outside(golden):
    lines = explain(parse_model(TORCHSCRIPT_LAYER_NORM), "fuse-layer-norm")
    assert [line.split(": ", 1)[1] for line in lines if "'n'" in line or "'s'" in line
            or "'y'" in line] == [
        "does not fire: check: the larger match at Mul node (outputs 's') takes it",
        "does not fire: check: the larger match at Add node (outputs 'y') takes it",
        "fires",
    ]
    # A gamma of rank 3 broadcasts over more than the normalized axis: only the
    # normalization fuses, and the Mul and Add stay.
    before = TORCHSCRIPT_LAYER_NORM.replace("init %gamma = f32[4]{0.5, -1, 2, 1.5}",
                                            "init %gamma = f32[1,1,4]{0.5, -1, 2, 1.5}")
    expected = """
    model <opset_imports: {"": 17}>
    graph @g(%x: f32[2,3,4]) {
      init %gamma = f32[1,1,4]{0.5, -1, 2, 1.5}
      init %beta = f32[4]{0.1, 0.2, -0.3, 0}
      init %layer_norm_scale = f32[4]{1}
      %n = LayerNormalization(%x, %layer_norm_scale) {axis: -1, epsilon: 1e-5}
      %s = Mul(%n, %gamma)
      %y = Add(%s, %beta)
      return %y
    }
    """
    golden(FuseNormalization(), before, expected)
    assert any(line.endswith("check: gamma has shape [1, 1, 4], of higher rank than the 1 "
                             "normalized axes") for line in explain(parse_model(before),
                                                                    "fuse-layer-norm"))


def test_no_gamma_and_unknown_normalized_dims_are_refused(golden):
    text = """
    model <opset_imports: {"": 23}>
    graph @g(%x: f32[2,H]) {
      init %eps = f32[]{1e-6}
      init %axes = i64[1]{-1}
      %sq = Mul(%x, %x)
      %ms = ReduceMean(%sq, %axes)
      %mse = Add(%ms, %eps)
      %rms = Sqrt(%mse)
      %y = Div(%x, %rms)
      return %y
    }
    """
    golden(FuseNormalization(), text, None)
    (*_, line) = explain(parse_model(text), "fuse-rms-norm")
    assert line.endswith("check: there is no gamma, and the normalized dims of x (['H']) are "
                         "not static, so one cannot be made")


def test_runs_by_name_after_fold_constants():
    model = parse_model(TORCHSCRIPT_LAYER_NORM)
    model = optimize(model, passes="fold-constants,fuse-normalization")
    assert [n.op_type for n in model.graph] == ["LayerNormalization"]


# -- torch exporters ----------------------------------------------------------------------
def _torch_modules():
    import torch

    class LayerNorm(torch.nn.Module):  # written out, as in many hand-rolled transformers
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.linspace(0.5, 1.5, 16))
            self.b = torch.nn.Parameter(torch.linspace(-0.1, 0.1, 16))

        def forward(self, x):
            mean = x.mean(-1, keepdim=True)
            var = ((x - mean) ** 2).mean(-1, keepdim=True)
            return (x - mean) / torch.sqrt(var + 1e-5) * self.w + self.b

    class RMSNorm(torch.nn.Module):  # as in LLaMA
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.linspace(0.5, 1.5, 16))

        def forward(self, x):
            h = x.to(torch.float32)
            variance = h.pow(2).mean(-1, keepdim=True)
            h = h * torch.rsqrt(variance + 1e-6)
            return self.weight * h.to(x.dtype)

    class Both(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.ln, self.rms = LayerNorm(), RMSNorm()

        def forward(self, x):
            return self.rms(self.ln(x) + x)

    return {"layer-norm": LayerNorm(), "rms-norm": RMSNorm(), "both": Both(),
            "nn.LayerNorm": torch.nn.LayerNorm(16)}


def _fused_matches_torch(module, exporter: str, opset: int, run_ort) -> list[str]:
    torch = pytest.importorskip("torch")
    import kiln

    x = torch.randn(2, 3, 16, generator=torch.Generator().manual_seed(0))
    model = kiln.from_torch(module, (x,), exporter=exporter, opset=opset)
    model = kiln.optimize(model)
    model = optimize(model, passes="fuse-normalization,eliminate-dead-code")
    (name,) = [v.name for v in model.graph.inputs]
    (got,) = run_ort(model, {name: x.numpy()})
    np.testing.assert_allclose(got, module(x).detach().numpy(), rtol=1e-4, atol=1e-5)
    return [n.qualified_op for n in model.graph]


@pytest.mark.torch
@pytest.mark.parametrize(("case", "opset", "ops"), [
    ("layer-norm", 17, ["LayerNormalization"]),
    ("rms-norm", 17, ["ai.kiln::RMSNormalization"]),
    ("layer-norm", 16, ["ai.kiln::LayerNormalization"]),
    ("nn.LayerNorm", 16, ["ai.kiln::LayerNormalization"]),  # the exporter's decomposition
])
def test_torchscript_norms_fuse(run_ort, case, opset, ops):
    module = _torch_modules()[case]
    assert _fused_matches_torch(module, "torchscript", opset, run_ort) == ops


@pytest.mark.torch
def test_dynamo_opset_18_norms_fuse(run_ort):
    ops = _fused_matches_torch(_torch_modules()["both"], "dynamo", 18, run_ort)
    assert ops == ["LayerNormalization", "Add", "ai.kiln::RMSNormalization"]
