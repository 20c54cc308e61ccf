"""The readable text form of kiln models: a printer and a parser that round-trip.

``print(model)`` shows a model in this form and :func:`parse_model` reads it back. With
``elide_above=None`` the printer writes every tensor in full, and
``parse_model(print_model(m, elide_above=None))`` rebuilds the same IR: names, types,
attributes, metadata and tensor data bit for bit, so it serializes to the same ONNX
protobuf. By default tensors of more than 64 elements are elided as ``f32[1024,1024]{...}``;
such text is for reading, and the parser refuses it.

Example::

    model <ir_version: 10, opset_imports: {"": 21}>
    graph @main(%x: f32[N,3], %cond: bool[]) {
      init %b = f32[3]{0.5, 1.0, -0.0}
      %y: f32[N,3] = Add(%x, %b) @add0
      %z = If(%cond) {
        then_branch: graph @then() { return %y },
        else_branch: graph @else() {
          %n = Neg(%y)
          return %n
        }
      }
      return %z
    }

Grammar (whitespace is free; ``#`` starts a comment that runs to the end of the line;
comments may not stand inside a shape or inside numeric tensor data)::

    model     ::= ["model" [props]] graph function*
    graph     ::= "graph" [SYMBOL] "(" [valuedef {"," valuedef}] ")" [props] body
    function  ::= "func" opname ["[" param {"," param} "]"]
                  "(" [valuedef {"," valuedef}] ")" [props] body
    param     ::= name [":" attrvalue]              # an attribute parameter and its default
    body      ::= "{" statement* ["return" [VALUE {"," VALUE}]] "}"
    statement ::= "init" valuedef "=" tensor         # an initializer, or an input's default
                | "sparse_init" valuedef "=" sparse
                | [outdef {"," outdef} "="] opname "(" [use {"," use}] ")"
                  [attrs] [SYMBOL] [props]           # SYMBOL: the node's name
    outdef    ::= valuedef | "_"                     # "_": an unnamed output nobody reads
    use       ::= VALUE | "_"                        # "_": a missing optional input
    valuedef  ::= VALUE [":" type] [props]
    opname    ::= [name "::"] name                   # domain::op_type
    attrs     ::= "{" [attr {"," attr}] "}"
    attr      ::= name ":" [KIND "="] attrvalue [props]
    attrvalue ::= INT | FLOAT | STRING | BYTES | tensor | sparse | graph | "type" "<" type ">"
                | SYMBOL                             # @a: refers to function attribute a
                | "[" [attrvalue {"," attrvalue}] "]"
    type      ::= ("?" | DTYPE [shape] | "sparse" "<" DTYPE [shape] ">"
                | "seq" "<" type ">" | "opt" "<" type ">" | "map" "<" DTYPE "," type ">"
                | "opaque" "<" STRING "," STRING ">") ["denotation" STRING]
    shape     ::= "[" "*" "]" | "[" [dim {"," dim}] "]"
    dim       ::= (INT | "?" | DIMEXPR | STRING) [":" STRING]   # ":" adds a denotation
    tensor    ::= DTYPE "[" [INT {"," INT}] "]" "{" (elements | "...") "}" [props]
    sparse    ::= "sparse" "(" tensor "," tensor "," "[" [INT {"," INT}] "]" ")"
    props     ::= "<" [IDENT ":" literal {"," IDENT ":" literal}] ">"
    literal   ::= INT | FLOAT | STRING | BYTES | "true" | "false"
                | "[" [literal {"," literal}] "]" | "{" [name ":" literal {"," ...}] "}"
    name      ::= IDENT | STRING

Tokens and conventions:

- VALUE: ``%x`` or ``%"any name"``. ``%x#2`` is another value also named ``x`` and ``%#1``
  a value with no name (the printer numbers values whose name is already taken, so each
  value has one spelling). A value may be used before its definition; a graph need not be
  sorted.
- SYMBOL: ``@name`` or ``@"any name"``: graph and node names, attribute references.
- STRING ``"..."`` with escapes ``\\n \\t \\r \\" \\\\ \\xHH \\uHHHH \\UHHHHHHHH``; BYTES
  ``b"..."`` (ASCII and ``\\xHH``). A name that is not a plain identifier is quoted.
- DTYPE: a :attr:`DataType.short_name` (f32, f64, f16, bf16, i64, u8, bool, str, c64,
  f8e4m3fn, i4, ...). KIND: an :class:`AttrType` name in lower case (float, ints, string,
  tensor, graph, type_protos, ...); it is needed only for references and empty lists.
- Dims: an integer, ``?`` (unknown), or a symbolic name or expression (``N``, ``N*2+1``;
  anything else is quoted). ``f32[*]`` (also written ``f32``) has unknown rank; ``?`` as a
  type is an unknown type.
- Tensor elements are flat, in row-major order; one element for a larger tensor is
  repeated (a splat). Floats are printed in the shortest form that reads back to the
  same value of their type, or as ``nan``, ``inf``, ``-inf``, or ``0x...`` (the element's
  bit pattern: NaN payloads, signed NaNs); bool is ``true``/``false``; complex
  ``(re, im)``; strings ``"..."`` or ``b"..."``. ``{...}`` marks data the printer left out.
- FLOAT attributes are float32 in ONNX: the parser rounds them to float32 (so ``1e-5`` is
  the value ONNX would store); a NaN keeps only its sign.

Properties (``<key: value, ...>``), each optional:

- model: ir_version (default 10), opset_imports (default ``{"": 21}``), producer_name,
  producer_version, domain, model_version, doc_string, metadata_props, raw_fields.
- graph: doc_string, metadata_props, quantization_annotation (``[["x", {"SCALE_TENSOR":
  "s"}], ...]``).
- function: overload, opset_imports, doc_string, metadata_props, graph_name.
- node: overload, doc_string, metadata_props, device_configurations (serialized bytes).
- value: doc_string, metadata_props, value_info (``true`` where ONNX lists the value in
  value_info; printed for inputs and initializers, and for node outputs with no type,
  doc or metadata, the others being listed anyway).
- tensor: name (default: the initializer's name, else ""), doc_string, metadata_props.
  A tensor's properties follow its data: ``init %w = f32[2]{1, 2} <name: "w0">``.
- attribute: doc_string.

Written by hand: without a ``model`` header the model has ir_version 10 and imports
opset 21; a value without ``: type`` has no type; an initializer's type is its tensor's
unless one is written (``init %w: f32[N] = ...``). :func:`assert_models_equal` compares a
model with its expected text for golden tests.
"""

from __future__ import annotations

import bisect
import difflib
import gc
import math
import re
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from kiln.errors import ParseError
from kiln.ir._core import Attr, AttrType, Function, Graph, Model, Node, Value
from kiln.ir._dtypes import DataType
from kiln.ir._tensor import SparseTensor, Tensor
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

__all__ = [
    "assert_models_equal",
    "models_equal",
    "parse_function",
    "parse_graph",
    "parse_model",
    "print_function",
    "print_graph",
    "print_model",
]

# Tensors with more elements than this are elided by print(model) and str(graph).
DEFAULT_ELIDE_ABOVE = 64

# ------------------------------------------------------------------------------ lexical
_DTYPES = {dt.short_name: dt for dt in DataType}
_BARE_NAME = re.compile(r"(?:[A-Za-z0-9_.\-/]|::)+")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_DIM_BARE = re.compile(r"[A-Za-z0-9_.+\-*/()]+")
_INT = re.compile(r"-?\d+")
_STR_RE = r'"(?:[^"\\\n]|\\.)*"'
_BARE_RE = r"(?:[A-Za-z0-9_.\-/]|::)+"
_NUM_RE = r"-?(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
_LIST_NUM_RE = rf"(?:{_NUM_RE}|-?inf\b|-?nan\b)"
_DTYPE_RE = "|".join(sorted((dt.short_name for dt in DataType), key=len, reverse=True))
# The whole text is cut into tokens at once, each with the blanks and comments before it.
# Besides plain tokens there are compound ones that keep the parser's work small: a tensor
# type with its shape (f32[N,3]), a list of numbers ([1, 2]) and the data of a tensor
# literal written right after its shape (]{1, 2}).
_TOKENS = re.compile(
    r"((?:\s|\#[^\n]*)*)("
    rf"%(?:{_STR_RE}|{_BARE_RE})?(?:\#\d+)?"  # value
    rf"|@(?:{_STR_RE}|{_BARE_RE})"  # symbol
    rf"|b?{_STR_RE}"  # string, bytes
    rf"|(?:{_DTYPE_RE})\[[^\]\[\"]*\]"  # dtype and shape
    r"|(?<=\])\{[^{}\"\#]*\}"  # tensor data
    rf"|\[\s*{_LIST_NUM_RE}(?:\s*,\s*{_LIST_NUM_RE})*\s*\]"  # list of numbers
    rf"|{_NUM_RE}|-(?:inf|nan)\b"  # number
    r"|[A-Za-z_][A-Za-z0-9_.]*"  # identifier
    r"|::|\.\.\.|\Z|."  # punctuation, the end, or a character that is an error
    r")",
    re.DOTALL,
)
# Token kinds by first character (tokens of one character, then longer ones).
_SINGLE_KIND = {"": "eof"}
_SINGLE_KIND.update(dict.fromkeys("()[]{}<>,:=?*+-/", "punct"))
_SINGLE_KIND.update(dict.fromkeys("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_",
                                  "ident"))
