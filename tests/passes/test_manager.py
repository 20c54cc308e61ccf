"""The pass manager: verification between passes, fixed point, report, check-numerics."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto
from onnx import helper as oh

import kiln
from kiln.errors import KilnError
from kiln.frontends.onnx import to_bytes
from kiln.ir import Model
from kiln.passes import OptimizeReport, Pass, PassManager, PassResult, register_pass
from kiln.passes._numerics import compare_outputs, random_inputs


@register_pass
class _DropOneIdentity(Pass):
    """Test-only, correct: bypass and remove the first Identity (one per call)."""

    name = "test-drop-one-identity"

    def call(self, model: Model) -> PassResult:
        for node in model.graph:
            if node.op_type == "Identity" and not node.outputs[0].is_graph_output():
                node.outputs[0].replace_all_uses_with(node.inputs[0])
                model.graph.remove(node)
                return PassResult(model, True, Counter(removed=1))
        return PassResult(model, False)


@register_pass
class _FlipAdd(Pass):
    """Test-only, wrong: turns every Add into a Sub (valid IR, other numbers)."""

    name = "test-flip-add"

    def call(self, model: Model) -> PassResult:
        changed = False
        for node in model.graph:
            if node.op_type == "Add":
                node.op_type = "Sub"
                changed = True
        return PassResult(model, changed)


@register_pass
class _BreakIR(Pass):
    """Test-only, wrong: removes the first node although its output is used."""

    name = "test-break-ir"

    def call(self, model: Model) -> PassResult:
        model.graph.remove(next(iter(model.graph)), safe=False)
        return PassResult(model, True)


@register_pass
class _AlwaysChanged(Pass):
    """Test-only: claims a change every time (fixed point must still stop)."""

    name = "test-always-changed"

    def call(self, model: Model) -> PassResult:
        return PassResult(model, True)


def make_model() -> Model:
    """y = Relu(Identity(Identity(Identity(x))) + b), with x of shape [N, 3]."""
    nodes = [
        oh.make_node("Identity", ["x"], ["i1"]),
        oh.make_node("Identity", ["i1"], ["i2"]),
        oh.make_node("Identity", ["i2"], ["i3"]),
        oh.make_node("Add", ["i3", "b"], ["s"]),
        oh.make_node("Relu", ["s"], ["y"]),
    ]
    graph = oh.make_graph(
        nodes, "g",
        [oh.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [oh.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [oh.make_tensor("b", TensorProto.FLOAT, [3], [0.5, -1.0, 2.0])],
    )
    proto = oh.make_model(graph, ir_version=10, opset_imports=[oh.make_opsetid("", 21)])
    onnx.checker.check_model(proto)
    return kiln.load(proto)


def run_ort(model: Model, x: np.ndarray) -> np.ndarray:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(to_bytes(model), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def test_passes_run_in_order_and_the_report_sums_them():
    model = make_model()
    x = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    expected = run_ort(model, x)
    seen = []
    manager = PassManager("test-drop-one-identity,test-drop-one-identity", progress=seen.append)
    out, report = manager(model)
    assert out is model and len(out.graph) == 3
    assert [r.name for r in report.runs] == ["test-drop-one-identity"] * 2
    assert all(r.changed and r.iteration == 1 and r.seconds > 0 for r in report.runs)
    assert report.stats == Counter({"test-drop-one-identity.removed": 2})
    assert (report.nodes_before, report.nodes_after, report.iterations) == (5, 3, 1)
    assert len(seen) == 2 and "test-drop-one-identity (iteration 1): changed" in seen[0]
    np.testing.assert_array_equal(run_ort(out, x), expected)


def test_fixed_point_repeats_until_nothing_changes():
    _, report = PassManager(["test-drop-one-identity"], fixed_point=True)(make_model())
    assert [r.changed for r in report.runs] == [True, True, True, False]
    assert [r.iteration for r in report.runs] == [1, 2, 3, 4]
    assert report.converged and report.nodes_after == 2


def test_fixed_point_is_bounded():
    manager = PassManager("test-always-changed", fixed_point=True, max_iterations=3)
    _, report = manager(make_model())
    assert len(report.runs) == 3 and report.iterations == 3 and not report.converged
    assert "stopped at the iteration limit" in report.format()
    with pytest.raises(ValueError, match="max_iterations"):
        PassManager("test-always-changed", max_iterations=0)


def test_verify_names_the_pass_that_broke_the_ir():
    manager = PassManager("test-drop-one-identity,test-break-ir,test-drop-one-identity")
    with pytest.raises(KilnError, match=r"^pass 'test-break-ir' broke the IR: .+") as info:
        manager(make_model())
    assert "\n" not in str(info.value)
    # with verification off, the broken model goes through
    _, report = PassManager("test-break-ir", verify=False)(make_model())
    assert report.nodes_after == 4


def test_an_invalid_input_model_is_not_blamed_on_a_pass():
    model = make_model()
    model.graph.remove(next(iter(model.graph)), safe=False)
    with pytest.raises(KilnError, match="^the input model fails verification"):
        PassManager("test-drop-one-identity")(model)


def test_report_json_and_table():
    _, report = PassManager("test-drop-one-identity", fixed_point=True)(make_model())
    assert isinstance(report, OptimizeReport)
    data = json.loads(report.to_json())
    assert data["nodes_before"] == 5 and data["nodes_after"] == 2
    assert data["pipeline"] == "test-drop-one-identity" and data["changed"] is True
    assert data["stats"] == {"test-drop-one-identity.removed": 3}
    assert [p["iteration"] for p in data["passes"]] == [1, 2, 3, 4]
    assert set(data["passes"][0]) == {"name", "iteration", "changed", "seconds", "stats"}
    table = report.format()
    assert "test-drop-one-identity" in table and "removed=1" in table
    assert table.splitlines()[-2:] == ["nodes: 5 -> 2", "ops: Identity 3 -> 0"]
    assert report.ops_before["Identity"] == 3 and report.ops_after["Identity"] == 0
    assert data["ops_after"] == dict(sorted(report.ops_after.items()))


def test_check_numerics_names_the_first_pass_that_changes_outputs():
    manager = PassManager("test-drop-one-identity,test-flip-add,test-drop-one-identity",
                          check_numerics=True)
    with pytest.raises(KilnError) as info:
        manager(make_model())
    message = str(info.value)
    assert message.startswith("check-numerics: pass 'test-flip-add' changed output 'y'")
    assert "max abs diff" in message


def test_check_numerics_passes_a_correct_pass():
    x = np.random.default_rng(1).standard_normal((2, 3)).astype(np.float32)
    manager = PassManager("test-drop-one-identity", fixed_point=True, check_numerics=True,
                          numerics_inputs={"x": x})
    out, report = manager(make_model())
    assert report.nodes_after == 2 and len(report.runs) == 4
    # without the check, the wrong pass goes through unnoticed
    PassManager("test-flip-add")(make_model())


def test_random_inputs_follow_the_input_types():
    feeds = random_inputs(make_model(), dims={"N": 5})
    assert feeds["x"].shape == (5, 3) and feeds["x"].dtype == np.float32
    assert random_inputs(make_model())["x"].shape == (1, 3)


def test_compare_outputs_exact_for_integers_tolerant_for_floats():
    a = {"f": np.array([1.0, np.nan], np.float32), "i": np.array([1, 2])}
    close = {"f": np.array([1.0 + 1e-7, np.nan], np.float32), "i": np.array([1, 2])}
    assert compare_outputs(a, close, rtol=1e-4, atol=1e-5) is None
    off_by_one = {"f": a["f"], "i": np.array([1, 3])}
    assert compare_outputs(a, off_by_one, rtol=1, atol=1)[0] == "i"
    far = {"f": np.array([2.0, np.nan], np.float32), "i": a["i"]}
    name, why = compare_outputs(a, far, rtol=1e-4, atol=1e-5)
    assert name == "f" and "max abs diff 1" in why


def test_kiln_optimize_api(tmp_path):
    path = tmp_path / "m.onnx"
    kiln.save(make_model(), path)
    model, report = kiln.optimize(path, passes="test-drop-one-identity", report=True,
                                  check_numerics=True)
    assert len(model.graph) == 2 and report.converged
    assert len(kiln.optimize(path.read_bytes(), pipeline="none").graph) == 5
    optimized = kiln.optimize(make_model())  # the default pipeline
    assert isinstance(optimized, Model)
    with pytest.raises(KilnError, match="unknown pipeline"):
        kiln.optimize(make_model(), pipeline="fastest")
