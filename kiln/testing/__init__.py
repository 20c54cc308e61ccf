"""Helpers for testing kiln and passes built on it: structural model comparison (golden
tests in the text form) and the ONNX node-suite conformance harness."""

from kiln.ir._text import assert_models_equal, models_equal
from kiln.testing._conformance import (
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

__all__ = [
    "CaseResult",
    "StageResult",
    "Summary",
    "acceptance_failures",
    "assert_models_equal",
    "compare_outputs",
    "load_node_cases",
    "models_equal",
    "optimize_failures",
    "run_case",
    "run_suite",
    "text_form_available",
]
