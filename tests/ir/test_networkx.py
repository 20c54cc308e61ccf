"""The networkx view: one vertex per node, one edge per use; dominators."""

from __future__ import annotations

import networkx as nx

from kiln.ir import DataType, Graph, Node, Shape, TensorType, Value, dominator_tree, to_networkx


def _value(name: str) -> Value:
    return Value(name, TensorType(DataType.FLOAT, Shape([2])))


def _node(op: str, inputs: list[Value | None], name: str) -> Node:
    return Node("", op, inputs, outputs=[_value(name)], name=name)


def _diamond() -> tuple[Graph, dict[str, Node]]:
    """x -> a -> (b, c) -> d -> e."""
    x = _value("x")
    a = _node("Relu", [x], "a")
    b = _node("Neg", [a.outputs[0]], "b")
    c = _node("Abs", [a.outputs[0]], "c")
    d = _node("Add", [b.outputs[0], c.outputs[0]], "d")
    e = _node("Exp", [d.outputs[0]], "e")
    nodes = {n.name: n for n in (a, b, c, d, e)}
    return Graph([x], [e.outputs[0]], list(nodes.values())), nodes


def test_one_vertex_per_node_one_edge_per_use() -> None:
    x = _value("x")
    a = _node("Relu", [x], "a")
    sq = _node("Mul", [a.outputs[0], a.outputs[0]], "sq")
    opt = Node("", "Clip", [sq.outputs[0], None, a.outputs[0]], outputs=[_value("clip")],
               name="clip")
    graph = Graph([x], [opt.outputs[0]], [a, sq, opt])
    view = to_networkx(graph)
    assert list(view.nodes) == [a, sq, opt]
    assert view.nodes[sq]["op"] == "Mul"
    edges = sorted((u.name, v.name, d["index"], d["value"].name)
                   for u, v, d in view.edges(data=True))
    # Graph inputs make no edges; a value read twice makes two edges; None inputs none.
    assert edges == [("a", "clip", 2, "a"), ("a", "sq", 0, "a"), ("a", "sq", 1, "a"),
                     ("sq", "clip", 0, "sq")]
    assert view.number_of_edges(a, sq) == 2


def test_subgraph_reads_are_edges_into_the_holding_node() -> None:
    x = _value("x")
    a = _node("Relu", [x], "a")
    branches = {}
    for branch_name in ("then_branch", "else_branch"):
        inner = _node("Neg", [a.outputs[0]], f"{branch_name}_neg")
        branches[branch_name] = Graph(outputs=[inner.outputs[0]], nodes=[inner])
    cond = Value("cond", TensorType(DataType.BOOL, Shape([])))
    if_node = Node("", "If", [cond], branches, outputs=[_value("if")], name="if")
    graph = Graph([x, cond], [if_node.outputs[0]], [a, if_node])
    view = to_networkx(graph)
    assert list(view.nodes) == [a, if_node]  # inner nodes are not vertices
    # One edge per subgraph that reads the value, with index -1.
    assert [(u.name, v.name, d["index"]) for u, v, d in view.edges(data=True)] == \
        [("a", "if", -1), ("a", "if", -1)]


def test_the_view_is_derived_not_stored() -> None:
    graph, nodes = _diamond()
    view = to_networkx(graph)
    view.remove_node(nodes["b"])
    assert len(graph) == 5
    assert nx.is_directed_acyclic_graph(to_networkx(graph))
    assert [n.name for n in nx.topological_sort(to_networkx(graph))][0] == "a"


def test_dominators_on_a_diamond() -> None:
    graph, n = _diamond()
    idom = dominator_tree(graph, n["a"])
    assert idom[n["b"]] is n["a"]
    assert idom[n["c"]] is n["a"]
    assert idom[n["d"]] is n["a"]  # neither branch dominates the join
    assert idom[n["e"]] is n["d"]
    assert set(idom) >= {n["b"], n["c"], n["d"], n["e"]}


def test_dominators_from_a_branch_see_only_what_it_reaches() -> None:
    graph, n = _diamond()
    idom = dominator_tree(graph, n["b"])
    assert idom[n["d"]] is n["b"]
    assert n["c"] not in idom and n["a"] not in idom
