"""inspect_model: histogram, parameters, and FLOPs against hand-computed counts."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto
from onnx import helper as oh
from onnx import numpy_helper as nh

import kiln
from kiln.bench import estimate_flops, inspect_model

F = TensorProto.FLOAT


def build(nodes, inputs, outputs, initializers=(), opset=21) -> kiln.ir.Model:
    proto = oh.make_model(
        oh.make_graph(nodes, "g", inputs, outputs, list(initializers)),
        opset_imports=[oh.make_opsetid("", opset)],
        ir_version=10,
        producer_name="tests",
        producer_version="1",
    )
    return kiln.load(proto)


def zeros(name: str, *shape: int) -> TensorProto:
    return nh.from_array(np.zeros(shape, np.float32), name)


def conv_matmul_model() -> kiln.ir.Model:
    """x[N,3,8,8] -Conv(16,3x3,pad 1,bias)-> [N,16,8,8] -Relu- -Reshape-> [N,1024]
    -MatMul(1024x10)-> [N,10] -Add(bias)-> y."""
    return build(
        [
            oh.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1]),
            oh.make_node("Relu", ["c"], ["r"]),
            oh.make_node("Reshape", ["r", "shape"], ["f"]),
            oh.make_node("MatMul", ["f", "M"], ["m"]),
            oh.make_node("Add", ["m", "b"], ["y"]),
        ],
        [oh.make_tensor_value_info("x", F, ["N", 3, 8, 8])],
        [oh.make_tensor_value_info("y", F, ["N", 10])],
        [
            zeros("W", 16, 3, 3, 3),
            zeros("B", 16),
            nh.from_array(np.array([-1, 1024], np.int64), "shape"),
            zeros("M", 1024, 10),
            zeros("b", 10),
        ],
    )


def hand_count(n: int) -> int:
    conv_out = n * 16 * 8 * 8
    conv = 2 * conv_out * (3 * 3 * 3) + conv_out  # MACs x 2, plus the bias add
    relu = conv_out
    matmul = 2 * n * 10 * 1024
    add = n * 10
    return conv + relu + matmul + add


def test_flops_of_a_conv_matmul_model_match_a_hand_count():
    model = conv_matmul_model()
    est = estimate_flops(model)
    assert est.complete and est.uncounted == {}
    assert est.total == hand_count(1) == 77_834
    assert est.by_op == {"Conv": 56_320, "MatMul": 20_480, "Relu": 1_024, "Add": 10, "Reshape": 0}
    assert est.assumed_dims == {"N": 1}
    assert est.notes == ["symbolic input dimensions counted as N=1"]


def test_symbolic_dims_take_the_given_size():
    est = estimate_flops(conv_matmul_model(), {"N": 4})
    assert est.total == hand_count(4)
    assert est.notes == ["symbolic input dimensions counted as N=4"]


def test_gemm_grouped_conv_conv_transpose_and_pools():
    model = build(
        [
            # Grouped conv: 8 -> 8 channels, 4 groups, 3x3, stride 2, no bias: out [1,8,4,4].
            oh.make_node("Conv", ["x", "Wg"], ["c"], group=4, strides=[2, 2], pads=[1, 1, 1, 1]),
            # ConvTranspose 8 -> 2 channels, 2x2 stride 2, bias: [1,8,4,4] -> [1,2,8,8].
            oh.make_node("ConvTranspose", ["c", "Wt", "Bt"], ["t"], strides=[2, 2]),
            oh.make_node("MaxPool", ["t"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
            oh.make_node("GlobalAveragePool", ["p"], ["g"]),
            oh.make_node("Flatten", ["g"], ["f"]),
            # Gemm with transA: A is [K=2, M=1] -> needs f^T; use Transpose first.
            oh.make_node("Transpose", ["f"], ["ft"]),
            oh.make_node("Gemm", ["ft", "G", "C"], ["y"], transA=1),
            oh.make_node("Softmax", ["y"], ["s"]),
        ],
        [oh.make_tensor_value_info("x", F, [1, 8, 8, 8])],
        [oh.make_tensor_value_info("s", F, [1, 5])],
        [zeros("Wg", 8, 2, 3, 3), zeros("Wt", 8, 2, 2, 2), zeros("Bt", 2), zeros("G", 2, 5),
         zeros("C", 5)],
    )
    est = estimate_flops(model)
    conv = 2 * (8 * 4 * 4) * (2 * 3 * 3)
    conv_t = 2 * (8 * 4 * 4) * (2 * 2 * 2) + 2 * 8 * 8
    maxpool = (2 * 4 * 4) * 4
    gap = 2 * 4 * 4
    gemm = 2 * 1 * 5 * 2 + 5
    softmax = 3 * 5
    assert est.by_op == {
        "Conv": conv, "ConvTranspose": conv_t, "MaxPool": maxpool, "GlobalAveragePool": gap,
        "Gemm": gemm, "Softmax": softmax, "Flatten": 0, "Transpose": 0,
    } | {}  # dict equality ignores order
    assert est.total == conv + conv_t + maxpool + gap + gemm + softmax
    assert est.complete and est.assumed_dims == {}


def test_exporter_shape_plumbing_is_folded_to_static_shapes():
    # As dynamo exports a dynamic-batch flatten: Shape -> Gather -> Unsqueeze -> Concat
    # -> Reshape. ONNX data propagation alone leaves the batch of the Reshape symbolic
    # after the Squeeze/Reshape chain; folding recovers it.
    model = build(
        [
            oh.make_node("Shape", ["x"], ["s"]),
            oh.make_node("Gather", ["s", "zero"], ["n"], axis=0),
            oh.make_node("Reshape", ["n", "one"], ["n1"]),
            oh.make_node("Concat", ["n1", "rest"], ["target"], axis=0),
            oh.make_node("Reshape", ["x", "target"], ["f"]),
            oh.make_node("MatMul", ["f", "M"], ["y"]),
        ],
        [oh.make_tensor_value_info("x", F, ["batch", 4, 6])],
        [oh.make_tensor_value_info("y", F, ["batch", 3])],
        [
            nh.from_array(np.array(0, np.int64), "zero"),
            nh.from_array(np.array([1], np.int64), "one"),
            nh.from_array(np.array([24], np.int64), "rest"),
            zeros("M", 24, 3),
        ],
    )
    est = estimate_flops(model, {"batch": 5})
    assert est.complete, est.uncounted
    assert est.total == 2 * 5 * 3 * 24


def test_unknown_ops_and_shapes_are_reported_not_guessed():
    model = build(
        [
            oh.make_node("Relu", ["x"], ["r"]),
            oh.make_node("Einsum", ["r", "r"], ["e"], equation="ij,ij->i"),
            oh.make_node("NonZero", ["e"], ["nz"]),
            oh.make_node("Cast", ["nz"], ["nzf"], to=F),
            oh.make_node("Sigmoid", ["nzf"], ["y"]),
        ],
        [oh.make_tensor_value_info("x", F, [3, 4])],
        [oh.make_tensor_value_info("y", F, None)],
    )
    est = estimate_flops(model)
    assert not est.complete
    # Einsum has no rule; Sigmoid's shape depends on data (NonZero).
    assert est.uncounted == {"Einsum": 1, "Sigmoid": 1}
    assert est.by_op == {"Relu": 12, "NonZero": 0, "Cast": 0} | {}
    assert est.total == 12


def test_inspect_reports_histogram_parameters_and_io():
    stats = inspect_model(conv_matmul_model())
    assert stats.op_histogram == {"Conv": 1, "Relu": 1, "Reshape": 1, "MatMul": 1, "Add": 1}
    assert stats.nodes == 5 and stats.subgraph_nodes == 0 and stats.functions == 0
    assert stats.parameters == 16 * 27 + 16 + 2 + 10240 + 10
    assert stats.parameter_bytes == (16 * 27 + 16 + 10240 + 10) * 4 + 2 * 8
    assert stats.producer == "tests 1"
    assert stats.opset_imports == {"": 21}
    assert [(s.name, s.type_str) for s in stats.inputs] == [("x", "f32[N,3,8,8]")]
    assert [(s.name, s.type_str) for s in stats.outputs] == [("y", "f32[N,10]")]
    d = stats.to_dict()
    assert d["flops"]["total"] == hand_count(1)
    assert d["inputs"][0]["shape"] == ["N", 3, 8, 8]


@pytest.mark.parametrize("size", [1, 3])
def test_large_broadcasts_are_never_materialized(size):
    # ConstantOfShape to [size, 100000, 1000] elements would need 400 MB per batch row;
    # the estimate must skip folding it rather than allocate.
    model = build(
        [
            oh.make_node("Shape", ["x"], ["s"]),
            oh.make_node("ConstantOfShape", ["s"], ["big"]),
            oh.make_node("Add", ["x", "big"], ["y"]),
        ],
        [oh.make_tensor_value_info("x", F, ["N", 100_000, 1000])],
        [oh.make_tensor_value_info("y", F, None)],
    )
    est = estimate_flops(model, {"N": size})
    assert est.by_op["Add"] == size * 100_000 * 1000


def test_lstm_counts_its_matrix_products():
    # seq 5, batch 2, input 3, hidden 4, bidirectional: W [2,16,3], R [2,16,4].
    model = build(
        [oh.make_node("LSTM", ["x", "W", "R"], ["y"], hidden_size=4, direction="bidirectional")],
        [oh.make_tensor_value_info("x", F, [5, 2, 3])],
        [oh.make_tensor_value_info("y", F, None)],
        [zeros("W", 2, 16, 3), zeros("R", 2, 16, 4)],
    )
    est = estimate_flops(model)
    assert est.complete
    assert est.total == 2 * 2 * 5 * 2 * 16 * (3 + 4)
