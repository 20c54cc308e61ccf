import numpy as np
import pytest

from kiln.ir import parse_model
from kiln.passes.fusion.reparam import Reparameterize
from kiln.passes.rewrite import explain


def test_merges_conv_then_pointwise_conv(golden):
    # W = W2 @ W1 = 2*{1,2,3} - {0,1,-1}; b = W2 b1 + b2 = 2*1 - 2 + 3. The depthwise pair
    # scales each channel's kernel: {1,2,3}*2, {4,5,6}*-1.
    before = """
    graph @g(%x: f32[1,1,5], %z: f32[1,2,5]) {
      init %w1 = f32[2,1,3]{1, 2, 3, 0, 1, -1}
      init %b1 = f32[2]{1, 2}
      init %w2 = f32[1,2,1]{2, -1}
      init %b2 = f32[1]{3}
      init %d1 = f32[2,1,3]{1, 2, 3, 4, 5, 6}
      init %d2 = f32[2,1,1]{2, -1}
      %c = Conv(%x, %w1, %b1) {pads: [1, 1]}
      %y = Conv(%c, %w2, %b2)
      %e = Conv(%z, %d1) {group: 2, dilations: [2], pads: [2, 2]}
      %y2 = Conv(%e, %d2) {group: 2}
      return %y, %y2
    }
    """
    expected = """
    graph @g(%x: f32[1,1,5], %z: f32[1,2,5]) {
      init %w1_rep = f32[1,1,3]{2, 3, 7}
      init %w1_rep_bias = f32[1]{3}
      init %d1_rep = f32[2,1,3]{2, 4, 6, -4, -5, -6}
      %y = Conv(%x, %w1_rep, %w1_rep_bias) {pads: [1, 1]}
      %y2 = Conv(%z, %d1_rep) {group: 2, dilations: [2], pads: [2, 2]}
      return %y, %y2
    }
    """
    result = golden(Reparameterize(), before, expected)
    assert result.stats == {"merge-conv-pointwise": 2}


def test_merges_pointwise_then_strided_conv(golden):
    # W = 1*{1,0,1} + 2*{2,1,0}; b = b2 + sum(W2[:,0]) b1[0] + sum(W2[:,1]) b1[1]
    #   = 0.5 + 2*1 + 3*-1. The second chain pads, but the first Conv has no bias.
    before = """
    graph @g(%x: f32[1,1,6]) {
      init %w1 = f32[2,1,1]{1, 2}
      init %b1 = f32[2]{1, -1}
      init %w2 = f32[1,2,3]{1, 0, 1, 2, 1, 0}
      init %b2 = f32[1]{0.5}
      %c = Conv(%x, %w1, %b1)
      %y = Conv(%c, %w2, %b2) {strides: [2]}
      %c2 = Conv(%x, %w1)
      %y2 = Conv(%c2, %w2, %b2) {pads: [1, 1]}
      return %y, %y2
    }
    """
    expected = """
    graph @g(%x: f32[1,1,6]) {
      init %w1_rep = f32[1,1,3]{5, 2, 1}
      init %w1_rep_bias = f32[1]{-0.5}
      init %w1_rep_1 = f32[1,1,3]{5, 2, 1}
      init %w1_rep_bias_1 = f32[1]{0.5}
      %y = Conv(%x, %w1_rep, %w1_rep_bias) {strides: [2]}
      %y2 = Conv(%x, %w1_rep_1, %w1_rep_bias_1) {pads: [1, 1]}
      return %y, %y2
    }
    """
    result = golden(Reparameterize(), before, expected)
    assert result.stats == {"merge-pointwise-conv": 2}


