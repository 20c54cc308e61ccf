"""ONNX to Relax: TVM's ONNX importer, extended with kiln's converters.

kiln hands TVM's importer (``tvm.relax.frontend.onnx``) its optimized, static-shaped
graph. The importer covers most of ONNX with semantics tested upstream; kiln adds, through
:class:`KilnImporter` (a subclass that consults kiln's converter table first), what the
importer lacks: ``ai.kiln`` ops, recurrent ops, ONNX Runtime's contrib ops. An
``ai.kiln`` op without a converter of its own has its ONNX function body inlined, so
``ai.kiln`` ops always lower.

Why the importer rather than a BlockBuilder of kiln's own: the importer's ~190
converters are maintained with TVM; kiln's passes already removed what it handles badly
(shape subgraphs feeding Reshape, dynamic Pad after folding), and kiln's schedules work
on the Relax ops whichever way they were built.
"""

from __future__ import annotations

import functools

import onnx
import onnx.inliner

from kiln.backends.tvm._converters import CONVERTERS
from kiln.errors import KilnError
from kiln.ir import Model, kiln_ops, serde

#: Domains whose ops are renamed ``<prefix>.<op_type>`` before import: their names clash
#: with ONNX ops (ai.kiln::Attention, ai.kiln::Gelu) and the importer sees only op_type.
_DOMAIN_PREFIX = {kiln_ops.DOMAIN: "kiln", "com.microsoft": "ms"}


def _key(domain: str, op_type: str) -> str:
    prefix = _DOMAIN_PREFIX.get(domain)
    return f"{prefix}.{op_type}" if prefix else op_type


@functools.cache
def _tvm_ops() -> frozenset[str]:
    from tvm.relax.frontend.onnx import onnx_frontend

    return frozenset(onnx_frontend._get_convert_map()) | {"If", "Constant"}


def lowerable(domain: str, op_type: str) -> bool:
    """Whether the tvm backend lowers ``domain::op_type`` (``ai.kiln`` ops always do)."""
    if domain == kiln_ops.DOMAIN:
        return True
    if domain in ("", "ai.onnx"):
        return op_type in _tvm_ops() or op_type in CONVERTERS
    return _key(domain, op_type) in CONVERTERS


def _importer_class():
    from tvm.relax.frontend.onnx import onnx_frontend

    class KilnImporter(onnx_frontend.ONNXGraphImporter):
        """TVM's ONNX importer with kiln's converters consulted first."""

        def _check_for_unsupported_ops(self, graph):
            missing = sorted({
                n.op_type for n in graph.node
                if n.op_type not in CONVERTERS and n.op_type not in _tvm_ops()
            })
            if missing:
                raise KilnError(f"tvm backend cannot lower op(s): {', '.join(missing)}")

        def _convert_operator(self, op_name, inputs, attrs, opset):
            converter = CONVERTERS.get(op_name)
            if converter is None:
                return super()._convert_operator(op_name, inputs, attrs, opset)
            try:
                expr = converter(self.bb, inputs, attrs, opset)
            except KilnError as exc:
                name = attrs.get("tvm_custom", {}).get("name", "")
                raise KilnError(f"tvm backend cannot lower node {name!r} "
                                f"(op {_label(op_name)}): {exc}") from None
            if expr is NotImplemented:
                return super()._convert_operator(op_name, inputs, attrs, opset)
            from tvm import relax

            return self.bb.normalize(expr) if isinstance(expr, relax.Expr) else expr

    return KilnImporter


def import_model(model: Model):
    """Import a static-shaped kiln Model into a Relax IRModule (weights as constants).

    Raises:
        KilnError: naming the node, when an op cannot be lowered or the importer fails.
    """
    proto = serde.serialize_model(model)
    proto = _prepare(proto)
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 1)
    importer = _importer_class()({}, "float32", keep_params_in_input=False, sanitize=True)
    try:
        return importer.from_onnx(proto.graph, opset)
    except KilnError:
        raise
    except Exception as exc:  # the importer raises anything from asserts to TVMErrors
        where = _failing_node(proto.graph, importer)
        text = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise KilnError(f"tvm backend cannot lower {where}: {text}") from None


def _prepare(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Inline functions kiln has no converter for; rename ops of clashing domains."""
    keep = set()
    inline = []
    for f in proto.functions:
        if _key(f.domain, f.name) in CONVERTERS:
            keep.add((f.domain, f.name))
        else:
            inline.append((f.domain, f.name))
    if inline:
        proto = onnx.inliner.inline_selected_functions(proto, inline, exclude=False)
    for node in _all_nodes(proto.graph):
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            _constant_as_tensor(node)
        if node.domain in _DOMAIN_PREFIX:
            node.op_type = _key(node.domain, node.op_type)
            node.domain = ""
    return proto


_CONSTANT_FIELDS = {
    "value_float": (onnx.TensorProto.FLOAT, "f", False),
    "value_floats": (onnx.TensorProto.FLOAT, "floats", True),
    "value_int": (onnx.TensorProto.INT64, "i", False),
    "value_ints": (onnx.TensorProto.INT64, "ints", True),
}


def _constant_as_tensor(node: onnx.NodeProto) -> None:
    """Rewrite a Constant's ``value_float(s)``/``value_int(s)`` as a ``value`` tensor:
    TVM's importer reads only ``value`` (inlined ai.kiln bodies write scalars)."""
    for attr in node.attribute:
        spec = _CONSTANT_FIELDS.get(attr.name)
        if spec is None:
            continue
        dtype, field, is_list = spec
        data = list(getattr(attr, field)) if is_list else getattr(attr, field)
        dims = [len(data)] if is_list else []
        tensor = onnx.helper.make_tensor("value", dtype, dims, data if is_list else [data])
        del node.attribute[:]
        node.attribute.append(onnx.helper.make_attribute("value", tensor))
        return


def _all_nodes(graph: onnx.GraphProto):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _all_nodes(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _all_nodes(g)


def _label(op_key: str) -> str:
    """An op key as users write it (``kiln.Attention`` -> ``ai.kiln::Attention``)."""
    for domain, prefix in _DOMAIN_PREFIX.items():
        if op_key.startswith(prefix + "."):
            return f"{domain}::{op_key[len(prefix) + 1:]}"
    return op_key


def _failing_node(graph: onnx.GraphProto, importer) -> str:
    """The first node whose outputs the importer did not produce: where it stopped."""
    done = getattr(importer, "_nodes", {})
    for node in graph.node:
        if any(out and out not in done for out in node.output):
            return f"node {node.name!r} (op {_label(node.op_type)})"
    return "the model"
