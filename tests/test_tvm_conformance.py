"""Issue acceptance, small: node cases through the tvm backend against TVM's own importer.

The whole suite runs in benchmarks/tvm_conformance.py (tens of minutes); here a spread of
common ops runs in-process with the same two paths and comparison, and kiln must pass
every case TVM's importer passes."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytest.importorskip("tvm")

pytestmark = pytest.mark.tvm

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "tvm_conformance.py"
CASES = [
    "test_relu", "test_softmax_axis_1", "test_matmul_2d", "test_matmul_4d",
    "test_gemm_default_no_bias",
    "test_gemm_transposeB", "test_conv_with_strides_padding", "test_basic_conv_with_padding",
    "test_maxpool_2d_pads", "test_averagepool_2d_strides", "test_reshape_reordered_all_dims",
    "test_transpose_all_permutations_3", "test_concat_3d_axis_1", "test_add_bcast",
    "test_layer_normalization_2d_axis1", "test_gelu_tanh_2", "test_reduce_mean_keepdims_example",
    "test_lstm_defaults", "test_gru_defaults", "test_rnn_seq_length", "test_sigmoid",
    "test_clip_default_min", "test_batchnorm_epsilon", "test_gather_0", "test_slice",
]


@pytest.fixture(scope="module")
def conformance():
    spec = importlib.util.spec_from_file_location("tvm_conformance", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


@pytest.fixture(scope="module")
def cases():
    from kiln.testing import load_node_cases

    by_name = {c.name: c for c in load_node_cases()}
    missing = [n for n in CASES if n not in by_name]
    assert not missing, f"node cases not in this onnx version: {missing}"
    return by_name


@pytest.mark.parametrize("name", CASES)
def test_kiln_passes_what_tvm_direct_passes(conformance, cases, name):
    from kiln.backends.tvm import tvm_target

    case = cases[name]
    direct, why_direct = conformance.run_tvm_direct(case, tvm_target("llvm"))
    got, why = conformance.run_kiln(case)
    if direct == "pass":
        assert got == "pass", f"{name}: tvm-direct passes, kiln {got}: {why}"
    else:  # where TVM's importer fails, kiln may do better (recurrent ops) but never crash
        assert got != "crash", f"{name}: kiln crashed: {why} (tvm-direct {direct}: {why_direct})"
