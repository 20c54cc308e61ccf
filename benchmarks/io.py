"""ONNX load/save speed and peak memory: kiln vs onnx vs onnx-ir, side by side.

The model is an MLP whose float32 weights total ``--gib`` GiB (default 1, in 64 MiB
matrices). Each measurement runs in a fresh child process; the time covers only the
operation (imports and set-up excluded), and the peak memory is the child's peak RSS
(``ru_maxrss`` from ``os.wait4``), so measurements cannot contaminate each other.

- load: ``kiln.load`` / ``onnx.load`` / ``onnx_ir.load`` of a file written by onnx.
- load+read: the same, then every weight as a numpy array with every page touched.
- save: the model built in memory from numpy arrays by each library, then saved.

Both forms are measured: one inline protobuf (< 2 GB) and external data. Then a model
over 2 GB (external data) round-trips through kiln (load, save, load; arrays compared on
sampled rows). Source files are read once before timing, so loads come from the page
cache; saves write into it (no fsync, as none of the three libraries does).

    python benchmarks/io.py [--gib 1] [--repeat 5] [--large-gib 2.25] [--dir DIR]
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DIM = 4096  # weights are DIM x DIM float32: 64 MiB each
TENSOR_BYTES = DIM * DIM * 4
LIBS = ("kiln", "onnx", "onnx-ir")
OPS = ("load", "load+read", "save")
FORMS = ("inline", "external")


# ----------------------------------------------------------------------------- the model
# The parent process imports nothing heavy: on Linux a child's peak RSS includes the
# parent's RSS at the time it was spawned (vfork + exec), so children import numpy and the
# libraries themselves.
def weight(i: int):
    """Weight ``i``: rows distinct (column 0 is the row index), so sampled checks mean something."""
    import numpy as np

    a = np.full((DIM, DIM), i, np.float32)
    a[:, 0] = np.arange(DIM, dtype=np.float32)
    return a


def mlp_names(n: int) -> list[tuple[str, str, str]]:
    """(input, weight, output) names of the MatMul chain."""
    return [("x" if i == 0 else f"t{i}", f"w{i}", "y" if i == n - 1 else f"t{i + 1}")
            for i in range(n)]


def build_kiln(n: int):
    from kiln.ir import DataType, Graph, Model, Node, Tensor, TensorType, Value

    x = Value("x", TensorType(DataType.FLOAT, [1, DIM]))
    values = {"x": x}
    nodes, inits = [], []
    for a, w, out in mlp_names(n):
        wv = Value(w, const_value=Tensor(weight(len(inits)), name=w))
        inits.append(wv)
        values[out] = Value(out, TensorType(DataType.FLOAT, [1, DIM]))
        nodes.append(Node("", "MatMul", [values[a], wv], outputs=[values[out]]))
    graph = Graph([x], [values["y"]], nodes, inits, name="mlp")
    return Model(graph, ir_version=10, opset_imports={"": 21})


def build_onnx(n: int):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(weight(i), f"w{i}") for i in range(n)]
    nodes = [helper.make_node("MatMul", [a, w], [o]) for a, w, o in mlp_names(n)]
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, DIM])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, DIM])], inits)
    return helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 21)],
                             ir_version=10)


def build_onnx_ir(n: int):
    import onnx_ir as ir

    ftype = ir.TensorType(ir.DataType.FLOAT)
    x = ir.Value(name="x", shape=ir.Shape([1, DIM]), type=ftype)
    values = {"x": x}
    nodes, inits = [], []
    for a, w, out in mlp_names(n):
        wv = ir.Value(name=w, shape=ir.Shape([DIM, DIM]), type=ftype,
                      const_value=ir.Tensor(weight(len(inits)), name=w))
        inits.append(wv)
        node = ir.Node("", "MatMul", [values[a], wv], num_outputs=1)
        node.outputs[0].name = out
        node.outputs[0].shape = ir.Shape([1, DIM])
        node.outputs[0].type = ftype
        values[out] = node.outputs[0]
        nodes.append(node)
    graph = ir.Graph([x], [values["y"]], nodes=nodes, initializers=inits, name="mlp",
                     opset_imports={"": 21})
    return ir.Model(graph, ir_version=10)


# ----------------------------------------------------------------------------- child side
def touch(arrays) -> int:
    """Read one byte of every page of every array; returns a checksum."""
    import numpy as np

    total = 0
    for a in arrays:
        total += int(np.asarray(a).reshape(-1).view(np.uint8)[::4096].sum())
    return total


def child_load(lib: str, src: str, read: bool) -> float:
    if lib == "kiln":
        import kiln

        start = time.perf_counter()
        model = kiln.load(src)
        if read:
            touch(v.const_value.numpy() for v in model.graph.initializers.values())
    elif lib == "onnx":
        import onnx
        from onnx import numpy_helper

        start = time.perf_counter()
        proto = onnx.load(src)
        if read:
            touch(numpy_helper.to_array(t) for t in proto.graph.initializer)
    else:
        import onnx_ir

        start = time.perf_counter()
        model = onnx_ir.load(src)
        if read:
            touch(v.const_value.numpy() for v in model.graph.initializers.values())
    return time.perf_counter() - start


def child_save(lib: str, out: str, n: int, external: bool) -> float:
    data = Path(out).name + ".data"
    if lib == "kiln":
        import kiln

        model = build_kiln(n)
        start = time.perf_counter()
        kiln.save(model, out, external_data=external)
    elif lib == "onnx":
        import onnx

        proto = build_onnx(n)
        start = time.perf_counter()
        if external:
            onnx.save_model(proto, out, save_as_external_data=True, location=data,
                            all_tensors_to_one_file=True, size_threshold=1024)
        else:
            onnx.save_model(proto, out)
    else:
        import onnx_ir

        model = build_onnx_ir(n)
        start = time.perf_counter()
        onnx_ir.save(model, out, external_data=data if external else None)
    return time.perf_counter() - start


def child_large(src: str, out: str, n: int) -> dict:
    """Write a > 2 GB model with kiln, then load -> save -> load and compare samples."""
    import numpy as np
    import onnx

    import kiln

    result = {}
    model = build_kiln(n)
    start = time.perf_counter()
    kiln.save(model, src)  # external_data=None: must choose external data
    result["write"] = time.perf_counter() - start
    del model
    gc.collect()  # the IR has reference cycles: free the in-memory weights now
    assert Path(src + ".data").stat().st_size >= n * TENSOR_BYTES, "no external data written"
    assert Path(src).stat().st_size < 1 << 20, "the weights went inline"

    start = time.perf_counter()
    model = kiln.load(src)
    result["load"] = time.perf_counter() - start
    start = time.perf_counter()
    kiln.save(model, out)
    result["save"] = time.perf_counter() - start
    start = time.perf_counter()
    again = kiln.load(out)
    result["reload"] = time.perf_counter() - start
    onnx.checker.check_model(out)

    rows = np.arange(0, DIM, 61)
    for i in range(n):
        name = f"w{i}"
        a = model.graph.initializers[name].const_value.numpy()
        b = again.graph.initializers[name].const_value.numpy()
        expected = weight(i)[rows] if i in (0, n - 1) else None
        assert np.array_equal(a[rows], b[rows]), f"{name} differs after the round trip"
        assert b[rows, 0].tolist() == rows.tolist() and float(b[rows[-1], 1]) == i
        if expected is not None:
            assert np.array_equal(b[rows], expected)
    result["bytes"] = Path(out + ".data").stat().st_size
    return result


def child_main(spec: dict) -> None:
    if spec["op"] == "large":
        result = child_large(spec["src"], spec["out"], spec["n"])
    elif spec["op"] == "save":
        result = {"seconds": child_save(spec["lib"], spec["out"], spec["n"],
                                        spec["form"] == "external")}
    else:
        result = {"seconds": child_load(spec["lib"], spec["src"], spec["op"] == "load+read")}
    print(json.dumps(result))


# ----------------------------------------------------------------------------- parent side
def run_child(spec: dict) -> tuple[dict, int]:
    """Run one measurement in a fresh process; returns its result and peak RSS in bytes."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([sys.executable, __file__, "--child", json.dumps(spec)],
                                stdout=out, stderr=err)
        # wait4 reaps the child and gives its own resource usage (peak RSS included).
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(f"child {spec} failed:\n{err.read().decode()[-3000:]}")
        result = json.loads(out.read().decode().strip().splitlines()[-1])
    return result, usage.ru_maxrss * 1024  # Linux reports KiB


