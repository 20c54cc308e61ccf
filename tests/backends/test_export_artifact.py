"""Executable.export writes an artifact that plain onnxruntime loads, without kiln."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest
from onnx import TensorProto
from onnx import helper as oh
from onnx import numpy_helper as nh

import kiln
from kiln.backends import compile
from kiln.errors import KilnError

# Runs in a fresh interpreter: loads the artifact with onnxruntime alone, runs it on the
# saved inputs, saves the outputs, and fails if anything imported kiln.
LOADER = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import numpy as np
    import onnxruntime as ort

    artifact, inputs, outputs = map(Path, sys.argv[1:4])
    manifest = json.loads((artifact / "manifest.json").read_text())
    rt = manifest["runtime"].get("onnxruntime", {})
    so = ort.SessionOptions()
    level = rt.get("graph_optimization_level", "ORT_ENABLE_ALL")
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    so.intra_op_num_threads = rt.get("intra_op_num_threads", 0)
    providers = rt.get("providers", ["CPUExecutionProvider"])
    session = ort.InferenceSession(str(artifact / manifest["model"]), so, providers=providers)
    assert [i.name for i in session.get_inputs()] == [i["name"] for i in manifest["inputs"]]
    with np.load(inputs) as data:
        feeds = {k: data[k] for k in data.files}
    names = [o["name"] for o in manifest["outputs"]]
    np.savez(outputs, **dict(zip(names, session.run(names, feeds))))
    assert not any(m == "kiln" or m.startswith("kiln.") for m in sys.modules), "kiln was imported"
    """
)


def mlp(hidden: int) -> kiln.ir.Model:
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((16, hidden)).astype(np.float32)
    w2 = rng.standard_normal((hidden, 4)).astype(np.float32)
    proto = oh.make_model(
        oh.make_graph(
            [
                oh.make_node("MatMul", ["x", "w1"], ["h"]),
                oh.make_node("Tanh", ["h"], ["t"]),
                oh.make_node("MatMul", ["t", "w2"], ["y"]),
            ],
            "mlp",
            [oh.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
            [oh.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
            [nh.from_array(w1, "w1"), nh.from_array(w2, "w2")],
        ),
        opset_imports=[oh.make_opsetid("", 21)],
        ir_version=10,
    )
    return kiln.load(proto)


def run_without_kiln(artifact, feeds, tmp_path) -> dict[str, np.ndarray]:
    inputs, outputs = tmp_path / "inputs.npz", tmp_path / "outputs.npz"
    np.savez(inputs, **feeds)
    # -I: isolated mode, so neither the working directory nor PYTHON* variables add paths.
    proc = subprocess.run(
        [sys.executable, "-I", "-c", LOADER, str(artifact), str(inputs), str(outputs)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    with np.load(outputs) as data:
        return {k: data[k] for k in data.files}


@pytest.mark.parametrize("external_data", [False, True])
def test_artifact_runs_in_plain_onnxruntime(tmp_path, external_data):
    exe = compile(mlp(hidden=64), "ort", threads=1)
    artifact = exe.export(tmp_path / "artifact", external_data=external_data)
    assert artifact == tmp_path / "artifact"
    files = sorted(p.name for p in artifact.iterdir())
    expected = ["manifest.json", "model.onnx"] + (["model.onnx.data"] if external_data else [])
    assert files == sorted(expected)
    feeds = exe.random_inputs(seed=5, dims={"batch": 3})
    got = run_without_kiln(artifact, feeds, tmp_path)
    want = exe.run(feeds)
    assert list(got) == ["y"]
    np.testing.assert_allclose(got["y"], want["y"], rtol=1e-5, atol=1e-6)


def test_external_data_keeps_weights_out_of_the_model_file(tmp_path):
    model = mlp(hidden=512)  # 16*512 + 512*4 floats = 40 KiB of weights
    artifact = compile(model, "ort").export(tmp_path / "a", external_data=True)
    assert (artifact / "model.onnx").stat().st_size < 4096
    assert (artifact / "model.onnx.data").stat().st_size >= (16 * 512 + 512 * 4) * 4
    proto = onnx.load(artifact / "model.onnx", load_external_data=False)
    assert all(t.data_location == TensorProto.EXTERNAL for t in proto.graph.initializer)


def test_manifest_describes_the_artifact(tmp_path):
    exe = compile(mlp(hidden=8), "ort", optimize="basic", threads=2)
    artifact = exe.export(tmp_path / "a")
    manifest = json.loads((artifact / "manifest.json").read_text())
    assert manifest["format"] == "kiln-artifact" and manifest["format_version"] == 1
    assert manifest["kiln_version"] == kiln.__version__
    assert (manifest["backend"], manifest["target"]) == ("ort", "cpu")
    assert manifest["model"] == "model.onnx" and manifest["external_data"] is None
    assert manifest["inputs"] == [
        {"name": "x", "dtype": "float32", "elem_type": 1, "shape": ["batch", 16]}
    ]
    assert manifest["outputs"][0]["shape"] == ["batch", 4]
    assert manifest["opset_imports"] == {"": 21}
    assert manifest["runtime"]["onnxruntime"] == {
        "graph_optimization_level": "ORT_ENABLE_BASIC",
        "intra_op_num_threads": 2,
        "providers": ["CPUExecutionProvider"],
    }
    digest = hashlib.sha256((artifact / "model.onnx").read_bytes()).hexdigest()
    assert manifest["sha256"] == {"model.onnx": digest}


def test_re_export_replaces_stale_external_data(tmp_path):
    exe = compile(mlp(hidden=8), "ort")
    exe.export(tmp_path / "a", external_data=True)
    exe.export(tmp_path / "a", external_data=False)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["manifest.json", "model.onnx"]


def test_reference_executable_exports_too(tmp_path):
    exe = compile(mlp(hidden=8), "reference")
    artifact = exe.export(tmp_path / "ref")
    feeds = exe.random_inputs(dims={"batch": 2})
    got = run_without_kiln(artifact, feeds, tmp_path)
    np.testing.assert_allclose(got["y"], exe.run(feeds)["y"], rtol=1e-5, atol=1e-6)


def test_export_onto_a_file_is_an_error(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(KilnError, match="exists and is not a directory"):
        compile(mlp(hidden=8), "ort").export(tmp_path / "f")
