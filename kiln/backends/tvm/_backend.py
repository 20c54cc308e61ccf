"""The tvm backend: kiln's passes, TVM's Relax, kiln's schedules, one shared library.

``compile(model, backend="tvm", target="llvm"|"cuda")``:

1. Shapes are made static: symbolic input dimensions take the values of the ``dims``
   option (1 when not given), and kiln's ``backend`` pipeline folds the shape
   computations they feed (TVM's importer cannot follow a Reshape fed by a Shape
   subgraph) and fuses what kiln's kernels take whole.
2. The graph is imported into Relax (TVM's ONNX importer, extended with kiln's
   converters: see :mod:`kiln.backends.tvm._import`).
3. :mod:`kiln.backends.tvm._pipeline` lowers, fuses and schedules it with kiln's rules
   (:mod:`kiln.kernels`), and TVM compiles it.
4. The library is cached under a functional hash of the graph and the target
   (:mod:`kiln.backends.tvm._cache`): the same graph for the same target is not rebuilt.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from kiln.backends._base import Backend, Executable, model_op_labels, one_line, register_backend
from kiln.backends.tvm._cache import LIBRARY_FILE, CompileCache, cache_key
from kiln.backends.tvm._target import ALIASES, TARGETS, physical_cores, tvm_device, tvm_target
from kiln.errors import KilnError
from kiln.ir import Model, serde

SCHEDULES = ("kiln", "none")
MANIFEST_FILE = "manifest.json"
ARTIFACT_FORMAT = "kiln-tvm-artifact"


@dataclasses.dataclass(frozen=True)
class TvmOptions:
    """Options of the tvm backend.

    Attributes:
        threads: CPU threads the generated code uses (default: every core this process
            may run on).
        pipeline: the kiln pass pipeline run before lowering (``backend`` by default;
            ``none`` imports the graph as given, after making its shapes static).
        schedules: ``kiln`` (kiln's kernels and schedules) or ``none`` (TVM's unscheduled
            code: the untuned baseline, for comparison only).
        dims: values for symbolic input dimensions (``{"batch": 8}``); those not given
            are 1. The compiled code is specialized to these shapes.
        cache: look up and store compiled libraries in the compile cache.
        cache_dir: the cache directory (default ``$KILN_CACHE_DIR`` or ``~/.cache/kiln``).
    """

    threads: int | None = None
    pipeline: str = "backend"
    schedules: str = "kiln"
    dims: Mapping[str, int] | None = None
    cache: bool = True
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        if self.threads is not None and (
            isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 1
        ):
            raise KilnError(f"tvm option threads must be a positive integer, not {self.threads!r}")
        if self.schedules not in SCHEDULES:
            raise KilnError(
                f"tvm option schedules must be one of {', '.join(SCHEDULES)}, "
                f"not {self.schedules!r}"
            )
        for name, value in (self.dims or {}).items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise KilnError(f"tvm option dims: {name!r} must be a positive integer")


@register_backend
class TvmBackend(Backend):
    """Apache TVM (``backend="tvm"``): targets ``llvm`` (this CPU; alias ``cpu``) and
    ``cuda``."""

    name = "tvm"
    targets = (*TARGETS, *ALIASES)
    Options = TvmOptions

    def supports(self, model: Model) -> list[str]:
        """Ops neither TVM's ONNX importer nor kiln's converters lower."""
        from kiln.backends.tvm._import import lowerable

        missing = []
        for (domain, op_type), _opset in sorted(model_op_labels(model).items()):
            if not lowerable(domain, op_type):
                missing.append(f"{domain}::{op_type}" if domain else op_type)
        return missing

    def compile(self, model: Model) -> TvmExecutable:
        return TvmExecutable(model, ALIASES.get(self.target, self.target), self.options)


class TvmExecutable(Executable):
    """A model compiled by TVM into a Relax VM executable.

    Attributes:
        lowered: the static-shaped, optimized model that was imported into Relax.
        cache_key: the compile cache key of this build.
        from_cache: whether the library came from the compile cache.
        compile_seconds: time spent building (0 when loaded from the cache), and
            ``timings``: seconds per stage (optimize, import, build, load).
    """

    def __init__(self, model: Model, target: str, options: TvmOptions) -> None:
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        lowered = _static_model(model, options)
        timings["optimize"] = time.perf_counter() - t0
        super().__init__(lowered, "tvm", target, dataclasses.asdict(options))
        self.source_model = model
        self.lowered = lowered
        self.tvm_target = tvm_target(target, options.threads)
        self.timings = timings
        if options.threads is not None or "TVM_NUM_THREADS" not in os.environ:
            _set_threads(options.threads or physical_cores())
        code_options = {"pipeline": options.pipeline, "schedules": options.schedules}
        self.cache_key = cache_key(lowered, str(self.tvm_target), code_options)
        cache = CompileCache(options.cache_dir) if options.cache else None
        library = cache.lookup(self.cache_key) if cache else None
        self.from_cache = library is not None
        import tvm

        if library is None:
            executable = self._build(lowered, options)
            if cache is not None:
                library = cache.store(
                    self.cache_key,
                    executable,
                    {"target": str(self.tvm_target), **code_options,
                     "inputs": [s.to_dict() for s in self.input_specs]},
                )
        t0 = time.perf_counter()
        if library is not None:
            executable = tvm.runtime.load_module(str(library))
        self.library_path = library
        self._executable = executable
        self.device = tvm_device(target)
        self.vm = tvm.runtime.vm.VirtualMachine(executable, self.device)
        self._main = self.vm["main"]
        self._inputs: list[_InputSlot] | None = None
        self._lock = threading.Lock()
        timings["load"] = time.perf_counter() - t0
        self.compile_seconds = 0.0 if self.from_cache else timings["import"] + timings["build"]

    def _build(self, lowered: Model, options: TvmOptions):

        from kiln.backends.tvm._import import import_model
        from kiln.backends.tvm._pipeline import build

        t0 = time.perf_counter()
        mod = import_model(lowered)
        self.timings["import"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        rules = [] if options.schedules == "none" else None
        try:
            executable = build(mod, self.tvm_target, rules, convert_layout=rules is None)
        except (RuntimeError, ValueError, TypeError) as exc:
            raise KilnError(f"tvm failed to build the model: {one_line(exc)}") from None
        self.timings["build"] = time.perf_counter() - t0
        return executable

    def _run(self, feeds: Mapping[str, Any]) -> list[np.ndarray]:

        with self._lock:
            if self._inputs is None:
                self._inputs = [_InputSlot(s, self.device) for s in self.input_specs]
            args = [slot.fill(feeds[slot.name]) for slot in self._inputs]
            try:
                result = self._main(*args)
            except (RuntimeError, ValueError, TypeError) as exc:
                raise KilnError(f"tvm failed to run the model: {one_line(exc)}") from None
            outputs = _flatten(result)
            if len(outputs) != len(self.output_specs):
                raise KilnError(
                    f"tvm returned {len(outputs)} outputs, the model has "
                    f"{len(self.output_specs)}"
                )
            # Copies: an output may alias an input slot or a constant of the library.
            return [_to_numpy(o) for o in outputs]

    def export(self, directory: str | os.PathLike, *, external_data: bool | None = None) -> Path:
        """Write ``model.so`` (the Relax VM executable, weights embedded) and
        ``manifest.json`` into ``directory``.

        The artifact runs with TVM's runtime alone::

            lib = tvm.runtime.load_module("model.so")
            vm = tvm.runtime.vm.VirtualMachine(lib, tvm.cpu())
            outputs = vm["main"](*inputs)  # inputs in manifest order
        """
        del external_data  # the library holds the weights
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        target_lib = directory / LIBRARY_FILE
        tmp = directory / f".{LIBRARY_FILE}.tmp"
        if self.library_path is not None:
            shutil.copyfile(self.library_path, tmp)
        else:
            self._executable.export_library(str(tmp))
        os.replace(tmp, target_lib)
        import tvm

        import kiln

        manifest = {
            "format": ARTIFACT_FORMAT,
            "kiln_version": kiln.__version__,
            "tvm_version": tvm.__version__,
            "backend": "tvm",
            "target": self.target,
            "tvm_target": str(self.tvm_target),
            "library": LIBRARY_FILE,
            "entry": "main",
            "inputs": [s.to_dict() for s in self.input_specs],
            "outputs": [s.to_dict() for s in self.output_specs],
        }
        (directory / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
        return directory


class _InputSlot:
    """A 64-byte-aligned host buffer for one input, shared with TVM through DLPack.

    Converting a numpy array with ``tvm.runtime.tensor`` costs tens of microseconds, which
    is the whole run time of a small model; copying into a buffer TVM already wraps costs
    about one. Inputs that DLPack cannot carry (or device targets) take the slow path.
    """

    def __init__(self, spec, device) -> None:
        import tvm

        self.name = spec.name
        self.device = device
        self.buffer: np.ndarray | None = None
        self.tensor = None
        if device.dlpack_device_type() != 1 or spec.dtype is None or spec.shape is None:
            return  # not host memory (1 = kDLCPU), or not a plain tensor
        if not all(isinstance(d, int) for d in spec.shape):
            return
        shape = tuple(spec.shape)
        try:
            dtype = np.dtype(spec.dtype.numpy)
        except (TypeError, AttributeError):
            return
        nbytes = max(1, int(np.prod(shape)) * dtype.itemsize)
        raw = np.empty(nbytes + 64, np.uint8)
        offset = (-raw.ctypes.data) % 64
        buffer = raw[offset:offset + int(np.prod(shape)) * dtype.itemsize]
        buffer = buffer.view(dtype).reshape(shape)
        try:
            self.tensor = tvm.runtime.from_dlpack(buffer)
        except Exception:  # a dtype DLPack cannot carry: the slow path
            return
        self.buffer = buffer

    def fill(self, array: np.ndarray):
        import tvm

        if self.buffer is not None and np.shape(array) == self.buffer.shape:
            np.copyto(self.buffer, array, casting="no")
            return self.tensor
        return tvm.runtime.tensor(np.ascontiguousarray(array), self.device)


def _to_numpy(tensor) -> np.ndarray:
    try:
        return np.array(np.from_dlpack(tensor), copy=True)
    except Exception:  # device memory or a dtype numpy's DLPack cannot take
        return np.asarray(tensor.numpy())


def _flatten(result) -> list:
    if hasattr(result, "numpy"):
        return [result]
    out: list = []
    for item in result:
        out.extend(_flatten(item))
    return out


def _set_threads(threads: int) -> None:
    """Size TVM's runtime thread pool.

    TVM's runtime defaults to half the hardware threads (it assumes two per core), which
    on a 2-CPU machine without SMT is one thread. The pool reads ``TVM_NUM_THREADS`` when
    it is created; an explicit ``threads`` option (or kiln's default, every core) is set
    there unless the user set the variable. A pool that already exists with another size
    is reconfigured in place.
    """
    import tvm

    os.environ["TVM_NUM_THREADS"] = str(threads)
    if tvm.runtime.num_threads() != threads:
        tvm.get_global_func("runtime.config_threadpool")(1, threads)


def _static_model(model: Model, options: TvmOptions) -> Model:
    """A copy of ``model`` with every symbolic input dimension fixed (from
    ``options.dims``, else 1), optimized with ``options.pipeline``."""
    from kiln.passes import optimize

    dims = dict(options.dims or {})
    proto = serde.serialize_model(model)
    for value in proto.graph.input:
        if not value.type.HasField("tensor_type"):
            continue
        shape = value.type.tensor_type.shape
        for dim in shape.dim:
            if dim.HasField("dim_value"):
                continue
            size = dims.get(dim.dim_param, 1)
            dim.Clear()
            dim.dim_value = size
    # Intermediate shapes were inferred with symbolic dims: let inference redo them.
    del proto.graph.value_info[:]
    for value in proto.graph.output:
        if value.type.HasField("tensor_type"):
            for dim in value.type.tensor_type.shape.dim:
                if not dim.HasField("dim_value"):
                    dim.Clear()
    static = serde.deserialize_model(proto)
    try:
        return optimize(static, options.pipeline)
    except KilnError as exc:
        raise KilnError(f"tvm backend: making shapes static failed: {exc}") from None


def load_artifact(directory: str | os.PathLike, device: str = "cpu"):
    """Load an exported tvm artifact with TVM's runtime: returns ``(vm, manifest)``."""
    import tvm

    directory = Path(directory)
    manifest = json.loads((directory / MANIFEST_FILE).read_text())
    lib = tvm.runtime.load_module(str(directory / manifest["library"]))
    dev = tvm.cuda(0) if device == "cuda" else tvm.cpu(0)
    return tvm.runtime.vm.VirtualMachine(lib, dev), manifest


__all__ = ["TvmBackend", "TvmExecutable", "TvmOptions", "load_artifact"]
