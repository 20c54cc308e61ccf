"""kiln optimize against onnxsim and onnxslim on every zoo model (issue 3's acceptance run).

Each zoo model is exported twice, with torch.onnx's dynamo exporter and with its
TorchScript exporter (``kiln.zoo.export``: static batch 1, the exporter's own optimizer
off), and the file is given to three optimizers, all in this process:

- kiln: ``kiln.load(src)``, ``kiln.optimize(model)`` (the ``default`` pipeline, as a user
  gets it: verification after every pass, to a fixed point), ``kiln.save(model, dst)``;
- onnxsim: ``onnx.load(src)``, ``onnxsim.simplify(model)`` (its defaults), ``onnx.save``;
- onnxslim: ``onnx.load(src)``, ``onnxslim.slim(model)`` (its defaults), ``onnx.save``.

**What is timed**: that whole file-in, file-out call, wall-clock (``time.perf_counter``):
one untimed warm-up call per tool and model (lazy imports, first-call caches), then
``--repeat`` timed calls with a garbage collection before each (not timed); the figure is
the median. The three tools work on the same input file within one run of this script.

For the original export and each result the table shows:

- ``nodes``: nodes of the main graph (top level);
- ``nodes+fn``: the nodes ONNX Runtime runs: every call of a model-local function (kiln's
  ``ai.kiln`` ops are such functions) counted as its body, recursively, and the nodes of
  If/Loop/Scan subgraphs included. The issue's node-count goal is judged on ``nodes``
  (the graph's node count, as every tool reports it); a second, stricter goal judges
  ``nodes+fn``, where a fused op whose body ORT inlines again does not count as a win;
- ``outputs``: max abs error against the original's outputs, both run in ONNX Runtime with
  graph optimizations off, on the zoo entry's seeded example inputs (real digits for
  ``digits_cnn``); ``ok`` when every output is within rtol 1e-4, atol 1e-5;
- ``latency``: ONNX Runtime CPU with its default ``ORT_ENABLE_ALL``, ``intra_op`` threads
  fixed at 2, sequential execution; 10 warm-up runs each, then the variants take turns run
  by run and the figure is the median single-run time. Every variant of a model runs the
  same number of times (10 to 1000, sized so that the original takes about
  ``--latency-seconds``). The load average is printed: on a busy machine latency ratios
  within about 10% are noise (a variant whose graph equals the original's shows it).

Goals (per model and exporter): kiln's ``nodes`` <= min(onnxsim, onnxslim), and the same
for ``nodes+fn``; kiln's
optimize time < both peers'; kiln's outputs within tolerance; kiln's ORT latency <= the
original's times 1.05 (a 5% noise margin: two cores, other processes). A peer that crashes
is recorded in the table and the run goes on; a goal against a crashed peer counts as met.
The process exits nonzero for a missed goal only with ``--strict``.

    python benchmarks/optimize_vs_peers.py [--models mlp,bert] [--exporters torchscript]
        [--repeat 5] [--json OUT] [--strict]
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import onnxsim
import onnxslim
import torch

import kiln
from kiln import zoo

TOOLS = ("kiln", "onnxsim", "onnxslim")
EXPORTERS = ("dynamo", "torchscript")
RTOL, ATOL = 1e-4, 1e-5
LATENCY_MARGIN = 0.05
THREADS = 2
WARMUP_RUNS = 10
MIN_LATENCY_RUNS, MAX_LATENCY_RUNS = 10, 1000


# ----------------------------------------------------------------------------- optimizers
def optimize_kiln(src: Path, dst: Path) -> None:
    """kiln's default pipeline, verification on, file to file."""
    kiln.save(kiln.optimize(kiln.load(src)), dst)


def optimize_onnxsim(src: Path, dst: Path) -> None:
    """``onnxsim.simplify`` with its defaults, file to file."""
    model, ok = onnxsim.simplify(onnx.load(src))
    if not ok:
        raise RuntimeError("onnxsim reports that its check failed")
    onnx.save(model, dst)


def optimize_onnxslim(src: Path, dst: Path) -> None:
    """``onnxslim.slim`` with its defaults, file to file."""
    model = onnxslim.slim(onnx.load(src))
    if model is None:
        raise RuntimeError("onnxslim returned no model")
    onnx.save(model, dst)


OPTIMIZERS: dict[str, Callable[[Path, Path], None]] = {
    "kiln": optimize_kiln,
    "onnxsim": optimize_onnxsim,
    "onnxslim": optimize_onnxslim,
}