def make_sources(work: Path, n: int) -> dict[str, Path]:
    """The benchmark's input files, written by onnx (so nobody reads only its own output)."""
    src = {"inline": work / "inline" / "model.onnx", "external": work / "external" / "model.onnx"}
    for path in src.values():
        path.parent.mkdir()
    run_child({"op": "make-sources", "n": n, "inline": str(src["inline"]),
               "external": str(src["external"])})
    return src


def warm(paths) -> None:
    for path in paths:
        with open(path, "rb") as f:
            while f.read(64 << 20):
                pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=1.0, help="weights in GiB (default 1)")
    parser.add_argument("--repeat", type=int, default=5, help="runs per measurement (median)")
    parser.add_argument("--large-gib", type=float, default=2.25,
                        help="size of the > 2 GB round trip check (0 skips it)")
    parser.add_argument("--dir", default=None, help="scratch folder (default: system temp)")
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        spec = json.loads(args.child)
        if spec["op"] == "make-sources":
            make_sources_child(spec)
        else:
            child_main(spec)
        return

    n = max(1, round(args.gib * (1 << 30) / TENSOR_BYTES))
    weights = n * TENSOR_BYTES
    work = Path(tempfile.mkdtemp(prefix="kiln-io-bench-", dir=args.dir))
    started = time.perf_counter()
    try:
        print(describe_machine(n, weights, args.repeat), flush=True)
        src = make_sources(work, n)
        warm([src["inline"], src["external"], src["external"].with_name("model.onnx.data")])
        rows = measure(work, src, n, weights, args.repeat)
        print_table(rows, weights)
        verdicts(rows, weights)
        large = None
        if args.large_gib > 0:
            large = large_check(work, args.large_gib)
        if args.json:
            Path(args.json).write_text(json.dumps({"weights": weights, "rows": rows,
                                                   "large": large}, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\ntotal benchmark time {time.perf_counter() - started:.0f} s")


def make_sources_child(spec: dict) -> None:
    import onnx

    proto = build_onnx(spec["n"])
    onnx.save_model(proto, spec["inline"])
    onnx.save_model(proto, spec["external"], save_as_external_data=True,
                    location="model.onnx.data", all_tensors_to_one_file=True,
                    size_threshold=1024)
    print(json.dumps({}))


def measure(work: Path, src: dict[str, Path], n: int, weights: int, repeat: int) -> list[dict]:
    samples: dict[tuple[str, str, str], list[tuple[float, int]]] = {}
    out_dir = work / "out"
    for r in range(repeat):
        # Round-robin over libraries, so drift in the machine hits all of them alike, and
        # rotate who goes first, so no library always follows the same neighbour.
        order = LIBS[r % len(LIBS):] + LIBS[:r % len(LIBS)]
        for form in FORMS:
            for op in OPS:
                for lib in order:
                    out_dir.mkdir(exist_ok=True)
                    # Flush the previous run's dirty pages, so no library's write pays
                    # for another's writeback.
                    os.sync()
                    spec = {"op": op, "lib": lib, "form": form, "n": n,
                            "src": str(src[form]), "out": str(out_dir / "model.onnx")}
                    result, peak = run_child(spec)
                    if op == "save":
                        written = sum(p.stat().st_size for p in out_dir.iterdir())
                        assert written >= weights, f"{lib} wrote only {written} bytes"
                    shutil.rmtree(out_dir)
                    samples.setdefault((form, op, lib), []).append((result["seconds"], peak))
    rows = []
    for (form, op, lib), runs in samples.items():
        rows.append({"form": form, "op": op, "lib": lib,
                     "seconds": statistics.median(s for s, _ in runs),
                     "peak_rss": statistics.median(p for _, p in runs)})
    return rows


def print_table(rows: list[dict], weights: int) -> None:
    print(f"\n{'form':<9} {'operation':<10} {'library':<8} {'median s':>9} "
          f"{'peak RSS MiB':>13} {'peak/weights':>13} {'time vs kiln':>13}")
    kiln_time = {(r["form"], r["op"]): r["seconds"] for r in rows if r["lib"] == "kiln"}
    for r in rows:
        ratio = r["seconds"] / max(kiln_time[(r["form"], r["op"])], 1e-6)
        print(f"{r['form']:<9} {r['op']:<10} {r['lib']:<8} {r['seconds']:>9.3f} "
              f"{r['peak_rss'] / 2**20:>13.0f} {r['peak_rss'] / weights:>13.2f} {ratio:>12.1f}x")


def compare(kiln_s: float, other_s: float) -> str:
    """kiln against another library; differences within 5% or 5 ms are noise here."""
    if abs(kiln_s - other_s) <= max(0.05 * other_s, 0.005):
        return "tie"
    return "faster" if kiln_s < other_s else "SLOWER"


def verdicts(rows: list[dict], weights: int) -> None:
    by = {(r["form"], r["op"], r["lib"]): r for r in rows}
    print("\nkiln against the others (a tie is within 5% or 5 ms); kiln's peak RSS / weights:")
    for form in FORMS:
        for op in OPS:
            k = by[(form, op, "kiln")]
            against = ", ".join(
                f"{compare(k['seconds'], by[(form, op, lib)]['seconds'])} than {lib}"
                if compare(k['seconds'], by[(form, op, lib)]['seconds']) != "tie"
                else f"tie with {lib}" for lib in LIBS[1:])
            lean = "ok" if k["peak_rss"] <= 1.2 * weights else "OVER 1.2x"
            print(f"  {form:<9} {op:<10} {against}; peak {k['peak_rss'] / weights:.2f}x ({lean})")


def large_check(work: Path, gib: float) -> dict:
    n = max(1, round(gib * (1 << 30) / TENSOR_BYTES))
    folder = work / "large"
    (folder / "a").mkdir(parents=True)
    (folder / "b").mkdir()
    spec = {"op": "large", "n": n, "src": str(folder / "a" / "model.onnx"),
            "out": str(folder / "b" / "model.onnx")}
    result, peak = run_child(spec)
    shutil.rmtree(folder)
    print(f"\n> 2 GB round trip ({result['bytes'] / 1e9:.2f} GB of external data, {n} tensors): "
          f"OK — kiln write {result['write']:.2f} s, load {result['load']:.3f} s, "
          f"save {result['save']:.2f} s, reload {result['reload']:.3f} s; arrays equal on "
          f"sampled rows; onnx.checker accepts it; child peak RSS "
          f"{peak / 2**20:.0f} MiB ({peak / result['bytes']:.2f}x the weights)")
    result["peak_rss"] = peak
    return result


def describe_machine(n: int, weights: int, repeat: int) -> str:
    def version(name: str) -> str:
        return importlib.metadata.version(name)

    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f
                       if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"ONNX load/save benchmark: {n} float32 weights of {DIM}x{DIM}, "
            f"{weights / 2**30:.2f} GiB ({weights / 1e9:.2f} GB); median of {repeat} runs, "
            f"each in a fresh process\n"
            f"machine: {cpu}, {os.cpu_count()} CPUs; Python {platform.python_version()}, "
            f"numpy {version('numpy')}, onnx {version('onnx')}, onnx-ir {version('onnx-ir')}, "
            f"kiln {version('kiln-compiler')}; single-threaded (none of these calls uses "
            "threads)")


if __name__ == "__main__":
    main()
