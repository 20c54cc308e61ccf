"""The pass manager: run passes in order, verify the IR after each, optionally to a fixed
point and with numerics checked, and report what each pass did and how long it took."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from kiln.errors import KilnError
from kiln.ir import Model, verify
from kiln.passes._base import Pass
from kiln.passes._numerics import NumericsChecker
from kiln.passes._pipeline import PipelineSpec, format_pipeline, parse_pipeline


@dataclasses.dataclass
class PassRun:
    """One run of one pass."""

    name: str
    iteration: int
    changed: bool
    seconds: float
    stats: Counter[str] = dataclasses.field(default_factory=Counter)


@dataclasses.dataclass
class OptimizeReport:
    """What a :class:`PassManager` run did: each pass run, totals, node counts."""

    pipeline: str
    runs: list[PassRun]
    nodes_before: int
    nodes_after: int
    iterations: int
    converged: bool
    # Node counts per op (``Conv``, ``ai.kiln::Attention``) in the main graph and its
    # subgraphs, before and after: what was fused, folded or removed.
    ops_before: Counter[str] = dataclasses.field(default_factory=Counter)
    ops_after: Counter[str] = dataclasses.field(default_factory=Counter)

    @property
    def changed(self) -> bool:
        """Whether any pass changed the model."""
        return any(r.changed for r in self.runs)

    @property
    def seconds(self) -> float:
        """Time spent in passes (verification and numerics checks not included)."""
        return sum(r.seconds for r in self.runs)

    @property
    def stats(self) -> Counter[str]:
        """The stats of every pass run, summed, keyed ``"pass-name.stat"``."""
        total: Counter[str] = Counter()
        for r in self.runs:
            total.update({f"{r.name}.{k}": v for k, v in r.stats.items()})
        return total

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON-able data."""
        return {
            "pipeline": self.pipeline,
            "nodes_before": self.nodes_before,
            "nodes_after": self.nodes_after,
            "ops_before": dict(sorted(self.ops_before.items())),
            "ops_after": dict(sorted(self.ops_after.items())),
            "iterations": self.iterations,
            "converged": self.converged,
            "changed": self.changed,
            "seconds": self.seconds,
            "stats": dict(self.stats),
            "passes": [
                {"name": r.name, "iteration": r.iteration, "changed": r.changed,
                 "seconds": r.seconds, "stats": dict(r.stats)}
                for r in self.runs
            ],
        }

    def to_json(self) -> str:
        """The report as a JSON document."""
        return json.dumps(self.to_dict(), indent=2)

    def format(self) -> str:
        """A readable table: one row per pass run, then totals and node counts."""
        header = ["iter", "pass", "changed", "ms", "stats"]
        rows = [[str(r.iteration), r.name, "yes" if r.changed else "no",
                 f"{r.seconds * 1e3:.2f}",
                 ", ".join(f"{k}={v}" for k, v in sorted(r.stats.items())) or "-"]
                for r in self.runs]
        widths = [max([len(h)] + [len(row[i]) for row in rows]) for i, h in enumerate(header)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                 for row in [header, ["-" * w for w in widths], *rows]]
        fixed = ("converged" if self.converged else "stopped at the iteration limit")
        lines.append(f"passes: {len(self.runs)} runs in {self.iterations} iteration(s), "
                     f"{self.seconds * 1e3:.2f} ms; {fixed}")
        lines.append(f"nodes: {self.nodes_before} -> {self.nodes_after}")
        changed = sorted(op for op in {*self.ops_before, *self.ops_after}
                         if self.ops_before[op] != self.ops_after[op])
        if changed:
            lines.append("ops: " + ", ".join(
                f"{op} {self.ops_before[op]} -> {self.ops_after[op]}" for op in changed))
        return "\n".join(lines)


def _count_nodes(model: Model) -> int:
    return sum(1 for _ in model.graph.all_nodes())


def _count_ops(model: Model) -> Counter[str]:
    return Counter(f"{n.domain}::{n.op_type}" if n.domain else n.op_type
                   for n in model.graph.all_nodes())


