"""kiln: a model compiler with one graph IR of ONNX semantics.

The public API is the names in ``__all__``; everything else is internal.
"""

from __future__ import annotations

from kiln.errors import KilnError
from kiln.frontends.onnx import load, save

__version__ = "0.1.0"


def from_torch(module, example_inputs, dynamic_shapes=None, **kwargs):
    """Convert a torch.nn.Module to a kiln Model (needs the ``torch`` extra).

    See :func:`kiln.frontends.torch.from_torch`.
    """
    from kiln.frontends.torch import from_torch as _from_torch

    return _from_torch(module, example_inputs, dynamic_shapes, **kwargs)


__all__ = ["KilnError", "__version__", "from_torch", "load", "save"]
