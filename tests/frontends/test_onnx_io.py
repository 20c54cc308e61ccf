"""kiln.load / kiln.save: lossless round trips, external data, streaming and ORT numerics."""

from __future__ import annotations

import os
import tracemalloc

import ml_dtypes
import numpy as np
import onnx
import onnx_ir
import onnxruntime as ort
import pytest
from google.protobuf.message import Message
from onnx import TensorProto, helper, numpy_helper

import kiln
from kiln.errors import KilnError
from kiln.frontends import onnx as kiln_onnx
from kiln.ir import DataType, Graph, Model, Node, Tensor, TensorType, Value

# ORT 1.31 reads IR versions up to 13; onnx.helper defaults to newer.
IR_VERSION = 10


# ----------------------------------------------------------------------------- helpers
def normalized(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy with every tensor's data in one form (raw bytes of its array) and
    value_info sorted, so that equal models compare equal."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    _normalize(out)
    return out


def _normalize(msg) -> None:
    if isinstance(msg, TensorProto):
        if msg.data_type != TensorProto.STRING:
            arr = numpy_helper.to_array(msg)
            # onnx.load marks tensors whose external data it read as DEFAULT explicitly.
            for field in ("float_data", "int32_data", "int64_data", "double_data",
                          "uint64_data", "raw_data", "data_location", "external_data"):
                msg.ClearField(field)
            msg.raw_data = arr.tobytes()
        return
    if isinstance(msg, onnx.ValueInfoProto) and not msg.type.ByteSize():
        msg.ClearField("type")  # an empty type says as little as none
    if isinstance(msg, onnx.GraphProto | onnx.FunctionProto):
        infos = sorted(msg.value_info, key=lambda vi: vi.name)
        msg.ClearField("value_info")
        msg.value_info.extend(infos)
    for field, value in msg.ListFields():
        if field.type != field.TYPE_MESSAGE:
            continue
        if not isinstance(value, Message):  # a repeated field
            for item in value:
                _normalize(item)
        else:
            _normalize(value)


def assert_same_model(a: onnx.ModelProto, b: onnx.ModelProto) -> None:
    na, nb = normalized(a), normalized(b)
    if na != nb:
        assert str(na) == str(nb)  # shows the difference
    assert na == nb


def tensor_type(dtype: int, dims, denotations=None, denotation: str = "") -> onnx.TypeProto:
    tp = helper.make_tensor_type_proto(dtype, dims)
    if denotations:
        for d, den in zip(tp.tensor_type.shape.dim, denotations, strict=True):
            d.denotation = den
    if denotation:
        tp.denotation = denotation
    return tp


def value_info(name: str, tp: onnx.TypeProto, doc: str = "", props=None) -> onnx.ValueInfoProto:
    vi = helper.make_value_info(name, tp, doc)
    if props:
        helper.set_metadata_props(vi, props)
    return vi


def sample(dtype: DataType, shape=(2, 3)) -> np.ndarray:
    """A small array of ``dtype`` with distinct, exactly representable values."""
    n = int(np.prod(shape))
    if dtype == DataType.BOOL:
        return (np.arange(n) % 2 == 0).reshape(shape)
    if dtype in (DataType.COMPLEX64, DataType.COMPLEX128):
        return (np.arange(n) + 1j * np.arange(n)).astype(dtype.numpy).reshape(shape)
    if dtype.bitwidth <= 4:
        return (np.arange(n) % 2).astype(dtype.numpy).reshape(shape)
    return (np.arange(n) % 4 + 1).astype(np.float32).astype(dtype.numpy).reshape(shape)


NUMERIC = [d for d in DataType if d not in (DataType.UNDEFINED, DataType.STRING)]


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype == object or b.dtype == object:
        return a.shape == b.shape and list(a.flat) == list(b.flat)
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


# ----------------------------------------------------------------------------- a model with every field
def kitchen_sink() -> onnx.ModelProto:
    """A model that sets every field onnx.proto defines (not meant to run)."""
    f32, i64 = TensorProto.FLOAT, TensorProto.INT64
    # Graph inputs of every type kind, with dim params and denotations.
    inputs = [
        value_info("x", tensor_type(f32, ["N", 3], ["DATA_BATCH", "DATA_FEATURE"], "TENSOR"),
                   "the input", {"source": "camera"}),
        value_info("bias", tensor_type(f32, [3])),
        value_info("cond", tensor_type(TensorProto.BOOL, [])),
        value_info("seq", helper.make_sequence_type_proto(tensor_type(f32, [None, "K"]))),
        value_info("opt", helper.make_optional_type_proto(tensor_type(i64, [2]))),
        value_info("map", helper.make_map_type_proto(i64, tensor_type(f32, [1]))),
        value_info("sparse_in", helper.make_sparse_tensor_type_proto(f32, [10, 10])),
    ]
    opaque = onnx.TypeProto()
    opaque.opaque_type.domain = "custom.domain"
    opaque.opaque_type.name = "Handle"
    inputs.append(value_info("handle", opaque))

    # Initializers: every dtype, raw and typed, plus strings; "bias" is also an input.
    inits = [numpy_helper.from_array(np.array([1, 2, 3], np.float32), "bias")]
    for dt in NUMERIC:
        arr = sample(dt)
        inits.append(numpy_helper.from_array(arr, f"raw_{dt.name.lower()}"))
        values = arr.reshape(-1).tolist() if arr.dtype.kind == "c" else \
            arr.astype(np.float32).reshape(-1).tolist()
        inits.append(helper.make_tensor(f"typed_{dt.name.lower()}", int(dt), arr.shape, values))
    inits.append(helper.make_tensor("strings", TensorProto.STRING, [3], [b"a", b"\xff\x00", b""]))
    inits.append(helper.make_tensor("scalar", f32, [], [2.5]))
    inits.append(helper.make_tensor("empty", f32, [0, 4], []))
    big = numpy_helper.from_array(np.arange(4096, dtype=np.float32).reshape(64, 64), "big")
    big.doc_string = "a big weight"
    helper.set_metadata_props(big, {"origin": "test"})
    inits.append(big)

    sparse = helper.make_sparse_tensor(
        numpy_helper.from_array(np.array([1.5, 2.5], np.float32), "sparse_w"),
        numpy_helper.from_array(np.array([3, 7], np.int64), "sparse_w_indices"), [10])
    sparse_2d = helper.make_sparse_tensor(
        numpy_helper.from_array(np.array([4.0], np.float32), "sparse_attr"),
        numpy_helper.from_array(np.array([[1, 2]], np.int64), "sparse_attr_indices"), [3, 4])

    # Subgraphs reading outer-scope values ("a", "x").
    then_g = helper.make_graph(
        [helper.make_node("Add", ["a", "one"], ["then_out"], name="then_add")], "then",
        [], [value_info("then_out", tensor_type(f32, ["N", 3]))],
        [numpy_helper.from_array(np.ones(3, np.float32), "one")],
        value_info=[], doc_string="then branch")
    helper.set_metadata_props(then_g, {"branch": "then"})
    else_g = helper.make_graph(
        [helper.make_node("Sub", ["a", "x"], ["else_mid"], name="else_sub"),
         helper.make_node("Neg", ["else_mid"], ["else_out"], name="else_neg")], "else",
        [], [value_info("else_out", tensor_type(f32, ["N", 3]))],
        value_info=[value_info("else_mid", tensor_type(f32, ["N", 3]), "mid")])
    loop_body = helper.make_graph(
        [helper.make_node("Identity", ["loop_cond_in"], ["loop_cond_out"]),
         helper.make_node("Add", ["loop_v", "a"], ["loop_v_out"])], "loop_body",
        [value_info("iter", tensor_type(i64, [])),
         value_info("loop_cond_in", tensor_type(TensorProto.BOOL, [])),
         value_info("loop_v", tensor_type(f32, ["N", 3]))],
        [value_info("loop_cond_out", tensor_type(TensorProto.BOOL, [])),
         value_info("loop_v_out", tensor_type(f32, ["N", 3]))])
    scan_body = helper.make_graph(
        [helper.make_node("Add", ["scan_state", "scan_x"], ["scan_state_out"]),
         helper.make_node("Identity", ["scan_state_out"], ["scan_y"])], "scan_body",
        [value_info("scan_state", tensor_type(f32, [3])),
         value_info("scan_x", tensor_type(f32, [3]))],
        [value_info("scan_state_out", tensor_type(f32, [3])),
         value_info("scan_y", tensor_type(f32, [3]))])
    attr_g = helper.make_graph([helper.make_node("Relu", ["x"], ["attr_g_out"])], "attr_g", [],
                               [value_info("attr_g_out", tensor_type(f32, None))])

    add = helper.make_node("Add", ["x", "bias"], ["a"], name="add", doc_string="adds")
    helper.set_metadata_props(add, {"layer": "0"})
    device = add.device_configurations.add()
    device.configuration_id = "cfg"
    device.pipeline_stage = 1
    spec = device.sharding_spec.add()
    spec.tensor_name = "a"
    spec.device.extend([0, 1])
    axis = spec.sharded_dim.add()
    axis.axis = 0
    axis.simple_sharding.add().dim_param = "N"
    nodes = [
        add,
        helper.make_node("If", ["cond"], ["if_out"], name="if", then_branch=then_g,
                         else_branch=else_g),
        helper.make_node("Loop", ["", "cond", "a"], ["loop_out"], name="loop", body=loop_body),
        helper.make_node("Scan", ["init_state", "xs"], ["scan_final", "scan_ys"], name="scan",
                         body=scan_body, num_scan_inputs=1),
        helper.make_node(
            "Everything", ["a", ""], ["e1", ""], name="everything", domain="custom.domain",
            f=0.25, i=-7, s="text", s_bytes=b"\xff\xfe", t=numpy_helper.from_array(
                np.array([1, 2], np.int32), "t_attr"),
            g=attr_g, sparse_tensor=sparse_2d, tp=tensor_type(f32, ["M"]),
            floats=[1.5, -0.0], ints=[1, 2, 3], strings=["u", "v"],
            tensors=[helper.make_tensor("typed_attr", TensorProto.FLOAT16, [2], [1.0, 2.0])],
            graphs=[attr_g], sparse_tensors=[sparse_2d],
            type_protos=[tensor_type(i64, [1]), helper.make_sequence_type_proto(
                tensor_type(f32, None))],
        ),
        helper.make_node("MyFunc", ["e1"], ["fn_out"], name="call", domain="custom.domain",
                         overload="v1", alpha=2.0),
    ]
    nodes[4].attribute[0].doc_string = "an attribute doc"
    graph = helper.make_graph(
        nodes, "main", inputs,
        [value_info("if_out", tensor_type(f32, ["N", 3])),
         value_info("fn_out", tensor_type(f32, None), "fn doc"),
         value_info("scan_final", tensor_type(f32, [3])),
         value_info("loop_out", tensor_type(f32, ["N", 3]))],
        inits + [numpy_helper.from_array(np.zeros(3, np.float32), "init_state"),
                 numpy_helper.from_array(np.ones((2, 3), np.float32), "xs")],
        doc_string="the main graph",
        value_info=[value_info("a", tensor_type(f32, ["N", 3]), "sum", {"k": "v"}),
                    value_info("e1", onnx.TypeProto()),
                    value_info("scan_ys", tensor_type(f32, [2, 3]))],
        sparse_initializer=[sparse],
    )
    helper.set_metadata_props(graph, {"graph": "main"})
    qa = graph.quantization_annotation.add()
    qa.tensor_name = "a"
    entry = qa.quant_parameter_tensor_names.add()
    entry.key, entry.value = "SCALE_TENSOR", "bias"

    beta = helper.make_attribute("beta", 3)
    beta.doc_string = "beta's default"
    func = helper.make_function(
        "custom.domain", "MyFunc", ["X"], ["Y"],
        [helper.make_node("Constant", [], ["alpha_c"], value_float=1.0),
         helper.make_node("Mul", ["X", "alpha_c"], ["Y"], name="scale")],
        [helper.make_opsetid("", 21)], attributes=["alpha"], attribute_protos=[beta],
        doc_string="a function", overload="v1",
        value_info=[value_info("X", tensor_type(f32, ["N", 3])),
                    value_info("alpha_c", tensor_type(f32, []))])
    # A reference to the caller's attribute.
    func.node[0].ClearField("attribute")
    func.node[0].attribute.append(helper.make_attribute_ref("value_float", onnx.AttributeProto.FLOAT))
    func.node[0].attribute[0].ref_attr_name = "alpha"
    helper.set_metadata_props(func, {"fn": "meta"})

    training = onnx.TrainingInfoProto()
    training.initialization.CopyFrom(helper.make_graph([], "init", [], []))
    training.algorithm.CopyFrom(helper.make_graph([], "algo", [], []))
    binding = training.update_binding.add()
    binding.key, binding.value = "bias", "bias_new"

    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("custom.domain", 1)],
        functions=[func], ir_version=11, producer_name="tests", producer_version="1.0",
        domain="org.kiln.test", model_version=7, doc_string="every field")
    helper.set_model_props(model, {"author": "kiln", "license": "none"})
    model.training_info.append(training)
    config = model.configuration.add()
    config.name, config.num_devices = "cfg", 2
    config.device.extend(["cpu:0", "cpu:1"])
    return model


