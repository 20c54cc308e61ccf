"""Conformance of kiln's IR on the ONNX backend node test suite.

Every case of ``onnx.backend.test.loader.load_model_tests(kind="node")`` (a one-node model,
or its function-expanded form, with inputs and expected outputs) is run three ways:

1. the original model, in ONNX Runtime (optimizations off, one thread), against the
   expected outputs; when ORT cannot run it (or disagrees with the suite),
   ``onnx.reference.ReferenceEvaluator`` takes its place as the case's engine;
2. after a load/save round trip: ``kiln.load`` -> ``kiln.ir.verify`` -> ``kiln.save``;
3. after a text round trip: ``kiln.load`` -> ``print_model`` -> ``parse_model`` ->
   ``verify`` -> ``kiln.save``;
4. (``optimize=True``, for cases that pass the load/save round trip and that an engine
   runs) after ``kiln.load`` -> ``kiln.optimize(pipeline="default")`` -> ``kiln.save``,
   compared with the same engine's outputs on the original at the float tolerance of
   passes (rtol 1e-4, atol 1e-5; other types exactly; random ops by shape and dtype).

Each kiln stage ends as ``pass``, ``fail`` (the engine's outputs no longer match),
``refused`` (kiln raised a :class:`~kiln.errors.KilnError`), ``crash`` (any other
exception inside kiln) or ``skipped``. The acceptance: a case ORT passes on the original
passes after both round trips; any other case passes or is refused with a one-line
message; nothing crashes. The optimize stage is judged on its own
(:func:`optimize_failures`): nothing may fail or crash, and refusals are listed.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

import kiln
from kiln import ir
from kiln.errors import KilnError
from kiln.ir import DataType

# The tolerances of onnx's backend test runner, used when a case carries none.
DEFAULT_RTOL = 1e-3
DEFAULT_ATOL = 1e-7
# The float tolerance of passes (DESIGN.md, "Tolerances"), used by the optimize stage.
OPTIMIZE_RTOL = 1e-4
OPTIMIZE_ATOL = 1e-5

PASS, FAIL, REFUSED, CRASH, SKIPPED = "pass", "fail", "refused", "crash", "skipped"
_SEVERITY = {PASS: 0, SKIPPED: 1, FAIL: 2, REFUSED: 3, CRASH: 4}


# ----------------------------------------------------------------------------- records
@dataclasses.dataclass
class StageResult:
    """The outcome of one round trip of one case.

    Attributes:
        status: ``pass``, ``fail``, ``refused``, ``crash`` or ``skipped``.
        reason: one line saying why, for anything but ``pass``.
        detail: the traceback of a crash.
    """

    status: str
    reason: str = ""
    detail: str = ""


@dataclasses.dataclass
class CaseResult:
    """Everything measured on one case of the suite.

    Attributes:
        name: the case's name, e.g. ``test_abs``.
        ort_original: ``pass``, ``fail`` (numbers differ) or ``unsupported`` (ORT cannot
            run the original).
        ort_reason: why ORT did not pass the original.
        engine: what judged the round trips: ``ort``, ``reference`` (ReferenceEvaluator),
            or ``""`` when neither runs the original.
        expected: ``suite`` when the round trips are compared with the suite's expected
            outputs; ``engine`` when the engine runs the original but disagrees with the
            suite, so the round trips are compared with the engine's outputs on the original.
        load_save: the load -> verify -> save round trip.
        text: the load -> print -> parse -> verify -> save round trip.
        text_fixpoint: False when printing the parsed model gives different text.
        optimize: the load -> optimize(default) -> save stage, judged against the engine's
            outputs on the original (``skipped`` unless the load/save round trip passes
            and an engine runs the case). Not part of :attr:`outcome`.
        nodes_removed: how many nodes the default pipeline removed (net).
        warnings: warnings kiln raised while loading or printing.
        seconds: wall time for the case.
    """

    name: str
    ort_original: str
    ort_reason: str
    engine: str
    expected: str
    load_save: StageResult
    text: StageResult
    text_fixpoint: bool | None = None
    warnings: list[str] = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    optimize: StageResult = dataclasses.field(default_factory=lambda: StageResult(SKIPPED))
    nodes_removed: int = 0

    @property
    def outcome(self) -> str:
        """The worse of the two round trips (crash > refused > fail > skipped > pass)."""
        return max(self.load_save.status, self.text.status, key=_SEVERITY.__getitem__)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict of this result."""
        d = dataclasses.asdict(self)
        d["outcome"] = self.outcome
        return d


