import numpy as np
import onnx
import pytest

from kiln.frontends.onnx import to_bytes
from kiln.ir import parse_model, verify
from kiln.passes import get_pass
from kiln.passes.cleanup.lift_constants import LiftConstants
from kiln.testing import assert_models_equal


def _check_onnx(model) -> None:
    """The lifted model is valid ONNX (full checker, with shape inference)."""
    onnx.checker.check_model(onnx.load_from_string(to_bytes(model)), full_check=True)


def test_is_registered():
    assert get_pass("lift-constants") is LiftConstants


def test_lifts_every_numeric_kind(golden):
    before = """
    graph @g(%x: f32[2]) {
      %c = Constant() {value: f32[2]{1, 2}}
      %f = Constant() {value_float: 1.5}
      %fs = Constant() {value_floats: [0.5, 2.5]}
      %i = Constant() {value_int: 3}
      %is = Constant() {value_ints: [1, 2]}
      %e = Constant() {value_floats: floats = []}
      %a: f32[2] = Add(%x, %c)
      %m: f32[2] = Mul(%a, %f)
      %s: f32[2] = Sub(%m, %fs)
      %r: f32[1,2] = Reshape(%s, %is)
      %n: i64[] = Neg(%i)
      %y: f32[2] = Concat(%s, %e) {axis: 0}
      return %y, %r, %n
    }
    """
    expected = """
    graph @g(%x: f32[2]) {
      init %c = f32[2]{1, 2}
      init %f = f32[]{1.5}
      init %fs = f32[2]{0.5, 2.5}
      init %i = i64[]{3}
      init %is = i64[2]{1, 2}
      init %e = f32[0]{}
      %a: f32[2] = Add(%x, %c)
      %m: f32[2] = Mul(%a, %f)
      %s: f32[2] = Sub(%m, %fs)
      %r: f32[1,2] = Reshape(%s, %is)
      %n: i64[] = Neg(%i)
      %y: f32[2] = Concat(%s, %e) {axis: 0}
      return %y, %r, %n
    }
    """
    result = golden(LiftConstants(), before, expected, must_change=True)
    assert result.stats == {"lifted": 6}
    verify(result.model)
    _check_onnx(result.model)


def test_lifts_strings(run_ort):
    before = """
    graph @g(%x: str[2]) {
      %s = Constant() {value_string: "a"}
      %ss = Constant() {value_strings: ["b", "c"]}
      %y: str[2] = Concat(%x, %ss) {axis: 0}
      %z: str[1] = Unsqueeze(%s, %axes)
      %axes = Constant() {value_ints: [0]}
      return %y, %z
    }
    """
    expected = """
    graph @g(%x: str[2]) {
      init %s = str[]{"a"}
      init %ss = str[2]{"b", "c"}
      init %axes = i64[1]{0}
      %y: str[2] = Concat(%x, %ss) {axis: 0}
      %z: str[1] = Unsqueeze(%s, %axes)
      return %y, %z
    }
    """
    model = parse_model(before)
    model.graph.sort()
    assert LiftConstants()(model).stats == {"lifted": 3}
    assert_models_equal(model, expected)
    feeds = {"x": np.array(["p", "q"], dtype=object)}
    want = run_ort(parse_model(before), feeds)
    got = run_ort(model, feeds)
    assert [w.tolist() for w in want] == [g.tolist() for g in got] == [["p", "q", "b", "c"], ["a"]]


def test_graph_output_constant_becomes_an_initializer_output(golden, run_ort):
    before = """
    graph @g(%x: f32[2]) {
      %c = Constant() {value: f32[2]{1, 2}}
      %y: f32[2] = Add(%x, %c)
      return %y, %c
    }
    """
    expected = """
    graph @g(%x: f32[2]) {
      init %c = f32[2]{1, 2}
      %y: f32[2] = Add(%x, %c)
      return %y, %c
    }
    """
    result = golden(LiftConstants(), before, expected)
    _check_onnx(result.model)
    (y, c) = run_ort(result.model, {"x": np.zeros(2, np.float32)})
    np.testing.assert_array_equal(c, [1, 2])


def test_only_output_is_a_constant(golden):
    before = """
    graph @g() {
      %c = Constant() {value_ints: [4, 5]}
      return %c
    }
    """
    expected = """
    graph @g() {
      init %c = i64[2]{4, 5}
      return %c
    }
    """
    _check_onnx(golden(LiftConstants(), before, expected).model)


def test_unnamed_constant_gets_a_fresh_name(golden, run_ort):
    before = """
    graph @g(%x: f32[2]) {
      %const_0 = Constant() {value_float: 2.0}
      %#1 = Constant() {value_float: 3.0}
      %a: f32[2] = Mul(%x, %const_0)
      %y: f32[2] = Mul(%a, %#1)
      return %y
    }
    """
    expected = """
    graph @g(%x: f32[2]) {
      init %const_0 = f32[]{2}
      init %const_1 = f32[]{3}
      %a: f32[2] = Mul(%x, %const_0)
      %y: f32[2] = Mul(%a, %const_1)
      return %y
    }
    """
    # The unnamed value does not serialize, so only the result runs in ORT.
    model = golden(LiftConstants(), before, expected, numeric=False).model
    (y,) = run_ort(model, {"x": np.array([1, 2], np.float32)})
    np.testing.assert_array_equal(y, [6, 12])


_IF_MODEL = """
graph @g(%x: f32[2], %b: bool[]) {
  %outer = Constant() {value: f32[2]{3, 4}}
  %z: f32[2] = If(%b) {
    then_branch: graph @t() {
      %k = Constant() {value: f32[2]{10, 20}}
      %o: f32[2] = Add(%x, %k)
      %p: f32[2] = Mul(%o, %outer)
      return %p
    },
    else_branch: graph @e() {
      %k2 = Constant() {value: f32[2]{7, 8}}
      return %k2
    }
  }
  return %z
}
"""


