"""kiln.frontends.torch: every zoo model through both exporters, checked in ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import onnxruntime as ort  # noqa: E402

import kiln  # noqa: E402
from kiln import zoo  # noqa: E402
from kiln.errors import KilnError  # noqa: E402
from kiln.frontends.torch import TorchExportError, from_torch, to_onnx  # noqa: E402

NAMES = [entry.name for entry in zoo.list_models()]
RTOL, ATOL = 1e-4, 1e-5  # DESIGN.md float tolerance; every zoo model meets it, BERT included
# The dynamo exporter takes 3-6 s per CNN on two cores. The default run checks the CNNs
# through the dynamic-batch export (at batch 1 and 3); their static exports, and the slow
# (~5 s) torchscript export of MobileNetV2, run with -m slow.
BIG_CNNS = {"resnet18", "mobilenetv2"}
STATIC_CASES = [pytest.param(n, marks=pytest.mark.slow) if n in BIG_CNNS else n for n in NAMES]
DYNAMIC_CASES = [
    pytest.param(n, e, marks=pytest.mark.slow)
    if (n, e) == ("mobilenetv2", "torchscript")
    else (n, e)
    for n in NAMES
    for e in ("dynamo", "torchscript")
]


@pytest.fixture(scope="module", autouse=True)
def _private_cache_dir(tmp_path_factory):
    """Keep the digits weights cache out of the user's home directory."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KILN_CACHE_DIR", str(tmp_path_factory.mktemp("kiln-cache")))
        yield


