"""Helpers for kernel tests: build a one-function Relax module, schedule it with kiln's
CPU rules, run it, and report which rule scheduled each PrimFunc."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
from tvm import relax  # noqa: E402

from kiln.backends.tvm import tvm_target  # noqa: E402
from kiln.backends.tvm._pipeline import optimize_relax  # noqa: E402
from kiln.kernels import cpu_rules  # noqa: E402


def relax_module(body: Callable, inputs: Sequence[np.ndarray]) -> tvm.IRModule:
    """``main(*inputs) = body(*vars)``, a Relax module over numpy-shaped inputs."""
    bb = relax.BlockBuilder()
    params = [relax.Var(f"x{i}", relax.TensorType(a.shape, str(a.dtype)))
              for i, a in enumerate(inputs)]
    with bb.function("main", params):
        with bb.dataflow():
            out = bb.emit_output(body(*params))
        bb.emit_func_output(out)
    return bb.get()


def scheduled_by(mod: tvm.IRModule, target) -> dict[str, str | None]:
    """PrimFunc name -> the first kiln rule that schedules it (None: no rule did)."""
    legal = optimize_relax(mod, target, rules=[])
    found = {}
    for gv, func in legal.functions_items():
        if isinstance(func, tvm.tirx.PrimFunc):
            found[gv.name_hint] = None
            for rule in cpu_rules():
                with target:
                    if rule.apply(func, target, False) is not None:
                        found[gv.name_hint] = type(rule).__name__
                        break
    return found


@pytest.fixture(scope="session")
def target():
    return tvm_target("llvm", 2)


@pytest.fixture
def run_kernel(target):
    """run_kernel(body, inputs) -> (output array, {primfunc: rule})."""
    from kiln.backends.tvm._pipeline import build

    def run(body: Callable, inputs: Sequence[np.ndarray]):
        mod = relax_module(body, inputs)
        ex = build(mod, target)
        vm = relax.VirtualMachine(ex, tvm.cpu())
        out = vm["main"](*[tvm.runtime.tensor(a) for a in inputs])
        return out.numpy(), scheduled_by(mod, target)

    return run
