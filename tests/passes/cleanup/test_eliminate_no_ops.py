import pytest

from kiln.ir import parse_model, verify
from kiln.passes.cleanup.eliminate_no_ops import EliminateNoOps


def test_removes_each_kind_of_no_op(golden):
    before = """
    graph @g(%x: f32[2,3], %m: f32[N,4]) {
      init %shape = i64[2]{0, -1}
      init %starts = i64[2]{0, -5}
      init %ends = i64[2]{9223372036854775807, 3}
      init %ones = i64[1]{1}
      init %pads = i64[4]{0, 0, 0, 0}
      %a = Identity(%x)
      %b, _ = Dropout(%a)
      %c = Cast(%b) {to: 1}
      %d = Reshape(%c, %shape)
      %e = Transpose(%d) {perm: [1, 0]}
      %f = Transpose(%e) {perm: [1, 0]}
      %g = Transpose(%f) {perm: [0, 1]}
      %h = Slice(%g, %starts, %ends)
      %i = Expand(%h, %ones)
      %j = Pad(%i, %pads)
      %k = Flatten(%j) {axis: 1}
      %l = Squeeze(%k)
      %y = Relu(%l)
      %n = Transpose(%m) {perm: [1, 0]}
      %o = Transpose(%n) {perm: [1, 0]}
      return %y, %o
    }
    """
    expected = """
    graph @g(%x: f32[2,3], %m: f32[N,4]) {
      init %shape = i64[2]{0, -1}
      init %starts = i64[2]{0, -5}
      init %ends = i64[2]{9223372036854775807, 3}
      init %ones = i64[1]{1}
      init %pads = i64[4]{0, 0, 0, 0}
      %e = Transpose(%x) {perm: [1, 0]}
      %y = Relu(%x)
      %n = Transpose(%m) {perm: [1, 0]}
      %o = Identity(%m)
      return %y, %o
    }
    """
    result = golden(EliminateNoOps(), before, expected)
    assert result.stats == {"Identity": 1, "Dropout": 1, "Cast": 1, "Reshape": 1,
                            "Transpose": 3, "Slice": 1, "Expand": 1, "Pad": 1,
                            "Flatten": 1, "Squeeze": 1}


def test_graph_output_keeps_its_name(golden):
    before = """
    graph @g(%x: f32[3]) {
      %a = Relu(%x)
      %y = Identity(%a)
      return %y
    }
    """
    expected = """
    graph @g(%x: f32[3]) {
      %y = Relu(%x)
      return %y
    }
    """
    golden(EliminateNoOps(), before, expected)


@pytest.mark.parametrize("body", [
    "%y = Reshape(%u, %shape)",                       # input shape unknown
    "%y = Reshape(%x, %s)",                           # target shape not constant
    "%y = Cast(%u) {to: 1}",                          # input dtype unknown
    "%y = Cast(%x) {to: 10}",                         # a real conversion
    "%d, %mask = Dropout(%x) %y = Where(%mask, %d, %x)",  # the mask is read
    "%y = Dropout(%x, _, %train)",                    # training mode not known
    "%y = Transpose(%x) {perm: [1, 0]}",              # a real transpose
    "%y = Slice(%x, %starts, %ends)",                 # a real slice (end 2 < 3)
    "%y = Expand(%x, %wide)",                         # broadcasts to a larger shape
    "%y = Squeeze(%sym)",                             # a symbolic dim may be 1
    "%y = Identity(%x)",                              # a graph input to an output
])
def test_leaves_alone_what_it_cannot_prove(golden, body):
    before = f"""
    graph @g(%x: f32[2,3], %u, %s: i64[2], %train: bool[], %sym: f32[N,3]) {{
      init %shape = i64[2]{{2, 3}}
      init %starts = i64[2]{{0, 0}}
      init %ends = i64[2]{{2, 2}}
      init %wide = i64[3]{{4, 2, 3}}
      {body}
      return %y
    }}
    """
    result = golden(EliminateNoOps(), before, before, numeric=False)
    assert not result.changed


def test_subgraph_returning_an_outer_value_follows_the_replacement():
    model = parse_model("""
    graph @g(%x: f32[3], %cond: bool[]) {
      %r = Relu(%x)
      %t = Identity(%r)
      %z = If(%cond) {
        then_branch: graph @then() { return %t },
        else_branch: graph @else() { return %x }
      }
      return %z
    }
    """)
    assert EliminateNoOps()(model).changed
    verify(model)
    (if_node,) = [n for n in model.graph if n.op_type == "If"]
    then_branch = if_node.attributes["then_branch"].value
    assert then_branch.outputs[0].producer().op_type == "Relu"