def test_merges_gemm_and_matmul_chains(golden):
    # Gemm: W = alpha1 * w1^T @ w2^T = [[6], [-2], [2]], stored transposed (both transB);
    # b = beta1 * b1 @ w2^T + b2 = 0.5*3 + -0.5*-1 + 2. MatMul: W = w1 @ w2.
    before = """
    graph @g(%x: f32[2,3], %z: f32[2,3,2]) {
      init %w1 = f32[2,3]{1, 0, 1, 0, 1, 2}
      init %b1 = f32[2]{1, -1}
      init %w2 = f32[1,2]{3, -1}
      init %b2 = f32[1]{2}
      init %m1 = f32[2,2]{1, 2, 3, 4}
      init %m2 = f32[2,1]{1, -1}
      %h = Gemm(%x, %w1, %b1) {transB: 1, alpha: 2.0, beta: 0.5}
      %y = Gemm(%h, %w2, %b2) {transB: 1}
      %k = MatMul(%z, %m1)
      %y2 = MatMul(%k, %m2)
      return %y, %y2
    }
    """
    expected = """
    graph @g(%x: f32[2,3], %z: f32[2,3,2]) {
      init %w1_rep = f32[1,3]{6, -2, 2}
      init %w1_rep_bias = f32[1]{4}
      init %m1_rep = f32[2,1]{-1, -1}
      %y = Gemm(%x, %w1_rep, %w1_rep_bias) {transB: 1}
      %y2 = MatMul(%z, %m1_rep)
      return %y, %y2
    }
    """
    result = golden(Reparameterize(), before, expected)
    assert result.stats == {"merge-gemm-gemm": 1, "merge-matmul-matmul": 1}


def test_merges_mixed_gemm_matmul_chains(golden):
    # transA of the first Gemm is kept; W = w1 @ w2, b = b1 @ w2 + beta2 * b2 (per row).
    before = """
    graph @g(%x: f32[2,2], %z: f32[2,2]) {
      init %w1 = f32[2,2]{1, 2, 0, 1}
      init %b1 = f32[2]{1, 1}
      init %w2 = f32[2,2]{1, 0, 1, 1}
      init %b2 = f32[2,1]{2, 4}
      %h = Gemm(%x, %w1, %b1) {transA: 1}
      %y = MatMul(%h, %w2)
      %k = MatMul(%z, %w1)
      %y2 = Gemm(%k, %w2, %b2) {beta: 0.5}
      return %y, %y2
    }
    """
    expected = """
    graph @g(%x: f32[2,2], %z: f32[2,2]) {
      init %w1_rep = f32[2,2]{3, 2, 1, 1}
      init %w1_rep_bias = f32[2]{2, 1}
      init %w1_rep_1 = f32[2,2]{3, 2, 1, 1}
      init %w1_rep_bias_1 = f32[2,2]{1, 1, 2, 2}
      %y = Gemm(%x, %w1_rep, %w1_rep_bias) {transA: 1}
      %y2 = Gemm(%z, %w1_rep_1, %w1_rep_bias_1)
      return %y, %y2
    }
    """
    result = golden(Reparameterize(), before, expected)
    assert result.stats == {"merge-gemm-matmul": 1, "merge-matmul-gemm": 1}


def test_merges_repvgg_block(golden):
    # 3x3 + 1x1 (centred) + identity (1 at the centre): 5 + 2 + 1 = 8; biases 1 - 1.
    # The Adds come in any order; two rules fire, one after the other.
    before = """
    graph @g(%x: f32[1,1,4,4]) {
      init %w3 = f32[1,1,3,3]{1, 2, 3, 4, 5, 6, 7, 8, 9}
      init %b3 = f32[1]{1}
      init %w1 = f32[1,1,1,1]{2}
      init %b1 = f32[1]{-1}
      %a = Conv(%x, %w3, %b3) {kernel_shape: [3, 3], pads: [1, 1, 1, 1]}
      %b = Conv(%x, %w1, %b1) {kernel_shape: [1, 1]}
      %s = Add(%x, %b)
      %y = Add(%a, %s)
      return %y
    }
    """
    expected = """
    graph @g(%x: f32[1,1,4,4]) {
      init %w3_rep = f32[1,1,3,3]{1, 2, 3, 4, 8, 6, 7, 8, 9}
      init %w3_rep_bias = f32[1]{0}
      %y = Conv(%x, %w3_rep, %w3_rep_bias) {kernel_shape: [3, 3], pads: [1, 1, 1, 1]}
      return %y
    }
    """
    result = golden(Reparameterize(), before, expected)
    assert result.stats == {"merge-conv-identity": 1, "merge-conv-branches": 1}


