"""kiln's CPU kernels against this machine's measured fp32 peak, numpy (BLAS) and ORT.

1. **Peak**: a TIR kernel of independent FMA chains (24 accumulator vectors per thread,
   register-resident, 16-wide with AVX-512, 8-wide otherwise), compiled for kiln's host
   target, run on one thread and on ``--threads`` threads. The peak used is the larger of
   the parallel figure and ``threads x`` the single-thread figure (so a thread pool that
   scales badly cannot make the percentages look better than they are). A theoretical
   figure from /proc/cpuinfo's MHz is printed when available, not used.
2. **Matmuls** (fp32, row-major, ``C = A @ B`` with both operands as inputs): kiln (a
   Relax ``matmul`` built by kiln's tvm pipeline, scheduled by kiln's kernel), numpy's
   BLAS and ONNX Runtime (``MatMul``, ``ORT_ENABLE_ALL``), each the best of ``--repeat``
   timed calls after warm-up, same thread count. Shapes: 1024^3 (the acceptance figure),
   and the shapes kiln's zoo models run (MLP GEMV, BERT projections and attention).

Goal (issue 4): kiln's 1024x1024x1024 matmul at >= 60% of measured peak. ``--strict``
exits 1 when it is below.

    python benchmarks/kernels.py [--threads 2] [--repeat 20] [--json OUT] [--strict]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

SHAPES = [  # (batch, M, K, N): C[batch, M, N] = A[batch, M, K] @ B[batch, K, N]
    (1, 1024, 1024, 1024),
    (1, 1, 784, 512),
    (1, 128, 256, 256),
    (1, 128, 256, 1024),
    (1, 128, 1024, 256),
    (4, 128, 64, 128),
]


def _best(fn, repeat: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def measure_peak(target, threads: int, repeat: int) -> dict:
    """GFLOP/s of register-resident FMA chains on 1 and ``threads`` threads."""
    import tvm
    from tvm.script import tirx as T

    from kiln.kernels.cpu._sched import vector_lanes

    lanes = vector_lanes(target)
    acc, iters = 24, 100_000
    width = acc * lanes

    def kernel(parts: int, parallel: bool):
        loop = T.parallel if parallel else T.serial

        @T.prim_func
        def fma_chains(a: T.Buffer((parts, width), "float32")):
            T.func_attr({"global_symbol": "fma_chains", "tirx.noalias": True})
            for p in loop(parts):
                regs = T.alloc_buffer((width,), "float32", scope="local")
                for v in T.vectorized(width):
                    regs[v] = a[p, v]
                for _ in range(iters):
                    for u in T.unroll(acc):
                        for v in T.vectorized(lanes):
                            regs[u * lanes + v] = T.fma(regs[u * lanes + v],
                                                        T.float32(0.99999), T.float32(1e-5))
                for v in T.vectorized(width):
                    a[p, v] = regs[v]

        return tvm.compile(tvm.IRModule({"fma_chains": fma_chains}), target=target)

    result = {}
    for parts, parallel, key in ((1, False, "single_thread"), (threads, True, "parallel")):
        lib = kernel(parts, parallel)
        arr = tvm.runtime.tensor(np.ones((parts, width), np.float32))
        seconds = _best(lambda lib=lib, arr=arr: lib["fma_chains"](arr), repeat, warmup=2)
        result[key] = 2.0 * parts * width * iters / seconds / 1e9
    result["peak"] = max(result["parallel"], threads * result["single_thread"])
    return result


def _theoretical(threads: int, lanes: int) -> float | None:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    mhz = [float(line.split(":")[1]) for line in text.splitlines() if line.startswith("cpu MHz")]
    if not mhz:
        return None
    # 2 FMA units x lanes x 2 flops per cycle: an upper bound (not every part has two).
    return threads * max(mhz) * 1e6 * 2 * lanes * 2 / 1e9


def kiln_matmul(shape, target):
    import tvm
    from tvm import relax

    from kiln.backends.tvm._pipeline import build

    batch, m, k, n = shape
    a_shape = (m, k) if batch == 1 else (batch, m, k)
    b_shape = (k, n) if batch == 1 else (batch, k, n)
    bb = relax.BlockBuilder()
    a = relax.Var("a", relax.TensorType(a_shape, "float32"))
    b = relax.Var("b", relax.TensorType(b_shape, "float32"))
    with bb.function("main", [a, b]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.matmul(a, b))
        bb.emit_func_output(out)
    t = time.perf_counter()
    ex = build(bb.get(), target)
    compile_s = time.perf_counter() - t
    vm = relax.VirtualMachine(ex, tvm.cpu())
    return vm["main"], a_shape, b_shape, compile_s


def ort_matmul(a_shape, b_shape, threads: int):
    import onnxruntime as ort
    from onnx import TensorProto
    from onnx import helper as oh

    graph = oh.make_graph(
        [oh.make_node("MatMul", ["a", "b"], ["c"])], "mm",
        [oh.make_tensor_value_info("a", TensorProto.FLOAT, list(a_shape)),
         oh.make_tensor_value_info("b", TensorProto.FLOAT, list(b_shape))],
        [oh.make_tensor_value_info("c", TensorProto.FLOAT, None)])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=8)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), so,
                                providers=["CPUExecutionProvider"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--strict", action="store_true")
    args = parser.parse_args(argv)
    # Before TVM starts its thread pool (it defaults to half the CPUs) and numpy its BLAS.
    os.environ["TVM_NUM_THREADS"] = str(args.threads)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import tvm

    from kiln.backends.tvm import host_cpu, tvm_target
    from kiln.kernels.cpu._sched import vector_lanes

    target = tvm_target("llvm", args.threads)
    lanes = vector_lanes(target)
    peak = measure_peak(target, args.threads, max(3, args.repeat // 4))
    theory = _theoretical(args.threads, lanes)
    print(f"host LLVM cpu {host_cpu()}, {lanes}-lane fp32 vectors, {args.threads} threads, "
          f"tvm {tvm.__version__}")
    print(f"measured fp32 peak: {peak['peak']:.1f} GFLOP/s (parallel {peak['parallel']:.1f}, "
          f"single thread {peak['single_thread']:.1f})"
          + (f"; theoretical upper bound {theory:.0f} GFLOP/s (2 FMA units assumed)"
             if theory else ""))
    rows = []
    header = ["shape (b,m,k,n)", "kiln ms", "kiln GFLOP/s", "% peak", "numpy ms", "ort ms",
              "kiln/numpy", "kiln/ort", "max err"]
    rng = np.random.default_rng(0)
    for shape in SHAPES:
        fn, a_shape, b_shape, compile_s = kiln_matmul(shape, target)
        a = rng.standard_normal(a_shape).astype(np.float32)
        b = rng.standard_normal(b_shape).astype(np.float32)
        ta, tb = tvm.runtime.tensor(a), tvm.runtime.tensor(b)
        err = float(np.max(np.abs(fn(ta, tb).numpy() - a @ b)))
        flops = 2.0 * shape[0] * shape[1] * shape[2] * shape[3]
        t_kiln = _best(lambda fn=fn, ta=ta, tb=tb: fn(ta, tb), args.repeat)
        t_np = _best(lambda a=a, b=b: a @ b, args.repeat)
        sess = ort_matmul(a_shape, b_shape, args.threads)
        t_ort = _best(lambda s=sess, a=a, b=b: s.run(None, {"a": a, "b": b}), args.repeat)
        del sess
        gflops = flops / t_kiln / 1e9
        rows.append({"shape": list(shape), "kiln_ms": t_kiln * 1e3, "kiln_gflops": gflops,
                     "percent_of_peak": 100 * gflops / peak["peak"], "numpy_ms": t_np * 1e3,
                     "ort_ms": t_ort * 1e3, "max_abs_err": err, "compile_s": compile_s})
    table = [[",".join(map(str, r["shape"])), f"{r['kiln_ms']:.3f}", f"{r['kiln_gflops']:.1f}",
              f"{r['percent_of_peak']:.0f}%", f"{r['numpy_ms']:.3f}", f"{r['ort_ms']:.3f}",
              f"{r['kiln_ms'] / r['numpy_ms']:.2f}", f"{r['kiln_ms'] / r['ort_ms']:.2f}",
              f"{r['max_abs_err']:.1e}"] for r in rows]
    widths = [max(len(x) for x in col) for col in zip(header, *table, strict=True)]
    for line in [header, *table]:
        print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)))
    big = rows[0]["percent_of_peak"]
    ok = big >= 60.0
    print(f"1024^3: {big:.0f}% of measured peak: {'goal met' if ok else 'BELOW the 60% goal'}")
    if args.json:
        args.json.write_text(json.dumps({"peak": peak, "theoretical_gflops": theory,
                                         "threads": args.threads, "rows": rows}, indent=2))
    return 1 if args.strict and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
