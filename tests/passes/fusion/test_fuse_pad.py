import numpy as np

from kiln.ir import parse_model
from kiln.passes.fusion.pad import FusePad
from kiln.passes.rewrite import explain

W = "f32[2,2,2,2]{1, -2, 3, 0.5, -1, 2, 0, 1, 2, 1, -3, 1, 0.5, 1, 1, -2}"


def _reasons(model_text: str, rule: str) -> dict[str, str]:
    """explain's verdict per anchor node name."""
    lines = explain(parse_model(model_text), rule)
    return {line.split("'")[1]: line.split(": ", 1)[1] for line in lines}


def test_folds_into_conv_adding_to_its_pads(golden):
    before = f"""
    graph @g(%x: f32[1,2,4,5]) {{
      init %w = {W}
      init %b = f32[2]{{0.5, -1}}
      init %pads = i64[8]{{0, 0, 1, 2, 0, 0, 1, 0}}
      %p = Pad(%x, %pads)
      %y: f32[1,2,5,8] = Conv(%p, %w, %b) {{pads: [0, 1, 0, 1], strides: [1, 1]}} @conv
      return %y
    }}
    """
    expected = f"""
    graph @g(%x: f32[1,2,4,5]) {{
      init %w = {W}
      init %b = f32[2]{{0.5, -1}}
      %y: f32[1,2,5,8] = Conv(%x, %w, %b) {{pads: [1, 3, 1, 1], strides: [1, 1]}} @conv_Conv
      return %y
    }}
    """
    result = golden(FusePad(), before, expected)
    assert result.stats == {"fuse-pad-conv": 1}


def test_folds_pad_with_axes_and_explicit_zero_value_into_conv(golden):
    before = f"""
    graph @g(%x: f32[1,2,3,3]) {{
      init %w = {W}
      init %pads = i64[4]{{2, 0, 1, 1}}
      init %zero = f32[]{{0}}
      init %axes = i64[2]{{-2, 3}}
      %p = Pad(%x, %pads, %zero, %axes) {{mode: "constant"}}
      %y = Conv(%p, %w) {{dilations: [2, 1]}}
      return %y
    }}
    """
    expected = f"""
    graph @g(%x: f32[1,2,3,3]) {{
      init %w = {W}
      %y = Conv(%x, %w) {{dilations: [2, 1], pads: [2, 0, 1, 1]}}
      return %y
    }}
    """
    golden(FusePad(), before, expected)


def test_folds_into_average_pool_counting_the_padding(golden):
    # count_include_pad=0 with no pads of its own: the Pad's zeros were counted, so the
    # fused pool must count its padding.
    before = """
    graph @g(%x: f32[1,1,4,4], %z: f32[1,2,4,4]) {
      init %pads = i64[8]{0, 0, 1, 1, 0, 0, 1, 1}
      init %pads2 = i64[8]{0, 0, 0, 1, 0, 0, 1, 0}
      %p = Pad(%x, %pads)
      %y = AveragePool(%p) {kernel_shape: [3, 3]}
      %q = Pad(%z, %pads2)
      %y2 = AveragePool(%q) {kernel_shape: [2, 2], pads: [1, 0, 0, 1], count_include_pad: 1, strides: [2, 1]}
      return %y, %y2
    }
    """
    expected = """
    graph @g(%x: f32[1,1,4,4], %z: f32[1,2,4,4]) {
      %y = AveragePool(%x) {kernel_shape: [3, 3], pads: [1, 1, 1, 1], count_include_pad: 1}
      %y2 = AveragePool(%z) {kernel_shape: [2, 2], pads: [1, 1, 1, 1], count_include_pad: 1, strides: [2, 1]}
      return %y, %y2
    }
    """
    result = golden(FusePad(), before, expected)
    assert result.stats == {"fuse-pad-averagepool": 2}


