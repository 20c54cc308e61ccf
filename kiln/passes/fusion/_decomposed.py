"""Helpers of the fusion passes that find an op written out in smaller ops (GELU, LayerNorm,
RMSNorm): constants close to a known value and the fused op the model's opset can hold (the
standard op, else kiln's ``ai.kiln`` op)."""

from __future__ import annotations

import ml_dtypes
import numpy as np

from kiln.ir import DataType, Value, kiln_ops
from kiln.passes.cleanup._util import const_array
from kiln.passes.fusion._kiln_op import can_emit
from kiln.passes.rewrite import Match, MatchResult, current_model

# The element types of Gelu-20, LayerNormalization-17 and RMSNormalization-23.
FUSED_FLOAT_TYPES = frozenset({DataType.FLOAT16, DataType.BFLOAT16, DataType.FLOAT,
                               DataType.DOUBLE})


def near_constant(value: Value | None, want: float, what: str,
                  x: Value | None = None) -> float | MatchResult:
    """The value of the one-element float constant ``value`` when it is ``want`` within a
    relative 1e-4 (or the epsilon of its type, when coarser), else why not.

    With ``x``, the constant must not broadcast ``x`` to a higher rank: a scalar always
    passes, a ``[1]`` tensor only when ``x`` is known to have rank 1 or more.
    """
    data = one_element(value, what, x)
    if isinstance(data, MatchResult):
        return data
    got = float(data.astype(np.float64).reshape(()))
    rtol = max(1e-4, float(ml_dtypes.finfo(data.dtype).eps))
    if not abs(got - want) <= rtol * abs(want):
        return MatchResult.fail(f"{what} is {data.reshape(())[()]!s}, not {want:.8g}")
    return got


def one_element(value: Value | None, what: str, x: Value | None = None
                ) -> np.ndarray | MatchResult:
    """The data of ``value`` when it is a one-element constant of a fused float type (and
    does not raise the rank of ``x``, see :func:`near_constant`), else why not."""
    data = const_array(value)
    if data is None:
        return MatchResult.fail(f"{what} is not constant")
    if element_type(data.dtype) is None:
        return MatchResult.fail(f"{what} is {data.dtype}, not float16/bfloat16/float/double")
    if data.size != 1:
        return MatchResult.fail(f"{what} has shape {list(data.shape)}, not one element")
    if data.ndim and x is not None:
        rank = x.shape.rank if x.shape is not None else None
        if rank is None or rank < data.ndim:
            return MatchResult.fail(f"{what} has shape {list(data.shape)} and may raise the "
                                    "rank of its input, whose rank is "
                                    f"{'not known' if rank is None else rank}")
    return data


def exponent(value: Value | None, want: int) -> MatchResult:
    """Whether ``value`` is a one-element constant equal to ``want`` (a Pow exponent)."""
    data = const_array(value)
    if data is None or data.size != 1:
        return MatchResult.fail("the exponent is not a one-element constant")
    got = data.astype(np.float64).reshape(())
    if got != want:
        return MatchResult.fail(f"the exponent is {float(got):g}, not {want}")
    return MatchResult.ok()


def element_type(dtype: np.dtype) -> DataType | None:
    """The ONNX type of ``dtype`` when the fused ops take it, else None."""
    try:
        found = DataType.from_numpy(dtype)
    except TypeError:
        return None
    return found if found in FUSED_FLOAT_TYPES else None


def fused_op(m: Match, standard: str, since: int, kiln_name: str
             ) -> tuple[str, str] | MatchResult:
    """(domain, op_type) of the op that replaces the match: ``standard`` when the model's
    ai.onnx opset is ``since`` or newer, else the ``ai.kiln`` op ``kiln_name``; or why
    neither can be used."""
    model = current_model()
    if model is None:
        return MatchResult.fail("no model is being rewritten (use RuleSet.apply or explain)")
    if model.opset >= since:
        return "", standard
    emit = can_emit(m, kiln_name)
    if not emit:
        return MatchResult.fail(f"{standard} needs ai.onnx opset {since}, and {emit.reason}")
    return kiln_ops.DOMAIN, kiln_name
