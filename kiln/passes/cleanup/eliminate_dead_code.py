"""``eliminate-dead-code``: remove nodes nobody reads and initializers nobody uses.

A node is dead when none of its outputs is read by a node or is a graph output. Standard
ONNX ops have no side effects, so any dead node in the default domain goes. Ops of other
domains are kept conservatively (a custom op may print, write a file or update state),
unless ``remove_custom_ops`` is set. Subgraphs are cleaned too; a node holding subgraphs is
removed whole when its outputs are dead.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

from kiln.ir import Graph, Model, Node
from kiln.passes._base import Pass, PassResult, register_pass
from kiln.passes.cleanup._util import all_graphs, subgraph_outputs


def _is_dead(node: Node, keep_custom: bool, inner_outputs: set[int]) -> bool:
    if keep_custom and node.domain not in ("", "ai.onnx.ml"):
        return False
    return all(
        not out.uses() and not out.is_graph_output() and id(out) not in inner_outputs
        for out in node.outputs
    )


def _sweep_nodes(graph: Graph, keep_custom: bool) -> int:
    removed = 0
    changed = True
    while changed:  # again only when a removed subgraph returned an outer value
        changed = False
        inner_outputs = subgraph_outputs(graph)
        for node in reversed(graph.nodes):
            if _is_dead(node, keep_custom, inner_outputs):
                changed |= any(True for _ in node.subgraphs())
                graph.remove(node)
                removed += 1
    return removed


def _sweep_initializers(graph: Graph) -> int:
    inner_outputs = subgraph_outputs(graph)
    unused = [
        name for name, v in graph.initializers.items()
        if not v.uses() and not v.is_graph_output() and not v.is_graph_input()
        and id(v) not in inner_outputs
    ]
    for name in unused:
        graph.remove_initializer(name)
    return len(unused)


@register_pass
class EliminateDeadCode(Pass):
    """Remove dead nodes (in reverse order, so chains go at once) and unused initializers."""

    name = "eliminate-dead-code"

    @dataclasses.dataclass(frozen=True)
    class Options:
        """Options of eliminate-dead-code.

        Attributes:
            remove_custom_ops: also remove dead nodes of non-ONNX domains.
        """

        remove_custom_ops: bool = False

    def call(self, model: Model) -> PassResult:
        stats: Counter[str] = Counter()
        keep_custom = not self.options.remove_custom_ops
        # Inner graphs first: a subgraph's dead nodes may be the only readers of outer values.
        for graph in reversed(list(all_graphs(model))):
            stats["nodes"] += _sweep_nodes(graph, keep_custom)
        for graph in all_graphs(model):
            stats["initializers"] += _sweep_initializers(graph)
        stats = +stats
        return PassResult(model, bool(stats), stats)
