"""Static facts about a model: op histogram, parameters, inputs and outputs, FLOPs estimate.

FLOPs are estimated from shapes that ONNX shape inference derives (non-strict, with
data propagation) on a copy of the model whose symbolic input dimensions are fixed:
to the sizes the caller gives, else 1 (which the result says). Model-local functions
are inlined first so calls are counted by their bodies. Per node:

=========================================  ===========================================
op                                         FLOPs
=========================================  ===========================================
Conv                                       2 x out elements x (C_in/group x kernel)
                                           + out elements with a bias
ConvTranspose                              2 x in elements x (C_out/group x kernel)
                                           + out elements with a bias
MatMul                                     2 x out elements x K
Gemm                                       2 x M x N x K (+ M x N with C)
LSTM, GRU, RNN                             2 x steps x rows x directions x
                                           gates*H x (I + H): the matrix products only
elementwise (Add, Relu, Sigmoid, Where...)  1 per out element
Sum, Max, Min, Mean                        (inputs - 1) per out element
BatchNormalization                         2 per element (scale and shift)
Layer/Instance/Group/RMS normalization     5 per element
Softmax, LogSoftmax                        3 per element
MaxPool, AveragePool, LpPool               out elements x kernel size
GlobalAveragePool, Reduce*, ArgMax, ...    1 per in element
data movement (Reshape, Transpose, ...)    0
=========================================  ===========================================

A multiply-accumulate counts as 2 FLOPs. Nodes of other ops, nodes with subgraphs, and
nodes whose shapes are unknown are not counted: the result lists them and marks the
total incomplete.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import onnx
import onnx.helper
import onnx.inliner
import onnx.shape_inference

from kiln.backends._base import one_line
from kiln.backends._specs import TensorSpec
from kiln.ir import Model
from kiln.ir.serde import serialize_model, tensor_to_proto

# Initializers up to this many elements keep their data for shape inference (shape
# operands, Resize scales, Slice starts); larger ones (weights) only their dims.
_SMALL_TENSOR = 4096

Shape = tuple[int, ...]


def _names(text: str) -> frozenset[str]:
    return frozenset(text.split())


@dataclasses.dataclass
class FlopsEstimate:
    """FLOPs of a model's main graph.

    Attributes:
        total: FLOPs of the nodes that could be counted.
        complete: True when every node was counted.
        by_op: FLOPs per op type (counted nodes only).
        uncounted: op type -> number of nodes that could not be counted.
        assumed_dims: symbolic input dimension -> the size used.
        notes: what the estimate assumed or could not do.
    """

    total: int = 0
    complete: bool = True
    by_op: dict[str, int] = dataclasses.field(default_factory=dict)
    uncounted: dict[str, int] = dataclasses.field(default_factory=dict)
    assumed_dims: dict[str, int] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class ModelStats:
    """What ``kiln inspect`` reports about a model (see :func:`inspect_model`)."""

    name: str
    producer: str
    ir_version: int
    opset_imports: dict[str, int]
    nodes: int
    subgraph_nodes: int
    functions: int
    op_histogram: dict[str, int]
    parameters: int
    parameter_bytes: int
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    flops: FlopsEstimate

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (``kiln inspect --json``)."""
        d = dataclasses.asdict(self)
        d["inputs"] = [s.to_dict() for s in self.inputs]
        d["outputs"] = [s.to_dict() for s in self.outputs]
        return d


def inspect_model(model: Model, dims: Mapping[str, int] | None = None) -> ModelStats:
    """Static facts about ``model``.

    Args:
        model: the model.
        dims: sizes for symbolic input dimensions in the FLOPs estimate (default 1).

    Returns:
        Node and op counts (the histogram covers subgraphs; ``nodes`` is the main graph),
        parameter count and bytes (the elements of all initializers, sparse ones by their
        stored values), input and output specs, and a FLOPs estimate.
    """
    graph = model.graph
    histogram = collections.Counter(n.qualified_op for n in graph.all_nodes())
    parameters = parameter_bytes = 0
    for value in graph.initializers.values():
        if value.const_value is not None:
            parameters += value.const_value.size
            parameter_bytes += value.const_value.nbytes
    for sparse in graph.sparse_initializers:
        parameters += sparse.values.size
        parameter_bytes += sparse.values.nbytes + sparse.indices.nbytes
    producer = " ".join(p for p in (model.producer_name, model.producer_version) if p)
    return ModelStats(
        name=graph.name,
        producer=producer,
        ir_version=model.ir_version,
        opset_imports=dict(model.opset_imports),
        nodes=len(graph),
        subgraph_nodes=sum(histogram.values()) - len(graph),
        functions=len(model.functions),
        op_histogram=dict(histogram.most_common()),
        parameters=parameters,
        parameter_bytes=parameter_bytes,
        inputs=[TensorSpec.from_value(v) for v in graph.inputs if not v.is_initializer()],
        outputs=[TensorSpec.from_value(v) for v in graph.outputs],
        flops=estimate_flops(model, dims),
    )


