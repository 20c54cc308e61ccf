"""verify(model): a cheap check of the IR's invariants, run after every pass."""

from __future__ import annotations

from kiln.errors import VerificationError
from kiln.ir._core import Function, Graph, Model, Node, Value
from kiln.ir._types import TensorType


def verify(model: Model) -> None:
    """Check SSA, use-def links, topological order, types and opsets.

    Raises:
        VerificationError: naming the node or value that breaks an invariant.
    """
    _verify_graph(model.graph, model.opset_imports, model, outer=set(), where="main graph")
    for f in model.functions.values():
        _verify_function(f, model)


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
