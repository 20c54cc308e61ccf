"""Run the ONNX backend node test suite through kiln's round trips and report the counts.

For every case: ONNX Runtime (optimizations off, one thread) on the original model
against the suite's expected outputs (onnx's ReferenceEvaluator where ORT cannot run it),
then the same engine on the model after ``kiln.load -> verify -> kiln.save`` and after
``kiln.load -> print_model -> parse_model -> verify -> kiln.save``; and, for every case
that passes the load/save round trip, after ``kiln.load -> kiln.optimize(pipeline="default")
-> kiln.save``, against the same engine's outputs on the original (rtol 1e-4, atol 1e-5).

Usage::

    python benchmarks/conformance.py [--filter SUBSTR] [--json OUT] [--no-text] [--no-optimize]

Exits 1 when the acceptance fails (a case ORT passes on the original does not pass both
round trips, another case neither passes nor is refused with a clear error, kiln
crashes, or the default pipeline changes, refuses or crashes on a case).
"""

from __future__ import annotations

import argparse
import collections
import json
import platform
import sys
import time
from collections.abc import Sequence

import onnx
import onnxruntime

import kiln
from kiln.testing import (
    CaseResult,
    Summary,
    acceptance_failures,
    load_node_cases,
    optimize_failures,
    run_suite,
    text_form_available,
)

_MAX_ACCEPTANCE_LINES = 50
_ROWS = [
    ("total cases", "total"),
    ("ORT passes the original", "ort_pass_original"),
    ("ORT cannot run the original", "ort_unsupported"),
    ("judged by the reference evaluator", "reference_evaluated"),
    ("judged structurally (nothing runs it)", "unjudged"),
    ("pass after load/save round trip", "pass_load_save"),
    ("pass after text print/parse round trip", "pass_text"),
    ("pass after both", "passed"),
    ("fail (numbers differ)", "failed"),
    ("refused (KilnError)", "refused"),
    ("crash (other exception in kiln)", "crashed"),
    ("text round trip skipped", "text_skipped"),
    ("text not a fixpoint (print(parse(t)) != t)", "text_not_fixpoint"),
]
_OPTIMIZE_ROWS = [
    ("optimized with the default pipeline", "optimized"),
    ("  outputs unchanged (rtol 1e-4, atol 1e-5)", "optimize_pass"),
    ("  outputs changed", "optimize_fail"),
    ("  refused (KilnError)", "optimize_refused"),
    ("  crash", "optimize_crash"),
    ("nodes the default pipeline removed", "nodes_removed"),
]


def _progress(index: int, total: int, result: CaseResult) -> None:
    done = index + 1
    if done % 100 == 0 or done == total or result.outcome not in ("pass", "skipped"):
        note = "" if result.outcome in ("pass", "skipped") else f"  {result.outcome}"
        print(f"[{done:5d}/{total}] {result.name}{note}", file=sys.stderr, flush=True)


def _print_table(summary: Summary, optimize: bool) -> None:
    counts = vars(summary)
    rows = _ROWS + (_OPTIMIZE_ROWS if optimize else [])
    width = max(len(label) for label, _ in rows)
    for label, key in rows:
        print(f"  {label:<{width}}  {counts[key]:>6}")


def _print_non_passes(results: Sequence[CaseResult]) -> None:
    rows = [r for r in results if r.outcome != "pass"]
    rows = [r for r in rows if not (r.outcome == "skipped" and r.load_save.status == "pass")]
    if not rows:
        skipped = any(r.text.status == "skipped" for r in results)
        print("\nEvery case passes the load/save round trip (text round trip skipped)."
              if skipped else "\nEvery case passes both round trips.")
        return
    print(f"\nNon-passing cases ({len(rows)}):")
    for r in rows:
        for stage, res in (("load/save", r.load_save), ("text", r.text)):
            if res.status not in ("pass", "skipped"):
                print(f"  {r.name}  [{stage} {res.status}]  {res.reason}")


def _print_engine_notes(results: Sequence[CaseResult]) -> None:
    why = collections.Counter(_short(r.ort_reason) for r in results
                              if r.ort_original == "unsupported")
    if why:
        print("\nWhy ORT cannot run the original (the reference evaluator judges instead):")
        for reason, n in why.most_common():
            print(f"  {n:5d}  {reason}")
    differ = [r for r in results if r.ort_original == "fail"]
    if differ:
        print("\nORT runs the original but disagrees with the suite's expected outputs:")
        for r in differ:
            print(f"  {r.name} (judged by {r.engine or 'nothing'}): {r.ort_reason}")
    special = [r for r in results if r.expected != "suite"]
    if special:
        print("\nCases judged against something other than the suite's expected outputs:")
        for r in special:
            what = {
                "engine": f"{r.engine}'s own outputs on the original (it disagrees with the suite)",
                "engine-shapes": f"shapes and dtypes only ({r.engine} gives random values)",
                "structure": "onnx text of the saved model == the original's (nothing runs it)",
            }[r.expected]
            print(f"  {r.name}: {what}")


def _short(reason: str) -> str:
    """An ORT error reduced to its gist, for grouping."""
    for marker in ("Unsupported model IR version", "Could not find an implementation for",
                   "is not a registered function/op", "Unable to handle object of type",
                   "can't be converted to MLDataType", "cannot take"):
        if marker in reason:
            start = reason.index(marker)
            return reason[start:start + 60].split(" node ")[0]
    if "model_load_utils" in reason or "ValidateOpsetForDomain" in reason:
        return "opset newer than ORT supports"
    if "model.cc" in reason:
        return "IR version newer than ORT supports"
    return reason[:90]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--filter", default="", metavar="SUBSTR",
                        help="only cases whose name contains SUBSTR")
    parser.add_argument("--json", metavar="OUT", help="write every case's result here")
    parser.add_argument("--no-text", action="store_true",
                        help="skip the text print/parse round trip")
    parser.add_argument("--no-optimize", action="store_true",
                        help="skip the default-pipeline optimize stage")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    cases = load_node_cases(args.filter)
    print(f"loaded {len(cases)} cases in {time.perf_counter() - start:.1f} s",
          file=sys.stderr, flush=True)
    text = False if args.no_text else text_form_available()
    if not text and not args.no_text:
        print("kiln's text form is not implemented yet: the text round trip is skipped",
              file=sys.stderr)
    optimize = not args.no_optimize
    results = run_suite(cases, text=text, optimize=optimize, progress=_progress)
    seconds = time.perf_counter() - start
    summary = Summary.of(results)
    failures = acceptance_failures(results) + optimize_failures(results)

    if args.json:
        report = {
            "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
            "kiln": kiln.__version__,
            "machine": platform.platform(),
            "filter": args.filter,
            "seconds": round(seconds, 2),
            "summary": vars(summary),
            "acceptance_failures": failures,
            "cases": [r.to_json() for r in results],
        }
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)

    print(f"ONNX backend node suite through kiln (onnx {onnx.__version__}, onnxruntime "
          f"{onnxruntime.__version__}, kiln {kiln.__version__}; {platform.machine()}, "
          f"{seconds:.1f} s)")
    _print_table(summary, optimize)
    _print_non_passes(results)
    _print_engine_notes(results)
    print(f"\nAcceptance: {'PASS' if not failures else f'FAIL ({len(failures)} cases)'}")
    for line in failures[:_MAX_ACCEPTANCE_LINES]:
        print(f"  {line}")
    if len(failures) > _MAX_ACCEPTANCE_LINES:
        print(f"  ... and {len(failures) - _MAX_ACCEPTANCE_LINES} more (all are listed above)")

    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