def test_kitchen_sink_uses_every_field():
    """Guards the test itself: a field added to onnx.proto must be covered here."""
    model = kitchen_sink()
    messages = {
        onnx.ModelProto: [model],
        onnx.GraphProto: [model.graph],
        onnx.NodeProto: list(model.graph.node),
        onnx.FunctionProto: list(model.functions),
        onnx.TensorProto: [next(t for t in model.graph.initializer if t.name == "big")],
    }
    for cls, msgs in messages.items():
        used = {f.name for msg in msgs for f, _ in msg.ListFields()}
        unset = {f.name for f in cls.DESCRIPTOR.fields} - used
        unset -= {"segment", "external_data", "data_location", "float_data", "int32_data",
                  "string_data", "int64_data", "double_data", "uint64_data"}
        assert not unset, f"{cls.__name__} fields the kitchen sink does not set: {unset}"
    attr_kinds = {a.type for n in model.graph.node for a in n.attribute}
    assert attr_kinds >= set(range(1, 15))
    dtypes = {t.data_type for t in model.graph.initializer}
    assert dtypes == {int(d) for d in DataType if d != DataType.UNDEFINED}


@pytest.mark.parametrize("via", ["proto", "bytes", "file"])
def test_kitchen_sink_round_trips_losslessly(tmp_path, via):
    original = kitchen_sink()
    path = tmp_path / "in.onnx"
    onnx.save(original, path)
    source = {"proto": original, "bytes": original.SerializeToString(), "file": path}[via]
    model = kiln.load(source)
    kiln.save(model, tmp_path / "out.onnx")
    assert_same_model(original, onnx.load(tmp_path / "out.onnx"))
    assert_same_model(original, kiln_onnx.to_proto(model))
    reparsed = onnx.ModelProto()
    reparsed.ParseFromString(kiln_onnx.to_bytes(model))
    assert_same_model(original, reparsed)