@dataclasses.dataclass
class Summary:
    """Counts over a run of the suite."""

    total: int
    ort_pass_original: int
    ort_unsupported: int
    reference_evaluated: int
    unjudged: int
    pass_load_save: int
    pass_text: int
    passed: int
    failed: int
    refused: int
    crashed: int
    text_skipped: int
    text_not_fixpoint: int
    optimized: int = 0
    optimize_pass: int = 0
    optimize_fail: int = 0
    optimize_refused: int = 0
    optimize_crash: int = 0
    nodes_removed: int = 0

    @staticmethod
    def of(results: Sequence[CaseResult]) -> Summary:
        """Count the results."""
        outcomes = [r.outcome for r in results]
        return Summary(
            total=len(results),
            ort_pass_original=sum(r.ort_original == PASS for r in results),
            ort_unsupported=sum(r.ort_original == "unsupported" for r in results),
            reference_evaluated=sum(r.engine == "reference" for r in results),
            unjudged=sum(r.engine == "" for r in results),
            pass_load_save=sum(r.load_save.status == PASS for r in results),
            pass_text=sum(r.text.status == PASS for r in results),
            passed=outcomes.count(PASS),
            failed=outcomes.count(FAIL),
            refused=outcomes.count(REFUSED),
            crashed=outcomes.count(CRASH),
            text_skipped=sum(r.text.status == SKIPPED for r in results),
            text_not_fixpoint=sum(r.text_fixpoint is False for r in results),
            optimized=sum(r.optimize.status != SKIPPED for r in results),
            optimize_pass=sum(r.optimize.status == PASS for r in results),
            optimize_fail=sum(r.optimize.status == FAIL for r in results),
            optimize_refused=sum(r.optimize.status == REFUSED for r in results),
            optimize_crash=sum(r.optimize.status == CRASH for r in results),
            nodes_removed=sum(r.nodes_removed for r in results),
        )


def acceptance_failures(results: Iterable[CaseResult]) -> list[str]:
    """The cases that break the acceptance, one line each (empty when all is well).

    A case that ORT passes on the original must pass both round trips; any other case must
    pass or be refused with a one-line message; no case may crash. Skipped stages (the text
    form not available) are not judged.
    """
    bad: list[str] = []
    for r in results:
        for stage_name, stage in (("load/save", r.load_save), ("text", r.text)):
            if stage.status in (PASS, SKIPPED):
                continue
            if stage.status == REFUSED and r.ort_original != PASS and _one_line(stage.reason):
                continue
            what = "ORT passes the original, but " if r.ort_original == PASS else ""
            bad.append(f"{r.name}: {what}{stage_name} {stage.status}: {stage.reason}")
    return bad


def optimize_failures(results: Iterable[CaseResult]) -> list[str]:
    """The cases whose optimize stage did not pass, one line each.

    Every such line is a pass bug (wrong outputs, a crash, a verifier failure) unless the
    input is genuinely unsupported and the stage was refused with a one-line KilnError.
    """
    return [f"{r.name}: optimize {r.optimize.status}: {r.optimize.reason}" for r in results
            if r.optimize.status not in (PASS, SKIPPED)]


def _one_line(message: str) -> bool:
    return bool(message.strip()) and "\n" not in message.strip()


# ----------------------------------------------------------------------------- suite
def load_node_cases(name_filter: str = "") -> list[Any]:
    """The ONNX backend node test cases whose name contains ``name_filter``."""
    from onnx.backend.test.loader import load_model_tests

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        cases = load_model_tests(kind="node")
    return [c for c in cases if name_filter in c.name]


def text_form_available() -> bool:
    """Whether kiln's text printer and parser are implemented (not stubs raising
    NotImplementedError)."""
    model = ir.Model(ir.Graph())
    try:
        try:
            text = ir.print_model(model, elide_above=None)
        except TypeError:
            text = ir.print_model(model)
        ir.parse_model(text)
    except NotImplementedError:
        return False
    except Exception:  # any other failure shows up, per case, as a crash
        return True
    return True


