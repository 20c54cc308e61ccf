from kiln.ir import parse_model
from kiln.passes.cleanup.fold_constants import FoldConstants


def test_folds_arithmetic_on_initializers_and_constants(golden):
    before = """
    graph @g(%x: f32[2,3]) {
      init %a = f32[3]{1, 2, 3}
      %b = Constant() {value: f32[3]{10, 20, 30}}
      %c = Add(%a, %b)
      %d = Mul(%c, %c)
      %y = Add(%x, %d)
      return %y
    }
    """
    expected = """
    graph @g(%x: f32[2,3]) {
      init %a = f32[3]{1, 2, 3}
      init %c: f32[3] = f32[3]{11, 22, 33}
      init %d: f32[3] = f32[3]{121, 484, 1089}
      %b = Constant() {value: f32[3]{10, 20, 30}}
      %y = Add(%x, %d)
      return %y
    }
    """
    result = golden(FoldConstants(), before, expected)
    assert result.stats == {"folded": 2}


def test_folds_shape_arithmetic_feeding_reshape(golden):
    before = """
    graph @g(%x: f32[2,3,4]) {
      init %i0 = i64[]{0}
      init %minus1 = i64[1]{-1}
      %s = Shape(%x)
      %n = Gather(%s, %i0) {axis: 0}
      %n1 = Unsqueeze(%n, %i0)
      %t = Concat(%n1, %minus1) {axis: 0}
      %y = Reshape(%x, %t)
      return %y
    }
    """
    expected = """
    graph @g(%x: f32[2,3,4]) {
      init %i0 = i64[]{0}
      init %minus1 = i64[1]{-1}
      init %s: i64[3] = i64[3]{2, 3, 4}
      init %n: i64[] = i64[]{2}
      init %n1: i64[1] = i64[1]{2}
      init %t: i64[2] = i64[2]{2, -1}
      %y = Reshape(%x, %t)
      return %y
    }
    """
    assert golden(FoldConstants(), before, expected).stats == {"folded": 4}


def test_folded_graph_output_keeps_its_name(golden):
    before = """
    graph @g(%x: f32[2]) {
      %s = Shape(%x)
      return %s
    }
    """
    expected = """
    graph @g(%x: f32[2]) {
      init %s_0: i64[1] = i64[1]{2}
      %s = Identity(%s_0)
      return %s
    }
    """
    golden(FoldConstants(), before, expected)


def test_leaves_alone_random_symbolic_custom_and_oversized(golden):
    before = """
    graph @g(%x: f32[N,3]) {
      init %big_shape = i64[2]{100, 100}
      init %one = f32[]{1}
      %s = Shape(%x)
      %r = RandomNormal() {shape: [3], seed: 1.0}
      %big = Expand(%one, %big_shape)
      %c = my.ops::Twice(%one)
      %y = Add(%x, %r)
      return %y, %s, %big, %c
    }
    """
    model = parse_model(before)
    result = FoldConstants(size_limit=1000)(model)
    assert not result.changed
    assert result.stats == {"skipped_size": 1}
    golden(FoldConstants(size_limit=1000), before, before, numeric=False)


def test_size_limit_allows_exact_size(golden):
    before = """
    graph @g(%x: f32[3]) {
      init %shape = i64[1]{3}
      init %one = f32[]{1}
      %e = Expand(%one, %shape)
      %y = Add(%x, %e)
      return %y
    }
    """
    expected = """
    graph @g(%x: f32[3]) {
      init %shape = i64[1]{3}
      init %one = f32[]{1}
      init %e: f32[3] = f32[3]{1}
      %y = Add(%x, %e)
      return %y
    }
    """
    golden(FoldConstants(size_limit=3), before, expected)
