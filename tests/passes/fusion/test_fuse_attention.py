"""fuse-attention: scaled dot-product attention in the forms exporters write ->
ai.kiln::Attention, golden in text and checked against ONNX Runtime (and onnx.reference);
the zoo's BERT and torch's scaled_dot_product_attention."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx.reference import ReferenceEvaluator

from kiln.frontends.onnx import to_proto
from kiln.ir import Model, kiln_ops, parse_model, verify
from kiln.ir._text import print_function
from kiln.passes import optimize
from kiln.passes.fusion.attention import ATTENTION, FuseAttention
from kiln.passes.pipelines import pipeline_string
from kiln.passes.rewrite import explain

OPSET = 18
HEAD = '%q: f32[2,3,5,8], %k: f32[2,3,7,8], %v: f32[2,3,7,4]'
SCALE = 0.35355338  # 1/sqrt(8) as a float32
ROOT = 0.59460354  # sqrt(SCALE): torch's SDPA export scales Q and K^T by it


def _model(text: str, opset: int = OPSET) -> str:
    return f'model <opset_imports: {{"": {opset}}}>\n{text}'


def _fused(text: str, opset: int = OPSET) -> Model:
    """The expected model: ``text`` plus the function of ai.kiln::Attention."""
    model = parse_model(f'model <opset_imports: {{"": {opset}, "ai.kiln": 1}}>\n{text}')
    kiln_ops.use(model, "Attention")
    return model


def _f32(x: float) -> str:
    return str(np.float32(x))


def _reference_matches_ort(model: Model, run_ort, feeds) -> None:
    """onnx.reference runs the fused model (the function body) as ONNX Runtime does."""
    got = ReferenceEvaluator(to_proto(model)).run(None, feeds)
    for g, w in zip(got, run_ort(model, feeds), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


def test_the_function_body_is_the_spec():
    function = ATTENTION.function(OPSET)
    assert print_function(function).split("\n", 1)[1] == """\
  %scale_f = Constant() {value_float: float = @scale}
  %s = CastLike(%scale_f, %Q)
  %Kt = Transpose(%K) {perm: [0, 1, 3, 2]}
  %qk = MatMul(%Q, %Kt)
  %scores = Mul(%qk, %s)
  %masked = Add(%scores, %mask)
  %P = Softmax(%masked) {axis: -1}
  %Y = MatMul(%P, %V)
  return %Y
}"""
    assert [v.name for v in function.inputs] == ["Q", "K", "V", "mask"]
    assert list(function.attributes) == ["scale"]
    assert function.opset_imports == {"": OPSET}


BERT_STYLE = f"""
graph @g({HEAD}, %mask: f32[2,1,1,7]) {{
  init %scale = f32[]{{{SCALE}}}
  %kt: f32[2,3,8,7] = Transpose(%k) {{perm: [0, 1, 3, 2]}}
  %qk = MatMul(%q, %kt)
  %s = Mul(%qk, %scale)
  %a = Add(%s, %mask)
  %p = Softmax(%a) {{axis: -1}}
  %y: f32[2,3,5,4] = MatMul(%p, %v)
  return %y
}}
"""


def test_bert_style_mul_add_and_transposed_k(golden, run_ort, random_feeds):
    expected = f"""
    graph @g({HEAD}, %mask: f32[2,1,1,7]) {{
      %y: f32[2,3,5,4] = ai.kiln::Attention(%q, %k, %v, %mask) {{scale: {SCALE}}}
      return %y
    }}
    """
    result = golden(FuseAttention(), _model(BERT_STYLE), _fused(expected))
    assert result.stats == {"fuse-sdpa": 1, "attention-merge-k-transpose": 1}
    verify(result.model)
    onnx.checker.check_model(to_proto(result.model), full_check=True)
    _reference_matches_ort(result.model, run_ort, random_feeds(result.model))


def test_div_after_matmul_softmax_axis_3_and_k_transposed_given(golden):
    before = """
    graph @g(%q: f32[2,3,5,8], %kt: f32[2,3,8,7], %v: f32[2,3,7,4]) {
      init %d = f32[]{2.828427}
      %qk = MatMul(%q, %kt)
      %s = Div(%qk, %d)
      %p = Softmax(%s) {axis: 3}
      %y = MatMul(%p, %v)
      return %y
    }
    """
    expected = f"""
    graph @g(%q: f32[2,3,5,8], %kt: f32[2,3,8,7], %v: f32[2,3,7,4]) {{
      init %attention_no_mask = f32[]{{0}}
      %y_transpose = Transpose(%kt) {{perm: [0, 1, 3, 2]}}
      %y = ai.kiln::Attention(%q, %y_transpose, %v, %attention_no_mask) {{
        scale: {_f32(1 / np.float32(2.828427))}
      }}
      return %y
    }}
    """
    result = golden(FuseAttention(), _model(before), _fused(expected))
    assert result.stats == {"fuse-sdpa": 1}


def test_q_and_k_transposed_scaled_before_the_matmul(golden):
    before = f"""
    graph @g({HEAD}) {{
      init %c = f32[]{{{ROOT}}}
      %qs: f32[2,3,5,8] = Mul(%q, %c)
      %kt = Transpose(%k) {{perm: [0, 1, 3, 2]}}
      %kts: f32[2,3,8,7] = Mul(%kt, %c)
      %qk = MatMul(%qs, %kts)
      %p = Softmax(%qk) {{axis: -1}}
      %y = MatMul(%p, %v)
      return %y
    }}
    """
    expected = f"""
    graph @g({HEAD}) {{
      init %attention_no_mask = f32[]{{0}}
      %y = ai.kiln::Attention(%q, %k, %v, %attention_no_mask) {{
        scale: {_f32(np.float32(ROOT) * np.float32(ROOT))}
      }}
      return %y
    }}
    """
    result = golden(FuseAttention(), _model(before), _fused(expected))
    assert result.stats == {"fuse-sdpa": 1, "attention-fold-scale": 2,
                            "attention-merge-k-transpose": 1}


def test_q_divided_k_scaled_and_boolean_mask(golden, run_ort, random_feeds):
    before = f"""
    graph @g({HEAD}, %m: bool[2,1,5,7]) {{
      init %d = f32[]{{2}}
      init %b = f32[]{{0.5}}
      init %ninf = f32[]{{-inf}}
      %qs: f32[2,3,5,8] = Div(%q, %d)
      %ks = Mul(%b, %k)
      %kt: f32[2,3,8,7] = Transpose(%ks) {{perm: [0, 1, 3, 2]}}
      %qk = MatMul(%qs, %kt)
      %w = Where(%m, %qk, %ninf)
      %p = Softmax(%w)
      %y = MatMul(%p, %v)
      return %y
    }}
    """
    expected = f"""
    graph @g({HEAD}, %m: bool[2,1,5,7]) {{
      init %ninf = f32[]{{-inf}}
      init %attention_mask_zero = f32[]{{0}}
      %y_where = Where(%m, %attention_mask_zero, %ninf)
      %y = ai.kiln::Attention(%q, %k, %v, %y_where) {{scale: 0.25}}
      return %y
    }}
    """
    result = golden(FuseAttention(), _model(before), _fused(expected))
    assert result.stats == {"fuse-sdpa": 1, "attention-fold-scale": 2,
                            "attention-merge-k-transpose": 1}
    _reference_matches_ort(result.model, run_ort, random_feeds(result.model))


def test_masked_fill_where_and_a_constant_node_scale(golden):
    before = f"""
    graph @g({HEAD}, %m: bool[5,7]) {{
      init %ninf = f32[1]{{-inf}}
      %kt: f32[2,3,8,7] = Transpose(%k) {{perm: [0, 1, 3, 2]}}
      %qk = MatMul(%q, %kt)
      %c = Constant() {{value: f32[]{{{SCALE}}}}}
      %s = Mul(%c, %qk)
      %w = Where(%m, %ninf, %s)
      %p = Softmax(%w) {{axis: -1}}
      %y = MatMul(%p, %v)
      return %y
    }}
    """
    expected = f"""
    graph @g({HEAD}, %m: bool[5,7]) {{
      init %ninf = f32[1]{{-inf}}
      init %attention_mask_zero = f32[]{{0}}
      %c = Constant() {{value: f32[]{{{SCALE}}}}}
      %y_where = Where(%m, %ninf, %attention_mask_zero)
      %y = ai.kiln::Attention(%q, %k, %v, %y_where) {{scale: {SCALE}}}
      return %y
    }}
    """
    golden(FuseAttention(), _model(before), _fused(expected))


TORCH_SDPA = f"""
graph @g({HEAD}, %mask: f32[2,1,5,7]) {{
  init %flat = i64[3]{{-1, 7, 8}}
  init %back = i64[4]{{2, 3, 8, 7}}
  init %c = f32[]{{{ROOT}}}
  %kf = Reshape(%k, %flat) {{allowzero: 0}}
  %kft = Transpose(%kf) {{perm: [0, 2, 1]}}
  %kt = Reshape(%kft, %back) {{allowzero: 0}}
  %qs: f32[2,3,5,8] = Mul(%q, %c)
  %kts: f32[2,3,8,7] = Mul(%kt, %c)
  %qk = MatMul(%qs, %kts)
  %a = Add(%qk, %mask)
  %p = Softmax(%a) {{axis: -1}}
  %y = MatMul(%p, %v)
  return %y
}}
"""


def test_torch_sdpa_export_form(golden):
    expected = f"""
    graph @g({HEAD}, %mask: f32[2,1,5,7]) {{
      %y = ai.kiln::Attention(%q, %k, %v, %mask) {{
        scale: {_f32(np.float32(ROOT) * np.float32(ROOT))}
      }}
      return %y
    }}
    """
    result = golden(FuseAttention(), _model(TORCH_SDPA), _fused(expected))
    assert result.stats == {"fuse-sdpa": 1, "attention-fold-scale": 2,
                            "attention-sdpa-k-transpose": 1}


def test_torchscript_k_transpose_merges_into_one(golden):
    before = f"""
    graph @g(%q: f32[2,3,5,8], %kb: f32[2,7,3,8], %v: f32[2,3,7,4], %mask: f32[2,1,1,7]) {{
      init %scale = f32[]{{{SCALE}}}
      %kt: f32[2,3,8,7] = Transpose(%kb) {{perm: [0, 2, 3, 1]}}
      %qk = MatMul(%q, %kt)
      %s = Mul(%qk, %scale)
      %a = Add(%s, %mask)
      %p = Softmax(%a) {{axis: -1}}
      %y = MatMul(%p, %v) @attention
      return %y
    }}
    """
    expected = f"""
    graph @g(%q: f32[2,3,5,8], %kb: f32[2,7,3,8], %v: f32[2,3,7,4], %mask: f32[2,1,1,7]) {{
      %y_transpose_1 = Transpose(%kb) {{perm: [0, 2, 1, 3]}} @attention_Attention_Transpose
      %y = ai.kiln::Attention(%q, %y_transpose_1, %v, %mask) {{scale: {SCALE}}} \
@attention_Attention
      return %y
    }}
    """
    golden(FuseAttention(), _model(before), _fused(expected))


def test_shared_q_scaling_stays_outside(golden):
    before = f"""
    graph @g({HEAD}) {{
      init %c = f32[]{{0.5}}
      %qs: f32[2,3,5,8] = Mul(%q, %c)
      %kt: f32[2,3,8,7] = Transpose(%k) {{perm: [0, 1, 3, 2]}}
      %qk = MatMul(%qs, %kt)
      %p = Softmax(%qk) {{axis: -1}}
      %y = MatMul(%p, %v)
      return %y, %qs
    }}
    """
    expected = f"""
    graph @g({HEAD}) {{
      init %c = f32[]{{0.5}}
      init %attention_no_mask = f32[]{{0}}
      %qs: f32[2,3,5,8] = Mul(%q, %c)
      %y = ai.kiln::Attention(%qs, %k, %v, %attention_no_mask) {{scale: 1.0}}
      return %y, %qs
    }}
    """
    result = golden(FuseAttention(), _model(before), _fused(expected))
    (line,) = explain(result.model, "attention-fold-scale")
    assert line.endswith("does not fire: %qs (of Mul node (outputs 'qs')) is a graph output")


def test_float16_attention_casts_the_scale(golden):
    before = BERT_STYLE.replace("f32", "f16")
    expected = f"""
    graph @g({HEAD.replace("f32", "f16")}, %mask: f16[2,1,1,7]) {{
      %y: f16[2,3,5,4] = ai.kiln::Attention(%q, %k, %v, %mask) {{
        scale: {_f32(np.float16(SCALE))}
      }}
      return %y
    }}
    """
    golden(FuseAttention(), _model(before), _fused(expected))


# -- where it must not fire ------------------------------------------------------------------
def _block(name: str, q: str = "%q", scale: str = "Mul(%qk_{n}, %scale)",
           mask: str = "Add(%s_{n}, %mask)", axis: int = -1, tail: str = "") -> str:
    """One attention block whose output MatMul is named ``name``."""
    n = name
    lines = [
        f"%qk_{n} = MatMul({q}, %kt)",
        f"%s_{n} = {scale.format(n=n)}",
        f"%a_{n} = {mask.format(n=n)}",
        f"%p_{n} = Softmax(%a_{n}) {{axis: {axis}}}",
        *(tail.format(n=n).splitlines()),
        f"%y_{n} = MatMul({'%z_' + n if tail else '%p_' + n}, %v) @{n}",
    ]
    return "\n".join(f"  {line}" for line in lines)


# torch's SDPA export with a boolean mask: NaN probabilities (fully masked rows) become 0.
NAN_TAIL = "%nan_{n} = IsNaN(%p_{n})\n%z_{n} = Where(%nan_{n}, %zero, %p_{n})"

LEFT_ALONE = f"""
graph @g({HEAD}, %mask: f32[2,1,1,7], %m: bool[2,1,5,7], %q3: f32[3,5,8],
         %dyn: f32[]) {{
  init %scale = f32[]{{{SCALE}}}
  init %fill = f32[]{{-10000}}
  init %zero = f32[]{{0}}
  %kt: f32[2,3,8,7] = Transpose(%k) {{perm: [0, 1, 3, 2]}}
  %qu = Identity(%q)
{_block("shared")}
{_block("axis2", axis=2)}
{_block("rank3", q="%q3")}
{_block("unknown", q="%qu")}
{_block("finite", mask="Where(%m, %s_{n}, %fill)")}
{_block("dynamic", scale="Mul(%qk_{n}, %dyn)")}
{_block("nan", tail=NAN_TAIL)}
  return %y_shared, %p_shared, %y_axis2, %y_rank3, %y_unknown, %y_finite, %y_dynamic, %y_nan
}}
"""


def test_left_alone(golden):
    golden(FuseAttention(), _model(LEFT_ALONE), None)


def test_explain_says_why():
    lines = explain(parse_model(_model(LEFT_ALONE)), "fuse-sdpa")
    why = {line.split("'")[1]: line.split(": does not fire: ")[1] for line in lines
           if "node '" in line}
    assert why == {
        "shared": "%p_shared (of Softmax node (outputs 'p_shared')) is a graph output",
        "axis2": "check: Softmax is over axis 2, not the last",
        "rank3": "check: Q is 3-D, not 4-D",
        "unknown": "check: the rank of Q is unknown",
        "finite": "check: the Where fill value is -10000, not -inf (with a finite fill a "
                  "fully masked row would differ)",
        "dynamic": "check: the scale is not constant",
        "nan": "Where node (outputs 'z_nan'): expected Softmax, found Where",
    }


@pytest.mark.parametrize(("header", "reason"), [
    ('model <opset_imports: {"": 14}>',
     "ai.kiln::Attention needs ai.onnx opset 15; the model imports opset 14"),
    ('model <ir_version: 7, opset_imports: {"": 18}>',
     "the model's IR version 7 has no functions for ai.kiln::Attention"),
])
def test_models_that_cannot_hold_the_op_are_left_alone(golden, header, reason):
    before = f"{header}\n{BERT_STYLE}"
    golden(FuseAttention(), before, None)
    (line,) = [x for x in explain(parse_model(before), "fuse-sdpa") if "check:" in x]
    assert reason in line


def test_function_bodies_are_not_rewritten():
    model = _fused(BERT_STYLE)
    result = FuseAttention()(model)
    body = model.functions[(kiln_ops.DOMAIN, "Attention", "")].graph
    assert [n.op_type for n in body] == ["Constant", "CastLike", "Transpose", "MatMul", "Mul",
                                         "Add", "Softmax", "MatMul"]
    assert result.stats == {"fuse-sdpa": 1, "attention-merge-k-transpose": 1}
    assert all("Softmax" not in line for line in explain(model, "fuse-sdpa"))


# -- models from torch -----------------------------------------------------------------------
def _bert_feeds(model: Model) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    (batch, seq) = model.graph.inputs[0].shape.dims
    mask = np.ones((batch, seq), np.int64)
    mask[:, seq * 3 // 4:] = 0
    return {"input_ids": rng.integers(0, 1000, (batch, seq)).astype(np.int64),
            "attention_mask": mask}


@pytest.mark.parametrize("exporter", ["torchscript", pytest.param("dynamo",
                                                                  marks=pytest.mark.slow)])
def test_zoo_bert_has_its_four_attention_blocks_fused(exporter, run_ort):
    zoo = pytest.importorskip("kiln.zoo")
    model = zoo.to_model("bert", exporter=exporter)
    feeds = _bert_feeds(model)
    want = run_ort(model, feeds)
    model, report = optimize(model, passes=pipeline_string("default") + ",fuse-attention",
                             report=True)
    ops = [n.qualified_op for n in model.graph]
    assert ops.count("ai.kiln::Attention") == 4
    assert "Softmax" not in ops
    assert report.stats["fuse-attention.fuse-sdpa"] == 4
    for got, w in zip(run_ort(model, feeds), want, strict=True):
        np.testing.assert_allclose(got, w, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_torch_scaled_dot_product_attention(run_ort):
    torch = pytest.importorskip("torch")
    from kiln import from_torch

    functional = torch.nn.functional

    class Attentions(torch.nn.Module):
        def forward(self, q, k, v, mask):
            return (functional.scaled_dot_product_attention(q, k, v),
                    functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.3),
                    functional.scaled_dot_product_attention(q, k, v, attn_mask=mask > 0))

    torch.manual_seed(0)
    inputs = (torch.randn(2, 3, 5, 8), torch.randn(2, 3, 7, 8), torch.randn(2, 3, 7, 4),
              torch.randn(2, 1, 5, 7))
    model = from_torch(Attentions(), inputs, exporter="dynamo", opset=20)
    model = optimize(model, passes=pipeline_string("default") + ",fuse-attention")
    ops = [n.qualified_op for n in model.graph]
    # The boolean-mask form zeroes NaN probabilities after its Softmax: left alone.
    assert ops.count("ai.kiln::Attention") == 2
    assert ops.count("Softmax") == 1
    feeds = {name: t.numpy() for name, t in zip(("q", "k", "v", "mask"), inputs, strict=True)}
    with torch.no_grad():
        want = [t.numpy() for t in Attentions()(*inputs)]
    for got, w in zip(run_ort(model, feeds), want, strict=True):
        np.testing.assert_allclose(got, w, rtol=1e-4, atol=1e-5)

