"""The kiln command: subcommands through kiln.cli.main, and a few through a subprocess."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto
from onnx import helper as oh
from onnx import numpy_helper as nh

from kiln.bench import validate
from kiln.cli import main

HAS_TORCH = importlib.util.find_spec("torch") is not None


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """Conv(4, 3x3, pad 1, bias) -> Relu -> Flatten -> MatMul: x f32[N,2,5,5] -> y f32[N,3]."""
    rng = np.random.default_rng(0)
    proto = oh.make_model(
        oh.make_graph(
            [
                oh.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1]),
                oh.make_node("Relu", ["c"], ["r"]),
                oh.make_node("Flatten", ["r"], ["f"]),
                oh.make_node("MatMul", ["f", "M"], ["y"]),
            ],
            "cli_model",
            [oh.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 5, 5])],
            [oh.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
            [
                nh.from_array(rng.standard_normal((4, 2, 3, 3)).astype(np.float32), "W"),
                nh.from_array(rng.standard_normal(4).astype(np.float32), "B"),
                nh.from_array(rng.standard_normal((100, 3)).astype(np.float32), "M"),
            ],
        ),
        opset_imports=[oh.make_opsetid("", 21)],
        ir_version=10,
        producer_name="cli-test",
    )
    path = tmp_path_factory.mktemp("cli") / "model.onnx"
    onnx.save(proto, path)
    return path


# FLOPs at N=1: Conv 2*100*18 + 100 (bias), Relu 100, MatMul 2*3*100.
FLOPS_N1 = 2 * 100 * 18 + 100 + 100 + 2 * 3 * 100


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err: str, fragment: str) -> None:
    lines = [line for line in err.splitlines() if line.startswith("kiln")]
    assert len(lines) == 1 and fragment in lines[0], err
    assert "Traceback" not in err


# -- inspect --------------------------------------------------------------------------


def test_inspect_text(capsys, model_file):
    code, out, err = run_cli(capsys, "inspect", str(model_file))
    assert code == 0
    assert "model: model (graph 'cli_model')" in out
    assert "producer: cli-test" in out
    assert f"parameters: {72 + 4 + 300:,}" in out
    assert "FLOPs: 4.40 KFLOPs" in out and FLOPS_N1 == 4400
    assert "symbolic input dimensions counted as N=1" in out
    assert "x  f32[N,2,5,5]" in out and "y  f32[N,3]" in out
    assert "loading model.onnx ... done" in err


def test_inspect_json_with_a_dim(capsys, model_file):
    code, out, _ = run_cli(capsys, "-q", "inspect", str(model_file), "--json", "--dim", "N=3")
    assert code == 0
    data = json.loads(out)
    assert data["flops"]["total"] == 3 * FLOPS_N1
    assert data["flops"]["assumed_dims"] == {"N": 3}
    assert data["op_histogram"] == {"Conv": 1, "Relu": 1, "Flatten": 1, "MatMul": 1}
    assert data["parameters"] == 376 and data["parameter_bytes"] == 376 * 4
    assert data["inputs"] == [{"name": "x", "dtype": "float32", "elem_type": 1,
                               "shape": ["N", 2, 5, 5]}]
    assert data["opset_imports"] == {"": 21} and data["nodes"] == 4


# -- run ------------------------------------------------------------------------------


def test_run_with_random_inputs_and_saved_outputs(capsys, model_file, tmp_path):
    out_file = tmp_path / "out.npz"
    code, out, _ = run_cli(capsys, "run", str(model_file), "--dim", "N=2", "--output",
                           str(out_file))
    assert code == 0
    assert "inputs (random, seed 0):" in out and "[2,2,5,5]" in out
    assert "outputs (ort," in out and "float32  [2,3]" in out
    with np.load(out_file) as data:
        assert data.files == ["y"] and data["y"].shape == (2, 3)


def test_run_with_given_inputs_on_reference_matches_ort(capsys, model_file, tmp_path):
    x = np.random.default_rng(1).standard_normal((3, 2, 5, 5)).astype(np.float32)
    np.savez(tmp_path / "in.npz", x=x)
    for backend in ("ort", "reference"):
        code, _, _ = run_cli(capsys, "-q", "run", str(model_file), "--inputs",
                             str(tmp_path / "in.npz"), "--backend", backend,
                             "--output", str(tmp_path / f"{backend}.npz"))
        assert code == 0
    with np.load(tmp_path / "ort.npz") as a, np.load(tmp_path / "reference.npz") as b:
        np.testing.assert_allclose(a["y"], b["y"], rtol=1e-4, atol=1e-5)


def test_run_with_wrong_inputs_names_the_input(capsys, model_file, tmp_path):
    np.savez(tmp_path / "in.npz", x=np.ones((1, 2, 5, 5), np.float64))
    code, _, err = run_cli(capsys, "run", str(model_file), "--inputs", str(tmp_path / "in.npz"))
    assert code == 1
    assert_one_line_error(err, "kiln: error: input 'x': expected dtype float32")


# -- bench ----------------------------------------------------------------------------


def test_bench_table_and_json(capsys, model_file, tmp_path):
    json_file = tmp_path / "bench.json"
    code, out, err = run_cli(capsys, "bench", str(model_file), "--backends", "ort,reference",
                             "--runs", "3", "--warmup", "1", "--threads", "1",
                             "--json", str(json_file))
    assert code == 0
    result = json.loads(json_file.read_text())
    validate(result)
    assert [r["backend"] for r in result["results"]] == ["ort", "reference"]
    assert result["settings"] == {"runs": 3, "warmup": 1, "threads": 1, "seed": 0}
    assert result["model"]["flops"] == FLOPS_N1 and result["model"]["name"] == "model"
    assert all(r["status"] == "ok" for r in result["results"])
    header = next(line for line in out.splitlines() if line.startswith("backend"))
    assert "median ms" in header and "p90 ms" in header and "items/s" in header
    assert "ort: compiling" in err and "wrote" in err


def test_bench_ort_optimize_level_is_recorded(capsys, model_file, tmp_path):
    json_file = tmp_path / "b.json"
    code, _, _ = run_cli(capsys, "-q", "bench", str(model_file), "--runs", "1", "--warmup", "0",
                         "--ort-optimize", "disable", "--json", str(json_file))
    assert code == 0
    assert json.loads(json_file.read_text())["results"][0]["options"]["optimize"] == "disable"


# -- errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["inspect", "missing.onnx"], "kiln: error: missing.onnx: no such file"),
        (["bench", "{model}", "--backends", "ort,warp"], "kiln: error: unknown backend 'warp'"),
        (["run", "{model}", "--backend", "warp"], "kiln: error: unknown backend 'warp'"),
        (["run", "{model}", "--batch", "2"], "kiln: error: --batch applies to zoo:NAME models"),
        (["run", "{model}", "--inputs", "missing.npz"], "kiln: error: No such file or directory: missing.npz"),
        (["inspect", "{garbage}"], "malformed ONNX protobuf"),
        (["run", "{model}", "--inputs", "{garbage}"], "not a readable .npz"),
    ],
)
def test_user_errors_are_one_line_with_status_1(capsys, model_file, tmp_path, argv, fragment):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x0a\xff\xff not a model")
    argv = [a.format(model=model_file, garbage=garbage) for a in argv]
    code, _, err = run_cli(capsys, *argv)
    assert code == 1
    assert_one_line_error(err, fragment)


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        ([], "kiln: error: the following arguments are required: COMMAND"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["bench", "m.onnx", "--runs", "0"], "kiln bench: error: argument --runs"),
        (["run", "m.onnx", "--dim", "N"], "kiln run: error: argument --dim: expected NAME=SIZE"),
        (["zoo", "export", "mlp"], "kiln zoo export: error: the following arguments are required: -o/--output"),
    ],
)
def test_bad_arguments_exit_2_on_one_line(capsys, argv, fragment):
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    assert_one_line_error(err, fragment)


def test_help_on_every_command(capsys):
    for argv in (["--help"], ["inspect", "--help"], ["run", "--help"], ["bench", "--help"],
                 ["zoo", "--help"], ["zoo", "export", "--help"], ["demo", "--help"]):
        code, out, _ = run_cli(capsys, *argv)
        assert code == 0 and out.startswith("usage: kiln")
    _, out, _ = run_cli(capsys, "bench", "--help")
    for option in ("--backends", "--runs", "--warmup", "--threads", "--json", "--dim"):
        assert option in out


def test_debug_flag_shows_the_traceback(model_file):
    with pytest.raises(Exception, match="unknown backend 'warp'"):
        main(["--debug", "run", str(model_file), "--backend", "warp"])


def _python_m_kiln(*argv: str, env_extra: dict[str, str] | None = None):
    env = {k: v for k, v in os.environ.items() if k != "KILN_DEBUG"} | (env_extra or {})
    return subprocess.run([sys.executable, "-m", "kiln", *argv], capture_output=True, text=True,
                          timeout=120, env=env)


def test_python_m_kiln_runs_and_fails_cleanly(model_file, tmp_path):
    ok = _python_m_kiln("-q", "inspect", str(model_file), "--json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["flops"]["total"] == FLOPS_N1
    bad = _python_m_kiln("inspect", str(tmp_path / "nope.onnx"))
    assert bad.returncode == 1
    assert bad.stderr.strip() == f"kiln: error: {tmp_path / 'nope.onnx'}: no such file"
    debug = _python_m_kiln("run", str(model_file), "--backend", "warp",
                           env_extra={"KILN_DEBUG": "1"})
    assert debug.returncode == 1 and "Traceback" in debug.stderr


# -- zoo and demo (need torch) --------------------------------------------------------

needs_zoo = pytest.mark.skipif(not HAS_TORCH, reason="the zoo needs the torch extra")


@needs_zoo
@pytest.mark.torch
def test_zoo_list(capsys):
    code, out, _ = run_cli(capsys, "zoo", "list")
    assert code == 0
    names = [line.split()[0] for line in out.splitlines()]
    assert "digits_cnn" in names and "resnet18" in names


@needs_zoo
@pytest.mark.torch
def test_zoo_export_and_use_as_a_source(capsys, tmp_path):
    path = tmp_path / "mlp.onnx"
    code, _, err = run_cli(capsys, "zoo", "export", "mlp", "-o", str(path), "--dynamic-batch")
    assert code == 0 and "exporting mlp" in err
    code, out, _ = run_cli(capsys, "-q", "inspect", str(path), "--json", "--dim", "batch=2")
    data = json.loads(out)
    assert data["inputs"][0]["shape"] == ["batch", 784]
    # 784-512-512-10 MLP: 2 x (784*512 + 512*512 + 512*10) MACs per row, plus biases and ReLUs.
    macs = 784 * 512 + 512 * 512 + 512 * 10
    assert data["flops"]["total"] == 2 * (2 * macs + 512 + 512 + 10 + 512 + 512)
    code, out, _ = run_cli(capsys, "-q", "run", "zoo:mlp", "--batch", "3")
    assert code == 0 and "[3,10]" in out


@needs_zoo
@pytest.mark.torch
def test_unknown_zoo_model_is_a_clean_error(capsys):
    code, _, err = run_cli(capsys, "inspect", "zoo:nope")
    assert code == 1
    assert_one_line_error(err, "kiln: error: no zoo model named 'nope'")


@needs_zoo
@pytest.mark.torch
def test_demo_runs_end_to_end(capsys):
    code, out, err = run_cli(capsys, "demo", "--runs", "2")
    assert code == 0, err
    assert "== 5. benchmark" in out
    assert "reloaded with plain onnxruntime: same outputs" in out
    table = out[out.index("outputs against ONNX Runtime"):]
    for backend in ("ort", "reference"):
        row = next(line for line in table.splitlines() if line.startswith(backend))
        assert " yes " in row
