"""Dense and batched matmul on CPU: a register-blocked, vectorized, parallel kernel.

Recognizes a PrimFunc whose one reduction block computes
``C[b.., i, j] += A[b.., i, k] * B[(b..), k, j]`` (Relax ``matmul`` after LegalizeOps,
Gemm after import, a batch broadcast on either side), with injective producers (inlined)
and elementwise epilogues (bias, activations, residual adds; run as one vectorized
parallel pass over the result).

The kernel, as in BLIS-style GEMM: the result is cut into ``MR x NR`` tiles held in
vector registers (``NR`` = a few SIMD vectors along ``j``, contiguous in ``B`` and ``C``;
``MR`` rows of ``A`` broadcast one scalar at a time); each tile accumulates over a block
of ``KC`` steps of ``k`` (so the ``KC x N`` panel of ``B`` stays in L2 across the rows of
``A``); tiles run in parallel across cores. The tile loops are unrolled so LLVM keeps the
``MR x NR`` accumulators in registers across the ``k`` loop.
"""

from __future__ import annotations

import dataclasses
import os

from tvm import s_tir, tirx
from tvm.s_tir import dlight
from tvm.s_tir.dlight.analysis import normalize_prim_func
from tvm.s_tir.dlight.analysis.common_analysis import collect_vars_used_in_prim_expr
from tvm.s_tir.dlight.base.common_schedules import try_inline_contiguous_spatial
from tvm.target import Target

from kiln.kernels.cpu._sched import (
    PARALLEL_MIN_WORK,
    extent,
    largest_divisor,
    num_cores,
    parallel_vectorize,
    vector_lanes,
)


@dataclasses.dataclass(frozen=True)
class MatmulShape:
    """Roles of the main block's iterators: batch, rows (i), columns (j), reduction (k)."""

    batch: tuple[int, ...]
    i: int | None  # None: a single row (GEMV), the row iterator was normalized away
    j: int
    ks: tuple[int, ...]  # reduction iterators (one for a matmul; ry, rx, rc for a conv)
    m: int
    n: int
    kdim: int  # product of the reduction extents
    b_broadcast: bool  # A does not depend on j: one scalar of A per row and step


def _vars_in(region) -> set:
    found: set = set()
    for rng in region.region:
        found |= collect_vars_used_in_prim_expr(rng.min)
    return found


def match_matmul(sch: s_tir.Schedule, block) -> MatmulShape | None:
    """The contraction roles of ``block``'s iterators, or None when it is not one.

    A contraction here: ``C[s.., i, j] += A[..] * B[.., j]`` summed over one or more
    reduction iterators, where ``j`` indexes the last dimension of both ``C`` and ``B``
    (so tiles of ``j`` are contiguous vectors) and ``i`` (``C``'s second-to-last index)
    indexes ``A`` but not ``B``. Matmuls, and NHWC convolutions with HWIO weights
    (regular, strided, 1x1, grouped and depthwise: an implicit GEMM) are contractions.
    """
    stmt = sch.get(block)
    if len(stmt.writes) != 1 or len(stmt.reads) < 2:
        return None
    ivs = list(stmt.iter_vars)
    kinds = [iv.iter_type for iv in ivs]
    if any(t not in (tirx.IterVar.DataPar, tirx.IterVar.CommReduce) for t in kinds):
        return None
    ks = tuple(n for n, t in enumerate(kinds) if t == tirx.IterVar.CommReduce)
    if not ks:
        return None
    out = stmt.writes[0]
    inputs = [r for r in stmt.reads if not r.source.same_as(out.source)]
    if len(inputs) != 2:
        return None
    out_idx = [r.min for r in out.region]
    if not all(isinstance(e, tirx.Var | tirx.IntImm) for e in out_idx):
        return None
    j_var = out_idx[-1]
    if not isinstance(j_var, tirx.Var):
        return None
    # B: the read whose last index is j alone.
    if _last_is(inputs[0], j_var) and not _last_is(inputs[1], j_var):
        inputs = inputs[::-1]
    if not _last_is(inputs[1], j_var):
        return None
    a_vars, b_vars = _vars_in(inputs[0]), _vars_in(inputs[1])
    kvars = [ivs[k].var for k in ks]
    if not any(v in a_vars for v in kvars) or not any(v in b_vars for v in kvars):
        return None
    i_var = out_idx[-2] if len(out_idx) >= 2 and isinstance(out_idx[-2], tirx.Var) else None
    if i_var is not None and (i_var not in a_vars or i_var in b_vars):
        i_var = None
    pos = {iv.var: n for n, iv in enumerate(ivs)}
    if any(isinstance(v, tirx.Var) and v not in pos for v in out_idx):
        return None
    dims = [extent_of(iv) for iv in ivs]
    if any(d is None for d in dims):
        return None
    i = pos[i_var] if i_var is not None else None
    batch = tuple(n for n, t in enumerate(kinds)
                  if t == tirx.IterVar.DataPar and n != i and n != pos[j_var])
    kdim = 1
    for k in ks:
        kdim *= dims[k]
    return MatmulShape(batch, i, pos[j_var], ks, dims[i] if i is not None else 1,
                       dims[pos[j_var]], kdim, j_var not in a_vars)


