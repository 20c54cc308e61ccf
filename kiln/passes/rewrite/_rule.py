"""Rules (pattern, check, replacement), rule sets, the pass that applies them, the tracer."""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import itertools
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from kiln.errors import KilnError
from kiln.ir import Attr, Graph, Model, Node, Tensor, Value
from kiln.passes.cleanup._util import all_graphs, replace_value
from kiln.passes.rewrite._match import Match, MatchResult, match_at
from kiln.passes.rewrite._pattern import PatternNode, build_pattern

CheckFunction = Callable[[Match], "MatchResult | bool"]

_MODEL: contextvars.ContextVar[Model | None] = contextvars.ContextVar("kiln_rewrite_model",
                                                                     default=None)


def current_model() -> Model | None:
    """The model that :meth:`RuleSet.apply` or :func:`explain` is working on, for checks
    that depend on it (its opset, its functions); None outside them."""
    return _MODEL.get()


@contextlib.contextmanager
def _rewriting(model: Model) -> Iterator[None]:
    token = _MODEL.set(model)
    try:
        yield
    finally:
        _MODEL.reset(token)


def graph_names(graph: Graph) -> set[str]:
    """The names of ``graph``'s values (its subgraphs' included) and initializers."""
    return {v.name for v in graph.all_values()} | set(graph.initializers)


class ReplacementBuilder:
    """The ``op`` of a replacement function: ``op.Gemm(x, w, b, transB=0)`` makes a node.

    ``_domain`` picks the domain, ``_outputs`` the number of outputs (a tuple comes back
    when it is not 1); other keywords are attributes (an :class:`Attr` is copied as is).
    New nodes are named after the anchor node (``<anchor>_<op>``) when it has a name.
    ``op.initializer(array, name)`` makes a new initializer of the graph.
    """

    def __init__(self, graph: Graph, hint: str, value_hint: str,
                 taken: set[str] | None = None) -> None:
        self.graph = graph
        self.nodes: list[Node] = []
        self._hint = hint
        self._value_hint = value_hint or "rewritten"
        # Names in use; a rule set passes one set per graph for all its rewrites (building
        # it per rewrite would make a pass quadratic in the graph's size).
        self._taken = taken if taken is not None else graph_names(graph)

    def _fresh(self, base: str) -> str:
        for i in itertools.count():
            name = base if i == 0 else f"{base}_{i}"
            if name not in self._taken:
                self._taken.add(name)
                return name
        raise AssertionError("unreachable")

    def initializer(self, array: np.ndarray, name: str) -> Value:
        """A new initializer holding ``array``, named ``name`` (made unique)."""
        name = self._fresh(name)
        value = Value(name, const_value=Tensor(np.array(array, order="C"), name=name))
        return self.graph.register_initializer(value)

    def __getattr__(self, op_type: str) -> Callable[..., Any]:
        if op_type.startswith("_"):
            raise AttributeError(op_type)

        def make(*inputs: Value | None, _domain: str = "", _outputs: int = 1,
                 **attributes: Any) -> Any:
            attrs = [Attr(k, a.type, a.value) if isinstance(a, Attr) else Attr.infer(k, a)
                     for k, a in attributes.items()]
            name = self._fresh(f"{self._hint}_{op_type}") if self._hint else ""
            outputs = [Value(self._fresh(f"{self._value_hint}_{op_type.lower()}"))
                       for _ in range(_outputs)]
            node = Node(_domain, op_type, inputs, attrs, outputs=outputs, name=name)
            self.nodes.append(node)
            return node.outputs[0] if _outputs == 1 else node.outputs

        return make


