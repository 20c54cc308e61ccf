"""``reparameterize``: linear re-parameterization (RepVGG, VanillaNet, ACNet). Linear ops
with constant weights that follow one another, or that read the same input and are summed,
merge into one op.

Chains (nothing between the two ops):

- ``merge-conv-pointwise``: a Conv followed by a pointwise Conv (1x1, stride 1, no pads)
  with the same group: ``W = W2 @ W1`` over channels, ``b = W2 b1 + b2``. Exact for any
  geometry of the first Conv, padding included (its border holds ``b1``, which the
  pointwise Conv maps as it maps every pixel).
- ``merge-pointwise-conv``: a pointwise Conv followed by a Conv with the same group:
  ``W = W2 * W1`` composed, ``b = b2 + sum_k W2 b1``. Refused when the second Conv pads and
  the first has a nonzero bias: its zero border would then stand where ``b1`` was.
- ``merge-{gemm,matmul}-{gemm,matmul}``: ``W = W1 @ W2``, ``b = b1 @ W2 + b2`` with
  ``alpha``, ``beta`` and ``transB`` applied (the first may have ``transA``, kept).

Ops merge only when the merged op costs no more multiply-adds per output than the ops it
replaces (a pointwise Conv before a strided Conv counts once per input pixel): a
bottleneck ``k -> m -> p`` with ``k*p > k*m + m*p`` stays as it is, and so do parallel
1x3 and 3x1 Convs (one 3x3 would cost more).

Parallel branches, ``Add(a, b)`` of two branches that read the same ``x``:

- ``merge-conv-branches``: two Convs; ``merge-conv-identity``: a Conv and ``x`` itself;
  ``merge-conv-batchnorm-branch``: a Conv and an inference ``BatchNormalization(x)``.
  The result is one Conv whose kernel holds both, the smaller kernel (or the identity,
  a 1 at the centre of channel ``i -> i``) placed where its taps fall in the larger. This
  needs the same strides, the same output size (``pad_begin + pad_end - dilation *
  (K - 1)`` per axis) and every tap of one kernel on a tap of the other; groups must
  match, or one Conv is dense (group 1) and the other's weight is made dense. The rules
  compose: a RepVGG block ``Conv3x3(x) + Conv1x1(x) + BN(x)`` merges in two fires.

Weights must be constant and of a float type; they are computed in float64 and cast back.
"""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np

from kiln.ir import Node, Value
from kiln.passes._base import register_pass
from kiln.passes.fusion._pass import RuleSetPass
from kiln.passes.fusion._util import float_const, optional_input
from kiln.passes.fusion.batchnorm import _bn_affine
from kiln.passes.rewrite import (
    Match,
    MatchResult,
    ReplacementBuilder,
    Rule,
    RuleSet,
    register_rules,
)

# -- convs: geometry and weights --------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Geometry:
    """Where a Conv reads: output ``o`` on an axis reads ``o * stride - begin + k * dilation``
    for ``k`` in ``range(kernel)``."""

    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    begins: tuple[int, ...]
    ends: tuple[int, ...]

    def size_offset(self, axis: int) -> int:
        """The output size on ``axis`` is ``(in + this - 1) // stride + 1``."""
        return self.begins[axis] + self.ends[axis] - self.dilations[axis] * (self.kernel[axis] - 1)

    def span(self, axis: int) -> int:
        return self.dilations[axis] * (self.kernel[axis] - 1) + 1

    @property
    def padded(self) -> bool:
        return any(self.begins) or any(self.ends)

    @property
    def pointwise(self) -> bool:
        """1x1, stride 1, no pads: each output pixel reads the same input pixel."""
        return set(self.kernel) == {1} and set(self.strides) == {1} and not self.padded


@dataclasses.dataclass
class _Conv:
    """A Conv's constant weight ``[M, C/group, *kernel]``, bias (float64 or None), group
    and geometry."""

    w: np.ndarray
    b: np.ndarray | None
    group: int
    geometry: _Geometry
    kernel_shape: bool = False  # whether the node states kernel_shape

    @property
    def out_channels(self) -> int:
        return self.w.shape[0]

    @property
    def in_channels(self) -> int:
        return self.w.shape[1] * self.group

    @property
    def cost(self) -> int:
        """Multiply-adds per output pixel."""
        return self.w.size


