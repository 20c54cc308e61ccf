"""verify(model): a cheap check of the IR's invariants, run after every pass.

Two checkers share the work. A fast one walks each graph once, builds no message and
checks use lists by counting: every input edge must be in its value's use list, and the
use lists of all values in scope must hold exactly as many entries as there are edges, so
each use is an edge too (no stale use, no use by a node outside the graphs). Only when it
finds a fault does the detailed checker run, to name the node or value.
"""

from __future__ import annotations

from kiln.errors import VerificationError
from kiln.ir._core import AttrType, Function, Graph, Model, Node, Value
from kiln.ir._types import TensorType

_GRAPH = AttrType.GRAPH
_GRAPHS = AttrType.GRAPHS


def verify(model: Model) -> None:
    """Check SSA, use-def links, topological order, types and opsets.

    Linear in the size of the model (nodes, edges, values), with no per-node allocation
    beyond a few tuples: cheap enough to run after every pass.

    Raises:
        VerificationError: naming the node or value that breaks an invariant.
    """
    if _fast_ok(model):
        return
    _verify_graph(model.graph, model.opset_imports, model, outer=set(), where="main graph")
    for f in model.functions.values():
        _verify_function(f, model)


# ------------------------------------------------------------------------------ fast path
class _Fault(Exception):
    """Raised by the fast checker on the first fault; the detailed checker names it."""


def _fast_ok(model: Model) -> bool:
    """True when the model passes every check of the detailed verifier (False may also
    mean a fault the detailed verifier then names)."""
    try:
        _FastChecker(model.functions).graph(model.graph, model.opset_imports)
        for f in model.functions.values():
            _FastChecker(model.functions).graph(f.graph, f.opset_imports)
    except _Fault:
        return False
    return True


class _FastChecker:
    """One scope tree (the main graph or a function body with their subgraphs).

    ``defined`` maps the values in scope (they hash by identity) to the depth of the graph
    defining them; ``balance`` counts the use-list entries of those values minus the input
    edges of the nodes, and must end at zero.
    """

    def __init__(self, functions: dict) -> None:
        self.functions = functions
        self.defined: dict[Value, int] = {}
        self.balance = 0

    def graph(self, g: Graph, opsets: dict[str, int], depth: int = 0) -> None:
        names: dict[str, Value] = {}
        added: list[Value] = []
        inputs = set(g.inputs)
        for v in g.inputs:
            if v._producer is not None or v._graph is not g:
                raise _Fault
            self._define(v, names, added, depth)
        for name, v in g.initializers.items():
            if not _initializer_ok(name, v, g):
                raise _Fault
            if v not in inputs:
                self._define(v, names, added, depth)
        count = 0
        for node in g:
            count += 1
            self._node(node, opsets, names, added, depth)
        if count != len(g) or any(v not in self.defined for v in g.outputs):
            raise _Fault
        if depth:
            for v in added:
                del self.defined[v]
        elif self.balance:
            raise _Fault  # a stale use, or a use by a node outside the graphs

    def _define(self, v: Value, names: dict[str, Value], added: list[Value],
                depth: int) -> None:
        level = self.defined.get(v)
        if level == depth or (v.name and names.setdefault(v.name, v) is not v):
            raise _Fault  # defined twice in this graph, or a second value with this name
        if level is None:  # a value of an outer graph is counted there
            self.defined[v] = depth
            added.append(v)
            self.balance += len(v._uses)

    def _node(self, node: Node, opsets: dict[str, int], names: dict[str, Value],
              added: list[Value], depth: int) -> None:
        if node.domain not in opsets and \
                (node.domain, node.op_type, node.overload) not in self.functions:
            raise _Fault
        defined = self.defined
        for i, v in enumerate(node._inputs):
            if v is not None:
                self.balance -= 1
                if v not in defined or (node, i) not in v._uses:
                    raise _Fault
        if node.attributes:
            self._subgraphs(node, opsets, depth)
        for i, out in enumerate(node._outputs):
            # An output already in scope, even an outer value, is defined twice.
            if out._producer is not node or out._index != i or out in defined:
                raise _Fault
            self._define(out, names, added, depth)

    def _subgraphs(self, node: Node, opsets: dict[str, int], depth: int) -> None:
        for a in node.attributes.values():
            kind = a.type
            if (kind != _GRAPH and kind != _GRAPHS) or a.value is None:
                continue
            for sub in ([a.value] if kind == _GRAPH else a.value):
                if sub.parent is not None and sub.parent is not node:
                    raise _Fault
                self.graph(sub, opsets, depth + 1)


def _initializer_ok(name: str, v: Value, g: Graph) -> bool:
    tensor = v.const_value
    if v.name != name or tensor is None or v._graph is not g:
        return False
    t = v.type
    if not isinstance(t, TensorType):
        return True
    if t.dtype != tensor.dtype:
        return False
    shape = t.shape
    return shape is None or not shape.is_static() or tuple(shape.dims) == tensor.shape


# -------------------------------------------------------------------------- detailed path
def _verify_function(f: Function, model: Model) -> None:
    opsets = dict(f.opset_imports)
    where = f"function {f.domain}::{f.name}"
    _verify_graph(f.graph, opsets, model, outer=set(), where=where)