def test_merges_batchnorm_branch(golden):
    # BN(x) = x * {4, 3} + {-1, -3} per channel: added on the diagonal of the 1x1 kernel.
    before = """
    graph @g(%x: f32[1,2,3,3]) {
      init %w = f32[2,2,1,1]{1, 2, 3, 4}
      init %b = f32[2]{1, 1}
      init %scale = f32[2]{2, 3}
      init %shift = f32[2]{1, 0}
      init %mean = f32[2]{0.5, 1}
      init %var = f32[2]{0.25, 1}
      %c = Conv(%x, %w, %b)
      %n = BatchNormalization(%x, %scale, %shift, %mean, %var) {epsilon: 0.0}
      %y = Add(%n, %c)
      return %y
    }
    """
    expected = """
    graph @g(%x: f32[1,2,3,3]) {
      init %w_rep = f32[2,2,1,1]{5, 2, 3, 7}
      init %w_rep_bias = f32[2]{0, -2}
      %y = Conv(%x, %w_rep, %w_rep_bias)
      return %y
    }
    """
    result = golden(Reparameterize(), before, expected)
    assert result.stats == {"merge-conv-batchnorm-branch": 1}


def test_merges_same_kernel_and_asymmetric_branches(golden):
    # KxK + KxK sums the kernels; a 1x3 branch lands on the middle row of the 3x3 (ACNet).
    before = """
    graph @g(%x: f32[1,1,4,4]) {
      init %wa = f32[1,1,3,3]{1, 0, 0, 0, 1, 0, 0, 0, 1}
      init %wb = f32[1,1,3,3]{0, 0, 1, 0, 1, 0, 1, 0, 0}
      init %wc = f32[1,1,1,3]{1, 2, 3}
      %a = Conv(%x, %wa) {pads: [1, 1, 1, 1], strides: [2, 2]}
      %b = Conv(%x, %wb) {pads: [1, 1, 1, 1], strides: [2, 2]}
      %c = Conv(%x, %wc) {pads: [0, 1, 0, 1], strides: [2, 2]}
      %s = Add(%a, %b)
      %y = Add(%c, %s)
      return %y
    }
    """
    expected = """
    graph @g(%x: f32[1,1,4,4]) {
      init %wc_rep = f32[1,1,3,3]{1, 0, 1, 1, 4, 3, 1, 0, 1}
      %y = Conv(%x, %wc_rep) {pads: [1, 1, 1, 1], strides: [2, 2]}
      return %y
    }
    """
    result = golden(Reparameterize(), before, expected)
    assert result.stats == {"merge-conv-branches": 2}


def _floats(rng: np.random.Generator, shape: tuple[int, ...]) -> str:
    return ", ".join(f"{v:.3f}" for v in rng.standard_normal(shape).ravel())


def _attrs(**attrs: object) -> str:
    return " {" + ", ".join(f"{k}: {v}" for k, v in attrs.items()) + "}" if attrs else ""


BRANCHES = {  # (kernel, pads, dilations, group) of the two branches
    "3x3+1x1": (((3, 3), [1, 1, 1, 1], [1, 1], 1), ((1, 1), [0, 0, 0, 0], [1, 1], 1)),
    "depthwise": (((3, 3), [1, 1, 1, 1], [1, 1], 4), ((1, 1), [0, 0, 0, 0], [1, 1], 4)),
    "dense+depthwise": (((3, 3), [1, 1, 1, 1], [1, 1], 1), ((3, 3), [1, 1, 1, 1], [1, 1], 4)),
    "dilated": (((5, 5), [4, 4, 4, 4], [2, 2], 1), ((3, 3), [4, 4, 4, 4], [4, 4], 1)),
    "asymmetric-pads": (((3, 3), [0, 1, 2, 1], [1, 1], 1), ((1, 1), [0, 0, 0, 0], [1, 1], 1)),
}


@pytest.mark.parametrize("strides", [1, 2])
@pytest.mark.parametrize("case", BRANCHES)
def test_branch_geometries_match_ort(case, strides, same_outputs):
    rng = np.random.default_rng(0)
    (ka, pa, da, ga), (kb, pb, db, gb) = BRANCHES[case]
    before = f"""
    graph @g(%x: f32[2,4,7,6]) {{
      init %wa = f32[4,{4 // ga},{ka[0]},{ka[1]}]{{{_floats(rng, (4, 4 // ga, *ka))}}}
      init %ba = f32[4]{{{_floats(rng, (4,))}}}
      init %wb = f32[4,{4 // gb},{kb[0]},{kb[1]}]{{{_floats(rng, (4, 4 // gb, *kb))}}}
      %a = Conv(%x, %wa, %ba){_attrs(group=ga, pads=pa, dilations=da, strides=[strides] * 2)}
      %b = Conv(%x, %wb){_attrs(group=gb, pads=pb, dilations=db, strides=[strides] * 2)}
      %y = Add(%b, %a)
      return %y
    }}
    """
    model = parse_model(before)
    assert Reparameterize()(model).stats == {"merge-conv-branches": 1}
    assert [n.op_type for n in model.graph] == ["Conv"]
    same_outputs(parse_model(before), model)