def _ints(node: Node, name: str, default: list[int], rank: int) -> tuple[int, ...] | str:
    values = node.attr(name)
    values = default if values is None else [int(v) for v in values]
    if len(values) != len(default):
        return f"{node.label()}: {name} has {len(values)} values for {rank} spatial axes"
    return tuple(values)


def _geometry(node: Node, w: np.ndarray) -> _Geometry | MatchResult:
    rank = w.ndim - 2
    auto_pad = node.attr("auto_pad", "NOTSET")
    if auto_pad not in ("NOTSET", "VALID"):
        return MatchResult.fail(f"{node.label()} has auto_pad={auto_pad}; its pads depend "
                                f"on the input size")
    kernel = tuple(w.shape[2:])
    stated = node.attr("kernel_shape")
    if stated is not None and tuple(stated) != kernel:
        return MatchResult.fail(f"{node.label()}: kernel_shape {list(stated)} is not the "
                                f"weight's {list(kernel)}")
    pads_default = [0] * (2 * rank)
    strides = _ints(node, "strides", [1] * rank, rank)
    dilations = _ints(node, "dilations", [1] * rank, rank)
    pads = _ints(node, "pads", pads_default, rank) if auto_pad == "NOTSET" else (0,) * 2 * rank
    if isinstance(strides, str) or isinstance(dilations, str) or isinstance(pads, str):
        return MatchResult.fail(next(g for g in (strides, dilations, pads) if isinstance(g, str)))
    return _Geometry(kernel, strides, dilations, pads[:rank], pads[rank:])


def _read_conv(node: Node, weight: Value | None, what: str) -> _Conv | MatchResult:
    """The weights and geometry of Conv ``node``, or why they are not usable."""
    w = float_const(weight, f"the {what} weight")
    if isinstance(w, MatchResult):
        return w
    group = int(node.attr("group", 1))
    if w.ndim < 3 or group < 1 or w.shape[0] % group:
        return MatchResult.fail(f"the {what} weight of shape {list(w.shape)} does not fit "
                                f"group={group}")
    b = optional_input(node, 2)
    bias = None if b is None else float_const(b, f"the {what} bias")
    if isinstance(bias, MatchResult):
        return bias
    if bias is not None and (bias.shape != (w.shape[0],) or bias.dtype != w.dtype):
        return MatchResult.fail(f"the {what} bias is {bias.dtype}{list(bias.shape)}, not "
                                f"{w.dtype}[{w.shape[0]}]")
    geometry = _geometry(node, w)
    if isinstance(geometry, MatchResult):
        return geometry
    return _Conv(w, None if bias is None else bias.astype(np.float64), group, geometry,
                 node.attr("kernel_shape") is not None)


def _read_chain(m: Match) -> tuple[_Conv, _Conv] | MatchResult:
    """Both Convs of a chain, checked to fit together."""
    first = _read_conv(m["conv1"], m["w1"], "first")
    if isinstance(first, MatchResult):
        return first
    second = _read_conv(m["conv2"], m["w2"], "second")
    if isinstance(second, MatchResult):
        return second
    if first.w.dtype != second.w.dtype:
        return MatchResult.fail(f"the weights are {first.w.dtype} and {second.w.dtype}")
    if first.out_channels != second.in_channels:
        return MatchResult.fail(f"the first Conv makes {first.out_channels} channels, the "
                                f"second reads {second.in_channels}")
    if first.group != second.group:
        return MatchResult.fail(f"the Convs have group {first.group} and {second.group}; "
                                f"merging them would need a dense weight")
    if first.w.ndim != second.w.ndim:
        return MatchResult.fail("the Convs have different ranks")
    return first, second


def _too_costly(merged: int, before: int) -> MatchResult | None:
    if merged <= before:
        return None
    return MatchResult.fail(f"the merged Conv would cost {merged} multiply-adds per output "
                            f"pixel, more than the {before} of the two")


def _chain_result(w: np.ndarray, b: np.ndarray | None, dtype: np.dtype) -> MatchResult:
    return MatchResult.ok(new_w=w.astype(dtype), new_b=None if b is None else b.astype(dtype))


def _base_name(weight: Value) -> str:
    """The name merged weights are named after: ``weight``'s, less an earlier ``_rep``."""
    return re.sub(r"_rep(_\d+)?$", "", weight.name) or "w"