def test_subgraph_constants_become_subgraph_initializers(run_ort):
    expected = """
    graph @g(%x: f32[2], %b: bool[]) {
      init %outer = f32[2]{3, 4}
      %z: f32[2] = If(%b) {
        then_branch: graph @t() {
          init %k = f32[2]{10, 20}
          %o: f32[2] = Add(%x, %k)
          %p: f32[2] = Mul(%o, %outer)
          return %p
        },
        else_branch: graph @e() {
          init %k2 = f32[2]{7, 8}
          return %k2
        }
      }
      return %z
    }
    """
    model = parse_model(_IF_MODEL)
    assert LiftConstants()(model).stats == {"lifted": 3}
    assert_models_equal(model, expected)
    verify(model)
    _check_onnx(model)
    x = np.array([1, 2], np.float32)
    for branch in (True, False):
        feeds = {"x": x, "b": np.array(branch)}
        (want,) = run_ort(parse_model(_IF_MODEL), feeds)
        (got,) = run_ort(model, feeds)
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got, [7, 8])


def test_loop_body_constant(golden, run_ort):
    before = """
    graph @g(%x: f32[2], %n: i64[]) {
      %y: f32[2] = Loop(%n, _, %x) {
        body: graph @body(%i: i64[], %c: bool[], %v: f32[2]) {
          %one = Constant() {value: f32[]{1}}
          %v2: f32[2] = Add(%v, %one)
          %c2: bool[] = Identity(%c)
          return %c2, %v2
        }
      }
      return %y
    }
    """
    expected = """
    graph @g(%x: f32[2], %n: i64[]) {
      %y: f32[2] = Loop(%n, _, %x) {
        body: graph @body(%i: i64[], %c: bool[], %v: f32[2]) {
          init %one = f32[]{1}
          %v2: f32[2] = Add(%v, %one)
          %c2: bool[] = Identity(%c)
          return %c2, %v2
        }
      }
      return %y
    }
    """
    model = golden(LiftConstants(), before, expected, numeric=False).model
    feeds = {"x": np.array([1, 2], np.float32), "n": np.array(3)}
    np.testing.assert_array_equal(run_ort(model, feeds)[0], [4, 5])


def test_sparse_constant_is_left(golden):
    before = """
    graph @g(%x: f32[4]) {
      %c = Constant() {sparse_value: sparse(f32[2]{1, 2}, i64[2]{0, 3}, [4])}
      %y: f32[4] = Add(%x, %c)
      return %y
    }
    """
    result = golden(LiftConstants(), before, None, numeric=False)
    assert result.stats == {"skipped_sparse": 1}


def test_constant_returned_by_a_subgraph_is_left(golden):
    # ORT and the onnx checker refuse a subgraph output that is an outer value, so whether
    # it is a node output or an initializer, the model is as (in)valid as before; leave it.
    before = """
    graph @g(%b: bool[]) {
      %c = Constant() {value: f32[2]{1, 2}}
      %z: f32[2] = If(%b) {
        then_branch: graph @t() { return %c },
        else_branch: graph @e() {
          %d = Constant() {value: f32[2]{3, 4}}
          return %d
        }
      }
      return %z
    }
    """
    expected = """
    graph @g(%b: bool[]) {
      %c = Constant() {value: f32[2]{1, 2}}
      %z: f32[2] = If(%b) {
        then_branch: graph @t() { return %c },
        else_branch: graph @e() {
          init %d = f32[2]{3, 4}
          return %d
        }
      }
      return %z
    }
    """
    result = golden(LiftConstants(), before, expected, numeric=False)
    assert result.stats == {"lifted": 1, "skipped_returned": 1}


def test_function_body_constants_are_left(golden):
    # A FunctionProto has no initializers.
    before = """
    model <ir_version: 10, opset_imports: {"": 21, "my": 1}>
    graph @g(%x: f32[2]) {
      %y: f32[2] = my::F(%x)
      return %y
    }
    func my::F(%a) <opset_imports: {"": 21}> {
      %c = Constant() {value: f32[2]{1, 2}}
      %b = Add(%a, %c)
      return %b
    }
    """
    result = golden(LiftConstants(), before, None)
    assert result.stats == {"skipped_function": 1}


def test_old_ir_version_is_left(golden):
    # Before IR version 4 every initializer must also be a graph input.
    before = """
    model <ir_version: 3, opset_imports: {"": 9}>
    graph @g(%x: f32[2]) {
      %c = Constant() {value: f32[2]{1, 2}}
      %y: f32[2] = Add(%x, %c)
      return %y
    }
    """
    result = golden(LiftConstants(), before, None)
    assert result.stats == {"skipped_ir_version": 1}


def test_nothing_to_lift(golden):
    before = """
    graph @g(%x: f32[2]) {
      init %c = f32[2]{1, 2}
      %y: f32[2] = Add(%x, %c)
      return %y
    }
    """
    assert golden(LiftConstants(), before, None).stats == {}


@pytest.mark.parametrize(
    "exporter", ["torchscript", pytest.param("dynamo", marks=pytest.mark.slow)]
)
def test_zoo_mlp_keeps_its_outputs(exporter, same_outputs):
    zoo = pytest.importorskip("kiln.zoo")
    model = zoo.to_model("mlp", exporter=exporter)
    reference = zoo.to_model("mlp", exporter=exporter)
    LiftConstants()(model)
    verify(model)
    assert not [n for n in model.graph.all_nodes() if n.op_type == "Constant"]
    same_outputs(reference, model)
