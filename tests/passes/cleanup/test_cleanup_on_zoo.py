"""All clean-up passes in a row on zoo models: the IR stays valid and ORT agrees."""

import numpy as np
import pytest

from kiln.ir import verify
from kiln.passes import get_pass

pytest.importorskip("torch")

from kiln import zoo  # noqa: E402  (needs torch)

PASSES = ["infer-shapes", "fold-constants", "eliminate-no-ops", "cse", "dedupe-initializers",
          "eliminate-dead-code", "topological-sort"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lstm", "bert", "digits_cnn"])
def test_cleanup_passes_keep_zoo_models_numerically_equal(name, run_ort, random_feeds):
    model = zoo.to_model(name, batch=1)
    feeds = random_feeds(model)
    want = run_ort(model, feeds)
    nodes_before = len(model.graph)
    for pass_name in PASSES:
        get_pass(pass_name)()(model)
        verify(model)
    assert len(model.graph) < nodes_before
    for got, expected in zip(run_ort(model, feeds), want, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
