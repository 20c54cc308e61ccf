"""kiln's Relax converters, consulted before TVM's own by the importer.

``CONVERTERS`` maps an op key to ``converter(bb, inputs, attrs, opset) -> relax.Expr``
(or ``NotImplemented`` to hand the node to TVM's own converter).
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

import numpy as np

Converter = Callable[..., Any]
CONVERTERS: dict[str, Converter] = {}


def converter(*keys: str) -> Callable[[Converter], Converter]:
    """Register a converter under ``keys``."""

    def register(fn: Converter) -> Converter:
        for key in keys:
            CONVERTERS[key] = fn
        return fn

    return register


@converter("Clip")
def _clip(bb, inputs, attrs, opset):
    """Clip with constant scalar bounds -> ``relax.op.clip`` (one unary op, which
    ConvertLayout moves with the convolution it follows; TVM's own converter writes
    maximum/minimum against constants, which ConvertLayout wraps in transposes)."""
    from tvm import relax

    x = bb.normalize(inputs[0])
    if opset < 11:
        lo, hi = attrs.get("min", float("-inf")), attrs.get("max", float("inf"))
    else:
        bounds = []
        for n, default in ((1, float("-inf")), (2, float("inf"))):
            value = inputs[n] if len(inputs) > n else None
            if value is None:
                bounds.append(default)
                continue
            data = _constant_values(value)
            if data is None or len(data) != 1:
                return NotImplemented
            bounds.append(float(data[0]))
        lo, hi = bounds
    if not str(x.ty.dtype).startswith("float"):
        return NotImplemented
    if lo == 0.0 and hi == 6.0:
        return relax.op.nn.relu6(x)  # has a layout rule: stays fused with the conv
    if lo == 0.0 and hi == float("inf"):
        return relax.op.nn.relu(x)
    big = float(np.finfo(np.float32).max)
    return relax.op.clip(x, max(lo, -big), min(hi, big))


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


# -- recurrent ops (TVM's importer has none): unrolled over the static sequence ----------


def _strings(values) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in (values or ())]


def _activation(name: str, alpha: float | None, beta: float | None):
    """A Relax elementwise function for an ONNX recurrent activation name."""
    from tvm import relax

    op = relax.op

    def const(v, x):
        return relax.const(v, x.ty.dtype)

    table = {
        "sigmoid": lambda x: op.sigmoid(x),
        "tanh": lambda x: op.tanh(x),
        "relu": lambda x: op.nn.relu(x),
        "affine": lambda x: op.add(op.multiply(x, const(alpha, x)), const(beta, x)),
        "leakyrelu": lambda x: op.nn.leakyrelu(x, alpha if alpha is not None else 0.01),
        "thresholdedrelu": lambda x: op.where(op.greater(x, const(alpha or 1.0, x)), x,
                                              op.zeros_like(x)),
        "scaledtanh": lambda x: op.multiply(const(alpha, x),
                                            op.tanh(op.multiply(x, const(beta, x)))),
        "hardsigmoid": lambda x: op.clip(
            op.add(op.multiply(x, const(0.2 if alpha is None else alpha, x)),
                   const(0.5 if beta is None else beta, x)), 0.0, 1.0),
        "elu": lambda x: op.where(op.greater(x, op.zeros_like(x)), x, op.multiply(
            const(1.0 if alpha is None else alpha, x), op.subtract(op.exp(x), const(1.0, x)))),
        "softsign": lambda x: op.divide(x, op.add(op.abs(x), const(1.0, x))),
        "softplus": lambda x: op.log(op.add(op.exp(x), const(1.0, x))),
    }
    fn = table.get(name.lower())
    if fn is None:
        from kiln.errors import KilnError

        raise KilnError(f"recurrent activation {name!r} is not supported by the tvm backend")
    return fn


class _Recurrent:
    """Shared set-up of ONNX LSTM / GRU / RNN: inputs, directions, activations."""

    def __init__(self, bb, inputs, attrs, gates: int, defaults: list[str]):
        from kiln.errors import KilnError

        self.bb = bb
        x = bb.normalize(inputs[0])
        self.layout = int(attrs.get("layout", 0))
        shape = [int(d) for d in x.ty.shape]
        if self.layout == 1:  # [batch, seq, input] -> [seq, batch, input]
            x = bb.normalize(_op().permute_dims(x, [1, 0, 2]))
            shape = [shape[1], shape[0], shape[2]]
        self.x, (self.seq, self.batch, self.input_size) = x, shape
        self.hidden = int(attrs["hidden_size"])
        self.direction = attrs.get("direction", b"forward")
        if isinstance(self.direction, bytes):
            self.direction = self.direction.decode()
        self.dirs = 2 if self.direction == "bidirectional" else 1
        self.clip = attrs.get("clip")
        self.gates = gates
        self.w, self.r = inputs[1], inputs[2]
        self.b = inputs[3] if len(inputs) > 3 else None
        seq_lens = inputs[4] if len(inputs) > 4 else None
        if seq_lens is not None:
            lens = _constant_values(seq_lens)
            if lens is None or any(int(v) != self.seq for v in lens):
                raise KilnError("tvm backend: recurrent op with sequence_lens shorter than the "
                                "sequence (or not constant) is not supported")
        names = _strings(attrs.get("activations")) or defaults * self.dirs
        alphas = list(attrs.get("activation_alpha", ()) or ())
        betas = list(attrs.get("activation_beta", ()) or ())
        self.acts = []
        per_dir = len(defaults)
        for d in range(self.dirs):
            fns = []
            for n in range(per_dir):
                idx = d * per_dir + n
                name = names[idx] if idx < len(names) else defaults[n]
                fns.append(_activation(name, alphas[idx] if idx < len(alphas) else None,
                                       betas[idx] if idx < len(betas) else None))
            self.acts.append(fns)

    def weights(self, d: int):
        """(x_proj [seq, batch, G*H] with both biases added, R^T [H, G*H])."""
        op = _op()
        bb = self.bb
        g = self.gates * self.hidden
        w = bb.normalize(op.take(self.w, _idx(d), axis=0))  # [G*H, I]
        r = bb.normalize(op.take(self.r, _idx(d), axis=0))  # [G*H, H]
        x2 = op.reshape(self.x, [self.seq * self.batch, self.input_size])
        proj = op.matmul(x2, op.permute_dims(w, [1, 0]))
        wb = rb = None
        if self.b is not None:
            b = bb.normalize(op.take(self.b, _idx(d), axis=0))  # [2*G*H]
            wb = bb.normalize(op.strided_slice(b, [0], [0], [g]))
            rb = bb.normalize(op.strided_slice(b, [0], [g], [2 * g]))
        return proj, wb, rb, bb.normalize(op.permute_dims(r, [1, 0]))

    def state(self, value, d: int):
        op = _op()
        if value is None:
            return self.bb.normalize(op.zeros([self.batch, self.hidden], self.x.ty.dtype))
        # Initial states are [dirs, batch, H], or [batch, dirs, H] with layout 1.
        return self.bb.normalize(op.take(value, _idx(d), axis=1 if self.layout == 1 else 0))

    def clipped(self, x):
        if self.clip is None:
            return x
        return _op().clip(x, -float(self.clip), float(self.clip))

    def gate(self, gates, n: int):
        h = self.hidden
        return self.bb.normalize(_op().strided_slice(gates, [1], [n * h], [(n + 1) * h]))

    def steps(self, d: int):
        forward = self.direction == "forward" or (self.direction == "bidirectional" and d == 0)
        return range(self.seq) if forward else range(self.seq - 1, -1, -1)

    def outputs(self, per_dir_y, finals):
        """(Y, Y_h[, Y_c]) in the op's layout from per-direction lists of [batch, H]."""
        op = _op()
        bb = self.bb
        ys = []
        for d in range(self.dirs):
            steps = sorted(per_dir_y[d])  # step index -> h
            ys.append(op.stack([per_dir_y[d][t] for t in steps], axis=0))  # [seq, batch, H]
        y = bb.normalize(op.stack(ys, axis=1))  # [seq, dirs, batch, H]
        outs = []
        for state in finals:
            outs.append(bb.normalize(op.stack(state, axis=0)))  # [dirs, batch, H]
        if self.layout == 1:
            y = bb.normalize(op.permute_dims(y, [2, 0, 1, 3]))
            outs = [bb.normalize(op.permute_dims(s, [1, 0, 2])) for s in outs]
        from tvm import relax

        return relax.Tuple([y, *outs])


