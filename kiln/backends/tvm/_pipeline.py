"""Relax to executable: kiln's TVM lowering pipeline for one target.

The stages, in order:

1. ``DecomposeOpsForInference`` and ``CanonicalizeBindings`` (TVM).
2. ``ConvertLayout``: convolutions and pooling to NHWC data with HWIO weights, so the
   output channels are contiguous and vectorize (weight transposes are constant-folded).
3. ``LegalizeOps`` (TOPI compute definitions), ``AnnotateTIROpPattern``, ``FoldConstant``,
   ``FuseOps`` and ``FuseTIR``: every fused group becomes one PrimFunc (a convolution with
   its bias and activation, a matmul with its epilogue, a chain of elementwise ops).
4. kiln's schedule rules (:func:`kiln.kernels.cpu_rules`) on every PrimFunc.
5. ``tvm.compile``: TVM's default build pipeline (memory planning, VM lowering, LLVM).
"""

from __future__ import annotations

from collections.abc import Sequence

import tvm
from tvm import relax
from tvm.s_tir import dlight

#: Layouts ConvertLayout moves these Relax ops to (data, then weights); pooling and
#: elementwise ops follow their input's layout.
DESIRED_LAYOUTS: dict[str, list[str]] = {"relax.nn.conv2d": ["NHWC", "HWIO"]}


def optimize_relax(
    mod: tvm.IRModule,
    target: tvm.target.Target,
    rules: Sequence[dlight.ScheduleRule] | None = None,
    *,
    convert_layout: bool = True,
) -> tvm.IRModule:
    """Run stages 1-4 on ``mod`` for ``target`` and return the scheduled IRModule.

    Args:
        mod: a Relax IRModule with a ``main`` function (weights bound as constants).
        target: the TVM target.
        rules: schedule rules; default :func:`kiln.kernels.cpu_rules` for CPU targets.
        convert_layout: move convolutions and pooling to NHWC first.
    """
    if rules is None:
        rules = _default_rules(target)
    with target:
        mod = tvm.transform.Sequential([
            relax.transform.DecomposeOpsForInference(),
            relax.transform.CanonicalizeBindings(),
        ])(mod)
        if convert_layout and _has_conv2d(mod):
            mod = relax.transform.Normalize()(
                relax.transform.ConvertLayout(DESIRED_LAYOUTS)(mod))
        return tvm.transform.Sequential([
            relax.transform.LegalizeOps(),
            relax.transform.AnnotateTIROpPattern(),
            relax.transform.FoldConstant(),
            relax.transform.FuseOps(),
            relax.transform.FuseTIR(),
            relax.transform.DeadCodeElimination(),
            dlight.ApplyDefaultSchedule(*rules),
        ])(mod)


def _has_conv2d(mod: tvm.IRModule) -> bool:
    """Whether any Relax function calls ``relax.nn.conv2d`` (ConvertLayout is only run
    then: it has failed on modules without convolutions, e.g. unrolled LSTMs)."""
    conv = tvm.ir.Op.get("relax.nn.conv2d")
    found = []

    def visit(expr):
        if isinstance(expr, relax.Call) and expr.op.same_as(conv):
            found.append(expr)

    for _, func in mod.functions_items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return bool(found)


def build(
    mod: tvm.IRModule,
    target: tvm.target.Target,
    rules: Sequence[dlight.ScheduleRule] | None = None,
    *,
    convert_layout: bool = True,
) -> tvm.runtime.Executable:
    """Optimize ``mod`` (see :func:`optimize_relax`) and compile it for ``target``."""
    scheduled = optimize_relax(mod, target, rules, convert_layout=convert_layout)
    return tvm.compile(scheduled, target=target)


def _default_rules(target: tvm.target.Target) -> list[dlight.ScheduleRule]:
    if target.kind.name == "cuda":
        return [
            dlight.gpu.Matmul(),
            dlight.gpu.GEMV(),
            dlight.gpu.Reduction(),
            dlight.gpu.GeneralReduction(),
            dlight.gpu.Fallback(),
        ]
    from kiln.kernels import cpu_rules

    return cpu_rules()
