"""``kiln optimize``: writes a model ONNX Runtime runs with the same outputs; report; errors."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto
from onnx import helper as oh

from kiln.cli import main


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """y = Relu(x * 2 + b); plus a dead Sigmoid branch and an unused initializer."""
    nodes = [
        oh.make_node("Mul", ["x", "two"], ["m"]),
        oh.make_node("Add", ["m", "b"], ["s"]),
        oh.make_node("Sigmoid", ["s"], ["dead"]),
        oh.make_node("Relu", ["s"], ["y"]),
    ]
    graph = oh.make_graph(
        nodes, "g",
        [oh.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [oh.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [oh.make_tensor("two", TensorProto.FLOAT, [], [2.0]),
         oh.make_tensor("b", TensorProto.FLOAT, [4], [0.5, -1.0, 2.0, 0.0])],
    )
    proto = oh.make_model(graph, ir_version=10, opset_imports=[oh.make_opsetid("", 21)])
    onnx.checker.check_model(proto)
    path = tmp_path_factory.mktemp("optimize") / "m.onnx"
    onnx.save(proto, path)
    return path


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def run_ort(path, x: np.ndarray) -> np.ndarray:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def test_optimize_writes_a_model_with_the_same_outputs(capsys, model_file, tmp_path):
    out_path = tmp_path / "sub" / "opt.onnx"
    code, out, err = run_cli(capsys, "optimize", model_file, "-o", out_path, "--check-numerics")
    assert code == 0, err
    onnx.checker.check_model(onnx.load(out_path))
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    np.testing.assert_allclose(run_ort(out_path, x), run_ort(model_file, x), rtol=1e-6)
    assert "eliminate-dead-code" in out  # the per-pass table goes to stdout
    assert out.splitlines()[-2:] == ["nodes: 4 -> 3", "ops: Sigmoid 1 -> 0"]
    assert "optimizing:" in err and "eliminate-dead-code (iteration 1)" in err


def test_optimize_with_passes_and_a_json_report(capsys, model_file, tmp_path):
    report = tmp_path / "report.json"
    code, out, err = run_cli(capsys, "optimize", model_file, "-o", tmp_path / "o.onnx",
                             "--passes", "eliminate-dead-code", "--report", report, "-q")
    assert code == 0, err
    assert err == ""  # -q: no progress
    data = json.loads(report.read_text())
    assert data["pipeline"] == "eliminate-dead-code"
    assert (data["nodes_before"], data["nodes_after"]) == (4, 3)
    assert data["ops_before"]["Sigmoid"] == 1 and "Sigmoid" not in data["ops_after"]
    assert data["passes"][0] == {**data["passes"][0], "name": "eliminate-dead-code",
                                 "iteration": 1, "changed": True}
    assert data["converged"] is True


def test_optimize_pipeline_none_keeps_the_model(capsys, model_file, tmp_path):
    out_path = tmp_path / "same.onnx"
    code, out, _ = run_cli(capsys, "optimize", model_file, "-o", out_path, "--pipeline", "none",
                           "--no-verify")
    assert code == 0 and out.splitlines()[-1] == "nodes: 4 -> 4"
    assert len(onnx.load(out_path).graph.node) == 4


@pytest.mark.parametrize(("argv", "fragment"), [
    (["--passes", "no-such-pass"], "unknown pass 'no-such-pass'; known passes: "),
    (["--pipeline", "O9"], "unknown pipeline 'O9'; pipelines: backend, default, none"),
    (["--passes", "eliminate-dead-code{colour=1}"], "unknown option 'colour'"),
])
def test_bad_pipelines_are_one_line_errors(capsys, model_file, tmp_path, argv, fragment):
    code, _, err = run_cli(capsys, "optimize", model_file, "-o", tmp_path / "o.onnx", *argv)
    lines = [line for line in err.splitlines() if line.startswith("kiln")]
    assert code == 1 and len(lines) == 1 and fragment in lines[0], err
    assert lines[0].startswith("kiln: error: ") and "Traceback" not in err
    assert not (tmp_path / "o.onnx").exists()


def test_missing_model_and_bad_arguments(capsys, model_file, tmp_path):
    code, _, err = run_cli(capsys, "optimize", tmp_path / "nope.onnx", "-o", tmp_path / "o.onnx")
    assert code == 1 and "nope.onnx: no such file" in err
    code, _, err = run_cli(capsys, "optimize", model_file)  # no -o
    assert code == 2 and "-o/--output" in err
    code, _, err = run_cli(capsys, "optimize", model_file, "-o", tmp_path / "o.onnx",
                           "--pipeline", "default", "--passes", "eliminate-dead-code")
    assert code == 2 and "not allowed with argument" in err


def test_optimize_help_covers_every_option(capsys):
    code, out, _ = run_cli(capsys, "optimize", "--help")
    assert code == 0 and out.startswith("usage: kiln optimize")
    for option in ("--output", "--pipeline", "--passes", "--check-numerics", "--no-verify",
                   "--report"):
        assert option in out
