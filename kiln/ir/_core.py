"""The graph IR: Model, Graph, Function, Node, Value and Attr.

Values are in SSA form and keep use-def chains: a Value has at most one producer and
knows every (node, input index) that consumes it. Node inputs are read-only; they change
through :meth:`Node.replace_input_with` and :meth:`Value.replace_all_uses_with`, which keep
the links. Removing a node whose outputs are still used raises. A graph's node list can
be edited while it is being iterated.
"""

from __future__ import annotations

import dataclasses
import enum
import heapq
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from kiln.ir._tensor import SparseTensor, Tensor
from kiln.ir._types import Shape, TensorType, Type


class AttrType(enum.IntEnum):
    """Attribute kinds; the integer values are ONNX's AttributeProto codes."""

    UNDEFINED = 0
    FLOAT = 1
    INT = 2
    STRING = 3
    TENSOR = 4
    GRAPH = 5
    FLOATS = 6
    INTS = 7
    STRINGS = 8
    TENSORS = 9
    GRAPHS = 10
    SPARSE_TENSOR = 11
    SPARSE_TENSORS = 12
    TYPE_PROTO = 13
    TYPE_PROTOS = 14


@dataclasses.dataclass(slots=True)
class Attr:
    """A node attribute. ``ref_attr_name`` is set inside functions for a reference to the
    caller's attribute (then ``value`` is None). Strings are ``str`` when they are valid
    UTF-8 and ``bytes`` otherwise."""

    name: str
    type: AttrType
    value: Any
    doc_string: str = ""
    ref_attr_name: str = ""

    @staticmethod
    def infer(name: str, value: Any) -> Attr:
        """An attribute whose type is inferred from a Python value."""
        kind = _infer_attr_type(value)
        normalized = _normalize_attr_value(value)
        if kind == AttrType.FLOATS:
            normalized = [float(v) for v in normalized]
        return Attr(name, kind, normalized)

    def __repr__(self) -> str:
        if self.ref_attr_name:
            return f"Attr({self.name}=@{self.ref_attr_name})"
        return f"Attr({self.name}={self.value!r})"


def _infer_attr_type(value: Any) -> AttrType:
    if isinstance(value, bool | int | np.integer):
        return AttrType.INT
    if isinstance(value, float | np.floating):
        return AttrType.FLOAT
    if isinstance(value, str | bytes):
        return AttrType.STRING
    if isinstance(value, Tensor | np.ndarray):
        return AttrType.TENSOR
    if isinstance(value, Graph):
        return AttrType.GRAPH
    if isinstance(value, SparseTensor):
        return AttrType.SPARSE_TENSOR
    if isinstance(value, Type):
        return AttrType.TYPE_PROTO
    if isinstance(value, Sequence) and value:
        kinds = {_infer_attr_type(v) for v in value}
        if kinds == {AttrType.INT, AttrType.FLOAT}:
            kinds = {AttrType.FLOAT}
        plural = {
            AttrType.FLOAT: AttrType.FLOATS,
            AttrType.INT: AttrType.INTS,
            AttrType.STRING: AttrType.STRINGS,
            AttrType.TENSOR: AttrType.TENSORS,
            AttrType.GRAPH: AttrType.GRAPHS,
            AttrType.SPARSE_TENSOR: AttrType.SPARSE_TENSORS,
            AttrType.TYPE_PROTO: AttrType.TYPE_PROTOS,
        }.get(kinds.pop()) if len(kinds) == 1 else None
        if plural is not None:
            return plural
    raise TypeError(f"cannot infer an attribute type for {value!r}")


