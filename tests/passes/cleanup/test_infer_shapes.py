import pytest

from kiln.errors import KilnError
from kiln.ir import parse_model
from kiln.passes.cleanup.infer_shapes import InferShapes


def test_fills_unknown_types_and_dims_in_graphs_and_subgraphs(golden):
    before = """
    graph @g(%x: f32[N,3], %cond: bool[]) {
      init %w = f32[3,4]{1}
      %m: f32[N,?] = MatMul(%x, %w)
      %r = Relu(%m)
      %z = If(%cond) {
        then_branch: graph @then() {
          %n = Neg(%r)
          return %n
        },
        else_branch: graph @else() {
          %a = Abs(%r)
          return %a
        }
      }
      return %z
    }
    """
    expected = """
    graph @g(%x: f32[N,3], %cond: bool[]) {
      init %w = f32[3,4]{1}
      %m: f32[N,4] = MatMul(%x, %w)
      %r: f32[N,4] = Relu(%m)
      %z: f32[N,4] = If(%cond) {
        then_branch: graph @then() {
          %n: f32[N,4] = Neg(%r)
          return %n
        },
        else_branch: graph @else() {
          %a: f32[N,4] = Abs(%r)
          return %a
        }
      }
      return %z
    }
    """
    result = golden(InferShapes(), before, expected)
    assert result.stats == {"typed": 4, "refined": 1}
    assert not InferShapes()(result.model).changed


def test_keeps_symbolic_dims_it_knows(golden):
    before = """
    graph @g(%x: f32[N,3]) {
      %y: f32[B,3] = Relu(%x)
      return %y
    }
    """
    assert not golden(InferShapes(), before, before).changed


def test_contradiction_names_the_value():
    model = parse_model("""
    graph @g(%x: f32[2,3]) {
      %y: f32[2,5] = Relu(%x)
      return %y
    }
    """)
    with pytest.raises(KilnError, match="value 'y' has shape"):
        InferShapes()(model)


def test_ignores_a_negative_dim_onnx_infers():
    # For Split(num_outputs=4) of 5 elements ONNX infers a last chunk of 5 - 3 * 2 = -1 (the
    # expanded AffineGrid has such a Split in an If branch it does not take): that
    # impossible type is ignored rather than crashing the pass.
    model = parse_model("""
    model <ir_version: 10, opset_imports: {"": 21}>
    graph @g(%x: i64[5]) {
      %a, %b, %c, %d = Split(%x) {num_outputs: 4}
      return %a, %b, %c, %d
    }
    """)
    result = InferShapes()(model)
    a, _, _, d = result.model.graph.outputs
    assert a.type.shape.dims == (2,)
    assert d.type is None