def test_kitchen_sink_round_trips_with_external_data(tmp_path):
    original = kitchen_sink()
    model = kiln.load(original)
    kiln.save(model, tmp_path / "out.onnx", external_data=True, size_threshold=16)
    assert (tmp_path / "out.onnx.data").exists()
    assert_same_model(original, onnx.load(tmp_path / "out.onnx"))
    again = kiln.load(tmp_path / "out.onnx")
    kiln.save(again, tmp_path / "again.onnx")
    assert_same_model(original, onnx.load(tmp_path / "again.onnx"))


def test_inline_save_is_byte_identical_to_protobuf(tmp_path):
    model = _mlp_proto()
    helper.set_model_props(model, {"k": "v"})
    model.graph.initializer[1].doc_string = "weight doc"
    kiln.save(kiln.load(model), tmp_path / "m.onnx")
    assert (tmp_path / "m.onnx").read_bytes() == model.SerializeToString()
    assert kiln_onnx.to_bytes(kiln.load(model)) == model.SerializeToString()


@pytest.mark.parametrize("dtype", NUMERIC + [DataType.STRING], ids=lambda d: d.name)
@pytest.mark.parametrize("external", [False, True])
def test_every_dtype_round_trips(tmp_path, dtype, external):
    arr = np.array([["a", "bc", ""]], dtype=object) if dtype == DataType.STRING else \
        sample(dtype, (3, 5))
    w = Value("w", const_value=Tensor(arr, dtype=dtype))
    out = Value("y")
    graph = Graph(outputs=[out], nodes=[Node("", "Identity", [w], outputs=[out])],
                  initializers=[w])
    kiln.save(Model(graph), tmp_path / "m.onnx", external_data=external, size_threshold=0)
    back = kiln.load(tmp_path / "m.onnx").graph.initializers["w"].const_value
    assert back.dtype == dtype
    expected = np.array([[b"a", b"bc", b""]], dtype=object) if dtype == DataType.STRING else arr
    assert same_bits(back.numpy(), expected)
    if dtype != DataType.STRING:
        tp = onnx.load(tmp_path / "m.onnx").graph.initializer[0]
        assert same_bits(numpy_helper.to_array(tp).view(arr.dtype), arr)


