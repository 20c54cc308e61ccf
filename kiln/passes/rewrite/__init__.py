"""The pattern rewriter: patterns and replacements in builder syntax, checks that say why
a match failed, rule sets applied by one pass, and a tracer (:func:`explain`)."""

from kiln.passes.rewrite._match import Match, MatchResult, match_at
from kiln.passes.rewrite._pattern import (
    COMMUTATIVE_OPS,
    PatternBuilder,
    PatternNode,
    PatternVar,
    build_pattern,
)
from kiln.passes.rewrite._rule import (
    ReplacementBuilder,
    Rule,
    RuleSet,
    current_model,
    explain,
    get_rules,
    register_rules,
)

__all__ = [
    "COMMUTATIVE_OPS",
    "Match",
    "MatchResult",
    "PatternBuilder",
    "PatternNode",
    "PatternVar",
    "ReplacementBuilder",
    "Rule",
    "RuleSet",
    "build_pattern",
    "current_model",
    "explain",
    "get_rules",
    "match_at",
    "register_rules",
]