_SINGLE_KIND.update(dict.fromkeys("0123456789", "number"))
_FIRST_KIND = {k: v for k, v in _SINGLE_KIND.items() if v != "punct" and k}
_FIRST_KIND.update({"%": "value", "@": "sym", '"': "string", "-": "number", ".": "number",
                    "{": "data", "[": "numlist", ":": "punct"})
_VALUE_PARTS = re.compile(r'%(?:"((?:[^"\\\n]|\\.)*)"|((?:[A-Za-z0-9_.\-/]|::)*))(?:#(\d+))?')
_COMPLEX_DATA = re.compile(r"\s*\(([^(),]*),([^(),]*)\)\s*(,?)")
_DIM_SLOW = re.compile(
    rf'\s*(?:({_STR_RE})|([A-Za-z0-9_.+\-*/()?]+))\s*(?::\s*({_STR_RE})\s*)?([,\]])'
)
_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|.)", re.DOTALL)
_SIMPLE_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "0": "\0"}
_SAFE_TEXT = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]*")
_QUOTE_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}

_KINDS = {k.name.lower(): k for k in AttrType}
_LIST_OF = {
    AttrType.INT: AttrType.INTS,
    AttrType.FLOAT: AttrType.FLOATS,
    AttrType.STRING: AttrType.STRINGS,
    AttrType.TENSOR: AttrType.TENSORS,
    AttrType.GRAPH: AttrType.GRAPHS,
    AttrType.SPARSE_TENSOR: AttrType.SPARSE_TENSORS,
    AttrType.TYPE_PROTO: AttrType.TYPE_PROTOS,
}
_LIST_KINDS = frozenset(_LIST_OF.values())
_ELEMENT_OF = {v: k for k, v in _LIST_OF.items()}
_SIGNED = frozenset({DataType.INT8, DataType.INT16, DataType.INT32, DataType.INT64,
                     DataType.INT4, DataType.INT2})
_COMPLEX = {DataType.COMPLEX64: np.dtype(np.float32), DataType.COMPLEX128: np.dtype(np.float64)}
_NATIVE_FLOATS = frozenset({np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)})


def _quote(s: str | bytes) -> str:
    """A string (or bytes) literal that the parser reads back to exactly ``s``."""
    if isinstance(s, bytes):
        return _quote_bytes(s)
    if _SAFE_TEXT.fullmatch(s):
        return f'"{s}"'
    out = []
    for ch in s:
        esc = _QUOTE_ESCAPES.get(ch)
        if esc is not None:
            out.append(esc)
        elif ch.isprintable():
            out.append(ch)
        else:
            cp = ord(ch)
            out.append(f"\\x{cp:02x}" if cp < 0x100 else
                       f"\\u{cp:04x}" if cp < 0x10000 else f"\\U{cp:08x}")
    return '"' + "".join(out) + '"'


def _quote_bytes(b: bytes) -> str:
    out = []
    for byte in b:
        ch = chr(byte)
        esc = _QUOTE_ESCAPES.get(ch)
        if esc is not None:
            out.append(esc)
        elif 0x20 <= byte < 0x7F:
            out.append(ch)
        else:
            out.append(f"\\x{byte:02x}")
    return 'b"' + "".join(out) + '"'


def _unescape(body: str) -> str:
    """The text of a string literal's body (between the quotes); ValueError if malformed."""
    if "\\" not in body:
        return body

    def replace(m: re.Match) -> str:
        esc = m.group(1)
        if len(esc) > 1:
            return chr(int(esc[1:], 16))
        try:
            return _SIMPLE_ESCAPES[esc]
        except KeyError:
            raise ValueError(f"unknown escape '\\{esc}'") from None

    return _ESCAPE.sub(replace, body)


def _fmt_name(name: str) -> str:
    """A value, graph or node name: bare when it can be, quoted otherwise."""
    return name if _BARE_NAME.fullmatch(name) else _quote(name)


def _fmt_ident(name: str) -> str:
    return name if _IDENT.fullmatch(name) else _quote(name)


def _fmt_op(domain: str, op_type: str) -> str:
    op = _fmt_ident(op_type)
    return f"{_fmt_ident(domain)}::{op}" if domain else op


# ------------------------------------------------------------------------------ printing
def _fmt_dim(d: int | str | None) -> str:
    if d is None:
        return "?"
    if isinstance(d, int):
        return str(d)
    if _DIM_BARE.fullmatch(d) and not _INT.fullmatch(d) and d != "*":
        return d
    return _quote(d)


def _fmt_shape(shape: Shape | None) -> str:
    if shape is None:
        return "[*]"
    dims = [_fmt_dim(d) for d in shape.dims]
    if shape.denotations is not None:
        dims = [f"{d}:{_quote(den)}" if den else d for d, den in zip(dims, shape.denotations,
                                                                      strict=True)]
    return "[" + ",".join(dims) + "]"


def _fmt_type(t: Type | None) -> str:
    """The text of a value type (``?`` for an unknown one)."""
    if t is None:
        return "?"
    if isinstance(t, TensorType):
        s = t.dtype.short_name + _fmt_shape(t.shape)
    elif isinstance(t, SparseTensorType):
        s = f"sparse<{t.dtype.short_name}{_fmt_shape(t.shape)}>"
    elif isinstance(t, SequenceType):
        s = f"seq<{_fmt_type(t.elem)}>"
    elif isinstance(t, OptionalType):
        s = f"opt<{_fmt_type(t.elem)}>"
    elif isinstance(t, MapType):
        s = f"map<{t.key.short_name}, {_fmt_type(t.value)}>"
    elif isinstance(t, OpaqueType):
        s = f"opaque<{_quote(t.domain)}, {_quote(t.name)}>"
    else:
        raise TypeError(f"cannot print type {t!r}")
    if t.denotation:
        s += f" denotation {_quote(t.denotation)}"
    return s


def _fmt_float(x: float) -> str:
    """A float attribute: the shortest float32 form when the value is a float32."""
    if math.isnan(x):
        return "-nan" if math.copysign(1.0, x) < 0 else "nan"
    with np.errstate(all="ignore"):
        f = np.float32(x)
        if float(f) == x:
            s = str(f)
            if float(np.float32(float(s))) == x:
                return s
    return repr(x)


