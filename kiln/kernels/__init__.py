"""kiln's handwritten kernels: TIR schedule rules the tvm backend applies without tuning.

Each rule is a :class:`tvm.s_tir.dlight.ScheduleRule`: it looks at one fused PrimFunc
(after Relax's LegalizeOps, FuseOps and FuseTIR), recognizes the computation it knows
(a matmul with its epilogue, an NHWC convolution, a softmax, ...) and returns a schedule,
or None to let the next rule try. :func:`cpu_rules` lists the CPU rules in priority
order; the last one is a fallback that schedules any PrimFunc, so nothing is left
as TVM's naive single-threaded loops.
"""

from __future__ import annotations

from kiln.kernels.cpu import cpu_rules

__all__ = ["cpu_rules"]
