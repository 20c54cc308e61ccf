"""kiln's Relax converters: recurrent ops and ai.kiln ops through the tvm backend, against
ONNX Runtime with its optimizations off (and the ONNX function bodies for ai.kiln ops)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto
from onnx import helper as oh
from onnx import numpy_helper as nh

import kiln
from kiln.ir import kiln_ops, parse_model, serde

pytestmark = pytest.mark.tvm

RTOL, ATOL = 1e-4, 1e-5


def _compare(model, *, pipeline="none", seed=0, reference="ort"):
    """Compile with tvm (no kiln passes unless asked) and compare every output to ORT
    (optimizations off), or to onnx.reference for what ORT does not run."""
    exe = kiln.compile(model, "tvm", pipeline=pipeline, cache=False)
    if reference == "ort":
        reference = kiln.compile(model, "ort", optimize="disable", threads=1)
    else:
        reference = kiln.compile(model, "reference")
    feeds = reference.random_inputs(seed=seed)
    got, expected = exe.run(feeds), reference.run(feeds)
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], rtol=RTOL, atol=ATOL,
                                   err_msg=name)
    return exe


def _recurrent(op, *, gates, direction="forward", layout=0, initial=False, peephole=False,
               bias=True, seq=5, batch=3, inp=4, hidden=6, **attrs):
    rng = np.random.default_rng(hash((op, direction, layout, initial, peephole)) % 2**32)
    dirs = 2 if direction == "bidirectional" else 1
    f32 = np.float32
    inits = [nh.from_array(rng.standard_normal((dirs, gates * hidden, inp)).astype(f32) * .5,
                           "W"),
             nh.from_array(rng.standard_normal((dirs, gates * hidden, hidden)).astype(f32) * .5,
                           "R")]
    names = ["X", "W", "R"]
    if bias or initial or peephole:
        inits.append(nh.from_array(rng.standard_normal((dirs, 2 * gates * hidden)).astype(f32),
                                   "B"))
        names.append("B")
    x_shape = [seq, batch, inp] if layout == 0 else [batch, seq, inp]
    inputs = [oh.make_tensor_value_info("X", TensorProto.FLOAT, x_shape)]
    if initial or peephole:
        names.append("")  # sequence_lens
        state = [dirs, batch, hidden] if layout == 0 else [batch, dirs, hidden]
        inputs.append(oh.make_tensor_value_info("h0", TensorProto.FLOAT, state))
        names.append("h0")
        if op == "LSTM":
            inputs.append(oh.make_tensor_value_info("c0", TensorProto.FLOAT, state))
            names.append("c0")
    if peephole:
        inits.append(nh.from_array(rng.standard_normal((dirs, 3 * hidden)).astype(f32), "P"))
        names.append("P")
    outs = ["Y", "Y_h", "Y_c"] if op == "LSTM" else ["Y", "Y_h"]
    node = oh.make_node(op, names, outs, hidden_size=hidden, direction=direction,
                        layout=layout, **attrs)
    outputs = [oh.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs]
    graph = oh.make_graph([node], "g", inputs, outputs, inits)
    return kiln.load(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 14)],
                                   ir_version=8))


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_lstm_directions(direction):
    _compare(_recurrent("LSTM", gates=4, direction=direction))


def test_lstm_initial_states_peepholes_and_layout_1():
    # ONNX Runtime rejects layout 1: onnx.reference is the judge.
    _compare(_recurrent("LSTM", gates=4, direction="bidirectional", layout=1, peephole=True),
             reference="onnx")


def test_lstm_peepholes():
    _compare(_recurrent("LSTM", gates=4, direction="bidirectional", peephole=True))


def test_lstm_clip_input_forget_and_activations():
    _compare(_recurrent("LSTM", gates=4, initial=True, clip=0.7, input_forget=1,
                        activations=["HardSigmoid", "Tanh", "Softsign"],
                        activation_alpha=[0.3], activation_beta=[0.4]))


@pytest.mark.parametrize("linear_before_reset", [0, 1])
def test_gru(linear_before_reset):
    _compare(_recurrent("GRU", gates=3, direction="bidirectional", initial=True,
                        linear_before_reset=linear_before_reset))


def test_rnn_reverse_with_relu_and_no_bias():
    _compare(_recurrent("RNN", gates=1, direction="reverse", bias=False,
                        activations=["Relu"]))


def test_recurrent_with_short_sequence_lens_is_refused_naming_the_node():
    model = _recurrent("RNN", gates=1)
    proto = serde.serialize_model(model)
    node = proto.graph.node[0]
    node.name = "rnn0"
    node.input[3:] = ["B0", "lens"]
    proto.graph.initializer.extend([
        nh.from_array(np.zeros((1, 12), np.float32), "B0"),
        nh.from_array(np.array([5, 2, 5], np.int32), "lens"),
    ])
    with pytest.raises(kiln.KilnError, match="rnn0.*sequence_lens"):
        kiln.compile(serde.deserialize_model(proto), "tvm", pipeline="none", cache=False)


def _with_ops(text: str, *names: str):
    model = parse_model(text)
    for name in names:
        kiln_ops.use(model, name)
    return model


def test_kiln_layer_norm_and_gelu():
    import kiln.passes.fusion  # noqa: F401  (defines the ai.kiln ops)

    model = _with_ops("""
model <opset_imports: {"": 15, "ai.kiln": 1}>
graph @g(%x: f32[3,5,16]) {
  init %gamma = f32[16]{0.5, -1, 2, 1.5, 1, 1, 1, 1, 0.5, -1, 2, 1.5, 1, 1, 1, 1}
  init %beta = f32[16]{0.1, 0.2, -0.3, 0, 0, 0, 0, 0, 0.1, 0.2, -0.3, 0, 0, 0, 0, 0}
  %n = ai.kiln::LayerNormalization(%x, %gamma, %beta) {axis: -1, epsilon: 1e-5}
  %y = ai.kiln::Gelu(%n)
  %z = ai.kiln::GeluTanh(%y)
  return %z
}
""", "LayerNormalization", "Gelu", "GeluTanh")
    _compare(model)


def test_kiln_attention():
    import kiln.passes.fusion  # noqa: F401

    model = _with_ops("""
model <opset_imports: {"": 18, "ai.kiln": 1}>
graph @g(%q: f32[2,3,5,8], %k: f32[2,3,7,8], %v: f32[2,3,7,4], %mask: f32[2,1,1,7]) {
  %y = ai.kiln::Attention(%q, %k, %v, %mask) {scale: 0.35355338}
  return %y
}
""", "Attention")
    _compare(model)


def test_kiln_epilogue_ops_are_inlined_from_their_function_bodies():
    rng = np.random.default_rng(5)
    graph = oh.make_graph(
        [oh.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
         oh.make_node("Clip", ["c", "lo", "hi"], ["y"])], "g",
        [oh.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 9, 9])],
        [oh.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [nh.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w"),
         nh.from_array(rng.standard_normal(8).astype(np.float32), "b"),
         nh.from_array(np.array(0.0, np.float32), "lo"),
         nh.from_array(np.array(6.0, np.float32), "hi")])
    model = kiln.load(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)],
                                    ir_version=8))
    exe = _compare(model, pipeline="backend")
    assert any(n.domain == "ai.kiln" for n in exe.lowered.graph)  # ConvClip reached TVM