def _op():
    from tvm import relax

    return relax.op


def _idx(d: int):
    from tvm import relax

    return relax.const(d, "int64")


def _constant_values(expr):
    """The values of a Relax constant as a flat list, or None when not a constant."""
    import tvm

    if isinstance(expr, tvm.ir.expr.Constant):
        value = expr.value
        data = value.numpy() if hasattr(value, "numpy") else value
        return np.asarray(data).reshape(-1).tolist()
    return None


def _add_bias(bb, x, bias):
    return x if bias is None else bb.normalize(_op().add(x, bias))


@converter("LSTM")
def _lstm(bb, inputs, attrs, opset):
    op = _op()
    rec = _Recurrent(bb, inputs, attrs, 4, ["Sigmoid", "Tanh", "Tanh"])
    init_h = inputs[5] if len(inputs) > 5 else None
    init_c = inputs[6] if len(inputs) > 6 else None
    peep = inputs[7] if len(inputs) > 7 else None
    couple = int(attrs.get("input_forget", 0)) == 1
    ys, hs, cs = [], [], []
    hid = rec.hidden
    for d in range(rec.dirs):
        f, g, h_act = rec.acts[d]
        proj, wb, rb, rt = rec.weights(d)
        proj = bb.normalize(op.reshape(_add_bias(bb, _add_bias(bb, proj, wb), rb),
                                       [rec.seq, rec.batch, 4 * hid]))
        p = bb.normalize(op.take(peep, _idx(d), axis=0)) if peep is not None else None
        h, c = rec.state(init_h, d), rec.state(init_c, d)
        out = {}
        for t in rec.steps(d):
            xt = bb.normalize(op.take(proj, _idx(t), axis=0))
            gates = bb.normalize(rec.clipped(op.add(xt, op.matmul(h, rt))))
            gi, go, gf, gc = (rec.gate(gates, n) for n in range(4))
            if p is not None:
                gi = op.add(gi, op.multiply(op.strided_slice(p, [0], [0], [hid]), c))
                gf = op.add(gf, op.multiply(op.strided_slice(p, [0], [2 * hid], [3 * hid]), c))
            it = bb.normalize(f(gi))
            # input_forget couples the gates as ONNX Runtime does: f = 1 - i.
            ft = bb.normalize(op.subtract(op.ones_like(it), it) if couple else f(gf))
            c = bb.normalize(op.add(op.multiply(ft, c), op.multiply(it, g(gc))))
            if p is not None:
                go = op.add(go, op.multiply(op.strided_slice(p, [0], [hid], [2 * hid]), c))
            h = bb.normalize(op.multiply(f(go), h_act(c)))
            out[t] = h
        ys.append(out)
        hs.append(h)
        cs.append(c)
    return rec.outputs(ys, [hs, cs])


