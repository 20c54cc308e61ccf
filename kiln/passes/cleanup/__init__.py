"""Clean-up passes: constant folding, dead code, common subexpressions, no-ops."""

from kiln.passes.cleanup import (  # noqa: F401  (importing a module registers its pass)
    cse,
    dedupe_initializers,
    eliminate_dead_code,
    eliminate_no_ops,
    fold_constants,
    infer_shapes,
    lift_constants,
    topological_sort,
)
