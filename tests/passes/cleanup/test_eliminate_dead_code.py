from kiln.passes import get_pass
from kiln.passes.cleanup.eliminate_dead_code import EliminateDeadCode


def test_removes_dead_chain_and_unused_initializer(golden):
    before = """
    graph @g(%x: f32[2,3]) {
      init %w = f32[3]{1, 2, 3}
      init %unused = f32[2]{5, 6}
      %a = Relu(%x)
      %b = Mul(%a, %w)
      %c = Exp(%b)
      %y = Add(%x, %w)
      return %y
    }
    """
    expected = """
    graph @g(%x: f32[2,3]) {
      init %w = f32[3]{1, 2, 3}
      %y = Add(%x, %w)
      return %y
    }
    """
    result = golden(EliminateDeadCode(), before, expected)
    assert result.changed
    assert result.stats == {"nodes": 3, "initializers": 1}


def test_recurses_into_subgraphs_and_keeps_outer_values_read_inside(golden):
    before = """
    graph @g(%x: f32[3], %cond: bool[]) {
      %t = Neg(%x)
      %dead_outer = Sqrt(%x)
      %z = If(%cond) {
        then_branch: graph @then() {
          %dead = Abs(%dead_outer)
          %i = Identity(%t)
          return %i
        },
        else_branch: graph @else() {
          %n = Exp(%x)
          return %n
        }
      }
      return %z
    }
    """
    expected = """
    graph @g(%x: f32[3], %cond: bool[]) {
      %t = Neg(%x)
      %z = If(%cond) {
        then_branch: graph @then() {
          %i = Identity(%t)
          return %i
        },
        else_branch: graph @else() {
          %n = Exp(%x)
          return %n
        }
      }
      return %z
    }
    """
    result = golden(EliminateDeadCode(), before, expected)
    assert result.stats == {"nodes": 2}


def test_keeps_outer_value_returned_by_a_subgraph(golden):
    before = """
    graph @g(%x: f32[3], %cond: bool[]) {
      %t = Neg(%x)
      %z = If(%cond) {
        then_branch: graph @then() { return %t },
        else_branch: graph @else() { return %x }
      }
      return %z
    }
    """
    assert not golden(EliminateDeadCode(), before, before, numeric=False).changed


def test_keeps_graph_outputs_inputs_and_custom_ops(golden):
    before = """
    graph @g(%x: f32[3]) {
      init %x = f32[3]{0, 0, 0}
      %y = Relu(%x)
      %log = my.domain::Log(%x)
      return %y
    }
    """
    result = golden(EliminateDeadCode(), before, before, numeric=False)
    assert not result.changed
    removed = golden(EliminateDeadCode(remove_custom_ops=True), before, """
    graph @g(%x: f32[3]) {
      init %x = f32[3]{0, 0, 0}
      %y = Relu(%x)
      return %y
    }
    """, numeric=False)
    assert removed.stats == {"nodes": 1}


def test_registered():
    assert get_pass("eliminate-dead-code") is EliminateDeadCode
