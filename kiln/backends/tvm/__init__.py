"""The tvm backend: Apache TVM Relax with kiln's schedules and kernels.

Importing this package registers ``backend="tvm"``; TVM itself is imported only when a
model is compiled (it needs the ``tvm`` extra).
"""

from kiln.backends.tvm._backend import TvmBackend, TvmExecutable, TvmOptions, load_artifact
from kiln.backends.tvm._cache import CompileCache, functional_hash
from kiln.backends.tvm._target import host_cpu, tvm_target

__all__ = [
    "CompileCache",
    "TvmBackend",
    "TvmExecutable",
    "TvmOptions",
    "functional_hash",
    "host_cpu",
    "load_artifact",
    "tvm_target",
]
