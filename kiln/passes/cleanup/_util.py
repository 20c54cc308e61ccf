"""Helpers shared by the clean-up passes: walking graphs, reading constants, replacing values."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from kiln.ir import Graph, Model, Node, Tensor, Value

RANDOM_OPS = frozenset(
    {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Bernoulli",
     "Multinomial"}
)


def all_graphs(model: Model, functions: bool = False) -> Iterator[Graph]:
    """The main graph and all its subgraphs (outer graphs first); with ``functions``, also
    every model-local function body and its subgraphs.

    Passes leave function bodies alone by default: an ``ai.kiln`` body is the op's spec,
    and a body cannot hold initializers, which folding and lifting would create.
    """
    roots = [model.graph]
    if functions:
        roots += [f.graph for f in model.functions.values()]
    for root in roots:
        yield from _graphs_of(root)


def _graphs_of(graph: Graph) -> Iterator[Graph]:
    yield graph
    for node in graph:
        for sub in node.subgraphs():
            yield from _graphs_of(sub)


def subgraph_outputs(graph: Graph) -> set[int]:
    """ids of the values returned by subgraphs within ``graph`` (they may be outer values,
    read without being a use)."""
    return {id(v) for node in graph.all_nodes() for sub in node.subgraphs() for v in sub.outputs}


def is_random(node: Node) -> bool:
    """True for ops whose result changes from run to run."""
    return node.domain == "" and node.op_type in RANDOM_OPS


def constant_of_node(node: Node) -> np.ndarray | None:
    """The tensor a ``Constant`` node produces, or None when it is not a plain constant."""
    if node.domain != "" or node.op_type != "Constant" or len(node.attributes) != 1:
        return None
    (attr,) = node.attributes.values()
    if attr.ref_attr_name:
        return None
    scalars = {"value_float": np.float32, "value_int": np.int64}
    lists = {"value_floats": np.float32, "value_ints": np.int64}
    if attr.name == "value" and isinstance(attr.value, Tensor):
        return attr.value.numpy()
    if attr.name in scalars:
        return np.array(attr.value, dtype=scalars[attr.name])
    if attr.name in lists:
        return np.array(list(attr.value), dtype=lists[attr.name])
    return None


def const_array(value: Value | None) -> np.ndarray | None:
    """The constant data of ``value`` (an initializer that is not a graph input, or the
    output of a Constant node), or None when it is not a known constant."""
    if value is None:
        return None
    producer = value.producer()
    if producer is not None:
        return constant_of_node(producer)
    if value.const_value is None or value.is_graph_input():
        return None
    return value.const_value.numpy()


def static_shape(value: Value | None) -> tuple[int, ...] | None:
    """The shape of ``value`` when every dimension is a known integer, else None."""
    shape = value.shape if value is not None else None
    if shape is None or not shape.is_static():
        return None
    return tuple(shape.dims)  # type: ignore[arg-type]


def can_take_name(old: Value, new: Value) -> bool:
    """True when ``new`` may be renamed to ``old``'s name: it is an output of a node in the
    same graph and not a graph output itself."""
    producer = new.producer()
    return producer is not None and producer.graph is old.graph and not new.is_graph_output()


def _nested_subgraphs(graph: Graph) -> Iterator[Graph]:
    """Every subgraph within ``graph``, at any depth (only nodes holding one are visited)."""
    for node in graph.subgraph_holders():
        for sub in node.subgraphs():
            yield sub
            yield from _nested_subgraphs(sub)


def replace_value(old: Value, new: Value) -> None:
    """Make every reader of ``old`` read ``new``; a graph output keeps its name.

    Subgraphs that return ``old`` return ``new`` instead.

    When ``old`` is an output of its graph, ``new`` takes over ``old``'s name if ``new`` is
    a node output that is not itself a graph output; otherwise an Identity named like
    ``old`` is appended to the graph.
    """
    graph = old.graph
    if graph is not None:
        # Subgraphs may return an outer value directly, which is not a use of it.
        for sub in _nested_subgraphs(graph):
            if any(v is old for v in sub.outputs):
                sub.outputs[:] = [new if v is old else v for v in sub.outputs]
    is_output = graph is not None and old.is_graph_output()
    if not is_output:
        old.replace_all_uses_with(new)
        return
    assert graph is not None
    if can_take_name(old, new):
        name = old.name
        old.replace_all_uses_with(new, replace_graph_outputs=True)
        old.name = ""
        new.name = name
        if new.type is None:
            new.type = old.type
        return
    out = Value(old.name, old.type, doc_string=old.doc_string,
                metadata_props=old.metadata_props)
    old.replace_all_uses_with(new)
    graph.outputs[:] = [out if v is old else v for v in graph.outputs]
    old.name = ""
    graph.append(Node("", "Identity", [new], outputs=[out]))
