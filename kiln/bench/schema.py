"""The JSON schema of a ``kiln bench`` result, and a small validator for it.

A result (``kiln bench --json OUT``, or :func:`kiln.bench.bench`) is one JSON object:

* ``schema``: ``"kiln-bench/1"``; ``created``: UTC time, ISO 8601;
* ``model``: ``name``, ``nodes``, ``parameters``, ``flops`` (an estimate, see
  ``kiln inspect``; null when unknown), ``batch`` (the leading dimension of the first
  input, used for throughput) and ``inputs`` (name, dtype, shape as fed);
* ``settings``: ``runs``, ``warmup``, ``threads`` (requested intra-op threads),
  ``seed`` of the random inputs;
* ``machine``: ``cpu``, ``arch``, core counts, ``memory_bytes``, ``os`` and ``versions``
  (kiln, python, numpy, onnx, onnxruntime, and torch / apache-tvm when installed);
* ``results``: one object per backend, in the order asked. ``status`` is ``"ok"`` or
  ``"error"`` (then ``error`` says why and no figures follow). For ``"ok"``: ``target``,
  ``options``, ``threads`` (null where the backend has no thread setting),
  ``compile_ms``; ``latency_ms`` with ``median``, ``p90``, ``mean``, ``min``, ``max`` and
  ``stdev`` over ``runs`` timed runs after ``warmup`` untimed ones (wall clock,
  ``time.perf_counter_ns``, feeds checked once before timing); ``throughput`` in items
  per second (``batch / median``); ``memory``: ``peak_rss_bytes`` and
  ``rss_before_bytes`` (process RSS high-water mark from before compiling to after the
  last run, and RSS before compiling; ``method`` says how the peak was measured, see
  :mod:`kiln.bench._memory`); ``agreement`` with the first successful backend
  (``baseline``, ``max_abs_diff``, ``within_tolerance`` at rtol 1e-4, atol 1e-5), null
  for that backend itself.

The schema below says the same in JSON Schema (draft 2020-12). :func:`validate` checks
a result against it with a small validator written here for the keywords the schema uses
(no dependency on the ``jsonschema`` package).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from kiln.errors import KilnError

SCHEMA_ID = "kiln-bench/1"

_NUM = {"type": "number", "minimum": 0}
_INT = {"type": "integer", "minimum": 0}
_NULLABLE_INT = {"type": ["integer", "null"], "minimum": 0}
_DIM = {"type": ["integer", "string", "null"]}

_TENSOR = {
    "type": "object",
    "required": ["name", "dtype", "shape"],
    "properties": {
        "name": {"type": "string"},
        "dtype": {"type": ["string", "null"]},
        "elem_type": {"type": ["integer", "null"]},
        "shape": {"type": ["array", "null"], "items": _DIM},
    },
}

_LATENCY = {
    "type": "object",
    "required": ["median", "p90", "mean", "min", "max", "stdev"],
    "additionalProperties": False,
    "properties": {k: _NUM for k in ("median", "p90", "mean", "min", "max", "stdev")},
}

_MEMORY = {
    "type": "object",
    "required": ["peak_rss_bytes", "rss_before_bytes", "method"],
    "additionalProperties": False,
    "properties": {
        "peak_rss_bytes": _INT,
        "rss_before_bytes": _INT,
        "method": {"enum": ["vmhwm-reset", "ru_maxrss-lifetime"]},
    },
}

_AGREEMENT = {
    "type": ["object", "null"],
    "required": ["baseline", "max_abs_diff", "within_tolerance"],
    "additionalProperties": False,
    "properties": {
        "baseline": {"type": "string"},
        "max_abs_diff": {"type": ["number", "null"], "minimum": 0},
        "within_tolerance": {"type": "boolean"},
    },
}

_RESULT = {
    "type": "object",
    "required": ["backend", "status"],
    "additionalProperties": False,
    "properties": {
        "backend": {"type": "string", "minLength": 1},
        "status": {"enum": ["ok", "error"]},
        "error": {"type": "string"},
        "target": {"type": "string"},
        "options": {"type": "object"},
        "threads": _NULLABLE_INT,
        "compile_ms": _NUM,
        "runs": {"type": "integer", "minimum": 1},
        "warmup": _INT,
        "latency_ms": _LATENCY,
        "throughput": _NUM,
        "memory": _MEMORY,
        "agreement": _AGREEMENT,
    },
    "if": {"properties": {"status": {"const": "ok"}}},
    "then": {
        "required": [
            "target", "options", "threads", "compile_ms", "runs", "warmup", "latency_ms",
            "throughput", "memory", "agreement",
        ]
    },
    "else": {"required": ["error"]},
}

BENCH_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "kiln bench result",
    "type": "object",
    "required": ["schema", "created", "model", "settings", "machine", "results"],
    "additionalProperties": False,
    "properties": {
        "schema": {"const": SCHEMA_ID},
        "created": {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}"},
        "model": {
            "type": "object",
            "required": ["name", "nodes", "parameters", "flops", "batch", "inputs"],
            "properties": {
                "name": {"type": "string"},
                "nodes": _INT,
                "parameters": _INT,
                "flops": _NULLABLE_INT,
                "batch": {"type": "integer", "minimum": 1},
                "inputs": {"type": "array", "items": _TENSOR},
            },
        },
        "settings": {
            "type": "object",
            "required": ["runs", "warmup", "threads", "seed"],
            "properties": {
                "runs": {"type": "integer", "minimum": 1},
                "warmup": _INT,
                "threads": {"type": ["integer", "null"], "minimum": 1},
                "seed": {"type": "integer"},
            },
        },
        "machine": {
            "type": "object",
            "required": ["cpu", "cores_logical", "cores_available", "os", "versions"],
            "properties": {
                "cpu": {"type": "string"},
                "arch": {"type": "string"},
                "cores_logical": {"type": "integer", "minimum": 1},
                "cores_physical": _NULLABLE_INT,
                "cores_available": {"type": "integer", "minimum": 1},
                "memory_bytes": _INT,
                "os": {"type": "string"},
                "versions": {
                    "type": "object",
                    "required": ["kiln", "python", "onnxruntime"],
                    "additionalProperties": {"type": "string"},
                },
            },
        },
        "results": {"type": "array", "minItems": 1, "items": _RESULT},
    },
}


def validate(result: Any, schema: Mapping[str, Any] = BENCH_SCHEMA) -> None:
    """Check a bench result against the schema.

    Supports the keywords :data:`BENCH_SCHEMA` uses: ``type``, ``const``, ``enum``,
    ``required``, ``properties``, ``additionalProperties`` (bool or schema), ``items``,
    ``minItems``, ``minimum``, ``minLength``, ``pattern`` and ``if``/``then``/``else``.

    Raises:
        KilnError: naming the first offending field (``$.results[1].latency_ms.median``).
    """
    errors = _errors(result, schema, "$")
    if errors:
        raise KilnError(f"invalid bench result: {errors[0]}")


_TYPES: dict[str, Any] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def _errors(value: Any, schema: Mapping[str, Any], path: str) -> list[str]:
    """Every violation of ``schema`` by ``value``, as ``path: message`` strings."""
    types = schema.get("type")
    if types is not None:
        names = [types] if isinstance(types, str) else list(types)
        if not any(_TYPES[t](value) for t in names):
            return [f"{path}: expected {' or '.join(names)}, got {_kind(value)}"]
    if "const" in schema and value != schema["const"]:
        return [f"{path}: must be {schema['const']!r}, got {value!r}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{path}: must be one of {schema['enum']}, got {value!r}"]
    errors = _scalar_errors(value, schema, path)
    if isinstance(value, dict):
        errors += _object_errors(value, schema, path)
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            errors.append(f"{path}: needs at least {schema['minItems']} items")
        if "items" in schema:
            for i, item in enumerate(value):
                errors += _errors(item, schema["items"], f"{path}[{i}]")
    if "if" in schema:
        branch = "then" if not _errors(value, schema["if"], path) else "else"
        if branch in schema:
            errors += _errors(value, schema[branch], path)
    return errors


def _scalar_errors(value: Any, schema: Mapping[str, Any], path: str) -> list[str]:
    errors = []
    if _TYPES["number"](value) and "minimum" in schema and value < schema["minimum"]:
        errors.append(f"{path}: must be >= {schema['minimum']}, got {value}")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            errors.append(f"{path}: must not be empty")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{path}: {value!r} does not match {schema['pattern']!r}")
    return errors


def _object_errors(value: dict, schema: Mapping[str, Any], path: str) -> list[str]:
    errors = [f"{path}: missing {key!r}" for key in schema.get("required", ()) if key not in value]
    properties = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    for key, item in value.items():
        where = f"{path}.{key}"
        if key in properties:
            errors += _errors(item, properties[key], where)
        elif extra is False:
            errors.append(f"{where}: unexpected field")
        elif isinstance(extra, Mapping):
            errors += _errors(item, extra, where)
    return errors


def _kind(value: Any) -> str:
    for name in ("null", "boolean", "integer", "number", "string", "array", "object"):
        if _TYPES[name](value):
            return name
    return type(value).__name__
