"""ai.kiln ops: definitions as ONNX functions that ORT and onnx.reference run."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx.reference import ReferenceEvaluator

from kiln.errors import KilnError
from kiln.frontends.onnx import to_bytes, to_proto
from kiln.ir import Attr, Node, Value, kiln_ops, parse_model, verify
from kiln.passes import get_pass

kiln_ops.define("TestScaledRelu", """
    TestScaledRelu <alpha> (x) => (y) {
        a = Constant <value_float: float = @alpha> ()
        r = Relu(x)
        y = Mul(r, a)
    }
""", doc="alpha * Relu(x), a test op.")

kiln_ops.define("TestMeanAxis1", """
    TestMeanAxis1 (x) => (y) {
        axes = Constant <value_ints = [1]> ()
        y = ReduceMean <keepdims = 0> (x, axes)
    }
""", doc="Mean over axis 1, a test op whose body needs opset 18.", min_opset=18)


def _model_with(op_type: str, opset: int, **attrs):
    model = parse_model(f"""
    model <opset_imports: {{"": {opset}}}>
    graph @g(%x: f32[2,3]) {{
      %y = Relu(%x)
      return %y
    }}
    """)
    relu = next(iter(model.graph))
    node = Node(kiln_ops.DOMAIN, op_type, [model.graph.inputs[0]], [],
                outputs=[Value("z")])
    for k, v in attrs.items():
        node.attributes[k] = Attr.infer(k, v)
    model.graph.insert_before(relu, [node])
    relu.replace_input_with(0, node.outputs[0])
    return model


def test_use_adds_the_function_and_runs_on_ort_and_reference():
    model = _model_with("TestScaledRelu", 17, alpha=2.5)
    assert kiln_ops.available(model, "TestScaledRelu")
    kiln_ops.use(model, "TestScaledRelu")
    kiln_ops.use(model, "TestScaledRelu")  # idempotent
    assert model.opset_imports[kiln_ops.DOMAIN] == kiln_ops.VERSION
    assert list(model.functions) == [(kiln_ops.DOMAIN, "TestScaledRelu", "")]
    verify(model)
    model = get_pass("infer-shapes")()(model).model  # onnx infers through the function body
    assert model.graph.outputs[0].shape.dims == (2, 3)
    onnx.checker.check_model(to_proto(model), full_check=True)
    x = np.array([[-1, 0, 2], [3, -4, 5]], np.float32)
    want = np.maximum(2.5 * np.maximum(x, 0), 0)
    session = ort.InferenceSession(to_bytes(model), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"x": x})[0], want)
    np.testing.assert_allclose(ReferenceEvaluator(to_proto(model)).run(None, {"x": x})[0], want)


def test_body_is_written_for_the_models_opset():
    model = _model_with("TestMeanAxis1", 20)
    assert not kiln_ops.available(_model_with("TestMeanAxis1", 17), "TestMeanAxis1")
    kiln_ops.use(model, "TestMeanAxis1")
    function = model.functions[(kiln_ops.DOMAIN, "TestMeanAxis1", "")]
    assert function.opset_imports == {"": 20}
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    session = ort.InferenceSession(to_bytes(model), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"x": x})[0], np.maximum(x.mean(1), 0))


def test_too_old_opset_is_refused_by_name():
    with pytest.raises(KilnError, match="TestMeanAxis1 needs ai.onnx opset 18"):
        kiln_ops.use(_model_with("TestMeanAxis1", 17), "TestMeanAxis1")


def test_unknown_and_redefined_ops_are_errors():
    with pytest.raises(KilnError, match="unknown op ai.kiln::NoSuchOp"):
        kiln_ops.get("NoSuchOp")
    with pytest.raises(KilnError, match="defined twice"):
        kiln_ops.define("TestScaledRelu", "TestScaledRelu (x) => (y) { y = Abs(x) }",
                        doc="other")
    with pytest.raises(KilnError, match="does not parse"):
        kiln_ops.define("TestBroken", "TestBroken (x) => (y) { y = }", doc="broken")


def test_drop_unused_removes_functions_no_node_calls():
    model = _model_with("TestScaledRelu", 18, alpha=1.0)
    kiln_ops.use(model, "TestScaledRelu")
    kiln_ops.use(model, "TestMeanAxis1")
    assert kiln_ops.drop_unused(model) == ["TestMeanAxis1"]
    assert kiln_ops.DOMAIN in model.opset_imports
    node = next(n for n in model.graph if n.domain == kiln_ops.DOMAIN)
    relu = next(n for n in model.graph if n.op_type == "Relu")
    relu.replace_input_with(0, model.graph.inputs[0])
    model.graph.remove(node)
    assert kiln_ops.drop_unused(model) == ["TestScaledRelu"]
    assert kiln_ops.DOMAIN not in model.opset_imports