# ----------------------------------------------------------------------------- loading
def _mlp_proto(n: int = 3, dim: int = 64, seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    weights = [numpy_helper.from_array(rng.standard_normal((dim, dim)).astype(np.float32),
                                       f"w{i}") for i in range(n)]
    nodes = [helper.make_node("MatMul", ["x" if i == 0 else f"t{i}", f"w{i}"],
                              [f"t{i + 1}" if i < n - 1 else "y"], name=f"mm{i}")
             for i in range(n)]
    nodes.append(helper.make_node("Relu", ["y"], ["z"], name="relu"))
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", dim])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", dim])], weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)],
                             ir_version=IR_VERSION)


def test_load_maps_weights_without_copying(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(_mlp_proto(), path)
    w = kiln.load(path).graph.initializers["w0"].const_value.numpy()
    assert not w.flags.owndata and not w.flags.writeable
    assert np.array_equal(w, numpy_helper.to_array(onnx.load(path).graph.initializer[0]))


def test_external_data_loads_lazily(tmp_path):
    proto = _mlp_proto()
    expected = numpy_helper.to_array(proto.graph.initializer[1])
    onnx.save(proto, tmp_path / "m.onnx", save_as_external_data=True, location="w.bin",
              size_threshold=0)
    model = kiln.load(tmp_path / "m.onnx")
    tensor = model.graph.initializers["w1"].const_value
    assert not tensor.is_loaded
    assert tensor.external is not None and tensor.external.location == "w.bin"
    assert np.array_equal(tensor.numpy(), expected)
    assert tensor.is_loaded and not tensor.numpy().flags.owndata


def test_loads_external_data_written_by_onnx_ir(tmp_path):
    proto = _mlp_proto()
    onnx_ir.save(onnx_ir.from_proto(proto), tmp_path / "m.onnx", external_data="m.onnx.data",
                 size_threshold_bytes=0)
    model = kiln.load(tmp_path / "m.onnx")
    for tp in proto.graph.initializer:
        assert np.array_equal(model.graph.initializers[tp.name].const_value.numpy(),
                              numpy_helper.to_array(tp))


def test_bytes_with_external_data_need_base_dir(tmp_path):
    onnx.save(_mlp_proto(), tmp_path / "m.onnx", save_as_external_data=True, location="w.bin")
    data = (tmp_path / "m.onnx").read_bytes()
    with pytest.raises(kiln.KilnError, match=r"initializer 'w0'.*base_dir"):
        kiln.load(data)
    model = kiln.load(data, base_dir=tmp_path)
    assert model.graph.initializers["w0"].const_value.numpy().shape == (64, 64)


def test_unsorted_graph_is_sorted_on_load():
    proto = _mlp_proto()
    nodes = list(proto.graph.node)
    proto.graph.ClearField("node")
    proto.graph.node.extend(reversed(nodes))
    model = kiln.load(proto)
    assert [n.name for n in model.graph] == ["mm0", "mm1", "mm2", "relu"]


def test_subgraph_reading_a_later_outer_value_is_sorted():
    f32 = TensorProto.FLOAT
    branch = helper.make_graph([helper.make_node("Identity", ["late"], ["b_out"])], "b", [],
                               [helper.make_tensor_value_info("b_out", f32, [1])])
    graph = helper.make_graph(
        [helper.make_node("If", ["c"], ["y"], name="if", then_branch=branch, else_branch=branch),
         helper.make_node("Neg", ["x"], ["late"], name="neg")], "g",
        [helper.make_tensor_value_info("c", TensorProto.BOOL, []),
         helper.make_tensor_value_info("x", f32, [1])],
        [helper.make_tensor_value_info("y", f32, [1])])
    model = kiln.load(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]))
    assert [n.name for n in model.graph] == ["neg", "if"]


