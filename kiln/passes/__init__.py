"""Passes: the pass contract, registry, pipelines and pass manager, and the passes."""

from kiln.passes._base import (
    NoOptions,
    Pass,
    PassResult,
    available_passes,
    get_pass,
    register_pass,
)
from kiln.passes._manager import OptimizeReport, PassManager, PassRun, optimize
from kiln.passes._pipeline import format_pipeline, parse_pipeline
from kiln.passes.pipelines import available_pipelines, get_pipeline

__all__ = [
    "NoOptions",
    "OptimizeReport",
    "Pass",
    "PassManager",
    "PassResult",
    "PassRun",
    "available_passes",
    "available_pipelines",
    "format_pipeline",
    "get_pass",
    "get_pipeline",
    "optimize",
    "parse_pipeline",
    "register_pass",
]
