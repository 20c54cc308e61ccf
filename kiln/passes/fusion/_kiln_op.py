"""Fusions that emit ``ai.kiln`` ops (see :mod:`kiln.ir.kiln_ops`): whether the model being
rewritten can hold one, and the pass that makes the model carry the functions its nodes
call."""

from __future__ import annotations

from typing import ClassVar

from kiln.ir import Model, kiln_ops
from kiln.passes._base import PassResult
from kiln.passes.fusion._pass import RuleSetPass
from kiln.passes.rewrite import Match, MatchResult, current_model

# Model-local functions (which carry the ai.kiln ops) came with ONNX IR version 8.
MIN_IR_VERSION = 8


def can_emit(m: Match, name: str) -> MatchResult:
    """Success when the model being rewritten can hold ``ai.kiln::<name>`` in place of the
    match (it has functions, IR version 8, and the op's body fits its opset); else why
    not. Passes do not rewrite function bodies, so matches lie in the main graph or its
    subgraphs."""
    model = current_model()
    if model is None:
        return MatchResult.fail("no model is being rewritten (use RuleSet.apply or explain)")
    if model.ir_version < MIN_IR_VERSION:
        return MatchResult.fail(f"the model's IR version {model.ir_version} has no functions "
                                f"for {kiln_ops.DOMAIN}::{name} (they came with version 8)")
    if not kiln_ops.available(model, name):
        op = kiln_ops.get(name)
        if model.opset < op.min_opset:
            return MatchResult.fail(f"{kiln_ops.DOMAIN}::{name} needs ai.onnx opset "
                                    f"{op.min_opset}; the model imports opset {model.opset}")
        return MatchResult.fail(f"the model imports {kiln_ops.DOMAIN} version "
                                f"{model.opset_imports.get(kiln_ops.DOMAIN)}; kiln defines "
                                f"version {kiln_ops.VERSION}")
    return MatchResult.ok()


class KilnOpsRuleSetPass(RuleSetPass):
    """A rule-set pass whose rules may emit the ``ai.kiln`` ops named in ``kiln_ops``; the
    model then carries their functions (so ONNX Runtime runs them) and imports the domain."""

    kiln_ops: ClassVar[tuple[str, ...]]

    def call(self, model: Model) -> PassResult:
        result = super().call(model)
        if result.changed:
            called = {n.op_type for n in model.graph.all_nodes()
                      if n.domain == kiln_ops.DOMAIN}
            for name in self.kiln_ops:
                if name in called:
                    kiln_ops.use(model, name)
        return result
