"""The tvm backend: compile, numerics against ORT, the compile cache, export, options."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from onnx import TensorProto
from onnx import helper as oh
from onnx import numpy_helper as nh

import kiln
from kiln.backends.tvm import CompileCache, functional_hash
from kiln.errors import KilnError

pytestmark = pytest.mark.tvm

RTOL, ATOL = 1e-3, 1e-4


def conv_net(seed: int = 0, names: str = "") -> kiln.ir.Model:
    """Conv(+bias) -> Relu -> MaxPool -> Flatten -> Gemm, symbolic batch; ``names``
    prefixes every value and node name (the same function under other names)."""
    rng = np.random.default_rng(seed)
    f32 = np.float32
    n = names
    inits = [
        nh.from_array(rng.standard_normal((5, 3, 3, 3)).astype(f32), n + "W"),
        nh.from_array(rng.standard_normal(5).astype(f32), n + "B"),
        nh.from_array(rng.standard_normal((7, 5 * 3 * 3)).astype(f32), n + "G"),
        nh.from_array(rng.standard_normal(7).astype(f32), n + "GB"),
    ]
    nodes = [
        oh.make_node("Conv", [n + "x", n + "W", n + "B"], [n + "c"], pads=[1, 1, 1, 1],
                     name=n + "conv"),
        oh.make_node("Relu", [n + "c"], [n + "r"], name=n + "relu"),
        oh.make_node("MaxPool", [n + "r"], [n + "p"], kernel_shape=[2, 2], strides=[2, 2]),
        oh.make_node("Flatten", [n + "p"], [n + "f"]),
        oh.make_node("Gemm", [n + "f", n + "G", n + "GB"], [n + "y"], transB=1),
    ]
    graph = oh.make_graph(
        nodes, "g",
        [oh.make_tensor_value_info(n + "x", TensorProto.FLOAT, ["batch", 3, 6, 6])],
        [oh.make_tensor_value_info(n + "y", TensorProto.FLOAT, ["batch", 7])],
        inits,
    )
    proto = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 21)], ir_version=10)
    return kiln.load(proto)


@pytest.fixture
def cache_dir(tmp_path):
    return tmp_path / "cache"


def _check_against_ort(exe, model, dims=None):
    reference = kiln.compile(model, "ort", optimize="disable")
    feeds = reference.random_inputs(seed=1, dims=dims)
    got, expected = exe.run(feeds), reference.run(feeds)
    assert list(got) == list(expected)
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], rtol=RTOL, atol=ATOL)


def test_compiles_and_matches_ort(cache_dir):
    model = conv_net()
    exe = kiln.compile(model, "tvm", cache_dir=str(cache_dir))
    assert exe.backend == "tvm" and exe.target == "llvm"
    assert not exe.from_cache
    assert exe.input_specs[0].shape == (1, 3, 6, 6)  # the symbolic batch took its default
    _check_against_ort(exe, model)


def test_dims_option_specializes_shapes(cache_dir):
    model = conv_net()
    exe = kiln.compile(model, "tvm", dims={"batch": 3}, cache_dir=str(cache_dir))
    assert exe.input_specs[0].shape == (3, 3, 6, 6)
    _check_against_ort(exe, model, dims={"batch": 3})
    with pytest.raises(KilnError, match="x"):  # another batch is refused, naming the input
        exe.run({"x": np.zeros((2, 3, 6, 6), np.float32)})


def test_untuned_schedules_give_the_same_results(cache_dir):
    model = conv_net()
    exe = kiln.compile(model, "tvm", schedules="none", cache_dir=str(cache_dir))
    _check_against_ort(exe, model)


def test_compile_cache_reuses_a_build_of_the_same_graph(cache_dir):
    first = kiln.compile(conv_net(), "tvm", cache_dir=str(cache_dir))
    assert not first.from_cache
    entries = sorted(p.name for p in cache_dir.iterdir())
    assert entries == [first.cache_key]
    # The same graph under other value and node names: no rebuild.
    renamed = conv_net(names="other_")
    again = kiln.compile(renamed, "tvm", cache_dir=str(cache_dir))
    assert again.from_cache and again.cache_key == first.cache_key
    assert again.compile_seconds == 0.0
    _check_against_ort(again, renamed)
    # Different weights, or another schedule choice: a new entry.
    other = kiln.compile(conv_net(seed=5), "tvm", cache_dir=str(cache_dir))
    assert not other.from_cache and other.cache_key != first.cache_key
    untuned = kiln.compile(conv_net(), "tvm", schedules="none", cache_dir=str(cache_dir))
    assert not untuned.from_cache
    assert len(list(cache_dir.iterdir())) == 3
    # cache=False neither reads nor writes.
    fresh = kiln.compile(conv_net(), "tvm", cache=False, cache_dir=str(cache_dir))
    assert not fresh.from_cache
    assert len(list(cache_dir.iterdir())) == 3


def test_functional_hash_ignores_names_but_not_computation():
    assert functional_hash(conv_net()) == functional_hash(conv_net(names="n_"))
    assert functional_hash(conv_net()) != functional_hash(conv_net(seed=1))


def test_cache_ignores_incomplete_entries(cache_dir):
    cache = CompileCache(cache_dir)
    (cache_dir / "abc").mkdir(parents=True)
    (cache_dir / "abc" / "model.so").write_bytes(b"")  # no entry.json: a crashed write
    assert cache.lookup("abc") is None


def test_export_runs_in_a_fresh_process_with_tvm_runtime_alone(tmp_path, cache_dir):
    model = conv_net()
    exe = kiln.compile(model, "tvm", cache_dir=str(cache_dir))
    art = exe.export(tmp_path / "art")
    manifest = json.loads((art / "manifest.json").read_text())
    assert manifest["backend"] == "tvm" and (art / manifest["library"]).is_file()
    feeds = exe.random_inputs(seed=2)
    np.savez(tmp_path / "in.npz", **feeds)
    script = f"""