CHAINS = {  # (group, channels c -> m1 -> m2, kernel of the first, of the second, strides, pads)
    "conv-pointwise": (1, (3, 4, 2), 3, 1, [2, 2], [1, 0, 2, 1]),
    "grouped-conv-pointwise": (2, (4, 4, 2), 3, 1, [1, 1], [1, 1, 1, 1]),
    "pointwise-conv": (1, (2, 4, 4), 1, 3, [2, 2], [0, 0, 0, 0]),
    "depthwise-pointwise-conv": (4, (4, 4, 4), 1, 3, [1, 1], [0, 0, 0, 0]),
}


@pytest.mark.parametrize("case", CHAINS)
def test_chain_geometries_match_ort(case, same_outputs):
    rng = np.random.default_rng(1)
    g, (c, m1, m2), k1, k2, strides, pads = CHAINS[case]
    geometry = {"group": g, "strides": strides, "pads": pads}
    before = f"""
    graph @g(%x: f32[2,{c},7,6]) {{
      init %w1 = f32[{m1},{c // g},{k1},{k1}]{{{_floats(rng, (m1, c // g, k1, k1))}}}
      init %b1 = f32[{m1}]{{{_floats(rng, (m1,))}}}
      init %w2 = f32[{m2},{m1 // g},{k2},{k2}]{{{_floats(rng, (m2, m1 // g, k2, k2))}}}
      init %b2 = f32[{m2}]{{{_floats(rng, (m2,))}}}
      %c = Conv(%x, %w1, %b1){_attrs(**(geometry if k1 > 1 else {"group": g}))}
      %y = Conv(%c, %w2, %b2){_attrs(**(geometry if k1 == 1 else {"group": g}))}
      return %y
    }}
    """
    model = parse_model(before)
    assert sum(Reparameterize()(model).stats.values()) == 1
    assert [n.op_type for n in model.graph] == ["Conv"]
    same_outputs(parse_model(before), model)


def test_merges_depthwise_repvgg_block_with_batchnorm(same_outputs):
    rng = np.random.default_rng(2)
    var = ", ".join(f"{v:.3f}" for v in rng.random(4) + 0.5)
    before = f"""
    graph @g(%x: f32[2,4,5,5]) {{
      init %wa = f32[4,1,3,3]{{{_floats(rng, (4, 1, 3, 3))}}}
      init %ba = f32[4]{{{_floats(rng, (4,))}}}
      init %wb = f32[4,1,1,1]{{{_floats(rng, (4, 1, 1, 1))}}}
      init %scale = f32[4]{{{_floats(rng, (4,))}}}
      init %shift = f32[4]{{{_floats(rng, (4,))}}}
      init %mean = f32[4]{{{_floats(rng, (4,))}}}
      init %var = f32[4]{{{var}}}
      %a = Conv(%x, %wa, %ba) {{group: 4, pads: [1, 1, 1, 1]}}
      %b = Conv(%x, %wb) {{group: 4}}
      %n = BatchNormalization(%x, %scale, %shift, %mean, %var)
      %s = Add(%n, %b)
      %y = Add(%s, %a)
      return %y
    }}
    """
    model = parse_model(before)
    stats = Reparameterize()(model).stats
    assert stats == {"merge-conv-batchnorm-branch": 1, "merge-conv-branches": 1}
    assert [n.op_type for n in model.graph] == ["Conv"]
    same_outputs(parse_model(before), model)


# -- where the rules must not fire, and why ----------------------------------------------

CHAINS_LEFT_ALONE = """
graph @g(%x: f32[1,2,5,5]) {
  init %w1 = f32[4,2,1,1]{1, 2, 3, 4, 5, 6, 7, 8}
  init %b1 = f32[4]{1, 0, 0, 0}
  init %w2 = f32[2,4,3,3]{1}
  init %w3 = f32[2,4,1,1]{1, 2, 3, 4, 5, 6, 7, 8}
  init %w5 = f32[4,2,3,3]{1}
  %c = Conv(%x, %w1, %b1)
  %y = Conv(%c, %w2) {pads: [1, 1, 1, 1]}
  %d = Conv(%x, %w1)
  %r = Relu(%d)
  %y2 = Conv(%r, %w3)
  %e = Conv(%x, %w1)
  %y3 = Conv(%e, %w3)
  %f = Conv(%x, %w5) {pads: [1, 1, 1, 1]}
  %y4 = Conv(%f, %w3) {auto_pad: "SAME_UPPER"}
  return %y, %y2, %y3, %e, %y4
}
"""


