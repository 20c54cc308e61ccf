"""``fuse-attention``: scaled dot-product attention
``MatMul(Softmax(MatMul(Q, K^T) * scale + mask, axis=-1), V)`` becomes one
``ai.kiln::Attention`` node.

The op mirrors the 4-D form of ONNX ``Attention`` (opset 23): inputs ``Q [B,H,Sq,D]``,
``K [B,H,Sk,D]``, ``V [B,H,Sk,Dv]`` and ``mask`` (additive, broadcastable to
``[B,H,Sq,Sk]``), attribute ``scale``, output ``Y [B,H,Sq,Dv]``, computed as
``Softmax(Q @ K^T * scale + mask, axis=-1) @ V``. Where it differs from ONNX Attention:

- ``mask`` is required and additive. A model-local function cannot test whether an
  optional input is present (ONNX Runtime and onnx.reference both reject a call that leaves
  out an input its body reads), so the pass gives a scalar 0 where the attention had no
  mask, and turns a boolean mask into an additive one with ``Where(mask, 0, -inf)``.
- ``scale`` is required: ONNX's default ``1/sqrt(D)`` needs ``D``, which a function
  attribute cannot read.
- No causal flag, soft-cap, KV cache, softmax precision or grouped-query heads (Q, K and V
  batch dimensions broadcast as MatMul's do).

The body needs CastLike (opset 15) to bring ``scale`` to the input type, so models older
than opset 15 are left alone.

Rules (group ``fuse-attention``):

- ``fuse-sdpa``, anchored at the MatMul with ``V``, one alternative per form exporters
  write: scale none, or ``Mul``/``Div`` by a constant scalar after the QK MatMul; mask none,
  ``Add(scores, mask)``, or a boolean mask ``Where(mask, scores, -inf)`` /
  ``Where(mask, -inf, scores)`` (only ``-inf`` as the fill: with a finite fill a fully
  masked row would differ); Softmax over axis -1 (or 3); Q, K^T and V known to be 4-D.
  The QK MatMul reads ``K^T``, and the op wants ``K``: the rule gives the op
  ``Transpose(K^T, perm=[0,1,3,2])`` rather than refusing, and the rules below remove that
  Transpose wherever ``K^T`` was itself made by transposing.
- ``attention-merge-k-transpose``: a Transpose before that Transpose merges with it, and
  both disappear when the first was the textbook ``K.transpose(-1, -2)``.
- ``attention-sdpa-k-transpose``: likewise torch's SDPA export of ``K^T``,
  ``Reshape(Transpose(Reshape(K, [-1,Sk,D]), [0,2,1]), [B,H,D,Sk])`` (static shapes).
- ``attention-fold-scale``: a constant scalar ``Mul``/``Div`` on Q, K or K^T folds into
  ``scale`` (torch's SDPA export scales Q and K^T by ``sqrt(scale)`` each).

Left alone: torch's SDPA export with a boolean mask, whose ``Where(IsNaN(P), 0, P)`` after
the Softmax has no counterpart in the op; any match whose intermediate values have other
readers (then the ops stay, or a scaling stays outside the Attention); function bodies.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from kiln.ir import Node, Value, kiln_ops
from kiln.passes._base import register_pass
from kiln.passes.cleanup._util import const_array, static_shape
from kiln.passes.fusion._kiln_op import KilnOpsRuleSetPass, can_emit
from kiln.passes.fusion._util import FLOAT_TYPES
from kiln.passes.rewrite import (
    Match,
    MatchResult,
    ReplacementBuilder,
    Rule,
    RuleSet,
    register_rules,
)

DOMAIN = kiln_ops.DOMAIN
SWAP_LAST = [0, 1, 3, 2]

ATTENTION = kiln_ops.define("Attention", """
    Attention <scale> (Q, K, V, mask) => (Y) {
        scale_f = Constant <value_float: float = @scale> ()
        s = CastLike(scale_f, Q)
        Kt = Transpose <perm = [0, 1, 3, 2]> (K)
        qk = MatMul(Q, Kt)
        scores = Mul(qk, s)
        masked = Add(scores, mask)
        P = Softmax <axis = -1> (masked)
        Y = MatMul(P, V)
    }
