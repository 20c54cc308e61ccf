"""``infer-shapes``: fill in value types with ONNX shape inference.

The model is serialized, run through ``onnx.shape_inference.infer_shapes`` and the types it
finds are copied back onto kiln values by name, graph by graph (subgraphs included). Only
unknown types are filled and unknown dimensions refined; a known dtype, rank or static
dimension is never changed. An inferred type that contradicts a known one is a KilnError
naming the value. Function bodies are not visited (ONNX does not report types there).
"""

from __future__ import annotations

from collections import Counter

import onnx

from kiln.errors import KilnError
from kiln.frontends.onnx import to_proto
from kiln.ir import AttrType, Graph, Model, Shape, TensorType, Type, Value
from kiln.ir.serde import type_from_proto
from kiln.passes._base import Pass, PassResult, register_pass


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


def _inferred_types(gp: onnx.GraphProto) -> dict[str, Type]:
    types = {}
    for vi in [*gp.input, *gp.value_info, *gp.output]:
        tp = vi.type
        if tp.WhichOneof("value") == "tensor_type" and tp.tensor_type.elem_type == 0:
            continue  # dtype unknown to ONNX too
        try:
            t = type_from_proto(tp)
        except ValueError:  # ONNX inferred an impossible type (a negative dim): ignore it
            continue
        if t is not None:
            types[vi.name] = t
    return types


def _apply(graph: Graph, gp: onnx.GraphProto, stats: Counter[str]) -> None:
    types = _inferred_types(gp)
    values: list[Value] = list(graph.all_values())
    for value in values:
        inferred = types.get(value.name) if value.name else None
        new = _merge(value.type, inferred, value.name)
        if new != value.type:
            stats["typed" if value.type is None else "refined"] += 1
            value.type = new
    for node, np_ in zip(graph, gp.node, strict=True):
        for ap in np_.attribute:
            attr = node.attributes[ap.name]
            if attr.type == AttrType.GRAPH:
                _apply(attr.value, ap.g, stats)
            elif attr.type == AttrType.GRAPHS:
                for sub, sp in zip(attr.value, ap.graphs, strict=True):
                    _apply(sub, sp, stats)


@register_pass
class InferShapes(Pass):
    """Fill unknown types and dims from ONNX shape inference; stats count changed values."""

    name = "infer-shapes"

    def call(self, model: Model) -> PassResult:
        proto = to_proto(model)
        # Infer from the inputs alone, so a wrong annotation shows up as a contradiction.
        del proto.graph.value_info[:]
        for output in proto.graph.output:
            output.ClearField("type")
        proto = onnx.shape_inference.infer_shapes(proto, data_prop=True)
        stats: Counter[str] = Counter()
        _apply(model.graph, proto.graph, stats)
        return PassResult(model, bool(stats), stats)
