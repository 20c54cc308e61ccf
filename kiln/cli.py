"""The ``kiln`` command: inspect, run, optimize and benchmark models, export zoo models, run
the demo.

Every subcommand takes a model as an ONNX file or as ``zoo:NAME`` (a built-in model,
exported from torch on the fly; needs the torch extra). Results go to stdout, progress to
stderr. A user error (a missing file, a malformed model, bad feeds, an unsupported op)
is one line ``kiln: error: ...`` on stderr and exit status 1 (2 for bad arguments);
``--debug`` or ``KILN_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

ZOO_PREFIX = "zoo:"
DEMO_MODEL = "digits_cnn"


class _Parser(argparse.ArgumentParser):
    """argparse, with errors on one line: ``kiln bench: error: ...``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


class _Progress:
    """Progress lines on stderr: ``exporting resnet18 ... done (3.2 s)``."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet

    @contextlib.contextmanager
    def step(self, message: str) -> Iterator[None]:
        start = time.perf_counter()
        self.say(f"{message} ...", end="")
        try:
            yield
        except BaseException:
            self.say(" failed")
            raise
        self.say(f" done ({time.perf_counter() - start:.1f} s)")

    def say(self, message: str, end: str = "\n") -> None:
        if not self.quiet:
            print(message, end=end, file=sys.stderr, flush=True)


# -- arguments ------------------------------------------------------------------------


def _dim(text: str) -> tuple[str, int]:
    name, sep, size = text.partition("=")
    if not sep or not name or not size.isdigit() or int(size) < 1:
        raise argparse.ArgumentTypeError(f"expected NAME=SIZE with SIZE >= 1, got {text!r}")
    return name, int(size)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def _non_negative(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    """The ``kiln`` argument parser."""
    from kiln import __version__

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks on errors (also KILN_DEBUG=1)")
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="no progress messages on stderr")
    parser = _Parser(
        prog="kiln",
        description="kiln, a model compiler: inspect, run and benchmark ONNX models across "
        "backends, and export built-in models.",
        epilog="A MODEL is an ONNX file or zoo:NAME (a built-in model, see 'kiln zoo list').",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"kiln {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                parser_class=_Parser)

    p = sub.add_parser("inspect", parents=[common], help="op histogram, parameters, FLOPs, I/O",
                       description="Print what a model holds: op histogram, parameter count and "
                       "bytes, a FLOPs estimate, inputs and outputs, opsets, producer.")
    _model_arg(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    _dims_arg(p, "in the FLOPs estimate")
    p.set_defaults(func=_cmd_inspect)

    p = sub.add_parser("run", parents=[common], help="run a model once and summarize outputs",
                       description="Run a model once, on given or random valid inputs, and print "
                       "each output's shape, dtype and statistics.")
    _model_arg(p)
    p.add_argument("--inputs", metavar="NPZ", type=Path,
                   help="inputs as a .npz keyed by input name (default: random valid inputs)")
    p.add_argument("--backend", default="ort", help="backend to run on (default: ort)")
    p.add_argument("--output", metavar="NPZ", type=Path, help="save the outputs to this .npz")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default: 0)")
    _dims_arg(p, "of the random inputs")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("bench", parents=[common], help="benchmark a model across backends",
                       description="Benchmark a model on each backend after warm-up: median and "
                       "p90 latency, throughput, peak memory, agreement between backends.")
    _model_arg(p)
    p.add_argument("--backends", default="ort",
                   help="comma-separated backends, the first being the agreement baseline "
                   "(default: ort; e.g. ort,reference)")
    p.add_argument("--runs", type=_positive, default=20, help="timed runs (default: 20)")
    p.add_argument("--warmup", type=_non_negative, default=3,
                   help="untimed warm-up runs (default: 3)")
    p.add_argument("--threads", type=_positive,
                   help="intra-op threads (default: all cores this process may use)")
    p.add_argument("--ort-optimize", choices=["all", "extended", "basic", "disable"],
                   default="all", help="ONNX Runtime graph optimization level (default: all)")
    p.add_argument("--json", metavar="OUT", type=Path, dest="json_out",
                   help="also write the result as JSON (schema in kiln.bench.schema)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default: 0)")
    _dims_arg(p, "of the random inputs")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("optimize", parents=[common], help="run optimization passes on a model",
                       description="Run a pass pipeline on a model, verifying the IR after "
                       "every pass, and write the result. Prints one row per pass run and the "
                       "node counts before and after.",
                       epilog="Passes: see kiln.passes.available_passes(); a pipeline string "
                       "is e.g. 'fold-constants,eliminate-dead-code{remove_custom_ops=true}'.")
    _model_arg(p)
    p.add_argument("-o", "--output", metavar="FILE", type=Path, required=True,
                   help="the optimized .onnx file to write")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--pipeline", metavar="NAME",
                       help="named pipeline: default (keeps float semantics) or none "
                       "(default: default)")
    which.add_argument("--passes", metavar="PIPELINE",
                       help="comma-separated passes with options, e.g. "
                       "'fold-constants,eliminate-dead-code' (instead of --pipeline)")
    p.add_argument("--check-numerics", action="store_true",
                   help="run the model with ONNX Runtime before and after each pass on random "
                   "inputs and fail on the first pass that changes an output")
    p.add_argument("--no-verify", action="store_true",
                   help="do not verify the IR after each pass")
    p.add_argument("--report", metavar="OUT", type=Path,
                   help="also write the per-pass report as JSON")
    p.add_argument("--explain", metavar="RULE",
                   help="after optimizing, print for each node where the rewrite rule RULE "
                   "(or the rules of the fusion pass RULE) could still apply why it does not "
                   "fire")
    p.set_defaults(func=_cmd_optimize)

    p = sub.add_parser("compile", parents=[common], help="compile a model into a deployable "
                       "artifact", description="Compile a model for a backend and write a "
                       "deployable artifact: for tvm a shared library (weights inside) and "
                       "manifest.json that load with TVM's runtime alone; for ort an optimized "
                       "model.onnx and manifest.json. The tvm backend caches builds by a "
                       "functional hash of the graph and target.")
    _model_arg(p)
    p.add_argument("-o", "--output", metavar="DIR", type=Path, required=True,
                   help="the artifact directory to write")
    p.add_argument("--backend", default="tvm", help="backend: tvm or ort (default: tvm)")
    p.add_argument("--target", help="target: llvm (this CPU) or cuda for tvm; cpu or cuda for "
                   "ort (default: the backend's first)")
    p.add_argument("--pipeline", metavar="NAME", default=None,
                   help="kiln pass pipeline before lowering (default: backend for tvm, "
                   "default for ort; none to skip)")
    p.add_argument("--threads", type=_positive,
                   help="threads the compiled code uses (default: all cores)")
    p.add_argument("--no-cache", action="store_true",
                   help="tvm: build even when the compile cache has this graph and target")
    p.add_argument("--check", action="store_true",
                   help="run the result on random inputs and compare with ONNX Runtime "
                   "(optimizations off) on the input model")
    _dims_arg(p, "to compile for (default 1; tvm specializes to static shapes)")
    p.set_defaults(func=_cmd_compile)

    p = sub.add_parser("zoo", parents=[common], help="list or export built-in models",
                       description="Built-in models, defined in code (needs the torch extra).")
    zoo = p.add_subparsers(dest="zoo_command", metavar="ACTION", required=True,
                           parser_class=_Parser)
    q = zoo.add_parser("list", parents=[common], help="list the built-in models",
                       description="List the built-in models.")
    q.set_defaults(func=_cmd_zoo_list)
    q = zoo.add_parser("export", parents=[common], help="export a built-in model to ONNX",
                       description="Export a built-in model to an ONNX file.")
    q.add_argument("name", metavar="NAME", help="zoo model name (see 'kiln zoo list')")
    q.add_argument("-o", "--output", metavar="FILE", type=Path, required=True,
                   help="the .onnx file to write")
    q.add_argument("--batch", type=_positive, default=1, help="batch size (default: 1)")
    q.add_argument("--dynamic-batch", action="store_true",
                   help="make the batch dimension symbolic ('batch')")
    q.set_defaults(func=_cmd_zoo_export)

    p = sub.add_parser("demo", parents=[common], help="kiln's main job on a built-in model",
                       description="Export a built-in model, load and verify it, optimize it "
                       "(when kiln.optimize exists), compile it with ONNX Runtime and "
                       "onnx.reference, check their outputs agree, export a deployable "
                       "artifact, and benchmark.")
    p.add_argument("--model", default=DEMO_MODEL, metavar="NAME",
                   help=f"zoo model (default: {DEMO_MODEL})")
    p.add_argument("--runs", type=_positive, default=20, help="timed runs (default: 20)")
    p.add_argument("--print-ir", action="store_true",
                   help="also print the model in kiln's text form")
    p.set_defaults(func=_cmd_demo)
    return parser


def _model_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help="an ONNX file, or zoo:NAME")
    p.add_argument("--batch", type=_positive,
                   help="batch size of a zoo:NAME model (default: 1); for files use --dim")


def _dims_arg(p: argparse.ArgumentParser, where: str) -> None:
    p.add_argument("--dim", metavar="NAME=SIZE", type=_dim, action="append", default=[],
                   help=f"size of a symbolic dimension {where} (default 1); repeatable")


# -- entry point ----------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``kiln`` command; return its exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, bad arguments
        return exc.code if isinstance(exc.code, int) else 1
    debug = getattr(args, "debug", False) or os.environ.get("KILN_DEBUG", "") not in ("", "0")
    progress = _Progress(getattr(args, "quiet", False))
    try:
        return args.func(args, progress)
    except KeyboardInterrupt:
        print("kiln: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # stdout closed early, e.g. `kiln inspect m.onnx | head`
        _silence_stdout()
        return 141
    except _user_errors() as exc:
        if debug:
            raise
        print(f"kiln: error: {_message(exc)}", file=sys.stderr)
        return 1


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that flushing it at exit does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout without a file descriptor (tests)
        pass


def _output_path(path: Path) -> Path:
    """``path``, with its folder created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors caused by the input, not by kiln: reported on one line, no traceback."""
    from google.protobuf.message import DecodeError
    from onnx.checker import ValidationError

    from kiln.errors import KilnError

    return (KilnError, OSError, DecodeError, ValidationError)


def _message(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{where}"
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


# -- models ---------------------------------------------------------------------------


def _load(spec: str, progress: _Progress, batch: int | None = None):
    """A kiln Model from an ONNX file or ``zoo:NAME``, and a display name."""
    from kiln import KilnError, load

    if spec.startswith(ZOO_PREFIX):
        name = spec[len(ZOO_PREFIX):]
        return _zoo_model(name, progress, batch=batch or 1), name
    if batch is not None:
        raise KilnError("--batch applies to zoo:NAME models; for a file use --dim NAME=SIZE")
    path = Path(spec)
    if not path.is_file():
        raise KilnError(f"{spec}: no such file" if not path.exists() else f"{spec}: not a file")
    with progress.step(f"loading {path.name}"):
        model = load(path)
    return model, path.stem


def _zoo():
    from kiln import KilnError

    try:
        import kiln.zoo as zoo
    except ImportError as exc:
        raise KilnError(f"zoo models need the torch extra ({exc})") from None
    return zoo


def _zoo_model(name: str, progress: _Progress, *, batch: int = 1, dynamic_batch: bool = False):
    from kiln import KilnError

    zoo = _zoo()
    try:
        zoo.get(name)
    except KeyError as exc:
        raise KilnError(exc.args[0]) from None
    with progress.step(f"exporting {name} from the zoo (torch -> ONNX)"):
        try:
            return zoo.to_model(name, batch=batch, dynamic_batch=dynamic_batch)
        except ValueError as exc:
            raise KilnError(str(exc)) from None


def _dims(args: argparse.Namespace) -> dict[str, int]:
    return dict(args.dim)


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    from kiln import KilnError

    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except (ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise KilnError(f"{path}: not a readable .npz of arrays ({exc})") from None


# -- inspect --------------------------------------------------------------------------


def _cmd_inspect(args: argparse.Namespace, progress: _Progress) -> int:
    from kiln.bench import inspect_model

    model, name = _load(args.model, progress, args.batch)
    with progress.step("inferring shapes for the FLOPs estimate"):
        stats = inspect_model(model, _dims(args))
    if args.json:
        print(json.dumps({"model": name, **stats.to_dict()}, indent=2))
    else:
        print(format_stats(name, stats))
    return 0


def format_stats(name: str, stats) -> str:
    """The text ``kiln inspect`` prints for :class:`kiln.bench.ModelStats`."""
    from kiln.bench import format_bytes, format_count, format_table

    flops = stats.flops
    opsets = ", ".join(f"{d or 'ai.onnx'} {v}" for d, v in stats.opset_imports.items())
    lines = [
        f"model: {name}" + (f" (graph {stats.name!r})" if stats.name else ""),
        f"producer: {stats.producer or 'unknown'}; ir_version {stats.ir_version}; "
        f"opsets: {opsets}",
        f"nodes: {stats.nodes}"
        + (f" (+{stats.subgraph_nodes} in subgraphs)" if stats.subgraph_nodes else "")
        + (f"; {stats.functions} local functions" if stats.functions else ""),
        f"parameters: {stats.parameters:,} ({format_bytes(stats.parameter_bytes)})",
        f"FLOPs: {_flops_text(flops)}",
    ]
    lines += [f"  note: {n}" for n in flops.notes]
    lines.append("inputs:")
    lines += [f"  {s.name}  {s.type_str}" for s in stats.inputs]
    lines.append("outputs:")
    lines += [f"  {s.name}  {s.type_str}" for s in stats.outputs]
    rows = []
    for op, count in stats.op_histogram.items():
        if op in flops.by_op:
            op_flops = format_count(flops.by_op[op])
        elif op in flops.uncounted:
            op_flops = "unknown"
        else:
            op_flops = "-"
        rows.append([op, str(count), op_flops])
    lines += ["ops:", _indent(format_table(rows, ["op", "nodes", "FLOPs"]))]
    return "\n".join(lines)


def _flops_text(flops) -> str:
    from kiln.bench import format_count

    if flops.complete:
        return format_count(flops.total, "FLOPs")
    missing = ", ".join(f"{op} x{n}" for op, n in flops.uncounted.items())
    if flops.total == 0:
        return f"unknown (not counted: {missing})"
    return f"at least {format_count(flops.total, 'FLOPs')} (not counted: {missing})"


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


# -- run ------------------------------------------------------------------------------


def _cmd_run(args: argparse.Namespace, progress: _Progress) -> int:
    import kiln

    model, _ = _load(args.model, progress, args.batch)
    with progress.step(f"compiling for {args.backend}"):
        exe = kiln.compile(model, args.backend)
    if args.inputs is not None:
        feeds = _load_npz(args.inputs)
        origin = str(args.inputs)
    else:
        feeds = exe.random_inputs(seed=args.seed, dims=_dims(args))
        origin = f"random, seed {args.seed}"
    start = time.perf_counter()
    outputs = exe.run(feeds)
    elapsed = (time.perf_counter() - start) * 1e3
    print(f"inputs ({origin}):")
    print(_summary_table(feeds))
    print(f"outputs ({args.backend}, {elapsed:.1f} ms):")
    print(_summary_table(outputs))
    if args.output is not None:
        np.savez(_output_path(args.output), **outputs)
        progress.say(f"wrote {args.output}")
    return 0


def _summary_table(arrays: Mapping[str, np.ndarray]) -> str:
    from kiln.bench import format_table

    rows = []
    for name, a in arrays.items():
        a = np.asarray(a)
        row = [name, str(a.dtype), "[" + ",".join(map(str, a.shape)) + "]"]
        if a.size and a.dtype.kind in "biuf":
            f = a.astype(np.float64)
            row += [f"{f.min():.4g}", f"{f.max():.4g}", f"{f.mean():.4g}", f"{f.std():.4g}"]
        else:
            row += ["", "", "", ""]
        rows.append(row)
    return _indent(format_table(rows, ["name", "dtype", "shape", "min", "max", "mean", "std"]))


# -- bench ----------------------------------------------------------------------------


def _cmd_bench(args: argparse.Namespace, progress: _Progress) -> int:
    from kiln import KilnError
    from kiln.backends import available_backends
    from kiln.bench import bench, format_bench, validate

    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = [b for b in backends if b not in available_backends()]
    if not backends or unknown:
        raise KilnError(
            f"unknown backend {unknown[0]!r} (backends: {', '.join(available_backends())})"
            if unknown else "--backends is empty"
        )
    model, name = _load(args.model, progress, args.batch)
    result = bench(
        model,
        backends,
        runs=args.runs,
        warmup=args.warmup,
        threads=args.threads,
        dims=_dims(args),
        seed=args.seed,
        options={"ort": {"optimize": args.ort_optimize}},
        name=name,
        progress=progress.say,
    )
    validate(result)
    print(format_bench(result))
    if args.json_out is not None:
        _output_path(args.json_out).write_text(json.dumps(result, indent=2) + "\n")
        progress.say(f"wrote {args.json_out}")
    return 0 if any(r["status"] == "ok" for r in result["results"]) else 1


# -- optimize -------------------------------------------------------------------------


def _cmd_optimize(args: argparse.Namespace, progress: _Progress) -> int:
    from kiln import save
    from kiln.passes import get_pipeline, optimize, parse_pipeline

    # Resolve the passes first: a typo fails before a large model is loaded.
    if args.passes is not None:
        passes = parse_pipeline(args.passes)
    else:
        passes = get_pipeline(args.pipeline or "default")
    if args.explain is not None:
        from kiln.passes.rewrite import explain, get_rules

        get_rules(args.explain)  # an unknown rule fails before the model is loaded
    model, _ = _load(args.model, progress, args.batch)
    progress.say("optimizing:")
    model, report = optimize(model, passes=passes, verify=not args.no_verify,
                             check_numerics=args.check_numerics, report=True,
                             progress=lambda line: progress.say(f"  {line}"))
    with progress.step(f"writing {args.output}"):
        save(model, _output_path(args.output))
    print(report.format())
    if args.explain is not None:
        print("\n".join(explain(model, args.explain)))
    if args.report is not None:
        _output_path(args.report).write_text(report.to_json() + "\n")
        progress.say(f"wrote {args.report}")
    return 0


# -- compile --------------------------------------------------------------------------


def _cmd_compile(args: argparse.Namespace, progress: _Progress) -> int:
    import kiln
    from kiln.backends import get_backend

    backend = get_backend(args.backend)  # an unknown backend fails before loading
    options: dict[str, Any] = {}
    names = backend.option_names()
    if args.threads is not None and "threads" in names:
        options["threads"] = args.threads
    if "dims" in names:
        options["dims"] = _dims(args)
    if "cache" in names and args.no_cache:
        options["cache"] = False
    pipeline = args.pipeline
    if "pipeline" in names and pipeline is not None:
        options["pipeline"] = pipeline
    model, _ = _load(args.model, progress, args.batch)
    compiled_model = model
    if "pipeline" not in names and pipeline != "none":
        with progress.step(f"optimizing ({pipeline or 'default'} pipeline)"):
            compiled_model = kiln.optimize(model, pipeline or "default")
    with progress.step(f"compiling for {args.backend}"):
        exe = kiln.compile(compiled_model, args.backend, args.target, **options)
    with progress.step(f"writing {args.output}"):
        exe.export(args.output)
    files = ", ".join(sorted(p.name for p in args.output.iterdir() if not p.name.startswith(".")))
    cached = getattr(exe, "from_cache", False)
    seconds = getattr(exe, "compile_seconds", None)
    how = "from the compile cache" if cached else (
        f"built in {seconds:.1f} s" if seconds is not None else "compiled")
    print(f"{args.backend}/{exe.target}: {how}; wrote {args.output}: {files}")
    if args.check:
        reference = kiln.compile(model, "ort", optimize="disable")
        feeds = reference.random_inputs(seed=0, dims=_dims(args))
        expected, got = reference.run(feeds), exe.run(feeds)
        worst = max(float(np.max(np.abs(got[k] - expected[k]))) if got[k].size else 0.0
                    for k in expected)
        same = all(np.allclose(got[k], expected[k], rtol=1e-3, atol=1e-4) for k in expected)
        print(f"check against ONNX Runtime (rtol 1e-3, atol 1e-4): "
              f"{'ok' if same else 'OUTPUTS DIFFER'}, max |diff| {worst:.2e}")
        return 0 if same else 1
    return 0


# -- zoo ------------------------------------------------------------------------------


def _cmd_zoo_list(args: argparse.Namespace, progress: _Progress) -> int:
    zoo = _zoo()
    entries = zoo.list_models()
    width = max(len(e.name) for e in entries)
    for e in entries:
        print(f"{e.name.ljust(width)}  {e.description}")
    return 0


def _cmd_zoo_export(args: argparse.Namespace, progress: _Progress) -> int:
    from kiln import save

    model = _zoo_model(args.name, progress, batch=args.batch, dynamic_batch=args.dynamic_batch)
    with progress.step(f"writing {args.output}"):
        save(model, _output_path(args.output))
    return 0


# -- demo -----------------------------------------------------------------------------


def _cmd_demo(args: argparse.Namespace, progress: _Progress) -> int:
    """Export -> load -> verify -> optimize -> compile (ort, reference) -> agree -> export
    artifact -> benchmark."""
    import kiln
    from kiln.bench import agreement, bench, format_bench, inspect_model

    name = args.model
    with tempfile.TemporaryDirectory(prefix="kiln-demo-") as tmp:
        path = Path(tmp) / f"{name}.onnx"
        kiln.save(_zoo_model(name, progress, dynamic_batch=True), path)
        model, _ = _load(os.fspath(path), progress)
        _verify(model, progress)
        print(f"== 1. the model, as loaded from {path.name}")
        print(format_stats(name, inspect_model(model)))
        if args.print_ir:
            print(model)

        print("== 2. optimize")
        model = _optimize(model, progress)

        print("== 3. compile and check numerics")
        feeds, labels = _demo_inputs(name, model)
        baseline = kiln.compile(kiln.load(path), "ort", optimize="disable").run(feeds)
        rows = []
        for backend, options in (("ort", {}), ("reference", {})):
            with progress.step(f"compiling and running on {backend}"):
                exe = kiln.compile(model, backend, **options)
                outputs = exe.run(feeds)
            rows.append((backend, agreement("ort (unoptimized)", baseline, outputs), outputs))
        ok = _print_agreement(rows, labels)

        print("== 4. deployable artifact")
        ok = _check_artifact(kiln.compile(model, "ort"), feeds, Path(tmp) / "artifact") and ok

        print("== 5. benchmark (batch 1)")
        result = bench(model, ["ort", "reference"], runs=args.runs, warmup=3,
                       dims={"batch": 1}, name=name, progress=progress.say)
        print(format_bench(result))
    if not ok:
        print("kiln: error: the demo's numerics checks failed", file=sys.stderr)
        return 1
    return 0


def _verify(model, progress: _Progress) -> None:
    from kiln.ir import verify

    with progress.step("verifying the IR and sorting it topologically"):
        verify(model)
        model.graph.sort()
        verify(model)


def _optimize(model, progress: _Progress):
    """``kiln.optimize(model)`` when the pass pipeline exists; the model as is otherwise."""
    import kiln

    optimize = getattr(kiln, "optimize", None)
    if optimize is None:
        print("kiln.optimize is not available yet: the model goes on as loaded")
        return model
    before = len(model.graph)
    with progress.step("running kiln.optimize"):
        result = optimize(model)
    optimized = getattr(result, "model", result)
    _verify(optimized, progress)
    print(f"kiln.optimize: {before} -> {len(optimized.graph)} nodes")
    return optimized


def _demo_inputs(name: str, model) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Held-out digits (with labels) for digits_cnn; random inputs (batch 4) otherwise."""
    from kiln.backends import model_input_specs, random_inputs_for

    if name == "digits_cnn":
        _, _, x_test, y_test = _zoo().digits_data()
        return {model_input_specs(model)[0].name: x_test}, y_test
    return random_inputs_for(model, dims={"batch": 4}), None


