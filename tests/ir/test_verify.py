"""verify(): each broken invariant is caught, and the message names the culprit."""

from __future__ import annotations

import numpy as np
import pytest

from kiln.errors import KilnError, VerificationError
from kiln.ir import (
    DataType,
    Function,
    Graph,
    Model,
    Node,
    Shape,
    Tensor,
    TensorType,
    Value,
    verify,
)


class _Parts:
    """x, w -> Add 'add' -> Relu 'relu' -> output; opset ai.onnx 21."""

    def __init__(self) -> None:
        self.x = Value("x", TensorType(DataType.FLOAT, Shape([2])))
        self.w = Value("w", const_value=Tensor(np.ones(2, np.float32)))
        self.add = Node("", "Add", [self.x, self.w], outputs=[Value("a")], name="add")
        self.relu = Node("", "Relu", [self.add.outputs[0]], outputs=[Value("r")], name="relu")
        self.graph = Graph([self.x], [self.relu.outputs[0]], [self.add, self.relu], [self.w])
        self.model = Model(self.graph, opset_imports={"": 21})


@pytest.fixture
def p() -> _Parts:
    parts = _Parts()
    verify(parts.model)
    return parts


def _fails(model: Model, pattern: str) -> None:
    with pytest.raises(VerificationError, match=pattern) as info:
        verify(model)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, KilnError)


def test_a_well_formed_model_passes(p: _Parts) -> None:
    verify(p.model)


def test_stale_use_on_a_node_output(p: _Parts) -> None:
    p.add.outputs[0]._uses[(p.add, 1)] = None
    _fails(p.model, r"main graph: 'a' lists a stale use by Add node 'add' input 1")


def test_stale_use_on_a_graph_input(p: _Parts) -> None:
    p.x._uses[(p.relu, 0)] = None
    _fails(p.model, r"'x' lists a stale use by Relu node 'relu' input 0")


def test_stale_use_on_an_initializer(p: _Parts) -> None:
    p.w._uses[(p.relu, 5)] = None
    _fails(p.model, r"'w' lists a stale use by Relu node 'relu' input 5")


def test_use_missing_from_the_use_list(p: _Parts) -> None:
    del p.add.outputs[0]._uses[(p.relu, 0)]
    _fails(p.model, r"Relu node 'relu' input 0 \('a'\) is missing from its use list")


def test_use_by_a_node_in_no_graph(p: _Parts) -> None:
    Node("", "Neg", [p.x], outputs=[Value("n")], name="stray")
    _fails(p.model, r"'x' is used by Neg node 'stray', which is in no graph")


def test_node_in_the_count_but_not_linked(p: _Parts) -> None:
    p.graph._head = p.relu
    p.relu._prev = None
    p.graph._count -= 1
    _fails(p.model, r"Relu node 'relu' input 0 \('a'\) is produced by Add node 'add', which "
                    r"is not linked")


def test_node_linked_but_not_pointing_back(p: _Parts) -> None:
    p.relu._graph = None
    # relu is skipped by iteration; the use by it is what shows.
    _fails(p.model, r"'a' is used by Relu node 'relu', which is in no graph")


def test_node_count_mismatch_names_the_stray_node(p: _Parts) -> None:
    other = Graph()
    p.relu.outputs[0]._uses.clear()
    p.graph.outputs[:] = [p.add.outputs[0]]
    p.add.outputs[0]._uses.clear()
    p.relu._graph = other
    _fails(p.model, r"node count 2 != 1 nodes linked; Relu node 'relu' is in the node list but "
                    r"does not point back")


def test_nodes_out_of_order(p: _Parts) -> None:
    g = p.graph
    g._head, g._tail = p.relu, p.add
    p.relu._prev, p.relu._next, p.add._prev, p.add._next = None, p.add, p.relu, None
    _fails(p.model, r"Relu node 'relu' input 0 \('a'\) is produced later by Add node 'add'")
    g.sort()
    verify(p.model)


def test_undefined_input(p: _Parts) -> None:
    p.relu.replace_input_with(0, Value("ghost"))
    _fails(p.model, r"Relu node 'relu' input 0 \('ghost'\) is not defined in scope")


def test_output_with_a_wrong_producer(p: _Parts) -> None:
    p.relu._outputs = (p.add.outputs[0],)
    _fails(p.model, r"output 0 of Relu node 'relu' has a wrong producer")


