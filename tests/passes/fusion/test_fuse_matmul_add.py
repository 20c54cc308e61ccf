from kiln.ir import parse_model
from kiln.passes import optimize
from kiln.passes.fusion.matmul_add import FuseMatMulAdd
from kiln.passes.rewrite import explain


def test_matmul_add_becomes_gemm(golden):
    before = """
    graph @g(%x: f32[N,3]) {
      init %w = f32[3,2]{1, 2, 3, 4, 5, 6}
      init %b = f32[2]{0.5, -1}
      %m = MatMul(%x, %w)
      %y = Add(%b, %m)
      return %y
    }
    """
    expected = """
    graph @g(%x: f32[N,3]) {
      init %w = f32[3,2]{1, 2, 3, 4, 5, 6}
      init %b = f32[2]{0.5, -1}
      %y = Gemm(%x, %w, %b)
      return %y
    }
    """
    result = golden(FuseMatMulAdd(), before, expected)
    assert result.stats == {"fuse-matmul-add": 1}


NOT_2D = """
graph @g(%x: f32[2,4,3], %v: f32[3,2], %z: f32[2,3]) {
  init %w = f32[3,2]{1, 2, 3, 4, 5, 6}
  init %b = f32[2]{0.5, -1}
  %m = MatMul(%x, %w)
  %y = Add(%m, %b)
  %m2 = MatMul(%z, %v)
  %y2 = Add(%m2, %b)
  %m3 = MatMul(%z, %w)
  %y3 = Add(%m3, %b)
  %y4 = Relu(%m3)
  return %y, %y2, %y3, %y4
}
"""


def test_leaves_3d_input_variable_weight_and_shared_matmul(golden):
    golden(FuseMatMulAdd(), NOT_2D, None)


def test_explain_says_why():
    lines = explain(parse_model(NOT_2D), "fuse-matmul-add")
    assert len(lines) == 3
    assert "x is not known to be 2-D" in lines[0]
    assert "the weight is not constant" in lines[1]
    assert "is also read by Relu" in lines[2]


def test_runs_by_name_in_a_pipeline():
    model = parse_model("""
    graph @g(%x: f32[1,3]) {
      init %w = f32[3,1]{1, 2, 3}
      init %b = f32[1,1]{2}
      %m = MatMul(%x, %w)
      %y = Add(%m, %b)
      return %y
    }
    """)
    model, _ = optimize(model, passes="fuse-matmul-add", report=True)
    assert [n.op_type for n in model.graph] == ["Gemm"]
