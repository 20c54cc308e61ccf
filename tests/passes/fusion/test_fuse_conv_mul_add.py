from kiln.ir import parse_model
from kiln.passes.fusion.conv_mul_add import FuseConvMulAdd
from kiln.passes.rewrite import explain


def test_folds_mul_then_add(golden):
    before = """
    graph @g(%x: f32[1,2,3,3]) {
      init %w = f32[2,2,1,1]{1, 2, 3, 4}
      init %b = f32[2]{1, -1}
      init %k = f32[2,1,1]{2, 3}
      init %t = f32[1,2,1,1]{10, 20}
      %c = Conv(%x, %w, %b)
      %m = Mul(%k, %c)
      %y = Add(%m, %t)
      return %y
    }
    """
    expected = """
    graph @g(%x: f32[1,2,3,3]) {
      init %w_scaled = f32[2,2,1,1]{2, 4, 9, 12}
      init %w_scaled_bias = f32[2]{12, 17}
      %y = Conv(%x, %w_scaled, %w_scaled_bias)
      return %y
    }
    """
    result = golden(FuseConvMulAdd(), before, expected)
    assert result.stats == {"fuse-conv-mul": 1, "fuse-conv-add": 1}


LEFT_ALONE = """
graph @g(%x: f32[1,2,3,3], %v: f32[2,1,1]) {
  init %w = f32[2,2,1,1]{1, 2, 3, 4}
  init %row = f32[3]{1, 2, 3}
  init %k = f32[2,1,1]{2, 3}
  %c = Conv(%x, %w)
  %a = Mul(%c, %row)
  %c2 = Conv(%x, %w)
  %b = Mul(%c2, %v)
  %c3 = Conv(%x, %w)
  %f = Mul(%c3, %k)
  %r = Relu(%c3)
  %d = Conv(%x, %w)
  %e = Add(%d, %k)
  return %a, %b, %d, %e, %f, %r
}
"""


def test_leaves_non_channel_non_constant_and_graph_output(golden):
    golden(FuseConvMulAdd(), LEFT_ALONE, None)


def test_explain_says_why():
    model = parse_model(LEFT_ALONE)
    mul = explain(model, "fuse-conv-mul")
    assert len(mul) == 3
    assert mul[0].endswith("check: constant of shape [3] is not per channel (2 channels)")
    assert mul[1].endswith("check: the Mul factor is not constant")
    assert "is also read by Relu" in mul[2]
    (add,) = explain(model, "fuse-conv-add")
    assert add.endswith("is a graph output")