def _session(model: kiln.ir.Model, path) -> ort.InferenceSession:
    """Run the kiln Model as saved by kiln, with ORT's own graph optimizations off."""
    kiln.save(model, path)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(name, exporter, dynamic_batch) -> ORT session of zoo model exported at batch 1, cached."""
    directory = tmp_path_factory.mktemp("exported")
    sessions: dict[tuple[str, str, bool], ort.InferenceSession] = {}

    def get(name: str, exporter: str, dynamic_batch: bool) -> ort.InferenceSession:
        key = (name, exporter, dynamic_batch)
        if key not in sessions:
            model = zoo.to_model(name, batch=1, dynamic_batch=dynamic_batch, exporter=exporter)
            path = directory / f"{name}-{exporter}-{int(dynamic_batch)}.onnx"
            sessions[key] = _session(model, path)
        return sessions[key]

    return get


@pytest.fixture(scope="module")
def modules():
    """One built torch module per zoo name."""
    return {name: zoo.get(name).build() for name in NAMES}


def _check_matches_torch(session, module, entry, batch: int) -> None:
    inputs = entry.example_inputs(batch)
    feeds = {name: t.numpy() for name, t in zip(entry.input_names, inputs, strict=True)}
    got = session.run(list(entry.output_names), feeds)
    with torch.no_grad():
        expected = module(*inputs)
    expected = expected if isinstance(expected, tuple) else (expected,)
    assert len(got) == len(expected)
    for name, g, e in zip(entry.output_names, got, expected, strict=True):
        assert g.shape == tuple(e.shape), name
        np.testing.assert_allclose(g, e.numpy(), rtol=RTOL, atol=ATOL, err_msg=name)


# ----------------------------------------------------------------------------- zoo models


@pytest.mark.parametrize("name", STATIC_CASES)
def test_dynamo_static_matches_torch(name, exported, modules):
    entry = zoo.get(name)
    session = exported(name, "dynamo", False)
    assert [i.name for i in session.get_inputs()] == list(entry.input_names)
    assert [o.name for o in session.get_outputs()] == list(entry.output_names)
    assert all(i.shape[0] == 1 for i in session.get_inputs())
    _check_matches_torch(session, modules[name], entry, batch=1)


@pytest.mark.parametrize(("name", "exporter"), DYNAMIC_CASES)
def test_dynamic_batch_runs_at_batch_1_and_3(name, exporter, exported, modules):
    entry = zoo.get(name)
    session = exported(name, exporter, True)
    assert all(i.shape[0] == "batch" for i in session.get_inputs())
    assert all(o.shape[0] == "batch" for o in session.get_outputs())
    for batch in (1, 3):
        _check_matches_torch(session, modules[name], entry, batch)


def test_top_level_from_torch_returns_a_kiln_model():
    entry = zoo.get("mlp")
    model = kiln.from_torch(entry.build(), entry.example_inputs(2), input_names=["x"], opset=21)
    assert isinstance(model, kiln.ir.Model)
    assert model.opset == 21
    assert [v.name for v in model.graph.inputs] == ["x"]
    assert model.graph.inputs[0].shape.dims == (2, 784)
    assert [v.name for v in model.graph.outputs] == ["output"]


# ----------------------------------------------------------------------------- options


def _count(proto, op_type: str) -> int:
    return sum(node.op_type == op_type for node in proto.graph.node)


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_optimize_false_keeps_batchnorm_for_kiln(exporter):
    """The exporters fold BatchNormalization into Conv only when asked to optimize."""
    entry = zoo.get("digits_cnn")
    module, inputs = entry.build(), entry.example_inputs(1)
    raw = to_onnx(module, inputs, exporter=exporter)
    optimized = to_onnx(module, inputs, exporter=exporter, optimize=True)
    assert _count(raw, "BatchNormalization") == 2
    assert _count(optimized, "BatchNormalization") == 0
    assert _count(raw, "Conv") == _count(optimized, "Conv") == 2


class TwoInputs(torch.nn.Module):
    def forward(self, left, right):
        return left + right, (left * right, left - right)


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_default_names_come_from_forward(exporter):
    x, y = torch.randn(2, 3), torch.randn(2, 3)
    proto = to_onnx(TwoInputs(), (x, y), exporter=exporter)
    assert [v.name for v in proto.graph.input] == ["left", "right"]
    assert [v.name for v in proto.graph.output] == ["output_0", "output_1", "output_2"]


@pytest.mark.parametrize("dim", [torch.export.Dim("n"), "n"], ids=["Dim", "str"])
def test_dynamic_shapes_pass_through_with_dim_names(dim):
    dynamic_shapes = {"left": {0: dim}, "right": {0: dim}}
    proto = to_onnx(TwoInputs(), (torch.randn(4, 3), torch.randn(4, 3)), dynamic_shapes)
    for value in (*proto.graph.input, *proto.graph.output):
        assert value.type.tensor_type.shape.dim[0].dim_param == "n"
    assert proto.graph.input[0].type.tensor_type.shape.dim[1].dim_value == 3


def test_training_flag_is_restored():
    module = zoo.get("digits_cnn").build().train()
    from_torch(module, zoo.get("digits_cnn").example_inputs(2), exporter="torchscript")
    assert module.training


# ----------------------------------------------------------------------------- bad input


class Boom(torch.nn.Module):
    def forward(self, x):
        raise RuntimeError("kaboom")


class ReturnsDict(torch.nn.Module):
    def forward(self, x):
        return {"y": x}


class BatchOfTwo(torch.nn.Module):
    def forward(self, x):
        return x + torch.ones(2, 3)  # broadcasting pins the batch to 2 (or 1)


def test_rejects_a_non_module():
    with pytest.raises(TypeError, match="expects a torch.nn.Module, got function"):
        from_torch(lambda x: x, (torch.zeros(1),))


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (np.zeros(3), "tensor or a tuple/list of tensors, got ndarray"),
        ((torch.zeros(1), 3), r"example_inputs\[1\] must be a torch.Tensor, got int"),
    ],
)
def test_rejects_non_tensor_inputs(inputs, message):
    with pytest.raises(TypeError, match=message):
        from_torch(torch.nn.ReLU(), inputs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"exporter": "jit"}, "unknown exporter 'jit'"),
        ({"input_names": ["a", "b"]}, "input_names has 2 names but there are 1 example inputs"),
        ({"output_names": ["y", "z"]}, "output_names has 2 names but there are 1 outputs"),
        ({"dynamic_batch": True, "dynamic_shapes": ({0: "n"},)}, "not both"),
        ({"exporter": "torchscript", "dynamic_shapes": ({0: "n"},)}, "needs exporter='dynamo'"),
    ],
)
def test_rejects_contradictory_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        from_torch(torch.nn.ReLU(), (torch.zeros(2, 3),), **kwargs)


def test_rejects_duplicate_names():
    with pytest.raises(ValueError, match=r"input_names has duplicate names: \['a', 'a'\]"):
        to_onnx(TwoInputs(), (torch.zeros(2, 3), torch.zeros(2, 3)), input_names=["a", "a"])


def test_rejects_disagreeing_batch_sizes():
    with pytest.raises(ValueError, match=r"disagree on the batch size: \[2, 3\]"):
        to_onnx(TwoInputs(), (torch.zeros(2, 3), torch.zeros(3, 3)), dynamic_batch=True)


def test_module_that_fails_names_its_class():
    with pytest.raises(TorchExportError, match="Boom failed on the example inputs: kaboom") as info:
        from_torch(Boom(), (torch.zeros(1),))
    assert isinstance(info.value, KilnError)


def test_dict_outputs_are_refused_clearly():
    with pytest.raises(TypeError, match=r"ReturnsDict.forward returned a dict"):
        from_torch(ReturnsDict(), (torch.zeros(1),))


def test_torch_export_failure_names_the_class():
    with pytest.raises(TorchExportError, match="torch.export could not capture BatchOfTwo"):
        from_torch(BatchOfTwo(), (torch.zeros(2, 3),), dynamic_batch=True)
