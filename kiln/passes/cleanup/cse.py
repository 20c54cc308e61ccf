"""``cse``: common subexpression elimination.

Two nodes of the same op (domain, type, overload) with the same attributes reading the
same values compute the same outputs; the later one is replaced by the earlier. Random
ops, nodes holding subgraphs and ops outside the ONNX domains (which may have side
effects) are never merged. Each graph is handled on its own, in order, so merging one
pair can make their consumers equal too.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable
from typing import Any

import numpy as np

from kiln.ir import Attr, Model, Node, Tensor
from kiln.passes._base import Pass, PassResult, register_pass
from kiln.passes.cleanup._util import all_graphs, is_random, replace_value


def _value_key(value: Any) -> Hashable:
    if isinstance(value, Tensor):
        array = value.numpy()
        return ("tensor", int(value.dtype), value.shape, np.ascontiguousarray(array).tobytes())
    if isinstance(value, list | tuple):
        return tuple(_value_key(v) for v in value)
    if isinstance(value, float) and value != value:
        return ("nan",)
    return value


def _attr_key(attr: Attr) -> Hashable:
    return (attr.name, int(attr.type), _value_key(attr.value), attr.ref_attr_name)


def _node_key(node: Node) -> Hashable | None:
    """What makes two nodes compute the same thing, or None when ``node`` must stay."""
    if node.domain not in ("", "ai.onnx.ml") or is_random(node):
        return None
    if any(True for _ in node.subgraphs()):
        return None
    attrs = tuple(sorted((_attr_key(a) for a in node.attributes.values()), key=repr))
    inputs = tuple(None if v is None else id(v) for v in node.inputs)
    return (node.domain, node.op_type, node.overload, inputs, attrs, len(node.outputs))


@register_pass
class CommonSubexpressionElimination(Pass):
    """Merge nodes that compute the same values; stats count merged nodes."""

    name = "cse"

    def call(self, model: Model) -> PassResult:
        stats: Counter[str] = Counter()
        for graph in all_graphs(model):
            seen: dict[Hashable, Node] = {}
            for node in graph:
                key = _node_key(node)
                if key is None:
                    continue
                kept = seen.setdefault(key, node)
                if kept is node:
                    continue
                for old, new in zip(node.outputs, kept.outputs, strict=True):
                    replace_value(old, new)
                if all(not v.uses() and not v.is_graph_output() for v in node.outputs):
                    graph.remove(node)
                stats["merged"] += 1
        return PassResult(model, bool(stats), stats)
