"""The zoo: deterministic builds, example inputs, the digits split and classifier, export."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import onnxruntime as ort  # noqa: E402

import kiln  # noqa: E402
from kiln import zoo  # noqa: E402
from kiln.zoo import _digits  # noqa: E402

NAMES = ["resnet18", "mobilenetv2", "bert", "mlp", "lstm", "digits_cnn"]

# Output shapes at batch 2, per model, in output order.
OUTPUT_SHAPES = {
    "resnet18": [(2, 1000)],
    "mobilenetv2": [(2, 1000)],
    "bert": [(2, 128, 256), (2, 256)],
    "mlp": [(2, 10)],
    "lstm": [(2, 10)],
    "digits_cnn": [(2, 10)],
}


@pytest.fixture(scope="module", autouse=True)
def _private_cache_dir(tmp_path_factory):
    """Keep the digits weights cache out of the user's home directory."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KILN_CACHE_DIR", str(tmp_path_factory.mktemp("kiln-cache")))
        yield


def _outputs(module, inputs) -> list:
    with torch.no_grad():
        out = module(*inputs)
    return list(out) if isinstance(out, tuple) else [out]


def _session(path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


# ----------------------------------------------------------------------------- catalogue


def test_list_models_names_and_get():
    entries = zoo.list_models()
    assert [e.name for e in entries] == NAMES
    for entry in entries:
        assert zoo.get(entry.name) is entry
        assert entry.description
        assert len(set(entry.input_names)) == len(entry.input_names)
        assert len(set(entry.output_names)) == len(entry.output_names)


def test_get_unknown_name_lists_valid_names():
    with pytest.raises(KeyError, match="resnet50.*valid names: resnet18, mobilenetv2, bert"):
        zoo.get("resnet50")


def test_zoo_entry_is_frozen():
    with pytest.raises(AttributeError):
        zoo.get("mlp").name = "other"  # type: ignore[misc]


def test_importing_kiln_does_not_import_torch():
    code = "import kiln, sys; assert 'torch' not in sys.modules, 'kiln imported torch'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_zoo_without_torch_says_which_extra_to_install():
    code = "import sys; sys.modules['torch'] = None; import kiln.zoo"  # None: import fails
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode != 0
    assert "needs the torch extra: pip install 'kiln-compiler[torch]'" in result.stderr


# ----------------------------------------------------------------------------- builds


@pytest.mark.parametrize("name", NAMES)
def test_build_is_deterministic_and_runs(name):
    entry = zoo.get(name)
    first, second = entry.build(), entry.build()
    assert not first.training
    state1, state2 = first.state_dict(), second.state_dict()
    assert state1.keys() == state2.keys()
    for key in state1:
        assert torch.equal(state1[key], state2[key]), key

    inputs = entry.example_inputs(2)
    assert len(inputs) == len(entry.input_names)
    out1, out2 = _outputs(first, inputs), _outputs(second, inputs)
    assert [tuple(o.shape) for o in out1] == OUTPUT_SHAPES[name]
    for a, b in zip(out1, out2, strict=True):
        assert torch.isfinite(a).all()
        assert torch.equal(a, b)
    # Different images give different logits: the weights are not degenerate.
    assert not torch.allclose(out1[-1][0], out1[-1][1])


def test_build_leaves_global_rng_alone():
    before = torch.random.get_rng_state()
    zoo.get("mlp").build()
    assert torch.equal(torch.random.get_rng_state(), before)


def test_norm_layers_are_not_identities():
    """Seeded BatchNorm statistics make a broken Conv+BN fusion visible."""
    bn = zoo.get("resnet18").build().bn1
    assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))
    assert not torch.allclose(bn.weight, torch.ones_like(bn.weight))


@pytest.mark.parametrize("name", NAMES)
def test_example_inputs_are_deterministic(name):
    entry = zoo.get(name)
    a, b = entry.example_inputs(3), entry.example_inputs(3)
    for x, y in zip(a, b, strict=True):
        assert x.shape[0] == 3
        assert torch.equal(x, y)


@pytest.mark.parametrize("batch", [0, -1, 1.5, True])
def test_example_inputs_rejects_bad_batch(batch):
    with pytest.raises(ValueError, match="positive integer"):
        zoo.get("mlp").example_inputs(batch)


def test_bert_inputs_and_mask():
    ids, mask = zoo.get("bert").example_inputs(3)
    assert ids.dtype == mask.dtype == torch.int64
    assert mask.sum(dim=1).tolist() == [128, 112, 96]
    assert (ids[mask == 0] == 0).all()
    assert ((ids > 0) & (ids < 30522))[mask == 1].all()


def test_bert_attention_mask_hides_padded_tokens():
    """Changing tokens under mask 0 must not change the hidden states of real tokens."""
    model = zoo.get("bert").build()
    ids, mask = zoo.get("bert").example_inputs(2)
    changed = ids.clone()
    changed[mask == 0] = 7
    base, _ = _outputs(model, (ids, mask))
    other, _ = _outputs(model, (changed, mask))
    real = mask.bool()
    torch.testing.assert_close(other[real], base[real], rtol=1e-5, atol=1e-6)
    # ...while the same change with the mask all ones does change them.
    ones = torch.ones_like(mask)
    unmasked, _ = _outputs(model, (changed, ones))
    assert not torch.allclose(unmasked[real], base[real], atol=1e-3)


