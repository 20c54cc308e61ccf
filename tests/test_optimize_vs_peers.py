"""Smoke test of benchmarks/optimize_vs_peers.py: one tiny zoo model, one run per tool.

No timing is asserted (figures come from the benchmark itself); the row must be complete
and kiln's result must compute what the original does.
"""

import importlib.util
import sys
from pathlib import Path

import onnx
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxsim")
pytest.importorskip("onnxslim")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "optimize_vs_peers.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("optimize_vs_peers", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_mlp_torchscript_row_is_complete(bench, tmp_path):
    case = bench.run_case("mlp", "torchscript", tmp_path, repeat=1, latency_seconds=0.05)
    assert case.error is None
    assert list(case.variants) == ["original", "kiln", "onnxsim", "onnxslim"]
    for variant in case.variants.values():
        assert variant.error is None, (variant.name, variant.error)
        assert variant.nodes > 0 and variant.nodes_with_functions >= variant.nodes
        assert variant.latency_ms > 0
        assert variant.outputs_ok, (variant.name, variant.max_abs_error)
    for tool in ("kiln", "onnxsim", "onnxslim"):
        assert len(case.variants[tool].times) == 1 and case.variants[tool].seconds > 0
    assert case.variants["kiln"].max_abs_error <= 1e-5
    assert set(case.ratios) == {"time_kiln_over_onnxsim", "time_kiln_over_onnxslim",
                                "latency_kiln_over_original"}
    assert all(r is not None and r > 0 for r in case.ratios.values())
    assert set(case.goals) == {"nodes", "nodes+fn", "faster", "outputs", "latency"}
    assert case.goals["outputs"] is True
    assert "mlp / torchscript" in bench.format_case(case)


def test_count_nodes_expands_functions_and_subgraphs(bench):
    model = onnx.parser.parse_model("""
        <ir_version: 10, opset_import: ["" : 21, "my" : 1]>
        g (float[2] x, bool b) => (float[2] z) {
            y = my.F(x)
            z = If(b) <then_branch = t () => (float[2] p) { p = Neg(y) },
                       else_branch = e () => (float[2] q) { q = my.F(y) }>
        }
        <domain: "my", opset_import: ["" : 21]>
        F (a) => (c) {
            s = Abs(a)
            c = Relu(s)
        }
    """)
    onnx.checker.check_model(model)
    # Main graph: F and If. Expanded: F's 2 nodes, If, Neg, and F's 2 nodes again.
    assert bench.count_nodes(model) == (2, 6)
