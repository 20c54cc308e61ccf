"""Named pipelines: the pass lists ``kiln.optimize(pipeline=NAME)`` and ``kiln optimize
--pipeline NAME`` run. A pipeline is data: a pipeline string, the same syntax the CLI,
the API, the benchmarks and the tests use.

- ``default``: clean-up and fusion, keeping float semantics. Shapes first (folding,
  no-op removal and the fusion checks use them), constants lifted and folded, no-ops and
  common subexpressions removed; then the fusions: BatchNorm and constant Mul/Add into
  the op before, Pad into Conv/pools, linear re-parameterization, GELU and LayerNorm /
  RMSNorm decompositions into one op, attention into ``ai.kiln::Attention``, layout
  chains (after attention, whose pattern reads the Transposes), MatMul+Add into Gemm;
  then shared initializers, dead code (what the others left unused) and a sort. The
  manager iterates the list to a fixed point.
- ``backend``: ``default``, then activation epilogues on Conv/Gemm as ``ai.kiln`` ops,
  for backends with fused kernels (the TVM backend, kiln's kernels); ONNX Runtime runs
  their function bodies.
- ``none``: no pass.
"""

from __future__ import annotations

from kiln.errors import KilnError
from kiln.passes._base import Pass
from kiln.passes._pipeline import parse_pipeline

PIPELINES: dict[str, str] = {
    "default": (
        "infer-shapes,lift-constants,fold-constants,eliminate-no-ops,cse,"
        "fuse-batchnorm,fuse-conv-mul-add,fuse-pad,reparameterize,fuse-gelu,"
        "fuse-normalization,fuse-attention,fuse-layout,fuse-matmul-add,"
        "dedupe-initializers,eliminate-dead-code,topological-sort"
    ),
    "none": "",
}
PIPELINES["backend"] = PIPELINES["default"].replace(
    ",dedupe-initializers", ",fuse-epilogues,dedupe-initializers")


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
