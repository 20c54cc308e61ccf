import numpy as np
import pytest

from kiln.ir import parse_model, verify
from kiln.passes import get_pass
from kiln.passes.fusion.layout import FuseLayout
from kiln.passes.rewrite import explain


def _floats(shape: list[int], seed: int) -> str:
    """A tensor literal of seeded random floats, rounded to keep the text short."""
    data = np.random.default_rng(seed).uniform(-0.5, 0.5, shape).round(2)
    return f"f32[{','.join(map(str, shape))}]{{{', '.join(str(v) for v in data.ravel())}}}"


def _reasons(model_text: str, rule: str) -> dict[str, str]:
    """explain's verdict per anchor node name."""
    lines = explain(parse_model(model_text), rule)
    return {line.split("'")[1]: line.split(": ", 1)[1] for line in lines}


LSTM_WEIGHTS = f"""
  init %w = {_floats([1, 12, 2], 0)}
  init %r = {_floats([1, 12, 3], 1)}
"""


def test_lstm_from_the_dynamo_exporter_keeps_no_transpose(golden):
    # The zoo's LSTM as torch.onnx's dynamo exporter writes it, reduced: batch-first input
    # transposed to time-major, and the [seq, dirs, batch, hidden] output brought back to
    # [batch, seq, hidden] through Transpose, Reshape, Transpose. Every Transpose moves only
    # axes of size 1 here, so all of them are Reshapes and the chain is one Reshape
    # (onnxslim keeps the first Transpose).
    before = f"""
    graph @lstm(%x: f32[1,5,2]) {{
      {LSTM_WEIGHTS}
      init %s = i64[3]{{5, 1, 3}}
      %t: f32[5,1,2] = Transpose(%x) {{perm: [1, 0, 2]}}
      %h: f32[5,1,1,3] = LSTM(%t, %w, %r) {{hidden_size: 3}}
      %ht: f32[5,1,1,3] = Transpose(%h) {{perm: [0, 2, 1, 3]}}
      %v: f32[5,1,?] = Reshape(%ht, %s)
      %y: f32[1,5,3] = Transpose(%v) {{perm: [1, 0, 2]}}
      return %y
    }}
    """
    expected = f"""
    graph @lstm(%x: f32[1,5,2]) {{
      {LSTM_WEIGHTS}
      init %t_shape = i64[3]{{5, 1, 2}}
      init %y_shape = i64[3]{{1, 5, 3}}
      %t: f32[5,1,2] = Reshape(%x, %t_shape)
      %h: f32[5,1,1,3] = LSTM(%t, %w, %r) {{hidden_size: 3}}
      %y: f32[1,5,3] = Reshape(%h, %y_shape)
      return %y
    }}
    """
    result = golden(FuseLayout(), before, expected)
    assert result.stats == {"fuse-transpose-as-reshape": 3, "fuse-reshape-reshape": 1}


def test_lstm_from_the_torchscript_exporter_keeps_no_transpose(golden):
    before = f"""
    graph @lstm(%x: f32[1,5,2]) {{
      {LSTM_WEIGHTS}
      init %axes = i64[1]{{1}}
      %t: f32[5,1,2] = Transpose(%x) {{perm: [1, 0, 2]}}
      %h: f32[5,1,1,3] = LSTM(%t, %w, %r) {{hidden_size: 3}}
      %q: f32[5,1,3] = Squeeze(%h, %axes)
      %y: f32[1,5,3] = Transpose(%q) {{perm: [1, 0, 2]}}
      return %y
    }}
    """
    expected = f"""
    graph @lstm(%x: f32[1,5,2]) {{
      {LSTM_WEIGHTS}
      init %t_shape = i64[3]{{5, 1, 2}}
      init %y_shape = i64[3]{{1, 5, 3}}
      %t: f32[5,1,2] = Reshape(%x, %t_shape)
      %h: f32[5,1,1,3] = LSTM(%t, %w, %r) {{hidden_size: 3}}
      %y: f32[1,5,3] = Reshape(%h, %y_shape)
      return %y
    }}
    """
    result = golden(FuseLayout(), before, expected)
    assert result.stats == {"fuse-transpose-as-reshape": 2, "fuse-squeeze-reshape": 1}


def test_merges_transpose_pairs(golden):
    # The second pair (BERT's K: [0,2,1,3] then [0,1,3,2]) composes to [0,2,3,1]; the
    # first composes to the identity and leaves x.
    before = """
    graph @g(%x: f32[2,3,4], %k: f32[1,5,2,3]) {
      %a: f32[3,4,2] = Transpose(%x) {perm: [1, 2, 0]}
      %b: f32[2,3,4] = Transpose(%a) {perm: [2, 0, 1]}
      %c = Relu(%b)
      %t: f32[1,2,5,3] = Transpose(%k) {perm: [0, 2, 1, 3]}
      %u: f32[1,2,3,5] = Transpose(%t) {perm: [0, 1, 3, 2]}
      return %c, %u
    }
    """
    expected = """
    graph @g(%x: f32[2,3,4], %k: f32[1,5,2,3]) {
      %c = Relu(%x)
      %u: f32[1,2,3,5] = Transpose(%k) {perm: [0, 2, 3, 1]}
      return %c, %u
    }
    """
    result = golden(FuseLayout(), before, expected)
    assert result.stats == {"fuse-transpose-transpose": 2}