def _fmt_literal(v: Any) -> str:
    """A property value: bool, int, float, str, bytes, list or str-keyed dict."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return _fmt_float(v)
    if isinstance(v, str | bytes):
        return _quote(v)
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_quote(k)}: {_fmt_literal(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_fmt_literal(x) for x in v) + "]"
    raise TypeError(f"cannot print property value {v!r}")


def _fmt_props(items: Iterable[tuple[str, Any]]) -> str:
    """`` <key: value, ...>`` for the items, or "" when there are none."""
    text = ", ".join(f"{k}: {_fmt_literal(v)}" for k, v in items)
    return f" <{text}>" if text else ""


def _uint_view(flat: np.ndarray) -> np.ndarray:
    return flat.view(np.dtype(f"u{flat.dtype.itemsize}"))


def _format_floats(flat: np.ndarray) -> list[str]:
    """Shortest round-tripping text of each element; a bit pattern where that fails."""
    src = flat if flat.dtype in _NATIVE_FLOATS else flat.astype(np.float32)
    texts = src.astype(str).tolist()
    with np.errstate(all="ignore"):
        back = np.array(texts, dtype=np.float64).astype(flat.dtype)
    bits = _uint_view(flat)
    width = flat.dtype.itemsize * 2
    for i in np.flatnonzero(_uint_view(back) != bits).tolist():
        texts[i] = f"0x{int(bits[i]):0{width}x}"
    return texts


def _format_elements(array: np.ndarray, dtype: DataType) -> list[str]:
    if dtype == DataType.STRING:
        return [_quote(x if isinstance(x, str | bytes) else str(x)) for x in array.tolist()]
    if dtype == DataType.BOOL:
        return ["true" if x else "false" for x in array.tolist()]
    if dtype in _COMPLEX:
        parts = _format_floats(array.view(_COMPLEX[dtype]))
        return [f"({parts[i]}, {parts[i + 1]})" for i in range(0, len(parts), 2)]
    if dtype.is_floating():
        return _format_floats(array)
    return [str(x) for x in array.tolist()]


def _is_splat(flat: np.ndarray) -> bool:
    if flat.size < 2:
        return False
    if flat.dtype == object:
        first = flat[0]
        return all(type(x) is type(first) and x == first for x in flat.tolist())
    rows = flat.view(np.uint8).reshape(flat.size, -1)
    return bool((rows == rows[0]).all())


def _tensor_data(t: Tensor) -> str:
    """The elements of a tensor, comma-separated (one when all are equal)."""
    array = np.asarray(t.numpy())
    if t.dtype == DataType.STRING:
        flat = array.reshape(-1)
    else:
        flat = np.ascontiguousarray(array, dtype=t.dtype.numpy).reshape(-1)
    if _is_splat(flat):
        flat = flat[:1]
    return ", ".join(_format_elements(flat, t.dtype))


class _Printer:
    """Formats models, graphs and functions; one instance per call."""

    def __init__(self, elide_above: int | None) -> None:
        self.elide_above = elide_above
        self._types: dict[Type, str] = {}
        self._begin_unit(None)

    # -- value names ---------------------------------------------------------------------
    def _begin_unit(self, graph: Graph | None) -> None:
        """Start a naming scope: a main graph or a function body, with its subgraphs."""
        self._tokens: dict[int, str] = {}
        self._taken: set[str | tuple[str, int]] = set()
        self._counters: dict[str, int] = {}
        self._sparse: dict[tuple[int, str], str] = {}
        self._outputs: set[int] = set()
        if graph is not None:
            self._collect_outputs(graph)

    def _collect_outputs(self, g: Graph) -> None:
        self._outputs.update(id(v) for v in g.outputs)
        for n in g:
            for sub in n.subgraphs():
                self._collect_outputs(sub)

    def _new_token(self, name: str) -> str:
        if name and name not in self._taken:
            self._taken.add(name)
            return "%" + _fmt_name(name)
        k = self._counters.get(name, 1)
        while (name, k) in self._taken:
            k += 1
        self._counters[name] = k + 1
        self._taken.add((name, k))
        return f"%{_fmt_name(name) if name else ''}#{k}"

    def _token(self, v: Value) -> str:
        tok = self._tokens.get(id(v))
        if tok is not None:
            return tok
        g = v._graph
        if v.name and g is not None and v.producer() is None:
            # A sparse initializer's value: the graph keeps only the SparseTensor.
            tok = self._sparse.get((id(g), v.name))
        if tok is None:
            tok = self._new_token(v.name)
        self._tokens[id(v)] = tok
        return tok

    # -- values --------------------------------------------------------------------------
    def _type(self, t: Type) -> str:
        s = self._types.get(t)
        if s is None:
            s = self._types[t] = _fmt_type(t)
        return s

    def _value_props(self, v: Value) -> str:
        items: list[tuple[str, Any]] = []
        if v.doc_string:
            items.append(("doc_string", v.doc_string))
        if v.metadata_props:
            items.append(("metadata_props", v.metadata_props))
        if v.meta.get("onnx.value_info") and (v.producer() is None or not items
                                               and v.type is None):
            # Only where it decides whether ONNX lists the value in value_info: a node
            # output with a type, doc or metadata is listed anyway.
            items.append(("value_info", True))
        return _fmt_props(items) if items else ""

    def _def(self, v: Value) -> str:
        s = self._token(v)
        if v.type is not None:
            s += ": " + self._type(v.type)
        if v.doc_string or v.metadata_props or v.meta:
            s += self._value_props(v)
        return s

    def _out(self, v: Value) -> str:
        if (not v.name and not v._uses and id(v) not in self._outputs and v.type is None
                and not v.doc_string and not v.metadata_props and not v.meta):
            return "_"
        return self._def(v)

    # -- tensors -------------------------------------------------------------------------
    def _tensor(self, t: Tensor, name: str = "") -> str:
        head = f"{t.dtype.short_name}[{','.join(map(str, t.shape))}]"
        if self.elide_above is not None and t.size > self.elide_above:
            body = "{...}"
        else:
            body = "{" + _tensor_data(t) + "}"
        items: list[tuple[str, Any]] = []
        if t.name != name:
            items.append(("name", t.name))
        if t.doc_string:
            items.append(("doc_string", t.doc_string))
        if t.metadata_props:
            items.append(("metadata_props", t.metadata_props))
        return head + body + _fmt_props(items)

    def _sparse_tensor(self, st: SparseTensor, name: str = "") -> str:
        dims = ", ".join(map(str, st.dims))
        return f"sparse({self._tensor(st.values, name)}, {self._tensor(st.indices)}, [{dims}])"

    # -- attributes ----------------------------------------------------------------------
    def _attr(self, name: str, a: Attr, indent: str) -> str:
        kind = a.type.name.lower()
        if a.ref_attr_name:
            body = f"{kind} = @{_fmt_name(a.ref_attr_name)}"
        elif a.value is None:
            body = f"{kind} = ?"
        else:
            body = self._attr_value(a.type, a.value, indent)
            if a.type in _LIST_KINDS and not a.value:
                body = f"{kind} = {body}"
        if a.doc_string and a.type == AttrType.TENSOR and not body.endswith(">"):
            body += " <>"  # so that the attribute's properties are not read as the tensor's
        if a.doc_string:
            body += _fmt_props([("doc_string", a.doc_string)])
        return f"{_fmt_ident(name)}: {body}"

    def _attr_value(self, kind: AttrType, v: Any, indent: str) -> str:  # noqa: C901
        if kind == AttrType.INT:
            return str(int(v))
        if kind == AttrType.FLOAT:
            return _fmt_float(float(v))
        if kind == AttrType.STRING:
            return _quote(v)
        if kind == AttrType.TENSOR:
            return self._tensor(v)
        if kind == AttrType.GRAPH:
            return self._graph(v, indent)
        if kind == AttrType.SPARSE_TENSOR:
            return self._sparse_tensor(v)
        if kind == AttrType.TYPE_PROTO:
            return f"type<{_fmt_type(v)}>"
        if kind == AttrType.GRAPHS and v:
            inner = indent + "  "
            graphs = ",\n".join(inner + self._graph(g, inner) for g in v)
            return f"[\n{graphs}\n{indent}]"
        if kind in _LIST_KINDS:
            element = _ELEMENT_OF[kind]
            return "[" + ", ".join(self._attr_value(element, x, indent) for x in v) + "]"
        raise TypeError(f"cannot print an attribute of type {kind.name}")

    def _attrs(self, attrs: dict[str, Attr], indent: str) -> str:
        inner = indent + "  "
        items = [self._attr(name, a, inner) for name, a in attrs.items()]
        if any("\n" in s for s in items):
            return "{\n" + ",\n".join(inner + s for s in items) + "\n" + indent + "}"
        return "{" + ", ".join(items) + "}"

    # -- nodes and graphs ----------------------------------------------------------------
    def _node(self, n: Node, indent: str) -> str:
        outs = ", ".join([self._out(v) for v in n.outputs])
        args = ", ".join(["_" if v is None else self._token(v) for v in n.inputs])
        op = _fmt_op(n.domain, n.op_type)
        s = f"{outs} = {op}({args})" if outs else f"{op}({args})"
        if n.attributes:
            s += " " + self._attrs(n.attributes, indent)
        if n.name:
            s += " @" + _fmt_name(n.name)
        items: list[tuple[str, Any]] = []
        if n.overload:
            items.append(("overload", n.overload))
        if n.doc_string:
            items.append(("doc_string", n.doc_string))
        if n.metadata_props:
            items.append(("metadata_props", n.metadata_props))
        if n.device_configurations:
            items.append(("device_configurations", list(n.device_configurations)))
        return s + _fmt_props(items)

    def _signature(self, inputs: list[Value], indent: str) -> str:
        defs = [self._def(v) for v in inputs]
        one_line = ", ".join(defs)
        if len(one_line) <= 100:
            return f"({one_line})"
        inner = indent + "    "
        return "(\n" + ",\n".join(inner + d for d in defs) + "\n" + indent + ")"

    def _init(self, v: Value, inputs: set[int]) -> str:
        assert v.const_value is not None
        tok = self._token(v)
        if id(v) in inputs:
            return f"init {tok} = {self._tensor(v.const_value, v.name)}"
        t = v.const_value
        s = tok
        vt = v.type
        if not (type(vt) is TensorType and vt.dtype == t.dtype and not vt.denotation
                and vt.shape is not None and vt.shape.dims == t.shape
                and vt.shape.denotations is None):
            s += ": " + self._type(v.type) if v.type is not None else ": ?"
        if v.doc_string or v.metadata_props or v.meta:
            s += self._value_props(v)
        return f"init {s} = {self._tensor(t, v.name)}"

    def _graph(self, g: Graph, indent: str, head: str = "graph", props: str | None = None) -> str:
        """A graph (or function body) whose first line starts where the caller is; the
        following lines are indented by ``indent`` plus two spaces."""
        if props is None:
            items: list[tuple[str, Any]] = []
            if g.doc_string:
                items.append(("doc_string", g.doc_string))
            if g.metadata_props:
                items.append(("metadata_props", g.metadata_props))
            if g.quantization_annotation:
                items.append(("quantization_annotation",
                              [[name, params] for name, params in g.quantization_annotation]))
            props = _fmt_props(items)
            if g.name:
                head += " @" + _fmt_name(g.name)
        inner = indent + "  "
        lines = [f"{head}{self._signature(g.inputs, indent)}{props} {{"]
        inputs = {id(v) for v in g.inputs}
        for v in g.initializers.values():
            lines.append(inner + self._init(v, inputs))
        for st in g.sparse_initializers:
            tok = self._new_token(st.name)
            self._sparse[(id(g), st.name)] = tok
            lines.append(f"{inner}sparse_init {tok} = {self._sparse_tensor(st, st.name)}")
        for n in g:
            lines.append(inner + self._node(n, inner))
        if g.outputs:
            lines.append(inner + "return " + ", ".join([self._token(v) for v in g.outputs]))
        lines.append(indent + "}")
        return "\n".join(lines)

    def function(self, f: Function) -> str:
        self._begin_unit(f.graph)
        name = _quote(f.name) if f.name in _DTYPES else f.name
        head = "func " + _fmt_op(f.domain, name)
        if f.attributes:
            params = [_fmt_ident(name) if a is None else self._attr(name, a, "")
                      for name, a in f.attributes.items()]
            head += "[" + ", ".join(params) + "]"
        items: list[tuple[str, Any]] = []
        if f.overload:
            items.append(("overload", f.overload))
        if f.opset_imports:
            items.append(("opset_imports", f.opset_imports))
        if f.doc_string:
            items.append(("doc_string", f.doc_string))
        if f.metadata_props:
            items.append(("metadata_props", f.metadata_props))
        if f.graph.name != f.name:
            items.append(("graph_name", f.graph.name))
        return self._graph(f.graph, "", head, _fmt_props(items))

    def graph(self, g: Graph) -> str:
        self._begin_unit(g)
        return self._graph(g, "")

    def model(self, m: Model) -> str:
        items: list[tuple[str, Any]] = [("ir_version", m.ir_version),
                                        ("opset_imports", m.opset_imports)]
        for key in ("producer_name", "producer_version", "domain", "model_version",
                    "doc_string", "metadata_props", "raw_fields"):
            value = getattr(m, key)
            if value:
                items.append((key, value))
        header = "model" + _fmt_props(items)
        if len(header) > 100:
            fields = ",\n".join(f"  {k}: {_fmt_literal(v)}" for k, v in items)
            header = f"model <\n{fields}\n>"
        parts = [header + "\n" + self.graph(m.graph)]
        parts += [self.function(f) for f in m.functions.values()]
        return "\n\n".join(parts) + "\n"


def print_model(model: Model, *, elide_above: int | None = DEFAULT_ELIDE_ABOVE) -> str:
    """The text form of a model.

    Args:
        model: the model to print.
        elide_above: tensors with more elements are shown as ``f32[1024,1024]{...}``
            without their data (and without loading lazily loaded weights). With None,
            every tensor is printed in full and the text parses back to the same model.

    Returns:
        The text, ending with a newline.
    """
    return _Printer(elide_above).model(model)


def print_graph(graph: Graph, *, elide_above: int | None = DEFAULT_ELIDE_ABOVE) -> str:
    """The text form of one graph (``graph @name(...) {...}``); see :func:`print_model`.

    Values that a subgraph reads from enclosing graphs are printed by name.
    """
    return _Printer(elide_above).graph(graph)


def print_function(function: Function, *,
                   elide_above: int | None = DEFAULT_ELIDE_ABOVE) -> str:
    """The text form of a model-local function (``func domain::name(...) {...}``)."""
    return _Printer(elide_above).function(function)


# ------------------------------------------------------------------------------ parsing
def _is_str_map(v: Any) -> bool:
    return isinstance(v, dict) and all(isinstance(x, str) for x in v.values())


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_bytes_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, bytes) for x in v)


def _is_quant_annotation(v: Any) -> bool:
    return isinstance(v, list) and all(
        isinstance(x, list) and len(x) == 2 and isinstance(x[0], str) and _is_str_map(x[1])
        for x in v
    )


_Spec = dict[str, tuple[Callable[[Any], bool], str]]
_STR: tuple[Callable[[Any], bool], str] = (lambda v: isinstance(v, str), "a string")
_STR_MAP: tuple[Callable[[Any], bool], str] = (_is_str_map, 'a map of strings {"k": "v"}')
_OPSETS: tuple[Callable[[Any], bool], str] = (
    lambda v: isinstance(v, dict) and all(_is_int(x) for x in v.values()),
    'a map of opset versions {"": 21}',
)
_MODEL_PROPS: _Spec = {
    "ir_version": (_is_int, "an integer"),
    "opset_imports": _OPSETS,
    "producer_name": _STR,
    "producer_version": _STR,
    "domain": _STR,
    "model_version": (_is_int, "an integer"),
    "doc_string": _STR,
    "metadata_props": _STR_MAP,
    "raw_fields": (lambda v: isinstance(v, dict) and all(_is_bytes_list(x) for x in v.values()),
                   'a map of lists of bytes {"training_info": [b"..."]}'),
}
_GRAPH_PROPS: _Spec = {
    "doc_string": _STR,
    "metadata_props": _STR_MAP,
    "quantization_annotation": (_is_quant_annotation, 'a list of ["tensor", {"k": "v"}]'),
}
_FUNCTION_PROPS: _Spec = {
    "overload": _STR,
    "opset_imports": _OPSETS,
    "doc_string": _STR,
    "metadata_props": _STR_MAP,
    "graph_name": _STR,
}
_NODE_PROPS: _Spec = {
    "overload": _STR,
    "doc_string": _STR,
    "metadata_props": _STR_MAP,
    "device_configurations": (_is_bytes_list, "a list of bytes"),
}
_VALUE_PROPS: _Spec = {
    "doc_string": _STR,
    "metadata_props": _STR_MAP,
    "value_info": (lambda v: isinstance(v, bool), "true or false"),
}
_TENSOR_PROPS: _Spec = {"name": _STR, "doc_string": _STR, "metadata_props": _STR_MAP}
_ATTR_PROPS: _Spec = {"doc_string": _STR}

_Key = str | tuple[str, int]


class _Scope:
    """The values one graph defines, over those of the enclosing graphs.

    A use before the definition gets a placeholder Value, swapped for the real one when
    the name is defined in this graph or, once the graph ends, in an enclosing one.
    """

    __slots__ = ("values", "parent", "pending", "inputs")

    def __init__(self, parent: _Scope | None) -> None:
        self.values: dict[_Key, Value] = {}
        self.inputs: set[int] = set()  # ids of this graph's inputs
        self.parent = parent
        # key -> [placeholder, position, token, graph-output sites (graph, index)]
        self.pending: dict[_Key, list[Any]] = {}

    def lookup(self, key: _Key) -> Value | None:
        s: _Scope | None = self
        while s is not None:
            v = s.values.get(key)
            if v is not None:
                return v
            s = s.parent
        return None

    def forward(self, key: _Key, name: str, pos: int, tok: str) -> list[Any]:
        entry = self.pending.get(key)
        if entry is None:
            entry = self.pending[key] = [Value(name), pos, tok, []]
        return entry

    def define(self, key: _Key, v: Value) -> bool:
        """Bind ``key``; False if this graph already defines it."""
        if key in self.values:
            return False
        self.values[key] = v
        if self.pending:
            entry = self.pending.pop(key, None)
            if entry is not None:
                _replace_placeholder(entry, v)
        return True

    def close(self) -> None:
        """Hand the uses still unresolved to the enclosing graph."""
        parent = self.parent
        assert parent is not None
        for key, entry in self.pending.items():
            existing = parent.pending.get(key)
            if existing is None:
                parent.pending[key] = entry
            else:
                _replace_placeholder(entry, existing[0])
                existing[3].extend(entry[3])


def _replace_placeholder(entry: list[Any], v: Value) -> None:
    placeholder: Value = entry[0]
    for node, i in placeholder.uses():
        node.replace_input_with(i, v)
    for g, i in entry[3]:
        g.outputs[i] = v


def _number(tok: str) -> int | float:
    """The value of a number token: int (decimal or 0x...) or float."""
    try:
        return int(tok)
    except ValueError:
        pass
    if tok.lstrip("-")[:2] in ("0x", "0X"):
        return int(tok, 16)
    return float(tok)


class _BadDim:
    """Why a dimension could not be read (the caller knows where it is)."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message


