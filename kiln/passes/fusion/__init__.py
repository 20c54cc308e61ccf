"""Fusion passes: one rule set per file, applied by the pattern rewriter."""

from kiln.passes.fusion.attention import FuseAttention
from kiln.passes.fusion.batchnorm import FuseBatchNorm
from kiln.passes.fusion.conv_mul_add import FuseConvMulAdd
from kiln.passes.fusion.epilogue import FuseEpilogues
from kiln.passes.fusion.gelu import FuseGelu
from kiln.passes.fusion.layout import FuseLayout
from kiln.passes.fusion.matmul_add import FuseMatMulAdd
from kiln.passes.fusion.normalization import FuseNormalization
from kiln.passes.fusion.pad import FusePad
from kiln.passes.fusion.reparam import Reparameterize

__all__ = ["FuseAttention", "FuseBatchNorm", "FuseConvMulAdd", "FuseEpilogues", "FuseGelu",
           "FuseLayout", "FuseMatMulAdd", "FuseNormalization", "FusePad", "Reparameterize"]
