"""Built-in models for demos, tests and benchmarks (needs the ``torch`` extra).

Every model is defined in plain torch with deterministic weights: seeded random weights
for the architecture models, and weights trained in a few seconds on scikit-learn's
bundled digits for ``digits_cnn``. Nothing is downloaded.

    >>> from kiln import zoo
    >>> [entry.name for entry in zoo.list_models()]
    ['resnet18', 'mobilenetv2', 'bert', 'mlp', 'lstm', 'digits_cnn']
    >>> model = zoo.to_model("mlp", batch=1, dynamic_batch=True)  # a kiln.ir.Model
"""

from __future__ import annotations

try:
    import torch  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without torch
    raise ImportError("kiln.zoo needs the torch extra: pip install 'kiln-compiler[torch]'") from exc

import os
from pathlib import Path
from typing import Any

from kiln.frontends.onnx import save
from kiln.frontends.torch import from_torch
from kiln.ir import Model
from kiln.zoo._digits import accuracy, digits_data
from kiln.zoo._registry import ENTRIES, ZooEntry

_BY_NAME: dict[str, ZooEntry] = {entry.name: entry for entry in ENTRIES}


def list_models() -> list[ZooEntry]:
    """All built-in models, in a fixed order."""
    return list(ENTRIES)


def get(name: str) -> ZooEntry:
    """The zoo entry called ``name``.

    Raises:
        KeyError: If there is no such model; the message lists the valid names.
    """
    try:
        return _BY_NAME[name]
    except KeyError:
        valid = ", ".join(_BY_NAME)
        raise KeyError(f"no zoo model named {name!r}; valid names: {valid}") from None


def to_model(name: str, batch: int = 1, dynamic_batch: bool = False, **kwargs: Any) -> Model:
    """Build a zoo model and convert it to a kiln Model with ``kiln.from_torch``.

    Args:
        name: The zoo name, e.g. ``"resnet18"``.
        batch: Batch size of the example inputs; it is the model's static batch size
            unless ``dynamic_batch`` is set.
        dynamic_batch: Make dimension 0 of every input a symbolic ``"batch"``.
        **kwargs: Passed on to ``from_torch`` (``exporter``, ``opset``, ``optimize``).

    Returns:
        The kiln Model, with the entry's input and output names.

    Raises:
        KeyError: If there is no such model.
        ValueError: If ``dynamic_batch`` is asked of a model that does not support it.
    """
    entry = get(name)
    if dynamic_batch and not entry.dynamic_batch:
        raise ValueError(f"zoo model {name!r} does not support a dynamic batch dimension")
    return from_torch(
        entry.build(),
        entry.example_inputs(batch),
        input_names=entry.input_names,
        output_names=entry.output_names,
        dynamic_batch=dynamic_batch,
        **kwargs,
    )


def export(name: str, path: str | os.PathLike[str], **kwargs: Any) -> Path:
    """Write a zoo model as an ONNX file.

    Args:
        name: The zoo name.
        path: Where to write the ``.onnx`` file.
        **kwargs: Passed on to :func:`to_model` (``batch``, ``dynamic_batch``, ...).

    Returns:
        The path written.
    """
    target = Path(path)
    save(to_model(name, **kwargs), target)
    return target


__all__ = [
    "ZooEntry",
    "accuracy",
    "digits_data",
    "export",
    "get",
    "list_models",
    "to_model",
]