# ----------------------------------------------------------------------------- engines
def _ort_session_options() -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 4
    return so


_ORT_TYPE_NAMES = {
    "tensor(float8e4m3fn)": DataType.FLOAT8E4M3FN,
    "tensor(float8e4m3fnuz)": DataType.FLOAT8E4M3FNUZ,
    "tensor(float8e5m2)": DataType.FLOAT8E5M2,
    "tensor(float8e5m2fnuz)": DataType.FLOAT8E5M2FNUZ,
    "tensor(float8e8m0)": DataType.FLOAT8E8M0,
    "tensor(bfloat16)": DataType.BFLOAT16,
}


# numpy's first type number for types registered by extensions (ml_dtypes' bfloat16, float8).
_NPY_USERDEF = 256


def _ort_feed(value: Any) -> Any:
    """numpy -> what ORT's Python API accepts (ml_dtypes arrays become typed OrtValues)."""
    if isinstance(value, list):
        return [_ort_feed(v) for v in value]
    if value is None:
        return None
    array = np.asarray(value)
    if array.dtype.num < _NPY_USERDEF:
        return array
    dtype = DataType.from_numpy(array.dtype)
    if dtype.bitwidth < 8:
        raise TypeError(f"ORT's Python API cannot take {dtype.name} inputs")
    carrier = np.dtype(f"u{array.dtype.itemsize}")
    return ort.OrtValue.ortvalue_from_numpy_with_onnx_type(array.view(carrier), int(dtype))


def run_ort(model: onnx.ModelProto | str, feeds: dict[str, Any]) -> list[Any]:
    """Run ``model`` (a ModelProto or a path) in ONNX Runtime without its optimizations."""
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    session = ort.InferenceSession(source, _ort_session_options(),
                                   providers=["CPUExecutionProvider"])
    outputs = session.run(None, {k: _ort_feed(v) for k, v in feeds.items()})
    fixed = []
    for meta, out in zip(session.get_outputs(), outputs, strict=True):
        dtype = _ORT_TYPE_NAMES.get(meta.type)
        if dtype is not None and isinstance(out, np.ndarray) and out.dtype.kind == "u":
            out = out.view(dtype.numpy)
        fixed.append(out)
    return fixed


def run_reference(model: onnx.ModelProto | str, feeds: dict[str, Any]) -> list[Any]:
    """Run ``model`` (a ModelProto or a path) in onnx's ReferenceEvaluator."""
    from onnx.reference import ReferenceEvaluator

    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(model)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return list(ReferenceEvaluator(proto).run(None, feeds))


_ENGINES: dict[str, Callable[[onnx.ModelProto | str, dict[str, Any]], list[Any]]] = {
    "ort": run_ort,
    "reference": run_reference,
}


# ----------------------------------------------------------------------------- compare
def compare_outputs(expected: Sequence[Any], got: Sequence[Any], rtol: float = DEFAULT_RTOL,
                    atol: float = DEFAULT_ATOL, *, values: bool = True) -> str | None:
    """Compare outputs the way onnx's backend test runner does.

    Sequences compare element by element, empty optionals (None) must match, strings must
    be equal, other tensors must have the same shape and dtype and agree within
    ``rtol``/``atol`` (NaNs equal; bfloat16 gets at least two ULPs of relative slack,
    float16 about one).
    With ``values=False`` only structure, shapes and dtypes are compared.

    Returns:
        None when they match, else one line saying where they differ.
    """
    if len(got) != len(expected):
        return f"{len(got)} outputs, expected {len(expected)}"
    for i, (e, g) in enumerate(zip(expected, got, strict=True)):
        why = _compare_one(e, g, rtol, atol, values)
        if why is not None:
            return f"output {i}: {why}"
    return None


def _compare_one(expected: Any, got: Any, rtol: float, atol: float, values: bool) -> str | None:
    if expected is None or got is None:
        return None if expected is None and got is None else \
            f"got {_kind(got)}, expected {_kind(expected)}"
    if isinstance(expected, list | tuple):
        if not isinstance(got, list | tuple):
            return f"got {_kind(got)}, expected a sequence"
        if len(got) != len(expected):
            return f"sequence of {len(got)}, expected {len(expected)}"
        for j, (e, g) in enumerate(zip(expected, got, strict=True)):
            why = _compare_one(e, g, rtol, atol, values)
            if why is not None:
                return f"element {j}: {why}"
        return None
    if isinstance(got, list | tuple):
        return f"got a sequence, expected {_kind(expected)}"
    return _compare_tensor(np.asarray(expected), np.asarray(got), rtol, atol, values)