def estimate_flops(model: Model, dims: Mapping[str, int] | None = None) -> FlopsEstimate:
    """Estimate the FLOPs of one run of ``model`` (see the module docstring for the rules)."""
    est = FlopsEstimate()
    proto = _shape_proto(model)
    est.assumed_dims = _fix_input_dims(proto, dims or {})
    if est.assumed_dims:
        fixed = ", ".join(f"{k}={v}" for k, v in est.assumed_dims.items())
        est.notes.append(f"symbolic input dimensions counted as {fixed}")
    if proto.functions:
        try:
            proto = onnx.inliner.inline_local_functions(proto)
        except Exception as exc:
            est.notes.append(f"could not inline model-local functions: {one_line(exc)}")
    proto, shapes = _infer_shapes(proto, est.notes)
    for node in proto.graph.node:
        op = f"{node.domain}::{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type
        flops = node_flops(node, shapes)
        if flops is None:
            est.uncounted[op] = est.uncounted.get(op, 0) + 1
            continue
        est.by_op[op] = est.by_op.get(op, 0) + flops
        est.total += flops
    est.complete = not est.uncounted
    est.by_op = dict(sorted(est.by_op.items(), key=lambda kv: -kv[1]))
    return est


def _infer_shapes(
    proto: onnx.ModelProto, notes: list[str], rounds: int = 4
) -> tuple[onnx.ModelProto, dict[str, Shape]]:
    """Run shape inference, fold shape computations that it left symbolic, repeat.

    ONNX's data propagation stops at some ops (a Reshape of a Squeeze of a Shape, as
    exporters emit for a dynamic batch); evaluating such small constant subgraphs and
    inferring again recovers the static shapes.
    """
    shapes: dict[str, Shape] = {}
    for _ in range(rounds):
        try:
            proto = onnx.shape_inference.infer_shapes(proto, strict_mode=False, data_prop=True)
        except Exception as exc:
            notes.append(f"shape inference failed: {one_line(exc)}")
            return proto, _static_shapes(proto.graph)
        shapes = _static_shapes(proto.graph)
        if not _fold_shape_computations(proto, shapes):
            break
    return proto, shapes


_FOLDABLE = _names("""
    Abs Add Cast CastLike Ceil Concat Constant ConstantOfShape Div Equal Expand Flatten Floor
    Gather Greater Identity Less Max Min Mod Mul Neg Not Range ReduceProd Reshape Shape Size
    Slice Squeeze Sub Tile Transpose Unsqueeze Where
""")


def _fold_shape_computations(proto: onnx.ModelProto, shapes: Mapping[str, Shape]) -> bool:
    """Replace small computations on constants and static shapes by initializers.

    Returns:
        True when a node was folded.
    """
    from onnx.numpy_helper import from_array, to_array
    from onnx.reference import ReferenceEvaluator

    graph = proto.graph
    opsets = {op.domain: op.version for op in proto.opset_import}
    values = {t.name: to_array(t) for t in graph.initializer if _has_data(t)}
    outputs = {vi.name for vi in graph.output}
    folded = []
    for node in graph.node:
        if node.domain not in ("", "ai.onnx") or node.op_type not in _FOLDABLE:
            continue
        if any(name in outputs for name in node.output):
            continue
        feeds = _constant_feeds(node, values, shapes)
        if feeds is None or _result_too_large(node, feeds, shapes):
            continue
        try:
            results = ReferenceEvaluator(node, opsets=opsets).run(None, feeds)
        except Exception:
            continue
        if any(np.size(r) > _SMALL_TENSOR for r in results):
            continue
        for name, result in zip(node.output, results, strict=False):
            values[name] = np.asarray(result)
        folded.append(node)
    if not folded:
        return False
    keep = [n for n in graph.node if all(n is not f for f in folded)]
    del graph.node[:]
    graph.node.extend(keep)
    for node in folded:
        graph.initializer.extend(from_array(values[name], name) for name in node.output if name)
    del graph.value_info[:]
    return True


