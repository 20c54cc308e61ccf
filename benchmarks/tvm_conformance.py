"""The ONNX node test suite through kiln's tvm backend, against TVM's own importer.

For every node case of ``onnx.backend.test`` (built in memory by onnx), two paths run the
case's model on its inputs and are compared with the suite's expected outputs, the same
way (``kiln.testing.compare_outputs``, the suite's own tolerance raised to at least
rtol 1e-3, atol 1e-4 for both: compiled code reassociates sums):

- **tvm-direct**: ``tvm.relax.frontend.onnx.from_onnx(model)`` (shapes as declared, weights
  as constants), ``relax.get_pipeline("zero")``, ``tvm.compile`` for kiln's host target,
  run on a Relax VM;
- **kiln**: ``kiln.compile(kiln.load(model), "tvm", cache=False)`` (kiln's static-shape
  pass pipeline, TVM's importer with kiln's converters, kiln's schedules), then run.

Outcomes per path: ``pass``, ``wrong`` (ran, outputs differ), ``refused`` (a clear error
before running: an op or input type the path does not take), ``crash`` (any other error,
or the worker process died or hung). Cases run in batches, each batch in a fresh
subprocess; a batch whose process dies is re-run one case per process, so one bad case
never takes others down.

Acceptance (issue 4): kiln passes at least as many cases as tvm-direct. The report lists
every case tvm-direct passes and kiln does not (each a kiln regression to fix).

    python benchmarks/tvm_conformance.py [--filter SUBSTR] [--every N] [--limit N]
        [--json OUT] [--strict]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RTOL, ATOL = 1e-3, 1e-4


def _tolerances(case) -> tuple[float, float]:
    rtol = float(getattr(case, "rtol", 0) or 0)
    atol = float(getattr(case, "atol", 0) or 0)
    return max(rtol, RTOL), max(atol, ATOL)


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:200]


def run_tvm_direct(case, target) -> tuple[str, str]:
    import numpy as np
    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    from kiln.testing import compare_outputs
    from kiln.testing._conformance import _feeds, _normalize

    inputs, outputs = case.data_sets[0]
    feeds = _feeds(case.model, inputs)
    expected = _normalize(outputs)
    try:
        mod = from_onnx(case.model, keep_params_in_input=False)
    except Exception as exc:  # import refused: an op or type TVM's importer lacks
        return "refused", _short(exc)
    try:
        ex = tvm.compile(relax.get_pipeline("zero")(mod), target=target)
        vm = relax.VirtualMachine(ex, tvm.cpu())
        args = [tvm.runtime.tensor(np.asarray(v)) for v in feeds.values()]
        out = vm["main"](*args)
        got = [out] if hasattr(out, "numpy") else list(out)
        got = [g.numpy() if hasattr(g, "numpy") else g for g in got]
    except Exception as exc:
        return "crash", _short(exc)
    rtol, atol = _tolerances(case)
    why = compare_outputs(expected, got, rtol, atol)
    return ("pass", "") if why is None else ("wrong", why)


def run_kiln(case) -> tuple[str, str]:
    import kiln
    from kiln.testing import compare_outputs
    from kiln.testing._conformance import _feeds, _normalize

    inputs, outputs = case.data_sets[0]
    feeds = _feeds(case.model, inputs)
    expected = _normalize(outputs)
    try:
        model = kiln.load(case.model.SerializeToString())
        exe = kiln.compile(model, "tvm", cache=False)
    except kiln.KilnError as exc:
        return "refused", _short(exc)
    except Exception as exc:
        return "crash", _short(exc)
    try:
        result = exe.run(feeds)
    except kiln.KilnError as exc:
        return "refused", _short(exc)
    except Exception as exc:
        return "crash", _short(exc)
    rtol, atol = _tolerances(case)
    why = compare_outputs(expected, list(result.values()), rtol, atol)
    return ("pass", "") if why is None else ("wrong", why)


def child(names: list[str], out: Path) -> None:
    """Run the named cases in this process, appending one JSON line per case."""
    import warnings

    warnings.simplefilter("ignore")
    from kiln.backends.tvm import tvm_target
    from kiln.testing import load_node_cases

    wanted = set(names)
    target = tvm_target("llvm")
    with out.open("a") as f:
        for case in load_node_cases():
            if case.name not in wanted:
                continue
            row = {"case": case.name,
                   "op": case.model.graph.node[0].op_type if case.model.graph.node else "",
                   "tvm_direct": run_tvm_direct(case, target), "kiln": run_kiln(case)}
            f.write(json.dumps(row) + "\n")
            f.flush()


def _run_batch(names: list[str], out: Path, timeout: float) -> set[str]:
    """Run a batch in a subprocess; return the names it did not finish."""
    cmd = [sys.executable, __file__, "--child", ",".join(names), "--out", str(out)]
    with contextlib.suppress(subprocess.TimeoutExpired):  # a hung batch: see what it did
        subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
    done = {json.loads(line)["case"] for line in out.read_text().splitlines()} \
        if out.exists() else set()
    return set(names) - done


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--filter", default="")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--every", type=int, default=1,
                        help="run every N-th case only (a spread-out sample; default 1: all)")
    parser.add_argument("--batch", type=int, default=40)
    parser.add_argument("--case-timeout", type=float, default=60.0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--strict", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault("TVM_NUM_THREADS", "1")  # tiny cases: no thread pool
    if args.child is not None:
        child(args.child.split(","), args.out)
        return 0
    from kiln.testing import load_node_cases

    names = [c.name for c in load_node_cases(args.filter)]
    names = names[:: max(1, args.every)]
    if args.limit:
        names = names[: args.limit]
    start = time.perf_counter()
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="kiln-tvm-conf-") as tmp:
        out = Path(tmp) / "rows.jsonl"
        for i in range(0, len(names), args.batch):
            batch = names[i:i + args.batch]
            missing = _run_batch(batch, out, args.case_timeout * len(batch))
            for name in sorted(missing):  # isolate the case that killed or hung the batch
                if _run_batch([name], out, args.case_timeout):
                    crashed = ["crash", "worker process died or timed out"]
                    with out.open("a") as f:
                        f.write(json.dumps({"case": name, "op": "", "tvm_direct": crashed,
                                            "kiln": crashed}) + "\n")
            print(f"{min(i + args.batch, len(names))}/{len(names)} cases, "
                  f"{time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
        for line in out.read_text().splitlines():
            row = json.loads(line)
            rows[row["case"]] = row
    return report(list(rows.values()), args, time.perf_counter() - start)


def report(rows: list[dict], args, seconds: float) -> int:
    kinds = ("pass", "wrong", "refused", "crash")
    counts = {path: collections.Counter(r[path][0] for r in rows)
              for path in ("tvm_direct", "kiln")}
    print(f"{len(rows)} node cases in {seconds:.0f} s (rtol >= {RTOL}, atol >= {ATOL})")
    print(f"{'':12}" + "".join(f"{k:>9}" for k in kinds))
    for path in ("tvm_direct", "kiln"):
        print(f"{path:12}" + "".join(f"{counts[path][k]:>9}" for k in kinds))
    lost = [r for r in rows if r["tvm_direct"][0] == "pass" and r["kiln"][0] != "pass"]
    gained = [r for r in rows if r["kiln"][0] == "pass" and r["tvm_direct"][0] != "pass"]
    print(f"kiln passes {len(gained)} cases tvm-direct does not; tvm-direct passes "
          f"{len(lost)} cases kiln does not:")
    for r in lost:
        print(f"  {r['case']}: kiln {r['kiln'][0]}: {r['kiln'][1]}")
    fails = collections.Counter(r["op"] for r in rows if r["kiln"][0] != "pass")
    print("kiln's non-passing cases by op (top 15): "
          + ", ".join(f"{op or '?'} {n}" for op, n in fails.most_common(15)))
    ok = counts["kiln"]["pass"] >= counts["tvm_direct"]["pass"]
    print(f"acceptance (kiln passes >= tvm-direct): {'met' if ok else 'MISSED'}")
    if args.json:
        args.json.write_text(json.dumps({"counts": {k: dict(v) for k, v in counts.items()},
                                         "rows": rows}, indent=1))
    return 1 if args.strict and (not ok or lost) else 0


if __name__ == "__main__":
    sys.exit(main())
