"""``lift-constants``: turn ``Constant`` nodes into initializers of their graph.

A ``Constant`` node of the default domain holding ``value``, ``value_float(s)``,
``value_int(s)`` or ``value_string(s)`` becomes an initializer of the graph it stands in
(the main graph or a subgraph of If, Loop, Scan), named like the value it produced, so
every reader, a graph output included, now reads the initializer. ONNX and ONNX Runtime
accept an initializer as a graph output and initializers in subgraphs.

Left as nodes (and counted in the stats):

- ``sparse_value`` constants (``skipped_sparse``): a sparse initializer is a different
  thing that few runtimes read.
- constants inside model-local function bodies (``skipped_function``): an ONNX
  FunctionProto has no initializers.
- constants whose value a subgraph returns directly (``skipped_returned``): a subgraph
  output must be computed in, or be an initializer of, that subgraph.
- every constant of a model with IR version below 4 (``skipped_ir_version``): there each
  initializer must also be a graph input, which a caller could override.
"""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np

from kiln.ir import Attr, AttrType, DataType, Graph, Model, Node, Tensor, TensorType, Value
from kiln.passes._base import Pass, PassResult, register_pass
from kiln.passes.cleanup._util import subgraph_outputs

# Scalar and list attributes of Constant: attribute name -> (attribute type, dtype, rank).
_PLAIN_ATTRS: dict[str, tuple[AttrType, DataType, int]] = {
    "value_float": (AttrType.FLOAT, DataType.FLOAT, 0),
    "value_floats": (AttrType.FLOATS, DataType.FLOAT, 1),
    "value_int": (AttrType.INT, DataType.INT64, 0),
    "value_ints": (AttrType.INTS, DataType.INT64, 1),
    "value_string": (AttrType.STRING, DataType.STRING, 0),
    "value_strings": (AttrType.STRINGS, DataType.STRING, 1),
}


def _is_constant(node: Node) -> bool:
    return (node.domain == "" and node.op_type == "Constant" and not node.inputs
            and len(node.outputs) == 1)


def _attr_tensor(attr: Attr) -> Tensor | None:
    """The tensor a Constant's attribute stands for, or None (sparse, references,
    attributes Constant does not take)."""
    if attr.ref_attr_name or attr.value is None:
        return None
    if attr.name == "value":
        return attr.value if attr.type == AttrType.TENSOR else None
    kind = _PLAIN_ATTRS.get(attr.name)
    if kind is None or attr.type != kind[0]:
        return None
    _, dtype, rank = kind
    if dtype == DataType.STRING:
        items = [attr.value] if rank == 0 else list(attr.value)
        array = np.array(items, dtype=object).reshape(() if rank == 0 else (len(items),))
    else:
        array = np.array(attr.value if rank == 0 else list(attr.value), dtype=dtype.numpy)
    return Tensor(array, dtype=dtype)


def constant_tensor(node: Node) -> Tensor | None:
    """The tensor a ``Constant`` node produces, or None when it is not a plain constant
    (``sparse_value``, a reference to a function attribute, a malformed node)."""
    if not _is_constant(node) or len(node.attributes) != 1:
        return None
    (attr,) = node.attributes.values()
    return _attr_tensor(attr)


def _type_for(old: Value, tensor: Tensor) -> TensorType:
    """``old``'s type when it agrees with ``tensor`` (it may carry denotations), else the
    tensor's own."""
    t = old.type
    if isinstance(t, TensorType) and t.dtype == tensor.dtype and t.shape is not None \
            and t.shape.is_static() and tuple(t.shape.dims) == tensor.shape:
        return t
    return TensorType(tensor.dtype, tensor.shape)


def _graphs(graph: Graph) -> list[Graph]:
    """``graph`` and its subgraphs at any depth, outer graphs first."""
    found = [graph]
    for node in graph.subgraph_holders():
        for sub in node.subgraphs():
            found.extend(_graphs(sub))
    return found


@register_pass
class LiftConstants(Pass):
    """Replace ``Constant`` nodes by initializers; stats count ``lifted`` and ``skipped_*``
    constants."""

    name = "lift-constants"

    def call(self, model: Model) -> PassResult:
        stats: Counter[str] = Counter()
        for function in model.functions.values():
            stats["skipped_function"] += sum(
                1 for n in function.graph.all_nodes() if _is_constant(n))
        graphs = _graphs(model.graph)
        if model.ir_version < 4:
            stats["skipped_ir_version"] += sum(
                1 for g in graphs for n in g if _is_constant(n))
            return PassResult(model, False, +stats)
        self._names = {v.name for g in graphs for v in g.all_values()}
        self._names.update(v.name for f in model.functions.values() for g in _graphs(f.graph)
                           for v in g.all_values())
        self._counter = itertools.count()
        for graph in graphs:
            returned = subgraph_outputs(graph)
            for node in graph:
                if _is_constant(node):
                    stats[self._lift(graph, node, returned)] += 1
        stats = +stats
        return PassResult(model, bool(stats["lifted"]), stats)

    def _lift(self, graph: Graph, node: Node, returned: set[int]) -> str:
        """Lift ``node`` if it can; answer what happened (a stats key)."""
        tensor = constant_tensor(node)
        if tensor is None:
            return "skipped_sparse" if "sparse_value" in node.attributes else "skipped_other"
        old = node.outputs[0]
        if id(old) in returned:
            return "skipped_returned"
        name = old.name or self._fresh("const")
        if name in graph.initializers:
            return "skipped_name_taken"  # not SSA; the verifier names the clash
        tensor.name = name
        new = Value(name, _type_for(old, tensor), const_value=tensor,
                    doc_string=old.doc_string, metadata_props=old.metadata_props)
        new.meta.update(old.meta)
        old.name = ""
        graph.register_initializer(new)
        old.replace_all_uses_with(new, replace_graph_outputs=True)
        graph.remove(node)
        return "lifted"

    def _fresh(self, base: str) -> str:
        while True:
            name = f"{base}_{next(self._counter)}"
            if name not in self._names:
                self._names.add(name)
                return name
