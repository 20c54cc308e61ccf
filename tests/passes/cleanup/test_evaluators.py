"""fold-constants' numpy evaluators give exactly what onnx.reference gives, on the cases
they accept (edge cases: negative axes, 0-copy Reshape, empty tensors, integer division,
broadcasting); what they do not implement they leave to the reference (None)."""

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from kiln.ir.serde import deserialize_model
from kiln.passes.cleanup._evaluators import ResultTooLarge, evaluate

i64 = np.int64
f32 = np.float32

CASES = [
    ("Add", [np.array([[1, 2, 3]], i64), np.array([[10], [20]], i64)], {}),
    ("Sub", [np.array([5, -7], i64), np.array(3, i64)], {}),
    ("Mul", [np.array([2.5, -1], f32), np.array([4, 3], f32)], {}),
    ("Div", [np.array([7, -7, 6], i64), np.array([2, 2, -4], i64)], {}),
    ("Div", [np.array([1, -3], f32), np.array([4, 2], f32)], {}),
    ("Neg", [np.array([1, -2], i64)], {}),
    ("Equal", [np.array([1, 2, 3], i64), np.array([1, 0, 3], i64)], {}),
    ("Less", [np.array([1.5, 2], f32), np.array([2, 2], f32)], {}),
    ("Greater", [np.array([[1], [3]], i64), np.array([2, 0], i64)], {}),
    ("Not", [np.array([True, False])], {}),
    ("Identity", [np.array([[1, 2]], i64)], {}),
    ("Cast", [np.array([1.7, -1.7, 3], f32)], {"to": onnx.TensorProto.INT32}),
    ("Cast", [np.array([3, -4], i64)], {"to": onnx.TensorProto.FLOAT}),
    ("Reshape", [np.arange(24, dtype=f32).reshape(2, 3, 4), np.array([0, -1], i64)], {}),
    ("Reshape", [np.zeros((0, 3), f32), np.array([0, 3], i64)], {"allowzero": 1}),
    ("Unsqueeze", [np.array([1, 2], i64), np.array([-1, 0], i64)], {}),
    ("Squeeze", [np.zeros((1, 3, 1), f32), np.array([-1], i64)], {}),
    ("Squeeze", [np.zeros((1, 3, 1), f32)], {}),
    ("Gather", [np.arange(12, dtype=i64).reshape(3, 4), np.array([-1, 0], i64)], {"axis": 1}),
    ("Gather", [np.array([5, 6, 7], i64), np.array(-3, i64)], {}),
    ("Concat", [np.array([1, 2], i64), np.array([], i64), np.array([3], i64)], {"axis": -1}),
    ("Slice", [np.arange(10, dtype=i64), np.array([-1], i64), np.array([-100], i64),
               np.array([0], i64), np.array([-3], i64)], {}),
    ("Slice", [np.arange(12, dtype=f32).reshape(3, 4), np.array([1], i64),
               np.array([2**62], i64), np.array([-1], i64)], {}),
    ("Range", [np.array(2, i64), np.array(11, i64), np.array(3, i64)], {}),
    ("Where", [np.array([[True], [False]]), np.array([1, 2], i64), np.array(0, i64)], {}),
    ("ConstantOfShape", [np.array([2, 0, 3], i64)], {}),
    ("ConstantOfShape", [np.array([2], i64)],
     {"value": numpy_helper.from_array(np.array([7], i64))}),
    ("Expand", [np.array([[1], [2]], f32), np.array([3, 1, 4], i64)], {}),
    ("Transpose", [np.arange(6, dtype=f32).reshape(1, 2, 3)], {}),
    ("Transpose", [np.arange(6, dtype=f32).reshape(1, 2, 3)], {"perm": [2, 0, 1]}),
    ("Shape", [np.zeros((2, 3, 4), f32)], {"start": -2}),
    ("Shape", [np.zeros((2, 3, 4), f32)], {"start": 1, "end": -1}),
    ("Size", [np.zeros((2, 0, 4), f32)], {}),
]


def _model(op: str, inputs: list[np.ndarray], attrs: dict) -> onnx.ModelProto:
    names = [f"in{i}" for i in range(len(inputs))]
    node = helper.make_node(op, names, ["out"], **attrs)
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
         for n, a in zip(names, inputs, strict=True)],
        [helper.make_value_info("out", onnx.TypeProto())])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)


@pytest.mark.parametrize(("op", "inputs", "attrs"), CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_numpy_evaluators_match_onnx_reference(op, inputs, attrs):
    proto = _model(op, inputs, attrs)
    want = ReferenceEvaluator(proto).run(None, {f"in{i}": a for i, a in enumerate(inputs)})[0]
    node = next(iter(deserialize_model(proto).graph))
    got = evaluate(node, list(inputs), size_limit=1 << 20)
    assert got is not None, f"{op} is not evaluated with numpy"
    assert got[0].dtype == np.asarray(want).dtype
    assert got[0].shape == np.asarray(want).shape
    np.testing.assert_array_equal(got[0], want)


@pytest.mark.parametrize(("op", "inputs"), [
    ("Softmax", [np.ones((2, 2), f32)]),  # not implemented here
    ("Range", [np.array(1.0, f32), np.array(0.0, f32), np.array(-0.25, f32)]),  # float Range
])
def test_what_is_not_implemented_is_left_to_the_reference(op, inputs):
    node = next(iter(deserialize_model(_model(op, inputs, {})).graph))
    assert evaluate(node, list(inputs), size_limit=100) is None


def test_results_over_the_size_limit_are_refused_before_allocation():
    shape = np.array([1 << 20, 1 << 20], i64)  # 2**40 elements: allocating would fail
    proto = _model("ConstantOfShape", [shape], {})
    node = next(iter(deserialize_model(proto).graph))
    with pytest.raises(ResultTooLarge):
        evaluate(node, [shape], size_limit=1 << 20)