def _normalize_attr_value(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return Tensor(value)
    if isinstance(value, bool | np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, list | tuple):
        return [_normalize_attr_value(v) for v in value]
    return value


class Value:
    """An SSA value: a graph input, an initializer, or a node output."""

    __slots__ = ("name", "type", "doc_string", "metadata_props", "const_value", "meta",
                 "_producer", "_index", "_uses", "_graph")

    def __init__(
        self,
        name: str = "",
        type: Type | None = None,
        *,
        const_value: Tensor | None = None,
        doc_string: str = "",
        metadata_props: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.type = type
        self.const_value = const_value
        self.doc_string = doc_string
        self.metadata_props = dict(metadata_props or {})
        self.meta: dict[str, Any] = {}
        self._producer: Node | None = None
        self._index: int | None = None
        # Ordered set of (consumer node, input index).
        self._uses: dict[tuple[Node, int], None] = {}
        # The graph that owns this value when it is a graph input or an initializer.
        self._graph: Graph | None = None

    def producer(self) -> Node | None:
        """The node that computes this value (None for graph inputs and initializers)."""
        return self._producer

    @property
    def index(self) -> int | None:
        """Position among the producer's outputs."""
        return self._index

    def uses(self) -> list[tuple[Node, int]]:
        """Every (node, input index) that reads this value, in the order they were added."""
        return list(self._uses)

    def consumers(self) -> list[Node]:
        """The distinct nodes that read this value."""
        return list(dict.fromkeys(node for node, _ in self._uses))

    @property
    def graph(self) -> Graph | None:
        """The graph that defines this value."""
        if self._producer is not None:
            return self._producer.graph
        return self._graph

    def is_graph_input(self) -> bool:
        g = self._graph
        return g is not None and any(v is self for v in g.inputs)

    def is_initializer(self) -> bool:
        g = self._graph
        return g is not None and g.initializers.get(self.name) is self

    def is_graph_output(self) -> bool:
        g = self.graph
        return g is not None and any(v is self for v in g.outputs)

    @property
    def shape(self) -> Shape | None:
        t = self.type
        return t.shape if isinstance(t, TensorType) else None

    @property
    def dtype(self):
        t = self.type
        return t.dtype if isinstance(t, TensorType) else None

    def replace_all_uses_with(self, new: Value, *, replace_graph_outputs: bool = False) -> None:
        """Make every consumer read ``new`` instead of this value.

        With ``replace_graph_outputs``, graph outputs that are this value become ``new``.
        """
        if new is self:
            return
        for node, i in list(self._uses):
            node.replace_input_with(i, new)
        if replace_graph_outputs:
            g = self.graph
            if g is not None:
                g.outputs[:] = [new if v is self else v for v in g.outputs]

    def _add_use(self, node: Node, index: int) -> None:
        self._uses[(node, index)] = None

    def _remove_use(self, node: Node, index: int) -> None:
        self._uses.pop((node, index), None)

    def __repr__(self) -> str:
        return f"Value({self.name!r}, {self.type})"


class Node:
    """An operator application: ``(domain, op_type, overload)`` with inputs, outputs and
    attributes. Missing optional inputs are ``None``."""

    __slots__ = ("domain", "op_type", "overload", "name", "attributes", "doc_string",
                 "metadata_props", "device_configurations", "meta", "_inputs", "_outputs",
                 "_graph", "_prev", "_next")

    def __init__(
        self,
        domain: str,
        op_type: str,
        inputs: Sequence[Value | None] = (),
        attributes: Iterable[Attr] | dict[str, Any] = (),
        *,
        outputs: Sequence[Value] | None = None,
        num_outputs: int = 1,
        name: str = "",
        overload: str = "",
        doc_string: str = "",
        metadata_props: dict[str, str] | None = None,
    ) -> None:
        self.domain = "" if domain == "ai.onnx" else domain
        self.op_type = op_type
        self.overload = overload
        self.name = name
        self.doc_string = doc_string
        self.metadata_props = dict(metadata_props or {})
        self.device_configurations: list[bytes] = []
        self.meta: dict[str, Any] = {}
        if isinstance(attributes, dict):
            attrs = [a if isinstance(a, Attr) else Attr.infer(k, a) for k, a in attributes.items()]
        else:
            attrs = list(attributes)
        self.attributes: dict[str, Attr] = {a.name: a for a in attrs}
        self._graph: Graph | None = None
        self._prev: Node | None = None
        self._next: Node | None = None
        for g in self.subgraphs():
            g.parent = self
        if outputs is None:
            outputs = [Value() for _ in range(num_outputs)]
        # Check the outputs before linking anything, so a refused node leaves no trace.
        for i, v in enumerate(outputs):
            if v._producer is not None:
                raise ValueError(f"value {v.name!r} already has a producer ({v._producer.label()})")
            if any(v is w for w in outputs[:i]):
                raise ValueError(f"value {v.name!r} is given twice as an output")
        self._inputs: tuple[Value | None, ...] = tuple(inputs)
        for i, v in enumerate(self._inputs):
            if v is not None:
                v._add_use(self, i)
        for i, v in enumerate(outputs):
            v._producer = self
            v._index = i
        self._outputs: tuple[Value, ...] = tuple(outputs)

    @property
    def inputs(self) -> tuple[Value | None, ...]:
        return self._inputs

    @property
    def outputs(self) -> tuple[Value, ...]:
        return self._outputs

    @property
    def graph(self) -> Graph | None:
        return self._graph

    def replace_input_with(self, index: int, value: Value | None) -> None:
        """Set input ``index`` to ``value``, keeping use-def links."""
        if not 0 <= index < len(self._inputs):
            raise IndexError(f"{self.label()} has no input {index}")
        old = self._inputs[index]
        if old is value:
            return
        if old is not None:
            old._remove_use(self, index)
        if value is not None:
            value._add_use(self, index)
        self._inputs = self._inputs[:index] + (value,) + self._inputs[index + 1:]

    def set_inputs(self, inputs: Sequence[Value | None]) -> None:
        """Replace all inputs (the count may change), keeping use-def links."""
        for i, v in enumerate(self._inputs):
            if v is not None:
                v._remove_use(self, i)
        self._inputs = tuple(inputs)
        for i, v in enumerate(self._inputs):
            if v is not None:
                v._add_use(self, i)

    def attr(self, name: str, default: Any = None) -> Any:
        """The value of attribute ``name``, or ``default``."""
        a = self.attributes.get(name)
        return default if a is None else a.value

    def subgraphs(self) -> Iterator[Graph]:
        """The graphs held in this node's attributes (If branches, Loop and Scan bodies)."""
        for a in self.attributes.values():
            if a.type == AttrType.GRAPH and a.value is not None:
                yield a.value
            elif a.type == AttrType.GRAPHS and a.value is not None:
                yield from a.value

    @property
    def qualified_op(self) -> str:
        return f"{self.domain}::{self.op_type}" if self.domain else self.op_type

    def label(self) -> str:
        """A short human-readable name for messages: ``Conv 'conv1'``."""
        if self.name:
            return f"{self.qualified_op} node {self.name!r}"
        outs = ", ".join(repr(v.name) for v in self._outputs if v.name)
        return f"{self.qualified_op} node" + (f" (outputs {outs})" if outs else "")

    def __repr__(self) -> str:
        return f"Node({self.label()})"


class Graph:
    """A computation graph: inputs, initializers, nodes in topological order, outputs.

    Also the body of functions and of control-flow subgraphs (``parent`` is the node
    holding it). ``value_info`` types are stored on the Values themselves.
    """

    __slots__ = ("name", "inputs", "outputs", "initializers", "sparse_initializers",
                 "doc_string", "metadata_props", "quantization_annotation", "parent", "meta",
                 "_head", "_tail", "_count", "_holders")

    def __init__(
        self,
        inputs: Sequence[Value] = (),
        outputs: Sequence[Value] = (),
        nodes: Iterable[Node] = (),
        initializers: Iterable[Value] = (),
        *,
        name: str = "",
        doc_string: str = "",
        metadata_props: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.doc_string = doc_string
        self.metadata_props = dict(metadata_props or {})
        self.inputs: list[Value] = []
        self.outputs: list[Value] = list(outputs)
        self.initializers: dict[str, Value] = {}
        self.sparse_initializers: list[SparseTensor] = []
        # ONNX quantization annotations: (tensor name, {key: value name}).
        self.quantization_annotation: list[tuple[str, dict[str, str]]] = []
        self.parent: Node | None = None
        self.meta: dict[str, Any] = {}
        self._head: Node | None = None
        self._tail: Node | None = None
        self._count = 0
        # Nodes holding subgraphs, built on first use, then kept by _link and remove.
        self._holders: dict[Node, None] | None = None
        for v in inputs:
            self.add_input(v)
        for v in initializers:
            self.register_initializer(v)
        for n in nodes:
            self.append(n)

    # -- values -------------------------------------------------------------------------
    def add_input(self, value: Value) -> Value:
        """Append a graph input."""
        if value._producer is not None:
            raise ValueError(f"graph input {value.name!r} is produced by {value._producer.label()}")
        value._graph = self
        self.inputs.append(value)
        return value

    def register_initializer(self, value: Value) -> Value:
        """Make ``value`` (with ``const_value`` set) an initializer of this graph."""
        if value.const_value is None:
            raise ValueError(f"initializer {value.name!r} has no const_value")
        if not value.name:
            raise ValueError("an initializer needs a name")
        if value._producer is not None:
            raise ValueError(f"initializer {value.name!r} is produced by {value._producer.label()}")
        other = self.initializers.get(value.name)
        if other is not None and other is not value:
            raise ValueError(f"duplicate initializer name {value.name!r}")
        value._graph = self
        if value.type is None:
            t = value.const_value
            value.type = TensorType(t.dtype, Shape(t.shape))
        self.initializers[value.name] = value
        return value

    def remove_initializer(self, name: str) -> None:
        """Remove an unused initializer."""
        value = self.initializers[name]
        if value._uses or value.is_graph_output():
            raise ValueError(f"initializer {name!r} is still used")
        del self.initializers[name]
        if not value.is_graph_input():
            value._graph = None

    # -- nodes --------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Node]:
        """Iterate nodes in order; nodes may be inserted or removed meanwhile."""
        node = self._head
        while node is not None:
            if node._graph is self:
                yield node
            node = node._next
            while node is not None and node._graph is not self:
                node = node._next

    def __len__(self) -> int:
        return self._count

    @property
    def nodes(self) -> list[Node]:
        """A snapshot list of the nodes."""
        return list(self)

    def _link(self, node: Node, prev: Node | None, nxt: Node | None) -> None:
        if node._graph is not None:
            raise ValueError(f"{node.label()} already belongs to a graph")
        node._graph = self
        node._prev, node._next = prev, nxt
        if prev is None:
            self._head = node
        else:
            prev._next = node
        if nxt is None:
            self._tail = node
        else:
            nxt._prev = node
        self._count += 1
        if self._holders is not None and any(True for _ in node.subgraphs()):
            self._holders[node] = None

    def append(self, node: Node) -> Node:
        """Add ``node`` at the end."""
        self._link(node, self._tail, None)
        return node

    def extend(self, nodes: Iterable[Node]) -> None:
        for n in nodes:
            self.append(n)

    def insert_before(self, ref: Node, nodes: Node | Iterable[Node]) -> None:
        """Insert ``nodes`` (in order) just before ``ref``."""
        self._check_member(ref)
        for n in [nodes] if isinstance(nodes, Node) else list(nodes):
            self._link(n, ref._prev, ref)

    def insert_after(self, ref: Node, nodes: Node | Iterable[Node]) -> None:
        """Insert ``nodes`` (in order) just after ``ref``."""
        self._check_member(ref)
        anchor = ref
        for n in [nodes] if isinstance(nodes, Node) else list(nodes):
            self._link(n, anchor, anchor._next)
            anchor = n

    def remove(self, nodes: Node | Iterable[Node], *, safe: bool = True) -> None:
        """Remove nodes from the graph and detach their inputs.

        With ``safe`` (the default), raise if an output of a removed node is still read by a
        node that stays, or is a graph output. Nodes inside the subgraphs of a removed node
        also let go of the outer values they read.
        """
        batch = list(dict.fromkeys([nodes] if isinstance(nodes, Node) else nodes))
        for n in batch:
            self._check_member(n)
        if safe:
            leaving = set(batch)
            for n in batch:
                for sub in n.subgraphs():
                    leaving.update(sub.all_nodes())
            for n in batch:
                for out in n._outputs:
                    users = [u for u, _ in out._uses if u not in leaving]
                    if users:
                        raise ValueError(
                            f"cannot remove {n.label()}: output {out.name!r} is used by "
                            f"{users[0].label()}"
                        )
                    if out.is_graph_output():
                        raise ValueError(
                            f"cannot remove {n.label()}: output {out.name!r} is a graph output"
                        )
        for n in batch:
            n.set_inputs(())
            for sub in n.subgraphs():
                _detach_captures(sub)
            prev, nxt = n._prev, n._next
            if prev is None:
                self._head = nxt
            else:
                prev._next = nxt
            if nxt is None:
                self._tail = prev
            else:
                nxt._prev = prev
            # Keep n._next so an iterator standing on n can move on.
            n._graph = None
            n._prev = None
            self._count -= 1
            if self._holders is not None:
                self._holders.pop(n, None)

    def _check_member(self, node: Node) -> None:
        if node._graph is not self:
            raise ValueError(f"{node.label()} is not in graph {self.name!r}")

    def sort(self) -> None:
        """Reorder nodes topologically, keeping the current order where it is valid.

        Raises ValueError naming a node on a cycle. A node that holds subgraphs depends on
        the producers of the outer values its subgraphs read.
        """
        nodes = list(self)
        position = {n: i for i, n in enumerate(nodes)}
        preds: dict[Node, set[Node]] = {n: set() for n in nodes}
        for n in nodes:
            for v in _read_values(n):
                p = v._producer
                if p is not None and p in position and p is not n:
                    preds[n].add(p)
                elif p is n:
                    raise ValueError(f"{n.label()} reads its own output {v.name!r}")
        succs: dict[Node, list[Node]] = {n: [] for n in nodes}
        indegree = {n: len(ps) for n, ps in preds.items()}
        for n, ps in preds.items():
            for p in ps:
                succs[p].append(n)
        heap = [(position[n], n) for n in nodes if indegree[n] == 0]
        heapq.heapify(heap)
        order: list[Node] = []
        while heap:
            _, n = heapq.heappop(heap)
            order.append(n)
            for s in succs[n]:
                indegree[s] -= 1
                if indegree[s] == 0:
                    heapq.heappush(heap, (position[s], s))
        if len(order) != len(nodes):
            # Every node left waits on a predecessor that is also left, so walking back
            # from one of them must come round to a node on a cycle.
            stuck = next(n for n in nodes if indegree[n] > 0)
            walked: set[Node] = set()
            while stuck not in walked:
                walked.add(stuck)
                stuck = next(p for p in preds[stuck] if indegree[p] > 0)
            raise ValueError(f"the graph has a cycle through {stuck.label()}")
        if order == nodes:
            return
        self._head = self._tail = None
        self._count = 0
        for n in nodes:
            n._graph = None
        for n in order:
            self.append(n)

    # -- queries ------------------------------------------------------------------------
    def subgraph_holders(self) -> list[Node]:
        """The nodes of this graph (not of its subgraphs) whose attributes hold subgraphs.

        Kept up to date as nodes are inserted and removed (in insertion order, not graph
        order); a node already in the graph that gains a graph attribute in place is not
        seen.
        """
        if self._holders is None:
            self._holders = {n: None for n in self if any(True for _ in n.subgraphs())}
        return list(self._holders)

    def all_values(self) -> Iterator[Value]:
        """Inputs, initializers and node outputs of this graph (not of subgraphs)."""
        yield from self.inputs
        for v in self.initializers.values():
            if not v.is_graph_input():
                yield v
        for n in self:
            yield from n._outputs

    def all_nodes(self) -> Iterator[Node]:
        """Nodes of this graph and, recursively, of its subgraphs."""
        for n in self:
            yield n
            for g in n.subgraphs():
                yield from g.all_nodes()

    def __repr__(self) -> str:
        return f"Graph({self.name!r}, {len(self)} nodes)"

    def __str__(self) -> str:
        from kiln.ir._text import print_graph

        return print_graph(self)


def _read_values(node: Node) -> Iterator[Value]:
    """Values a node reads: its inputs and the outer values its subgraphs capture."""
    for v in node._inputs:
        if v is not None:
            yield v
    for g in node.subgraphs():
        yield from captured_values(g)


def _detach_captures(graph: Graph) -> None:
    """Make the nodes inside ``graph`` stop reading values of enclosing scopes."""
    outer = {id(v) for v in captured_values(graph)}
    for node in graph.all_nodes():
        for i, v in enumerate(node._inputs):
            if v is not None and id(v) in outer:
                node.replace_input_with(i, None)


def captured_values(graph: Graph) -> list[Value]:
    """Values that ``graph`` (and its nested subgraphs) read from enclosing scopes."""
    inner: set[int] = set()
    captured: dict[int, Value] = {}

    def visit(g: Graph) -> None:
        for v in g.inputs:
            inner.add(id(v))
        for v in g.initializers.values():
            inner.add(id(v))
        for n in g:
            for v in n._inputs:
                if v is not None and id(v) not in inner:
                    captured.setdefault(id(v), v)
            for sub in n.subgraphs():
                visit(sub)
            for v in n._outputs:
                inner.add(id(v))
        for v in g.outputs:
            if id(v) not in inner:
                captured.setdefault(id(v), v)

    visit(graph)
    return [v for k, v in captured.items() if k not in inner]


class Function:
    """A model-local function (ONNX FunctionProto): a graph body with formal inputs,
    outputs and attribute parameters (with optional defaults)."""

    __slots__ = ("domain", "name", "overload", "graph", "attributes", "opset_imports",
                 "doc_string", "metadata_props", "meta")

    def __init__(
        self,
        domain: str,
        name: str,
        graph: Graph,
        *,
        attributes: Iterable[str | Attr] = (),
        opset_imports: dict[str, int] | None = None,
        overload: str = "",
        doc_string: str = "",
        metadata_props: dict[str, str] | None = None,
    ) -> None:
        self.domain = domain
        self.name = name
        self.overload = overload
        self.graph = graph
        # Attribute parameters: name -> default Attr, or None when it has no default.
        self.attributes: dict[str, Attr | None] = {}
        for a in attributes:
            if isinstance(a, Attr):
                self.attributes[a.name] = a
            else:
                self.attributes[a] = None
        self.opset_imports = dict(opset_imports or {})
        self.doc_string = doc_string
        self.metadata_props = dict(metadata_props or {})
        self.meta: dict[str, Any] = {}

    @property
    def identifier(self) -> tuple[str, str, str]:
        return (self.domain, self.name, self.overload)

    @property
    def inputs(self) -> list[Value]:
        return self.graph.inputs

    @property
    def outputs(self) -> list[Value]:
        return self.graph.outputs

    def __repr__(self) -> str:
        return f"Function({self.domain}::{self.name}, {len(self.graph)} nodes)"


class Model:
    """A model: its main graph, opset imports, model-local functions and metadata.

    ``raw_fields`` keeps, as serialized bytes, ONNX fields that kiln does not model
    (training_info, configuration) so that a load/save round trip loses nothing.
    """

    __slots__ = ("graph", "ir_version", "opset_imports", "producer_name", "producer_version",
                 "domain", "model_version", "doc_string", "metadata_props", "functions",
                 "raw_fields", "meta")

    def __init__(
        self,
        graph: Graph,
        *,
        ir_version: int = 10,
        opset_imports: dict[str, int] | None = None,
        producer_name: str = "",
        producer_version: str = "",
        domain: str = "",
        model_version: int = 0,
        doc_string: str = "",
        metadata_props: dict[str, str] | None = None,
        functions: Iterable[Function] = (),
    ) -> None:
        self.graph = graph
        self.ir_version = ir_version
        self.opset_imports = dict(opset_imports if opset_imports is not None else {"": 21})
        self.producer_name = producer_name
        self.producer_version = producer_version
        self.domain = domain
        self.model_version = model_version
        self.doc_string = doc_string
        self.metadata_props = dict(metadata_props or {})
        self.functions: dict[tuple[str, str, str], Function] = {f.identifier: f for f in functions}
        self.raw_fields: dict[str, list[bytes]] = {}
        self.meta: dict[str, Any] = {}

    @property
    def opset(self) -> int:
        """The default-domain (ai.onnx) opset version."""
        return self.opset_imports.get("", self.opset_imports.get("ai.onnx", 0))

    def __repr__(self) -> str:
        return f"Model({self.graph.name!r}, {len(self.graph)} nodes, opset {self.opset})"

    def __str__(self) -> str:
        from kiln.ir._text import print_model

        return print_model(self)