# ----------------------------------------------------------------------------- results
@dataclasses.dataclass
class Variant:
    """The original export or one optimizer's result."""

    name: str
    error: str | None = None
    seconds: float | None = None
    times: list[float] = dataclasses.field(default_factory=list)
    nodes: int | None = None
    nodes_with_functions: int | None = None
    functions: int | None = None
    outputs_ok: bool | None = None
    max_abs_error: float | None = None
    latency_ms: float | None = None


@dataclasses.dataclass
class Case:
    """One zoo model exported one way, and what each optimizer made of it."""

    model: str
    exporter: str
    error: str | None = None
    variants: dict[str, Variant] = dataclasses.field(default_factory=dict)
    ratios: dict[str, float | None] = dataclasses.field(default_factory=dict)
    goals: dict[str, bool | None] = dataclasses.field(default_factory=dict)

    @property
    def goals_met(self) -> bool:
        return self.error is None and all(v is not False for v in self.goals.values())


# ----------------------------------------------------------------------------- measures
def count_nodes(model: onnx.ModelProto) -> tuple[int, int]:
    """(main-graph nodes, nodes with function calls expanded and subgraphs included)."""
    functions = {(f.domain, f.name, getattr(f, "overload", "")): f for f in model.functions}

    def size(nodes: Any, depth: int = 0) -> int:
        if depth > 64:
            raise RecursionError("model-local functions nest more than 64 deep")
        total = 0
        for node in nodes:
            body = functions.get((node.domain, node.op_type, node.overload))
            total += 1 if body is None else size(body.node, depth + 1)
            for attr in node.attribute:
                if attr.HasField("g"):
                    total += size(attr.g.node, depth + 1)
                for graph in attr.graphs:
                    total += size(graph.node, depth + 1)
        return total

    return len(model.graph.node), size(model.graph.node)


def _session(path: Path, optimized: bool) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimized
        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    options.intra_op_num_threads = THREADS
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _feeds_for(session: ort.InferenceSession, feeds: dict[str, np.ndarray]) -> dict:
    return {i.name: feeds[i.name] for i in session.get_inputs()}


