"""``topological-sort``: order the nodes of every graph so each value is defined before use."""

from __future__ import annotations

from kiln.errors import KilnError
from kiln.ir import Model
from kiln.passes._base import Pass, PassResult, register_pass
from kiln.passes.cleanup._util import all_graphs


@register_pass
class TopologicalSort(Pass):
    """Sort every graph (main graph, functions, subgraphs), keeping valid order stable."""

    name = "topological-sort"

    def call(self, model: Model) -> PassResult:
        changed = False
        for graph in all_graphs(model):
            before = graph.nodes
            try:
                graph.sort()
            except ValueError as e:
                raise KilnError(f"topological-sort: graph {graph.name!r}: {e}") from None
            changed |= graph.nodes != before
        return PassResult(model, changed)