def _compare_tensor(e: np.ndarray, g: np.ndarray, rtol: float, atol: float,
                    values: bool) -> str | None:
    if e.shape != g.shape:
        return f"shape {list(g.shape)}, expected {list(e.shape)}"
    if not values:
        return None if _same_kind(e.dtype, g.dtype) else f"dtype {g.dtype}, expected {e.dtype}"
    if e.dtype == object or e.dtype.kind in "US":
        same = np.array_equal(e.astype(object), g.astype(object))
        return None if same else "strings differ"
    if e.dtype != g.dtype:
        return f"dtype {g.dtype}, expected {e.dtype}"
    if e.dtype.name == "bfloat16":
        rtol = max(rtol, 2.0**-6)
    elif e.dtype == np.float16:  # a float32 rtol (the optimize stage's) is below fp16's ULP
        rtol = max(rtol, 2.0**-10)
    cast = np.float32 if e.dtype.num >= _NPY_USERDEF else np.int8 if e.dtype == np.bool_ else None
    with np.errstate(all="ignore"):
        close = np.isclose(g if cast is None else g.astype(cast),
                           e if cast is None else e.astype(cast),
                           rtol=rtol, atol=atol, equal_nan=True)
    if close.all():
        return None
    bad = int(close.size - np.count_nonzero(close))
    first = tuple(int(x) for x in np.argwhere(~close)[0])
    return (f"{bad} of {close.size} elements differ (first at {list(first)}: "
            f"{g[first]!r} vs expected {e[first]!r})")


def _same_kind(a: np.dtype, b: np.dtype) -> bool:
    strings = ("O", "U", "S")
    return a == b or (a.kind in strings and b.kind in strings)


def _kind(x: Any) -> str:
    if x is None:
        return "None"
    if isinstance(x, list | tuple):
        return "a sequence"
    return f"a {type(x).__name__}"


# ----------------------------------------------------------------------------- one case
class _KilnStageError(Exception):
    """Raised inside a kiln stage; carries the StageResult to report."""

    def __init__(self, result: StageResult) -> None:
        super().__init__(result.reason)
        self.result = result


def _kiln_call(stage: str, fn: Callable[[], Any]) -> Any:
    """Run one kiln step; KilnError -> refused, any other exception -> crash."""
    try:
        return fn()
    except KilnError as exc:
        raise _KilnStageError(StageResult(REFUSED, f"{stage}: {exc}")) from None
    except Exception as exc:  # a crash is what this harness counts
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        where = f"{Path(frame.filename).name}:{frame.lineno}"
        reason = f"{stage}: {type(exc).__name__} at {where}: {_first_line(str(exc))}"
        raise _KilnStageError(
            StageResult(CRASH, reason, traceback.format_exc())
        ) from None


def _first_line(message: str, limit: int = 300) -> str:
    line = message.strip().splitlines()[0] if message.strip() else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _feeds(model: onnx.ModelProto, inputs: Sequence[Any]) -> dict[str, Any]:
    initializers = {t.name for t in model.graph.initializer}
    names = [v.name for v in model.graph.input if v.name not in initializers]
    return {
        name: numpy_helper.to_array(x) if isinstance(x, onnx.TensorProto) else x
        for name, x in zip(names, inputs, strict=False)
    }


def _normalize(outputs: Sequence[Any]) -> list[Any]:
    return [numpy_helper.to_array(x) if isinstance(x, onnx.TensorProto) else x for x in outputs]


def _try_engine(engine: str, model: onnx.ModelProto | str, feeds: dict[str, Any],
                expected: Sequence[Any], rtol: float, atol: float) -> tuple[str, str, list]:
    """(status, reason, outputs) with status ``pass``, ``fail`` or ``unsupported``."""
    try:
        got = _ENGINES[engine](model, feeds)
    except Exception as exc:  # the engine's refusal is data here
        return "unsupported", _first_line(f"{type(exc).__name__}: {exc}"), []
    why = compare_outputs(expected, got, rtol, atol)
    return (FAIL, why, got) if why else (PASS, "", got)