# ----------------------------------------------------------------------------- saving
def test_external_data_layout(tmp_path):
    big = np.arange(300_000, dtype=np.float32)  # >= 1 MiB: 64 KiB aligned
    small = np.arange(10, dtype=np.float32)  # under the threshold: stays inline
    mid = np.arange(100, dtype=np.float32)
    values = [Value(name, const_value=Tensor(a)) for name, a in
              (("mid", mid), ("big", big), ("small", small))]
    out = Value("y", TensorType(DataType.FLOAT, [big.size + small.size + mid.size]))
    graph = Graph(outputs=[out], nodes=[Node("", "Concat", values, {"axis": 0}, outputs=[out])],
                  initializers=values, name="g")
    kiln.save(Model(graph), tmp_path / "m.onnx", external_data=True, size_threshold=100)
    onnx.checker.check_model(str(tmp_path / "m.onnx"), full_check=True)
    proto = onnx.load(tmp_path / "m.onnx", load_external_data=False)
    info = {t.name: {e.key: e.value for e in t.external_data} for t in proto.graph.initializer}
    assert info["small"] == {}
    assert info["mid"] == {"location": "m.onnx.data", "offset": "0", "length": "400"}
    assert int(info["big"]["offset"]) % 65536 == 0 and int(info["big"]["offset"]) > 0
    assert os.path.getsize(tmp_path / "m.onnx.data") == int(info["big"]["offset"]) + big.nbytes
    loaded = onnx.load(tmp_path / "m.onnx")
    for tp, arr in zip(loaded.graph.initializer, (mid, big, small), strict=True):
        assert np.array_equal(numpy_helper.to_array(tp), arr)


