"""Matching a pattern against a graph, anchored at a node; the result says why it failed."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from kiln.ir import Node, Value
from kiln.passes.rewrite._pattern import PatternNode, PatternVar


class MatchResult:
    """A match (bound values and nodes) or the reason there is none.

    Truthy when the match succeeded. Check functions return ``MatchResult.ok(**extra)``
    (``extra`` is passed on to the replacement), ``MatchResult.fail(reason)``, or a bool.
    """

    __slots__ = ("reason", "values", "nodes", "extra")

    def __init__(self, reason: str = "") -> None:
        self.reason = reason
        self.values: dict[str, Value | None] = {}
        self.nodes: dict[str, Node] = {}
        self.extra: dict[str, Any] = {}

    @classmethod
    def ok(cls, **extra: Any) -> MatchResult:
        """A success, carrying extra keyword arguments for the replacement."""
        result = cls()
        result.extra = extra
        return result

    @classmethod
    def fail(cls, reason: str) -> MatchResult:
        """A failure that says why."""
        return cls(reason or "failed")

    def __bool__(self) -> bool:
        return not self.reason

    def __getitem__(self, name: str) -> Any:
        if name in self.values:
            return self.values[name]
        return self.nodes[name]

    def __repr__(self) -> str:
        return f"MatchResult.fail({self.reason!r})" if self.reason else "MatchResult.ok()"


class Match:
    """A successful structural match: bindings, matched nodes (anchor last)."""

    def __init__(self, values: dict[str, Value | None], bound: dict[str, Node],
                 matched: list[Node]) -> None:
        self.values = values
        self.nodes = bound
        self.matched = matched

    def __getitem__(self, name: str) -> Any:
        if name in self.values:
            return self.values[name]
        return self.nodes[name]

    @property
    def anchor(self) -> Node:
        return self.matched[-1]


State = tuple[dict[str, Value | None], dict[str, Node], list[Node]]


def _describe(value: Value | None) -> str:
    if value is None:
        return "a missing input"
    return f"%{value.name}" if value.name else "an unnamed value"


# Why a match failed, as a function that writes the message: most attempts fail and
# nobody reads why, so messages are formatted only when asked for (explain, match_at).
Failures = list[Callable[[], str]]


def _match_value(pattern: PatternNode | PatternVar, value: Value | None, state: State,
                 failures: Failures) -> Iterator[State]:
    """Every way ``value`` matches ``pattern`` from ``state``; why not goes to ``failures``."""
    values, bound, matched = state
    if isinstance(pattern, PatternVar):
        if pattern.name in values and values[pattern.name] is not value:
            other = values[pattern.name]
            failures.append(lambda: f"{pattern} is bound to {_describe(other)} and "
                                    f"also to {_describe(value)}")
            return
        yield {**values, pattern.name: value}, bound, matched
        return
    producer = value.producer() if value is not None else None
    if producer is None:
        failures.append(lambda: f"{pattern.op_type} expected, but {_describe(value)} has "
                                "no producer")
        return
    yield from _match_node(pattern, producer, state, failures)


def _match_node(pattern: PatternNode, node: Node, state: State,
                failures: Failures) -> Iterator[State]:
    """Every way ``node`` matches ``pattern``: a commutative op in both operand orders, each
    with every way its operands match (so a variable bound in one order is unbound again
    when that order fails further up)."""
    reason = _node_mismatch(pattern, node, state[2])
    if reason is not None:
        failures.append(reason)
        return
    values, bound, matched = state
    state = values, ({**bound, pattern.bind: node} if pattern.bind else bound), matched
    orders = [pattern.inputs]
    if pattern.commutative:
        orders.append(pattern.inputs[::-1])
    for order in orders:
        for values, bound, matched in _match_inputs(order, node.inputs, state, failures):
            yield values, bound, [*matched, node]


def _match_inputs(patterns: tuple[PatternNode | PatternVar, ...],
                  inputs: tuple[Value | None, ...], state: State,
                  failures: Failures) -> Iterator[State]:
    if not patterns:
        yield state
        return
    for after_first in _match_value(patterns[0], inputs[0], state, failures):
        yield from _match_inputs(patterns[1:], inputs[1:], after_first, failures)


def _node_mismatch(pattern: PatternNode, node: Node,
                   matched: list[Node]) -> Callable[[], str] | None:
    """Why ``node`` itself (not its inputs) does not match ``pattern``, or None."""
    if node.op_type != pattern.op_type or node.domain != pattern.domain:
        return lambda: f"{node.label()}: expected {pattern.op_type}, found {node.qualified_op}"
    for name, want in pattern.attributes.items():
        if node.attr(name) != want:
            return lambda: (f"{node.label()}: attribute {name}={node.attr(name)!r}, pattern "
                            f"wants {want!r}")
    count, want_count = len(node.inputs), len(pattern.inputs)
    if count < want_count or (count > want_count and not pattern.allow_other_inputs):
        return lambda: f"{node.label()}: has {count} inputs, pattern has {want_count}"
    if any(n is node for n in matched):
        return lambda: f"{node.label()}: matched twice"
    return None


def _check_uses(match: Match) -> str:
    """Why the matched nodes other than the anchor may not be removed, or ""."""
    inside = {id(n) for n in match.matched}
    for node in match.matched[:-1]:
        for out in node.outputs:
            if out.is_graph_output():
                return f"{_describe(out)} (of {node.label()}) is a graph output"
            for user, _ in out.uses():
                if id(user) not in inside:
                    return f"{_describe(out)} (of {node.label()}) is also read by {user.label()}"
    anchor = match.anchor
    for out in anchor.outputs[1:]:
        if out.uses() or out.is_graph_output():
            return f"output {_describe(out)} of {anchor.label()} is read"
    return ""


def match_at(pattern: PatternNode, node: Node, *, allow_shared: bool = False) -> Match | str:
    """Match ``pattern`` with its root at ``node``: the match, or why it failed."""
    failures: Failures = []
    found = next(_match_node(pattern, node, ({}, {}, []), failures), None)
    if found is None:
        return failures[0]()
    match = Match(*found)
    if not allow_shared:
        reason = _check_uses(match)
        if reason:
            return reason
    return match
