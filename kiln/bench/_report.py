"""Plain-text reports of bench results and model stats."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def format_table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    """Left-align the first column, right-align the others, two spaces between columns."""
    table = [list(header), *[list(r) for r in rows]]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = []
    for row in table:
        cells = [
            cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def format_bench(result: Mapping[str, Any]) -> str:
    """A bench result as a table, one row per backend, with the machine and settings."""
    model, settings, machine = result["model"], result["settings"], result["machine"]
    header = ["backend", "compile ms", "median ms", "p90 ms", "items/s", "peak RSS", "threads",
              "vs baseline"]
    rows = []
    for r in result["results"]:
        if r["status"] != "ok":
            rows.append([r["backend"], "error: " + r["error"], "", "", "", "", "", ""])
            continue
        rows.append([
            r["backend"],
            f"{r['compile_ms']:.1f}",
            _ms(r["latency_ms"]["median"]),
            _ms(r["latency_ms"]["p90"]),
            f"{r['throughput']:.1f}",
            format_bytes(r["memory"]["peak_rss_bytes"]),
            "-" if r["threads"] is None else str(r["threads"]),
            _agreement(r["agreement"]),
        ])
    flops = model.get("flops")
    lines = [
        f"model {model['name']}: batch {model['batch']}, {model['nodes']} nodes, "
        f"{format_count(model['parameters'])} parameters"
        + (f", {format_count(flops, 'FLOPs')}" if flops else ""),
        f"{settings['runs']} timed runs after {settings['warmup']} warm-up; "
        f"machine: {machine['cpu']}, {machine['cores_available']} cores available",
        format_table(rows, header),
        "peak RSS: the process's resident-memory high-water mark from compile to the last run.",
    ]
    return "\n".join(lines)


def _ms(value: float) -> str:
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def _agreement(a: Mapping[str, Any] | None) -> str:
    if a is None:
        return "baseline"
    diff = a["max_abs_diff"]
    verdict = "ok" if a["within_tolerance"] else "DIFFERS"
    return verdict if diff is None else f"{verdict} ({diff:.1e})"


def format_bytes(n: int | float) -> str:
    """``1.5 MiB`` style."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def format_count(n: int | float, unit: str = "") -> str:
    """``11.69 M`` or, with ``unit="FLOPs"``, ``3.64 GFLOPs`` (SI prefixes)."""
    value = float(n)
    for prefix in ("", "K", "M", "G", "T"):
        if abs(value) < 1000 or prefix == "T":
            number = f"{value:.0f}" if prefix == "" else f"{value:.2f}"
            return f"{number} {prefix}{unit}".rstrip()
        value /= 1000
    raise AssertionError("unreachable")