def test_save_external_to_a_sub_folder(tmp_path):
    kiln.save(kiln.load(_mlp_proto()), tmp_path / "m.onnx", location="weights/w.bin")
    assert (tmp_path / "weights" / "w.bin").is_file()
    back = kiln.load(tmp_path / "m.onnx")
    assert back.graph.initializers["w2"].const_value.external.location == "weights/w.bin"


@pytest.mark.parametrize("location", ["../w.bin", "/tmp/w.bin", "a/../../w.bin"])
def test_save_refuses_data_outside_the_folder(tmp_path, location):
    with pytest.raises(KilnError, match="refused"):
        kiln.save(kiln.load(_mlp_proto()), tmp_path / "m.onnx", location=location)
    assert list(tmp_path.iterdir()) == []


def test_auto_external_data(tmp_path, monkeypatch):
    model = kiln.load(_mlp_proto())
    kiln.save(model, tmp_path / "small.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small.onnx"]
    # Past the limit (lowered here: a real one would need 2 GB of weights), auto goes external.
    monkeypatch.setattr(kiln_onnx, "_AUTO_EXTERNAL_BYTES", 10_000)
    kiln.save(model, tmp_path / "big.onnx")
    assert (tmp_path / "big.onnx.data").stat().st_size >= 3 * 64 * 64 * 4


def test_too_big_for_protobuf_fails_before_loading_weights(tmp_path):
    def never() -> np.ndarray:
        raise AssertionError("the weights were read")

    huge = Value("w", const_value=Tensor(dtype=DataType.FLOAT, shape=(1 << 29, 2), loader=never))
    out = Value("y")
    model = Model(Graph(outputs=[out], nodes=[Node("", "Identity", [huge], outputs=[out])],
                        initializers=[huge]))
    with pytest.raises(KilnError, match="2 GB"):
        kiln.save(model, tmp_path / "m.onnx", external_data=False)
    with pytest.raises(KilnError, match="2 GB"):
        kiln_onnx.to_bytes(model)
    assert list(tmp_path.iterdir()) == []