def _dim(item: str) -> int | str | None | _BadDim:
    """A dimension from its (stripped) text: int, symbolic str, or None for ``?``."""
    if item == "?":
        return None
    if _INT.fullmatch(item):
        return _BadDim(f"negative dimension {item}") if item[0] == "-" else int(item)
    if item == "*":
        return _BadDim("'*' (unknown rank) must be the only entry of a shape")
    if _DIM_BARE.fullmatch(item):
        return item
    return _BadDim(f"malformed dimension {item!r} (quote symbolic names)")


def _f32(x: float) -> float:
    with np.errstate(all="ignore"):
        return float(np.float32(x))


def _int_range(dtype: DataType) -> tuple[int, int]:
    bits = dtype.bitwidth
    if dtype in _SIGNED:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


class _ElementError(Exception):
    """A tensor element that cannot be read: its index and offset in the data text."""

    def __init__(self, index: int, message: str, offset: int = 0) -> None:
        super().__init__(message)
        self.index = index
        self.offset = offset


def _parse_bools(items: list[str]) -> np.ndarray:
    out = []
    for i, s in enumerate(items):
        s = s.strip()
        if s in ("true", "1"):
            out.append(True)
        elif s in ("false", "0"):
            out.append(False)
        else:
            raise _ElementError(i, f"expected true or false, found {s!r}")
    return np.array(out, dtype=np.bool_)