@dataclasses.dataclass
class Rule:
    """A rewrite: where ``pattern`` matches and ``check`` agrees, put ``replacement``.

    Args:
        name: kebab-case name (used by stats and ``kiln optimize --explain``).
        pattern: ``f(op, x, ...)`` returning the pattern in builder syntax, or a list of
            them: alternatives (the ways exporters write one computation), tried in order.
        replacement: ``f(op, **bindings)`` returning the new value for the anchor's output;
            bindings are the pattern's inputs, the bound nodes and the check's extras.
        check: ``f(match)`` answering a :class:`MatchResult` (or a bool).
        allow_shared: Let intermediate values of the match have other uses.
    """

    name: str
    pattern: Callable[..., PatternNode] | list[Callable[..., PatternNode]]
    replacement: Callable[..., Value]
    check: CheckFunction | None = None
    allow_shared: bool = False
    root: PatternNode = dataclasses.field(init=False, repr=False)
    roots: list[PatternNode] = dataclasses.field(init=False, repr=False)

    def __post_init__(self) -> None:
        patterns = self.pattern if isinstance(self.pattern, list) else [self.pattern]
        self.roots = [build_pattern(p)[0] for p in patterns]
        self.root = self.roots[0]
        # Per root: its op and the ops that must produce some of the anchor's inputs, a
        # cheap test that rejects most nodes before the matcher runs.
        self._needs = [((r.domain, r.op_type),
                        frozenset((i.domain, i.op_type) for i in r.inputs
                                  if isinstance(i, PatternNode)))
                       for r in self.roots]

    def could_match(self, node: Node) -> bool:
        """False when no pattern can match at ``node`` (wrong op, or an input that a
        pattern wants produced by some op is not); True means "try it"."""
        op = (node.domain, node.op_type)
        producers = None
        for root_op, needs in self._needs:
            if root_op != op:
                continue
            if not needs:
                return True
            if producers is None:
                producers = {(p.domain, p.op_type) for v in node.inputs if v is not None
                             for p in (v.producer(),) if p is not None}
            if needs <= producers:
                return True
        return False

    def try_match(self, node: Node) -> Match | str:
        """The match of this rule at ``node``, or why it does not fire. With alternatives
        (those rooted at ``node``'s op), the reason is that of the first one whose structure
        matches, else of the first one."""
        roots = [r for r in self.roots if r.op_type == node.op_type and r.domain == node.domain]
        unmatched, rejected = "", ""
        for root in roots or self.roots[:1]:
            structure = match_at(root, node, allow_shared=True) if len(roots) > 1 else None
            if isinstance(structure, str):
                unmatched = unmatched or structure
                continue
            match = self._try_root(root, node)
            if isinstance(match, Match):
                return match
            rejected = rejected or match
        return rejected or unmatched

    def _try_root(self, root: PatternNode, node: Node) -> Match | str:
        match = match_at(root, node, allow_shared=self.allow_shared)
        if isinstance(match, str) or self.check is None:
            return match
        verdict = self.check(match)
        if not verdict:
            reason = verdict.reason if isinstance(verdict, MatchResult) else "check failed"
            return f"check: {reason}"
        if isinstance(verdict, MatchResult):
            match.values = {**match.values, **verdict.extra}
        return match

    def apply(self, match: Match, taken: set[str] | None = None) -> None:
        """Replace the matched nodes by this rule's replacement (``taken``: the names in use
        in the anchor's graph, kept up to date, when the caller tracks them)."""
        anchor = match.anchor
        graph = anchor.graph
        assert graph is not None
        old = anchor.outputs[0]
        old_name = old.name
        op = ReplacementBuilder(graph, anchor.name, old_name, taken)
        new = self.replacement(op, **match.values, **match.nodes)
        graph.insert_before(anchor, op.nodes)
        replace_value(old, new)
        inputs = {id(v): v for n in match.matched for v in n.inputs if v is not None}
        left = list(match.matched)  # nodes read by others outside the match stay
        while True:  # rounds: a node read twice in the match is unread only at the end
            dead = [n for n in left if not any(v.uses() or v.is_graph_output()
                                               for v in n.outputs)]
            if not dead:
                break
            graph.remove(dead)
            left = [n for n in left if n.graph is not None]
        if old_name and anchor.graph is None and any(new is v for n in op.nodes
                                                     for v in n.outputs):
            old.name, new.name = "", old_name  # the result keeps the anchor's name
        for value in inputs.values():
            unused = not value.uses() and not value.is_graph_output()
            if unused and value.is_initializer() and not value.is_graph_input():
                graph.remove_initializer(value.name)