class _Judge:
    """Runs a round-tripped model in the case's engine and compares its outputs.

    ``values=False`` compares only the outputs' structure, dtypes and shapes (for random
    ops, whose values differ from run to run).
    """

    def __init__(self, engine: str, feeds: dict[str, Any], expected: Sequence[Any],
                 rtol: float, atol: float, *, values: bool = True) -> None:
        self.engine, self.feeds, self.expected = engine, feeds, expected
        self.rtol, self.atol, self.values = rtol, atol, values

    def __call__(self, path: str) -> StageResult:
        try:
            got = _ENGINES[self.engine](path, self.feeds)
        except Exception as exc:  # the saved model does not run: a failure
            return StageResult(FAIL, f"{self.engine} cannot run the saved model: "
                                     f"{_first_line(f'{type(exc).__name__}: {exc}')}")
        why = compare_outputs(self.expected, got, self.rtol, self.atol, values=self.values)
        return StageResult(FAIL, f"{self.engine}: {why}") if why else StageResult(PASS)


class _StructuralJudge:
    """For a case nothing can run: the saved model must print (in onnx's own text form)
    exactly as the original does."""

    def __init__(self, original: onnx.ModelProto) -> None:
        self.text = onnx.printer.to_text(original)

    def __call__(self, path: str) -> StageResult:
        text = onnx.printer.to_text(onnx.load(path))
        if text == self.text:
            return StageResult(PASS)
        for i, (a, b) in enumerate(zip(self.text.splitlines(), text.splitlines(),
                                       strict=False)):
            if a != b:
                return StageResult(FAIL, f"onnx text of the saved model differs at line "
                                         f"{i + 1}: {b.strip()!r} vs {a.strip()!r}")
        return StageResult(FAIL, "onnx text of the saved model differs in length")


def _choose_judge(case_model: onnx.ModelProto, feeds: dict[str, Any], expected: Sequence[Any],
                  rtol: float, atol: float,
                  ) -> tuple[str, str, str, str, Callable[[str], StageResult], list[Any]]:
    """Pick what judges the round trips: (ort status, ort reason, engine, expected, judge,
    the engine's outputs on the original)."""
    ort_status, ort_reason, ort_got = _try_engine("ort", case_model, feeds, expected, rtol,
                                                  atol)
    if ort_status == PASS:
        return ort_status, ort_reason, "ort", "suite", _Judge("ort", feeds, expected, rtol,
                                                                 atol), ort_got
    ref_status, _, ref_got = _try_engine("reference", case_model, feeds, expected, rtol, atol)
    if ref_status == PASS:
        judge = _Judge("reference", feeds, expected, rtol, atol)
        return ort_status, ort_reason, "reference", "suite", judge, ref_got
    if FAIL not in (ort_status, ref_status):
        return ort_status, ort_reason, "", "structure", _StructuralJudge(case_model), []
    # The engine runs the original but disagrees with the suite: compare the round trips
    # with the engine's own outputs, or only their shapes when a second run differs.
    engine, got = ("ort", ort_got) if ort_status == FAIL else ("reference", ref_got)
    again, _, _ = _try_engine(engine, case_model, feeds, got, 0.0, 0.0)
    deterministic = again == PASS
    judge = _Judge(engine, feeds, got, rtol, atol, values=deterministic)
    source = "engine" if deterministic else "engine-shapes"
    return ort_status, ort_reason, engine, source, judge, got


def _load_save(model_bytes: bytes, path: str, judge: Callable[[str], StageResult],
               captured: list[str]) -> StageResult:
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = _kiln_call("load", lambda: kiln.load(model_bytes))
        captured.extend(_first_line(str(w.message)) for w in caught)
        _kiln_call("verify", lambda: ir.verify(model))
        _kiln_call("save", lambda: kiln.save(model, path))
    except _KilnStageError as exc:
        return exc.result
    return judge(path)


