"""Issue acceptance for the zoo: every zoo model round-trips through kiln with bit-identical
ONNX Runtime outputs, and `kiln bench` writes schema-valid JSON for each on the ort backend."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import onnxruntime as ort  # noqa: E402

import kiln  # noqa: E402
from kiln import zoo  # noqa: E402
from kiln.bench import validate  # noqa: E402
from kiln.cli import main  # noqa: E402
from kiln.frontends.onnx import to_bytes  # noqa: E402
from kiln.frontends.torch import to_onnx  # noqa: E402

NAMES = [entry.name for entry in zoo.list_models()]


@pytest.fixture(scope="module", autouse=True)
def _private_cache_dir(tmp_path_factory):
    """Keep the digits weights cache out of the user's home directory."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KILN_CACHE_DIR", str(tmp_path_factory.mktemp("kiln-cache")))
        yield


@pytest.fixture(scope="module", params=NAMES)
def exported(request, tmp_path_factory):
    """(name, exporter's original ModelProto bytes, kiln's saved file) per zoo model."""
    entry = zoo.get(request.param)
    proto = to_onnx(
        entry.build(),
        entry.example_inputs(2),
        input_names=entry.input_names,
        output_names=entry.output_names,
        dynamic_batch=entry.dynamic_batch,
    )
    original = proto.SerializeToString()
    path = tmp_path_factory.mktemp(entry.name) / f"{entry.name}.onnx"
    kiln.save(kiln.load(original), path)
    return entry, original, path


def _run(model: bytes | str, feeds: dict, level: ort.GraphOptimizationLevel) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    options.intra_op_num_threads = 1
    source = model if isinstance(model, bytes) else str(model)
    session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


@pytest.mark.parametrize(
    "level",
    [ort.GraphOptimizationLevel.ORT_DISABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_ALL],
    ids=["ort-opt-off", "ort-opt-all"],
)
def test_round_trip_gives_bit_identical_ort_outputs(exported, level):
    entry, original, path = exported
    feeds = {
        name: t.numpy() for name, t in zip(entry.input_names, entry.example_inputs(3), strict=True)
    }
    before = _run(original, feeds, level)
    after = _run(str(path), feeds, level)
    assert len(before) == len(after) == len(entry.output_names)
    for name, a, b in zip(entry.output_names, before, after, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape, name
        # Bit-identical: compare the raw bytes, so -0.0 vs 0.0 or NaN payloads would show.
        assert a.tobytes() == b.tobytes(), f"{entry.name}: output {name!r} changed bits"


def test_round_trip_keeps_the_serialized_model(exported):
    """Saving what kiln loaded gives back the exporter's model, byte for byte in protobuf
    terms after both are normalized by onnx (same nodes, weights, names and metadata)."""
    entry, original, path = exported
    import onnx

    a = onnx.load_from_string(original)
    b = onnx.load_from_string(to_bytes(kiln.load(path)))
    assert len(a.graph.node) == len(b.graph.node)
    for na, nb in zip(a.graph.node, b.graph.node, strict=True):
        assert na == nb, f"{entry.name}: node {na.name!r} changed"
    weights_a = {t.name: onnx.numpy_helper.to_array(t) for t in a.graph.initializer}
    weights_b = {t.name: onnx.numpy_helper.to_array(t) for t in b.graph.initializer}
    assert weights_a.keys() == weights_b.keys()
    for name, w in weights_a.items():
        assert w.tobytes() == weights_b[name].tobytes(), f"{entry.name}: weight {name!r}"
    assert list(a.graph.input) == list(b.graph.input)
    assert list(a.graph.output) == list(b.graph.output)


def test_kiln_bench_writes_json_on_ort(exported, tmp_path, capsys):
    entry, _, path = exported
    out = tmp_path / "bench.json"
    status = main(["bench", str(path), "--backends", "ort", "--runs", "3", "--warmup", "1",
                   "--threads", "1", "--json", str(out)])
    assert status == 0, capsys.readouterr().err
    result = json.loads(out.read_text())
    validate(result)
    (entry_result,) = [r for r in result["results"] if r["backend"] == "ort"]
    assert entry_result["latency_ms"]["median"] > 0
    assert entry_result["threads"] == 1