""", doc="Scaled dot-product attention Softmax(Q @ K^T * scale + mask, axis=-1) @ V over "
         "4-D Q [B,H,Sq,D], K [B,H,Sk,D], V [B,H,Sk,Dv] and an additive mask broadcastable "
         "to [B,H,Sq,Sk]; output [B,H,Sq,Dv].", min_opset=15)


# -- helpers ---------------------------------------------------------------------------------

def _rank(value: Value | None) -> int | None:
    shape = value.shape if value is not None else None
    return None if shape is None else shape.rank


def _scalar(value: Value | None, what: str) -> float | MatchResult:
    """The value of a constant float scalar (any shape of one element, rank <= 4)."""
    data = const_array(value)
    if data is None:
        return MatchResult.fail(f"{what} is not constant")
    if data.dtype.type not in FLOAT_TYPES:
        return MatchResult.fail(f"{what} is {data.dtype}, not a float type")
    if data.size != 1 or data.ndim > 4:
        return MatchResult.fail(f"{what} has shape {list(data.shape)}, not a scalar")
    return float(data.reshape(-1)[0])


def _perm(node: Node) -> list[int] | None:
    perm = node.attr("perm")
    return None if perm is None else list(perm)


def _reshaped(shape: tuple[int, ...], target: np.ndarray | None, allowzero: int) -> list | None:
    """The static output shape of ``Reshape(x of shape, target)``, or None."""
    if target is None or target.ndim != 1:
        return None
    dims = [shape[i] if d == 0 and not allowzero and i < len(shape) else int(d)
            for i, d in enumerate(target.tolist())]
    if dims.count(-1) == 1:
        known = int(np.prod([d for d in dims if d != -1]))
        if known == 0 or int(np.prod(shape)) % known:
            return None
        dims[dims.index(-1)] = int(np.prod(shape)) // known
    return dims if int(np.prod(dims)) == int(np.prod(shape)) else None


def _f32(x: float) -> float:
    """``x`` rounded to float32, as an ONNX float attribute holds it."""
    return float(np.float32(x))


def _keep_name(op: ReplacementBuilder, attn: Node) -> None:
    """Give the Attention just built the name of the one it replaces."""
    op.nodes[-1].name = attn.name


# -- fusing the textbook pattern -------------------------------------------------------------

def _core_pattern(scale_op: str, mask_form: str) -> Callable[..., Any]:
    """``MatMul(Softmax(scores), V)`` with ``scores`` scaled by ``scale_op`` ("" for none)
    and masked as ``mask_form`` says ("", "add", "where" or "where-not")."""
    def pattern(op, q, kt, v, s, mask, fill):
        scores = op.MatMul(q, kt)
        if scale_op:
            scores = getattr(op, scale_op)(scores, s, _bind="scaling")
        if mask_form == "add":
            scores = op.Add(scores, mask, _bind="masking")
        elif mask_form == "where":
            scores = op.Where(mask, scores, fill, _bind="masking")
        elif mask_form == "where-not":
            scores = op.Where(mask, fill, scores, _bind="masking")
        return op.MatMul(op.Softmax(scores, _bind="softmax"), v)

    return pattern


def _factor(value: Value | None, op_type: str, what: str) -> float | MatchResult:
    """What multiplying (``op_type`` Mul) or dividing (Div) by the constant ``value``
    multiplies by, when it is a finite nonzero (for Div) scalar; else why not."""
    c = _scalar(value, what)
    if isinstance(c, MatchResult):
        return c
    if not np.isfinite(c) or (op_type == "Div" and c == 0):
        return MatchResult.fail(f"{what} is {c:g}")
    return c if op_type == "Mul" else 1.0 / c


def _scale_of(m: Match) -> float | MatchResult:
    """The factor the scores are scaled by after the QK MatMul (1 without a Mul/Div)."""
    scaling = m.nodes.get("scaling")
    if scaling is None:
        return 1.0
    return _factor(m["s"], scaling.op_type, "the scale")


def _mask_form(m: Match) -> str | MatchResult:
    """"add", "where" (``Where(mask, scores, -inf)``), "where-not" (``Where(mask, -inf,
    scores)``) or "" (no mask); or why the mask does not fit the op."""
    masking = m.nodes.get("masking")
    if masking is None:
        return ""
    rank = _rank(m["mask"])
    if rank is None or rank > 4:
        return MatchResult.fail(f"the mask's rank is {'unknown' if rank is None else rank}; "
                                "it must be known and at most 4")
    if masking.op_type == "Add":
        if m["mask"].dtype != m["q"].dtype:
            return MatchResult.fail(f"the mask is {m['mask'].dtype}, Q is {m['q'].dtype}")
        return "add"
    fill = _scalar(m["fill"], "the Where fill value")
    if isinstance(fill, MatchResult):
        return fill
    if fill != -np.inf:
        return MatchResult.fail(f"the Where fill value is {fill:g}, not -inf (with a finite "
                                "fill a fully masked row would differ)")
    return "where" if masking.inputs[2] is m["fill"] else "where-not"


def _core_check(m: Match) -> MatchResult:
    emit = can_emit(m, ATTENTION.name)
    if not emit:
        return emit
    for name, what in (("q", "Q"), ("kt", "K^T"), ("v", "V")):
        rank = _rank(m[name])
        if rank is None:
            return MatchResult.fail(f"the rank of {what} is unknown")
        if rank != 4:
            return MatchResult.fail(f"{what} is {rank}-D, not 4-D")
    dtype = m["q"].dtype
    if dtype is None or dtype.numpy.type not in FLOAT_TYPES:
        return MatchResult.fail(f"Q is {dtype or 'of unknown type'}, not float")
    axis = m["softmax"].attr("axis", -1)
    if axis not in (-1, 3):
        return MatchResult.fail(f"Softmax is over axis {axis}, not the last")
    scale = _scale_of(m)
    if isinstance(scale, MatchResult):
        return scale
    mask_form = _mask_form(m)
    if isinstance(mask_form, MatchResult):
        return mask_form
    return MatchResult.ok(scale=_f32(scale), mask_form=mask_form)


def _core_replacement(op, q, kt, v, scale, mask_form, mask=None, fill=None, **_):
    zero = np.zeros((), q.dtype.numpy)
    if mask_form == "add":
        additive = mask
    elif mask_form == "where":
        additive = op.Where(mask, op.initializer(zero, "attention_mask_zero"), fill)
    elif mask_form == "where-not":
        additive = op.Where(mask, fill, op.initializer(zero, "attention_mask_zero"))
    else:
        additive = op.initializer(zero, "attention_no_mask")
    k = op.Transpose(kt, perm=SWAP_LAST)
    return op.Attention(q, k, v, additive, _domain=DOMAIN, scale=scale)


# -- tidying the inputs of an Attention ------------------------------------------------------

def _attention_check(m: Match) -> MatchResult:
    emit = can_emit(m, ATTENTION.name)
    if not emit:
        return emit
    if not isinstance(m["attn"].attr("scale"), float):
        return MatchResult.fail("the Attention has no float scale attribute")
    return MatchResult.ok()


def _fold_scale_pattern(where: str, scale_op: str) -> Callable[..., Any]:
    """An Attention whose Q (``where="q"``), K ("k") or K^T ("kt", under the Transpose
    that makes K of it) is ``x`` times or over ``c``."""
    def pattern(op, x, c, q, k, v, mask):
        scaled = getattr(op, scale_op)(x, c, _bind="scaling")
        if where == "q":
            q = scaled
        elif where == "k":
            k = scaled
        else:
            k = op.Transpose(scaled, _bind="swap")
        return op.Attention(q, k, v, mask, _domain=DOMAIN, _bind="attn")

    return pattern


def _fold_scale_check(m: Match) -> MatchResult:
    verdict = _attention_check(m)
    if not verdict:
        return verdict
    swap = m.nodes.get("swap")
    if swap is not None and _perm(swap) != SWAP_LAST:
        return MatchResult.fail(f"the Transpose before K has perm {_perm(swap)}, not "
                                f"{SWAP_LAST}")
    op_type = m["scaling"].op_type
    x, c = m["x"], m["c"]
    if op_type == "Mul" and const_array(c) is None:
        x, c = c, x  # Mul(c, x)
    factor = _factor(c, op_type, f"the {op_type} operand")
    if isinstance(factor, MatchResult):
        return factor
    if const_array(x) is not None:
        return MatchResult.fail(f"both {op_type} operands are constant")
    return MatchResult.ok(x=x, new_scale=_f32(m["attn"].attr("scale") * factor))


def _fold_scale_replacement(op, x, v, mask, attn, new_scale, q=None, k=None, swap=None, **_):
    if k is None and swap is not None:  # the scaled value is K^T
        k = op.Transpose(x, perm=SWAP_LAST)
    elif k is None:
        k = x
    else:
        q = x
    out = op.Attention(q, k, v, mask, _domain=DOMAIN, scale=new_scale)
    _keep_name(op, attn)
    return out


def _merge_transpose_pattern(op, x, q, v, mask):
    k = op.Transpose(op.Transpose(x, _bind="inner"), _bind="swap")
    return op.Attention(q, k, v, mask, _domain=DOMAIN, _bind="attn")


def _merge_transpose_check(m: Match) -> MatchResult:
    verdict = _attention_check(m)
    if not verdict:
        return verdict
    inner, swap = _perm(m["inner"]), _perm(m["swap"])
    if swap != SWAP_LAST:
        return MatchResult.fail(f"the Transpose before K has perm {swap}, not {SWAP_LAST}")
    if inner is None or sorted(inner) != [0, 1, 2, 3]:
        return MatchResult.fail(f"the Transpose before that has perm {inner}, not a 4-D one")
    return MatchResult.ok(perm=[inner[i] for i in SWAP_LAST])


def _merge_transpose_replacement(op, x, q, v, mask, attn, perm, **_):
    k = x if perm == [0, 1, 2, 3] else op.Transpose(x, perm=perm)
    out = op.Attention(q, k, v, mask, _domain=DOMAIN, scale=attn.attr("scale"))
    _keep_name(op, attn)
    return out


def _sdpa_key_pattern(op, k, shape3, shape4, q, v, mask):
    flat = op.Reshape(k, shape3, _bind="flatten")
    kt = op.Reshape(op.Transpose(flat, _bind="swap3"), shape4, _bind="unflatten")
    return op.Attention(q, op.Transpose(kt, _bind="swap"), v, mask, _domain=DOMAIN,
                        _bind="attn")


def _sdpa_key_check(m: Match) -> MatchResult:
    """``Reshape(Transpose(Reshape(K, [-1,Sk,D]), [0,2,1]), [B,H,D,Sk])`` is ``K^T``."""
    verdict = _attention_check(m)
    if not verdict:
        return verdict
    if _perm(m["swap"]) != SWAP_LAST or _perm(m["swap3"]) != [0, 2, 1]:
        return MatchResult.fail("the Transposes do not swap the last two axes")
    shape = static_shape(m["k"])
    if shape is None or len(shape) != 4:
        return MatchResult.fail("the shape of K is not known to be static and 4-D")
    b, h, sk, d = shape
    flat = _reshaped(shape, const_array(m["shape3"]), m["flatten"].attr("allowzero", 0))
    if flat != [b * h, sk, d]:
        return MatchResult.fail(f"K is reshaped to {flat}, not [{b * h}, {sk}, {d}]")
    back = _reshaped((b * h, d, sk), const_array(m["shape4"]),
                     m["unflatten"].attr("allowzero", 0))
    if back != [b, h, d, sk]:
        return MatchResult.fail(f"K^T is reshaped to {back}, not [{b}, {h}, {d}, {sk}]")
    return MatchResult.ok()


def _sdpa_key_replacement(op, k, q, v, mask, attn, **_):
    out = op.Attention(q, k, v, mask, _domain=DOMAIN, scale=attn.attr("scale"))
    _keep_name(op, attn)
    return out


RULES = register_rules([
    Rule("fuse-sdpa",
         [_core_pattern(scale_op, mask_form) for scale_op in ("Mul", "Div", "")
          for mask_form in ("add", "where", "where-not", "")],
         _core_replacement, _core_check),
    Rule("attention-fold-scale",
         [_fold_scale_pattern(where, scale_op) for where in ("q", "k", "kt")
          for scale_op in ("Mul", "Div")],
         _fold_scale_replacement, _fold_scale_check),
    Rule("attention-merge-k-transpose", _merge_transpose_pattern, _merge_transpose_replacement,
         _merge_transpose_check),
    Rule("attention-sdpa-k-transpose", _sdpa_key_pattern, _sdpa_key_replacement,
         _sdpa_key_check),
], group="fuse-attention")


@register_pass
class FuseAttention(KilnOpsRuleSetPass):
    """Scaled dot-product attention -> one ``ai.kiln::Attention`` node."""

    name = "fuse-attention"
    rules = RuleSet(RULES)
    kiln_ops = (ATTENTION.name,)