def _text_round_trip(model_bytes: bytes, path: str, judge: Callable[[str], StageResult],
                     case: CaseResult) -> StageResult:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = _kiln_call("load", lambda: kiln.load(model_bytes))
        text = _kiln_call("print", lambda: ir.print_model(model, elide_above=None))
        parsed = _kiln_call("parse", lambda: ir.parse_model(text))
        _kiln_call("verify parsed", lambda: ir.verify(parsed))
        reprinted = _kiln_call("print parsed",
                               lambda: ir.print_model(parsed, elide_above=None))
        case.text_fixpoint = reprinted == text
        _kiln_call("save parsed", lambda: kiln.save(parsed, path))
    except _KilnStageError as exc:
        return exc.result
    return judge(path)


def _optimize_stage(model_bytes: bytes, path: str, judge: _Judge,
                    case: CaseResult) -> StageResult:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = _kiln_call("load", lambda: kiln.load(model_bytes))
        model, report = _kiln_call(
            "optimize", lambda: kiln.optimize(model, pipeline="default", report=True))
        case.nodes_removed = report.nodes_before - report.nodes_after
        _kiln_call("save optimized", lambda: kiln.save(model, path))
    except _KilnStageError as exc:
        return exc.result
    return judge(path)


def run_case(case: Any, workdir: str, *, text: bool = True, optimize: bool = False
             ) -> CaseResult:
    """Run one suite case through ORT (or the reference evaluator) and kiln's round trips.

    Args:
        case: an ``onnx.backend.test.case.test_case.TestCase`` with a model and one or more
            data sets (only the first is used; the node suite has exactly one).
        workdir: a folder for the saved models.
        text: run the text round trip (else it is ``skipped``).
        optimize: run the optimize stage (else it is ``skipped``).
    """
    start = time.perf_counter()
    rtol = float(getattr(case, "rtol", DEFAULT_RTOL) or DEFAULT_RTOL)
    atol = float(getattr(case, "atol", DEFAULT_ATOL) or DEFAULT_ATOL)
    inputs, outputs = case.data_sets[0]
    model: onnx.ModelProto = case.model
    feeds = _feeds(model, inputs)
    expected = _normalize(outputs)

    ort_status, ort_reason, engine, source, judge, engine_got = _choose_judge(
        model, feeds, expected, rtol, atol)

    result = CaseResult(case.name, ort_status, ort_reason, engine, source,
                        StageResult(SKIPPED), StageResult(SKIPPED))
    model_bytes = model.SerializeToString()
    base = os.path.join(workdir, case.name)
    result.load_save = _load_save(model_bytes, base + ".saved.onnx", judge, result.warnings)
    if text:
        result.text = _text_round_trip(model_bytes, base + ".text.onnx", judge, result)
    if optimize and engine and result.load_save.status == PASS:
        optimize_judge = _Judge(engine, feeds, engine_got, OPTIMIZE_RTOL, OPTIMIZE_ATOL,
                                values=source != "engine-shapes")
        result.optimize = _optimize_stage(model_bytes, base + ".opt.onnx", optimize_judge,
                                          result)
    for suffix in (".saved.onnx", ".text.onnx", ".opt.onnx"):
        Path(base + suffix).unlink(missing_ok=True)
    result.seconds = time.perf_counter() - start
    return result


# ----------------------------------------------------------------------------- the suite
def run_suite(
    cases: Sequence[Any],
    *,
    text: bool | None = None,
    optimize: bool = False,
    progress: Callable[[int, int, CaseResult], None] | None = None,
) -> list[CaseResult]:
    """Run every case; see :func:`run_case`.

    Args:
        cases: suite cases (see :func:`load_node_cases`).
        text: run the text round trip; by default, when the text form is implemented.
        optimize: run the optimize stage (the default pipeline) on each case.
        progress: called after each case with (index, total, result).
    """
    if text is None:
        text = text_form_available()
    results: list[CaseResult] = []
    with tempfile.TemporaryDirectory(prefix="kiln-conformance-") as workdir:
        for i, result in enumerate(_iter_cases(cases, workdir, text, optimize)):
            results.append(result)
            if progress is not None:
                progress(i, len(cases), result)
    return results


def _iter_cases(cases: Sequence[Any], workdir: str, text: bool,
                optimize: bool) -> Iterator[CaseResult]:
    for case in cases:
        with np.errstate(all="ignore"):
            yield run_case(case, workdir, text=text, optimize=optimize)
