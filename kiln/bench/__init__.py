"""The benchmark harness, its JSON schema and reports.

:func:`bench` compiles a model on each backend and measures, after warm-up, latency
(median and p90 over timed runs), throughput (``batch / median``), peak memory and the
agreement of the outputs with the first backend, on a described machine. The result is
a JSON-ready dict whose schema is :data:`kiln.bench.schema.BENCH_SCHEMA`
(:func:`validate` checks it; the field list is in :mod:`kiln.bench.schema`).

Peak memory is the RSS high-water mark of this process from just before compiling to
the last timed run: on Linux the kernel's ``VmHWM``, reset per backend through
``/proc/self/clear_refs``; elsewhere ``getrusage``'s lifetime ``ru_maxrss`` (an upper
bound). Each entry records which (``memory.method``).

:func:`inspect_model` gives the static facts ``kiln inspect`` prints: op histogram,
parameter count and bytes, inputs and outputs, and a FLOPs estimate whose per-op rules
are in :mod:`kiln.bench._inspect`.

``kiln.bench`` is this package and, being callable, also the function of kiln's public
API: ``kiln.bench(model, ["ort", "reference"])`` is :func:`bench`.
"""

import sys
import types

from kiln.bench._harness import agreement, bench, latency_stats
from kiln.bench._inspect import FlopsEstimate, ModelStats, estimate_flops, inspect_model
from kiln.bench._machine import machine_info
from kiln.bench._report import format_bench, format_bytes, format_count, format_table
from kiln.bench.schema import BENCH_SCHEMA, SCHEMA_ID, validate


class _CallablePackage(types.ModuleType):
    """The class of this package: calling it calls :func:`bench` (so that the public
    ``kiln.bench(...)`` and the package ``kiln.bench`` can share one name)."""

    def __call__(self, *args, **kwargs):
        return bench(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage

__all__ = [
    "BENCH_SCHEMA",
    "SCHEMA_ID",
    "FlopsEstimate",
    "ModelStats",
    "agreement",
    "bench",
    "estimate_flops",
    "format_bench",
    "format_bytes",
    "format_count",
    "format_table",
    "inspect_model",
    "latency_stats",
    "machine_info",
    "validate",
]
