"""``dedupe-initializers``: merge initializers that hold the same data.

Initializers of one graph with equal dtype, shape and bytes become one (the first by
order). Among initializers of equal dtype and shape, bytes are hashed to find candidates
and then compared exactly. Initializers that
are also graph inputs (a caller may override them) or outputs of a graph are left alone.
"""

from __future__ import annotations

import hashlib
from collections import Counter

import numpy as np

from kiln.ir import Graph, Model, Value
from kiln.passes._base import Pass, PassResult, register_pass
from kiln.passes.cleanup._util import all_graphs, subgraph_outputs


def _data(value: Value) -> bytes:
    array = value.const_value.numpy()
    if array.dtype == object:  # strings
        return repr(array.reshape(-1).tolist()).encode()
    return np.ascontiguousarray(array).tobytes()


def _dedupe(graph: Graph) -> int:
    # Only initializers that share dtype and shape with another can be equal: group them
    # first, so the bytes of the (many) unique weights are never copied or hashed.
    groups: dict[tuple, list[Value]] = {}
    returned = subgraph_outputs(graph)
    for value in graph.initializers.values():
        if value.is_graph_input() or value.is_graph_output() or id(value) in returned:
            continue
        tensor = value.const_value
        groups.setdefault((int(tensor.dtype), tensor.shape), []).append(value)
    merged = 0
    for group in groups.values():
        if len(group) < 2:
            continue
        kept: dict[bytes, list[tuple[Value, bytes]]] = {}
        for value in group:
            data = _data(value)
            candidates = kept.setdefault(hashlib.sha256(data).digest(), [])
            same = next((v for v, d in candidates if d == data), None)
            if same is None:
                candidates.append((value, data))
                continue
            value.replace_all_uses_with(same)
            graph.remove_initializer(value.name)
            merged += 1
    return merged


@register_pass
class DedupeInitializers(Pass):
    """Merge initializers with identical dtype, shape and data; stats count merged ones."""

    name = "dedupe-initializers"

    def call(self, model: Model) -> PassResult:
        stats: Counter[str] = Counter()
        for graph in all_graphs(model):
            stats["merged"] += _dedupe(graph)
        stats = +stats
        return PassResult(model, bool(stats), stats)
