"""The IR core: use-def chains, graph mutation, sorting, attributes, shapes, dtypes, tensors."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
import pytest

from kiln.ir import (
    Attr,
    AttrType,
    DataType,
    Graph,
    Model,
    Node,
    SequenceType,
    Shape,
    SparseTensor,
    Tensor,
    TensorType,
    Value,
    captured_values,
    verify,
)

F32 = DataType.FLOAT


def _value(name: str) -> Value:
    return Value(name, TensorType(F32, Shape([2])))


def _node(op: str, inputs: list[Value | None], name: str, **attrs) -> Node:
    return Node("", op, inputs, attrs, outputs=[_value(name)], name=name)


def _chain(n: int) -> tuple[Graph, Value, list[Node]]:
    """x -> Relu n0 -> Relu n1 -> ... ; the last output is the graph output."""
    x = _value("x")
    nodes, prev = [], x
    for i in range(n):
        node = _node("Relu", [prev], f"n{i}")
        nodes.append(node)
        prev = node.outputs[0]
    return Graph([x], [prev], nodes), x, nodes


def _names(nodes) -> list[str]:
    return [n.name for n in nodes]


# ----------------------------------------------------------------------------- use-def
def test_node_registers_a_use_per_input_slot() -> None:
    x = _value("x")
    add = _node("Add", [x, x], "add")
    assert x.uses() == [(add, 0), (add, 1)]
    assert x.consumers() == [add]
    assert add.outputs[0].producer() is add
    assert add.outputs[0].index == 0
    assert x.producer() is None


def test_replace_input_with_moves_the_use() -> None:
    x, y = _value("x"), _value("y")
    add = _node("Add", [x, x], "add")
    add.replace_input_with(1, y)
    assert add.inputs == (x, y)
    assert x.uses() == [(add, 0)]
    assert y.uses() == [(add, 1)]
    add.replace_input_with(1, y)  # no-op
    assert y.uses() == [(add, 1)]
    add.replace_input_with(0, None)
    assert x.uses() == []
    assert add.inputs == (None, y)
    with pytest.raises(IndexError, match="has no input 2"):
        add.replace_input_with(2, x)


def test_set_inputs_changes_the_count_and_keeps_links() -> None:
    x, y, z = _value("x"), _value("y"), _value("z")
    node = _node("Sum", [x, y], "sum")
    node.set_inputs([z, None, x])
    assert node.inputs == (z, None, x)
    assert x.uses() == [(node, 2)]
    assert y.uses() == []
    assert z.uses() == [(node, 0)]
    node.set_inputs(())
    assert x.uses() == z.uses() == []


def test_replace_all_uses_with_keeps_graph_outputs_unless_asked() -> None:
    graph, x, (n0, n1) = _chain(2)
    twin = _node("Abs", [x], "twin")
    graph.insert_after(n0, twin)
    extra = _node("Add", [n0.outputs[0], n0.outputs[0]], "extra")
    graph.append(extra)
    graph.outputs.append(n0.outputs[0])

    n0.outputs[0].replace_all_uses_with(twin.outputs[0])
    assert n0.outputs[0].uses() == []
    assert twin.outputs[0].uses() == [(n1, 0), (extra, 0), (extra, 1)]
    assert n1.inputs[0] is twin.outputs[0]
    assert graph.outputs[1] is n0.outputs[0]  # not replaced by default

    n0.outputs[0].replace_all_uses_with(twin.outputs[0], replace_graph_outputs=True)
    assert graph.outputs[1] is twin.outputs[0]
    twin.outputs[0].replace_all_uses_with(twin.outputs[0])  # replacing with itself: no-op
    assert len(twin.outputs[0].uses()) == 3
    verify(Model(graph))


def test_replace_all_uses_with_replaces_outputs_of_the_defining_graph_only() -> None:
    graph, x, (n0,) = _chain(1)
    x2 = _value("x2")
    graph.add_input(x2)
    graph.outputs.append(x)
    x.replace_all_uses_with(x2, replace_graph_outputs=True)
    assert graph.outputs == [n0.outputs[0], x2]
    assert n0.inputs == (x2,)


def test_a_value_has_one_producer() -> None:
    x = _value("x")
    node = _node("Relu", [x], "r")
    with pytest.raises(ValueError, match="already has a producer"):
        Node("", "Neg", [x], outputs=[node.outputs[0]])


def test_a_refused_node_leaves_no_trace() -> None:
    x, out = _value("x"), _value("out")
    with pytest.raises(ValueError, match="'out' is given twice as an output"):
        Node("", "Split", [x], outputs=[out, out])
    assert x.uses() == []
    assert out.producer() is None


# ----------------------------------------------------------------------------- remove
def test_remove_refuses_a_node_whose_output_is_used() -> None:
    graph, _, (n0, n1, _n2) = _chain(3)
    with pytest.raises(ValueError, match=r"cannot remove Relu node 'n1': output 'n1' is used by "
                                         r"Relu node 'n2'"):
        graph.remove(n1)
    assert _names(graph) == ["n0", "n1", "n2"]
    assert n0.outputs[0].uses() == [(n1, 0)]  # nothing was detached


def test_remove_refuses_a_graph_output() -> None:
    graph, _, (_n0, n1) = _chain(2)
    with pytest.raises(ValueError, match="'n1' is a graph output"):
        graph.remove(n1)


def test_remove_a_batch_that_uses_each_other() -> None:
    graph, x, (n0, n1, n2) = _chain(3)
    graph.outputs[:] = [x]
    graph.remove([n2, n0, n1])
    assert len(graph) == 0
    assert list(graph) == []
    assert x.uses() == []
    assert n0.graph is None and n1.graph is None
    assert n0.outputs[0].uses() == []  # n1's input was detached
    verify(Model(graph))


def test_remove_unsafe_and_duplicates_in_a_batch() -> None:
    graph, _, (n0, n1, n2) = _chain(3)
    graph.remove([n1, n1], safe=False)
    assert _names(graph) == ["n0", "n2"]
    assert len(graph) == 2
    assert n2.inputs == (n1.outputs[0],)  # unsafe removal leaves the dangling read
    with pytest.raises(ValueError, match="is not in graph"):
        graph.remove(n1)
    graph.append(_node("Neg", [n0.outputs[0]], "tail"))
    assert _names(graph) == ["n0", "n2", "tail"]


def _if_reading(outer: Value, name: str) -> Node:
    inner = _node("Identity", [outer], f"{name}_inner")
    branch = Graph(outputs=[inner.outputs[0]], nodes=[inner], name=f"{name}_then")
    inner2 = _node("Neg", [outer], f"{name}_inner2")
    other = Graph(outputs=[inner2.outputs[0]], nodes=[inner2], name=f"{name}_else")
    cond = Value("cond", TensorType(DataType.BOOL, Shape([])))
    return Node("", "If", [cond], {"then_branch": branch, "else_branch": other},
                outputs=[_value(name)], name=name)


def test_removing_a_node_releases_the_outer_values_its_subgraphs_read() -> None:
    x = _value("x")
    producer = _node("Relu", [x], "p")
    if_node = _if_reading(producer.outputs[0], "if")
    graph = Graph([x, if_node.inputs[0]], [x], [producer, if_node])
    assert len(producer.outputs[0].uses()) == 2
    with pytest.raises(ValueError, match="used by Identity node 'if_inner'"):
        graph.remove(producer)
    graph.remove(if_node)
    assert producer.outputs[0].uses() == []
    graph.remove(producer)
    assert len(graph) == 0


def test_remove_a_producer_together_with_the_node_whose_subgraph_reads_it() -> None:
    x = _value("x")
    producer = _node("Relu", [x], "p")
    if_node = _if_reading(producer.outputs[0], "if")
    graph = Graph([x, if_node.inputs[0]], [x], [producer, if_node])
    graph.remove([producer, if_node])
    assert len(graph) == 0
    assert x.uses() == []


# ----------------------------------------------------------------------------- iteration
def test_remove_the_current_node_while_iterating() -> None:
    graph, x, nodes = _chain(4)
    graph.outputs[:] = [x]
    seen = []
    for node in graph:
        seen.append(node.name)
        if node.name in ("n1", "n3"):
            node.outputs[0].replace_all_uses_with(node.inputs[0])
            graph.remove(node)
    assert seen == ["n0", "n1", "n2", "n3"]
    assert _names(graph) == ["n0", "n2"]
    assert nodes[2].inputs == (nodes[0].outputs[0],)


def test_remove_the_next_node_while_iterating() -> None:
    graph, x, (n0, n1, n2, n3) = _chain(4)
    graph.outputs[:] = [x]
    seen = []
    for node in graph:
        seen.append(node.name)
        if node is n0:
            n2.replace_input_with(0, n0.outputs[0])
            graph.remove(n1)
    assert seen == ["n0", "n2", "n3"]


def test_remove_the_current_and_the_next_node_while_iterating() -> None:
    graph, x, (n0, n1, n2, n3) = _chain(4)
    graph.outputs[:] = [x]
    seen = []
    for node in graph:
        seen.append(node.name)
        if node is n1:
            n3.replace_input_with(0, n0.outputs[0])
            graph.remove([n1, n2])
    assert seen == ["n0", "n1", "n3"]
    assert _names(graph) == ["n0", "n3"]


def test_insert_after_the_current_node_while_iterating_visits_it() -> None:
    graph, _, (n0, n1) = _chain(2)
    seen = []
    for node in graph:
        seen.append(node.name)
        if node is n0:
            graph.insert_after(n0, _node("Neg", [n0.outputs[0]], "new"))
            graph.insert_before(n0, _node("Neg", [n0.outputs[0]], "before"))
        if node is n1:
            graph.append(_node("Neg", [n1.outputs[0]], "appended"))
    assert seen == ["n0", "new", "n1", "appended"]
    assert _names(graph) == ["before", "n0", "new", "n1", "appended"]


def test_insert_before_and_after() -> None:
    graph, _, (n0, n1) = _chain(2)
    a, b, c, d = (_node("Neg", [n0.outputs[0]], name) for name in "abcd")
    graph.insert_before(n0, [a, b])
    graph.insert_after(n1, [c, d])
    e = _node("Neg", [n0.outputs[0]], "e")
    graph.insert_after(n0, e)
    assert _names(graph) == ["a", "b", "n0", "e", "n1", "c", "d"]
    assert len(graph) == 7
    assert list(reversed(_names(_walk_back(graph)))) == _names(graph)
    with pytest.raises(ValueError, match="already belongs to a graph"):
        graph.insert_after(n1, a)
    stranger = _node("Neg", [n0.outputs[0]], "stranger")
    with pytest.raises(ValueError, match="is not in graph"):
        graph.insert_before(stranger, _node("Neg", [n0.outputs[0]], "f"))


def _walk_back(graph: Graph) -> list[Node]:
    out, node = [], graph.nodes[-1]
    while node is not None:
        out.append(node)
        node = node._prev
    return out


# ----------------------------------------------------------------------------- sort
def test_sort_is_stable_and_topological() -> None:
    x = _value("x")
    a = _node("Relu", [x], "a")
    b = _node("Neg", [a.outputs[0]], "b")
    c = _node("Abs", [b.outputs[0]], "c")
    d = _node("Exp", [x], "d")
    e = _node("Sqrt", [x], "e")
    graph = Graph([x], [c.outputs[0], d.outputs[0], e.outputs[0]], [d, c, a, e, b])
    graph.sort()
    assert _names(graph) == ["d", "a", "e", "b", "c"]
    verify(Model(graph))
    graph.sort()  # already sorted: unchanged
    assert _names(graph) == ["d", "a", "e", "b", "c"]
    assert len(graph) == 5


def test_sort_names_a_node_on_the_cycle() -> None:
    x = _value("x")
    a = _node("Add", [x, None], "a")
    b = _node("Neg", [a.outputs[0]], "b")
    a.replace_input_with(1, b.outputs[0])
    after = _node("Abs", [b.outputs[0]], "downstream")
    graph = Graph([x], [after.outputs[0]], [after, a, b])
    with pytest.raises(ValueError, match=r"cycle through \w+ node '[ab]'"):
        graph.sort()
    assert _names(graph) == ["downstream", "a", "b"]  # untouched


def test_sort_refuses_a_node_reading_its_own_output() -> None:
    x = _value("x")
    a = _node("Add", [x, None], "a")
    a.replace_input_with(1, a.outputs[0])
    graph = Graph([x], [a.outputs[0]], [a])
    with pytest.raises(ValueError, match="'a' reads its own output 'a'"):
        graph.sort()


def test_sort_orders_a_subgraph_after_the_outer_values_it_reads() -> None:
    x = _value("x")
    producer = _node("Relu", [x], "p")
    if_node = _if_reading(producer.outputs[0], "if")
    graph = Graph([x, if_node.inputs[0]], [if_node.outputs[0]], [if_node, producer])
    graph.sort()
    assert _names(graph) == ["p", "if"]
    verify(Model(graph))


def test_captured_values_of_nested_subgraphs() -> None:
    x, y = _value("x"), _value("y")
    deep = _node("Add", [x, y], "deep")
    inner_graph = Graph([y], [deep.outputs[0]], [deep])
    loop = Node("", "Loop", [], {"body": inner_graph}, outputs=[_value("loop")], name="loop")
    outer_graph = Graph([], [loop.outputs[0]], [loop])
    assert captured_values(inner_graph) == [x]
    assert captured_values(outer_graph) == [x]
    assert inner_graph.parent is loop
    assert list(outer_graph.all_nodes()) == [loop, deep]


# ----------------------------------------------------------------------------- values
def test_register_initializer() -> None:
    graph = Graph()
    w = Value("w", const_value=Tensor(np.zeros((2, 3), np.float16)))
    assert graph.register_initializer(w) is w
    assert w.type == TensorType(DataType.FLOAT16, Shape([2, 3]))
    assert w.is_initializer() and not w.is_graph_input() and w.graph is graph
    graph.register_initializer(w)  # again: fine
    with pytest.raises(ValueError, match="duplicate initializer name 'w'"):
        graph.register_initializer(Value("w", const_value=Tensor(np.zeros(1, np.float32))))
    with pytest.raises(ValueError, match="has no const_value"):
        graph.register_initializer(Value("v"))
    with pytest.raises(ValueError, match="needs a name"):
        graph.register_initializer(Value(const_value=Tensor(np.zeros(1, np.float32))))
    produced = _node("Relu", [w], "r").outputs[0]
    produced.const_value = Tensor(np.zeros(1, np.float32))
    with pytest.raises(ValueError, match="is produced by Relu node 'r'"):
        graph.register_initializer(produced)
    with pytest.raises(ValueError, match="initializer 'w' is still used"):
        graph.remove_initializer("w")


def test_an_initializer_can_be_a_graph_input_too() -> None:
    x = Value("x", const_value=Tensor(np.ones(2, np.float32)))
    graph = Graph([x], [x], initializers=[x])
    assert x.is_graph_input() and x.is_initializer() and x.is_graph_output()
    assert list(graph.all_values()) == [x]
    graph.outputs.clear()
    graph.remove_initializer("x")
    assert x.graph is graph  # still an input
    verify(Model(graph))


def test_remove_initializer_detaches_it() -> None:
    w = Value("w", const_value=Tensor(np.ones(2, np.float32)))
    graph = Graph(initializers=[w])
    graph.remove_initializer("w")
    assert graph.initializers == {}
    assert w.graph is None and not w.is_initializer()


def test_graph_input_must_not_be_produced() -> None:
    node = _node("Relu", [_value("x")], "r")
    with pytest.raises(ValueError, match="graph input 'r' is produced by Relu node 'r'"):
        Graph([node.outputs[0]])


def test_value_type_accessors() -> None:
    v = Value("v", TensorType(DataType.INT64, [3, "N"]))
    assert v.dtype == DataType.INT64
    assert v.shape == Shape([3, "N"])
    s = Value("s", SequenceType(TensorType(F32)))
    assert s.dtype is None and s.shape is None


def test_node_label_and_domain() -> None:
    node = Node("ai.onnx", "Relu", [_value("x")], outputs=[_value("y")])
    assert node.domain == ""
    assert node.label() == "Relu node (outputs 'y')"
    fused = Node("ai.kiln", "FusedConv", [], name="f")
    assert fused.label() == "ai.kiln::FusedConv node 'f'"


def test_model_opset() -> None:
    assert Model(Graph()).opset == 21
    assert Model(Graph(), opset_imports={"ai.onnx": 17}).opset == 17
    assert Model(Graph(), opset_imports={"com.x": 1}).opset == 0


# ----------------------------------------------------------------------------- attributes
@pytest.mark.parametrize(
    ("value", "kind", "normalized"),
    [
        (3, AttrType.INT, 3),
        (True, AttrType.INT, 1),
        (np.int32(-2), AttrType.INT, -2),
        (1.5, AttrType.FLOAT, 1.5),
        (np.float32(0.25), AttrType.FLOAT, 0.25),
        ("same_upper", AttrType.STRING, "same_upper"),
        (b"\xff\x00", AttrType.STRING, b"\xff\x00"),
        ([1, 2], AttrType.INTS, [1, 2]),
        ((np.int64(4), True), AttrType.INTS, [4, 1]),
        ([0.5, 1.0], AttrType.FLOATS, [0.5, 1.0]),
        ([1, 2.5], AttrType.FLOATS, [1.0, 2.5]),
        ([np.float32(1), 2], AttrType.FLOATS, [1.0, 2.0]),
        (["a", "b"], AttrType.STRINGS, ["a", "b"]),
        ([b"a", "b"], AttrType.STRINGS, [b"a", "b"]),
    ],
)
def test_attr_infer_scalars_and_lists(value, kind: AttrType, normalized) -> None:
    attr = Attr.infer("a", value)
    assert attr.type == kind
    assert attr.value == normalized
    items = attr.value if isinstance(attr.value, list) else [attr.value]
    assert all(type(v) in (int, float, str, bytes) for v in items)
    if kind in (AttrType.FLOATS, AttrType.FLOAT):
        assert all(type(v) is float for v in items)


def test_attr_infer_objects() -> None:
    array = np.arange(3, dtype=np.int64)
    attr = Attr.infer("value", array)
    assert attr.type == AttrType.TENSOR and isinstance(attr.value, Tensor)
    np.testing.assert_array_equal(attr.value.numpy(), array)
    tensor = Tensor(np.ones(2, np.float32))
    assert Attr.infer("t", tensor).value is tensor
    graph = Graph(name="body")
    assert Attr.infer("body", graph).type == AttrType.GRAPH
    sparse = SparseTensor(Tensor(np.ones(1, np.float32)), Tensor(np.zeros(1, np.int64)), [4])
    assert Attr.infer("s", sparse).type == AttrType.SPARSE_TENSOR
    assert Attr.infer("tp", TensorType(F32)).type == AttrType.TYPE_PROTO
    assert Attr.infer("ts", [tensor, array]).type == AttrType.TENSORS
    assert all(isinstance(t, Tensor) for t in Attr.infer("ts", [tensor, array]).value)
    assert Attr.infer("gs", [graph, Graph()]).type == AttrType.GRAPHS
    assert Attr.infer("ss", [sparse]).type == AttrType.SPARSE_TENSORS
    assert Attr.infer("tps", [TensorType(F32), SequenceType(None)]).type == AttrType.TYPE_PROTOS


@pytest.mark.parametrize("value", [None, [], {"a": 1}, [1, "a"], [[1, 2]], [None], object()])
def test_attr_infer_refuses_what_onnx_cannot_hold(value) -> None:
    with pytest.raises(TypeError, match="cannot infer"):
        Attr.infer("a", value)


def test_node_attributes_from_a_dict_and_subgraph_parent() -> None:
    body = Graph(name="body")
    node = Node("", "Loop", [], {"body": body, "axes": [0, 1], "alpha": 0.5})
    assert node.attributes["axes"] == Attr("axes", AttrType.INTS, [0, 1])
    assert node.attr("alpha") == 0.5
    assert node.attr("missing", 7) == 7
    assert list(node.subgraphs()) == [body]
    assert body.parent is node
    assert repr(Attr("x", AttrType.INT, None, ref_attr_name="y")) == "Attr(x=@y)"


# ----------------------------------------------------------------------------- shapes
def test_shape_validation_and_queries() -> None:
    s = Shape([2, "N", None])
    assert s.rank == len(s) == 3
    assert list(s) == [2, "N", None] and s[1] == "N"
    assert not s.is_static() and s.numel() is None
    assert str(s) == "[2,N,?]"
    static = Shape((2, 3))
    assert static.is_static() and static.numel() == 6
    assert Shape([]).numel() == 1
    assert Shape([2, 3]) == static and hash(Shape([2, 3])) == hash(static)
    assert Shape([2, 3], ["", ""]).denotations is None
    assert Shape([2, 3], ["DATA_BATCH", ""]).denotations == ("DATA_BATCH", "")
    with pytest.raises(ValueError, match="negative dimension -1"):
        Shape([2, -1])
    with pytest.raises(TypeError, match="must be int, str or None"):
        Shape([True])
    with pytest.raises(TypeError, match="must be int, str or None"):
        Shape([2.0])
    with pytest.raises(ValueError, match="one denotation per dimension"):
        Shape([2, 3], ["a"])


def test_tensor_type_coerces_its_fields() -> None:
    t = TensorType(1, [2, "N"])
    assert t.dtype is DataType.FLOAT
    assert t.shape == Shape([2, "N"])
    assert TensorType(F32) == TensorType(DataType.FLOAT, None)
    with pytest.raises(ValueError):
        TensorType(99)


# ----------------------------------------------------------------------------- dtypes
def test_data_types_are_onnx_codes() -> None:
    for dt in DataType:
        assert onnx.TensorProto.DataType.Name(int(dt)) == dt.name
    onnx_names = set(onnx.TensorProto.DataType.keys())
    assert onnx_names == {dt.name for dt in DataType}


def test_data_type_numpy_matches_onnx() -> None:
    for dt in DataType:
        if dt == DataType.UNDEFINED:
            with pytest.raises(TypeError, match="no numpy equivalent"):
                _ = dt.numpy
            continue
        assert dt.numpy == onnx.helper.tensor_dtype_to_np_dtype(int(dt)), dt
        if dt != DataType.STRING:
            assert DataType.from_numpy(dt.numpy) is dt


def test_data_type_names_and_widths() -> None:
    shorts = [dt.short_name for dt in DataType]
    assert len(set(shorts)) == len(shorts)
    for dt in DataType:
        assert DataType.from_short_name(dt.short_name) is dt
    assert [DataType.FLOAT.short_name, DataType.INT64.short_name, DataType.BFLOAT16.short_name] \
        == ["f32", "i64", "bf16"]
    widths = {DataType.FLOAT: 32, DataType.DOUBLE: 64, DataType.BOOL: 8, DataType.INT4: 4,
              DataType.UINT2: 2, DataType.FLOAT8E4M3FN: 8, DataType.BFLOAT16: 16,
              DataType.FLOAT6E2M3: 6, DataType.COMPLEX128: 128, DataType.STRING: 0}
    for dt, bits in widths.items():
        assert dt.bitwidth == bits, dt
    for dt in DataType:
        if dt.bitwidth >= 8 and dt != DataType.STRING:
            assert dt.bitwidth == dt.numpy.itemsize * 8
    with pytest.raises(ValueError, match="unknown element type 'f33'"):
        DataType.from_short_name("f33")


def test_data_type_from_numpy() -> None:
    assert DataType.from_numpy(np.float32) is DataType.FLOAT
    assert DataType.from_numpy(ml_dtypes.bfloat16) is DataType.BFLOAT16
    for string_dtype in (np.dtype("U3"), np.dtype(">U3"), np.dtype("S2"), np.dtype(object)):
        assert DataType.from_numpy(string_dtype) is DataType.STRING
    with pytest.raises(TypeError, match="has no ONNX equivalent"):
        DataType.from_numpy(np.dtype("datetime64[s]"))


def test_data_type_kinds() -> None:
    assert DataType.FLOAT8E5M2.is_floating() and not DataType.FLOAT8E5M2.is_integer()
    assert DataType.INT4.is_integer() and not DataType.INT4.is_floating()
    assert not DataType.BOOL.is_integer() and not DataType.BOOL.is_floating()
    assert not DataType.STRING.is_floating()


# ----------------------------------------------------------------------------- tensors
def test_tensor_eager() -> None:
    t = Tensor(np.arange(6, dtype=np.int32).reshape(2, 3), name="t")
    assert (t.dtype, t.shape, t.size, t.nbytes) == (DataType.INT32, (2, 3), 6, 24)
    assert t.is_loaded
    np.testing.assert_array_equal(np.asarray(t, dtype=np.int64), np.arange(6).reshape(2, 3))
    assert repr(t) == "Tensor(i32[2, 3], name='t')"
    nibbles = Tensor(np.zeros(5, ml_dtypes.int4))
    assert (nibbles.dtype, nibbles.nbytes) == (DataType.INT4, 3)
    strings = Tensor(np.array(["ab", "c", "\u00e9"], dtype=object))
    assert (strings.dtype, strings.nbytes) == (DataType.STRING, 5)  # UTF-8 bytes


def test_tensor_takes_non_native_byte_order() -> None:
    swapped = np.arange(3, dtype=">f4")
    assert DataType.from_numpy(swapped.dtype) is DataType.FLOAT
    assert Tensor(swapped).dtype is DataType.FLOAT
    t = Tensor(swapped, dtype=DataType.FLOAT)
    np.testing.assert_array_equal(t.numpy(), [0.0, 1.0, 2.0])


def test_tensor_refuses_a_shape_or_dtype_its_array_does_not_have() -> None:
    with pytest.raises(ValueError, match=r"tensor 'w': array shape \(3,\) != shape \(4,\)"):
        Tensor(np.zeros(3, np.float32), shape=(4,), name="w")
    with pytest.raises(ValueError, match="numpy float64 cannot hold FLOAT"):
        Tensor(np.zeros(3), dtype=DataType.FLOAT)
    Tensor(np.array(["a"]), dtype=DataType.STRING)  # str arrays hold strings


def test_tensor_lazy_loader() -> None:
    calls = []

    def load() -> np.ndarray:
        calls.append(1)
        return np.ones((2, 2), np.float32)

    t = Tensor(dtype=DataType.FLOAT, shape=(2, 2), loader=load, name="lazy")
    assert not t.is_loaded and calls == []
    assert t.nbytes == 16 and calls == []
    assert t.numpy().sum() == 4
    t.numpy()
    assert calls == [1] and t.is_loaded


def test_tensor_lazy_loader_shape_is_checked() -> None:
    t = Tensor(dtype=DataType.FLOAT, shape=(2, 3), loader=lambda: np.ones((3, 2), np.float32),
               name="w")
    with pytest.raises(ValueError, match=r"tensor 'w': loaded shape \(3, 2\) != declared"):
        t.numpy()
    assert not t.is_loaded
    with pytest.raises(ValueError, match="needs its dtype and shape"):
        Tensor(loader=lambda: np.ones(1))
    with pytest.raises(ValueError, match="needs an array or a loader"):
        Tensor()