def _known_op(node: Node, opsets: dict[str, int], model: Model) -> bool:
    if node.domain in opsets:
        return True
    # A call to a model-local function needs no opset import of its own in older models,
    # but ONNX requires its domain to be imported; accept either.
    return (node.domain, node.op_type, node.overload) in model.functions


def _verify_graph(
    g: Graph, opsets: dict[str, int], model: Model, outer: set[int], where: str
) -> None:
    defined: set[int] = set(outer)
    names: dict[str, Value] = {}

    def define(v: Value, what: str | Node) -> None:
        # ``what`` is a node for its outputs: its label is only built for a message.
        if id(v) in defined and id(v) not in outer:
            raise VerificationError(f"{where}: value {v.name!r} is defined twice "
                                    f"({_what(what)})")
        if v.name:
            other = names.get(v.name)
            if other is not None and other is not v:
                raise VerificationError(f"{where}: two values are named {v.name!r} "
                                        f"({_what(what)})")
            names[v.name] = v
        defined.add(id(v))

    for v in g.inputs:
        if v.producer() is not None:
            raise VerificationError(f"{where}: graph input {v.name!r} has a producer")
        _verify_owner(v, g, "graph input", "Graph.add_input", where)
        define(v, "graph input")
        _verify_uses(v, where)
    for name, v in g.initializers.items():
        _verify_initializer(name, v, where)
        _verify_owner(v, g, "initializer", "Graph.register_initializer", where)
        if not v.is_graph_input():
            define(v, "initializer")
            _verify_uses(v, where)
    count = 0
    for node in g:
        count += 1
        _verify_node(node, g, opsets, model, defined, where)
        for sub in node.subgraphs():
            _verify_graph(sub, opsets, model, defined, f"{where}, subgraph of {node.label()}")
        for out in node.outputs:
            define(out, node)
    if count != len(g):
        raise VerificationError(f"{where}: node count {len(g)} != {count} nodes linked"
                                f"{_stray_node_note(g)}")
    for v in g.outputs:
        if id(v) not in defined:
            raise VerificationError(f"{where}: graph output {v.name!r} is not defined")


def _what(what: str | Node) -> str:
    return f"output of {what.label()}" if isinstance(what, Node) else what


def _stray_node_note(g: Graph) -> str:
    """Name a node in ``g``'s chain that does not point back to ``g``, if there is one."""
    node = g._head
    while node is not None:
        if node.graph is not g:
            return f"; {node.label()} is in the node list but does not point back to the graph"
        node = node._next
    return ""


def _verify_owner(v: Value, g: Graph, what: str, method: str, where: str) -> None:
    if v._graph is not g:
        raise VerificationError(
            f"{where}: {what} {v.name!r} does not point back to its graph (add it with {method})"
        )


def _verify_uses(v: Value, where: str) -> None:
    for user, j in v._uses:
        if j >= len(user.inputs) or user.inputs[j] is not v:
            raise VerificationError(
                f"{where}: {v.name!r} lists a stale use by {user.label()} input {j}"
            )
        if user.graph is None:
            raise VerificationError(
                f"{where}: {v.name!r} is used by {user.label()}, which is in no graph "
                "(remove it with Graph.remove, or insert it)"
            )


def _verify_initializer(name: str, v: Value, where: str) -> None:
    if v.name != name:
        raise VerificationError(f"{where}: initializer {name!r} is named {v.name!r}")
    if v.const_value is None:
        raise VerificationError(f"{where}: initializer {name!r} has no value")
    t = v.type
    if not isinstance(t, TensorType):
        return
    if t.dtype != v.const_value.dtype:
        raise VerificationError(
            f"{where}: initializer {name!r} is typed {t.dtype.name} but holds "
            f"{v.const_value.dtype.name}"
        )
    if t.shape is not None and t.shape.is_static() and tuple(t.shape.dims) != v.const_value.shape:
        raise VerificationError(
            f"{where}: initializer {name!r} has shape {list(v.const_value.shape)} but its "
            f"type says {t.shape}"
        )


def _verify_node(
    node: Node, g: Graph, opsets: dict[str, int], model: Model, defined: set[int], where: str
) -> None:
    if node.graph is not g:
        raise VerificationError(f"{where}: {node.label()} does not point back to its graph")
    if not _known_op(node, opsets, model):
        raise VerificationError(
            f"{where}: {node.label()} uses domain {node.domain or 'ai.onnx'!r}, "
            "which the model does not import"
        )
    for i, v in enumerate(node.inputs):
        if v is None:
            continue
        if id(v) not in defined:
            p = v.producer()
            why = "not defined in scope"
            if p is not None and p.graph is g:
                linked = any(n is p for n in g)
                why = f"produced later by {p.label()}" if linked else \
                    f"produced by {p.label()}, which is not linked into the node list"
            raise VerificationError(
                f"{where}: {node.label()} input {i} ({v.name!r}) is {why}"
            )
        if (node, i) not in v._uses:
            raise VerificationError(
                f"{where}: {node.label()} input {i} ({v.name!r}) is missing from its use list"
            )
    for sub in node.subgraphs():
        if sub.parent is not None and sub.parent is not node:
            raise VerificationError(f"{where}: a subgraph of {node.label()} has another parent")
    for i, out in enumerate(node.outputs):
        if out.producer() is not node or out.index != i:
            raise VerificationError(f"{where}: output {i} of {node.label()} has a wrong producer")
        _verify_uses(out, where)