def test_folds_into_max_pool_when_the_pad_value_cannot_win(golden):
    # Relu >= 0 with a zero Pad; -inf before any input; Clip(min=-1) with a Pad of -2;
    # a dilated pool over a known size where every window still reaches the input.
    before = """
    graph @g(%x: f32[1,2,5,5]) {
      init %pads = i64[8]{0, 0, 1, 1, 0, 0, 1, 0}
      init %pads2 = i64[8]{0, 0, 1, 0, 0, 0, 0, 1}
      init %ninf = f32[]{-inf}
      init %lo = f32[]{-1}
      init %m2 = f32[]{-2}
      %r = Relu(%x)
      %p = Pad(%r, %pads)
      %y = MaxPool(%p) {kernel_shape: [2, 2]}
      %q = Pad(%x, %pads2, %ninf)
      %y2 = MaxPool(%q) {kernel_shape: [2, 3], pads: [0, 1, 1, 0]}
      %c: f32[1,2,5,5] = Clip(%x, %lo)
      %s = Pad(%c, %pads2, %m2)
      %y3 = MaxPool(%s) {kernel_shape: [2, 2], dilations: [2, 2], strides: [2, 1]}
      return %y, %y2, %y3
    }
    """
    expected = """
    graph @g(%x: f32[1,2,5,5]) {
      init %lo = f32[]{-1}
      %r = Relu(%x)
      %y = MaxPool(%r) {kernel_shape: [2, 2], pads: [1, 1, 1, 0]}
      %y2 = MaxPool(%x) {kernel_shape: [2, 3], pads: [1, 1, 1, 1]}
      %c: f32[1,2,5,5] = Clip(%x, %lo)
      %y3 = MaxPool(%c) {kernel_shape: [2, 2], dilations: [2, 2], strides: [2, 1], pads: [1, 0, 0, 1]}
      return %y, %y2, %y3
    }
    """
    result = golden(FusePad(), before, expected)
    assert result.stats == {"fuse-pad-maxpool": 3}


def test_folds_a_pad_of_the_types_minimum_into_integer_max_pool(golden):
    before = """
    graph @g(%x: u8[1,1,3,3], %z: i8[1,1,3,3]) {
      init %pads = i64[8]{0, 0, 1, 1, 0, 0, 0, 0}
      init %low = i8[]{-128}
      %p = Pad(%x, %pads)
      %y = MaxPool(%p) {kernel_shape: [2, 2]}
      %q = Pad(%z, %pads, %low)
      %y2 = MaxPool(%q) {kernel_shape: [2, 2]}
      return %y, %y2
    }
    """
    expected = """
    graph @g(%x: u8[1,1,3,3], %z: i8[1,1,3,3]) {
      %y = MaxPool(%x) {kernel_shape: [2, 2], pads: [1, 1, 0, 0]}
      %y2 = MaxPool(%z) {kernel_shape: [2, 2], pads: [1, 1, 0, 0]}
      return %y, %y2
    }
    """
    golden(FusePad(), before, expected)


def test_folds_opset_10_pad_attributes(golden):
    before = """
    model <opset_imports: {"": 10}>
    graph @g(%x: f32[1,1,3,3]) {
      %s = Sigmoid(%x)
      %p = Pad(%s) {pads: [0, 0, 1, 0, 0, 0, 0, 1], value: -0.5}
      %y = MaxPool(%p) {kernel_shape: [2, 2]}
      return %y
    }
    """
    expected = """
    model <opset_imports: {"": 10}>
    graph @g(%x: f32[1,1,3,3]) {
      %s = Sigmoid(%x)
      %y = MaxPool(%s) {kernel_shape: [2, 2], pads: [1, 0, 0, 1]}
      return %y
    }
    """
    golden(FusePad(), before, expected)


# A zero Pad before a MaxPool whose input can be negative: the padded zeros win the max
# wherever a window's real elements are all negative. ORT's own Pad+MaxPool fusion was
# seen to fold this; kiln must not.
ZERO_PAD_MAXPOOL = """
graph @g(%x: f32[1,1,3,3]) {
  init %w = f32[1,1,1,1]{1}
  init %pads = i64[8]{0, 0, 1, 1, 0, 0, 1, 1}
  %p = Pad(%x, %pads)
  %y = MaxPool(%p) {kernel_shape: [2, 2]} @from_input
  %c = Conv(%x, %w)
  %q = Pad(%c, %pads)
  %y2 = MaxPool(%q) {kernel_shape: [2, 2]} @from_conv
  return %y, %y2
}
"""