def _parse_ints(items: list[str], dtype: DataType) -> np.ndarray:
    lo, hi = _int_range(dtype)
    out = []
    for i, s in enumerate(items):
        try:
            x = int(s)
        except ValueError:
            raise _ElementError(i, f"expected an integer, found {s.strip()!r}") from None
        if not lo <= x <= hi:
            raise _ElementError(i, f"{x} is out of range for {dtype.short_name}")
        out.append(x)
    return np.array(out, dtype=dtype.numpy)


def _parse_floats(items: list[str], np_dtype: np.dtype) -> np.ndarray:
    """Floats from their text; ``0x...`` gives an element's bit pattern."""
    try:
        with np.errstate(all="ignore"):
            return np.array(items, dtype=np.float64).astype(np_dtype)
    except ValueError:
        pass
    values = np.zeros(len(items), dtype=np.float64)
    patterns: list[tuple[int, int]] = []
    for i, s in enumerate(items):
        s = s.strip()
        try:
            if s[:2] in ("0x", "0X"):
                patterns.append((i, int(s, 16)))
            else:
                values[i] = float(s)
        except ValueError:
            raise _ElementError(i, f"expected a number, found {s!r}") from None
    with np.errstate(all="ignore"):
        array = values.astype(np_dtype)
    bits = _uint_view(array)
    limit = 1 << (8 * np_dtype.itemsize)
    for i, pattern in patterns:
        if pattern >= limit:
            raise _ElementError(i, f"bit pattern {items[i].strip()} is too wide")
        bits[i] = pattern
    return array


def _skip_blanks(text: str, pos: int) -> int:
    return len(text) - len(text[pos:].lstrip()) if text[pos:].strip() else pos


