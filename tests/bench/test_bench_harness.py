"""The benchmark harness and the JSON schema of its results."""

from __future__ import annotations

import copy
import json
import mmap

import numpy as np
import pytest
from onnx import TensorProto
from onnx import helper as oh
from onnx import numpy_helper as nh

import kiln
from kiln.bench import (
    BENCH_SCHEMA,
    _memory,
    agreement,
    bench,
    format_bench,
    latency_stats,
    machine_info,
    validate,
)
from kiln.errors import KilnError


def small_model(custom_op: bool = False) -> kiln.ir.Model:
    """x[batch,8] @ W[8,4] -> Relu (-> com.example::Frob when ``custom_op``)."""
    w = np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)
    nodes = [oh.make_node("MatMul", ["x", "W"], ["h"]), oh.make_node("Relu", ["h"], ["y"])]
    opsets = [oh.make_opsetid("", 21)]
    if custom_op:
        nodes[-1] = oh.make_node("Frob", ["h"], ["y"], domain="com.example")
        opsets.append(oh.make_opsetid("com.example", 1))
    proto = oh.make_model(
        oh.make_graph(
            nodes,
            "small",
            [oh.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
            [oh.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
            [nh.from_array(w, "W")],
        ),
        opset_imports=opsets,
        ir_version=10,
    )
    return kiln.load(proto)


@pytest.fixture(scope="module")
def result():
    return bench(small_model(), ["ort", "reference"], runs=5, warmup=2, threads=1,
                 dims={"batch": 4}, name="small")


def test_result_validates_and_round_trips_through_json(result):
    validate(result)
    validate(json.loads(json.dumps(result)))


def test_result_content(result):
    assert result["schema"] == "kiln-bench/1"
    model = result["model"]
    assert model == {
        "name": "small",
        "nodes": 2,
        "parameters": 32,
        "flops": 2 * 4 * 4 * 8 + 4 * 4,
        "batch": 4,
        "inputs": [{"name": "x", "dtype": "float32", "shape": [4, 8]}],
    }
    assert result["settings"] == {"runs": 5, "warmup": 2, "threads": 1, "seed": 0}
    ort_entry, ref_entry = result["results"]
    assert ort_entry["backend"] == "ort" and ort_entry["status"] == "ok"
    assert ort_entry["threads"] == 1 and ort_entry["options"]["threads"] == 1
    assert ort_entry["options"]["optimize"] == "all"
    assert ref_entry["threads"] is None
    assert ort_entry["agreement"] is None
    assert ref_entry["agreement"]["baseline"] == "ort"
    assert ref_entry["agreement"]["within_tolerance"] is True
    assert ref_entry["agreement"]["max_abs_diff"] < 1e-5
    for entry in (ort_entry, ref_entry):
        lat = entry["latency_ms"]
        assert 0 < lat["min"] <= lat["median"] <= lat["p90"] <= lat["max"]
        assert entry["throughput"] == pytest.approx(4 / (lat["median"] / 1e3))
        mem = entry["memory"]
        assert mem["peak_rss_bytes"] >= mem["rss_before_bytes"] > 0


def test_machine_is_described():
    info = machine_info()
    assert info["cpu"] and info["cores_available"] >= 1
    assert {"kiln", "python", "numpy", "onnx", "onnxruntime"} <= set(info["versions"])


def test_a_failing_backend_gets_an_error_entry_and_the_rest_still_run():
    result = bench(small_model(custom_op=True), ["reference", "ort"], runs=1, warmup=0)
    validate(result)
    for entry in result["results"]:
        assert entry["status"] == "error"
        assert "does not support: com.example::Frob" in entry["error"]
    assert "error: backend 'ort' does not support" in format_bench(result)


def test_given_inputs_are_used_and_checked():
    x = np.ones((3, 8), np.float32)
    result = bench(small_model(), ["ort"], runs=1, warmup=0, inputs={"x": x})
    assert result["model"]["batch"] == 3
    with pytest.raises(KilnError, match="input 'x': expected dtype float32"):
        bench(small_model(), ["ort"], inputs={"x": x.astype(np.float64)})


@pytest.mark.parametrize(("runs", "warmup"), [(0, 1), (1, -1)])
def test_bad_run_counts(runs, warmup):
    with pytest.raises(KilnError, match="runs must be >= 1 and warmup >= 0"):
        bench(small_model(), runs=runs, warmup=warmup)


def test_kiln_bench_is_the_public_entry_point_and_the_package():
    result = kiln.bench(small_model(), ["reference"], runs=1, warmup=0)
    assert result["results"][0]["backend"] == "reference"
    assert kiln.bench.validate is validate
    import kiln.bench.schema as schema  # the package stays importable by dotted name

    assert schema.BENCH_SCHEMA is BENCH_SCHEMA


def test_latency_stats():
    stats = latency_stats([1_000_000 * v for v in (5, 1, 3, 2, 4)])
    assert stats == {
        "median": 3.0,
        "p90": pytest.approx(4.6),
        "mean": 3.0,
        "min": 1.0,
        "max": 5.0,
        "stdev": pytest.approx(np.std([1, 2, 3, 4, 5], ddof=1)),
    }


def test_agreement():
    a = {"y": np.array([1.0, 2.0], np.float32), "i": np.array([1, 2])}
    same = agreement("ort", a, {"y": a["y"] + 1e-7, "i": a["i"].copy()})
    assert same == {"baseline": "ort", "max_abs_diff": pytest.approx(1e-7, rel=0.5),
                    "within_tolerance": True}
    assert agreement("ort", a, {"y": a["y"] + 1e-2, "i": a["i"]})["within_tolerance"] is False
    assert agreement("ort", a, {"y": a["y"][:1], "i": a["i"]})["within_tolerance"] is False
    assert agreement("ort", a, {"y": a["y"]})["within_tolerance"] is False


def test_peak_memory_window_sees_an_allocation():
    method = _memory.reset_peak()
    # The current RSS, not the reset mark: memory freed by other threads after the reset
    # (thread pools of earlier tests' runtimes) lowers the base the allocation adds to.
    before = _memory.current_rss()
    # An anonymous mapping, touched: malloc might serve (and keep) heap memory instead,
    # depending on what earlier tests did to its thresholds.
    block = mmap.mmap(-1, 64 * 1024 * 1024)
    np.frombuffer(block, np.uint8)[:] = 1
    peak = _memory.peak_rss(method)
    block.close()
    assert peak - before >= 60 * 1024 * 1024
    if method == _memory.METHOD_RESET:  # the window restarts below the old peak
        _memory.reset_peak()
        assert _memory.peak_rss(method) < peak


# -- the validator rejects what the schema forbids ------------------------------------


def _mutated(result, path, value=None, delete=False):
    bad = copy.deepcopy(result)
    node = bad
    for key in path[:-1]:
        node = node[key]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return bad


@pytest.mark.parametrize(
    ("path", "value", "delete", "message"),
    [
        (("schema",), "kiln-bench/0", False, r"\$\.schema: must be 'kiln-bench/1'"),
        (("machine",), None, True, r"\$: missing 'machine'"),
        (("settings", "runs"), 0, False, r"\$\.settings\.runs: must be >= 1"),
        (("results",), [], False, r"\$\.results: needs at least 1 items"),
        (("results", 0, "latency_ms", "median"), "1.0", False,
         r"\$\.results\[0\]\.latency_ms\.median: expected number, got string"),
        (("results", 0, "latency_ms"), None, True, r"\$\.results\[0\]: missing 'latency_ms'"),
        (("results", 1, "status"), "maybe", False, r"\$\.results\[1\]\.status: must be one of"),
        (("results", 1, "speedup"), 2.0, False, r"\$\.results\[1\]\.speedup: unexpected field"),
        (("results", 0, "memory", "method"), "guess", False, r"memory\.method: must be one of"),
        (("results", 0, "threads"), True, False, r"threads: expected integer or null, got boolean"),
        (("created",), "yesterday", False, r"\$\.created: 'yesterday' does not match"),
        (("machine", "versions", "onnx"), 1.23, False, r"versions\.onnx: expected string"),
    ],
)
def test_validate_names_the_offending_field(result, path, value, delete, message):
    with pytest.raises(KilnError, match=message):
        validate(_mutated(result, path, value, delete))


def test_an_error_entry_needs_its_message(result):
    bad = copy.deepcopy(result)
    bad["results"][0] = {"backend": "ort", "status": "error"}
    with pytest.raises(KilnError, match=r"\$\.results\[0\]: missing 'error'"):
        validate(bad)
    bad["results"][0]["error"] = "unsupported op"
    validate(bad)


def test_schema_is_plain_json():
    assert json.loads(json.dumps(BENCH_SCHEMA)) == BENCH_SCHEMA