NAIVELY_FUSED = """
graph @g(%x: f32[1,1,3,3]) {
  init %w = f32[1,1,1,1]{1}
  %y = MaxPool(%x) {kernel_shape: [2, 2], pads: [1, 1, 1, 1]}
  %c = Conv(%x, %w)
  %y2 = MaxPool(%c) {kernel_shape: [2, 2], pads: [1, 1, 1, 1]}
  return %y, %y2
}
"""


def test_zero_pad_before_max_pool_of_a_signed_input_is_not_folded(golden):
    golden(FusePad(), ZERO_PAD_MAXPOOL, None)
    reasons = _reasons(ZERO_PAD_MAXPOOL, "fuse-pad-maxpool")
    assert reasons["from_input"] == ("does not fire: check: the Pad value 0.0 can win the max: "
                                     "the input %x can be smaller (no lower bound is known)")
    assert "the input %c can be smaller" in reasons["from_conv"]


def test_folding_a_zero_pad_into_max_pool_would_change_the_results(run_ort):
    # The test above is meaningful: the naive fusion computes something else.
    feeds = {"x": -np.arange(1, 10, dtype=np.float32).reshape(1, 1, 3, 3)}
    want = run_ort(parse_model(ZERO_PAD_MAXPOOL), feeds)
    naive = run_ort(parse_model(NAIVELY_FUSED), feeds)
    for w, n in zip(want, naive, strict=True):
        assert w.shape == n.shape
        assert w[0, 0, 0, 0] == 0 and n[0, 0, 0, 0] == -1  # the corner window
        assert not np.allclose(w, n)


LEFT_ALONE = f"""
graph @g(%x: f32[1,2,4,4], %dyn: i64[8], %u: f32[1,2,?,?]) {{
  init %w = {W}
  init %pads = i64[8]{{0, 0, 1, 1, 0, 0, 1, 1}}
  init %big = i64[8]{{0, 0, 2, 0, 0, 0, 0, 0}}
  init %chan = i64[8]{{0, 1, 1, 1, 0, 0, 1, 1}}
  init %crop = i64[8]{{0, 0, 1, -1, 0, 0, 1, 1}}
  init %one = f32[]{{1}}
  %p1 = Pad(%x, %pads, %one)
  %c1 = Conv(%p1, %w) @value_one
  %p2 = Pad(%x, %pads) {{mode: "reflect"}}
  %c2 = Conv(%p2, %w) @reflect
  %p3 = Pad(%x, %chan)
  %c3 = Conv(%p3, %w) @channel
  %p4 = Pad(%x, %crop)
  %c4 = Conv(%p4, %w) @crop
  %p5 = Pad(%x, %dyn)
  %c5 = Conv(%p5, %w) @dynamic
  %p6 = Pad(%x, %pads)
  %c6 = Conv(%p6, %w) {{auto_pad: "SAME_UPPER"}} @same
  %p7 = Pad(%x, %pads)
  %c7 = Conv(%p7, %w) @shared
  %n7 = Neg(%p7)
  %p8 = Pad(%x, %pads)
  %a8 = AveragePool(%p8) {{kernel_shape: [2, 2], pads: [1, 0, 0, 0]}} @own_pads
  %p9 = Pad(%x, %pads)
  %a9 = AveragePool(%p9) {{kernel_shape: [2, 2], ceil_mode: 1, strides: [2, 2]}} @ceil
  %r = Relu(%x)
  %p10 = Pad(%r, %big)
  %m10 = MaxPool(%p10) {{kernel_shape: [2, 2]}} @all_pad
  %p11 = Pad(%r, %pads)
  %m11, %i11 = MaxPool(%p11) {{kernel_shape: [2, 2]}} @indices
  %ru = Relu(%u)
  %p12 = Pad(%ru, %pads)
  %m12 = MaxPool(%p12) {{kernel_shape: [2, 2], dilations: [2, 2]}} @dilated
  %p13 = Pad(%r, %pads, %one)
  %m13 = MaxPool(%p13) {{kernel_shape: [2, 2]}} @above_bound
  return %c1, %c2, %c3, %c4, %c5, %c6, %c7, %n7, %a8, %a9, %m10, %m11, %i11, %m12, %m13
}}
"""