def test_transpose_of_size_one_axes_is_a_reshape(golden):
    # Static; symbolic batch (one -1); a perm that leaves the shape as it is; default perm.
    before = """
    graph @g(%x: f32[1,3,1,4], %z: f32[N,1,5], %w: f32[2,1,1,3], %v: f32[1,6]) {
      %a = Transpose(%x) {perm: [0, 2, 1, 3]}
      %b = Transpose(%z) {perm: [1, 0, 2]}
      %c = Transpose(%w) {perm: [0, 2, 1, 3]}
      %c2 = Neg(%c)
      %d = Transpose(%v)
      return %a, %b, %c2, %d
    }
    """
    expected = """
    graph @g(%x: f32[1,3,1,4], %z: f32[N,1,5], %w: f32[2,1,1,3], %v: f32[1,6]) {
      init %a_shape = i64[4]{1, 1, 3, 4}
      init %b_shape = i64[3]{1, -1, 5}
      init %d_shape = i64[2]{6, 1}
      %a = Reshape(%x, %a_shape)
      %b = Reshape(%z, %b_shape)
      %c2 = Neg(%w)
      %d = Reshape(%v, %d_shape)
      return %a, %b, %c2, %d
    }
    """
    result = golden(FuseLayout(), before, expected)
    assert result.stats == {"fuse-transpose-as-reshape": 4}


def test_merges_reshape_chains(golden):
    # s2 without 0 carries over as it is; a copying 0 is resolved from the intermediate's
    # static shape, or kept where the inner Reshape copied the same dim of x; with
    # allowzero=1 any shape carries over, even a computed one.
    before = """
    graph @g(%x: f32[N,12], %y: f32[2,3,4], %z: f32[N,12], %t: f32[3,8]) {
      init %s1 = i64[3]{-1, 2, 6}
      init %s2 = i64[2]{-1, 3}
      init %s3 = i64[2]{6, 4}
      init %s4 = i64[3]{0, 2, 2}
      init %s5 = i64[3]{0, 3, 4}
      init %s6 = i64[2]{0, -1}
      init %s7 = i64[2]{4, 6}
      %a = Reshape(%x, %s1)
      %a2 = Reshape(%a, %s2)
      %b: f32[6,4] = Reshape(%y, %s3)
      %b2 = Reshape(%b, %s4)
      %c = Reshape(%z, %s5)
      %c2 = Reshape(%c, %s6)
      %shape = Shape(%t)
      %d = Reshape(%y, %s7)
      %d2 = Reshape(%d, %shape) {allowzero: 1}
      return %a2, %b2, %c2, %d2
    }
    """
    expected = """
    graph @g(%x: f32[N,12], %y: f32[2,3,4], %z: f32[N,12], %t: f32[3,8]) {
      init %s2 = i64[2]{-1, 3}
      init %b2_shape = i64[3]{6, 2, 2}
      init %c2_shape = i64[2]{0, -1}
      %a2 = Reshape(%x, %s2)
      %b2 = Reshape(%y, %b2_shape)
      %c2 = Reshape(%z, %c2_shape)
      %shape = Shape(%t)
      %d2 = Reshape(%y, %shape) {allowzero: 1}
      return %a2, %b2, %c2, %d2
    }
    """
    result = golden(FuseLayout(), before, expected)
    assert result.stats == {"fuse-reshape-reshape": 4}