def test_value_defined_twice(p: _Parts) -> None:
    p.graph.inputs.append(p.x)
    _fails(p.model, r"value 'x' is defined twice \(graph input\)")


def test_two_values_with_one_name(p: _Parts) -> None:
    p.relu.outputs[0].name = "a"
    _fails(p.model, r"two values are named 'a' \(output of Relu node 'relu'\)")


def test_graph_input_with_a_producer(p: _Parts) -> None:
    p.graph.inputs.append(p.add.outputs[0])
    _fails(p.model, r"graph input 'a' has a producer")


def test_graph_input_not_added_with_add_input(p: _Parts) -> None:
    p.graph.inputs.append(Value("y"))
    _fails(p.model, r"graph input 'y' does not point back to its graph")


def test_domain_not_imported(p: _Parts) -> None:
    p.add.domain = "com.example"
    _fails(p.model, r"com.example::Add node 'add' uses domain 'com.example', which the model "
                    r"does not import")
    p.model.opset_imports["com.example"] = 1
    verify(p.model)


def test_default_domain_not_imported(p: _Parts) -> None:
    p.model.opset_imports = {"com.example": 1}
    _fails(p.model, r"Add node 'add' uses domain 'ai.onnx'")


def test_initializer_dtype_mismatch(p: _Parts) -> None:
    p.w.type = TensorType(DataType.INT64, Shape([2]))
    _fails(p.model, r"initializer 'w' is typed INT64 but holds FLOAT")


def test_initializer_shape_mismatch(p: _Parts) -> None:
    p.w.type = TensorType(DataType.FLOAT, Shape([3]))
    _fails(p.model, r"initializer 'w' has shape \[2\] but its type says \[3\]")


def test_initializer_misfiled(p: _Parts) -> None:
    p.graph.initializers["v"] = p.graph.initializers.pop("w")
    _fails(p.model, r"initializer 'v' is named 'w'")


def test_initializer_without_value(p: _Parts) -> None:
    p.w.const_value = None
    _fails(p.model, r"initializer 'w' has no value")


def test_initializer_not_registered(p: _Parts) -> None:
    stray = Value("s", const_value=Tensor(np.ones(1, np.float32)))
    p.graph.initializers["s"] = stray
    _fails(p.model, r"initializer 's' does not point back to its graph")


def test_graph_output_undefined(p: _Parts) -> None:
    p.graph.outputs.append(Value("nowhere"))
    _fails(p.model, r"main graph: graph output 'nowhere' is not defined")


def test_subgraph_reads_outer_values_defined_before_it(p: _Parts) -> None:
    inner = Node("", "Neg", [p.add.outputs[0]], outputs=[Value("t")], name="inner")
    branch = Graph(outputs=[inner.outputs[0]], nodes=[inner], name="then")
    cond = Value("cond", TensorType(DataType.BOOL, Shape([])))
    p.graph.add_input(cond)
    if_node = Node("", "If", [cond], {"then_branch": branch, "else_branch": branch},
                   outputs=[Value("out")], name="if")
    p.graph.append(if_node)
    verify(p.model)
    p.graph.remove(if_node)
    p.graph.insert_before(p.add, Node("", "If", [cond], {"then_branch": _neg_of(p.add)},
                                      outputs=[Value("early")], name="early_if"))
    _fails(p.model, r"main graph, subgraph of If node 'early_if': Neg node 'inner2' input 0 "
                    r"\('a'\) is not defined in scope")


def _neg_of(node: Node) -> Graph:
    inner = Node("", "Neg", [node.outputs[0]], outputs=[Value("t2")], name="inner2")
    return Graph(outputs=[inner.outputs[0]], nodes=[inner], name="then2")


def test_function_bodies_are_verified_with_their_own_opsets(p: _Parts) -> None:
    fx = Value("fx")
    body_node = Node("", "Relu", [fx], outputs=[Value("fy")], name="body_relu")
    body = Graph([fx], [body_node.outputs[0]], [body_node])
    fn = Function("com.example", "MyRelu", body, opset_imports={"": 21})
    p.model.functions[fn.identifier] = fn
    call = Node("com.example", "MyRelu", [p.relu.outputs[0]], outputs=[Value("z")], name="call")
    p.graph.append(call)
    verify(p.model)  # a call to a model-local function is known
    fn.opset_imports = {}
    _fails(p.model, r"function com.example::MyRelu: Relu node 'body_relu' uses domain "
                    r"'ai.onnx'")