def test_failed_save_leaves_the_old_file_and_no_temporaries(tmp_path):
    path = tmp_path / "m.onnx"
    kiln.save(kiln.load(_mlp_proto()), path)
    before = path.read_bytes()

    def broken() -> np.ndarray:
        raise RuntimeError("cannot read w2")

    model = kiln.load(_mlp_proto(seed=1))
    model.graph.initializers["w2"].const_value = Tensor(dtype=DataType.FLOAT, shape=(64, 64),
                                                        loader=broken, name="w2")
    for external in (False, True):
        with pytest.raises(RuntimeError, match="cannot read w2"):
            kiln.save(model, path, external_data=external)
        assert path.read_bytes() == before
        assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


@pytest.mark.parametrize("external", [False, True])
def test_save_over_the_file_it_was_loaded_from(tmp_path, external):
    proto = _mlp_proto()
    path = tmp_path / "m.onnx"
    kiln.save(kiln.load(proto), path, external_data=external, size_threshold=0)
    model = kiln.load(path)
    w0 = model.graph.initializers.pop("w0")
    model.graph.initializers["w0"] = w0  # changes the data layout
    kiln.save(model, path, external_data=external, size_threshold=0)
    back = kiln.load(path)
    for tp in proto.graph.initializer:
        assert np.array_equal(back.graph.initializers[tp.name].const_value.numpy(),
                              numpy_helper.to_array(tp))
        assert np.array_equal(model.graph.initializers[tp.name].const_value.numpy(),
                              numpy_helper.to_array(tp))


@pytest.mark.parametrize("external", [False, True])
def test_non_contiguous_arrays_are_saved_correctly(tmp_path, external):
    arrays = {
        "transposed": np.arange(12, dtype=np.float32).reshape(3, 4).T,
        "strided": np.arange(40, dtype=np.int64)[::3],
        "fortran": np.asfortranarray(np.arange(6, dtype=np.int32).reshape(2, 3)),
        "bf16": np.arange(8, dtype=np.float32).astype(ml_dtypes.bfloat16).reshape(4, 2).T,
    }
    values = [Value(k, const_value=Tensor(a)) for k, a in arrays.items()]
    outs = [Value(f"o{i}") for i in range(len(values))]
    nodes = [Node("", "Identity", [v], outputs=[o]) for v, o in zip(values, outs, strict=True)]
    graph = Graph(outputs=outs, nodes=nodes, initializers=values)
    kiln.save(Model(graph), tmp_path / "m.onnx", external_data=external, size_threshold=0)
    loaded = {t.name: numpy_helper.to_array(t) for t in
              onnx.load(tmp_path / "m.onnx").graph.initializer}
    for name, arr in arrays.items():
        assert np.array_equal(loaded[name], arr)


# ----------------------------------------------------------------------------- numerics in ORT
def control_flow_proto() -> onnx.ModelProto:
    """If, Loop and Scan whose bodies read outer-scope values; runs in ORT."""
    f32, b = TensorProto.FLOAT, TensorProto.BOOL
    then_g = helper.make_graph([helper.make_node("Mul", ["h", "w"], ["t_out"])], "then", [],
                               [helper.make_tensor_value_info("t_out", f32, ["N", 4])])
    else_g = helper.make_graph([helper.make_node("Sub", ["h", "w"], ["e_out"])], "else", [],
                               [helper.make_tensor_value_info("e_out", f32, ["N", 4])])
    loop_g = helper.make_graph(
        [helper.make_node("Identity", ["c_in"], ["c_out"]),
         helper.make_node("Add", ["acc", "w"], ["acc_out"])], "loop",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("c_in", b, []),
         helper.make_tensor_value_info("acc", f32, ["N", 4])],
        [helper.make_tensor_value_info("c_out", b, []),
         helper.make_tensor_value_info("acc_out", f32, ["N", 4])])
    scan_g = helper.make_graph(
        [helper.make_node("Add", ["s", "row"], ["s_next"]),
         helper.make_node("Mul", ["s_next", "w_row"], ["y_row"])], "scan",
        [helper.make_tensor_value_info("s", f32, [4]), helper.make_tensor_value_info("row", f32, [4])],
        [helper.make_tensor_value_info("s_next", f32, [4]),
         helper.make_tensor_value_info("y_row", f32, [4])])
    rng = np.random.default_rng(3)
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["h"], name="h"),
         helper.make_node("If", ["flag"], ["if_y"], name="if", then_branch=then_g,
                          else_branch=else_g),
         helper.make_node("Loop", ["trips", "", "if_y"], ["loop_y"], name="loop", body=loop_g),
         helper.make_node("Scan", ["s0", "loop_y"], ["s_final", "scan_y"], name="scan",
                          body=scan_g, num_scan_inputs=1)], "cf",
        [helper.make_tensor_value_info("x", f32, ["N", 4]),
         helper.make_tensor_value_info("flag", b, [])],
        [helper.make_tensor_value_info("s_final", f32, [4]),
         helper.make_tensor_value_info("scan_y", f32, ["N", 4])],
        [numpy_helper.from_array(rng.standard_normal((1, 4)).astype(np.float32), "w"),
         numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "w_row"),
         numpy_helper.from_array(np.array(3, np.int64), "trips"),
         numpy_helper.from_array(np.zeros(4, np.float32), "s0")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)],
                             ir_version=IR_VERSION)