# ----------------------------------------------------------------------------- digits


def test_digits_data_split():
    x_train, y_train, x_test, y_test = zoo.digits_data()
    assert x_train.shape == (1347, 1, 8, 8) and x_test.shape == (450, 1, 8, 8)
    assert x_train.dtype == x_test.dtype == np.float32
    assert y_train.dtype == y_test.dtype == np.int64
    assert x_train.min() >= 0.0 and x_train.max() <= 1.0
    # Stratified: every class keeps its share of the held-out set (about 45 each).
    assert np.bincount(y_test, minlength=10).min() >= 43
    # Fresh copies: mutating one does not change the next call.
    x_test[:] = 0
    assert zoo.digits_data()[2].max() == 1.0


def test_digits_cnn_held_out_accuracy_in_torch():
    _, _, x_test, y_test = zoo.digits_data()
    assert zoo.accuracy(zoo.get("digits_cnn").build(), x_test, y_test) >= 0.95


def test_digits_cnn_held_out_accuracy_in_onnxruntime(tmp_path):
    _, _, x_test, y_test = zoo.digits_data()
    path = zoo.export("digits_cnn", tmp_path / "digits.onnx", dynamic_batch=True)
    session = _session(path)
    ort_logits = session.run(None, {"image": x_test})[0]
    torch_logits = _outputs(zoo.get("digits_cnn").build(), (torch.from_numpy(x_test),))[0]
    np.testing.assert_allclose(ort_logits, torch_logits.numpy(), rtol=1e-4, atol=1e-5)
    assert zoo.accuracy(lambda x: session.run(None, {"image": x}), x_test, y_test) >= 0.95


def test_accuracy_counts_correct_rows():
    logits = np.array([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], dtype=np.float32)
    labels = np.array([1, 0, 0, 0])
    assert zoo.accuracy(lambda x: logits, np.zeros((4, 1)), labels) == 0.5
    with pytest.raises(ValueError, match="4 rows but y has 3"):
        zoo.accuracy(lambda x: logits, np.zeros((4, 1)), labels[:3])
    with pytest.raises(ValueError, match="logits of shape"):
        zoo.accuracy(lambda x: logits[:, 0], np.zeros((4, 1)), labels)


def test_digits_disk_cache_round_trip(tmp_path, monkeypatch):
    """trained_state() reads a cache file written by _write_cache instead of retraining."""
    state = _digits.trained_state()
    monkeypatch.setenv("KILN_CACHE_DIR", str(tmp_path))
    path = _digits._cache_file()
    assert path is not None and path.parent == tmp_path / "zoo"
    _digits._write_cache(path, state)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left over
    loaded = torch.load(path, weights_only=True)
    assert all(torch.equal(loaded[k], state[k]) for k in state)

    def no_training():
        raise AssertionError("trained again despite a valid cache file")

    monkeypatch.setattr(_digits, "_train", no_training)
    _digits.trained_state.cache_clear()
    reloaded = _digits.trained_state()  # refills the in-process cache from the file
    assert all(torch.equal(reloaded[k], state[k]) for k in state)


def test_digits_corrupt_cache_file_is_ignored(tmp_path):
    path = tmp_path / "digits.pt"
    path.write_bytes(b"not a torch file")
    with pytest.warns(UserWarning, match="ignoring unreadable kiln cache file"):
        assert _digits._read_cache(path) is None
    torch.save({"unexpected": torch.zeros(1)}, path)
    with pytest.warns(UserWarning, match="ignoring unreadable"):
        assert _digits._read_cache(path) is None


def test_empty_cache_dir_disables_disk_cache(monkeypatch):
    monkeypatch.setenv("KILN_CACHE_DIR", "")
    assert _digits.cache_dir() is None
    assert _digits._cache_file() is None


# ----------------------------------------------------------------------------- to_model / export


def test_to_model_names_and_shapes():
    static = zoo.to_model("bert", batch=2)
    assert isinstance(static, kiln.ir.Model)
    assert [v.name for v in static.graph.inputs] == ["input_ids", "attention_mask"]
    assert [v.name for v in static.graph.outputs] == ["last_hidden_state", "pooler_output"]
    assert static.graph.inputs[0].shape.dims == (2, 128)
    dynamic = zoo.to_model("mlp", dynamic_batch=True)
    assert dynamic.graph.inputs[0].shape.dims == ("batch", 784)
    assert dynamic.graph.outputs[0].shape.dims == ("batch", 10)


def test_export_writes_a_runnable_onnx_file(tmp_path):
    path = zoo.export("mlp", tmp_path / "mlp.onnx", batch=2)
    session = _session(path)
    assert [i.name for i in session.get_inputs()] == ["x"]
    assert session.get_inputs()[0].shape == [2, 784]
    assert [o.name for o in session.get_outputs()] == ["logits"]
    (x,) = zoo.get("mlp").example_inputs(2)
    expected = _outputs(zoo.get("mlp").build(), (x,))[0].numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = session.run(None, {"x": x.numpy()})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_to_model_unknown_name():
    with pytest.raises(KeyError, match="valid names"):
        zoo.to_model("nope")