@converter("GRU")
def _gru(bb, inputs, attrs, opset):
    op = _op()
    rec = _Recurrent(bb, inputs, attrs, 3, ["Sigmoid", "Tanh"])
    init_h = inputs[5] if len(inputs) > 5 else None
    linear_before_reset = int(attrs.get("linear_before_reset", 0)) == 1
    hid = rec.hidden
    ys, hs = [], []
    for d in range(rec.dirs):
        f, g = rec.acts[d]
        proj, wb, rb, rt = rec.weights(d)
        proj = bb.normalize(op.reshape(_add_bias(bb, proj, wb), [rec.seq, rec.batch, 3 * hid]))
        h = rec.state(init_h, d)
        out = {}
        for t in rec.steps(d):
            xt = bb.normalize(op.take(proj, _idx(t), axis=0))
            hr = bb.normalize(op.matmul(h, rt))  # [batch, 3H]: z, r, h parts of H R^T
            rbz = rbr = rbh = None
            if rb is not None:
                rbz, rbr, rbh = (bb.normalize(op.strided_slice(rb, [0], [n * hid], [(n + 1) * hid]))
                                 for n in range(3))
            xz, xr, xh = (rec.gate(xt, n) for n in range(3))
            hz, hrr, hh = (rec.gate(hr, n) for n in range(3))
            z = bb.normalize(f(rec.clipped(_add_bias(bb, op.add(xz, hz), rbz))))
            r = bb.normalize(f(rec.clipped(_add_bias(bb, op.add(xr, hrr), rbr))))
            if linear_before_reset:
                cand = op.add(xh, op.multiply(r, _add_bias(bb, hh, rbh)))
            else:
                rh = bb.normalize(op.multiply(r, h))
                rt_h = bb.normalize(op.strided_slice(rt, [1], [2 * hid], [3 * hid]))
                cand = _add_bias(bb, op.add(xh, op.matmul(rh, rt_h)), rbh)
            ht = bb.normalize(g(rec.clipped(bb.normalize(cand))))
            h = bb.normalize(op.add(op.multiply(op.subtract(op.ones_like(z), z), ht),
                                    op.multiply(z, h)))
            out[t] = h
        ys.append(out)
        hs.append(h)
    return rec.outputs(ys, [hs])


@converter("RNN")
def _rnn(bb, inputs, attrs, opset):
    op = _op()
    rec = _Recurrent(bb, inputs, attrs, 1, ["Tanh"])
    init_h = inputs[5] if len(inputs) > 5 else None
    ys, hs = [], []
    for d in range(rec.dirs):
        (f,) = rec.acts[d]
        proj, wb, rb, rt = rec.weights(d)
        proj = bb.normalize(op.reshape(_add_bias(bb, _add_bias(bb, proj, wb), rb),
                                       [rec.seq, rec.batch, rec.hidden]))
        h = rec.state(init_h, d)
        out = {}
        for t in rec.steps(d):
            xt = bb.normalize(op.take(proj, _idx(t), axis=0))
            h = bb.normalize(f(rec.clipped(op.add(xt, op.matmul(h, rt)))))
            out[t] = h
        ys.append(out)
        hs.append(h)
    return rec.outputs(ys, [hs])