def run_ort(model: str | bytes, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"]).run(None, feeds)


@pytest.mark.parametrize("external", [False, True])
def test_control_flow_model_runs_the_same_in_ort(tmp_path, external):
    proto = control_flow_proto()
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    path = tmp_path / "cf.onnx"
    kiln.save(kiln.load(proto), path, external_data=external, size_threshold=0)
    onnx.checker.check_model(str(path), full_check=True)
    for flag in (True, False):
        feeds = {"x": x, "flag": np.array(flag)}
        expected = run_ort(proto.SerializeToString(), feeds)
        for got, want in zip(run_ort(str(path), feeds), expected, strict=True):
            np.testing.assert_array_equal(got, want)


def test_to_bytes_runs_in_ort():
    proto = _mlp_proto()
    x = np.random.default_rng(1).standard_normal((2, 64)).astype(np.float32)
    got = run_ort(kiln_onnx.to_bytes(kiln.load(proto)), {"x": x})[0]
    np.testing.assert_array_equal(got, run_ort(proto.SerializeToString(), {"x": x})[0])


def test_value_info_types_survive_when_the_ir_sets_them(tmp_path):
    model = kiln.load(_mlp_proto())
    node = model.graph.nodes[0]
    node.outputs[0].type = TensorType(DataType.FLOAT, ["N", 64])
    kiln.save(model, tmp_path / "m.onnx")
    vi = {v.name: v for v in onnx.load(tmp_path / "m.onnx").graph.value_info}
    assert vi["t1"].type.tensor_type.shape.dim[0].dim_param == "N"


def test_fields_unknown_to_onnx_are_dropped_with_a_warning():
    proto = _mlp_proto()
    node = onnx.NodeProto()
    # Field 99 (varint 1): what a newer onnx.proto might add to NodeProto.
    node.ParseFromString(proto.graph.node[3].SerializeToString() + b"\x98\x06\x01")
    proto.graph.node[3].CopyFrom(node)
    with pytest.warns(UserWarning, match=r"dropped \(in Relu node 'relu'\)"):
        model = kiln.load(proto.SerializeToString())
    assert [n.name for n in model.graph] == ["mm0", "mm1", "mm2", "relu"]


def _traced_peak(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("external", [False, True])
def test_load_and_save_copy_no_weights(tmp_path, external):
    """Weights of 32 MiB cost well under 1 MiB of allocations to load, read and save."""
    big = np.arange(8 << 20, dtype=np.float32).reshape(2048, 4096)
    w = Value("w", const_value=Tensor(big))
    out = Value("y")
    graph = Graph(outputs=[out], nodes=[Node("", "Identity", [w], outputs=[out])],
                  initializers=[w])
    assert _traced_peak(lambda: kiln.save(Model(graph), tmp_path / "a.onnx",
                                          external_data=external)) < 1 << 20
    loaded = []
    assert _traced_peak(lambda: loaded.append(kiln.load(tmp_path / "a.onnx"))) < 1 << 20
    array = loaded[0].graph.initializers["w"].const_value.numpy()
    assert np.array_equal(array, big)
    assert _traced_peak(lambda: kiln.save(loaded[0], tmp_path / "b.onnx",
                                          external_data=external)) < 1 << 20
    suffix = ".onnx.data" if external else ".onnx"
    assert (tmp_path / f"b{suffix}").read_bytes() == (tmp_path / f"a{suffix}").read_bytes()
