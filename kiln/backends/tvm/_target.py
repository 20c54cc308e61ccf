"""TVM targets for kiln's target names: ``llvm`` (this host's CPU) and ``cuda``."""

from __future__ import annotations

import functools
import os

from kiln.errors import KilnError

#: kiln target names the tvm backend takes; "cpu" is an alias of "llvm".
TARGETS = ("llvm", "cuda")
ALIASES = {"cpu": "llvm"}


def physical_cores() -> int:
    """The CPU cores this process may run on (affinity-aware), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


@functools.cache
def host_cpu() -> str:
    """LLVM's name for this host's CPU (e.g. ``znver4``, ``sapphirerapids``).

    TVM refuses ``mcpu=native``; LLVM's host detection gives the concrete name, which
    carries the host's vector extensions (AVX-512, AVX2) into code generation.
    """
    import tvm

    name = str(tvm.target.codegen.llvm_get_system_cpu())
    return name if name and name != "generic" else "x86-64-v3"


def tvm_target(name: str, threads: int | None = None):
    """The ``tvm.target.Target`` for a kiln target name.

    Args:
        name: ``llvm`` (or ``cpu``) for this host's CPU, ``cuda`` for the current GPU.
        threads: cores the generated CPU code may use (default: all this process may run
            on); recorded as the target's ``num-cores``.

    Raises:
        KilnError: for an unknown target, or ``cuda`` where TVM finds no GPU.
    """
    import tvm

    name = ALIASES.get(name, name)
    cores = threads or physical_cores()
    host = {"kind": "llvm", "mcpu": host_cpu(), "num-cores": cores}
    if name == "llvm":
        return tvm.target.Target(host)
    if name == "cuda":
        dev = tvm.cuda(0)
        if not dev.exist:
            raise KilnError("tvm target 'cuda' needs an NVIDIA GPU; none was found")
        arch = "sm_" + str(dev.compute_version).replace(".", "")
        return tvm.target.Target({"kind": "cuda", "arch": arch}, host=host)
    raise KilnError(f"tvm backend has no target {name!r} (targets: {', '.join(TARGETS)})")


def tvm_device(name: str):
    """The TVM device a target's code runs on."""
    import tvm

    return tvm.cuda(0) if ALIASES.get(name, name) == "cuda" else tvm.cpu(0)