def test_leaves_padded_bias_nonlinear_shared_and_costly_conv_chains(golden):
    golden(Reparameterize(), CHAINS_LEFT_ALONE, None)


def test_explain_says_why_conv_chains_stay():
    model = parse_model(CHAINS_LEFT_ALONE)
    lines = explain(model, "merge-pointwise-conv")
    assert lines[1].endswith("check: the second Conv pads with zeros and the first has a "
                             "nonzero bias: the merged Conv's border would read 0 where the "
                             "first Conv's output holds its bias")
    assert lines[3].endswith("does not fire: Relu node (outputs 'r'): expected Conv, found Relu")
    assert "%e (of Conv node (outputs 'e')) is a graph output" in lines[5]
    assert lines[7].endswith("check: Conv node (outputs 'y4') has auto_pad=SAME_UPPER; its pads "
                             "depend on the input size")
    pointwise = explain(model, "merge-conv-pointwise")
    assert pointwise[1].endswith("check: the second Conv is not pointwise (1x1, stride 1, no "
                                 "pads)")


def test_refuses_conv_chain_that_grows_the_cost():
    # 1x1 4 -> 2 channels (8) then 3x3 2 -> 4 (72): merged 3x3 4 -> 4 costs 144.
    text = """
    graph @g(%x: f32[1,4,5,5]) {
      init %w1 = f32[2,4,1,1]{1}
      init %w2 = f32[4,2,3,3]{1}
      init %w3 = f32[4,1,3,3]{1}
      init %w4 = f32[4,4,1,1]{1}
      %c = Conv(%x, %w1)
      %y = Conv(%c, %w2)
      %d = Conv(%x, %w3) {group: 4}
      %y2 = Conv(%d, %w4)
      return %y, %y2
    }
    """
    model = parse_model(text)
    lines = explain(model, "merge-pointwise-conv")
    assert lines[1].endswith("check: the merged Conv would cost 144 multiply-adds per output "
                             "pixel, more than the 80 of the two")
    assert explain(model, "merge-conv-pointwise")[3].endswith(
        "check: the Convs have group 4 and 1; merging them would need a dense weight")
    assert not Reparameterize()(model).changed


LINEAR_LEFT_ALONE = """
graph @g(%x: f32[2,8], %v: f32[8,8]) {
  init %down = f32[8,2]{1}
  init %up = f32[2,8]{1}
  init %sq = f32[8,8]{1}
  init %sq2 = f32[2,8]{1}
  %h = MatMul(%x, %down)
  %y = MatMul(%h, %up)
  %k = Gemm(%x, %sq)
  %y2 = Gemm(%k, %sq2) {transA: 1}
  %m = MatMul(%x, %v)
  %y3 = MatMul(%m, %sq)
  return %y, %y2, %y3
}
"""


def test_leaves_bottleneck_and_variable_linear_chains(golden):
    golden(Reparameterize(), LINEAR_LEFT_ALONE, None)


def test_explain_says_why_linear_chains_stay():
    model = parse_model(LINEAR_LEFT_ALONE)
    matmul = explain(model, "merge-matmul-matmul")
    assert matmul[1].endswith("check: merging would grow the weights: [8, 2] and [2, 8] make "
                              "[8, 8] (64 > 16 + 16 multiply-adds per row)")
    assert matmul[3].endswith("check: the first weight is not constant")
    gemm = explain(model, "merge-gemm-gemm")
    assert gemm[1].endswith("check: the second Gemm has transA=1")


