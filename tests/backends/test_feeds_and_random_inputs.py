"""Feed validation (errors name the input) and random valid inputs."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from onnx import TensorProto
from onnx import helper as oh
from onnx import numpy_helper as nh

import kiln
from kiln.backends import (
    DEFAULT_INT_HIGH,
    TensorSpec,
    compile,
    gather_index_bounds,
    random_inputs,
    random_inputs_for,
)
from kiln.errors import KilnError
from kiln.ir import DataType


def two_input_model() -> kiln.ir.Model:
    """y = x + b[None]: x f32[N,3], b f32[N,3] share the symbolic N; z = Identity(k) i64[2]."""
    proto = oh.make_model(
        oh.make_graph(
            [oh.make_node("Add", ["x", "b"], ["y"]), oh.make_node("Identity", ["k"], ["z"])],
            "g",
            [
                oh.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3]),
                oh.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 3]),
                oh.make_tensor_value_info("k", TensorProto.INT64, [2]),
            ],
            [
                oh.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3]),
                oh.make_tensor_value_info("z", TensorProto.INT64, [2]),
            ],
        ),
        opset_imports=[oh.make_opsetid("", 21)],
        ir_version=10,
    )
    return kiln.load(proto)


@pytest.fixture(scope="module", params=["ort", "reference"])
def exe(request):
    return compile(two_input_model(), request.param)


def good_feeds(n: int = 2) -> dict[str, np.ndarray]:
    return {
        "x": np.ones((n, 3), np.float32),
        "b": np.full((n, 3), 2.0, np.float32),
        "k": np.array([4, 5], np.int64),
    }


def test_valid_feeds_run(exe):
    out = exe(**good_feeds(4))
    np.testing.assert_array_equal(out["y"], np.full((4, 3), 3.0, np.float32))
    np.testing.assert_array_equal(out["z"], [4, 5])


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda f: f.update(w=f["x"]), r"unknown input 'w' \(the model's inputs: 'x', 'b', 'k'\)"),
        (lambda f: f.pop("b"), r"missing input 'b' \(f32\[N,3\]\)"),
        (
            lambda f: f.update(x=f["x"].astype(np.float64)),
            r"input 'x': expected dtype float32 \(f32\[N,3\]\), got float64",
        ),
        (lambda f: f.update(k=np.array([4, 5], np.int32)), "input 'k': expected dtype int64"),
        (lambda f: f.update(x=np.ones(3, np.float32)), r"input 'x': expected rank 2 .* got shape \(3,\)"),
        (lambda f: f.update(k=np.array([1, 2, 3], np.int64)), "input 'k': dimension 0 must be 2, got 3"),
        (
            lambda f: f.update(b=np.ones((5, 3), np.float32)),
            r"input 'b': dimension 0 \('N'\) is 5, but input 'x' set N=2",
        ),
        (lambda f: f.update(x=[[1.0, 2.0, 3.0]] * 2), "input 'x': expected dtype float32 .* got float64"),
    ],
)
def test_invalid_feeds_name_the_input(exe, change, match):
    feeds = good_feeds()
    change(feeds)
    with pytest.raises(KilnError, match=match):
        exe.run(feeds)


def test_feeds_must_be_a_mapping(exe):
    with pytest.raises(KilnError, match="feeds must be a mapping"):
        exe.run([np.ones((2, 3), np.float32)])  # type: ignore[arg-type]


def test_random_inputs_fit_the_specs_and_run(exe):
    feeds = exe.random_inputs(seed=3, dims={"N": 5})
    assert feeds["x"].shape == feeds["b"].shape == (5, 3)
    assert feeds["x"].dtype == np.float32 and feeds["k"].dtype == np.int64
    out = exe.run(feeds)
    np.testing.assert_allclose(out["y"], feeds["x"] + feeds["b"], rtol=1e-6)


def test_random_inputs_are_seeded():
    specs = (TensorSpec("x", DataType.FLOAT, ("N", 4), "f32[N,4]"),)
    a = random_inputs(specs, seed=7)["x"]
    b = random_inputs(specs, seed=7)["x"]
    c = random_inputs(specs, seed=8)["x"]
    assert a.shape == (1, 4)  # symbolic dims default to 1
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_random_inputs_by_dtype():
    specs = (
        TensorSpec("f", DataType.FLOAT, (2000,), ""),
        TensorSpec("h", DataType.FLOAT16, (3,), ""),
        TensorSpec("bf", DataType.BFLOAT16, (3,), ""),
        TensorSpec("i", DataType.INT32, (2000,), ""),
        TensorSpec("u4", DataType.UINT4, (100,), ""),
        TensorSpec("m", DataType.BOOL, (2000,), ""),
        TensorSpec("c", DataType.COMPLEX64, (2,), ""),
        TensorSpec("unknown_dim", DataType.FLOAT, (None, 2), ""),
    )
    feeds = random_inputs(specs, seed=0, int_high={"i": 1000})
    f = feeds["f"]
    assert f.dtype == np.float32 and abs(f.mean()) < 0.1 and 0.9 < f.std() < 1.1
    assert feeds["h"].dtype == np.float16
    assert feeds["bf"].dtype == ml_dtypes.bfloat16
    i = feeds["i"]
    assert i.dtype == np.int32 and i.min() >= 0 and i.max() < 1000 and i.max() > 900
    assert feeds["u4"].dtype == ml_dtypes.uint4 and int(feeds["u4"].astype(np.int64).max()) <= 9
    m = feeds["m"]
    assert m.dtype == np.bool_ and 0.4 < m.mean() < 0.6
    assert feeds["c"].dtype == np.complex64
    assert feeds["unknown_dim"].shape == (1, 2)


def test_default_integer_bound():
    specs = (TensorSpec("i", DataType.INT64, (5000,), ""),)
    i = random_inputs(specs)["i"]
    assert i.min() >= 0 and i.max() == DEFAULT_INT_HIGH - 1


def test_strings_and_unknown_rank_cannot_be_generated():
    with pytest.raises(KilnError, match="input 's' of type str"):
        random_inputs((TensorSpec("s", DataType.STRING, (2,), "str[2]"),))
    with pytest.raises(KilnError, match="input 'x' has unknown rank"):
        random_inputs((TensorSpec("x", DataType.FLOAT, None, "f32[...]"),))
    with pytest.raises(KilnError, match="input 'q' of type SequenceType"):
        random_inputs((TensorSpec("q", None, None, "SequenceType"),))


def token_model(vocab: int) -> kiln.ir.Model:
    table = np.arange(vocab * 2, dtype=np.float32).reshape(vocab, 2)
    proto = oh.make_model(
        oh.make_graph(
            [oh.make_node("Gather", ["table", "ids"], ["y"])],
            "g",
            [oh.make_tensor_value_info("ids", TensorProto.INT64, ["B", 6])],
            [oh.make_tensor_value_info("y", TensorProto.FLOAT, ["B", 6, 2])],
            [nh.from_array(table, "table")],
        ),
        opset_imports=[oh.make_opsetid("", 21)],
        ir_version=10,
    )
    return kiln.load(proto)


def test_token_ids_stay_below_the_embedding_size():
    model = token_model(vocab=4)
    assert gather_index_bounds(model) == {"ids": 4}
    ids = random_inputs_for(model, dims={"B": 200})["ids"]
    assert ids.shape == (200, 6) and ids.min() >= 0 and ids.max() == 3
    # Runs without an out-of-range index on both backends.
    for backend in ("ort", "reference"):
        exe = compile(model, backend)
        assert exe.run({"ids": ids})["y"].shape == (200, 6, 2)


def test_integer_bounds_can_be_overridden():
    model = token_model(vocab=1000)
    ids = random_inputs_for(model, dims={"B": 100}, int_high={"ids": 2})["ids"]
    assert set(np.unique(ids)) == {0, 1}
    ids = random_inputs_for(model, dims={"B": 100}, int_high=3)["ids"]
    assert set(np.unique(ids)) == {0, 1, 2}