def _constant_feeds(
    node: onnx.NodeProto, values: Mapping[str, np.ndarray], shapes: Mapping[str, Shape]
) -> dict[str, np.ndarray] | None:
    """The node's inputs when all are known, else None. ``Shape`` and ``Size`` read only
    the input's shape, which a zero-stride array stands in for without allocating."""
    feeds = {}
    for name in node.input:
        if not name:
            continue
        if name in values:
            feeds[name] = values[name]
        elif node.op_type in ("Shape", "Size") and name in shapes:
            feeds[name] = np.broadcast_to(np.float32(0), shapes[name])
        else:
            return None
    return feeds


def _result_too_large(
    node: onnx.NodeProto, feeds: Mapping[str, np.ndarray], shapes: Mapping[str, Shape]
) -> bool:
    """Whether a node might produce more than ``_SMALL_TENSOR`` elements (checked before
    evaluating ops that can grow their inputs, so folding never allocates much)."""
    if all(name in shapes for name in node.output):
        return any(math.prod(shapes[name]) > _SMALL_TENSOR for name in node.output)
    args = [feeds[name] for name in node.input if name]
    try:
        if node.op_type == "ConstantOfShape":
            size = math.prod(int(d) for d in args[0])
        elif node.op_type == "Expand":
            size = math.prod(np.broadcast_shapes(args[0].shape, tuple(int(d) for d in args[1])))
        elif node.op_type == "Tile":
            size = math.prod(int(d) * int(r) for d, r in zip(args[0].shape, args[1], strict=True))
        elif node.op_type == "Range":
            start, limit, delta = (float(a) for a in args)
            size = math.ceil(abs((limit - start) / delta)) if delta else 0
        else:
            return False
    except (ValueError, TypeError, IndexError, OverflowError):
        return True
    return size > _SMALL_TENSOR


def _has_data(t: onnx.TensorProto) -> bool:
    return bool(t.raw_data) or any(
        len(getattr(t, f)) for f in ("float_data", "int32_data", "int64_data", "double_data",
                                      "uint64_data", "string_data")
    ) or math.prod(t.dims) == 0


def _shape_proto(model: Model) -> onnx.ModelProto:
    """The model as ONNX, with data only for small initializers (enough for shapes)."""
    proto = serialize_model(model, initializer_data=False)
    small = {
        name: v.const_value
        for name, v in model.graph.initializers.items()
        if v.const_value is not None and v.const_value.size <= _SMALL_TENSOR
    }
    for i, tp in enumerate(proto.graph.initializer):
        if tp.name in small:
            proto.graph.initializer[i].CopyFrom(tensor_to_proto(small[tp.name], tp.name))
    # Shapes recorded with the model keep their symbolic dims through inference; drop them
    # so that inference derives every shape from the fixed input dims.
    del proto.graph.value_info[:]
    for vi in proto.graph.output:
        if vi.type.HasField("tensor_type"):
            vi.type.tensor_type.ClearField("shape")
    return proto


def _fix_input_dims(proto: onnx.ModelProto, dims: Mapping[str, int]) -> dict[str, int]:
    """Give every non-static dimension of the graph inputs a size; return the ones set."""
    initializers = {t.name for t in proto.graph.initializer}
    assumed: dict[str, int] = {}
    for vi in proto.graph.input:
        if vi.name in initializers or not vi.type.HasField("tensor_type"):
            continue
        if not vi.type.tensor_type.HasField("shape"):
            continue
        for dim in vi.type.tensor_type.shape.dim:
            if dim.HasField("dim_value"):
                continue
            key = dim.dim_param or "?"
            size = int(dims.get(key, 1))
            assumed[key] = size
            dim.dim_value = size
    return assumed


def _static_shapes(graph: onnx.GraphProto) -> dict[str, Shape]:
    shapes: dict[str, Shape] = {}
    for t in graph.initializer:
        shapes[t.name] = tuple(t.dims)
    for vi in (*graph.input, *graph.value_info, *graph.output):
        tt = vi.type.tensor_type if vi.type.HasField("tensor_type") else None
        if tt is None or not tt.HasField("shape"):
            continue
        dims = tt.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            shapes[vi.name] = tuple(d.dim_value for d in dims)
    return shapes


# -- per-op formulas ------------------------------------------------------------------