BRANCHES_LEFT_ALONE = """
graph @g(%x: f32[1,2,3,3]) {
  init %w3 = f32[2,2,3,3]{1}
  init %w1 = f32[2,2,1,1]{1}
  init %wd = f32[2,1,3,3]{1}
  init %wr = f32[2,2,1,3]{1}
  init %wc = f32[2,2,3,1]{1}
  init %one = f32[1,2,1,1]{1}
  %a = Conv(%x, %w3)
  %b = Conv(%x, %w1) {strides: [2, 2]}
  %y = Add(%a, %b)
  %c = Conv(%x, %w3)
  %d = Conv(%x, %w1)
  %y2 = Add(%c, %d)
  %e = Conv(%x, %w3) {dilations: [2, 2], pads: [2, 2, 2, 2]}
  %f = Conv(%x, %w3) {pads: [1, 1, 1, 1]}
  %y3 = Add(%e, %f)
  %g = Conv(%x, %w3) {pads: [1, 1, 1, 1]}
  %h = Conv(%x, %w1)
  %y4 = Add(%g, %h)
  %i = Conv(%x, %one)
  %y5 = Add(%i, %x)
  %j = Conv(%x, %w1) {strides: [3, 3]}
  %y6 = Add(%j, %x)
  %k = Conv(%x, %wr) {pads: [0, 1, 0, 1]}
  %l = Conv(%x, %wc) {pads: [1, 0, 1, 0]}
  %y7 = Add(%k, %l)
  %m = Conv(%x, %w1)
  %n = Conv(%x, %wd) {group: 2, pads: [1, 1, 1, 1]}
  %y8 = Add(%m, %n)
  return %y, %y2, %y3, %y4, %g, %y5, %y6, %y7, %y8
}
"""


def test_leaves_misaligned_and_shared_branches(golden):
    # Where the outputs differ in size, the Add broadcasts a 1x1 output: merging would be
    # wrong, not just slower.
    golden(Reparameterize(), BRANCHES_LEFT_ALONE, None)


def test_explain_says_why_branches_stay():
    model = parse_model(BRANCHES_LEFT_ALONE)
    branches = [line.split(": does not fire: ")[1] for line in
                explain(model, "merge-conv-branches")]
    assert branches[0] == "check: the branches have strides [1, 1] and [2, 2]"
    assert branches[1] == ("check: the branches' outputs differ in size on spatial axis 0 "
                           "(pads and kernels do not line up)")
    assert branches[2] == ("check: the [3, 3] kernel's taps do not fall on the [3, 3] "
                           "kernel's taps on spatial axis 0")
    assert branches[3] == "%g (of Conv node (outputs 'g')) is a graph output"
    assert branches[6] == ("check: the merged Conv would cost 36 multiply-adds per output pixel, "
                           "more than the 24 of the two")
    assert branches[7] == ("check: the merged Conv would cost 36 multiply-adds per output pixel, "
                           "more than the 22 of the two")
    identity = [line.split(": does not fire: ")[1] for line in
                explain(model, "merge-conv-identity")]
    assert identity[4] == ("check: the Conv maps 2 channels to 1, so x is not a branch it can "
                           "hold")
    assert identity[5] == "check: the branches have strides [3, 3] and [1, 1]"


# -- end to end: a RepVGG block from torch --------------------------------------------------


def test_torch_repvgg_block_becomes_one_conv_and_relu(run_ort):
    torch = pytest.importorskip("torch")
    import kiln

    class RepVGGBlock(torch.nn.Module):
        def __init__(self, channels: int) -> None:
            super().__init__()
            self.dense = torch.nn.Sequential(
                torch.nn.Conv2d(channels, channels, 3, padding=1, bias=False),
                torch.nn.BatchNorm2d(channels))
            self.pointwise = torch.nn.Sequential(
                torch.nn.Conv2d(channels, channels, 1, bias=False),
                torch.nn.BatchNorm2d(channels))
            self.identity = torch.nn.BatchNorm2d(channels)

        def forward(self, x):
            return torch.relu(self.dense(x) + self.pointwise(x) + self.identity(x))

    torch.manual_seed(0)
    block = RepVGGBlock(8)
    for bn in (m for m in block.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        torch.nn.init.uniform_(bn.weight, 0.5, 1.5)
        torch.nn.init.uniform_(bn.bias, -0.5, 0.5)
        torch.nn.init.uniform_(bn.running_mean, -0.5, 0.5)
        torch.nn.init.uniform_(bn.running_var, 0.5, 1.5)
    block.eval()
    x = torch.randn(2, 8, 10, 10)
    model = kiln.from_torch(block, (x,), exporter="torchscript", input_names=["x"])
    model = kiln.optimize(model, passes="fold-constants,fuse-batchnorm,reparameterize,"
                          "eliminate-dead-code")
    assert [n.op_type for n in model.graph] == ["Conv", "Relu"]
    (got,) = run_ort(model, {"x": x.numpy()})
    with torch.no_grad():
        want = block(x).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