def _parse_complex(body: str, dtype: DataType) -> np.ndarray:
    """Complex elements ``(re, im), ...`` from the text between the braces."""
    texts: list[str] = []
    starts: list[int] = []
    pos = 0
    while body[pos:].strip():
        m = _COMPLEX_DATA.match(body, pos)
        if m is None:
            raise _ElementError(len(starts), "expected (re, im)", _skip_blanks(body, pos))
        texts += [m.group(1), m.group(2)]
        starts.append(pos)
        pos = m.end()
        if not m.group(3):
            break
    if body[pos:].strip():
        raise _ElementError(len(starts), "expected ',' between elements",
                            _skip_blanks(body, pos))
    try:
        return _parse_floats(texts, _COMPLEX[dtype]).view(dtype.numpy)
    except _ElementError as exc:
        exc.offset = starts[exc.index // 2]
        raise


def _parse_numeric(items: list[str], dtype: DataType) -> np.ndarray:
    if dtype == DataType.BOOL:
        return _parse_bools(items)
    if dtype.is_floating():
        return _parse_floats(items, dtype.numpy)
    if dtype.is_integer():
        return _parse_ints(items, dtype)
    raise _ElementError(0, f"tensors of {dtype.name} cannot be written")


class _Parser:
    """A recursive-descent parser over the token list of the whole text.

    Positions are token indices; they become line:column only for error messages (and
    character offsets for the few constructs scanned straight from the text).
    """

    def __init__(self, text: str, source: str) -> None:
        self.text = text
        self.source = source
        self.pairs: list[tuple[str, str]] = _TOKENS.findall(text)
        self.toks = [tok for _, tok in self.pairs]
        self.toks += ["", ""]  # the end of the text (twice: look-ahead never runs off)
        self._starts: list[int] | None = None
        self.scope: _Scope | None = None
        self._types: dict[str, tuple[DataType, Shape | None]] = {}
        self.i = -1
        self._advance()

    # -- tokens --------------------------------------------------------------------------
    def _advance(self) -> None:
        i = self.i + 1
        self.i = i
        tok = self.toks[i]
        self.tok = tok
        if len(tok) < 2:
            self.kind = _SINGLE_KIND.get(tok, "error")
            return
        kind = _FIRST_KIND.get(tok[0], "error")
        if kind == "ident":
            if tok[-1] == "]":
                kind = "shape"
            elif tok[1] == '"':
                kind = "bytes"
        elif kind == "number":
            if tok == "...":
                kind = "punct"
        elif kind == "string" and tok[-1] != '"':
            kind = "error"
        self.kind = kind

    def _peek2(self) -> str:
        """The token after the current one."""
        return self.toks[self.i + 1]

    def _char(self, index: int) -> int:
        """The offset in the text where token ``index`` starts."""
        if self._starts is None:
            starts, pos = [], 0
            for ws, tok in self.pairs:
                pos += len(ws)
                starts.append(pos)
                pos += len(tok)
            starts.append(len(self.text.rstrip()) if self.pairs else 0)
            self._starts = starts
        return self._starts[index]

    def _jump(self, offset: int) -> None:
        """Go on with the first token at or after text ``offset`` (after a raw scan)."""
        self._char(0)
        assert self._starts is not None
        self.i = bisect.bisect_left(self._starts, offset) - 1
        self._advance()

    def _error(self, message: str, at: int | None = None) -> ParseError:
        """An error at token ``at`` (default: the current one)."""
        return self._error_char(message, self._char(self.i if at is None else at))

    def _error_char(self, message: str, pos: int) -> ParseError:
        line = self.text.count("\n", 0, pos) + 1
        col = pos - (self.text.rfind("\n", 0, pos) + 1) + 1
        return ParseError(f"{self.source}:{line}:{col}: {message}")

    def _found(self) -> str:
        if self.kind == "eof":
            return "the end of the text"
        if self.tok == '"' or (self.kind == "error" and self.tok[:1] == '"'):
            return "an unterminated string"
        tok = self.tok if len(self.tok) <= 24 else self.tok[:21] + "..."
        return repr(tok)

    def _expect(self, tok: str) -> None:
        if self.tok != tok:
            raise self._error(f"expected {tok!r}, found {self._found()}")
        self._advance()

    def _accept(self, tok: str) -> bool:
        if self.tok == tok:
            self._advance()
            return True
        return False

    def _unquote(self, body: str, at: int) -> str:
        try:
            return _unescape(body)
        except ValueError as exc:
            raise self._error(f"bad string literal: {exc}", at) from None

    def _bytes(self, tok: str, at: int) -> bytes:
        body = tok[2:-1]
        if not body.isascii():
            raise self._error("a bytes literal holds ASCII only; write other bytes as \\xHH",
                              at)
        try:
            return _unescape(body).encode("latin-1")
        except (ValueError, UnicodeEncodeError):
            raise self._error("bad bytes literal (escapes above \\xff)", at) from None

    def _name(self, what: str = "a name") -> str:
        tok, at = self.tok, self.i
        if self.kind == "ident":
            self._advance()
            return tok
        if self.kind == "string":
            self._advance()
            return self._unquote(tok[1:-1], at)
        raise self._error(f"expected {what}, found {self._found()}")

    def _string(self) -> str:
        if self.kind != "string":
            raise self._error(f"expected a string, found {self._found()}")
        tok, at = self.tok, self.i
        self._advance()
        return self._unquote(tok[1:-1], at)

    def _symbol(self) -> str:
        tok, at = self.tok, self.i
        self._advance()
        return self._unquote(tok[2:-1], at) if tok[1] == '"' else tok[1:]

    # -- literals and properties ---------------------------------------------------------
    def _numbers(self, tok: str) -> list[int | float]:
        """The numbers of a number-list token such as ``[1, 2.5]``."""
        return [_number(x.strip()) for x in tok[1:-1].split(",")]

    def _int_list(self, what: str) -> tuple[int, ...]:
        """``[1, 2]`` (non-negative integers) or ``[]``."""
        at = self.i
        if self.kind == "numlist":
            values = self._numbers(self.tok)
            self._advance()
        else:
            self._expect("[")
            self._expect("]")
            values = []
        if not all(isinstance(v, int) and v >= 0 for v in values):
            raise self._error(f"expected {what}", at)
        return tuple(values)  # type: ignore[arg-type]

    def _literal(self) -> Any:  # noqa: C901
        kind, tok, at = self.kind, self.tok, self.i
        if kind == "number":
            self._advance()
            return _number(tok)
        if kind == "string":
            self._advance()
            return self._unquote(tok[1:-1], at)
        if kind == "bytes":
            self._advance()
            return self._bytes(tok, at)
        if kind == "numlist":
            self._advance()
            return self._numbers(tok)
        if kind == "ident" and tok in ("true", "false", "nan", "inf"):
            self._advance()
            return tok == "true" if tok in ("true", "false") else float(tok)
        if tok == "[":
            self._advance()
            items = []
            while self.tok != "]":
                items.append(self._literal())
                if not self._accept(","):
                    break
            self._expect("]")
            return items
        if tok == "{":
            self._advance()
            entries: dict[str, Any] = {}
            while self.tok != "}":
                key = self._name("a key")
                self._expect(":")
                entries[key] = self._literal()
                if not self._accept(","):
                    break
            self._expect("}")
            return entries
        raise self._error(f"expected a value, found {self._found()}")

    def _props(self, spec: _Spec, what: str) -> dict[str, Any]:
        self._expect("<")
        out: dict[str, Any] = {}
        while self.tok != ">":
            at = self.i
            key = self._name("a property name")
            if key not in spec:
                raise self._error(f"unknown {what} property {key!r} (known: "
                                  f"{', '.join(spec)})", at)
            self._expect(":")
            vat = self.i
            value = self._literal()
            check, expected = spec[key]
            if not check(value):
                raise self._error(f"{what} property {key!r} must be {expected}", vat)
            out[key] = value
            if not self._accept(","):
                break
        self._expect(">")
        return out

    # -- types ---------------------------------------------------------------------------
    def _dtype(self) -> DataType:
        dt = _DTYPES.get(self.tok) if self.kind == "ident" else None
        if dt is None:
            raise self._error(f"expected an element type such as f32, found {self._found()}")
        self._advance()
        return dt

    def _tensor_type(self) -> tuple[DataType, Shape | None]:
        """An element type and its shape: ``f32[N,3]``, ``f32[*]`` or ``f32``."""
        tok, kind = self.tok, self.kind
        if kind == "shape":
            cached = self._types.get(tok)
            if cached is None:
                cached = self._types[tok] = self._shape_token(tok)
            self._advance()
            return cached
        dt = self._dtype()
        if self.tok != "[":
            return dt, None
        return dt, self._shape_slow(self._char(self.i))

    def _shape_token(self, tok: str) -> tuple[DataType, Shape | None]:
        bracket = tok.index("[")
        dt = _DTYPES[tok[:bracket]]
        content = tok[bracket + 1:-1]
        items = [s.strip() for s in content.split(",")] if content.strip() else []
        if items == ["*"]:
            return dt, None
        dims = []
        for item in items:
            dim = _dim(item)
            if isinstance(dim, _BadDim):  # read it again from the text, to say where
                self._shape_slow(self._char(self.i) + bracket)
                raise self._error(dim.message)
            dims.append(dim)
        return dt, Shape(dims)

    def _shape_slow(self, start: int) -> Shape:
        """A shape scanned from the text at ``start`` (its '['): quoted dims, denotations."""
        pos = start + 1
        if self.text[pos:].lstrip().startswith("]"):
            self._jump(self.text.index("]", pos) + 1)
            return Shape(())
        dims: list[int | str | None] = []
        dens: list[str] = []
        while True:
            m = _DIM_SLOW.match(self.text, pos)
            if m is None:
                raise self._error_char("malformed dimension (expected N, 3, ?, \"name\" or a "
                                       "denotation N:\"...\", then ',' or ']')",
                                       _skip_blanks(self.text, pos))
            quoted, bare, den, sep = m.groups()
            dims.append(self._quoted_at(quoted, m.start(1)) if quoted is not None
                        else self._dim_at(bare, m.start(2)))
            dens.append(self._quoted_at(den, m.start(3)) if den is not None else "")
            pos = m.end()
            if sep == "]":
                break
        self._jump(pos)
        return Shape(dims, dens)

    def _quoted_at(self, literal: str, pos: int) -> str:
        try:
            return _unescape(literal[1:-1])
        except ValueError as exc:
            raise self._error_char(f"bad string literal: {exc}", pos) from None

    def _dim_at(self, item: str, pos: int) -> int | str | None:
        dim = _dim(item)
        if isinstance(dim, _BadDim):
            raise self._error_char(dim.message, pos)
        return dim

    def _type(self) -> Type | None:  # noqa: C901
        tok, kind = self.tok, self.kind
        if tok == "?":
            self._advance()
            return None
        if kind == "shape" or (kind == "ident" and tok in _DTYPES):
            dt, shape = self._tensor_type()
            return TensorType(dt, shape, self._denotation())
        if kind != "ident":
            raise self._error(f"expected a type, found {self._found()}")
        if tok not in ("sparse", "seq", "opt", "map", "opaque"):
            raise self._error(f"unknown type {tok!r}")
        self._advance()
        self._expect("<")
        if tok == "sparse":
            dt, shape = self._tensor_type()
            self._expect(">")
            return SparseTensorType(dt, shape, self._denotation())
        if tok in ("seq", "opt"):
            elem = self._type()
            self._expect(">")
            cls = SequenceType if tok == "seq" else OptionalType
            return cls(elem, self._denotation())
        if tok == "map":
            key = self._dtype()
            self._expect(",")
            value = self._type()
            self._expect(">")
            return MapType(key, value, self._denotation())
        domain = self._string()
        self._expect(",")
        name = self._string()
        self._expect(">")
        return OpaqueType(domain, name, self._denotation())

    def _denotation(self) -> str:
        if self.tok != "denotation":
            return ""
        self._advance()
        return self._string()

    # -- tensors -------------------------------------------------------------------------
    def _tensor(self, name: str = "") -> Tensor:
        at = self.i
        dtype, shape = self._tensor_type()
        if shape is None or not shape.is_static():
            raise self._error("a tensor literal needs a static shape such as f32[2,3]", at)
        dims: tuple[int, ...] = shape.dims  # type: ignore[assignment]
        data_at = self.i
        if self.kind == "data":
            body, offset = self.tok[1:-1], -1
            self._advance()
        elif self.tok == "{":
            if dtype == DataType.STRING or (dtype in _COMPLEX and self._peek2() == "("):
                body, offset = None, -1
            else:
                body, offset = self._raw_body()
        else:
            raise self._error(f"expected '{{' and the tensor's elements, found {self._found()}")
        flat = self._elements(dtype, body, offset, data_at)
        size = math.prod(dims)
        if flat.size == size:
            array = flat.reshape(dims)
        elif flat.size == 1 and size > 1:
            array = np.broadcast_to(flat, dims).copy()
        else:
            raise self._error(f"tensor {dtype.short_name}{list(dims)} has {size} elements, "
                              f"but {flat.size} are written", data_at)
        props = self._props(_TENSOR_PROPS, "tensor") if self.tok == "<" else {}
        return Tensor(array, dtype=dtype, name=props.get("name", name),
                      doc_string=props.get("doc_string", ""),
                      metadata_props=props.get("metadata_props"))

    def _raw_body(self) -> tuple[str, int]:
        """The text between '{' (the current token) and the next '}', and its offset."""
        start = self._char(self.i) + 1
        close = self.text.find("}", start)
        if close < 0:
            raise self._error("tensor data has no closing '}'")
        self._jump(close + 1)
        return self.text[start:close], start

    def _elements(self, dtype: DataType, body: str | None, offset: int,
                  at: int) -> np.ndarray:
        """The flat elements of a tensor literal, from the body text or from tokens."""
        if body is not None and body.strip() == "...":
            raise self._error("tensor data was elided when this text was printed ('{...}'); "
                              "print with elide_above=None for text that parses", at)
        if body is None:
            return self._token_elements(dtype)
        try:
            if dtype in _COMPLEX:
                return _parse_complex(body, dtype)
            if dtype == DataType.STRING:
                if body.strip():
                    raise _ElementError(0, "string elements are quoted")
                return np.empty(0, dtype=object)
            items = body.split(",") if body.strip() else []
            if len(items) > 1 and not items[-1].strip():
                items.pop()
            try:
                return _parse_numeric(items, dtype)
            except _ElementError as exc:
                exc.offset = sum(len(s) + 1 for s in items[:exc.index])
                item = items[exc.index] if exc.index < len(items) else ""
                exc.offset += len(item) - len(item.lstrip())
                raise
        except _ElementError as exc:
            start = offset if offset >= 0 else self._char(at) + 1
            raise self._error_char(f"{dtype.short_name} element: {exc}",
                                   start + exc.offset) from None

    def _token_elements(self, dtype: DataType) -> np.ndarray:
        """String or complex data, read token by token."""
        self._expect("{")
        if self.tok == "...":
            raise self._error("tensor data was elided when this text was printed ('{...}'); "
                              "print with elide_above=None for text that parses")
        texts: list[str] = []
        strings: list[str | bytes] = []
        while self.tok != "}":
            if dtype == DataType.STRING:
                strings.append(self._string_element())
            else:
                self._expect("(")
                texts.append(self._float_text())
                self._expect(",")
                texts.append(self._float_text())
                self._expect(")")
            if not self._accept(","):
                break
        self._expect("}")
        if dtype == DataType.STRING:
            flat = np.empty(len(strings), dtype=object)
            flat[:] = strings
            return flat
        return _parse_floats(texts, _COMPLEX[dtype]).view(dtype.numpy)

    def _string_element(self) -> str | bytes:
        tok, at = self.tok, self.i
        if self.kind == "string":
            self._advance()
            return self._unquote(tok[1:-1], at)
        if self.kind == "bytes":
            self._advance()
            return self._bytes(tok, at)
        raise self._error(f"expected a string element, found {self._found()}")

    def _float_text(self) -> str:
        if self.kind == "number" or self.tok in ("nan", "inf"):
            tok = self.tok
            self._advance()
            return tok
        raise self._error(f"expected a number, found {self._found()}")

    def _sparse(self, name: str = "") -> SparseTensor:
        self._expect("sparse")
        self._expect("(")
        values = self._tensor(name)
        self._expect(",")
        indices = self._tensor()
        self._expect(",")
        dims = self._int_list("the dense shape, such as [10, 10]")
        self._expect(")")
        return SparseTensor(values, indices, dims)

    # -- attributes ----------------------------------------------------------------------
    def _attrs(self) -> list[Attr]:
        self._advance()  # '{'
        attrs: dict[str, Attr] = {}
        while self.tok != "}":
            at = self.i
            name = self._name("an attribute name")
            if name in attrs:
                raise self._error(f"attribute {name!r} is given twice", at)
            self._expect(":")
            attrs[name] = self._attr(name)
            if not self._accept(","):
                break
        self._expect("}")
        return list(attrs.values())

    def _attr(self, name: str) -> Attr:
        """An attribute's value (after ``name:``), with its optional kind and props."""
        explicit = None
        if self.kind == "ident" and self.tok in _KINDS and self._peek2() == "=":
            explicit = _KINDS[self.tok]
            self._advance()
            self._advance()
        at = self.i
        if self.kind == "sym":
            ref = self._symbol()
            if explicit is None:
                raise self._error(f"attribute {name!r}: a reference needs its kind, as in "
                                  f"'{name}: float = @{ref}'", at)
            attr = Attr(name, explicit, None, ref_attr_name=ref)
        else:
            kind, value = self._attr_value()
            kind, value = self._coerce(name, kind, value, explicit, at)
            attr = Attr(name, kind, value)
        if self.tok == "<":
            attr.doc_string = self._props(_ATTR_PROPS, "attribute").get("doc_string", "")
        return attr

    def _attr_value(self) -> tuple[AttrType | None, Any]:  # noqa: C901
        """A literal and the kind it implies (None for an empty list)."""
        kind, tok, at = self.kind, self.tok, self.i
        if kind == "number":
            self._advance()
            value = _number(tok)
            return (AttrType.INT, value) if isinstance(value, int) else (AttrType.FLOAT, value)
        if kind == "numlist":
            self._advance()
            values = self._numbers(tok)
            if all(isinstance(v, int) for v in values):
                return AttrType.INTS, values
            return AttrType.FLOATS, [float(v) for v in values]
        if kind == "string":
            self._advance()
            return AttrType.STRING, self._unquote(tok[1:-1], at)
        if kind == "bytes":
            self._advance()
            return AttrType.STRING, self._bytes(tok, at)
        if kind == "shape" or (kind == "ident" and tok in _DTYPES):
            return AttrType.TENSOR, self._tensor()
        if tok == "[":
            return self._attr_list()
        if tok == "?":
            self._advance()
            return AttrType.UNDEFINED, None
        if kind == "ident":
            if tok in ("nan", "inf"):
                self._advance()
                return AttrType.FLOAT, float(tok)
            if tok == "graph":
                return AttrType.GRAPH, self._graph(self.scope)
            if tok == "sparse":
                return AttrType.SPARSE_TENSOR, self._sparse()
            if tok == "type":
                self._advance()
                self._expect("<")
                t = self._type()
                self._expect(">")
                return AttrType.TYPE_PROTO, t
        raise self._error(f"expected an attribute value, found {self._found()}")

    def _attr_list(self) -> tuple[AttrType | None, list[Any]]:
        at = self.i
        self._advance()  # '['
        items = []
        while self.tok != "]":
            items.append(self._attr_value())
            if not self._accept(","):
                break
        self._expect("]")
        if not items:
            return None, []
        kinds = {k for k, _ in items}
        if kinds == {AttrType.INT, AttrType.FLOAT}:
            return AttrType.FLOATS, [float(v) for _, v in items]
        kind = kinds.pop() if len(kinds) == 1 else None
        if kind not in _LIST_OF:
            raise self._error("a list attribute holds values of one kind: ints, floats, "
                              "strings, tensors, graphs, sparse tensors or types", at)
        return _LIST_OF[kind], [v for _, v in items]

    def _coerce(self, name: str, kind: AttrType | None, value: Any,
                explicit: AttrType | None, at: int) -> tuple[AttrType, Any]:
        if kind is None:
            if explicit not in _LIST_KINDS:
                raise self._error(f"attribute {name!r}: an empty list needs its kind, as in "
                                  f"'{name}: ints = []'", at)
            return explicit, []
        if kind == AttrType.UNDEFINED:
            return explicit or kind, None
        if explicit == AttrType.FLOAT and kind == AttrType.INT:
            kind, value = AttrType.FLOAT, float(value)
        elif explicit == AttrType.FLOATS and kind == AttrType.INTS:
            kind = AttrType.FLOATS
        elif explicit is not None and explicit != kind:
            raise self._error(f"attribute {name!r}: a {kind.name.lower()} value cannot be of "
                              f"kind {explicit.name.lower()}", at)
        if kind == AttrType.FLOAT:
            value = _f32(value)
        elif kind == AttrType.FLOATS:
            with np.errstate(all="ignore"):
                value = np.array(value, dtype=np.float32).tolist()
        return kind, value

    # -- values --------------------------------------------------------------------------
    def _key(self, tok: str, at: int) -> tuple[_Key, str]:
        """The scope key and the name of a value token."""
        if '"' not in tok and "#" not in tok:
            if len(tok) == 1:
                raise self._error("a value needs a name after '%'", at)
            return tok[1:], tok[1:]
        m = _VALUE_PARTS.fullmatch(tok)
        assert m is not None
        quoted, bare, number = m.groups()
        name = self._unquote(quoted, at) if quoted is not None else bare
        k = int(number) if number else 0
        return (name if k == 0 else (name, k)), name

    def _valuedef(self) -> tuple[_Key, Value, int, bool]:
        """``%x: type <props>``: the key, a new Value, its token, whether it is typed."""
        tok, at = self.tok, self.i
        if self.kind != "value":
            raise self._error(f"expected a value such as %x, found {self._found()}")
        self._advance()
        key, name = self._key(tok, at)
        v = Value(name)
        typed = self.tok == ":"
        if typed:
            self._advance()
            v.type = self._type()
        if self.tok == "<":
            self._value_props(v)
        return key, v, at, typed

    def _value_props(self, v: Value) -> None:
        props = self._props(_VALUE_PROPS, "value")
        v.doc_string = props.get("doc_string", "")
        v.metadata_props = dict(props.get("metadata_props", {}))
        if props.get("value_info"):
            v.meta["onnx.value_info"] = True

    def _define(self, scope: _Scope, key: _Key, v: Value, at: int) -> None:
        if not scope.define(key, v):
            raise self._error(f"value {self.toks[at]} is defined twice in this graph", at)

    def _use(self) -> Value | None:
        tok, at = self.tok, self.i
        if self.kind != "value":
            if tok == "_":
                self._advance()
                return None
            raise self._error(f"expected a value such as %x or '_', found {self._found()}")
        self._advance()
        key, name = self._key(tok, at)
        scope = self.scope
        assert scope is not None
        v = scope.lookup(key)
        return v if v is not None else scope.forward(key, name, at, tok)[0]

    # -- graphs --------------------------------------------------------------------------
    def _graph(self, parent: _Scope | None) -> Graph:
        self._expect("graph")
        g = Graph(name=self._symbol() if self.kind == "sym" else "")
        scope = self._open(parent)
        self._inputs(g, scope)
        if self.tok == "<":
            props = self._props(_GRAPH_PROPS, "graph")
            g.doc_string = props.get("doc_string", "")
            g.metadata_props = dict(props.get("metadata_props", {}))
            g.quantization_annotation = [(name, dict(params)) for name, params
                                         in props.get("quantization_annotation", [])]
        self._body(g, scope)
        self._close(scope)
        return g

    def _open(self, parent: _Scope | None) -> _Scope:
        scope = _Scope(parent)
        self.scope = scope
        return scope

    def _close(self, scope: _Scope) -> None:
        self.scope = scope.parent
        if scope.parent is not None:
            scope.close()
            return
        if scope.pending:
            _, at, tok, _ = min(scope.pending.values(), key=lambda e: e[1])
            raise self._error(f"value {tok} is used but never defined", at)

    def _inputs(self, g: Graph, scope: _Scope) -> None:
        self._expect("(")
        while self.tok != ")":
            key, v, at, _ = self._valuedef()
            g.add_input(v)
            scope.inputs.add(id(v))
            self._define(scope, key, v, at)
            if not self._accept(","):
                break
        self._expect(")")

    def _body(self, g: Graph, scope: _Scope) -> None:
        self._expect("{")
        while self.tok != "}":
            tok = self.tok
            if tok in ("init", "sparse_init", "return") and self._peek2() not in ("(", "::"):
                if tok == "return":
                    self._return(g, scope)
                    break
                if tok == "init":
                    self._init(g, scope)
                else:
                    self._sparse_init(g, scope)
            elif self.kind == "eof":
                raise self._error("the graph has no closing '}'")
            else:
                self._node(g, scope)
        self._expect("}")

    def _init(self, g: Graph, scope: _Scope) -> None:
        self._advance()
        key, v, at, typed = self._valuedef()
        existing = scope.values.get(key)
        self._expect("=")
        tensor = self._tensor(v.name)
        if existing is not None and id(existing) in scope.inputs and \
                existing.const_value is None:
            if typed or v.doc_string or v.metadata_props or v.meta:
                raise self._error("the default of a graph input takes its type and "
                                  "properties from the input", at)
            existing.const_value = tensor
            g.initializers[existing.name] = existing
            return
        v.const_value = tensor
        declared = v.type
        try:
            g.register_initializer(v)
        except ValueError as exc:
            raise self._error(str(exc), at) from None
        if typed:
            v.type = declared
        self._define(scope, key, v, at)

    def _sparse_init(self, g: Graph, scope: _Scope) -> None:
        self._advance()
        key, v, at, typed = self._valuedef()
        self._expect("=")
        st = self._sparse(v.name)
        if not typed:
            v.type = SparseTensorType(st.values.dtype, Shape(st.dims))
        v._graph = g
        g.sparse_initializers.append(st)
        self._define(scope, key, v, at)

    def _return(self, g: Graph, scope: _Scope) -> None:
        self._advance()
        while self.tok != "}":
            tok, at = self.tok, self.i
            if self.kind != "value":
                raise self._error(f"expected a graph output such as %y, found {self._found()}")
            self._advance()
            key, name = self._key(tok, at)
            v = scope.lookup(key)
            if v is None:
                entry = scope.forward(key, name, at, tok)
                entry[3].append((g, len(g.outputs)))
                v = entry[0]
            g.outputs.append(v)
            if not self._accept(","):
                break
        if self.tok != "}":
            raise self._error(f"expected '}}' after the return statement, found {self._found()}")

    def _opname(self) -> tuple[str, str]:
        first = self._name("an operator")
        if self.tok == "::":
            self._advance()
            return first, self._name("an operator")
        return "", first

    def _outputs(self) -> list[tuple[_Key | None, Value, int]]:
        outs: list[tuple[_Key | None, Value, int]] = []
        while True:
            if self.tok == "_":
                outs.append((None, Value(), self.i))
                self._advance()
            else:
                key, v, at, _ = self._valuedef()
                outs.append((key, v, at))
            if not self._accept(","):
                break
        self._expect("=")
        return outs

    def _node(self, g: Graph, scope: _Scope) -> None:
        at = self.i
        outs: list[tuple[_Key | None, Value, int]] = []
        if self.kind == "value" or (self.tok == "_" and self._peek2() != "("):
            outs = self._outputs()
        domain, op_type = self._opname()
        self._expect("(")
        inputs = []
        while self.tok != ")":
            inputs.append(self._use())
            if not self._accept(","):
                break
        self._expect(")")
        attrs = self._attrs() if self.tok == "{" else []
        name = self._symbol() if self.kind == "sym" else ""
        props = self._props(_NODE_PROPS, "node") if self.tok == "<" else {}
        try:
            node = Node(domain, op_type, inputs, attrs, outputs=[v for _, v, _ in outs],
                        name=name, overload=props.get("overload", ""),
                        doc_string=props.get("doc_string", ""),
                        metadata_props=props.get("metadata_props"))
        except ValueError as exc:
            raise self._error(str(exc), at) from None
        if "device_configurations" in props:
            node.device_configurations = list(props["device_configurations"])
        g.append(node)
        for key, v, vat in outs:
            if key is not None:
                self._define(scope, key, v, vat)

    def _function(self) -> Function:
        self._expect("func")
        domain, name = self._opname()
        scope = self._open(None)
        params: list[str | Attr] = []
        if self._accept("["):
            while self.tok != "]":
                pname = self._name("an attribute parameter")
                if self._accept(":"):
                    params.append(self._attr(pname))
                else:
                    params.append(pname)
                if not self._accept(","):
                    break
            self._expect("]")
        g = Graph(name=name)
        self._inputs(g, scope)
        props = self._props(_FUNCTION_PROPS, "function") if self.tok == "<" else {}
        self._body(g, scope)
        self._close(scope)
        g.name = props.get("graph_name", name)
        return Function(domain, name, g, attributes=params,
                        opset_imports=props.get("opset_imports"),
                        overload=props.get("overload", ""),
                        doc_string=props.get("doc_string", ""),
                        metadata_props=props.get("metadata_props"))

    def model(self) -> Model:
        header: dict[str, Any] = {}
        if self.tok == "model":
            self._advance()
            if self.tok == "<":
                header = self._props(_MODEL_PROPS, "model")
        if self.tok != "graph":
            raise self._error(f"expected 'graph', found {self._found()}")
        graph = self._graph(None)
        functions: list[Function] = []
        seen: set[tuple[str, str, str]] = set()
        while self.tok == "func":
            at = self.i
            f = self._function()
            if f.identifier in seen:
                raise self._error(f"function {f.domain}::{f.name} is defined twice", at)
            seen.add(f.identifier)
            functions.append(f)
        self._expect_end("'func'")
        model = Model(graph, ir_version=header.get("ir_version", 10),
                      opset_imports=header.get("opset_imports"),
                      producer_name=header.get("producer_name", ""),
                      producer_version=header.get("producer_version", ""),
                      domain=header.get("domain", ""),
                      model_version=header.get("model_version", 0),
                      doc_string=header.get("doc_string", ""),
                      metadata_props=header.get("metadata_props"), functions=functions)
        model.raw_fields = {k: list(v) for k, v in header.get("raw_fields", {}).items()}
        return model

    def graph(self) -> Graph:
        g = self._graph(None)
        self._expect_end()
        return g

    def function(self) -> Function:
        f = self._function()
        self._expect_end()
        return f

    def _expect_end(self, alternative: str = "") -> None:
        if self.kind != "eof":
            what = f"{alternative} or the end of the text" if alternative else "the end of the text"
            raise self._error(f"expected {what}, found {self._found()}")


def _parse(text: str, source: str, what: Callable[[_Parser], Any]) -> Any:
    # The parser makes many linked objects and no garbage; pausing the cyclic collector
    # halves the time it takes.
    enabled = gc.isenabled()
    gc.disable()
    try:
        return what(_Parser(text, source))
    finally:
        if enabled:
            gc.enable()


def parse_model(text: str, *, source: str = "<text>") -> Model:
    """Read a model from its text form (see the module docstring for the grammar).

    Without a ``model <...>`` header the model has ir_version 10 and imports opset 21 of
    the default domain.

    Args:
        text: the text, as :func:`print_model` writes it or written by hand.
        source: how error messages name the text (a file name, say).

    Raises:
        ParseError: ``source:line:col: message`` for the first problem found.
    """
    return _parse(text, source, _Parser.model)


def parse_graph(text: str, *, source: str = "<text>") -> Graph:
    """Read one graph (``graph @name(...) {...}``) from its text form.

    Raises:
        ParseError: ``source:line:col: message`` for the first problem found.
    """
    return _parse(text, source, _Parser.graph)


def parse_function(text: str, *, source: str = "<text>") -> Function:
    """Read one function (``func domain::name(...) {...}``) from its text form.

    Raises:
        ParseError: ``source:line:col: message`` for the first problem found.
    """
    return _parse(text, source, _Parser.function)


# ------------------------------------------------------------------------------ comparing
_MAX_DIFF_LINES = 80


def _as_model(model: Model | str, what: str) -> Model:
    return parse_model(model, source=f"<{what}>") if isinstance(model, str) else model


def models_equal(a: Model | str, b: Model | str) -> bool:
    """Whether two models (or their text forms) serialize to the same ONNX protobuf
    (every field: names, order, types, attributes, tensor data, metadata)."""
    from kiln.ir.serde import serialize_model

    return serialize_model(_as_model(a, "first")) == serialize_model(_as_model(b, "second"))


def assert_models_equal(actual: Model | str, expected: Model | str) -> None:
    """Fail with a diff of the text forms unless the models serialize identically.

    Meant for golden tests of passes: either side may be a model or its text form::

        assert_models_equal(after, '''
            graph @main(%x: f32[3]) {
              %y = Relu(%x)
              return %y
            }
        ''')

    Args:
        actual: the model a test produced, or its text form.
        expected: the model it should equal, or its text form.

    Raises:
        AssertionError: the serialized protobufs differ; the message is a unified diff of
            the two printed models (tensors in full).
    """
    from kiln.ir.serde import serialize_model

    a = _as_model(actual, "actual")
    b = _as_model(expected, "expected")
    if serialize_model(a) == serialize_model(b):
        return
    lines_a = print_model(a, elide_above=None).splitlines()
    lines_b = print_model(b, elide_above=None).splitlines()
    diff = list(difflib.unified_diff(lines_b, lines_a, "expected", "actual", lineterm=""))
    if not diff:
        raise AssertionError("the models print the same but serialize differently")
    if len(diff) > _MAX_DIFF_LINES:
        diff = diff[:_MAX_DIFF_LINES] + [f"... ({len(diff) - _MAX_DIFF_LINES} more lines)"]
    raise AssertionError("the models differ:\n" + "\n".join(diff))
