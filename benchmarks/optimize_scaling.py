"""How ``kiln.optimize`` (default pipeline, verification on) scales with model size.

The model is a deep chain of small blocks built with ``onnx.helper``; each block gives
every clean-up pass work: a MatMul/Add/Relu body, a constant subexpression (fold-constants),
a duplicated Relu (cse), an Identity and a Transpose pair (eliminate-no-ops), a
Shape->Gather->Unsqueeze->Concat->Reshape chain computing the same shape (fold-constants,
then eliminate-no-ops), a Constant node, per-block copies of equal constants
(dedupe-initializers) and an unread Sigmoid (eliminate-dead-code). Weights are 8x8, so
memory stays low.

For each size the model is loaded into a fresh kiln Model (not timed) and
``kiln.optimize(model, report=True)`` is timed; the table shows the median of
``--repeat`` runs, per pass (summed over fixed-point iterations, from the report) and in
total (wall-clock, verification included). The optimized model of the largest size must
give the same outputs as the original in ONNX Runtime (graph optimizations off).

    python benchmarks/optimize_scaling.py [--nodes 20000 40000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import kiln
from kiln.frontends.onnx import to_bytes

DIM = 8
NODES_PER_BLOCK = 17


def _const(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(array, name)


def build_model(nodes: int, seed: int = 0) -> onnx.ModelProto:
    """A chain of ``nodes // NODES_PER_BLOCK`` blocks mapping a [1, DIM] input to [1, DIM]."""
    rng = np.random.default_rng(seed)
    blocks = max(1, nodes // NODES_PER_BLOCK)
    graph_nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    x = "x"
    for b in range(blocks):
        p = f"b{b}_"
        # Near-orthogonal weights keep activations in range through thousands of blocks.
        q, _ = np.linalg.qr(rng.standard_normal((DIM, DIM)))
        inits += [
            _const(p + "w", q.astype(np.float32)),
            # A positive bias keeps Relu from zeroing the signal over thousands of blocks.
            _const(p + "c1", rng.uniform(0.05, 0.2, DIM).astype(np.float32)),
            _const(p + "c2", np.full(DIM, 0.5, np.float32)),
            _const(p + "idx", np.array(0, np.int64)),       # equal in every block
            _const(p + "axes", np.array([0], np.int64)),     # equal in every block
            _const(p + "rest", np.array([-1], np.int64)),    # equal in every block
        ]
        graph_nodes += [
            helper.make_node("MatMul", [x, p + "w"], [p + "mm"]),
            helper.make_node("Mul", [p + "c1", p + "c2"], [p + "bias"]),  # folds
            helper.make_node("Add", [p + "mm", p + "bias"], [p + "h"]),
            helper.make_node("Relu", [p + "h"], [p + "r1"]),
            helper.make_node("Relu", [p + "h"], [p + "r2"]),  # cse
            helper.make_node("Add", [p + "r1", p + "r2"], [p + "s"]),
            helper.make_node("Sigmoid", [p + "h"], [p + "dead"]),  # dead code
            helper.make_node("Identity", [p + "s"], [p + "i"]),  # no-op
            helper.make_node("Transpose", [p + "i"], [p + "t1"], perm=[1, 0]),
            helper.make_node("Transpose", [p + "t1"], [p + "t2"], perm=[1, 0]),  # T(T(x))
            helper.make_node("Shape", [p + "t2"], [p + "shape"]),
            helper.make_node("Gather", [p + "shape", p + "idx"], [p + "d0"], axis=0),
            helper.make_node("Unsqueeze", [p + "d0", p + "axes"], [p + "d0u"]),
            helper.make_node("Concat", [p + "d0u", p + "rest"], [p + "target"], axis=0),
            helper.make_node("Reshape", [p + "t2", p + "target"], [p + "rs"]),  # no-op
            helper.make_node("Constant", [], [p + "scale"],
                             value=_const(p + "scale_t", np.array(0.5, np.float32))),
        ]
        out = "y" if b == blocks - 1 else p + "out"
        graph_nodes.append(helper.make_node("Mul", [p + "rs", p + "scale"], [out]))
        x = out
    graph = helper.make_graph(
        graph_nodes, "optimize_scaling",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, DIM])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, DIM])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)],
                             ir_version=9)


def time_optimize(data: bytes) -> tuple[float, dict[str, float], kiln.ir.Model, int, int]:
    """One timed ``kiln.optimize`` run on a freshly loaded model."""
    model = kiln.load(data)
    start = time.perf_counter()
    result, report = kiln.optimize(model, report=True)
    total = time.perf_counter() - start
    per_pass: dict[str, float] = defaultdict(float)
    for run in report.runs:
        per_pass[run.name] += run.seconds
    return total, dict(per_pass), result, report.nodes_before, report.nodes_after


def check_numerics(original: bytes, optimized: kiln.ir.Model) -> float:
    """Run both models in ONNX Runtime on one random input; return the max abs difference."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    feed = {"x": np.random.default_rng(1).standard_normal((1, DIM)).astype(np.float32)}
    outs = [
        ort.InferenceSession(m, opts, providers=["CPUExecutionProvider"]).run(None, feed)[0]
        for m in (original, to_bytes(optimized))
    ]
    np.testing.assert_allclose(outs[1], outs[0], rtol=1e-4, atol=1e-5)
    if not np.any(np.abs(outs[0]) > 1e-3):
        raise AssertionError("the reference output is ~0; the check would mean nothing")
    return float(np.max(np.abs(outs[1] - outs[0])))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[20000, 40000])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    rows = []
    last: tuple[bytes, kiln.ir.Model] | None = None
    for n in args.nodes:
        data = build_model(n).SerializeToString()
        runs = [time_optimize(data) for _ in range(args.repeat)]
        total = statistics.median(r[0] for r in runs)
        names = list(runs[0][1])
        per_pass = {k: statistics.median(r[1].get(k, 0.0) for r in runs) for k in names}
        rows.append((n, runs[0][3], runs[0][4], total, per_pass))
        last = (data, runs[-1][2])

    names = list(rows[0][4])
    header = ["nodes", "after", *names, "total s"]
    table = [[str(before), str(after), *(f"{per[k]:.3f}" for k in names), f"{total:.3f}"]
             for _, before, after, total, per in rows]
    widths = [max(len(h), *(len(r[i]) for r in table)) for i, h in enumerate(header)]
    print("kiln.optimize(model, pipeline='default'), verify on; median of "
          f"{args.repeat}; per-pass seconds summed over fixed-point iterations")
    for line in [header, *table]:
        print("  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)))
    for (n0, *_, t0, _), (n1, *_, t1, _) in zip(rows, rows[1:], strict=False):
        print(f"{n1 / n0:.1f}x the nodes ({n0} -> {n1}): {t1 / t0:.2f}x the time")
    assert last is not None
    diff = check_numerics(*last)
    print(f"ONNX Runtime outputs match (largest model, max abs diff {diff:.2e})")
    try:
        import onnxsim  # noqa: F401
    except ImportError:
        print("onnxsim is not installed; no reference figure")


if __name__ == "__main__":
    main()