def test_merges_chains_of_view_ops(golden):
    # BERT's attention mask: Unsqueeze(Unsqueeze(m)); Squeeze then Unsqueeze over a
    # symbolic batch; Flatten then Reshape; Reshape then Flatten.
    before = """
    graph @g(%m: f32[2,5], %x: f32[N,1,4], %y: f32[2,3,4]) {
      init %a1 = i64[1]{1}
      init %a2 = i64[1]{2}
      init %a0 = i64[1]{0}
      init %s = i64[2]{3, 8}
      init %s2 = i64[3]{2, 12, 1}
      %u = Unsqueeze(%m, %a1)
      %u2: f32[2,1,1,5] = Unsqueeze(%u, %a2)
      %q = Squeeze(%x, %a1)
      %q2: f32[1,N,4] = Unsqueeze(%q, %a0)
      %f = Flatten(%y)
      %f2 = Reshape(%f, %s)
      %r = Reshape(%y, %s2)
      %r2: f32[24,1] = Flatten(%r) {axis: 2}
      return %u2, %q2, %f2, %r2
    }
    """
    expected = """
    graph @g(%m: f32[2,5], %x: f32[N,1,4], %y: f32[2,3,4]) {
      init %s = i64[2]{3, 8}
      init %u2_shape = i64[4]{2, 1, 1, 5}
      init %q2_shape = i64[3]{1, -1, 4}
      init %r2_shape = i64[2]{24, 1}
      %u2: f32[2,1,1,5] = Reshape(%m, %u2_shape)
      %q2: f32[1,N,4] = Reshape(%x, %q2_shape)
      %f2 = Reshape(%y, %s)
      %r2: f32[24,1] = Reshape(%y, %r2_shape)
      return %u2, %q2, %f2, %r2
    }
    """
    result = golden(FuseLayout(), before, expected)
    assert result.stats == {"fuse-unsqueeze-unsqueeze": 1, "fuse-squeeze-unsqueeze": 1,
                            "fuse-flatten-reshape": 1, "fuse-reshape-flatten": 1}


LEFT_ALONE = """
graph @g(%x: f32[2,3], %z: f32[N,1,M], %y: f32[2,3,4], %p: f32[2,3,4], %s: i64[2], %u: f32) {
  init %s1 = i64[2]{6, 4}
  init %s2 = i64[3]{0, 2, 2}
  init %s3 = i64[2]{4, 6}
  init %a1 = i64[1]{1}
  %a = Transpose(%x) {perm: [1, 0]} @real
  %b = Transpose(%z) {perm: [1, 0, 2]} @two_unknown
  %c = Transpose(%y) {perm: [1, 0, 2]} @shared_first
  %c2 = Transpose(%c) {perm: [1, 0, 2]} @shared_second
  %d = Reshape(%p, %s1) @inner
  %d2 = Reshape(%d, %s2) @copy_zero
  %e = Reshape(%y, %s1)
  %e2 = Reshape(%e, %s) @computed
  %f = Unsqueeze(%z, %a1)
  %f2: f32[N,1,1,M] = Unsqueeze(%f, %a1) @unknown_out
  %g = Transpose(%u) @no_rank
  %h = Reshape(%y, %s1)
  %h2: f32[4,6] = Reshape(%h, %s3) @read_twice
  %hn = Neg(%h)
  return %a, %b, %c, %c2, %d2, %e2, %f2, %g, %h2, %hn
}
"""


def test_leaves_chains_that_do_not_merge(golden):
    # Not run numerically: %s would be a random shape.
    golden(FuseLayout(), LEFT_ALONE, None, numeric=False)


def test_explain_says_why():
    as_reshape = _reasons(LEFT_ALONE, "fuse-transpose-as-reshape")
    assert as_reshape["real"].endswith("check: perm [1, 0] reorders axes not known to be of "
                                       "size 1 (input shape [2,3])")
    assert as_reshape["two_unknown"].endswith("check: the output shape [1, N, M] has more than "
                                              "one unknown dim (a Reshape infers only one)")
    assert as_reshape["no_rank"].endswith("check: the rank of the Transpose's input is unknown")
    pair = _reasons(LEFT_ALONE, "fuse-transpose-transpose")
    assert pair["shared_second"].endswith("(of Transpose node 'shared_first') is a graph output")
    assert pair["no_rank"].startswith("does not fire: Transpose expected")
    reshape = _reasons(LEFT_ALONE, "fuse-reshape-reshape")
    assert reshape["copy_zero"].endswith("check: the Reshape's shape [0, 2, 2] copies a dim of "
                                         "the intermediate that is not known, and the "
                                         "Reshape's output shape is unknown")
    assert reshape["computed"].endswith("check: the Reshape's shape is computed (a 0 in it "
                                        "would copy a dim of the intermediate), and the "
                                        "Reshape's output shape is unknown")
    assert reshape["read_twice"].endswith("(of Reshape node (outputs 'h')) is also read by Neg "
                                          "node (outputs 'hn')")
    unsqueeze = _reasons(LEFT_ALONE, "fuse-unsqueeze-unsqueeze")
    assert unsqueeze["unknown_out"].endswith("check: the Unsqueeze's output shape [N, 1, 1, M] "
                                             "has more than one unknown dim (a Reshape infers "
                                             "only one)")


@pytest.mark.slow
@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_zoo_lstm_keeps_no_transpose(exporter, run_ort, random_feeds):
    zoo = pytest.importorskip("kiln.zoo")
    from kiln.passes import optimize

    model = optimize(zoo.to_model("lstm", exporter=exporter))
    feeds = random_feeds(model)
    want = run_ort(model, feeds)
    get_pass("fuse-layout")()(model)
    verify(model)
    assert not [n for n in model.graph if n.op_type == "Transpose"]
    for got, expected in zip(run_ort(model, feeds), want, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
