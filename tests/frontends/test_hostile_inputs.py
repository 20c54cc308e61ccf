"""Untrusted model files: every refusal is a ModelLoadError naming the file and the culprit."""

from __future__ import annotations

import os
import re
import tracemalloc

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import kiln
from kiln.errors import ModelLoadError

F32 = TensorProto.FLOAT


def model_proto(nodes, inputs=("x",), outputs=("y",), initializers=(), opsets=(("", 21),),
                **kwargs) -> onnx.ModelProto:
    graph = helper.make_graph(
        list(nodes), "g", [helper.make_tensor_value_info(n, F32, [4]) for n in inputs],
        [helper.make_tensor_value_info(n, F32, [4]) for n in outputs], list(initializers),
        **kwargs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets])


def save_proto(proto: onnx.ModelProto, path) -> str:
    path.write_bytes(proto.SerializeToString())
    return str(path)


def load_error(source) -> str:
    with pytest.raises(ModelLoadError) as info:
        kiln.load(source)
    message = str(info.value)
    assert "\n" not in message
    return message


# ----------------------------------------------------------------------------- external data
def external_proto(location: str, *, offset: int | str | None = 0, length: int | str | None = 16,
                   dims=(4,), name: str = "w") -> onnx.ModelProto:
    tensor = TensorProto(name=name, data_type=F32, dims=list(dims))
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", offset), ("length", length)):
        if value is not None:
            entry = tensor.external_data.add()
            entry.key, entry.value = key, str(value)
    return model_proto([helper.make_node("Add", ["x", name], ["y"])], initializers=[tensor])


