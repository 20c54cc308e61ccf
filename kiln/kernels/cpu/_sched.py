"""Small schedule helpers shared by kiln's CPU rules."""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.target import Target

#: Blocks with fewer multiply-adds or elements than this run on one thread: waking the
#: thread pool costs a few microseconds, more than small loops take.
PARALLEL_MIN_WORK = 1 << 17


def vector_lanes(target: Target, dtype: str = "float32") -> int:
    """SIMD lanes of ``dtype`` on ``target``: 512-bit registers with AVX-512, else 256."""
    bits = 512 if _has_avx512(target) else 256
    import tvm

    width = tvm.runtime.DataType(dtype).bits if dtype != "bool" else 8
    return max(1, bits // max(8, width))


def _has_avx512(target: Target) -> bool:
    from tvm.target import codegen

    mcpu = str(target.attrs.get("mcpu", ""))
    try:
        return bool(codegen.llvm_cpu_has_features(["avx512f"], target))
    except Exception:  # older LLVM or a target without mcpu
        return any(tag in mcpu for tag in ("avx512", "skylake-avx512", "icelake", "sapphire",
                                           "rocketlake", "tigerlake", "cascadelake",
                                           "cooperlake", "znver4", "znver5", "graniterapids"))


def num_cores(target: Target) -> int:
    return int(target.attrs.get("num-cores", 1) or 1)


def extent(sch: s_tir.Schedule, loop) -> int | None:
    """A loop's extent, or None when it is not a constant."""
    ext = sch.get(loop).extent
    return int(ext) if isinstance(ext, tirx.IntImm) else None


def iter_kinds(sch: s_tir.Schedule, block) -> list[str] | None:
    """'S' or 'R' for each loop of ``block``, when its loops bind its iterators one to one
    (loop i -> iterator i); None otherwise."""
    loops = sch.get_loops(block)
    stmt = sch.get(block)
    realize = sch.get_sref(block).parent
    del realize
    if len(loops) != len(stmt.iter_vars):
        return None
    kinds = []
    for iv in stmt.iter_vars:
        if iv.iter_type == tirx.IterVar.DataPar:
            kinds.append("S")
        elif iv.iter_type == tirx.IterVar.CommReduce:
            kinds.append("R")
        else:
            return None
    return kinds


def largest_divisor(n: int, choices: tuple[int, ...]) -> int:
    """The largest of ``choices`` dividing ``n`` (1 when none does)."""
    for c in sorted(choices, reverse=True):
        if n % c == 0:
            return c
    return 1


def parallel_vectorize(sch: s_tir.Schedule, block, target: Target) -> None:
    """Fuse the leading spatial loops of ``block``; run them in parallel when the block is
    big enough, and vectorize a purely spatial block's innermost run of elements."""
    kinds = iter_kinds(sch, block)
    loops = sch.get_loops(block)
    if kinds is None or not loops:
        return
    extents = [extent(sch, lp) for lp in loops]
    if any(e is None for e in extents):
        return
    work = 1
    for e in extents:
        work *= e
    lead = 0
    while lead < len(kinds) and kinds[lead] == "S":
        lead += 1
    if lead == 0:
        return
    spatial_only = lead == len(kinds)
    fused = sch.fuse(*loops[:lead]) if lead > 1 else loops[0]
    total = 1
    for e in extents[:lead]:
        total *= e
    lanes = vector_lanes(target)
    vec = None
    if spatial_only:
        width = largest_divisor(total, (lanes, lanes // 2, lanes // 4))
        if width >= 4 and total > width:
            fused, vec = sch.split(fused, [None, width])
        elif width >= 4:
            vec = fused
            fused = None
    if fused is not None and work >= PARALLEL_MIN_WORK and num_cores(target) > 1:
        outer = extent(sch, fused)
        if outer is not None and outer >= 2:
            sch.parallel(fused)
    if vec is not None:
        sch.vectorize(vec)
