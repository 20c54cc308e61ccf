"""Fusion passes: one rule set per file, applied by the pattern rewriter."""

from kiln.passes.fusion.batchnorm import FuseBatchNorm
from kiln.passes.fusion.conv_mul_add import FuseConvMulAdd
from kiln.passes.fusion.matmul_add import FuseMatMulAdd

__all__ = ["FuseBatchNorm", "FuseConvMulAdd", "FuseMatMulAdd"]