class PassManager:
    """Runs a list of passes over a model.

    Args:
        passes: a pipeline string, or a list of pass strings and Pass instances.
        verify: verify the IR before the first pass and after every pass; a failure names
            the pass that broke it. After a pass that reports no change the model is the
            one verified before it (the pass contract, which the fixed-point loop also
            relies on and the pass tests check), so it is not verified again.
        fixed_point: repeat the whole list until no pass reports a change (at most
            ``max_iterations`` times). A pass that found nothing to do is not run again
            until another pass changes the model (passes are deterministic functions of
            the model), so the last iteration stops at the first pass that would only
            repeat itself.
        max_iterations: the bound on fixed-point iteration.
        check_numerics: run the model with ONNX Runtime before and after each pass that
            changed it, and fail on the first pass that changes an output beyond
            ``rtol``/``atol`` (floats) or at all (other types).
        numerics_inputs: the inputs of the numerics check (default: random).
        rtol: relative tolerance of the numerics check.
        atol: absolute tolerance of the numerics check.
        progress: called with a line of text after each pass run.
    """

    def __init__(
        self,
        passes: PipelineSpec,
        *,
        verify: bool = True,
        fixed_point: bool = False,
        max_iterations: int = 10,
        check_numerics: bool = False,
        numerics_inputs: Mapping[str, np.ndarray] | None = None,
        rtol: float = 1e-4,
        atol: float = 1e-5,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        if max_iterations < 1:
            raise ValueError(f"max_iterations must be at least 1, not {max_iterations}")
        self.passes: list[Pass] = parse_pipeline(passes)
        self.verify = verify
        self.fixed_point = fixed_point
        self.max_iterations = max_iterations
        self.check_numerics = check_numerics
        self.numerics_inputs = numerics_inputs
        self.rtol = rtol
        self.atol = atol
        self.progress = progress

    def __call__(self, model: Model) -> tuple[Model, OptimizeReport]:
        """Run the passes on ``model``; return the result and a report.

        Raises:
            KilnError: the input fails verification; a pass broke the IR (the message
                names the pass and quotes the verifier); a pass changed the numerics
                (with ``check_numerics``).
        """
        if self.verify:
            _verify(model, "the input model fails verification")
        checker = None
        if self.check_numerics:
            checker = NumericsChecker(model, self.numerics_inputs, rtol=self.rtol,
                                      atol=self.atol)
        nodes_before = _count_nodes(model)
        ops_before = _count_ops(model)
        runs: list[PassRun] = []
        iterations = 0
        converged = True
        version = 0  # how many pass runs have changed the model so far
        idle_at: dict[int, int] = {}  # pass position -> version when it last changed nothing
        for iteration in range(1, self.max_iterations + 1):
            iterations = iteration
            changed = False
            for position, p in enumerate(self.passes):
                if idle_at.get(position) == version:
                    continue  # the model is as it was when this pass found nothing to do
                model, run = self._run_one(p, model, iteration, checker)
                runs.append(run)
                if run.changed:
                    version += 1
                    changed = True
                else:
                    idle_at[position] = version
            if not self.fixed_point or not changed:
                break
        else:
            converged = False
        report = OptimizeReport(format_pipeline(self.passes), runs, nodes_before,
                                _count_nodes(model), iterations, converged, ops_before,
                                _count_ops(model))
        return model, report

    def _run_one(self, p: Pass, model: Model, iteration: int,
                 checker: NumericsChecker | None) -> tuple[Model, PassRun]:
        start = time.perf_counter()
        result = p(model)
        seconds = time.perf_counter() - start
        run = PassRun(p.name, iteration, result.changed, seconds, Counter(result.stats))
        if self.verify and (result.changed or result.model is not model):
            _verify(result.model, f"pass {p.name!r} broke the IR")
        if checker is not None:  # also after "no change": a pass may misreport
            checker.check(result.model, p.name)
        if self.progress is not None:
            self.progress(f"{p.name} (iteration {iteration}): "
                          f"{'changed' if run.changed else 'no change'}, "
                          f"{seconds * 1e3:.1f} ms")
        return result.model, run


def _verify(model: Model, what: str) -> None:
    try:
        verify(model)
    except KilnError as exc:
        raise KilnError(f"{what}: {exc}") from None


def optimize(
    model: Model | str | os.PathLike | bytes,
    pipeline: str = "default",
    passes: PipelineSpec | None = None,
    *,
    verify: bool = True,
    fixed_point: bool = True,
    check_numerics: bool = False,
    report: bool = False,
    progress: Callable[[str], None] | None = None,
) -> Model | tuple[Model, OptimizeReport]:
    """Optimize a model with a named pipeline or a list of passes.

    Args:
        model: a Model (changed in place by in-place passes), or a path or bytes of an
            ONNX model, loaded first.
        pipeline: a named pipeline (``"default"``, ``"none"``); ignored when ``passes``
            is given.
        passes: a pipeline string such as ``"fold-constants,eliminate-dead-code"``, or a
            list of pass strings and Pass instances.
        verify: verify the IR after every pass.
        fixed_point: repeat the passes until none changes the model.
        check_numerics: check with ONNX Runtime that no pass changes the outputs.
        report: also return the :class:`OptimizeReport`.
        progress: called with a line of text after each pass run.

    Returns:
        The optimized model, or ``(model, report)`` when ``report`` is true.

    Raises:
        KilnError: an unknown pipeline or pass, a pass that broke the IR or changed the
            numerics; the message names it.
    """
    from kiln.frontends.onnx import load
    from kiln.passes.pipelines import get_pipeline

    if not isinstance(model, Model):
        model = load(model)
    spec = get_pipeline(pipeline) if passes is None else passes
    manager = PassManager(spec, verify=verify, fixed_point=fixed_point,
                          check_numerics=check_numerics, progress=progress)
    result, optimize_report = manager(model)
    return (result, optimize_report) if report else result