def test_leaves_pads_that_do_not_fold(golden):
    # Not run numerically: %dyn would be random pads.
    golden(FusePad(), LEFT_ALONE, None, numeric=False)


def test_explain_says_why():
    conv = _reasons(LEFT_ALONE, "fuse-pad-conv")
    assert conv["value_one"].endswith("check: Conv pads with zeros, the Pad with 1.0")
    assert conv["reflect"].endswith("check: the Pad's mode is 'reflect', not 'constant'")
    assert conv["channel"].endswith("check: the Pad pads the batch or channel axis "
                                    "(pads [0, 1, 1, 1, 0, 0, 1, 1])")
    assert conv["crop"].endswith("check: the Pad crops (negative pads [0, 0, 1, -1, 0, 0, 1, 1])")
    assert conv["dynamic"].endswith("check: the Pad's pads are not constant")
    assert conv["same"].endswith("check: Conv has auto_pad='SAME_UPPER' (only NOTSET folds)")
    assert "is also read by Neg" in conv["shared"]
    pool = _reasons(LEFT_ALONE, "fuse-pad-averagepool")
    assert pool["own_pads"].endswith("check: AveragePool has pads of its own that it does not "
                                     "count (count_include_pad=0) and would have to count the "
                                     "Pad's")
    assert pool["ceil"].endswith("check: AveragePool has ceil_mode=1 (its output size depends "
                                 "on where the padding is)")
    pool = _reasons(LEFT_ALONE, "fuse-pad-maxpool")
    assert pool["all_pad"].endswith("check: pads 2,0 on spatial axis 0 reach the window extent "
                                    "2: a window could hold only padding")
    assert "output %i11 of MaxPool node 'indices' is read" in pool["indices"]
    assert pool["dilated"].endswith("check: dilation 2 on spatial axis 0 and the input size is "
                                    "unknown: a window could miss the input")
    assert pool["above_bound"].endswith("check: the Pad value 1.0 can win the max: the input %r "
                                        "can be smaller (it is only known >= 0.0)")


def test_max_pool_with_unread_indices_output_is_left_alone(golden):
    before = """
    graph @g(%x: f32[1,1,3,3]) {
      init %pads = i64[8]{0, 0, 1, 1, 0, 0, 0, 0}
      %r = Relu(%x)
      %p = Pad(%r, %pads)
      %y, %i = MaxPool(%p) {kernel_shape: [2, 2]} @pool
      return %y
    }
    """
    golden(FusePad(), before, None)
    reasons = _reasons(before, "fuse-pad-maxpool")
    assert reasons["pool"].endswith("check: MaxPool has an Indices output (the indices would "
                                    "count the Pad's padding)")


def test_dilated_window_that_misses_the_input_is_not_folded(golden):
    # Size 2, dilation 3, begin pad 1: the first window's taps sit at 0 and 3, both padding
    # (the input occupies 1..2), so the original pool gives the Pad value there.
    before = """
    graph @g(%x: f32[1,1,2,2]) {
      init %pads = i64[8]{0, 0, 1, 0, 0, 0, 1, 0}
      %r: f32[1,1,2,2] = Relu(%x)
      %p = Pad(%r, %pads)
      %y = MaxPool(%p) {kernel_shape: [2, 1], dilations: [3, 1]} @pool
      return %y
    }
    """
    golden(FusePad(), before, None)
    reasons = _reasons(before, "fuse-pad-maxpool")
    assert reasons["pool"].endswith("check: with dilation 3 on spatial axis 0, a window holds "
                                    "only padding")
