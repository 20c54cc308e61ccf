"""kiln.compile: ort and reference agree, the registry, options, supported-op checks."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto
from onnx import helper as oh
from onnx import numpy_helper as nh

import kiln
from kiln.backends import (
    Backend,
    Executable,
    available_backends,
    compile,
    get_backend,
)
from kiln.errors import KilnError

RTOL, ATOL = 1e-4, 1e-5


def _model(nodes, inputs, outputs, initializers=(), opset=21, functions=()) -> kiln.ir.Model:
    graph = oh.make_graph(nodes, "g", inputs, outputs, list(initializers))
    proto = oh.make_model(
        graph, opset_imports=[oh.make_opsetid("", opset)], ir_version=10, functions=functions
    )
    return kiln.load(proto)


def conv_mlp(rng: np.random.Generator) -> kiln.ir.Model:
    """Conv -> BN -> Relu -> MaxPool -> Flatten -> Gemm -> Softmax, symbolic batch."""
    f32 = np.float32
    inits = [
        nh.from_array(rng.standard_normal((4, 2, 3, 3)).astype(f32), "W"),
        nh.from_array(rng.standard_normal(4).astype(f32), "B"),
        nh.from_array(rng.uniform(0.5, 1.5, 4).astype(f32), "scale"),
        nh.from_array(rng.standard_normal(4).astype(f32), "bias"),
        nh.from_array(rng.standard_normal(4).astype(f32) * 0.1, "mean"),
        nh.from_array(rng.uniform(0.5, 1.5, 4).astype(f32), "var"),
        nh.from_array(rng.standard_normal((6, 4 * 3 * 3)).astype(f32), "G"),
        nh.from_array(rng.standard_normal(6).astype(f32), "GB"),
    ]
    nodes = [
        oh.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1]),
        oh.make_node("BatchNormalization", ["c", "scale", "bias", "mean", "var"], ["bn"]),
        oh.make_node("Relu", ["bn"], ["r"]),
        oh.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        oh.make_node("Flatten", ["p"], ["f"]),
        oh.make_node("Gemm", ["f", "G", "GB"], ["g"], transB=1),
        oh.make_node("Softmax", ["g"], ["y"], axis=-1),
    ]
    return _model(
        nodes,
        [oh.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 6, 6])],
        [oh.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 6])],
        inits,
    )


def embedding_model(rng: np.random.Generator) -> kiln.ir.Model:
    """Gather(table, ids) -> MatMul -> ReduceMean, plus a bool mask through Where."""
    table = rng.standard_normal((50, 8)).astype(np.float32)
    proj = rng.standard_normal((8, 3)).astype(np.float32)
    nodes = [
        oh.make_node("Gather", ["table", "ids"], ["e"]),
        oh.make_node("MatMul", ["e", "proj"], ["h"]),
        oh.make_node("Where", ["mask", "h", "zero"], ["hm"]),
        oh.make_node("ReduceMean", ["hm", "axes"], ["y"], keepdims=0),
    ]
    return _model(
        nodes,
        [
            oh.make_tensor_value_info("ids", TensorProto.INT64, ["B", "S"]),
            oh.make_tensor_value_info("mask", TensorProto.BOOL, ["B", "S", 1]),
        ],
        [oh.make_tensor_value_info("y", TensorProto.FLOAT, ["B", 3])],
        [
            nh.from_array(table, "table"),
            nh.from_array(proj, "proj"),
            nh.from_array(np.zeros((), np.float32), "zero"),
            nh.from_array(np.array([1], np.int64), "axes"),
        ],
    )


@pytest.mark.parametrize("builder", [conv_mlp, embedding_model])
@pytest.mark.parametrize("dims", [{}, {"N": 3, "B": 2, "S": 5}])
def test_ort_and_reference_agree(builder, dims):
    model = builder(np.random.default_rng(0))
    ort_exe = compile(model, "ort", optimize="disable", threads=1)
    ref_exe = compile(model, "reference")
    feeds = ort_exe.random_inputs(seed=1, dims=dims)
    got, want = ort_exe.run(feeds), ref_exe.run(feeds)
    assert list(got) == list(want) == ["y"]
    assert got["y"].shape == want["y"].shape
    np.testing.assert_allclose(got["y"], want["y"], rtol=RTOL, atol=ATOL)


def test_optimization_levels_give_the_same_outputs():
    model = conv_mlp(np.random.default_rng(1))
    feeds = compile(model, "reference").random_inputs(seed=2, dims={"N": 2})
    want = compile(model, "ort", optimize="disable").run(feeds)["y"]
    for level in ("basic", "extended", "all"):
        got = compile(model, "ort", optimize=level)(**feeds)["y"]
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_softmax_rows_sum_to_one_on_both_backends():
    # An absolute check, independent of the two backends agreeing with each other.
    model = conv_mlp(np.random.default_rng(2))
    for backend in ("ort", "reference"):
        exe = compile(model, backend)
        y = exe.run(exe.random_inputs(dims={"N": 4}))["y"]
        np.testing.assert_allclose(y.sum(axis=1), np.ones(4), rtol=1e-5)


def test_executable_describes_its_inputs_and_outputs():
    exe = compile(embedding_model(np.random.default_rng(0)), "ort")
    assert isinstance(exe, Executable)
    assert exe.input_names == ["ids", "mask"]
    assert exe.output_names == ["y"]
    ids, mask = exe.input_specs
    assert (ids.dtype, ids.shape, ids.type_str) == (kiln.ir.DataType.INT64, ("B", "S"), "i64[B,S]")
    assert mask.shape == ("B", "S", 1)
    assert exe.output_specs[0].shape == ("B", 3)
    assert "ort/cpu" in repr(exe)


def test_compile_accepts_a_path_and_bytes(tmp_path):
    model = conv_mlp(np.random.default_rng(3))
    path = tmp_path / "m.onnx"
    kiln.save(model, path)
    feeds = {"x": np.ones((1, 2, 6, 6), np.float32)}
    a = compile(path, "ort").run(feeds)["y"]
    b = compile(path.read_bytes(), "reference").run(feeds)["y"]
    np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)


def test_kiln_compile_is_the_public_entry_point():
    model = conv_mlp(np.random.default_rng(4))
    exe = kiln.compile(model, backend="reference")
    assert exe.backend == "reference" and exe.target == "cpu"


def test_registry_lists_backends_and_rejects_unknown_ones():
    assert {"ort", "reference"} <= set(available_backends())
    assert issubclass(get_backend("ort"), Backend)
    with pytest.raises(KilnError, match=r"unknown backend 'nope' \(backends: .*ort"):
        compile(conv_mlp(np.random.default_rng(0)), "nope")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"threads": 0}, "threads must be a positive integer"),
        ({"threads": "2"}, "threads must be a positive integer"),
        ({"optimize": "max"}, "optimize must be one of"),
        ({"fast": True}, r"backend 'ort' has no option 'fast' \(options: threads, optimize, providers\)"),
        ({"target": "tpu"}, "backend 'ort' has no target 'tpu'"),
        ({"providers": ["NoSuchExecutionProvider"]}, "onnxruntime has no NoSuchExecutionProvider"),
    ],
)
def test_bad_ort_options_are_named(kwargs, match):
    with pytest.raises(KilnError, match=match):
        compile(conv_mlp(np.random.default_rng(0)), "ort", **kwargs)


def test_reference_backend_has_no_options():
    with pytest.raises(KilnError, match="backend 'reference' has no option 'threads'"):
        compile(conv_mlp(np.random.default_rng(0)), "reference", threads=2)


def test_unsupported_ops_are_named_before_compiling():
    nodes = [
        oh.make_node("Relu", ["x"], ["r"]),
        oh.make_node("Frobnicate", ["r"], ["y"], domain="com.example"),
    ]
    proto = oh.make_model(
        oh.make_graph(
            nodes,
            "g",
            [oh.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
            [oh.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        ),
        opset_imports=[oh.make_opsetid("", 21), oh.make_opsetid("com.example", 1)],
        ir_version=10,
    )
    model = kiln.load(proto)
    for backend in ("ort", "reference"):
        assert get_backend(backend)().supports(model) == ["com.example::Frobnicate"]
        with pytest.raises(KilnError, match=f"backend '{backend}' does not support: com.example::Frobnicate"):
            compile(model, backend)


def test_contrib_ops_run_on_ort_but_not_on_reference():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.arange(12, dtype=np.float32).reshape(3, 4)
    proto = oh.make_model(
        oh.make_graph(
            [oh.make_node("FusedMatMul", ["a", "b"], ["y"], domain="com.microsoft", alpha=2.0)],
            "g",
            [oh.make_tensor_value_info("a", TensorProto.FLOAT, [2, 3])],
            [oh.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
            [nh.from_array(b, "b")],
        ),
        opset_imports=[oh.make_opsetid("", 21), oh.make_opsetid("com.microsoft", 1)],
        ir_version=10,
    )
    model = kiln.load(proto)
    np.testing.assert_allclose(compile(model, "ort")(a=a)["y"], 2 * a @ b, rtol=1e-6)
    assert get_backend("reference")().supports(model) == ["com.microsoft::FusedMatMul"]


def test_model_local_functions_are_checked_by_their_bodies():
    body = [oh.make_node("Mul", ["x", "x"], ["sq"]), oh.make_node("Add", ["sq", "x"], ["y"])]
    fn = onnx.helper.make_function(
        "ai.kiln", "SquarePlus", ["x"], ["y"], body, [oh.make_opsetid("", 21)]
    )
    proto = oh.make_model(
        oh.make_graph(
            [oh.make_node("SquarePlus", ["x"], ["y"], domain="ai.kiln")],
            "g",
            [oh.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
            [oh.make_tensor_value_info("y", TensorProto.FLOAT, [3])],
        ),
        opset_imports=[oh.make_opsetid("", 21), oh.make_opsetid("ai.kiln", 1)],
        ir_version=10,
        functions=[fn],
    )
    model = kiln.load(proto)
    x = np.array([1.0, -2.0, 3.0], np.float32)
    for backend in ("ort", "reference"):
        assert get_backend(backend)().supports(model) == []
        np.testing.assert_allclose(compile(model, backend)(x=x)["y"], x * x + x)


def test_backend_failures_at_run_time_are_kiln_errors():
    # Reshape to a shape that does not fit the data fails inside the runtime.
    proto = oh.make_model(
        oh.make_graph(
            [oh.make_node("Reshape", ["x", "s"], ["y"])],
            "g",
            [
                oh.make_tensor_value_info("x", TensorProto.FLOAT, [None]),
                oh.make_tensor_value_info("s", TensorProto.INT64, [2]),
            ],
            [oh.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        ),
        opset_imports=[oh.make_opsetid("", 21)],
        ir_version=10,
    )
    feeds = {"x": np.zeros(5, np.float32), "s": np.array([2, 2], np.int64)}
    with pytest.raises(KilnError, match="onnxruntime failed to run the model: .*") as info:
        compile(kiln.load(proto), "ort").run(feeds)
    assert "\n" not in str(info.value)
    with pytest.raises(KilnError, match="onnx.reference failed to run the model"):
        compile(kiln.load(proto), "reference").run(feeds)


def test_a_model_onnxruntime_cannot_load_is_a_kiln_error():
    # Add of float and int64: ORT's type checking rejects the graph when building the session.
    proto = oh.make_model(
        oh.make_graph(
            [oh.make_node("Add", ["x", "k"], ["y"])],
            "g",
            [oh.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
            [oh.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
            [nh.from_array(np.zeros(2, np.int64), "k")],
        ),
        opset_imports=[oh.make_opsetid("", 21)],
        ir_version=10,
    )
    with pytest.raises(KilnError, match="onnxruntime cannot load the model") as info:
        compile(kiln.load(proto), "ort")
    assert "onnxruntime_src" not in str(info.value)
    assert "\n" not in str(info.value)