def _print_agreement(rows: Sequence[tuple[str, dict[str, Any], dict]], labels) -> bool:
    from kiln.bench import format_table

    table = []
    for backend, agree, outputs in rows:
        diff = agree["max_abs_diff"]
        cells = [backend, "yes" if agree["within_tolerance"] else "NO",
                 "-" if diff is None else f"{diff:.2e}"]
        if labels is not None:
            logits = next(iter(outputs.values()))
            cells.append(f"{(logits.argmax(axis=1) == labels).mean():.1%}")
        table.append(cells)
    header = ["backend", "agrees", "max |diff|"] + (["top-1"] if labels is not None else [])
    print("outputs against ONNX Runtime on the unoptimized model (rtol 1e-4, atol 1e-5)"
          + (f", on {len(labels)} held-out images:" if labels is not None else ":"))
    print(format_table(table, header))
    return all(agree["within_tolerance"] for _, agree, _ in rows)


def _check_artifact(exe, feeds: Mapping[str, np.ndarray], directory: Path) -> bool:
    """Export, reload with plain onnxruntime, and compare."""
    import onnxruntime as ort

    exe.export(directory)
    files = ", ".join(sorted(p.name for p in directory.iterdir()))
    session = ort.InferenceSession(os.fspath(directory / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    reloaded = session.run(None, dict(feeds))
    expected = exe.run(feeds)
    same = all(np.allclose(a, b, rtol=1e-4, atol=1e-5)
               for a, b in zip(reloaded, expected.values(), strict=True))
    print(f"exported {files}; reloaded with plain onnxruntime: "
          + ("same outputs" if same else "OUTPUTS DIFFER"))
    return same
