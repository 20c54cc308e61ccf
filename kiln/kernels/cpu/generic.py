"""The catch-all CPU rule: any PrimFunc gets parallel outer loops and vector inner loops.

Applied last, after every rule that recognizes a computation. Injective producers and
consumers are inlined where TVM allows; every remaining block has its leading spatial
loops fused and run in parallel (when the block is big enough to pay for waking the
thread pool) and, when it has no reduction, its innermost elements vectorized. A
PrimFunc the rule cannot analyze is left as TVM wrote it: correct, single-threaded.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir import dlight
from tvm.s_tir.dlight.analysis import normalize_prim_func
from tvm.s_tir.dlight.base.common_schedules import try_inline_contiguous_spatial
from tvm.target import Target

from kiln.kernels.cpu._sched import parallel_vectorize


class Fallback(dlight.ScheduleRule):
    """Parallelize and vectorize any PrimFunc (kiln's last CPU rule)."""

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool):
        if not isinstance(func, tirx.PrimFunc) or target.kind.name != "llvm":
            return None
        sch = s_tir.Schedule(func)
        blocks = normalize_prim_func(sch)
        if blocks is None:
            return None
        try:
            blocks = try_inline_contiguous_spatial(sch, blocks)
            for info in blocks:
                parallel_vectorize(sch, info.block_rv, target)
        except Exception:  # noqa: BLE001 - a primitive TVM refuses: leave the function as is
            return None
        return sch
