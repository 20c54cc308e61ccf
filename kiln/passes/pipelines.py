"""Named pipelines: the pass lists ``kiln.optimize(pipeline=NAME)`` and ``kiln optimize
--pipeline NAME`` run. A pipeline is data: a pipeline string, the same syntax the CLI,
the API, the benchmarks and the tests use.

- ``default``: the clean-up passes, which keep float semantics. Shapes first (folding and
  no-op removal use them), then simplifications, then dead code (what the others left
  unused), then a sort.
- ``none``: no pass.
"""

from __future__ import annotations

from kiln.errors import KilnError
from kiln.passes._base import Pass
from kiln.passes._pipeline import parse_pipeline

PIPELINES: dict[str, str] = {
    "default": (
        "infer-shapes,fold-constants,eliminate-no-ops,cse,dedupe-initializers,"
        "eliminate-dead-code,topological-sort"
    ),
    "none": "",
}


def pipeline_string(name: str) -> str:
    """The pipeline string of the named pipeline.

    Raises:
        KilnError: no pipeline is named ``name``; the message lists them.
    """
    try:
        return PIPELINES[name]
    except KeyError:
        raise KilnError(
            f"unknown pipeline {name!r}; pipelines: {', '.join(available_pipelines())}"
        ) from None


def get_pipeline(name: str) -> list[Pass]:
    """New instances of the passes of the named pipeline.

    Raises:
        KilnError: no pipeline is named ``name``; the message lists them.
    """
    return parse_pipeline(pipeline_string(name))


def available_pipelines() -> list[str]:
    """Names of the named pipelines."""
    return sorted(PIPELINES)
