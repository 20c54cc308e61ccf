import numpy as np
import pytest

from kiln.ir import parse_model
from kiln.passes import optimize
from kiln.passes.fusion.batchnorm import FuseBatchNorm
from kiln.passes.rewrite import explain

# s = scale / sqrt(var + eps) = {4, 3}; shift = bias - mean * s = {-1, -3}
BN_PARAMS = """
      init %scale = f32[2]{2, 3}
      init %shift = f32[2]{1, 0}
      init %mean = f32[2]{0.5, 1}
      init %var = f32[2]{0.25, 1}
"""


def test_folds_into_grouped_conv_and_matmul(golden):
    before = f"""
    graph @g(%x: f32[1,2,3,3], %z: f32[4,3]) {{
      init %w = f32[2,1,1,1]{{1, 2}}
      init %v = f32[3,2]{{1, 2, 3, 4, 5, 6}}
      {BN_PARAMS}
      %c = Conv(%x, %w) {{group: 2}}
      %y = BatchNormalization(%c, %scale, %shift, %mean, %var) {{epsilon: 0.0}}
      %m = MatMul(%z, %v)
      %y2 = BatchNormalization(%m, %scale, %shift, %mean, %var) {{epsilon: 0.0}}
      return %y, %y2
    }}
    """
    expected = """
    graph @g(%x: f32[1,2,3,3], %z: f32[4,3]) {
      init %w_bn = f32[2,1,1,1]{4, 6}
      init %w_bn_bias = f32[2]{-1, -3}
      init %v_bn = f32[3,2]{4, 6, 12, 12, 20, 18}
      init %v_bn_bias = f32[2]{-1, -3}
      %y = Conv(%x, %w_bn, %w_bn_bias) {group: 2}
      %y2 = Gemm(%z, %v_bn, %v_bn_bias)
      return %y, %y2
    }
    """
    result = golden(FuseBatchNorm(), before, expected)
    assert result.stats == {"fuse-conv-batchnorm": 1, "fuse-matmul-batchnorm": 1}


def test_folds_into_conv_transpose_and_gemm(golden):
    before = f"""
    graph @g(%x: f32[1,1,2,2], %z: f32[4,3]) {{
      init %w = f32[1,2,1,1]{{1, 2}}
      init %b = f32[2]{{1, 1}}
      init %v = f32[2,3]{{1, 1, 1, 2, 2, 2}}
      init %c = f32[2]{{2, 2}}
      {BN_PARAMS}
      %t = ConvTranspose(%x, %w, %b)
      %y = BatchNormalization(%t, %scale, %shift, %mean, %var) {{epsilon: 0.0}}
      %m = Gemm(%z, %v, %c) {{transB: 1, beta: 0.5, alpha: 2.0}}
      %y2 = BatchNormalization(%m, %scale, %shift, %mean, %var) {{epsilon: 0.0}}
      return %y, %y2
    }}
    """
    expected = """
    graph @g(%x: f32[1,1,2,2], %z: f32[4,3]) {
      init %w_bn = f32[1,2,1,1]{4, 6}
      init %w_bn_bias = f32[2]{3, 0}
      init %v_bn = f32[2,3]{4, 4, 4, 6, 6, 6}
      init %v_bn_bias = f32[2]{3, 0}
      %y = ConvTranspose(%x, %w_bn, %w_bn_bias)
      %y2 = Gemm(%z, %v_bn, %v_bn_bias) {transB: 1, alpha: 2.0}
      return %y, %y2
    }
    """
    golden(FuseBatchNorm(), before, expected)


