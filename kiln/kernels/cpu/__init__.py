"""CPU (LLVM) schedule rules, most specific first."""

from __future__ import annotations

from tvm.s_tir import dlight


def cpu_rules() -> list[dlight.ScheduleRule]:
    """The CPU schedule rules in the order the backend tries them."""
    from kiln.kernels.cpu.generic import Fallback
    from kiln.kernels.cpu.matmul import Matmul

    return [Matmul(), Fallback()]
