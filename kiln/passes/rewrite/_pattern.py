"""Patterns written in builder syntax: ``op.Add(op.MatMul(x, w), b)``.

Calling the pattern function with a :class:`PatternBuilder` and one :class:`PatternVar` per
parameter records a tree of :class:`PatternNode`; its output is the anchor the matcher
starts from.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

COMMUTATIVE_OPS = frozenset({"Add", "Mul", "Max", "Min", "Sum", "And", "Or", "Xor", "Equal"})


@dataclasses.dataclass(frozen=True, eq=False)
class PatternVar:
    """A pattern input: binds to any value (the same value wherever it appears)."""

    name: str

    def __str__(self) -> str:
        return f"%{self.name}"


@dataclasses.dataclass(frozen=True, eq=False)
class PatternNode:
    """One op of a pattern.

    Attributes:
        op_type: The op to match.
        domain: Its domain ("" is the default ONNX domain).
        inputs: Patterns of its inputs, in order.
        attributes: Attributes that must have these values; others may have any value.
        bind: Name under which the matched node is bound, or "".
        allow_other_inputs: Match nodes with more inputs than the pattern lists.
    """

    op_type: str
    domain: str
    inputs: tuple[PatternNode | PatternVar, ...]
    attributes: dict[str, Any]
    bind: str = ""
    allow_other_inputs: bool = False

    @property
    def commutative(self) -> bool:
        return self.domain == "" and self.op_type in COMMUTATIVE_OPS and len(self.inputs) == 2

    def __str__(self) -> str:
        op = f"{self.domain}::{self.op_type}" if self.domain else self.op_type
        return f"{op}({', '.join(str(i) for i in self.inputs)})"


class PatternBuilder:
    """The ``op`` of a pattern function: ``op.Conv(x, w, _bind="conv")`` records a node.

    Keywords starting with ``_``: ``_domain``, ``_bind`` (name of the matched node in the
    match) and ``_allow_other_inputs``; other keywords are attributes that must match.
    """

    def __getattr__(self, op_type: str) -> Callable[..., PatternNode]:
        if op_type.startswith("_"):
            raise AttributeError(op_type)

        def make(*inputs: PatternNode | PatternVar, _domain: str = "", _bind: str = "",
                 _allow_other_inputs: bool = False, **attributes: Any) -> PatternNode:
            return PatternNode(op_type, _domain, tuple(inputs), attributes, _bind,
                               _allow_other_inputs)

        return make


def build_pattern(function: Callable[..., PatternNode]) -> tuple[PatternNode, list[PatternVar]]:
    """Call a pattern function ``f(op, x, y, ...)``; answer its root node and its inputs."""
    params = list(inspect.signature(function).parameters)[1:]
    variables = [PatternVar(p) for p in params]
    root = function(PatternBuilder(), *variables)
    if not isinstance(root, PatternNode):
        raise TypeError(f"pattern {function.__name__} must return an op, not {root!r}")
    return root, variables
