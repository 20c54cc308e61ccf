"""kiln's graph IR: ONNX semantics, SSA with use-def chains, no protobuf inside."""

from kiln.ir._core import (
    Attr,
    AttrType,
    Function,
    Graph,
    Model,
    Node,
    Value,
    captured_values,
)
from kiln.ir._dtypes import DataType
from kiln.ir._nx import dominator_tree, to_networkx
from kiln.ir._tensor import ExternalLocation, SparseTensor, Tensor
from kiln.ir._text import parse_graph, parse_model, print_graph, print_model
from kiln.ir._types import (
    Dim,
    MapType,
    OpaqueType,
    OptionalType,
    SequenceType,
    Shape,
    SparseTensorType,
    TensorType,
    Type,
)
from kiln.ir._verify import verify

__all__ = [
    "Attr",
    "AttrType",
    "DataType",
    "Dim",
    "ExternalLocation",
    "Function",
    "Graph",
    "MapType",
    "Model",
    "Node",
    "OpaqueType",
    "OptionalType",
    "SequenceType",
    "Shape",
    "SparseTensor",
    "SparseTensorType",
    "Tensor",
    "TensorType",
    "Type",
    "Value",
    "captured_values",
    "dominator_tree",
    "parse_graph",
    "parse_model",
    "print_graph",
    "print_model",
    "to_networkx",
    "verify",
]
