"""Issue acceptance: every zoo model compiles with the tvm backend and matches ONNX Runtime
(optimizations off) within rtol 1e-3, atol 1e-4."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

import kiln  # noqa: E402
from kiln import zoo  # noqa: E402

pytestmark = pytest.mark.tvm

NAMES = [entry.name for entry in zoo.list_models()]


@pytest.fixture(scope="module", autouse=True)
def _private_cache_dir(tmp_path_factory):
    """Keep the digits weights and compiled libraries out of the user's home directory."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KILN_CACHE_DIR", str(tmp_path_factory.mktemp("kiln-cache")))
        yield


@pytest.mark.parametrize("name", NAMES)
def test_zoo_model_compiles_with_tvm_and_matches_ort(name):
    model = zoo.to_model(name, batch=1)
    exe = kiln.compile(model, "tvm")
    reference = kiln.compile(model, "ort", optimize="disable")
    feeds = reference.random_inputs(seed=0)
    got, expected = exe.run(feeds), reference.run(feeds)
    assert list(got) == list(expected)
    for out in expected:
        np.testing.assert_allclose(got[out], expected[out], rtol=1e-3, atol=1e-4,
                                   err_msg=f"{name}: output {out}")
