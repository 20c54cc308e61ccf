"""The ONNX backend node suite through kiln's load/save and text round trips, and through
the default optimization pipeline.

The acceptance: every case ONNX Runtime passes on the original passes after both round
trips; every other case passes or is refused with a one-line KilnError; nothing crashes.
The default pipeline leaves every round-tripped case's outputs unchanged (rtol 1e-4,
atol 1e-5) under the engine that judged it, and neither crashes nor refuses.
``benchmarks/conformance.py`` prints the same run as a table.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx.backend.test.case.test_case import TestCase

from kiln.testing import (
    CaseResult,
    StageResult,
    Summary,
    acceptance_failures,
    compare_outputs,
    load_node_cases,
    optimize_failures,
    run_case,
    run_suite,
    text_form_available,
)


@pytest.fixture(scope="module")
def suite_results() -> list[CaseResult]:
    return run_suite(load_node_cases(), optimize=True)


def test_node_suite_acceptance(suite_results: list[CaseResult]) -> None:
    failures = acceptance_failures(suite_results)
    assert not failures, f"{len(failures)} cases break the acceptance:\n" + "\n".join(failures)


def test_node_suite_is_judged(suite_results: list[CaseResult]) -> None:
    summary = Summary.of(suite_results)
    # The suite is ~1,900 cases; most run in ORT, the rest in the reference evaluator.
    assert summary.total > 1800
    assert summary.ort_pass_original > 1300
    # ORT 1.31 rejects the suite's IR-version-14 models (~230 more cases go to the
    # reference evaluator than with ORT 1.32, which runs them).
    assert summary.reference_evaluated > 150
    # Only cases whose op neither ORT nor the reference evaluator can run (ImageDecoder
    # without Pillow) are judged structurally.
    assert summary.unjudged < 20
    assert summary.crashed == 0
    assert summary.text_skipped == 0


def test_default_pipeline_keeps_the_outputs_of_every_case(
        suite_results: list[CaseResult]) -> None:
    failures = optimize_failures(suite_results)
    assert not failures, f"{len(failures)} cases break under the default pipeline:\n" + \
        "\n".join(failures)
    summary = Summary.of(suite_results)
    # Every case an engine runs and kiln round-trips is optimized, and the pipeline does
    # something (folds the constant subgraphs of the function-expanded cases, at least).
    assert summary.optimized == summary.total - summary.unjudged
    assert summary.optimize_pass == summary.optimized
    assert summary.nodes_removed > 1000


def test_text_form_is_exercised() -> None:
    assert text_form_available(), "kiln.ir.print_model/parse_model are still stubs"


def test_printing_a_parsed_model_gives_the_same_text(suite_results: list[CaseResult]) -> None:
    bad = [r.name for r in suite_results if r.text_fixpoint is False]
    assert not bad, f"print(parse(text)) != text for {len(bad)} cases: {bad[:20]}"


def test_node_suite_load_save_passes_every_ort_case(suite_results: list[CaseResult]) -> None:
    bad = [f"{r.name}: {r.load_save.status}: {r.load_save.reason}" for r in suite_results
           if r.ort_original == "pass" and r.load_save.status != "pass"]
    assert not bad, "\n".join(bad)


# ----------------------------------------------------------------------------- harness
def _case(model: onnx.ModelProto, inputs: list, outputs: list, name: str = "test_x") -> TestCase:
    return TestCase(name=name, model_name=name, url=None, model_dir=None, model=model,
                    data_sets=[(inputs, outputs)], kind="node", rtol=1e-3, atol=1e-7)


def _add_model(opset: int = 14) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])
    graph = helper.make_graph([helper.make_node("Add", ["x", "x"], ["y"])], "g", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                             ir_version=8)


def test_run_case_passes_a_good_model(tmp_path) -> None:
    x = np.array([1.0, -2.0, 3.5], np.float32)
    result = run_case(_case(_add_model(), [x], [x + x]), str(tmp_path), text=False)
    assert (result.ort_original, result.engine, result.expected) == ("pass", "ort", "suite")
    assert result.load_save == StageResult("pass")
    assert result.text.status == "skipped"


def test_run_case_optimizes_and_compares_with_the_original(tmp_path) -> None:
    # y = x + (2 + 3): the default pipeline folds the constant Add away.
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])
    two = helper.make_tensor("two", TensorProto.FLOAT, [1], [2.0])
    three = helper.make_tensor("three", TensorProto.FLOAT, [1], [3.0])
    nodes = [helper.make_node("Add", ["two", "three"], ["c"]),
             helper.make_node("Add", ["x", "c"], ["y"])]
    graph = helper.make_graph(nodes, "g", [x], [y], [two, three])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)],
                              ir_version=8)
    data = np.array([1.0, -2.0, 3.5], np.float32)
    result = run_case(_case(model, [data], [data + 5]), str(tmp_path), text=False,
                      optimize=True)
    assert result.optimize == StageResult("pass")
    assert result.nodes_removed == 1
    skipped = run_case(_case(model, [data], [data + 5]), str(tmp_path), text=False)
    assert skipped.optimize.status == "skipped"
    assert optimize_failures([result, skipped]) == []


def test_optimize_failures_list_every_stage_that_did_not_pass() -> None:
    ok = StageResult("pass")

    def result(name: str, optimize: StageResult) -> CaseResult:
        return CaseResult(name, "pass", "", "ort", "suite", ok, ok, optimize=optimize)

    results = [result("test_good", ok), result("test_skip", StageResult("skipped")),
               result("test_fail", StageResult("fail", "ort: differ")),
               result("test_refused", StageResult("refused", "optimize: no"))]
    assert optimize_failures(results) == ["test_fail: optimize fail: ort: differ",
                                          "test_refused: optimize refused: optimize: no"]
    summary = Summary.of(results)
    assert (summary.optimized, summary.optimize_pass, summary.optimize_fail,
            summary.optimize_refused) == (3, 1, 1, 1)


def test_run_case_uses_the_engines_outputs_when_the_suite_is_wrong(tmp_path) -> None:
    x = np.array([1.0, -2.0, 3.5], np.float32)
    result = run_case(_case(_add_model(), [x], [x]), str(tmp_path), text=False)
    assert result.ort_original == "fail"
    assert "elements differ" in result.ort_reason
    assert (result.engine, result.expected) == ("ort", "engine")
    assert result.load_save.status == "pass"


def test_run_case_refuses_a_dangling_input_with_one_line(tmp_path) -> None:
    model = _add_model()
    model.graph.node[0].input[1] = "nowhere"
    x = np.ones(3, np.float32)
    result = run_case(_case(model, [x], [x + x]), str(tmp_path), text=False)
    assert result.ort_original == "unsupported"
    assert result.load_save.status == "refused"
    assert "nowhere" in result.load_save.reason
    assert "\n" not in result.load_save.reason
    assert acceptance_failures([result]) == []


def test_run_case_falls_back_to_the_reference_evaluator(tmp_path) -> None:
    # ORT's Python API cannot feed int4 tensors; the reference evaluator can.
    x = helper.make_tensor_value_info("x", TensorProto.INT4, [3])
    y = helper.make_tensor_value_info("y", TensorProto.INT4, [3])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    data = np.array([1, 2, -3], ml_dtypes.int4)
    result = run_case(_case(model, [data], [data]), str(tmp_path), text=False)
    assert result.ort_original == "unsupported"
    assert (result.engine, result.expected) == ("reference", "suite")
    assert result.load_save.status == "pass"


def test_compare_outputs_follows_the_backend_runner() -> None:
    a = np.array([1.0, np.nan, 3.0], np.float32)
    assert compare_outputs([a], [a.copy()]) is None
    assert compare_outputs([a], [a + 1e-5]) is None  # within rtol 1e-3
    assert "1 of 3 elements differ" in compare_outputs([a], [a + np.float32([0, 0, 1])])
    assert "dtype float64" in compare_outputs([a], [a.astype(np.float64)])
    assert "shape [1, 3]" in compare_outputs([a], [a[None]])
    assert "2 outputs" in compare_outputs([a], [a, a])
    strings = np.array(["a", "b"], dtype=object)
    assert compare_outputs([strings], [np.array(["a", "b"])]) is None
    assert compare_outputs([strings], [np.array(["a", "c"], dtype=object)]) == \
        "output 0: strings differ"
    assert compare_outputs([[a, a]], [[a, a]]) is None
    assert "sequence of 1" in compare_outputs([[a, a]], [[a]])
    assert compare_outputs([None], [None]) is None
    assert "got None" in compare_outputs([a], [None])
    bf = np.array([1.0, 2.0], ml_dtypes.bfloat16)
    assert compare_outputs([bf], [(bf.astype(np.float32) * 1.01).astype(ml_dtypes.bfloat16)]) \
        is None
    assert compare_outputs([a], [a * 100], values=False) is None
    # float16 gets about one ULP even under the optimize stage's float32 rtol.
    h = np.array([0.7026], np.float16)
    assert compare_outputs([h], [np.nextafter(h, np.float16(1))], rtol=1e-4, atol=1e-5) is None
    assert compare_outputs([h], [h * np.float16(1.01)], rtol=1e-4, atol=1e-5) is not None
    mask = np.array([True, False])
    assert "1 of 2 elements differ (first at [1]: np.False_ vs expected np.True_)" in \
        compare_outputs([np.array([True, True])], [mask])


def test_acceptance_failures_name_the_case_and_stage() -> None:
    ok = StageResult("pass")

    def result(name: str, ort: str, load_save: StageResult, text: StageResult) -> CaseResult:
        return CaseResult(name, ort, "", "ort", "suite", load_save, text)

    results = [
        result("test_good", "pass", ok, ok),
        result("test_refused_unsupported", "unsupported", StageResult("refused", "load: no"), ok),
        result("test_refused_but_ort_passes", "pass", StageResult("refused", "load: no"), ok),
        result("test_crash", "unsupported", ok, StageResult("crash", "parse: KeyError")),
        result("test_fail", "unsupported", StageResult("fail", "ort: differ"), ok),
        result("test_two_lines", "fail", StageResult("refused", "load: a\nb"), ok),
    ]
    failures = acceptance_failures(results)
    assert [f.split(":")[0] for f in failures] == [
        "test_refused_but_ort_passes", "test_crash", "test_fail", "test_two_lines"
    ]
    assert "ORT passes the original, but load/save refused" in failures[0]
    assert "text crash: parse: KeyError" in failures[1]
    summary = Summary.of(results)
    assert (summary.passed, summary.refused, summary.crashed, summary.failed) == (1, 3, 1, 1)
