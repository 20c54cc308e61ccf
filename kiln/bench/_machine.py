"""A description of the machine and software a benchmark ran on."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

_PACKAGES = ("numpy", "onnx", "onnxruntime", "torch", "apache-tvm")


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (else what ``platform`` knows)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model", "Hardware", "cpu model") and value.strip():
            return value.strip()
    return platform.processor() or platform.machine() or "unknown"


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity), else the logical core count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def machine_info() -> dict[str, Any]:
    """CPU, core counts, memory, OS and the versions of kiln, Python and the runtimes.

    ``versions`` holds installed packages only (torch and apache-tvm are optional).
    """
    from kiln import __version__

    versions = {"kiln": __version__, "python": platform.python_version()}
    for package in _PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return {
        "cpu": cpu_model(),
        "arch": platform.machine(),
        "cores_logical": os.cpu_count() or 1,
        "cores_physical": psutil.cpu_count(logical=False) or None,
        "cores_available": available_cores(),
        "memory_bytes": psutil.virtual_memory().total,
        "os": platform.platform(),
        "versions": versions,
    }
