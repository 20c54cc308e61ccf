"""``infer-shapes``: fill in value types with ONNX shape inference.

The model is handed to ``onnx.shape_inference.infer_shapes`` (with data propagation) and
the types it finds are copied back onto kiln values by name, graph by graph (subgraphs
included). Only unknown types are filled and unknown dimensions refined; a known dtype,
rank or static dimension is never changed. An inferred type that contradicts a known one
is a KilnError naming the value. Function bodies are not visited (ONNX does not report
types there).

What ONNX gets is built for inference alone: nodes, typed graph inputs, and initializers
with their data only up to ``_DATA_LIMIT`` elements (shape arguments, scales, axes), so
large weights are neither copied nor parsed: they go in as typed inputs. No value_info and
no output types are sent, so a wrong annotation shows up as a contradiction.

The first run of a pass instance on a model infers the whole model. Later runs on the
same model (the fixed-point iterations of a pipeline) only look at values that are still
*open* (no type, unknown rank or an unknown dim; nothing else can change): when there are
none, ONNX is not called at all; otherwise only the nodes computing open values are sent,
their other inputs as typed inputs (small constants with their data).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import onnx

from kiln.errors import KilnError
from kiln.ir import (
    AttrType,
    Graph,
    Model,
    Node,
    Shape,
    Tensor,
    TensorType,
    Type,
    Value,
    captured_values,
)
from kiln.ir.serde import (
    function_to_proto,
    node_to_proto,
    tensor_to_proto,
    type_from_proto,
    type_to_proto,
)
from kiln.passes._base import Pass, PassResult, register_pass
from kiln.passes.cleanup._util import const_array

# Initializers and constants up to this many elements go to ONNX with their data.
_DATA_LIMIT = 1024
_GRAPH_KINDS = (AttrType.GRAPH, AttrType.GRAPHS)


def _merge_shapes(known: Shape | None, inferred: Shape | None, name: str) -> Shape | None:
    if known is None or inferred is None:
        return known if inferred is None else inferred
    if known.rank != inferred.rank:
        raise KilnError(f"infer-shapes: value {name!r} has shape {known} but ONNX infers "
                        f"{inferred}")
    dims = []
    for k, i in zip(known.dims, inferred.dims, strict=True):
        if isinstance(k, int) and isinstance(i, int) and k != i:
            raise KilnError(f"infer-shapes: value {name!r} has shape {known} but ONNX infers "
                            f"{inferred}")
        generated = isinstance(i, str) and i.startswith("unk__")  # ONNX's made-up names
        dims.append(i if k is None and not generated else k)
    return Shape(dims, known.denotations)


def _merge(known: Type | None, inferred: Type | None, name: str) -> Type | None:
    """The type of a value after inference: ``known`` refined by ``inferred``."""
    if inferred is None:
        return known
    if known is None:
        return inferred
    if not (isinstance(known, TensorType) and isinstance(inferred, TensorType)):
        return known
    if known.dtype != inferred.dtype:
        raise KilnError(f"infer-shapes: value {name!r} has type {known.dtype.short_name} but "
                        f"ONNX infers {inferred.dtype.short_name}")
    shape = _merge_shapes(known.shape, inferred.shape, name)
    return TensorType(known.dtype, shape, known.denotation)


def _is_open(value: Value) -> bool:
    """True when inference could still add to the value's type: it has none, or a tensor
    type of unknown rank or with an unknown dim."""
    t = value.type
    if t is None:
        return True
    if not isinstance(t, TensorType):
        return False
    return t.shape is None or None in t.shape.dims


# ------------------------------------------------------------------------ what ONNX gets
def _value_info(value: Value, vi: onnx.ValueInfoProto) -> None:
    vi.name = value.name
    if value.type is not None:
        type_to_proto(value.type, vi.type)


def _add_source(gp: onnx.GraphProto, value: Value, graph_inputs: set[int]) -> None:
    """A value the sent nodes read but do not compute: an initializer with its data when
    it is a small constant (an initializer or a Constant output), else a typed input."""
    tensor = value.const_value if value.producer() is None else None
    if tensor is not None and id(value) not in graph_inputs:
        if tensor.size <= _DATA_LIMIT:  # checked first: a large one is not even loaded
            gp.initializer.append(tensor_to_proto(tensor, value.name))
            return
    elif value.producer() is not None:
        data = const_array(value)
        if data is not None and data.size <= _DATA_LIMIT:
            gp.initializer.append(tensor_to_proto(Tensor(data), value.name))
            return
    _value_info(value, gp.input.add())


def _inference_proto(model: Model, nodes: list[Node] | None) -> onnx.ModelProto:
    """A model of the main graph, or of ``nodes`` of it (in order), for ONNX inference."""
    mp = onnx.ModelProto()
    mp.ir_version = model.ir_version
    for domain, version in model.opset_imports.items():
        op = mp.opset_import.add()
        op.domain, op.version = domain, version
    mp.functions.extend(function_to_proto(f) for f in model.functions.values())
    graph = model.graph
    gp = mp.graph
    gp.name = graph.name or "main"
    graph_inputs = {id(v) for v in graph.inputs}
    if nodes is None:
        nodes = list(graph)
        computed = None
        sources = [*graph.inputs, *(v for v in graph.initializers.values()
                                    if id(v) not in graph_inputs)]
    else:
        computed = {id(v) for n in nodes for v in n.outputs}
        read = {id(v): v for n in nodes for v in _read_values(n) if id(v) not in computed}
        sources = [v for v in read.values() if v.name]
    for v in sources:
        _add_source(gp, v, graph_inputs)
    for node in nodes:
        node_to_proto(node, gp.node.add())
    for v in graph.outputs:
        if v.name and (computed is None or id(v) in computed):
            gp.output.add().name = v.name  # no type: ONNX infers it
    return mp


def _read_values(node: Node) -> Iterable[Value]:
    """The values ``node`` reads: its inputs, and the outer values its subgraphs read."""
    yield from (v for v in node.inputs if v is not None)
    if node.attributes and any(a.type in _GRAPH_KINDS for a in node.attributes.values()):
        for sub in node.subgraphs():
            yield from captured_values(sub)


# ------------------------------------------------------------------- what ONNX answers
class _Types:
    """Types read from inferred ValueInfoProtos, each distinct TypeProto parsed once."""

    def __init__(self) -> None:
        self._parsed: dict[bytes, Type | None] = {}

    def of_graph(self, gp: onnx.GraphProto) -> dict[str, Type]:
        types = {}
        for vi in [*gp.input, *gp.value_info, *gp.output]:
            key = vi.type.SerializeToString()
            if key not in self._parsed:
                self._parsed[key] = self._parse(vi.type)
            t = self._parsed[key]
            if t is not None:
                types[vi.name] = t
        return types

    @staticmethod
    def _parse(tp: onnx.TypeProto) -> Type | None:
        if tp.WhichOneof("value") == "tensor_type" and tp.tensor_type.elem_type == 0:
            return None  # dtype unknown to ONNX too
        try:
            return type_from_proto(tp)
        except ValueError:  # ONNX inferred an impossible type (a negative dim): ignore it
            return None


def _update(value: Value, types: dict[str, Type], stats: Counter[str]) -> None:
    inferred = types.get(value.name) if value.name else None
    if inferred is None:
        return
    new = _merge(value.type, inferred, value.name)
    if new != value.type:
        stats["typed" if value.type is None else "refined"] += 1
        value.type = new


def _apply_subgraphs(node: Node, np_: onnx.NodeProto, parsed: _Types,
                     stats: Counter[str]) -> None:
    if not node.attributes or all(a.type not in _GRAPH_KINDS
                                  for a in node.attributes.values()):
        return
    for ap in np_.attribute:
        attr = node.attributes[ap.name]
        if attr.type == AttrType.GRAPH:
            _apply(attr.value, ap.g, parsed, stats)
        elif attr.type == AttrType.GRAPHS:
            for sub, sp in zip(attr.value, ap.graphs, strict=True):
                _apply(sub, sp, parsed, stats)


def _apply(graph: Graph, gp: onnx.GraphProto, parsed: _Types, stats: Counter[str]) -> None:
    """Copy the types of ``gp`` (the inferred proto of all of ``graph``) onto its values."""
    types = parsed.of_graph(gp)
    for value in list(graph.all_values()):
        _update(value, types, stats)
    for node, np_ in zip(graph, gp.node, strict=True):
        _apply_subgraphs(node, np_, parsed, stats)


def _apply_to_nodes(nodes: list[Node], gp: onnx.GraphProto, parsed: _Types,
                    stats: Counter[str]) -> None:
    """Copy the types of ``gp`` (the inferred proto of ``nodes``) onto their outputs."""
    types = parsed.of_graph(gp)
    for node, np_ in zip(nodes, gp.node, strict=True):
        for value in node.outputs:
            _update(value, types, stats)
        _apply_subgraphs(node, np_, parsed, stats)


def _has_open_values(node: Node) -> bool:
    """True when an output of ``node``, or a value inside its subgraphs, is open."""
    if any(_is_open(v) for v in node.outputs):
        return True
    if not node.attributes or all(a.type not in _GRAPH_KINDS for a in node.attributes.values()):
        return False
    return any(_is_open(v) for sub in node.subgraphs() for n in sub.all_nodes()
               for v in n.outputs)


def _infer(model: Model, nodes: list[Node] | None = None) -> onnx.GraphProto:
    """The inferred GraphProto of the main graph, or of ``nodes`` of it."""
    proto = _inference_proto(model, nodes)
    return onnx.shape_inference.infer_shapes(proto, data_prop=True).graph


@register_pass
class InferShapes(Pass):
    """Fill unknown types and dims from ONNX shape inference; stats count changed values."""

    name = "infer-shapes"

    def __init__(self, options: object = None, **kwargs: object) -> None:
        super().__init__(options, **kwargs)
        self._inferred: Model | None = None  # the model this instance inferred last

    def call(self, model: Model) -> PassResult:
        stats: Counter[str] = Counter()
        parsed = _Types()
        if model is not self._inferred:
            _apply(model.graph, _infer(model), parsed, stats)
            self._inferred = model
        else:
            nodes = [n for n in model.graph if _has_open_values(n)]
            if nodes:
                _apply_to_nodes(nodes, _infer(model, nodes), parsed, stats)
        return PassResult(model, bool(stats), stats)