class RuleSet:
    """Rules applied together: every node is tried against every rule until none fires."""

    def __init__(self, rules: list[Rule]) -> None:
        self.rules = list(rules)
        # (domain, op_type) -> the rules with a pattern rooted at that op, in order: a node
        # is tried only against rules that can anchor at it.
        self._by_op: dict[tuple[str, str], list[Rule]] = {}
        for rule in self.rules:
            for key in dict.fromkeys((r.domain, r.op_type) for r in rule.roots):
                self._by_op.setdefault(key, []).append(rule)

    def apply(self, model: Model, max_rounds: int = 100) -> Counter[str]:
        """Apply the rules to ``model`` in place; answer the fires per rule name."""
        with _rewriting(model):
            return self._apply(model, max_rounds)

    def _apply(self, model: Model, max_rounds: int) -> Counter[str]:
        stats: Counter[str] = Counter()
        names: dict[int, set[str]] = {}
        for _ in range(max_rounds):
            fired = False
            for graph in all_graphs(model):
                for node in graph:
                    if node.graph is not graph:
                        continue  # removed by an earlier rewrite
                    for rule in self._by_op.get((node.domain, node.op_type), ()):
                        if not rule.could_match(node):
                            continue
                        match = rule.try_match(node)
                        if isinstance(match, Match):
                            if id(graph) not in names:
                                names[id(graph)] = graph_names(graph)
                            rule.apply(match, names[id(graph)])
                            stats[rule.name] += 1
                            fired = True
                            break
            if not fired:
                return stats
        return stats


_RULES: dict[str, Rule] = {}
_GROUPS: dict[str, list[Rule]] = {}


def register_rules(rules: list[Rule], group: str = "") -> list[Rule]:
    """Make rules known by name to :func:`explain` (and, with ``group``, known together
    under that name, e.g. the pass that applies them); answers ``rules``."""
    for rule in rules:
        other = _RULES.get(rule.name)
        if other is not None and other is not rule:
            raise ValueError(f"two rules are named {rule.name!r}")
        _RULES[rule.name] = rule
    if group:
        _GROUPS[group] = list(rules)
    return rules


def get_rules(name: str) -> list[Rule]:
    """The registered rule named ``name``, or the rules of the group named ``name``."""
    from kiln.passes._base import _load_builtin_passes

    _load_builtin_passes()
    if name in _RULES:
        return [_RULES[name]]
    if name in _GROUPS:
        return _GROUPS[name]
    known = ", ".join(sorted({*_RULES, *_GROUPS}))
    raise KilnError(f"unknown rule {name!r}; known rules: {known}")


def explain(model: Model, rule: str | Rule) -> list[str]:
    """Say, for each node where a rule could be anchored, whether it fires and why not.

    Args:
        model: The model to look at (not changed).
        rule: A rule, or the name of a registered rule or group of rules.

    Returns:
        One line per rule and candidate anchor node (same op as the pattern's root).
    """
    rules = get_rules(rule) if isinstance(rule, str) else [rule]
    lines = []
    with _rewriting(model):
        for one in rules:
            lines.extend(_explain_rule(model, one))
    return lines


def _explain_rule(model: Model, rule: Rule) -> list[str]:
    lines = []
    for graph in all_graphs(model):
        for node in graph:
            if not any(node.op_type == r.op_type and node.domain == r.domain
                       for r in rule.roots):
                continue
            match = rule.try_match(node)
            verdict = "fires" if isinstance(match, Match) else f"does not fire: {match}"
            lines.append(f"{rule.name} at {node.label()}: {verdict}")
    if not lines:
        ops = "/".join(dict.fromkeys(r.op_type for r in rule.roots))
        lines.append(f"{rule.name}: no {ops} node to anchor at")
    return lines