_ELEMENTWISE = _names("""
    Abs Acos Acosh Add And Asin Asinh Atan Atanh BitShift BitwiseAnd BitwiseNot BitwiseOr
    BitwiseXor Ceil Celu Clip Cos Cosh Div Elu Equal Erf Exp Floor Gelu Greater
    GreaterOrEqual HardSigmoid HardSwish IsInf IsNaN LeakyRelu Less LessOrEqual Log Mish Mod
    Mul Neg Not Or Pow PRelu Reciprocal Relu Round Selu Shrink Sigmoid Sign Sin Sinh Softplus
    Softsign Sqrt Sub Swish Tan Tanh ThresholdedRelu Where Xor
""")
_VARIADIC = frozenset({"Sum", "Max", "Min", "Mean"})
_NORMALIZATION = frozenset(
    {"LayerNormalization", "InstanceNormalization", "GroupNormalization", "RMSNormalization",
     "LpNormalization", "MeanVarianceNormalization", "LRN"}
)
_SOFTMAX = frozenset({"Softmax", "LogSoftmax", "Hardmax"})
_WINDOW_POOL = frozenset({"MaxPool", "AveragePool", "LpPool"})
_PER_INPUT = _names("""
    GlobalAveragePool GlobalMaxPool GlobalLpPool ArgMax ArgMin CumSum ReduceL1 ReduceL2
    ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum
    ReduceSumSquare
""")
_DATA_MOVEMENT = _names("""
    Cast CastLike Concat Constant ConstantOfShape DepthToSpace Dropout Expand EyeLike Flatten
    Gather GatherElements GatherND Identity NonZero OneHot Pad Range Reshape ScatterElements
    ScatterND Shape Size Slice SpaceToDepth Split Squeeze Tile Transpose Trilu Unsqueeze
""")


def node_flops(node: onnx.NodeProto, shapes: Mapping[str, Shape]) -> int | None:
    """The FLOPs of one default-domain node, or None when not computable."""
    if node.domain not in ("", "ai.onnx"):
        return None
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
           for a in node.attribute):
        return None
    op = node.op_type
    if op in _DATA_MOVEMENT:
        return 0
    ins = [shapes.get(name) if name else None for name in node.input]
    outs = [shapes.get(name) if name else None for name in node.output]
    rule = _RULES.get(op)
    if rule is not None:
        return rule(node, ins, outs)
    y = outs[0] if outs else None
    if y is None:
        return None
    if op in _ELEMENTWISE:
        return _numel(y)
    if op in _VARIADIC:
        return _numel(y) * max(len(node.input) - 1, 1)
    if op == "BatchNormalization":
        return 2 * _numel(y)
    if op in _NORMALIZATION:
        return 5 * _numel(y)
    if op in _SOFTMAX:
        return 3 * _numel(y)
    if op in _WINDOW_POOL:
        kernel = _attrs(node).get("kernel_shape")
        return None if kernel is None else _numel(y) * math.prod(kernel)
    if op in _PER_INPUT:
        return None if ins[0] is None else _numel(ins[0])
    return None


def _conv(node: onnx.NodeProto, ins: Sequence[Shape | None], outs: Sequence[Shape | None]):
    w, y = ins[1], outs[0]
    if w is None or y is None:
        return None
    flops = 2 * _numel(y) * math.prod(w[1:])
    return flops + (_numel(y) if _has_input(node, 2) else 0)


def _conv_transpose(node, ins, outs):
    x, w, y = ins[0], ins[1], outs[0]
    if x is None or w is None or y is None:
        return None
    flops = 2 * _numel(x) * math.prod(w[1:])
    return flops + (_numel(y) if _has_input(node, 2) else 0)


def _matmul(node, ins, outs):
    a, y = ins[0], outs[0]
    if a is None or y is None or not a:
        return None
    return 2 * _numel(y) * a[-1]


def _gemm(node, ins, outs):
    a, y = ins[0], outs[0]
    if a is None or y is None or len(a) != 2:
        return None
    k = a[0] if _attrs(node).get("transA", 0) else a[1]
    return 2 * _numel(y) * k + (_numel(y) if _has_input(node, 2) else 0)


def _recurrent(node, ins, outs):
    # X [seq, batch, I] (either layout: seq x batch is the same), W [dirs, gates*H, I],
    # R [dirs, gates*H, H]: per step, row and direction, x @ W^T and h @ R^T.
    x, w, r = ins[0], ins[1], ins[2]
    if x is None or w is None or r is None or len(x) != 3:
        return None
    dirs, gates_h, i = w
    return 2 * dirs * x[0] * x[1] * gates_h * (i + r[2])


_RULES: dict[str, Callable[[onnx.NodeProto, list, list], int | None]] = {
    "Conv": _conv,
    "ConvTranspose": _conv_transpose,
    "MatMul": _matmul,
    "Gemm": _gemm,
    "LSTM": _recurrent,
    "GRU": _recurrent,
    "RNN": _recurrent,
}


def _numel(shape: Shape) -> int:
    return math.prod(shape)


def _has_input(node: onnx.NodeProto, i: int) -> bool:
    return len(node.input) > i and bool(node.input[i])


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