def test_grouped_conv_transpose_numerics(same_outputs):
    rng = np.random.default_rng(1)
    w = ", ".join(f"{x:.3f}" for x in rng.standard_normal(4 * 3 * 3))
    before = f"""
    graph @g(%x: f32[1,4,5,5]) {{
      init %w = f32[4,3,3,1]{{{w}}}
      init %scale = f32[6]{{1, 2, 3, 4, 5, 6}}
      init %shift = f32[6]{{0, 1, 0, 1, 0, 1}}
      init %mean = f32[6]{{0.1, 0.2, 0.3, 0.4, 0.5, 0.6}}
      init %var = f32[6]{{1, 2, 3, 4, 5, 6}}
      %t = ConvTranspose(%x, %w) {{group: 2}}
      %y = BatchNormalization(%t, %scale, %shift, %mean, %var)
      return %y
    }}
    """
    model = parse_model(before)
    assert FuseBatchNorm()(model).stats == {"fuse-convtranspose-batchnorm": 1}
    assert [n.op_type for n in model.graph] == ["ConvTranspose"]
    same_outputs(parse_model(before), model)


LEFT_ALONE = f"""
graph @g(%x: f32[1,2,3,3], %w: f32[2,2,1,1]) {{
  init %k = f32[2,2,1,1]{{1, 2, 3, 4}}
  {BN_PARAMS}
  %a = Conv(%x, %w)
  %ya = BatchNormalization(%a, %scale, %shift, %mean, %var)
  %b = Conv(%x, %k)
  %yb = BatchNormalization(%b, %scale, %shift, %mean, %var)
  %r = Relu(%b)
  %ym = BatchNormalization(%x, %scale, %shift, %mean, %var)
  return %ya, %yb, %r, %ym
}}
"""


def test_leaves_variable_weights_and_shared_conv(golden):
    golden(FuseBatchNorm(), LEFT_ALONE, None)


def test_explain_says_why():
    lines = explain(parse_model(LEFT_ALONE), "fuse-conv-batchnorm")
    assert len(lines) == 3
    assert lines[0].endswith("check: the weight is not constant")
    assert "is also read by Relu" in lines[1]
    assert "has no producer" in lines[2]
    assert len(explain(parse_model(LEFT_ALONE), "fuse-batchnorm")) == 12


TRAINING = f"""
graph @g(%x: f32[1,2,3,3]) {{
  init %k = f32[2,2,1,1]{{1, 2, 3, 4}}
  {BN_PARAMS}
  %b = Conv(%x, %k)
  %y = BatchNormalization(%b, %scale, %shift, %mean, %var) {{training_mode: 1}}
  return %y
}}
"""


def test_leaves_training_mode_batchnorm(golden):
    golden(FuseBatchNorm(), TRAINING, None, numeric=False)
    (line,) = explain(parse_model(TRAINING), "fuse-conv-batchnorm")
    assert line.endswith("check: BatchNormalization is in training mode")


@pytest.mark.slow
def test_resnet18_has_no_batchnorm_left(same_outputs):
    import kiln
    from kiln.zoo import to_model

    model = to_model("resnet18")
    count = sum(n.op_type == "BatchNormalization" for n in model.graph)
    optimized = to_model("resnet18")
    optimized, _ = kiln.optimize(optimized, passes="fold-constants,fuse-batchnorm,"
                                 "eliminate-dead-code", report=True)
    assert count > 0
    assert not [n for n in optimized.graph if n.op_type == "BatchNormalization"]
    same_outputs(model, optimized)


def test_after_fold_constants_a_cast_like_bias_folds(same_outputs):
    # torch.export writes a zero conv bias as Expand(CastLike(Constant, input), shape).
    before = f"""
    graph @g(%x: f32[1,2,3,3]) {{
      init %k = f32[2,2,1,1]{{1, 2, 3, 4}}
      init %n = i64[1]{{2}}
      {BN_PARAMS}
      %z = Constant() {{value: f32[]{{0}}}}
      %zl = CastLike(%z, %x)
      %bias = Expand(%zl, %n)
      %b = Conv(%x, %k, %bias)
      %y = BatchNormalization(%b, %scale, %shift, %mean, %var)
      return %y
    }}
    """
    model, _ = optimize(parse_model(before), passes="fold-constants,fuse-batchnorm,"
                        "eliminate-dead-code", report=True)
    assert [n.op_type for n in model.graph] == ["Conv"]
    same_outputs(parse_model(before), model)
