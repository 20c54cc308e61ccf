"""kiln's Relax converters, consulted before TVM's own by the importer.

``CONVERTERS`` maps an op key to ``converter(bb, inputs, attrs, opset) -> relax.Expr``.
Keys are ONNX op types, or ``kiln.<op>`` / ``ms.<op>`` for ``ai.kiln`` and
``com.microsoft`` ops (renamed so they do not clash with ONNX ops of the same name).
``inputs`` holds Relax expressions (None for an omitted optional input), ``attrs`` the
node's attributes as TVM's importer parses them.

``ai.kiln`` ops map onto the Relax ops kiln's schedules know (``nn.gelu``,
``nn.layer_norm``, ``nn.softmax`` between two matmuls); an ``ai.kiln`` op without an
entry here is inlined from its ONNX function body instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Converter = Callable[..., Any]
CONVERTERS: dict[str, Converter] = {}


def converter(*keys: str) -> Callable[[Converter], Converter]:
    """Register a converter under ``keys``."""

    def register(fn: Converter) -> Converter:
        for key in keys:
            CONVERTERS[key] = fn
        return fn

    return register


@converter("kiln.Gelu")
def _gelu(bb, inputs, attrs, opset):
    from tvm import relax

    return relax.op.nn.gelu(inputs[0])


@converter("kiln.GeluTanh")
def _gelu_tanh(bb, inputs, attrs, opset):
    from tvm import relax

    return relax.op.nn.gelu_tanh(inputs[0])


@converter("kiln.LayerNormalization")
def _layer_norm(bb, inputs, attrs, opset):
    from tvm import relax

    data, scale = bb.normalize(inputs[0]), inputs[1]
    bias = inputs[2] if len(inputs) > 2 else None
    ndim = data.ty.ndim
    axis = attrs.get("axis", -1)
    axis = axis + ndim if axis < 0 else axis
    axes = list(range(axis, ndim))
    if bias is None:
        bias = relax.op.zeros_like(scale)
    return relax.op.nn.layer_norm(data, scale, bias, axes, float(attrs.get("epsilon", 1e-5)))


@converter("kiln.RMSNormalization")
def _rms_norm(bb, inputs, attrs, opset):
    from tvm import relax

    data, scale = bb.normalize(inputs[0]), inputs[1]
    ndim = data.ty.ndim
    axis = attrs.get("axis", -1)
    axis = axis + ndim if axis < 0 else axis
    return relax.op.nn.rms_norm(data, scale, list(range(axis, ndim)),
                                float(attrs.get("epsilon", 1e-5)))


@converter("kiln.Attention")
def _attention(bb, inputs, attrs, opset):
    from tvm import relax

    q, k, v, mask = (bb.normalize(x) if x is not None else None for x in inputs[:4])
    dtype = q.ty.dtype
    scale = relax.const(float(attrs["scale"]), dtype)
    scores = relax.op.multiply(relax.op.matmul(q, relax.op.permute_dims(k, [0, 1, 3, 2])), scale)
    if mask is not None:
        scores = relax.op.add(scores, mask)
    probs = bb.normalize(relax.op.nn.softmax(bb.normalize(scores), axis=-1))
    return relax.op.matmul(probs, v)