def _last_is(region, var) -> bool:
    last = region.region[-1].min
    return isinstance(last, tirx.Var) and last.same_as(var)


def extent_of(iv) -> int | None:
    ext = iv.dom.extent
    return int(ext) if isinstance(ext, tirx.IntImm) else None


def tile_sizes(shape: MatmulShape, lanes: int) -> tuple[int, int, int, int]:
    """(MR, NR, vector width, KC) for a problem shape: tiles dividing the extents (no tail
    guards inside the unrolled micro-kernel), about 12-16 accumulator vectors."""
    vec = largest_divisor(shape.n, (lanes, lanes // 2, lanes // 4, 2))
    if shape.m == 1 and vec >= lanes // 2:
        # GEMV: one row of accumulators; wide tiles read B's rows in long contiguous runs.
        return 1, vec * largest_divisor(shape.n // vec, (8, 6, 4, 3, 2)), vec, shape.kdim
    nr = vec * largest_divisor(shape.n // vec, (4, 3, 2)) if vec >= lanes // 2 else vec
    if nr // vec == 4 and shape.m > 4:
        nr = vec * 2  # 4 vectors wide: keep rows for MR instead
    vectors = max(1, nr // vec)
    mr_max = max(1, 24 // vectors - 1) if vectors > 1 else 8
    mr = largest_divisor(shape.m, tuple(c for c in (8, 7, 6, 5, 4, 3, 2) if c <= mr_max))
    kc = shape.kdim
    if len(shape.ks) == 1 and shape.kdim > 512:
        kc = next((c for c in (256, 512, 384, 192, 128) if shape.kdim % c == 0), shape.kdim)
    return mr, nr, vec, kc


class Matmul(dlight.ScheduleRule):
    """kiln's register-blocked matmul (with fused producers and epilogues)."""

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool):
        if not isinstance(func, tirx.PrimFunc) or target.kind.name != "llvm":
            return None
        try:
            return self._apply(func, target)
        except Exception:  # noqa: BLE001 - a primitive TVM refuses: not ours after all
            if os.environ.get("KILN_DEBUG_SCHEDULES"):
                raise
            return None

    def _apply(self, func: tirx.PrimFunc, target: Target):
        sch = s_tir.Schedule(func)
        blocks = normalize_prim_func(sch)
        if blocks is None:
            return None
        reductions = [b for b in blocks if b.is_reduction()]
        if len(reductions) != 1:
            return None
        main = reductions[0].block_rv
        if match_matmul(sch, main) is None:
            return None
        # Inline injective producers (but not padding: its bounds checks inside the
        # micro-kernel would keep the accumulators out of registers) and the epilogue
        # chain (all but its last block).
        main_name = sch.get(main).name_hint
        index = [b.name for b in blocks].index(main_name)
        producers = [b for b in blocks[:index] if not _is_padding(sch, b.block_rv)]
        kept = [b for b in blocks[:index] if _is_padding(sch, b.block_rv)]
        blocks = [*kept, *try_inline_contiguous_spatial(sch, producers), blocks[index],
                  *try_inline_contiguous_spatial(sch, blocks[index + 1:])]
        main = sch.get_sblock(main_name)
        shape = match_matmul(sch, main)
        if shape is None or len(sch.get_loops(main)) != len(sch.get(main).iter_vars):
            return None
        schedule_matmul(sch, main, shape, target)
        for info in blocks:
            if sch.get(info.block_rv).name_hint != main_name:
                parallel_vectorize(sch, info.block_rv, target)
        return sch


def _chunks(tiles: int, want: int) -> int:
    """The divisor of ``tiles`` nearest ``want`` from below (at least 1)."""
    best = 1
    for d in range(1, min(tiles, want) + 1):
        if tiles % d == 0:
            best = d
    return best


def _is_padding(sch: s_tir.Schedule, block) -> bool:
    """A block that selects between its input and a constant (``if_then_else``): padding."""
    return "if_then_else" in str(sch.get(block).body)


def schedule_matmul(sch: s_tir.Schedule, block, shape: MatmulShape, target: Target) -> None:
    """Tile, reorder, unroll, vectorize and parallelize the matmul block in place.

    Loop nest: ``batch, jc, ic`` (parallel chunks of columns and rows), ``ko`` (blocks of
    ``KC`` reduction steps), ``io, jo`` (``MR x NR`` tiles of the chunk), ``ki`` and the
    unrolled, vectorized ``MR x NR`` micro-kernel. A chunk's ``KC x NC`` block of ``B``
    stays in L2 while its rows go by; the tile accumulates in registers over ``ki``.
    """
    lanes = vector_lanes(target)
    mr, nr, vec, kc = tile_sizes(shape, lanes)
    if os.environ.get("KILN_MM"):
        mr, nr, kc = (int(x) for x in os.environ["KILN_MM"].split(","))
    loops = sch.get_loops(block)
    iters = sch.get(block).iter_vars
    batch_loops = [loops[n] for n in shape.batch]
    batch = 1
    for n in shape.batch:
        batch *= extent_of(iters[n]) or 1
    work = batch * shape.m * shape.n * shape.kdim
    cores = num_cores(target)
    want = 2 * cores if work >= PARALLEL_MIN_WORK and cores > 1 else 1
    need = max(1, -(-want // batch))
    tiles_n, tiles_m = shape.n // nr, shape.m // mr
    jc = _chunks(tiles_n, need)
    ic = _chunks(tiles_m, -(-need // jc)) if shape.i is not None else 1
    jc_loop, jo, jvo, jv = sch.split(loops[shape.j], [jc, None, nr // vec, vec])
    if shape.i is not None:
        ic_loop, io, ii = sch.split(loops[shape.i], [ic, None, mr])
        chunk, rows_outer, rows_inner = [ic_loop], [io], [ii]
    else:
        chunk, rows_outer, rows_inner = [], [], []
    matmul = len(shape.ks) == 1
    if matmul:
        ko, ki = sch.split(loops[shape.ks[0]], [None, kc])
        reduce_outer, reduce_inner = [ko], [ki]
    else:  # a convolution: ry, rx, rc around the micro-kernel
        reduce_outer, reduce_inner = [], [loops[k] for k in shape.ks]
    # jo outside io: a tile column's KC x NR panel of B stays in L1 while the row tiles
    # go by (A's MR-row micro-panels stream from L2: a quarter of the bytes per step).
    sch.reorder(*batch_loops, jc_loop, *chunk, *reduce_outer, jo, *rows_outer, *reduce_inner,
                *rows_inner, jvo, jv)
    outer = [*batch_loops, jc_loop, *chunk]
    fused = sch.fuse(*outer) if len(outer) > 1 else outer[0]
    if want > 1 and (extent(sch, fused) or 0) >= 2:
        sch.parallel(fused)  # before decompose_reduction: TVM checks the block has its init
    for loop in rows_inner:
        sch.unroll(loop)
    sch.unroll(jvo)
    if vec > 1:
        sch.vectorize(jv)
    if matmul and shape.b_broadcast and shape.m >= 4 * mr and shape.kdim >= 64:
        _pack_b(sch, block, ko, nr, vec)
        if os.environ.get("KILN_PACK_A", "1") == "1":
            _pack_a(sch, block, ko, mr)
    init = sch.decompose_reduction(block, reduce_outer[0] if matmul else reduce_inner[0])
    if vec > 1:
        sch.vectorize(sch.get_loops(init)[-1])


def _pack_a(sch: s_tir.Schedule, block, ko, mr: int) -> None:
    """Copy the rows of A a chunk needs into panels ``[MC / MR][KC][MR]`` per ``ko`` step:
    the micro-kernel's ``MR`` broadcasts per step then come from one cache line."""
    stmt = sch.get(block)
    out = stmt.writes[0].source
    j_var = stmt.writes[0].region[-1].min
    a_index = next(n for n, r in enumerate(stmt.reads)
                   if not r.source.same_as(out) and not r.region[-1].min.same_as(j_var))
    packed = sch.cache_read(block, a_index, "global")
    if os.environ.get("KILN_PACK_AT", "0") == "1":
        sch.compute_at(packed, ko)

    def panel(*idx):
        *lead, i, k = idx
        return (*lead, i // mr, k, i % mr)

    sch.transform_layout(packed, ("write", 0), panel)
    if os.environ.get("KILN_PACK_AT", "0") != "1":
        _parallel_copy(sch, packed)


def _parallel_copy(sch: s_tir.Schedule, block) -> None:
    loops = sch.get_loops(block)
    if len(loops) >= 2:
        sch.parallel(sch.fuse(*loops[:-1]) if len(loops) > 2 else loops[0])


def _pack_b(sch: s_tir.Schedule, block, ko, nr: int, vec: int) -> None:
    """Copy the ``KC x NC`` block of B into panels ``[NC / NR][KC][NR]`` per ``ko`` step, so
    the micro-kernel reads B sequentially (rows of B are ``N`` floats apart otherwise:
    cache-set and TLB conflicts once ``N`` reaches a few hundred)."""
    stmt = sch.get(block)
    out = stmt.writes[0].source
    reads = [n for n, r in enumerate(stmt.reads) if not r.source.same_as(out)]
    jv_var = stmt.writes[0].region[-1].min
    b_index = next(n for n in reads
                   if stmt.reads[n].region[-1].min.same_as(jv_var))
    ndim = len(stmt.reads[b_index].region)
    packed = sch.cache_read(block, b_index, "global")
    if os.environ.get("KILN_PACK_AT", "0") == "1":
        sch.compute_at(packed, ko)

    def panel(*idx):
        *lead, k, j = idx
        return (*lead, j // nr, k, j % nr)

    del ndim
    sch.transform_layout(packed, ("write", 0), panel)
    loops = sch.get_loops(packed)
    if vec > 1:
        _, v = sch.split(loops[-1], [None, vec])
        sch.vectorize(v)
    if os.environ.get("KILN_PACK_AT", "0") != "1":
        _parallel_copy(sch, packed)