def _new_conv(op: ReplacementBuilder, x: Value, weight: Value, new_w: np.ndarray,
              new_b: np.ndarray | None, attrs: dict) -> Value:
    """``Conv(x, new_w, new_b)`` with new initializers named after ``weight``."""
    name = _base_name(weight)
    w = op.initializer(new_w, f"{name}_rep")
    if new_b is None:
        return op.Conv(x, w, **attrs)
    return op.Conv(x, w, op.initializer(new_b, f"{name}_rep_bias"), **attrs)


def _conv_pointwise_check(m: Match) -> MatchResult:
    chain = _read_chain(m)
    if isinstance(chain, MatchResult):
        return chain
    first, second = chain
    if not second.geometry.pointwise:
        return MatchResult.fail("the second Conv is not pointwise (1x1, stride 1, no pads)")
    failure = _too_costly(second.out_channels * first.w[0].size, first.cost + second.cost)
    if failure is not None:
        return failure
    g, m1, m2 = first.group, first.out_channels, second.out_channels
    w1 = first.w.astype(np.float64).reshape(g, m1 // g, -1)
    w2 = second.w.astype(np.float64).reshape(g, m2 // g, m1 // g)
    w = np.einsum("gom,gmr->gor", w2, w1).reshape(m2, *first.w.shape[1:])
    b = None
    if first.b is not None:
        b = np.einsum("gom,gm->go", w2, first.b.reshape(g, -1)).reshape(m2)
    if second.b is not None:
        b = second.b if b is None else b + second.b
    return _chain_result(w, b, first.w.dtype)


def _pointwise_conv_check(m: Match) -> MatchResult:
    chain = _read_chain(m)
    if isinstance(chain, MatchResult):
        return chain
    first, second = chain
    if not first.geometry.pointwise:
        return MatchResult.fail("the first Conv is not pointwise (1x1, stride 1, no pads)")
    if second.geometry.padded and first.b is not None and first.b.any():
        return MatchResult.fail("the second Conv pads with zeros and the first has a nonzero "
                                "bias: the merged Conv's border would read 0 where the first "
                                "Conv's output holds its bias")
    c = first.w.shape[1]
    before = first.cost * math.prod(second.geometry.strides) + second.cost
    failure = _too_costly(second.out_channels * c * math.prod(second.geometry.kernel), before)
    if failure is not None:
        return failure
    g, m1, m2 = first.group, first.out_channels, second.out_channels
    w1 = first.w.astype(np.float64).reshape(g, m1 // g, c)
    w2 = second.w.astype(np.float64).reshape(g, m2 // g, m1 // g, -1)
    w = np.einsum("gomk,gmc->gock", w2, w1).reshape(m2, c, *second.w.shape[2:])
    b = second.b
    if first.b is not None:
        shift = np.einsum("gomk,gm->go", w2, first.b.reshape(g, -1)).reshape(m2)
        b = shift if b is None else b + shift
    return _chain_result(w, b, first.w.dtype)


def _chain_pattern(op, x, w1, w2):
    conv1 = op.Conv(x, w1, _bind="conv1", _allow_other_inputs=True)
    return op.Conv(conv1, w2, _bind="conv2", _allow_other_inputs=True)


def _conv_pointwise_replacement(op, x, w1, conv1, new_w, new_b, **_):
    return _new_conv(op, x, w1, new_w, new_b, conv1.attributes)


def _pointwise_conv_replacement(op, x, w1, conv2, new_w, new_b, **_):
    return _new_conv(op, x, w1, new_w, new_b, conv2.attributes)


# -- parallel branches ------------------------------------------------------------------


def _diagonal(channels: int, group: int, rank: int, scale: np.ndarray) -> np.ndarray:
    """The 1x1 kernel ``[C, C/group, 1...]`` mapping channel ``i`` to ``i`` times
    ``scale[i]``."""
    per_group = channels // group
    w = np.zeros((channels, per_group) + (1,) * rank)
    index = np.arange(channels)
    w[(index, index % per_group) + (0,) * rank] = scale
    return w


def _pointwise_branch(conv: _Conv, scale: np.ndarray, shift: np.ndarray | None) -> _Conv:
    """``x * scale + shift`` per channel as a 1x1 Conv with ``conv``'s group."""
    rank = conv.w.ndim - 2
    ones = (1,) * rank
    geometry = _Geometry(ones, ones, ones, (0,) * rank, (0,) * rank)
    return _Conv(_diagonal(conv.in_channels, conv.group, rank, scale), shift, conv.group,
                 geometry)


def _dense(w: np.ndarray, group: int) -> np.ndarray:
    """A grouped weight ``[M, C/group, ...]`` as the dense ``[M, C, ...]`` it stands for."""
    m, per_group = w.shape[:2]
    dense = np.zeros((m, per_group * group, *w.shape[2:]))
    rows = m // group
    for j in range(group):
        out = slice(j * rows, (j + 1) * rows)
        dense[out, j * per_group:(j + 1) * per_group] = w[out]
    return dense


def _placement(host: _Geometry, other: _Geometry, axis: int) -> slice | None:
    """Where ``other``'s taps fall in ``host``'s kernel on ``axis``, or None when some fall
    between or outside its taps."""
    start, dilation = host.begins[axis] - other.begins[axis], host.dilations[axis]
    step = other.dilations[axis] if other.kernel[axis] > 1 else dilation
    if start % dilation or step % dilation:
        return None
    start, step = start // dilation, step // dilation
    last = start + step * (other.kernel[axis] - 1)
    if start < 0 or last >= host.kernel[axis]:
        return None
    return slice(start, last + 1, step)


def _merged_geometry(a: _Geometry, b: _Geometry) -> _Geometry | MatchResult:
    """The geometry whose kernel holds both ``a``'s and ``b``'s taps, axis by axis."""
    if len(a.kernel) != len(b.kernel):
        return MatchResult.fail("the branches have different ranks")
    if a.strides != b.strides:
        return MatchResult.fail(f"the branches have strides {list(a.strides)} and "
                                f"{list(b.strides)}")
    axes = []
    for axis in range(len(a.kernel)):
        if a.size_offset(axis) != b.size_offset(axis):
            return MatchResult.fail(f"the branches' outputs differ in size on spatial axis "
                                    f"{axis} (pads and kernels do not line up)")
        wider = (a.span(axis), a.kernel[axis]) >= (b.span(axis), b.kernel[axis])
        axes.append(a if wider else b)
    return _Geometry(
        tuple(g.kernel[i] for i, g in enumerate(axes)), a.strides,
        tuple(g.dilations[i] for i, g in enumerate(axes)),
        tuple(g.begins[i] for i, g in enumerate(axes)),
        tuple(g.ends[i] for i, g in enumerate(axes)))


def _merge_branches(a: _Conv, b: _Conv) -> MatchResult:
    """One Conv computing ``a(x) + b(x)``, or why there is none."""
    if a.out_channels != b.out_channels or a.in_channels != b.in_channels:
        return MatchResult.fail(f"the branches map {a.in_channels} -> {a.out_channels} and "
                                f"{b.in_channels} -> {b.out_channels} channels")
    geometry = _merged_geometry(a.geometry, b.geometry)
    if isinstance(geometry, MatchResult):
        return geometry
    if a.group == b.group:
        group, weights = a.group, [a.w.astype(np.float64), b.w.astype(np.float64)]
    elif 1 in (a.group, b.group):
        group, weights = 1, [_dense(a.w, a.group), _dense(b.w, b.group)]
    else:
        return MatchResult.fail(f"the branches have group {a.group} and {b.group}")
    merged = np.zeros((a.out_channels, a.in_channels // group, *geometry.kernel))
    for branch, w in zip((a, b), weights, strict=True):
        axes = []
        for axis in range(len(geometry.kernel)):
            where = _placement(geometry, branch.geometry, axis)
            if where is None:
                return MatchResult.fail(f"the {list(branch.geometry.kernel)} kernel's taps do "
                                        f"not fall on the {list(geometry.kernel)} kernel's "
                                        f"taps on spatial axis {axis}")
            axes.append(where)
        merged[(slice(None), slice(None), *axes)] += w
    failure = _too_costly(merged.size, a.cost + b.cost)
    if failure is not None:
        return failure
    biases = [x.b for x in (a, b) if x.b is not None]
    bias = sum(biases[1:], biases[0]) if biases else None
    dtype = a.w.dtype
    return MatchResult.ok(new_w=merged.astype(dtype),
                          new_b=None if bias is None else bias.astype(dtype),
                          attrs=_conv_attributes(geometry, group, a.kernel_shape or b.kernel_shape))


def _conv_attributes(geometry: _Geometry, group: int, kernel_shape: bool) -> dict[str, object]:
    """Conv attributes for ``geometry``, the defaults left out."""
    attrs: dict[str, object] = {}
    if set(geometry.dilations) != {1}:
        attrs["dilations"] = list(geometry.dilations)
    if group != 1:
        attrs["group"] = group
    if kernel_shape:
        attrs["kernel_shape"] = list(geometry.kernel)
    if geometry.padded:
        attrs["pads"] = list(geometry.begins + geometry.ends)
    if set(geometry.strides) != {1}:
        attrs["strides"] = list(geometry.strides)
    return attrs


def _conv_branches_check(m: Match) -> MatchResult:
    a = _read_conv(m["conv_a"], m["wa"], "first branch's")
    if isinstance(a, MatchResult):
        return a
    b = _read_conv(m["conv_b"], m["wb"], "second branch's")
    if isinstance(b, MatchResult):
        return b
    if a.w.dtype != b.w.dtype:
        return MatchResult.fail(f"the weights are {a.w.dtype} and {b.w.dtype}")
    return _merge_branches(a, b)


def _channel_branch(conv: _Conv, what: str) -> MatchResult | None:
    """Why ``x`` cannot be a per-channel branch beside ``conv``, or None."""
    if conv.out_channels != conv.in_channels:
        return MatchResult.fail(f"the Conv maps {conv.in_channels} channels to "
                                f"{conv.out_channels}, so {what} is not a branch it can hold")
    return None


def _conv_identity_check(m: Match) -> MatchResult:
    conv = _read_conv(m["conv"], m["w"], "conv")
    if isinstance(conv, MatchResult):
        return conv
    failure = _channel_branch(conv, "x")
    if failure is not None:
        return failure
    return _merge_branches(conv, _pointwise_branch(conv, np.ones(conv.out_channels), None))


def _conv_batchnorm_check(m: Match) -> MatchResult:
    conv = _read_conv(m["conv"], m["w"], "conv")
    if isinstance(conv, MatchResult):
        return conv
    failure = _channel_branch(conv, "BatchNormalization(x)")
    if failure is not None:
        return failure
    affine = _bn_affine(m, conv.out_channels)
    if isinstance(affine, MatchResult):
        return affine
    return _merge_branches(conv, _pointwise_branch(conv, *affine))


def _conv_branches_pattern(op, x, wa, wb):
    return op.Add(op.Conv(x, wa, _bind="conv_a", _allow_other_inputs=True),
                  op.Conv(x, wb, _bind="conv_b", _allow_other_inputs=True))


def _conv_identity_pattern(op, x, w):
    return op.Add(op.Conv(x, w, _bind="conv", _allow_other_inputs=True), x)


def _conv_batchnorm_pattern(op, x, w, scale, bias, mean, var):
    return op.Add(op.Conv(x, w, _bind="conv", _allow_other_inputs=True),
                  op.BatchNormalization(x, scale, bias, mean, var, _bind="bn"))


def _branch_replacement(op, x, new_w, new_b, attrs, wa=None, w=None, **_):
    return _new_conv(op, x, wa if wa is not None else w, new_w, new_b, attrs)


# -- Gemm and MatMul chains -------------------------------------------------------------


@dataclasses.dataclass
class _Linear:
    """``y = op(x) @ w + b`` in float64: ``w`` is ``[k, n]`` (transB and alpha applied),
    ``b`` is ``[n]`` or ``[rows, n]`` (beta applied) or None."""

    w: np.ndarray
    b: np.ndarray | None
    dtype: np.dtype
    trans_b: bool


def _read_linear(node: Node, weight: Value | None, what: str) -> _Linear | MatchResult:
    w = float_const(weight, f"the {what} weight")
    if isinstance(w, MatchResult):
        return w
    if w.ndim != 2:
        return MatchResult.fail(f"the {what} weight is {w.ndim}-D, not 2-D")
    if node.op_type == "MatMul":
        return _Linear(w.astype(np.float64), None, w.dtype, False)
    trans_b = bool(node.attr("transB", 0))
    matrix = (w.T if trans_b else w).astype(np.float64) * node.attr("alpha", 1.0)
    c = optional_input(node, 2)
    if c is None:
        return _Linear(matrix, None, w.dtype, trans_b)
    bias = float_const(c, f"the {what} bias")
    if isinstance(bias, MatchResult):
        return bias
    n = matrix.shape[1]
    rows = bias.shape[0] if bias.ndim == 2 else 1
    try:
        full = np.broadcast_to(bias, (rows, n) if bias.ndim == 2 else (n,))
    except ValueError:
        return MatchResult.fail(f"the {what} bias of shape {list(bias.shape)} does not "
                                f"broadcast to [M, {n}]")
    if bias.dtype != w.dtype:
        return MatchResult.fail(f"the {what} bias is {bias.dtype}, the weight {w.dtype}")
    return _Linear(matrix, full.astype(np.float64) * node.attr("beta", 1.0), w.dtype, trans_b)


def _linear_check(m: Match) -> MatchResult:
    second = m["second"]
    if second.op_type == "Gemm" and second.attr("transA", 0):
        return MatchResult.fail("the second Gemm has transA=1")
    first = _read_linear(m["first"], m["w1"], "first")
    if isinstance(first, MatchResult):
        return first
    last = _read_linear(second, m["w2"], "second")
    if isinstance(last, MatchResult):
        return last
    if first.dtype != last.dtype:
        return MatchResult.fail(f"the weights are {first.dtype} and {last.dtype}")
    (k, mid), (mid2, p) = first.w.shape, last.w.shape
    if mid != mid2:
        return MatchResult.fail(f"the weights are [{k}, {mid}] and [{mid2}, {p}]")
    if k * p > k * mid + mid * p:
        return MatchResult.fail(f"merging would grow the weights: [{k}, {mid}] and "
                                f"[{mid}, {p}] make [{k}, {p}] ({k * p} > {k * mid} + "
                                f"{mid * p} multiply-adds per row)")
    w = first.w @ last.w
    b = None if first.b is None else first.b @ last.w
    if last.b is not None:
        b = last.b if b is None else b + last.b
    if b is not None and b.ndim == 2 and b.shape[0] == 1:
        b = b.reshape(-1)
    trans_b = first.trans_b and last.trans_b
    return MatchResult.ok(new_w=(w.T if trans_b else w).astype(first.dtype), trans_b=trans_b,
                          new_b=None if b is None else b.astype(first.dtype))


def _linear_pattern(first_op: str, second_op: str):
    def pattern(op, x, w1, w2):
        first = getattr(op, first_op)(x, w1, _bind="first", _allow_other_inputs=True)
        return getattr(op, second_op)(first, w2, _bind="second", _allow_other_inputs=True)

    return pattern


def _linear_replacement(op, x, w1, first, second, new_w, new_b, trans_b, **_):
    name = _base_name(w1)
    weight = op.initializer(new_w, f"{name}_rep")
    if first.op_type == second.op_type == "MatMul":
        return op.MatMul(x, weight)
    attrs: dict[str, object] = {}
    if first.attr("transA", 0):
        attrs["transA"] = 1
    if trans_b:
        attrs["transB"] = 1
    if new_b is None:
        return op.Gemm(x, weight, **attrs)
    return op.Gemm(x, weight, op.initializer(new_b, f"{name}_rep_bias"), **attrs)


def _linear_rule(first_op: str, second_op: str) -> Rule:
    name = f"merge-{first_op.lower()}-{second_op.lower()}"
    return Rule(name, _linear_pattern(first_op, second_op), _linear_replacement, _linear_check)


RULES = register_rules([
    Rule("merge-conv-pointwise", _chain_pattern, _conv_pointwise_replacement,
         _conv_pointwise_check),
    Rule("merge-pointwise-conv", _chain_pattern, _pointwise_conv_replacement,
         _pointwise_conv_check),
    *(_linear_rule(a, b) for a in ("Gemm", "MatMul") for b in ("Gemm", "MatMul")),
    Rule("merge-conv-branches", _conv_branches_pattern, _branch_replacement,
         _conv_branches_check),
    Rule("merge-conv-identity", _conv_identity_pattern, _branch_replacement,
         _conv_identity_check),
    Rule("merge-conv-batchnorm-branch", _conv_batchnorm_pattern, _branch_replacement,
         _conv_batchnorm_check),
], group="reparameterize")


@register_pass
class Reparameterize(RuleSetPass):
    """Merge chains and parallel branches of linear ops (Conv, Gemm, MatMul) with constant
    weights into one op (RepVGG / VanillaNet structural re-parameterization)."""

    name = "reparameterize"
    rules = RuleSet(RULES)