import json, sys
import numpy as np
import tvm.runtime
from tvm.runtime.vm import VirtualMachine
art = {str(art)!r}
manifest = json.load(open(art + "/manifest.json"))
vm = VirtualMachine(tvm.runtime.load_module(art + "/" + manifest["library"]), tvm.runtime.cpu())
feeds = np.load({str(tmp_path / "in.npz")!r})
out = vm["main"](*[tvm.runtime.tensor(feeds[i["name"]]) for i in manifest["inputs"]])
np.save({str(tmp_path / "out.npy")!r}, out.numpy())
assert not any(m.split(".")[0] == "kiln" for m in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), exe.run(feeds)["y"], rtol=0,
                               atol=0)


def test_bad_options_and_targets_are_named():
    with pytest.raises(KilnError, match="schedules"):
        kiln.compile(conv_net(), "tvm", schedules="fast")
    with pytest.raises(KilnError, match="threads"):
        kiln.compile(conv_net(), "tvm", threads=0)
    with pytest.raises(KilnError, match="no target 'vulkan'"):
        kiln.compile(conv_net(), "tvm", target="vulkan")


def test_cuda_target_without_a_gpu_says_so():
    import tvm

    if tvm.cuda(0).exist:
        pytest.skip("a GPU is present: the cuda target is tested on device machines")
    with pytest.raises(KilnError, match="needs an NVIDIA GPU"):
        kiln.compile(conv_net(), "tvm", target="cuda", cache=False)


def test_unsupported_op_is_named_before_building():
    graph = oh.make_graph(
        [oh.make_node("Det", ["x"], ["y"], name="det")], "g",
        [oh.make_tensor_value_info("x", TensorProto.FLOAT, [3, 3])],
        [oh.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    model = kiln.load(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 21)],
                                    ir_version=10))
    with pytest.raises(KilnError, match="Det"):
        kiln.compile(model, "tvm", cache=False)


def test_cli_compile_writes_an_artifact_and_checks_it(tmp_path, cache_dir, monkeypatch, capsys):
    from kiln.cli import main

    monkeypatch.setenv("KILN_CACHE_DIR", str(cache_dir))
    path = tmp_path / "m.onnx"
    kiln.save(conv_net(), path)
    out = tmp_path / "out"
    assert main(["compile", str(path), "--backend", "tvm", "-o", str(out), "--check", "-q"]) == 0
    text = capsys.readouterr().out
    assert "tvm/llvm: built in" in text and "check against ONNX Runtime" in text and " ok," in text
    assert (out / "model.so").is_file() and (out / "manifest.json").is_file()
    assert main(["compile", str(path), "--backend", "tvm", "-o", str(out), "-q"]) == 0
    assert "from the compile cache" in capsys.readouterr().out


def test_cli_bench_runs_ort_and_tvm_side_by_side(tmp_path, cache_dir, monkeypatch, capsys):
    from kiln.bench import validate
    from kiln.cli import main

    monkeypatch.setenv("KILN_CACHE_DIR", str(cache_dir))
    path = tmp_path / "m.onnx"
    kiln.save(conv_net(), path)
    out = tmp_path / "bench.json"
    code = main(["bench", str(path), "--backends", "ort,tvm", "--runs", "2", "--warmup", "1",
                 "--dim", "batch=2", "--json", str(out), "-q"])
    assert code == 0
    result = json.loads(out.read_text())
    validate(result)
    by_backend = {r["backend"]: r for r in result["results"]}
    assert by_backend["tvm"]["status"] == "ok", by_backend["tvm"]
    assert by_backend["tvm"]["options"]["dims"] == {"batch": 2}
    assert by_backend["tvm"]["agreement"]["within_tolerance"]
