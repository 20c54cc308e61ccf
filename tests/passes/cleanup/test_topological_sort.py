import pytest

from kiln.errors import KilnError
from kiln.ir import parse_model
from kiln.passes.cleanup.topological_sort import TopologicalSort


def test_sorts_main_graph_and_subgraphs(golden):
    before = """
    graph @g(%x: f32[3], %cond: bool[]) {
      %z = If(%cond) {
        then_branch: graph @then() {
          %b = Exp(%a)
          %a = Neg(%t)
          return %b
        },
        else_branch: graph @else() {
          %n = Abs(%x)
          return %n
        }
      }
      %t = Relu(%x)
      return %z
    }
    """
    expected = """
    graph @g(%x: f32[3], %cond: bool[]) {
      %t = Relu(%x)
      %z = If(%cond) {
        then_branch: graph @then() {
          %a = Neg(%t)
          %b = Exp(%a)
          return %b
        },
        else_branch: graph @else() {
          %n = Abs(%x)
          return %n
        }
      }
      return %z
    }
    """
    # ORT refuses the unsorted input; running the result shows that ORT accepts its order.
    assert golden(TopologicalSort(), before, expected, reference=expected).changed


def test_sorted_graph_is_unchanged(golden):
    before = """
    graph @g(%x: f32[3]) {
      %a = Relu(%x)
      %b = Neg(%x)
      %c = Add(%b, %a)
      return %c
    }
    """
    assert not golden(TopologicalSort(), before, before).changed


def test_cycle_is_a_kiln_error():
    model = parse_model("""
    graph @g(%x: f32[3]) {
      %a = Add(%x, %b)
      %b = Neg(%a)
      return %b
    }
    """)
    with pytest.raises(KilnError, match="topological-sort: graph 'g'.*cycle"):
        TopologicalSort()(model)
