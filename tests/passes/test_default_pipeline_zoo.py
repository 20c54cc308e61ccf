"""The default pipeline on the zoo's BERT- and ResNet-shaped models (issue acceptance):
BERT ends with its LayerNorms, GELUs and attention fused, ResNet with every BatchNorm
folded, as the report shows; outputs stay within rtol 1e-4, atol 1e-5 on ORT."""

import numpy as np
import pytest

import kiln

pytest.importorskip("torch")

from kiln import zoo  # noqa: E402  (needs torch)


def _optimized(name, run_ort, random_feeds, **export):
    model = zoo.to_model(name, **export)
    feeds = random_feeds(model)
    want = run_ort(model, feeds)
    optimized, report = kiln.optimize(model, report=True)
    for got, expected in zip(run_ort(optimized, feeds), want, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    return optimized, report


def test_bert_ends_with_layernorm_gelu_and_attention_fused(run_ort, random_feeds):
    model, report = _optimized("bert", run_ort, random_feeds, exporter="torchscript")
    ops = report.ops_after
    assert ops["LayerNormalization"] == 9 and ops["Gelu"] == 4
    assert ops["ai.kiln::Attention"] == 4
    for decomposed in ("Softmax", "Erf", "ReduceMean", "Sqrt", "Pow", "Div"):
        assert ops[decomposed] == 0, decomposed
    assert report.stats["fuse-attention.fuse-sdpa"] == 4
    assert "ai.kiln::Attention 0 -> 4" in report.format()
    assert ("ai.kiln", "Attention", "") in model.functions


@pytest.mark.slow
def test_bert_at_opset_17_fuses_the_decomposed_gelus(run_ort, random_feeds):
    _, report = _optimized("bert", run_ort, random_feeds, exporter="torchscript", opset=17)
    assert report.ops_before["Erf"] == 4
    assert report.ops_after["ai.kiln::Gelu"] == 4 and report.ops_after["Erf"] == 0
    assert report.ops_after["ai.kiln::Attention"] == 4
    assert report.stats["fuse-gelu.fuse-gelu-erf"] == 4


def test_resnet_ends_with_every_batchnorm_folded(run_ort, random_feeds):
    _, report = _optimized("resnet18", run_ort, random_feeds, exporter="torchscript")
    assert report.ops_before["BatchNormalization"] == 20
    assert report.ops_after["BatchNormalization"] == 0
    assert report.ops_after["Conv"] == 20
    assert report.stats["fuse-batchnorm.fuse-conv-batchnorm"] == 20
    assert "BatchNormalization 20 -> 0" in report.format()
