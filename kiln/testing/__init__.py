"""Helpers for testing kiln itself: the ONNX node-suite conformance harness."""

from kiln.testing._conformance import (
    CaseResult,
    StageResult,
    Summary,
    acceptance_failures,
    compare_outputs,
    load_node_cases,
    run_case,
    run_suite,
    text_form_available,
)

__all__ = [
    "CaseResult",
    "StageResult",
    "Summary",
    "acceptance_failures",
    "compare_outputs",
    "load_node_cases",
    "run_case",
    "run_suite",
    "text_form_available",
]
