"""``fold-constants``: evaluate nodes whose inputs are all constants.

A node of the default ONNX domain whose inputs are all initializers or Constant outputs is
evaluated once and its outputs become initializers: with numpy for the common ops (shape
arithmetic, Transpose, Expand, ...; see ``_evaluators``), else with ``onnx.reference`` (one
evaluator per distinct node signature, reused). ``Shape`` and
``Size`` of a value with a static shape fold too, so the Shape/Gather/Concat/Unsqueeze
chains that compute Reshape, Expand and Slice arguments collapse in one pass (nodes are
visited in order). Random ops, nodes holding subgraphs and ops of other domains are left
alone, as are results of more than ``size_limit`` elements (counted as ``skipped_size``)
and nodes the reference implementation fails on (``skipped_error``).
Inputs left unread stay for ``eliminate-dead-code``.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import Counter

import numpy as np
import onnx
from onnx import helper
from onnx.reference import ReferenceEvaluator

from kiln.ir import DataType, Graph, Model, Node, Tensor, TensorType, Value
from kiln.ir.serde import node_to_proto
from kiln.passes._base import Pass, PassResult, register_pass
from kiln.passes.cleanup._evaluators import ResultTooLarge, evaluate
from kiln.passes.cleanup._util import (
    all_graphs,
    const_array,
    is_random,
    replace_value,
    static_shape,
)


def _shape_of_static(node: Node) -> list[np.ndarray] | None:
    """``Shape``/``Size`` of a value whose shape is static."""
    shape = static_shape(node.inputs[0]) if node.inputs else None
    if shape is None:
        return None
    if node.op_type == "Size":
        return [np.array(int(np.prod(shape)), dtype=np.int64)]
    start, end = node.attr("start", 0), node.attr("end")
    return [np.array(shape[start:end], dtype=np.int64)]


def _cast_like_known_type(node: Node) -> list[np.ndarray] | None:
    """``CastLike(constant, x)`` when only ``x``'s (float or int) dtype matters."""
    data = const_array(node.inputs[0])
    target = node.inputs[1].dtype if len(node.inputs) > 1 else None
    if data is None or target is None or data.dtype.kind not in "fiu" \
            or np.dtype(target.numpy).kind not in "fiu":
        return None
    return [data.astype(target.numpy)]


class _Reference:
    """Runs nodes with ``onnx.reference``, one evaluator per distinct node signature (op,
    attributes, input dtypes and shapes), so folding many equal nodes builds it once."""

    def __init__(self, opsets: dict[str, int]) -> None:
        self._opsets = [helper.make_opsetid(d, v) for d, v in opsets.items()]
        self._evaluators: dict[tuple, ReferenceEvaluator] = {}

    def __call__(self, node: Node, inputs: list[np.ndarray | None]) -> list:
        proto = onnx.NodeProto()
        node_to_proto(node, proto)
        proto.ClearField("name")
        proto.ClearField("doc_string")
        names = [f"i{k}" if v is not None else "" for k, v in enumerate(inputs)]
        del proto.input[:], proto.output[:]
        proto.input.extend(names)
        proto.output.extend(f"o{k}" for k in range(len(node.outputs)))
        signature = tuple(None if a is None else (a.dtype.str, a.shape) for a in inputs)
        key = (proto.SerializeToString(deterministic=True), signature)
        evaluator = self._evaluators.get(key)
        if evaluator is None:
            evaluator = self._evaluators[key] = self._build(proto, names, inputs)
        feeds = {n: a for n, a in zip(names, inputs, strict=True) if a is not None}
        return list(evaluator.run(None, feeds))

    def _build(self, proto: onnx.NodeProto, names: list[str],
               inputs: list[np.ndarray | None]) -> ReferenceEvaluator:
        graph = helper.make_graph(
            [proto], "fold",
            [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
             for n, a in zip(names, inputs, strict=True) if a is not None],
            [helper.make_empty_tensor_value_info(o) for o in proto.output],
        )
        return ReferenceEvaluator(helper.make_model(graph, opset_imports=self._opsets))


def _foldable(node: Node) -> bool:
    # An Identity that names a graph output is what folding such an output leaves behind.
    names_output = node.op_type == "Identity" and node.outputs[0].is_graph_output()
    return (node.domain == "" and node.op_type != "Constant" and not names_output
            and not is_random(node) and not any(True for _ in node.subgraphs()))


def _too_big(node: Node, limit: int) -> bool:
    """True when an output's static shape already says it exceeds ``limit`` elements."""
    for out in node.outputs:
        numel = out.shape.numel() if out.shape is not None else None
        if numel is not None and numel > limit:
            return True
    return False


@register_pass
class FoldConstants(Pass):
    """Replace constant subexpressions by initializers."""

    name = "fold-constants"

    @dataclasses.dataclass(frozen=True)
    class Options:
        """Options of fold-constants.

        Attributes:
            size_limit: largest number of elements a folded output may have.
        """

        size_limit: int = 1 << 20

    def call(self, model: Model) -> PassResult:
        self._model = model
        self._names: set[str] | None = None  # every value name, gathered when first needed
        self._counter = itertools.count()
        opsets = {"": model.opset, **{d: v for d, v in model.opset_imports.items() if d}}
        self._reference = _Reference(opsets)
        stats: Counter[str] = Counter()
        for graph in all_graphs(model):
            for node in graph:
                if _foldable(node):
                    stats[self._fold(graph, node)] += 1
        del stats["none"]
        return PassResult(model, bool(stats["folded"]), stats)

    def _fold(self, graph: Graph, node: Node) -> str:
        """Fold ``node`` if it can; answer what happened (a stats key)."""
        results = _shape_of_static(node) if node.op_type in ("Shape", "Size") else None
        if results is None and node.op_type == "CastLike" and node.domain == "":
            results = _cast_like_known_type(node)
        if results is None:
            inputs = [None if v is None else const_array(v) for v in node.inputs]
            if any(a is None for v, a in zip(node.inputs, inputs, strict=True) if v is not None):
                return "none"
            if _too_big(node, self.options.size_limit):
                return "skipped_size"
            try:
                results = evaluate(node, inputs, self.options.size_limit)
            except ResultTooLarge:
                return "skipped_size"
            if results is None:
                try:
                    results = self._reference(node, inputs)
                except Exception:  # noqa: BLE001  (the reference does not run every node)
                    return "skipped_error"  # left for the runtime, which reports it
        if any(not isinstance(r, np.ndarray) for r in results):
            return "none"  # sequences, optionals
        if any(r.size > self.options.size_limit for r in results):
            return "skipped_size"
        for out, array in zip(node.outputs, results, strict=True):
            replace_value(out, self._initializer(graph, out, array))
        graph.remove(node)
        return "folded"

    def _initializer(self, graph: Graph, out: Value, array: np.ndarray) -> Value:
        dtype = out.dtype if out.dtype is not None else DataType.from_numpy(array.dtype)
        tensor = Tensor(np.asarray(array, dtype=dtype.numpy), dtype=dtype)
        name = out.name
        if not name or out.is_graph_output():
            name = self._fresh(out.name or "folded")
        else:
            out.name = ""
        tensor.name = name
        value = Value(name, TensorType(dtype, array.shape), const_value=tensor)
        return graph.register_initializer(value)

    def _fresh(self, base: str) -> str:
        if self._names is None:
            self._names = {v.name for g in all_graphs(self._model) for v in g.all_values()}
        while True:
            name = f"{base}_{next(self._counter)}"
            if name not in self._names:
                self._names.add(name)
                return name
