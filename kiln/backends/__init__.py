"""Backends: each turns a kiln Model into an Executable.

``compile(model, backend="ort" | "reference" | "tvm", target=None, **options)`` picks a backend
from the registry. A backend is a :class:`Backend` subclass that declares its targets,
its typed options and the ops it cannot run (:meth:`Backend.supports`), and is added with
:func:`register_backend`; compiling a model with ops a backend lacks fails up front,
naming them.
"""

from kiln.backends import ort as _ort  # noqa: F401  (registers "ort")
from kiln.backends import reference as _reference  # noqa: F401  (registers "reference")
from kiln.backends import tvm as _tvm  # noqa: F401  (registers "tvm"; imports TVM lazily)
from kiln.backends._base import (
    Backend,
    Executable,
    available_backends,
    compile,
    get_backend,
    register_backend,
)
from kiln.backends._inputs import (
    DEFAULT_INT_HIGH,
    concrete_shape,
    gather_index_bounds,
    random_inputs,
    random_inputs_for,
)
from kiln.backends._specs import TensorSpec, check_feeds, model_input_specs

__all__ = [
    "DEFAULT_INT_HIGH",
    "Backend",
    "Executable",
    "TensorSpec",
    "available_backends",
    "check_feeds",
    "compile",
    "concrete_shape",
    "gather_index_bounds",
    "get_backend",
    "model_input_specs",
    "random_inputs",
    "random_inputs_for",
    "register_backend",
]
