"""kiln: a model compiler with one graph IR of ONNX semantics.

The public API is the names in ``__all__``; everything else is internal.
"""

from kiln.errors import KilnError
from kiln.frontends.onnx import load, save

__version__ = "0.1.0"


def from_torch(module, example_inputs, dynamic_shapes=None, **kwargs):
    """Convert a torch.nn.Module to a kiln Model (needs the ``torch`` extra).

    See :func:`kiln.frontends.torch.from_torch`.
    """
    from kiln.frontends.torch import from_torch as _from_torch

    return _from_torch(module, example_inputs, dynamic_shapes, **kwargs)


def compile(model, backend="ort", target=None, **options):
    """Compile a model for a backend ("ort", "reference", ...) into an Executable.

    See :func:`kiln.backends.compile`.
    """
    from kiln.backends import compile as _compile

    return _compile(model, backend, target, **options)


def optimize(model, pipeline="default", passes=None, *, verify=True, fixed_point=True,
             check_numerics=False, report=False):
    """Optimize a model with a named pipeline or a pipeline string, to a fixed point.

    Returns the model, or ``(model, report)`` when ``report=True``. See
    :func:`kiln.passes.optimize`.
    """
    from kiln.passes import optimize as _optimize

    return _optimize(model, pipeline, passes, verify=verify, fixed_point=fixed_point,
                     check_numerics=check_numerics, report=report)


# kiln.bench is the benchmark package and, being callable, the function
# kiln.bench(model, backends=("ort",), ...) -> result dict (see kiln.bench.bench). A plain
# function here would be replaced by the package the first time anything imports it.
from kiln import bench  # noqa: E402

__all__ = ["KilnError", "__version__", "bench", "compile", "from_torch", "load", "optimize",
           "save"]
