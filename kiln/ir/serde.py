"""Conversion between kiln's IR and ONNX protobuf messages.

This module is the only place in ``kiln.ir`` that touches protobuf. It converts every
field ONNX defines; fields kiln does not model (training_info, configuration, node
device_configurations) are kept as serialized bytes so a round trip loses nothing.
Structural problems (dangling inputs, duplicate value names, cycles, unknown opsets,
data that does not fit its shape) raise ``ModelLoadError`` naming the node or tensor;
nodes that are merely out of order are sorted.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping

import numpy as np
import onnx
import onnx.defs
from onnx import numpy_helper

try:
    from google.protobuf.unknown_fields import UnknownFieldSet as _unknown_fields
except ImportError:  # an old protobuf: unknown fields go unnoticed
    _unknown_fields = None

from kiln.errors import ModelLoadError
from kiln.ir._core import Attr, AttrType, Function, Graph, Model, Node, Value, _read_values
from kiln.ir._dtypes import DataType
from kiln.ir._tensor import ExternalLocation, SparseTensor, Tensor
from kiln.ir._types import (
    MapType,
    OpaqueType,
    OptionalType,
    SequenceType,
    Shape,
    SparseTensorType,
    TensorType,
    Type,
)

# Resolves an external-data TensorProto to a loader of its array; given by the frontend,
# which owns the file system and its safety checks.
ExternalResolver = Callable[[onnx.TensorProto, str], Callable[[], np.ndarray]]
# Raw payloads of main-graph initializers that the frontend cut out of the protobuf before
# parsing it (memory-mapped), keyed by the initializer's index in GraphProto.initializer.
RawData = Mapping[int, memoryview | bytes]


# ----------------------------------------------------------------------------- helpers
def _props(entries) -> dict[str, str]:
    out: dict[str, str] = {}
    for e in entries:
        if e.key in out:
            warnings.warn(f"duplicate metadata key {e.key!r}: keeping the last value", stacklevel=3)
        out[e.key] = e.value
    return out


def _set_props(field, props: dict[str, str]) -> None:
    for k, v in props.items():
        entry = field.add()
        entry.key = k
        entry.value = v


def _text(b: bytes) -> str | bytes:
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return b


def _bytes(s: str | bytes) -> bytes:
    return s if isinstance(s, bytes) else s.encode("utf-8")


# ----------------------------------------------------------------------------- types
def type_from_proto(tp: onnx.TypeProto) -> Type | None:
    """The kiln Type of an ONNX TypeProto (None when it is empty)."""
    kind = tp.WhichOneof("value")
    den = tp.denotation
    if kind in ("tensor_type", "sparse_tensor_type"):
        t = getattr(tp, kind)
        shape = None
        if t.HasField("shape"):
            dims, dens = [], []
            for d in t.shape.dim:
                which = d.WhichOneof("value")
                dims.append(d.dim_value if which == "dim_value" else
                            d.dim_param if which == "dim_param" else None)
                dens.append(d.denotation)
            shape = Shape(dims, dens)
        cls = TensorType if kind == "tensor_type" else SparseTensorType
        return cls(DataType(t.elem_type), shape, den)
    if kind == "sequence_type":
        elem = tp.sequence_type.elem_type
        return SequenceType(type_from_proto(elem) if elem.ByteSize() else None, den)
    if kind == "optional_type":
        elem = tp.optional_type.elem_type
        return OptionalType(type_from_proto(elem) if elem.ByteSize() else None, den)
    if kind == "map_type":
        val = tp.map_type.value_type
        return MapType(DataType(tp.map_type.key_type), type_from_proto(val) if val.ByteSize() else None, den)
    if kind == "opaque_type":
        return OpaqueType(tp.opaque_type.domain, tp.opaque_type.name, den)
    return None


def type_to_proto(t: Type | None, tp: onnx.TypeProto | None = None) -> onnx.TypeProto:
    """Fill (or create) an ONNX TypeProto from a kiln Type."""
    tp = onnx.TypeProto() if tp is None else tp
    if t is None:
        return tp
    if t.denotation:
        tp.denotation = t.denotation
    if isinstance(t, TensorType | SparseTensorType):
        msg = tp.tensor_type if isinstance(t, TensorType) else tp.sparse_tensor_type
        msg.elem_type = int(t.dtype)
        if t.shape is not None:
            _shape_to_proto(t.shape, msg.shape)
    elif isinstance(t, SequenceType):
        tp.sequence_type.SetInParent()
        if t.elem is not None:
            type_to_proto(t.elem, tp.sequence_type.elem_type)
    elif isinstance(t, OptionalType):
        tp.optional_type.SetInParent()
        if t.elem is not None:
            type_to_proto(t.elem, tp.optional_type.elem_type)
    elif isinstance(t, MapType):
        tp.map_type.key_type = int(t.key)
        if t.value is not None:
            type_to_proto(t.value, tp.map_type.value_type)
    elif isinstance(t, OpaqueType):
        tp.opaque_type.SetInParent()
        tp.opaque_type.domain = t.domain
        tp.opaque_type.name = t.name
    return tp


def _shape_to_proto(shape: Shape, sp: onnx.TensorShapeProto) -> None:
    sp.SetInParent()
    for i, d in enumerate(shape.dims):
        dim = sp.dim.add()
        if isinstance(d, int):
            dim.dim_value = d
        elif isinstance(d, str):
            dim.dim_param = d
        if shape.denotations is not None and shape.denotations[i]:
            dim.denotation = shape.denotations[i]


# ----------------------------------------------------------------------------- tensors
def _check_tensor_size(tp: onnx.TensorProto, what: str) -> tuple[DataType, tuple[int, ...]]:
    try:
        dtype = DataType(tp.data_type)
    except ValueError:
        raise ModelLoadError(f"{what}: unknown data type {tp.data_type}") from None
    if dtype == DataType.UNDEFINED:
        raise ModelLoadError(f"{what}: data type is UNDEFINED")
    dims = tuple(tp.dims)
    if dims and min(dims) < 0:
        raise ModelLoadError(f"{what}: negative dimension in {list(dims)}")
    return dtype, dims


def _expected_nbytes(dtype: DataType, dims: tuple[int, ...]) -> int:
    n = 1
    for d in dims:
        n *= d
    return (n * dtype.bitwidth + 7) // 8


def unpack_raw(raw: bytes | memoryview | np.ndarray, dtype: DataType, dims: tuple[int, ...]) -> np.ndarray:
    """Interpret ONNX raw data (little endian, sub-byte types packed) as an array.

    For types of 8 bits and more the result is a zero-copy view of ``raw``.
    """
    count = 1
    for d in dims:
        count *= d
    bits = dtype.bitwidth
    if bits >= 8:
        arr = np.frombuffer(raw, dtype=dtype.numpy.newbyteorder("<"), count=count)
        if not arr.dtype.isnative:
            arr = arr.astype(dtype.numpy)
        return arr.reshape(dims)
    packed = np.frombuffer(raw, dtype=np.uint8)
    mask = (1 << bits) - 1
    if 8 % bits:
        # A little-endian bit stream (6-bit floats): element i holds bits [i*bits, (i+1)*bits).
        stream = np.unpackbits(packed, bitorder="little")[: count * bits].reshape(count, bits)
        weights = (1 << np.arange(bits, dtype=np.uint8)).astype(np.uint8)
        unpacked = (stream * weights).sum(axis=1, dtype=np.uint8)
        return unpacked.view(dtype.numpy).reshape(dims)
    per_byte = 8 // bits
    shifts = np.arange(per_byte, dtype=np.uint8) * bits
    unpacked = ((packed[:, None] >> shifts[None, :]) & mask).reshape(-1)[:count].astype(np.uint8)
    return unpacked.view(dtype.numpy).reshape(dims)


def pack_raw(array: np.ndarray, dtype: DataType) -> bytes:
    """ONNX raw data for an array (sub-byte types packed, little endian)."""
    bits = dtype.bitwidth
    if bits >= 8:
        a = np.ascontiguousarray(array, dtype=dtype.numpy)
        if not a.dtype.isnative or a.dtype.byteorder == ">":
            a = a.astype(a.dtype.newbyteorder("<"))
        return a.tobytes()
    flat = np.ascontiguousarray(array, dtype=dtype.numpy).reshape(-1).view(np.uint8)
    flat = flat & ((1 << bits) - 1)
    if 8 % bits:
        stream = np.unpackbits(flat[:, None], axis=1, bitorder="little")[:, :bits]
        return np.packbits(stream.reshape(-1), bitorder="little").tobytes()
    per_byte = 8 // bits
    pad = (-flat.size) % per_byte
    if pad:
        flat = np.concatenate([flat, np.zeros(pad, np.uint8)])
    groups = flat.reshape(-1, per_byte).astype(np.uint8)
    shifts = np.arange(per_byte, dtype=np.uint8) * bits
    return np.bitwise_or.reduce(groups << shifts[None, :], axis=1).astype(np.uint8).tobytes()


# Where ONNX keeps typed (non-raw) data for each element type, and how many stored entries
# one element takes (complex: two) or how many elements one entry holds (int4: two).
_TYPED_FIELDS: dict[DataType, tuple[str, int, int]] = {
    DataType.FLOAT: ("float_data", 1, 1),
    DataType.COMPLEX64: ("float_data", 2, 1),
    DataType.DOUBLE: ("double_data", 1, 1),
    DataType.COMPLEX128: ("double_data", 2, 1),
    DataType.INT64: ("int64_data", 1, 1),
    DataType.UINT32: ("uint64_data", 1, 1),
    DataType.UINT64: ("uint64_data", 1, 1),
    DataType.STRING: ("string_data", 1, 1),
    DataType.UINT4: ("int32_data", 1, 2),
    DataType.INT4: ("int32_data", 1, 2),
    DataType.FLOAT4E2M1: ("int32_data", 1, 2),
    DataType.UINT2: ("int32_data", 1, 4),
    DataType.INT2: ("int32_data", 1, 4),
}


def _check_typed_count(tp: onnx.TensorProto, dtype: DataType, dims: tuple[int, ...],
                       what: str) -> None:
    """Refuse typed data whose entry count does not fit the shape, before numpy sees it."""
    field, entries_per_elem, elems_per_entry = _TYPED_FIELDS.get(dtype, ("int32_data", 1, 1))
    count = 1
    for d in dims:
        count *= d
    expected = -(-count * entries_per_elem // elems_per_entry)
    have = len(getattr(tp, field))
    if have != expected:
        raise ModelLoadError(
            f"{what}: {field} has {have} entries, shape {list(dims)} of {dtype.name} needs "
            f"{expected}"
        )


def _external_location(tp: onnx.TensorProto) -> ExternalLocation:
    info = {e.key: e.value for e in tp.external_data}
    offset, length = info.get("offset") or "0", info.get("length") or "0"
    return ExternalLocation(
        info.get("location", ""),
        int(offset) if offset.isdigit() and len(offset) < 20 else -1,
        int(length) if length.isdigit() and len(length) < 20 else -1,
        info.get("checksum", ""),
    )


def tensor_from_proto(
    tp: onnx.TensorProto,
    *,
    external: ExternalResolver | None = None,
    what: str = "",
    raw: memoryview | bytes | None = None,
) -> Tensor:
    """A kiln Tensor from an ONNX TensorProto; external data stays lazy.

    Args:
        tp: the tensor message.
        external: turns external data into a loader (the frontend checks the file).
        what: how error messages name the tensor.
        raw: the tensor's raw data when it was cut out of ``tp`` before parsing (the
            frontend memory-maps big payloads); the array is then a zero-copy view of it.

    Raises:
        ModelLoadError: the data does not fit the declared shape and type (checked before
            anything is allocated).
    """
    what = what or f"tensor {tp.name!r}"
    dtype, dims = _check_tensor_size(tp, what)
    props = _props(tp.metadata_props)
    if tp.HasField("segment"):
        warnings.warn(f"{what}: the deprecated 'segment' field is dropped", stacklevel=2)
    if tp.data_location == onnx.TensorProto.EXTERNAL:
        if external is None:
            raise ModelLoadError(f"{what}: external data, but the model was not loaded from a file")
        loader = external(tp, what)
        return Tensor(dtype=dtype, shape=dims, loader=loader, name=tp.name,
                      doc_string=tp.doc_string, metadata_props=props,
                      external=_external_location(tp))
    if dtype == DataType.STRING:
        _check_typed_count(tp, dtype, dims, what)
        arr = np.array(list(tp.string_data), dtype=object)
        return Tensor(arr.reshape(dims), dtype=dtype, name=tp.name, doc_string=tp.doc_string,
                      metadata_props=props)
    if raw is None and tp.HasField("raw_data"):
        raw = tp.raw_data
    if raw is not None:
        expected = _expected_nbytes(dtype, dims)
        if len(raw) != expected:
            raise ModelLoadError(
                f"{what}: raw data has {len(raw)} bytes, shape {list(dims)} of "
                f"{dtype.name} needs {expected}"
            )
        arr = unpack_raw(raw, dtype, dims)
    else:
        _check_typed_count(tp, dtype, dims, what)
        try:
            arr = numpy_helper.to_array(tp)
        except Exception as exc:  # onnx raises ValueError/TypeError on malformed data
            raise ModelLoadError(f"{what}: cannot read its data: {exc}") from None
        if arr.dtype != dtype.numpy:
            arr = arr.astype(dtype.numpy)
    return Tensor(arr, dtype=dtype, name=tp.name, doc_string=tp.doc_string, metadata_props=props)


def tensor_to_proto(t: Tensor, name: str | None = None, *, with_data: bool = True) -> onnx.TensorProto:
    """An ONNX TensorProto holding ``t`` (raw data, or string_data for strings)."""
    tp = onnx.TensorProto()
    name = t.name if name is None else name
    if name:
        tp.name = name
    tp.data_type = int(t.dtype)
    tp.dims.extend(t.shape)
    if t.doc_string:
        tp.doc_string = t.doc_string
    _set_props(tp.metadata_props, t.metadata_props)
    if not with_data:
        return tp
    arr = t.numpy()
    if t.dtype == DataType.STRING:
        tp.string_data.extend(_bytes(s) for s in arr.reshape(-1))
    else:
        tp.raw_data = pack_raw(arr, t.dtype)
    return tp


def sparse_from_proto(sp: onnx.SparseTensorProto, external: ExternalResolver | None) -> SparseTensor:
    values = tensor_from_proto(sp.values, external=external, what=f"sparse tensor {sp.values.name!r} values")
    indices = tensor_from_proto(sp.indices, external=external, what=f"sparse tensor {sp.values.name!r} indices")
    if any(d < 0 for d in sp.dims):
        raise ModelLoadError(f"sparse tensor {sp.values.name!r}: negative dimension in {list(sp.dims)}")
    return SparseTensor(values, indices, tuple(sp.dims))


def sparse_to_proto(st: SparseTensor) -> onnx.SparseTensorProto:
    sp = onnx.SparseTensorProto()
    sp.values.CopyFrom(tensor_to_proto(st.values))
    sp.indices.CopyFrom(tensor_to_proto(st.indices))
    sp.dims.extend(st.dims)
    return sp


# ----------------------------------------------------------------------------- reading
class _Scope:
    """The names visible in one graph: its own (``local``) over those of enclosing graphs."""

    def __init__(self, where: str, outer: dict[str, Value] | None) -> None:
        self.where = where
        self.names: dict[str, Value] = dict(outer or {})
        self.local: set[str] = set()

    def define(self, v: Value, what: str | Callable[[], str]) -> None:
        if v.name in self.local:
            what = what if isinstance(what, str) else what()
            raise ModelLoadError(f"{self.where}: duplicate value name {v.name!r} ({what})")
        self.local.add(v.name)
        self.names[v.name] = v


class _Reader:
    """Builds kiln graphs from GraphProtos, resolving names to Values scope by scope.

    A graph is read in two phases: first every node is created with its outputs, so that
    every name of the scope is known; then node inputs and attributes are resolved
    (subgraphs see the whole enclosing scope). A graph whose nodes are out of order is
    sorted; a cycle, or a name that nothing defines, is an error naming the node.
    """

    def __init__(self, external: ExternalResolver | None,
                 functions: set[tuple[str, str, str]], opsets: dict[str, int]) -> None:
        self.external = external
        # Model-local functions (domain, name, overload): calls need no opset of their own.
        self.functions = functions
        # The opsets visible to the graph being read (the model's, or a function's).
        self.opsets = opsets
        # Where protobuf met fields onnx.proto does not define (they cannot be kept).
        self.unknown: list[str] = []

    def check_known(self, msg, where: str) -> None:
        """Note ``msg`` if it carries fields unknown to the installed onnx."""
        if _unknown_fields is not None and len(_unknown_fields(msg)):
            self.unknown.append(where)

    def graph(self, gp: onnx.GraphProto, outer: dict[str, Value] | None = None,
              owner: str = "graph", raw_data: RawData | None = None) -> Graph:
        sc = _Scope(f"{owner} {gp.name!r}" if gp.name else owner, outer)
        where = sc.where
        self.check_known(gp, where)
        g = Graph(name=gp.name, doc_string=gp.doc_string, metadata_props=_props(gp.metadata_props))
        self._sources(gp, g, sc, raw_data)
        # Phase 1: every node and its outputs, so that all names of this scope are known.
        protos = list(gp.node)
        nodes = [self.node(np_, index) for index, np_ in enumerate(protos)]
        for index, node in enumerate(nodes):
            g.append(node)
            for out in node.outputs:
                if out.name:
                    sc.define(out, lambda i=index: f"output of {_label(protos[i], i)}")
        self._value_info(gp, sc)
        # Phase 2: inputs and attributes (subgraphs may read any name of this scope).
        for index, (node, np_) in enumerate(zip(nodes, protos, strict=True)):
            self._connect(node, np_, sc.names, where, index)
        for vi in gp.output:
            v = sc.names.get(vi.name)
            if v is None:
                raise ModelLoadError(f"{where}: graph output {vi.name!r} is never defined")
            t = type_from_proto(vi.type)
            if t is not None:
                v.type = t
            if vi.doc_string:
                v.doc_string = vi.doc_string
            if vi.metadata_props:
                v.metadata_props = _props(vi.metadata_props)
            g.outputs.append(v)
        for qa in gp.quantization_annotation:
            g.quantization_annotation.append(
                (qa.tensor_name, {e.key: e.value for e in qa.quant_parameter_tensor_names})
            )
        if not _in_order(g):
            try:
                g.sort()
            except ValueError as exc:
                raise ModelLoadError(f"{where}: {exc}") from None
        return g

    def _sources(self, gp: onnx.GraphProto, g: Graph, sc: _Scope,
                 raw_data: RawData | None) -> None:
        """Graph inputs, initializers and sparse initializers."""
        for vi in gp.input:
            v = Value(vi.name, type_from_proto(vi.type), doc_string=vi.doc_string,
                      metadata_props=_props(vi.metadata_props))
            g.add_input(v)
            sc.define(v, "graph input")
        for index, tp in enumerate(gp.initializer):
            if not tp.name:
                raise ModelLoadError(f"{sc.where}: an initializer has no name")
            raw = raw_data.get(index) if raw_data else None
            tensor = tensor_from_proto(tp, external=self.external, what=f"initializer {tp.name!r}",
                                       raw=raw)
            existing = sc.names.get(tp.name) if tp.name in sc.local else None
            if existing is not None and existing.is_graph_input() and \
                    tp.name not in g.initializers:
                # An initializer that is also a graph input (a default value).
                existing.const_value = tensor
                g.initializers[tp.name] = existing
                continue
            v = Value(tp.name, const_value=tensor)
            sc.define(v, "initializer")
            g.register_initializer(v)
        for sp in gp.sparse_initializer:
            g.sparse_initializers.append(sparse_from_proto(sp, self.external))
            name = sp.values.name
            v = Value(name, SparseTensorType(DataType(sp.values.data_type), Shape(sp.dims)))
            v._graph = g
            sc.define(v, "sparse initializer")

    @staticmethod
    def _value_info(gp: onnx.GraphProto, sc: _Scope) -> None:
        dropped = []
        for vi in gp.value_info:
            v = sc.names.get(vi.name) if vi.name in sc.local else None
            if v is None:
                dropped.append(vi.name)
                continue
            t = type_from_proto(vi.type)
            # A graph input keeps its declared type; others take the value_info's.
            is_input = v.producer() is None and v.is_graph_input()
            if t is not None and (v.type is None or not is_input):
                v.type = t
            if vi.doc_string:
                v.doc_string = vi.doc_string
            if vi.metadata_props:
                v.metadata_props = _props(vi.metadata_props)
            v.meta["onnx.value_info"] = True
        if dropped:
            warnings.warn(f"{sc.where}: value_info for unknown values dropped: {dropped[:5]}",
                          stacklevel=4)

    def node(self, np_: onnx.NodeProto, index: int) -> Node:
        """A node with its outputs; inputs and attributes come in :meth:`_connect`."""
        if _unknown_fields is not None and len(_unknown_fields(np_)):
            self.unknown.append(_label(np_, index))
        node = Node(np_.domain, np_.op_type, outputs=[Value(name) for name in np_.output],
                    name=np_.name, overload=np_.overload, doc_string=np_.doc_string,
                    metadata_props=_props(np_.metadata_props))
        if len(np_.device_configurations):
            node.device_configurations = [dc.SerializeToString()
                                          for dc in np_.device_configurations]
        return node

    def _connect(self, node: Node, np_: onnx.NodeProto, scope: dict[str, Value], where: str,
                 index: int) -> None:
        if node.domain not in self.opsets and \
                (np_.domain, np_.op_type, np_.overload) not in self.functions:
            raise ModelLoadError(
                f"{where}: {_label(np_, index)} uses domain {node.domain or 'ai.onnx'!r}, which "
                "the model does not import"
            )
        if len(np_.attribute):
            context = f"{where}, {_label(np_, index)}"
            attrs: dict[str, Attr] = {}
            for ap in np_.attribute:
                if ap.name in attrs:
                    raise ModelLoadError(f"{context} has two attributes named {ap.name!r}")
                attrs[ap.name] = self.attr(ap, scope, context)
            node.attributes = attrs
            for sub in node.subgraphs():
                sub.parent = node
        inputs: list[Value | None] = []
        for name in np_.input:
            v = scope.get(name) if name else None
            if name and v is None:
                raise ModelLoadError(
                    f"{where}: {_label(np_, index)} reads {name!r}, which no node, graph input "
                    "or initializer defines (dangling input)"
                )
            inputs.append(v)
        node.set_inputs(inputs)

    def attr(self, ap: onnx.AttributeProto, scope: dict[str, Value], where: str) -> Attr:
        what = f"{where}, attribute {ap.name!r}"
        self.check_known(ap, what)
        try:
            t = AttrType(ap.type)
        except ValueError:
            raise ModelLoadError(f"{what}: unknown attribute type {ap.type}") from None
        if ap.ref_attr_name:
            return Attr(ap.name, t, None, ap.doc_string, ap.ref_attr_name)
        if t == AttrType.UNDEFINED:
            raise ModelLoadError(f"{what}: attribute type is UNDEFINED")
        ext = self.external
        readers = {
            AttrType.FLOAT: lambda: ap.f,
            AttrType.INT: lambda: ap.i,
            AttrType.STRING: lambda: _text(ap.s),
            AttrType.TENSOR: lambda: tensor_from_proto(ap.t, external=ext, what=what),
            AttrType.GRAPH: lambda: self.graph(ap.g, scope, f"subgraph of {where}"),
            AttrType.SPARSE_TENSOR: lambda: sparse_from_proto(ap.sparse_tensor, ext),
            AttrType.TYPE_PROTO: lambda: type_from_proto(ap.tp),
            AttrType.FLOATS: lambda: list(ap.floats),
            AttrType.INTS: lambda: list(ap.ints),
            AttrType.STRINGS: lambda: [_text(x) for x in ap.strings],
            AttrType.TENSORS: lambda: [
                tensor_from_proto(x, external=ext, what=what) for x in ap.tensors
            ],
            AttrType.GRAPHS: lambda: [
                self.graph(x, scope, f"subgraph of {where}") for x in ap.graphs
            ],
            AttrType.SPARSE_TENSORS: lambda: [sparse_from_proto(x, ext) for x in ap.sparse_tensors],
            AttrType.TYPE_PROTOS: lambda: [type_from_proto(x) for x in ap.type_protos],
        }
        value = readers[t]()
        return Attr(ap.name, t, value, ap.doc_string)

    def function(self, fp: onnx.FunctionProto) -> Function:
        where = f"function {fp.domain}::{fp.name}"
        self.check_known(fp, where)
        gp = onnx.GraphProto()
        gp.name = fp.name
        gp.node.extend(fp.node)
        gp.value_info.extend(fp.value_info)
        for name in fp.input:
            gp.input.add().name = name
        for name in fp.output:
            gp.output.add().name = name
        opsets = _opsets(fp.opset_import, where)
        model_opsets = self.opsets
        # A function body sees its own imports and, where it imports nothing, the model's.
        self.opsets = {**model_opsets, **opsets}
        try:
            body = self.graph(gp, owner=where)
            attrs: list[str | Attr] = list(fp.attribute)
            attrs += [self.attr(a, {}, where) for a in fp.attribute_proto]
        finally:
            self.opsets = model_opsets
        return Function(fp.domain, fp.name, body, attributes=attrs, opset_imports=opsets,
                        overload=fp.overload, doc_string=fp.doc_string,
                        metadata_props=_props(fp.metadata_props))


def _label(np_: onnx.NodeProto, index: int) -> str:
    """How messages name a node: by name, else by position and first output."""
    domain = "" if np_.domain == "ai.onnx" else np_.domain
    op = f"{domain}::{np_.op_type}" if domain else np_.op_type
    if np_.name:
        return f"{op} node {np_.name!r}"
    first = next((name for name in np_.output if name), "")
    return f"{op} node #{index}" + (f" (output {first!r})" if first else "")


def _in_order(g: Graph) -> bool:
    """Whether every node comes after the producers of the values it (or a subgraph) reads."""
    seen: set[Node] = set()
    for node in g:
        for v in _read_values(node):
            p = v.producer()
            if p is not None and p.graph is g and p not in seen:
                return False
        seen.add(node)
    return True


def _opsets(entries, where: str) -> dict[str, int]:
    newest = onnx.defs.onnx_opset_version()
    out: dict[str, int] = {}
    for e in entries:
        domain = "" if e.domain == "ai.onnx" else e.domain
        name = domain or "ai.onnx"
        if domain in out and out[domain] != e.version:
            raise ModelLoadError(
                f"{where}: opset {name!r} is imported twice, as versions {out[domain]} and "
                f"{e.version}"
            )
        if domain == "" and e.version > newest:
            raise ModelLoadError(
                f"{where}: imports ai.onnx opset {e.version}, but the installed onnx "
                f"{onnx.__version__} knows opsets up to {newest}"
            )
        out[domain] = e.version
    return out


def deserialize_model(
    proto: onnx.ModelProto,
    *,
    external: ExternalResolver | None = None,
    raw_data: RawData | None = None,
) -> Model:
    """Convert an ONNX ModelProto to a kiln Model (external data stays lazy).

    Args:
        proto: the model.
        external: turns external-data tensors into loaders; without it they are refused.
        raw_data: raw payloads cut out of main-graph initializers before parsing, by
            initializer index (see :func:`tensor_from_proto`).

    Raises:
        ModelLoadError: the model is malformed (dangling or duplicate names, cycles,
            unknown opsets, data that does not fit its shape), naming the node or tensor.
    """
    if not proto.HasField("graph"):
        raise ModelLoadError("the model has no graph")
    opsets = _opsets(proto.opset_import, "model")
    functions = {(f.domain, f.name, f.overload) for f in proto.functions}
    if len(functions) != len(proto.functions):
        seen: set[tuple[str, str, str]] = set()
        for f in proto.functions:
            key = (f.domain, f.name, f.overload)
            if key in seen:
                raise ModelLoadError(f"the model defines function {f.domain}::{f.name} twice")
            seen.add(key)
    reader = _Reader(external, functions, opsets)
    reader.check_known(proto, "the model")
    graph = reader.graph(proto.graph, owner="main graph", raw_data=raw_data)
    model = Model(
        graph,
        ir_version=proto.ir_version,
        opset_imports=opsets,
        producer_name=proto.producer_name,
        producer_version=proto.producer_version,
        domain=proto.domain,
        model_version=proto.model_version,
        doc_string=proto.doc_string,
        metadata_props=_props(proto.metadata_props),
        functions=[reader.function(f) for f in proto.functions],
    )
    for field in ("training_info", "configuration"):
        items = getattr(proto, field)
        if len(items):
            model.raw_fields[field] = [x.SerializeToString() for x in items]
    if reader.unknown:
        warnings.warn(
            f"fields unknown to onnx {onnx.__version__} are dropped (in "
            f"{', '.join(reader.unknown[:3])}{', ...' if len(reader.unknown) > 3 else ''}); "
            "was the model written by a newer onnx?", stacklevel=2)
    return model


def deserialize_function(fp: onnx.FunctionProto, opsets: dict[str, int] | None = None) -> Function:
    """Convert one ONNX FunctionProto to a kiln Function.

    Args:
        fp: the function.
        opsets: the opsets of the model it will live in (its body sees them where the
            function imports nothing itself).
    """
    reader = _Reader(None, set(), dict(opsets or {}))
    return reader.function(fp)


# ----------------------------------------------------------------------------- writing
def _has_value_info(v: Value) -> bool:
    return (v.type is not None or bool(v.doc_string) or bool(v.metadata_props)
            or bool(v.meta.get("onnx.value_info")))


def _value_info(v: Value, vi: onnx.ValueInfoProto) -> None:
    vi.name = v.name
    if v.type is not None:
        type_to_proto(v.type, vi.type)
    if v.doc_string:
        vi.doc_string = v.doc_string
    _set_props(vi.metadata_props, v.metadata_props)


def _attr_to_proto(a: Attr, ap: onnx.AttributeProto) -> None:
    ap.name = a.name
    ap.type = int(a.type)
    if a.doc_string:
        ap.doc_string = a.doc_string
    if a.ref_attr_name:
        ap.ref_attr_name = a.ref_attr_name
        return
    _ATTR_WRITERS[a.type](ap, a.value)


def _set_attr_graphs(ap: onnx.AttributeProto, graphs: list[Graph]) -> None:
    for g in graphs:
        graph_to_proto(g, ap.graphs.add())


def _set_attr_type_protos(ap: onnx.AttributeProto, types: list[Type]) -> None:
    for x in types:
        type_to_proto(x, ap.type_protos.add())


def _set_scalar(field: str, convert=lambda v: v):
    def write(ap: onnx.AttributeProto, v) -> None:
        setattr(ap, field, convert(v))

    return write


_ATTR_WRITERS = {
    AttrType.FLOAT: _set_scalar("f"),
    AttrType.INT: _set_scalar("i"),
    AttrType.STRING: _set_scalar("s", _bytes),
    AttrType.TENSOR: lambda ap, v: ap.t.CopyFrom(tensor_to_proto(v)),
    AttrType.GRAPH: lambda ap, v: graph_to_proto(v, ap.g),
    AttrType.SPARSE_TENSOR: lambda ap, v: ap.sparse_tensor.CopyFrom(sparse_to_proto(v)),
    AttrType.TYPE_PROTO: lambda ap, v: type_to_proto(v, ap.tp),
    AttrType.FLOATS: lambda ap, v: ap.floats.extend(v),
    AttrType.INTS: lambda ap, v: ap.ints.extend(v),
    AttrType.STRINGS: lambda ap, v: ap.strings.extend(_bytes(s) for s in v),
    AttrType.TENSORS: lambda ap, v: ap.tensors.extend(tensor_to_proto(x) for x in v),
    AttrType.GRAPHS: _set_attr_graphs,
    AttrType.SPARSE_TENSORS: lambda ap, v: ap.sparse_tensors.extend(sparse_to_proto(x) for x in v),
    AttrType.TYPE_PROTOS: _set_attr_type_protos,
}


def node_to_proto(n: Node, np_: onnx.NodeProto) -> None:
    np_.input.extend("" if v is None else v.name for v in n.inputs)
    np_.output.extend(v.name for v in n.outputs)
    if n.name:
        np_.name = n.name
    np_.op_type = n.op_type
    if n.domain:
        np_.domain = n.domain
    if n.overload:
        np_.overload = n.overload
    for a in n.attributes.values():
        _attr_to_proto(a, np_.attribute.add())
    if n.doc_string:
        np_.doc_string = n.doc_string
    _set_props(np_.metadata_props, n.metadata_props)
    for raw in n.device_configurations:
        np_.device_configurations.add().ParseFromString(raw)


def graph_to_proto(
    g: Graph, gp: onnx.GraphProto | None = None, *, initializer_data: bool = True
) -> onnx.GraphProto:
    """Fill (or create) a GraphProto. With ``initializer_data=False`` the initializers
    are written without their data (the caller streams it)."""
    gp = onnx.GraphProto() if gp is None else gp
    if g.name:
        gp.name = g.name
    if g.doc_string:
        gp.doc_string = g.doc_string
    for v in g.inputs:
        _value_info(v, gp.input.add())
    for name, v in g.initializers.items():
        assert v.const_value is not None
        gp.initializer.append(tensor_to_proto(v.const_value, name, with_data=initializer_data))
    for st in g.sparse_initializers:
        gp.sparse_initializer.append(sparse_to_proto(st))
    io = {id(v) for v in g.inputs} | {id(v) for v in g.outputs}
    for n in g:
        node_to_proto(n, gp.node.add())
        for out in n.outputs:
            if out.name and id(out) not in io and _has_value_info(out):
                _value_info(out, gp.value_info.add())
    for v in g.all_values():
        if v.meta.get("onnx.value_info") and v.producer() is None:
            _value_info(v, gp.value_info.add())
    for v in g.outputs:
        _value_info(v, gp.output.add())
    for tensor_name, params in g.quantization_annotation:
        qa = gp.quantization_annotation.add()
        qa.tensor_name = tensor_name
        _set_props(qa.quant_parameter_tensor_names, params)
    _set_props(gp.metadata_props, g.metadata_props)
    return gp


def function_to_proto(f: Function) -> onnx.FunctionProto:
    fp = onnx.FunctionProto()
    fp.name = f.name
    fp.domain = f.domain
    if f.overload:
        fp.overload = f.overload
    fp.input.extend(v.name for v in f.inputs)
    fp.output.extend(v.name for v in f.outputs)
    for name, default in f.attributes.items():
        if default is None:
            fp.attribute.append(name)
        else:
            _attr_to_proto(default, fp.attribute_proto.add())
    # FunctionProto inputs and outputs are bare names: their types live in value_info too.
    for v in f.inputs:
        if _has_value_info(v):
            _value_info(v, fp.value_info.add())
    for n in f.graph:
        node_to_proto(n, fp.node.add())
        for out in n.outputs:
            if out.name and _has_value_info(out):
                _value_info(out, fp.value_info.add())
    for domain, version in f.opset_imports.items():
        op = fp.opset_import.add()
        op.domain = domain
        op.version = version
    if f.doc_string:
        fp.doc_string = f.doc_string
    _set_props(fp.metadata_props, f.metadata_props)
    return fp


def serialize_model(model: Model, *, initializer_data: bool = True) -> onnx.ModelProto:
    """Convert a kiln Model to an ONNX ModelProto."""
    mp = onnx.ModelProto()
    mp.ir_version = model.ir_version
    for domain, version in model.opset_imports.items():
        op = mp.opset_import.add()
        op.domain = domain
        op.version = version
    for field in ("producer_name", "producer_version", "domain", "model_version", "doc_string"):
        value = getattr(model, field)
        if value:
            setattr(mp, field, value)
    graph_to_proto(model.graph, mp.graph, initializer_data=initializer_data)
    _set_props(mp.metadata_props, model.metadata_props)
    for f in model.functions.values():
        mp.functions.append(function_to_proto(f))
    for raw in model.raw_fields.get("training_info", []):
        mp.training_info.add().ParseFromString(raw)
    for raw in model.raw_fields.get("configuration", []):
        mp.configuration.add().ParseFromString(raw)
    return mp
