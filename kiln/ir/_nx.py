"""networkx views of a graph for analyses (dominators, partitioning, isomorphism).

The view is derived from the IR on demand and never stored; editing it does not
change the model.
"""

from __future__ import annotations

import networkx as nx

from kiln.ir._core import Graph, Node, captured_values


def to_networkx(graph: Graph) -> nx.MultiDiGraph:
    """A directed multigraph with one vertex per node and one edge per (value, use).

    Vertices are the :class:`Node` objects themselves, with attribute ``op``; edges carry
    ``value`` (the Value) and ``index`` (the consumer's input index). Values read by a
    subgraph count as inputs of the node that holds it.
    """
    g = nx.MultiDiGraph()
    for node in graph:
        g.add_node(node, op=node.qualified_op)
    for node in graph:
        for i, v in enumerate(node.inputs):
            p = v.producer() if v is not None else None
            if p is not None and p.graph is graph:
                g.add_edge(p, node, value=v, index=i)
        for sub in node.subgraphs():
            for v in captured_values(sub):
                p = v.producer()
                if p is not None and p.graph is graph:
                    g.add_edge(p, node, value=v, index=-1)
    return g


def dominator_tree(graph: Graph, start: Node) -> dict[Node, Node]:
    """Immediate dominators of the nodes reachable from ``start``."""
    return nx.immediate_dominators(to_networkx(graph), start)