@pytest.fixture
def model_dir(tmp_path):
    """A model folder with a good data file, beside a secret outside it."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "w.bin").write_bytes(np.arange(4, dtype=np.float32).tobytes())
    (tmp_path / "secret.bin").write_bytes(np.full(4, 7, np.float32).tobytes())
    return folder


def test_good_external_data_loads(model_dir):
    path = save_proto(external_proto("w.bin"), model_dir / "m.onnx")
    w = kiln.load(path).graph.initializers["w"].const_value.numpy()
    assert np.array_equal(w, np.arange(4, dtype=np.float32))


@pytest.mark.parametrize("location, why", [
    ("{secret}", "absolute path"),
    ("../secret.bin", r"'\.\.'"),
    ("sub/../../secret.bin", r"'\.\.'"),
    ("..\\secret.bin", "backslash"),
    ("", "empty"),
    ("w.bin\0", "NUL"),
])
def test_locations_outside_the_folder_are_refused(model_dir, location, why):
    location = location.format(secret=model_dir.parent / "secret.bin")
    path = save_proto(external_proto(location), model_dir / "m.onnx")
    message = load_error(path)
    assert "initializer 'w'" in message and path in message
    assert re.search(why, message)


def test_symlinked_data_file_is_refused(model_dir):
    os.symlink(model_dir.parent / "secret.bin", model_dir / "link.bin")
    path = save_proto(external_proto("link.bin"), model_dir / "m.onnx")
    message = load_error(path)
    assert "'link.bin' is a symbolic link" in message and "initializer 'w'" in message


def test_symlinked_folder_is_refused(model_dir):
    os.symlink(model_dir.parent, model_dir / "up")
    path = save_proto(external_proto("up/secret.bin"), model_dir / "m.onnx")
    assert "'up' is a symbolic link" in load_error(path)


def test_symlink_inside_the_folder_is_refused_too(model_dir):
    # Even a link that stays inside the folder: links are how paths escape.
    os.symlink("w.bin", model_dir / "alias.bin")
    path = save_proto(external_proto("alias.bin"), model_dir / "m.onnx")
    assert "symbolic link" in load_error(path)


def test_hard_link_is_refused(model_dir):
    os.link(model_dir.parent / "secret.bin", model_dir / "hard.bin")
    path = save_proto(external_proto("hard.bin"), model_dir / "m.onnx")
    message = load_error(path)
    assert "'hard.bin' has 2 hard links" in message and "initializer 'w'" in message


def test_fifo_and_folder_are_refused(model_dir):
    os.mkfifo(model_dir / "fifo")
    (model_dir / "dir").mkdir()
    for location in ("fifo", "dir"):
        path = save_proto(external_proto(location), model_dir / "m.onnx")
        assert f"{location!r} is not a regular file" in load_error(path)


def test_missing_data_file(model_dir):
    path = save_proto(external_proto("nothing.bin"), model_dir / "m.onnx")
    message = load_error(path)
    assert "cannot open external data 'nothing.bin'" in message and "initializer 'w'" in message


@pytest.mark.parametrize("offset, length, dims, why", [
    (4, 16, (4,), "runs past the end"),
    (2**62, 16, (4,), "runs past the end"),
    (0, 8, (4,), "does not match shape"),
    (0, 2**40, (4,), "does not match shape"),
    ("-4", 16, (4,), "not a non-negative integer"),
    ("0x10", 16, (4,), "not a non-negative integer"),
    (0, "1e3", (4,), "not a non-negative integer"),
    (0, None, (2**40, 2**40), "runs past the end"),
])
def test_offsets_and_lengths_are_checked_before_mapping(model_dir, offset, length, dims, why):
    proto = external_proto("w.bin", offset=offset, length=length, dims=dims)
    path = save_proto(proto, model_dir / "m.onnx")
    message = load_error(path)
    assert why in message and "initializer 'w'" in message and path in message


def test_data_changed_after_loading_is_refused(model_dir):
    path = save_proto(external_proto("w.bin"), model_dir / "m.onnx")
    model = kiln.load(path)
    os.replace(model_dir.parent / "secret.bin", model_dir / "w.bin")
    with pytest.raises(ModelLoadError, match="changed since the model was loaded"):
        model.graph.initializers["w"].const_value.numpy()


def test_data_removed_after_loading(model_dir):
    path = save_proto(external_proto("w.bin"), model_dir / "m.onnx")
    model = kiln.load(path)
    os.unlink(model_dir / "w.bin")
    with pytest.raises(ModelLoadError, match="cannot open external data 'w.bin'"):
        model.graph.initializers["w"].const_value.numpy()


def test_external_data_in_an_attribute_is_checked(model_dir):
    tensor = external_proto("../secret.bin").graph.initializer[0]
    node = helper.make_node("Constant", [], ["y"], name="const", value=tensor)
    path = save_proto(model_proto([node], inputs=()), model_dir / "m.onnx")
    message = load_error(path)
    assert "Constant node 'const'" in message and "'..'" in message


def test_string_tensor_with_external_data_is_refused(model_dir):
    proto = external_proto("w.bin")
    proto.graph.initializer[0].data_type = TensorProto.STRING
    assert "string tensors cannot use external data" in load_error(
        save_proto(proto, model_dir / "m.onnx"))


# ----------------------------------------------------------------------------- sizes
def test_huge_dims_without_data_do_not_allocate(tmp_path):
    tensors = [
        TensorProto(name="raw", data_type=F32, dims=[2**40, 2**40], raw_data=b""),
        TensorProto(name="typed", data_type=F32, dims=[2**40, 2**40]),
        TensorProto(name="int4", data_type=TensorProto.INT4, dims=[2**40], int32_data=[1]),
        TensorProto(name="strings", data_type=TensorProto.STRING, dims=[1 << 15, 1 << 15]),
        # Big enough to allocate for real (4 GiB) if anything tried.
        TensorProto(name="medium", data_type=F32, dims=[1 << 15, 1 << 15]),
    ]
    for tensor in tensors:
        path = save_proto(model_proto([helper.make_node("Add", ["x", tensor.name], ["y"])],
                                      initializers=[tensor]), tmp_path / "m.onnx")
        tracemalloc.start()
        try:
            message = load_error(path)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert f"initializer {tensor.name!r}" in message and "needs" in message
        assert peak < 16 << 20, f"loading {tensor.name} allocated {peak} bytes"


def test_raw_data_of_the_wrong_size(tmp_path):
    tensor = numpy_helper.from_array(np.zeros(1024, np.float32), "w")
    tensor.dims[0] = 1025
    path = save_proto(model_proto([helper.make_node("Add", ["x", "w"], ["y"])],
                                  initializers=[tensor]), tmp_path / "m.onnx")
    message = load_error(path)
    assert "initializer 'w': raw data has 4096 bytes" in message and "needs 4100" in message


def test_negative_dims_and_unknown_data_types(tmp_path):
    for tensor, why in [
        (TensorProto(name="w", data_type=F32, dims=[-1], raw_data=b""), "negative dimension"),
        (TensorProto(name="w", data_type=99, dims=[1], raw_data=b"\0"), "unknown data type 99"),
        (TensorProto(name="w", data_type=0, dims=[1], raw_data=b"\0"), "UNDEFINED"),
    ]:
        path = save_proto(model_proto([helper.make_node("Add", ["x", "w"], ["y"])],
                                      initializers=[tensor]), tmp_path / "m.onnx")
        message = load_error(path)
        assert why in message and "initializer 'w'" in message


# ----------------------------------------------------------------------------- protobuf
@pytest.mark.parametrize("content", [
    b"\xff" * 64,
    b"this is not a model",
    b"\x3a\xff\xff\xff\xff\x0f",  # graph field claiming 4 GB
])
def test_malformed_protobuf_names_the_file(tmp_path, content):
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    message = load_error(path)
    assert str(path) in message and "malformed ONNX protobuf" in message


def test_truncated_file_names_the_file(tmp_path):
    proto = model_proto([helper.make_node("Add", ["x", "w"], ["y"])], initializers=[
        numpy_helper.from_array(np.zeros(4096, np.float32), "w")])
    path = tmp_path / "cut.onnx"
    path.write_bytes(proto.SerializeToString()[:-5000])
    message = load_error(path)
    assert str(path) in message and "malformed ONNX protobuf" in message
    assert "ONNX bytes" in load_error(proto.SerializeToString()[:-5000])


def test_missing_file_and_folder(tmp_path):
    assert f"cannot read {tmp_path / 'nope.onnx'}" in load_error(tmp_path / "nope.onnx")
    assert str(tmp_path) in load_error(tmp_path)


def test_model_without_graph(tmp_path):
    path = save_proto(onnx.ModelProto(ir_version=10), tmp_path / "m.onnx")
    assert "has no graph" in load_error(path)


# ----------------------------------------------------------------------------- graph structure
def test_cycle_names_a_node_on_the_cycle(tmp_path):
    nodes = [
        helper.make_node("Add", ["x", "b"], ["a"], name="on_cycle_1"),
        helper.make_node("Relu", ["a"], ["b"], name="on_cycle_2"),
        helper.make_node("Neg", ["b"], ["y"], name="downstream"),
    ]
    path = save_proto(model_proto(nodes), tmp_path / "m.onnx")
    message = load_error(path)
    assert "cycle" in message and path in message
    assert "on_cycle_" in message and "downstream" not in message


def test_node_reading_its_own_output(tmp_path):
    path = save_proto(model_proto([helper.make_node("Add", ["x", "y"], ["y"], name="selfish")]),
                      tmp_path / "m.onnx")
    message = load_error(path)
    assert "'selfish'" in message and "its own output 'y'" in message


def test_cycle_through_a_subgraph(tmp_path):
    branch = helper.make_graph([helper.make_node("Identity", ["b"], ["out"])], "branch", [],
                               [helper.make_tensor_value_info("out", F32, [4])])
    nodes = [
        helper.make_node("If", ["c"], ["a"], name="if", then_branch=branch, else_branch=branch),
        helper.make_node("Relu", ["a"], ["b"], name="relu"),
        helper.make_node("Neg", ["b"], ["y"], name="neg"),
    ]
    proto = model_proto(nodes)
    proto.graph.input.append(helper.make_tensor_value_info("c", TensorProto.BOOL, []))
    message = load_error(save_proto(proto, tmp_path / "m.onnx"))
    assert "cycle" in message and ("'if'" in message or "'relu'" in message)


def test_dangling_input_names_node_and_value(tmp_path):
    proto = model_proto([helper.make_node("Add", ["x", "ghost"], ["y"], name="adder")])
    message = load_error(save_proto(proto, tmp_path / "m.onnx"))
    assert "Add node 'adder' reads 'ghost'" in message and "dangling" in message


def test_dangling_input_in_a_subgraph(tmp_path):
    branch = helper.make_graph([helper.make_node("Identity", ["ghost"], ["out"], name="inner")],
                               "branch", [], [helper.make_tensor_value_info("out", F32, [4])])
    proto = model_proto([helper.make_node("If", ["c"], ["y"], name="if", then_branch=branch,
                                          else_branch=branch)], inputs=())
    proto.graph.input.append(helper.make_tensor_value_info("c", TensorProto.BOOL, []))
    message = load_error(save_proto(proto, tmp_path / "m.onnx"))
    assert "Identity node 'inner' reads 'ghost'" in message and "If node 'if'" in message


def test_dangling_graph_output(tmp_path):
    proto = model_proto([helper.make_node("Relu", ["x"], ["r"])])
    assert "graph output 'y' is never defined" in load_error(save_proto(proto, tmp_path / "m.onnx"))


@pytest.mark.parametrize("case", ["two producers", "initializer and output", "two initializers",
                                  "two inputs"])
def test_duplicate_value_names(tmp_path, case):
    w = numpy_helper.from_array(np.ones(4, np.float32), "w")
    nodes, inputs, inits = [helper.make_node("Relu", ["x"], ["y"], name="first")], ("x",), [w]
    if case == "two producers":
        nodes.append(helper.make_node("Neg", ["x"], ["y"], name="second"))
    elif case == "initializer and output":
        nodes.append(helper.make_node("Neg", ["x"], ["w"], name="second"))
    elif case == "two initializers":
        inits.append(numpy_helper.from_array(np.zeros(4, np.float32), "w"))
    else:
        inputs = ("x", "x")
    message = load_error(save_proto(model_proto(nodes, inputs, initializers=inits),
                                    tmp_path / "m.onnx"))
    assert "duplicate value name" in message
    if case in ("two producers", "initializer and output"):
        assert "Neg node 'second'" in message


def test_initializer_named_like_an_input_is_a_default_value(tmp_path):
    w = numpy_helper.from_array(np.ones(4, np.float32), "w")
    proto = model_proto([helper.make_node("Add", ["x", "w"], ["y"])], inputs=("x", "w"),
                        initializers=[w])
    model = kiln.load(save_proto(proto, tmp_path / "m.onnx"))
    value = model.graph.initializers["w"]
    assert value.is_graph_input() and np.array_equal(value.const_value.numpy(), np.ones(4))


def test_duplicate_attribute_names(tmp_path):
    node = helper.make_node("Concat", ["x", "x"], ["y"], name="cat", axis=0)
    node.attribute.append(helper.make_attribute("axis", 1))
    message = load_error(save_proto(model_proto([node]), tmp_path / "m.onnx"))
    assert "Concat node 'cat' has two attributes named 'axis'" in message


def test_attribute_without_a_type(tmp_path):
    # protobuf reads an unknown enum value (say 77) as unset, too.
    node = helper.make_node("Concat", ["x", "x"], ["y"], name="cat", axis=0)
    node.attribute[0].ClearField("type")
    message = load_error(save_proto(model_proto([node]), tmp_path / "m.onnx"))
    assert "Concat node 'cat', attribute 'axis'" in message and "UNDEFINED" in message


# ----------------------------------------------------------------------------- opsets
def test_domain_not_imported(tmp_path):
    node = helper.make_node("Fancy", ["x"], ["y"], name="fancy", domain="com.example")
    message = load_error(save_proto(model_proto([node]), tmp_path / "m.onnx"))
    assert "com.example::Fancy node 'fancy'" in message and "does not import" in message


def test_default_domain_not_imported(tmp_path):
    proto = model_proto([helper.make_node("Relu", ["x"], ["y"], name="relu")],
                        opsets=(("com.example", 1),))
    message = load_error(save_proto(proto, tmp_path / "m.onnx"))
    assert "Relu node 'relu'" in message and "'ai.onnx'" in message


def test_domain_not_imported_inside_a_function(tmp_path):
    func = helper.make_function("local", "F", ["a"], ["b"],
                                [helper.make_node("Fancy", ["a"], ["b"], name="in_fn",
                                                  domain="com.example")],
                                [helper.make_opsetid("", 21)])
    proto = model_proto([helper.make_node("F", ["x"], ["y"], domain="local")],
                        opsets=(("", 21), ("local", 1)))
    proto.functions.append(func)
    message = load_error(save_proto(proto, tmp_path / "m.onnx"))
    assert "function local::F" in message and "'in_fn'" in message


def test_opset_newer_than_onnx_knows(tmp_path):
    newest = onnx.defs.onnx_opset_version()
    proto = model_proto([helper.make_node("Relu", ["x"], ["y"])], opsets=(("", newest + 1),))
    message = load_error(save_proto(proto, tmp_path / "m.onnx"))
    assert f"ai.onnx opset {newest + 1}" in message and str(newest) in message


def test_opset_imported_twice(tmp_path):
    proto = model_proto([helper.make_node("Relu", ["x"], ["y"])],
                        opsets=(("", 17), ("ai.onnx", 18)))
    message = load_error(save_proto(proto, tmp_path / "m.onnx"))
    assert "imported twice" in message and "17" in message and "18" in message


def test_function_defined_twice(tmp_path):
    func = helper.make_function("local", "F", ["a"], ["b"],
                                [helper.make_node("Relu", ["a"], ["b"])],
                                [helper.make_opsetid("", 21)])
    proto = model_proto([helper.make_node("F", ["x"], ["y"], domain="local")],
                        opsets=(("", 21), ("local", 1)))
    proto.functions.extend([func, func])
    assert "function local::F twice" in load_error(save_proto(proto, tmp_path / "m.onnx"))