def reference_outputs(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Outputs of the model at ``path`` in ONNX Runtime with graph optimizations off."""
    session = _session(path, optimized=False)
    return session.run(None, _feeds_for(session, feeds))


def compare(path: Path, feeds: dict[str, np.ndarray], want: list[np.ndarray]) \
        -> tuple[bool, float]:
    """(within rtol/atol, max abs error) of the model at ``path`` against ``want``."""
    got = reference_outputs(path, feeds)
    if len(got) != len(want):
        return False, float("inf")
    ok, worst = True, 0.0
    for g, w in zip(got, want, strict=True):
        if g.shape != w.shape:
            return False, float("inf")
        g64, w64 = g.astype(np.float64), w.astype(np.float64)
        worst = max(worst, float(np.max(np.abs(g64 - w64), initial=0.0)))
        ok = ok and bool(np.allclose(g64, w64, rtol=RTOL, atol=ATOL))
    return ok, worst


def measure_latency(paths: dict[str, Path], feeds: dict[str, np.ndarray],
                    seconds: float) -> dict[str, float]:
    """Median single-run ORT latency (ms) of each model.

    The models take turns run by run (the order rotating each turn), so a burst of load
    from other processes falls on all of them alike; each runs the same number of times.
    """
    sessions = {name: _session(path, optimized=True) for name, path in paths.items()}
    inputs = {name: _feeds_for(s, feeds) for name, s in sessions.items()}
    for name, session in sessions.items():
        for _ in range(WARMUP_RUNS):
            session.run(None, inputs[name])
    first = next(iter(sessions))
    start = time.perf_counter()
    sessions[first].run(None, inputs[first])
    one = max(time.perf_counter() - start, 1e-6)
    runs = max(MIN_LATENCY_RUNS, min(MAX_LATENCY_RUNS, int(seconds / one)))
    names = list(sessions)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for turn in range(runs):
        k = turn % len(names)
        for name in names[k:] + names[:k]:
            session, feed = sessions[name], inputs[name]
            start = time.perf_counter()
            session.run(None, feed)
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(s) * 1e3 for name, s in samples.items()}


def _error(exc: BaseException) -> str:
    line = f"{type(exc).__name__}: {exc}".splitlines()[0] if str(exc) else type(exc).__name__
    return line[:200]


def _time_tool(tool: str, src: Path, dst: Path, repeat: int) -> Variant:
    variant = Variant(tool)
    try:
        OPTIMIZERS[tool](src, dst)  # warm-up: lazy imports, first-call caches
        for _ in range(repeat):
            gc.collect()
            start = time.perf_counter()
            OPTIMIZERS[tool](src, dst)
            variant.times.append(time.perf_counter() - start)
    except Exception as exc:  # noqa: BLE001  (a crashing peer is a result, not an abort)
        variant.error = _error(exc)
        return variant
    variant.seconds = statistics.median(variant.times)
    return variant


def _describe(variant: Variant, path: Path, feeds: dict[str, np.ndarray],
              want: list[np.ndarray] | None) -> None:
    """Fill node counts and the numeric check of ``variant`` from its file."""
    try:
        proto = onnx.load(path)
        variant.nodes, variant.nodes_with_functions = count_nodes(proto)
        variant.functions = len(proto.functions)
        del proto
        if want is not None:
            variant.outputs_ok, variant.max_abs_error = compare(path, feeds, want)
    except Exception as exc:  # noqa: BLE001  (e.g. ORT refuses a peer's model)
        variant.error = _error(exc)
        variant.outputs_ok = False


def example_feeds(name: str) -> dict[str, np.ndarray]:
    """The zoo entry's seeded example inputs (batch 1) by input name."""
    entry = zoo.get(name)
    tensors = entry.example_inputs(1)
    return {n: t.numpy() for n, t in zip(entry.input_names, tensors, strict=True)}


def run_case(name: str, exporter: str, workdir: Path, *, repeat: int = 5,
             latency_seconds: float = 1.0) -> Case:
    """Export zoo model ``name`` with ``exporter``, optimize it with each tool, measure.

    Args:
        name: a zoo model name.
        exporter: ``"dynamo"`` or ``"torchscript"``.
        workdir: a folder for the exported and optimized files.
        repeat: timed runs per tool (the median is reported).
        latency_seconds: about how long the original model runs for the latency figure.

    Returns:
        The case, with a variant for the original and for each tool, ratios and goals.
    """
    case = Case(name, exporter)
    src = workdir / f"{name}_{exporter}.onnx"
    try:
        zoo.export(name, src, exporter=exporter)
    except Exception as exc:  # noqa: BLE001  (an exporter failure is recorded)
        case.error = f"export failed: {_error(exc)}"
        return case
    feeds = example_feeds(name)
    original = Variant("original")
    _describe(original, src, feeds, None)
    want = reference_outputs(src, feeds)
    original.outputs_ok, original.max_abs_error = True, 0.0
    case.variants["original"] = original
    paths = {"original": src}
    for tool in TOOLS:
        dst = workdir / f"{name}_{exporter}.{tool}.onnx"
        variant = _time_tool(tool, src, dst, repeat)
        if variant.error is None:
            _describe(variant, dst, feeds, want)
        if variant.error is None:
            paths[tool] = dst
        case.variants[tool] = variant
    try:
        for tool, ms in measure_latency(paths, feeds, latency_seconds).items():
            case.variants[tool].latency_ms = ms
    except Exception as exc:  # noqa: BLE001
        case.error = f"latency run failed: {_error(exc)}"
    _judge(case)
    return case


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def _judge(case: Case) -> None:
    v = case.variants
    k, sim, slim, orig = v["kiln"], v["onnxsim"], v["onnxslim"], v["original"]
    case.ratios = {
        "time_kiln_over_onnxsim": _ratio(k.seconds, sim.seconds),
        "time_kiln_over_onnxslim": _ratio(k.seconds, slim.seconds),
        "latency_kiln_over_original": _ratio(k.latency_ms, orig.latency_ms),
    }
    if k.error is not None:
        case.goals = {"nodes": False, "nodes+fn": False, "faster": False, "outputs": False,
                      "latency": False}
        return
    peers = [p for p in (sim, slim) if p.error is None]
    peer_nodes = [p.nodes for p in peers if p.nodes is not None]
    peer_bodies = [p.nodes_with_functions for p in peers if p.nodes_with_functions is not None]
    latency = case.ratios["latency_kiln_over_original"]
    case.goals = {
        "nodes": not peer_nodes or (k.nodes or 0) <= min(peer_nodes),
        "nodes+fn": not peer_bodies or (k.nodes_with_functions or 0) <= min(peer_bodies),
        "faster": all(k.seconds is not None and p.seconds is not None and k.seconds < p.seconds
                      for p in peers),
        "outputs": bool(k.outputs_ok),
        "latency": None if latency is None else latency <= 1 + LATENCY_MARGIN,
    }


# ----------------------------------------------------------------------------- report
def _fmt(value: Any, spec: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "ok" if value else "FAIL"
    return format(value, spec)


def format_case(case: Case) -> str:
    """The table of one case."""
    title = f"== {case.model} / {case.exporter}"
    if case.error and not case.variants:
        return f"{title}: {case.error}"
    lines = [title + (f"  ({case.error})" if case.error else "")]
    lines.append(f"  {'variant':<10}{'nodes':>7}{'nodes+fn':>10}{'time s':>9}"
                 f"{'outputs':>9}{'max err':>10}{'latency ms':>12}")
    for v in case.variants.values():
        if v.error is not None and v.nodes is None:
            lines.append(f"  {v.name:<10}  ERROR {v.error}")
            continue
        lines.append(
            f"  {v.name:<10}{_fmt(v.nodes):>7}{_fmt(v.nodes_with_functions):>10}"
            f"{_fmt(v.seconds, '.3f'):>9}{_fmt(v.outputs_ok):>9}"
            f"{_fmt(v.max_abs_error, '.1e'):>10}{_fmt(v.latency_ms, '.3f'):>12}"
            + (f"  ({v.error})" if v.error else "")
        )
    r = case.ratios
    lines.append(
        f"  time kiln/onnxsim {_fmt(r.get('time_kiln_over_onnxsim'), '.2f')}, "
        f"kiln/onnxslim {_fmt(r.get('time_kiln_over_onnxslim'), '.2f')}; "
        f"latency kiln/original {_fmt(r.get('latency_kiln_over_original'), '.3f')}"
    )
    goals = ", ".join(f"{k} {_fmt(g)}" for k, g in case.goals.items())
    lines.append(f"  goals: {goals}")
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    """The machine and software versions the figures come from."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "onnx": onnx.__version__,
        "onnxruntime": ort.__version__,
        "onnxsim": getattr(onnxsim, "__version__", "?"),
        "onnxslim": getattr(onnxslim, "__version__", "?"),
        "torch": torch.__version__,
        "kiln": kiln.__version__,
        "ort_intra_op_threads": THREADS,
        "load_average": os.getloadavg(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(e.name for e in zoo.list_models()),
                        help="comma-separated zoo names (default: all)")
    parser.add_argument("--exporters", default=",".join(EXPORTERS),
                        help="comma-separated: dynamo, torchscript (default: both)")
    parser.add_argument("--repeat", type=int, default=5, help="timed optimize runs per tool")
    parser.add_argument("--latency-seconds", type=float, default=1.0,
                        help="about how long the original runs for its latency figure")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a goal is missed")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    exporters = [e.strip() for e in args.exporters.split(",") if e.strip()]
    for name in names:
        try:
            zoo.get(name)
        except KeyError as exc:
            parser.error(str(exc.args[0]))
    for exporter in exporters:
        if exporter not in EXPORTERS:
            parser.error(f"unknown exporter {exporter!r}; choose from {', '.join(EXPORTERS)}")
    torch.manual_seed(0)
    info = machine()
    print(f"# {info['processor']}, {info['cpu_count']} CPUs; ORT {info['onnxruntime']} "
          f"(intra_op {THREADS}), onnxsim {info['onnxsim']}, onnxslim {info['onnxslim']}; "
          f"optimize time: median of {args.repeat}; latency margin {LATENCY_MARGIN:.0%}; "
          f"load average {info['load_average'][0]:.1f}")
    cases: list[Case] = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="kiln-peers-") as tmp:
        for name in names:
            for exporter in exporters:
                try:
                    case = run_case(name, exporter, Path(tmp), repeat=args.repeat,
                                    latency_seconds=args.latency_seconds)
                except Exception as exc:  # noqa: BLE001  (keep the other cases)
                    traceback.print_exc()
                    case = Case(name, exporter, error=f"benchmark failed: {_error(exc)}")
                cases.append(case)
                print(format_case(case), flush=True)
                for path in Path(tmp).iterdir():
                    path.unlink()
    missed = [f"{c.model}/{c.exporter}" for c in cases if not c.goals_met]
    print(f"# {len(cases) - len(missed)}/{len(cases)} cases meet every goal"
          + (f"; missed: {', '.join(missed)}" if missed else "")
          + f"; {time.perf_counter() - start:.0f} s; load average {os.getloadavg()[0]:.1f}")
    if args.json:
        payload = {"machine": info, "repeat": args.repeat, "rtol": RTOL, "atol": ATOL,
                   "latency_margin": LATENCY_MARGIN,
                   "cases": [dataclasses.asdict(c) | {"goals_met": c.goals_met} for c in cases]}
        args.json.write_text(json.dumps(payload, indent=2))
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())
