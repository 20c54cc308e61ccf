"""A pass that applies one rule set: the fusion passes are one subclass each."""

from __future__ import annotations

from typing import ClassVar

from kiln.ir import Model
from kiln.passes._base import Pass, PassResult
from kiln.passes.rewrite import RuleSet


class RuleSetPass(Pass):
    """Apply ``rules`` until none fires; stats count the fires per rule."""

    rules: ClassVar[RuleSet]

    def call(self, model: Model) -> PassResult:
        stats = self.rules.apply(model)
        return PassResult(model, bool(stats), stats)
