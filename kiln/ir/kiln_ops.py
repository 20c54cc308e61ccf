"""kiln's own ops, in the domain ``ai.kiln``, each defined as an ONNX function.

Fusion passes replace a subgraph by one ``ai.kiln`` op; backends that know the op (the
TVM backend, kiln's kernels) run it as one kernel, and every other runtime runs its
function body, which uses standard ONNX ops only (DESIGN.md: the body is the spec). A
pass that emits an op calls :func:`use` so the model carries the function and imports the
domain; the model then still runs on ONNX Runtime and onnx.reference.

A definition is the body in ONNX's textual function syntax (``onnx.parser``), written
against the ai.onnx opset of the model that will hold it: ``{opset}`` in the source is
replaced by that opset, and ``min_opset`` says the oldest opset the body is valid for
(e.g. 18, where ReduceMean takes its axes as an input).

    kiln_ops.define("Example", '''
        Example (x) => (y) {
            y = Relu(x)
        }
    ''', doc="Relu, as an example.")
    if kiln_ops.available(model, "Example"):
        kiln_ops.use(model, "Example")
"""

from __future__ import annotations

import dataclasses
import textwrap

import onnx.parser

from kiln.errors import KilnError
from kiln.ir._core import Function, Model

DOMAIN = "ai.kiln"
VERSION = 1


@dataclasses.dataclass(frozen=True)
class KilnOp:
    """The definition of one ``ai.kiln`` op.

    Attributes:
        name: The op type (CamelCase, like ONNX's).
        source: Its function in ONNX's textual syntax, without the ``<domain, opset>``
            header; ``{opset}`` stands for the model's ai.onnx opset.
        doc: What it computes, in one or two sentences.
        min_opset: The oldest ai.onnx opset its body is valid for.
    """

    name: str
    source: str
    doc: str
    min_opset: int

    def function_proto(self, opset: int) -> onnx.FunctionProto:
        """The op's FunctionProto for a model whose ai.onnx opset is ``opset``."""
        if opset < self.min_opset:
            raise KilnError(f"{DOMAIN}::{self.name} needs ai.onnx opset {self.min_opset} or "
                            f"newer; the model imports opset {opset}")
        header = f'<domain: "{DOMAIN}", opset_import: ["" : {opset}]>\n'
        text = header + textwrap.dedent(self.source).strip().replace("{opset}", str(opset))
        try:
            proto = onnx.parser.parse_function(text)
        except onnx.parser.ParseError as e:
            raise KilnError(f"the body of {DOMAIN}::{self.name} does not parse: {e}") from None
        if proto.name != self.name:
            raise KilnError(f"the body of {DOMAIN}::{self.name} defines {proto.name!r}")
        proto.doc_string = self.doc
        return proto

    def function(self, opset: int) -> Function:
        """The op's function as a kiln Function, for a model of ai.onnx ``opset``."""
        from kiln.ir.serde import deserialize_function

        return deserialize_function(self.function_proto(opset), {"": opset})


_OPS: dict[str, KilnOp] = {}


def define(name: str, source: str, *, doc: str, min_opset: int = 13) -> KilnOp:
    """Define (register) the ``ai.kiln`` op ``name``; answers its definition.

    Raises:
        KilnError: ``name`` is already defined differently, or the body does not parse.
    """
    op = KilnOp(name, source, doc, min_opset)
    other = _OPS.get(name)
    if other is not None and other != op:
        raise KilnError(f"{DOMAIN}::{name} is defined twice")
    op.function_proto(max(min_opset, 18))  # fail at definition time on a bad body
    _OPS[name] = op
    return op


def get(name: str) -> KilnOp:
    """The definition of the ``ai.kiln`` op ``name``."""
    try:
        return _OPS[name]
    except KeyError:
        known = ", ".join(sorted(_OPS)) or "none"
        raise KilnError(f"unknown op {DOMAIN}::{name}; defined: {known}") from None


def defined() -> list[str]:
    """The names of every defined ``ai.kiln`` op."""
    return sorted(_OPS)


def available(model: Model, name: str) -> bool:
    """Whether ``model`` can hold op ``name``: its opset is new enough, and it does not
    already define a different function under that name."""
    op = get(name)
    if model.opset < op.min_opset:
        return False
    version = model.opset_imports.get(DOMAIN)
    return version in (None, VERSION)


def use(model: Model, name: str) -> None:
    """Make ``model`` able to hold op ``name``: add its function (once) and import the
    ``ai.kiln`` domain."""
    op = get(name)
    key = (DOMAIN, name, "")
    if key not in model.functions:
        model.functions[key] = op.function(model.opset)
    model.opset_imports.setdefault(DOMAIN, VERSION)


def drop_unused(model: Model) -> list[str]:
    """Remove the functions of ``ai.kiln`` ops that no node of ``model`` calls any more
    (and the domain import when none is left); answers the names removed."""
    called: set[tuple[str, str]] = set()
    graphs = [model.graph, *(f.graph for f in model.functions.values())]
    while graphs:
        graph = graphs.pop()
        for node in graph:
            called.add((node.domain, node.op_type))
            graphs.extend(node.subgraphs())
    removed = []
    for key in list(model.functions):
        if key[0] == DOMAIN and (key[0], key[1]) not in called:
            del model.functions[key]
            removed.append(key[1])
    if not any(domain == DOMAIN for domain, _ in called):
        model.opset_imports.pop(DOMAIN, None)
    return removed
