"""Passes leave model-local function bodies alone: a body cannot hold initializers (which
folding and lifting would create), and an ``ai.kiln`` body is the op's spec."""

import numpy as np
import onnx
import onnx.parser
import pytest

from kiln.frontends.onnx import to_proto
from kiln.ir import print_graph, verify
from kiln.ir.serde import deserialize_model
from kiln.passes import get_pipeline

MODEL = """
<ir_version: 10, opset_import: ["" : 18, "local" : 1]>
g (float[2,3] x) => (float[2,3] y) {
    y = local.AddTwo(x)
}
<domain: "local", opset_import: ["" : 18]>
AddTwo (a) => (b) {
    one = Constant <value = float[1] {1.0}> ()
    d = Cast <to = 1> (one)
    e = Add(d, one)
    dup = Identity(e)
    b = Add(a, dup)
}
"""


@pytest.mark.parametrize("pipeline", ["default", "backend"])
def test_pipelines_keep_function_bodies_runnable(pipeline, run_ort):
    model = deserialize_model(onnx.parser.parse_model(MODEL))
    body_before = print_graph(next(iter(model.functions.values())).graph)
    for pass_ in get_pipeline(pipeline):
        pass_(model)
        verify(model)
    assert print_graph(next(iter(model.functions.values())).graph) == body_before
    onnx.checker.check_model(to_proto(model), full_check=True)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_allclose(run_ort(model, {"x": x})[0], x + 2)
