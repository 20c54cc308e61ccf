"""The benchmark harness: compile a model on each backend, warm up, time, measure memory."""

from __future__ import annotations

import datetime
import gc
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from kiln.backends import (
    Executable,
    check_feeds,
    compile,
    get_backend,
    model_input_specs,
    random_inputs_for,
)
from kiln.bench import _memory
from kiln.bench._inspect import estimate_flops
from kiln.bench._machine import available_cores, machine_info
from kiln.bench.schema import SCHEMA_ID
from kiln.errors import KilnError
from kiln.ir import Model

RTOL = 1e-4
ATOL = 1e-5
"""Tolerance of the agreement check between backends (DESIGN.md, float32 passes)."""


def bench(
    model: Model,
    backends: Sequence[str] = ("ort",),
    *,
    runs: int = 20,
    warmup: int = 3,
    threads: int | None = None,
    inputs: Mapping[str, np.ndarray] | None = None,
    dims: Mapping[str, int] | None = None,
    seed: int = 0,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    name: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Benchmark ``model`` on each backend, one after the other, on the same inputs.

    For each backend: reset the peak-RSS window, compile (timed), run ``warmup`` times
    untimed, then ``runs`` times timed one by one with ``time.perf_counter_ns``. The
    first run is always made (untimed; it counts as warm-up) and its outputs are
    compared with those of the first backend that succeeded. A backend that fails with a KilnError (an unsupported op, say) gets an
    ``"error"`` entry and the others still run.

    Args:
        model: the model.
        backends: backend names, in order; the first that succeeds is the baseline of
            the agreement check.
        runs: timed runs per backend (at least 1).
        warmup: untimed runs before timing.
        threads: intra-op threads for backends that have a ``threads`` option; default:
            every core this process may use.
        inputs: the feeds; default random valid ones (see :mod:`kiln.backends._inputs`).
        dims: sizes of symbolic input dimensions for random inputs (default 1).
        seed: seed of the random inputs.
        options: extra options per backend name, e.g. ``{"ort": {"optimize": "basic"}}``.
        name: the model name recorded in the result (default: the graph name).
        progress: called with a short message as each backend starts.

    Returns:
        A result that satisfies :data:`kiln.bench.schema.BENCH_SCHEMA`.

    Raises:
        KilnError: for invalid arguments or inputs.
    """
    if runs < 1 or warmup < 0:
        raise KilnError(f"runs must be >= 1 and warmup >= 0 (got runs={runs}, warmup={warmup})")
    if not backends:
        raise KilnError("no backend to benchmark")
    if threads is None:
        threads = available_cores()
    feeds = _feeds(model, inputs, dims, seed)
    batch = _batch(feeds)
    flops = estimate_flops(model, _bound_dims(model, feeds))
    results: list[dict[str, Any]] = []
    baseline: tuple[str, dict[str, np.ndarray]] | None = None
    for backend in backends:
        if progress is not None:
            progress(f"{backend}: compiling, {warmup} warm-up and {runs} timed runs")
        extra = dict((options or {}).get(backend, {}))
        entry, outputs = _bench_one(model, backend, feeds, runs, warmup, threads, extra, batch)
        if outputs is not None:
            if baseline is None:
                baseline = (backend, outputs)
            else:
                entry["agreement"] = agreement(baseline[0], baseline[1], outputs)
        results.append(entry)
    return {
        "schema": SCHEMA_ID,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "model": {
            "name": name or model.graph.name or "model",
            "nodes": len(model.graph),
            "parameters": sum(
                v.const_value.size
                for v in model.graph.initializers.values()
                if v.const_value is not None
            ),
            "flops": flops.total if flops.complete else None,
            "batch": batch,
            "inputs": [
                {"name": k, "dtype": str(v.dtype), "shape": list(v.shape)} for k, v in feeds.items()
            ],
        },
        "settings": {"runs": runs, "warmup": warmup, "threads": threads, "seed": seed},
        "machine": machine_info(),
        "results": results,
    }


def _bench_one(
    model: Model,
    backend: str,
    feeds: Mapping[str, np.ndarray],
    runs: int,
    warmup: int,
    threads: int,
    options: dict[str, Any],
    batch: int,
) -> tuple[dict[str, Any], dict[str, np.ndarray] | None]:
    """One backend's entry, and the outputs of its first run (None when it failed)."""
    has_threads = "threads" in get_backend(backend).option_names()
    if has_threads:
        options.setdefault("threads", threads)
    if "dims" in get_backend(backend).option_names():  # backends that specialize shapes
        options.setdefault("dims", _bound_dims(model, feeds))
    gc.collect()
    method = _memory.reset_peak()
    rss_before = _memory.current_rss()
    try:
        start = time.perf_counter_ns()
        exe = compile(model, backend, **options)
        compile_ns = time.perf_counter_ns() - start
        checked = check_feeds(exe.input_specs, feeds)
        outputs = exe.run(checked, validate=False)
        for _ in range(max(warmup - 1, 0)):
            exe.run(checked, validate=False)
        times_ns = _time_runs(exe, checked, runs)
    except KilnError as exc:
        return {"backend": backend, "status": "error", "error": str(exc)}, None
    peak = _memory.peak_rss(method)
    target, effective = exe.target, _jsonable(exe.options)
    del exe
    median_ms = statistics.median(times_ns) / 1e6
    entry = {
        "backend": backend,
        "status": "ok",
        "target": target,
        "options": effective,
        "threads": options.get("threads") if has_threads else None,
        "compile_ms": compile_ns / 1e6,
        "runs": runs,
        "warmup": warmup,
        "latency_ms": latency_stats(times_ns),
        "throughput": batch / (median_ms / 1e3) if median_ms > 0 else 0.0,
        "memory": {"peak_rss_bytes": peak, "rss_before_bytes": rss_before, "method": method},
        "agreement": None,
    }
    return entry, outputs


def _jsonable(options: Mapping[str, Any]) -> dict[str, Any]:
    """Options as JSON values (tuples become lists, mappings dicts, anything else its str)."""
    out: dict[str, Any] = {}
    for key, value in options.items():
        if isinstance(value, tuple):
            value = list(value)
        if isinstance(value, Mapping):
            value = _jsonable(value)
        if not isinstance(value, str | int | float | bool | list | dict | type(None)):
            value = str(value)
        out[key] = value
    return out


def _time_runs(exe: Executable, feeds: Mapping[str, np.ndarray], runs: int) -> list[int]:
    times = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        exe.run(feeds, validate=False)
        times.append(time.perf_counter_ns() - start)
    return times


def latency_stats(times_ns: Sequence[int]) -> dict[str, float]:
    """Median, p90 (linear interpolation), mean, min, max and stdev, in milliseconds."""
    ms = np.asarray(times_ns, dtype=np.float64) / 1e6
    return {
        "median": float(np.median(ms)),
        "p90": float(np.percentile(ms, 90)),
        "mean": float(ms.mean()),
        "min": float(ms.min()),
        "max": float(ms.max()),
        "stdev": float(ms.std(ddof=1)) if ms.size > 1 else 0.0,
    }


def agreement(
    baseline: str, expected: Mapping[str, np.ndarray], actual: Mapping[str, np.ndarray]
) -> dict[str, Any]:
    """How closely ``actual`` matches ``expected``, output by output.

    ``max_abs_diff`` is over numeric outputs (None when there are none);
    ``within_tolerance`` holds when every output has the same shape and numeric ones are
    close at rtol 1e-4, atol 1e-5 (others equal).
    """
    worst: float | None = None
    ok = set(expected) == set(actual)
    for name, want in expected.items():
        got = actual.get(name)
        if got is None or np.shape(got) != np.shape(want):
            ok = False
            continue
        want, got = np.asarray(want), np.asarray(got)
        if want.dtype.kind in "biufc" and got.dtype.kind in "biufc":
            a, b = want.astype(np.float64), got.astype(np.float64)
            if a.size:
                diff = float(np.max(np.abs(a - b), initial=0.0, where=~(np.isnan(a) & np.isnan(b))))
                worst = diff if worst is None else max(worst, diff)
            ok = ok and bool(np.allclose(b, a, rtol=RTOL, atol=ATOL, equal_nan=True))
        else:
            ok = ok and bool(np.array_equal(want, got))
    return {"baseline": baseline, "max_abs_diff": worst, "within_tolerance": ok}


def _feeds(
    model: Model,
    inputs: Mapping[str, np.ndarray] | None,
    dims: Mapping[str, int] | None,
    seed: int,
) -> dict[str, np.ndarray]:
    if inputs is None:
        return random_inputs_for(model, seed=seed, dims=dims)
    return check_feeds(model_input_specs(model), inputs)


def _batch(feeds: Mapping[str, np.ndarray]) -> int:
    """The leading dimension of the first input (1 for a scalar or no input)."""
    for array in feeds.values():
        return int(array.shape[0]) if np.ndim(array) >= 1 and array.shape[0] > 0 else 1
    return 1


def _bound_dims(model: Model, feeds: Mapping[str, np.ndarray]) -> dict[str, int]:
    """Symbolic input dimension -> its size in ``feeds``."""
    bound: dict[str, int] = {}
    for value in model.graph.inputs:
        shape = value.shape
        array = feeds.get(value.name)
        if shape is None or array is None or np.ndim(array) != shape.rank:
            continue
        for dim, size in zip(shape.dims, np.shape(array), strict=True):
            if isinstance(dim, str):
                bound[dim] = int(size)
    return bound
