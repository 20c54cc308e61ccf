"""The torch frontend: a ``torch.nn.Module`` becomes a kiln Model by way of ONNX.

Two exporters are available:

* ``"dynamo"`` (the default): ``torch.export.export(strict=False)`` captures an
  ExportedProgram, and ``torch.onnx.export(dynamo=True)`` translates it with onnxscript's
  torchlib. kiln calls torch.export itself, so a failure to capture (for instance a
  dimension asked to be dynamic that the code specializes) is reported as such, instead
  of torch.onnx silently retrying with other strategies.
* ``"torchscript"``: the legacy tracer, ``torch.onnx.export(dynamo=False)``; deprecated
  upstream, kept to compare the two.

By default (``optimize=False``) kiln receives the exporter's graph as translated, without
the exporter's own graph optimizations: those fold BatchNormalization into Conv (both
exporters do) and rewrite other patterns, which would hide from kiln the very ops its
passes exist to fuse and fold. The raw dynamo graph carries some shape plumbing (Shape,
Expand, CastLike, Constant) for kiln's clean-up passes to remove. ``optimize=True`` turns the
exporter's optimizer on (onnxscript's for dynamo, constant folding for torchscript).

The opset defaults to the exporter's (20 for both with torch 2.13).
"""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import warnings
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import onnx

try:
    import torch
except ImportError as exc:  # pragma: no cover - exercised only without torch
    raise ImportError(
        "kiln.from_torch needs the torch extra: pip install 'kiln-compiler[torch]'"
    ) from exc

from kiln.errors import KilnError
from kiln.frontends.onnx import load
from kiln.ir import Model

Exporter = Literal["dynamo", "torchscript"]
EXPORTERS: tuple[str, ...] = ("dynamo", "torchscript")
BATCH_DIM = "batch"

# Noise that says nothing about the user's model: torch.onnx's registry reports missing
# torchvision ops, the legacy exporter warns that it is legacy (the caller chose it),
# nn.LSTM's cached flat weights and torch's own pytree internals trip warnings, and
# torch.onnx warns when two inputs share one Dim of the same name.
_QUIET_LOGGERS = ("torch.onnx._internal.exporter._registration",)
_QUIET_WARNINGS = (
    r"You are using the legacy TorchScript-based ONNX export",
    r"The feature will be removed",
    r"The tensor attributes .*_flat_weights.* were assigned during export",
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    r"# The axis name: (\w+) will not be used, since it shares .* another axis: \1\.",
)


__all__ = ["BATCH_DIM", "EXPORTERS", "Exporter", "TorchExportError", "from_torch", "to_onnx"]


class TorchExportError(KilnError, RuntimeError):
    """A torch module could not be run, captured or translated to ONNX."""


def from_torch(
    module: torch.nn.Module,
    example_inputs: torch.Tensor | Sequence[torch.Tensor],
    dynamic_shapes: Any = None,
    *,
    dynamic_batch: bool = False,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    opset: int | None = None,
    exporter: Exporter = "dynamo",
    optimize: bool = False,
) -> Model:
    """Convert a torch module to a kiln Model.

    The module is exported in eval mode under ``torch.no_grad()``; its training flag is
    restored afterwards.

    Args:
        module: The module to convert.
        example_inputs: One tensor or a sequence of tensors, the positional arguments of
            ``forward``. Their shapes are the model's static shapes, except where
            ``dynamic_shapes`` or ``dynamic_batch`` say otherwise.
        dynamic_shapes: Passed to ``torch.export.export`` as it expects, e.g.
            ``({0: torch.export.Dim("batch")},)``; symbolic dimensions keep the ``Dim``
            names. As in ``torch.onnx.export``, a string such as ``{0: "batch"}`` stands
            for ``Dim.DYNAMIC`` with that name. Dynamo exporter only.
        dynamic_batch: Make dimension 0 of every input one symbolic dimension named
            ``"batch"`` (shared by all inputs, so their batch sizes must agree). Example
            inputs of batch 1 are traced at batch 2, because torch.export specializes
            dimensions of size 1.
        input_names: Names for the inputs; default: the parameter names of ``forward``.
        output_names: Names for the flattened outputs; default ``"output"`` for one
            output, else ``"output_0"``, ``"output_1"``, ...
        opset: The default-domain ONNX opset; None for the exporter's default.
        exporter: ``"dynamo"`` or ``"torchscript"``.
        optimize: Let the exporter optimize the graph (off by default; see the module
            docstring).

    Returns:
        The kiln Model.

    Raises:
        TypeError: If ``module`` is not a ``torch.nn.Module``, an example input is not a
            tensor, or ``forward`` returns something other than tensors in tuples/lists.
        ValueError: If the options contradict each other or the inputs.
        TorchExportError: If the module fails on its example inputs, or torch.export or
            the ONNX translation fails; the message names the module class.
    """
    proto = to_onnx(
        module,
        example_inputs,
        dynamic_shapes,
        dynamic_batch=dynamic_batch,
        input_names=input_names,
        output_names=output_names,
        opset=opset,
        exporter=exporter,
        optimize=optimize,
    )
    return load(proto)


def to_onnx(
    module: torch.nn.Module,
    example_inputs: torch.Tensor | Sequence[torch.Tensor],
    dynamic_shapes: Any = None,
    *,
    dynamic_batch: bool = False,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    opset: int | None = None,
    exporter: Exporter = "dynamo",
    optimize: bool = False,
) -> onnx.ModelProto:
    """Export a torch module to an in-memory ONNX ModelProto; the first half of :func:`from_torch`.

    Takes the same arguments and raises the same errors as :func:`from_torch`.
    """
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"from_torch expects a torch.nn.Module, got {type(module).__name__}")
    args = _as_tensor_tuple(example_inputs)
    _check_options(args, dynamic_shapes, dynamic_batch, exporter)
    in_names = _input_names(module, args, input_names)
    what = type(module).__name__

    was_training = module.training
    module.eval()
    try:
        with torch.no_grad(), _quiet_exporter():
            out_names = _output_names(module, args, output_names)
            if exporter == "dynamo":
                if dynamic_batch:
                    args = _trace_batch(args)
                    dynamic_shapes = tuple({0: torch.export.Dim(BATCH_DIM)} for _ in args)
                proto = _export_dynamo(
                    module, args, dynamic_shapes, in_names, out_names, opset, optimize
                )
            else:
                proto = _export_torchscript(
                    module, args, dynamic_batch, in_names, out_names, opset, optimize
                )
    finally:
        module.train(was_training)

    _check_graph_inputs(proto, in_names, dynamic_batch, what)
    return proto


# --------------------------------------------------------------------------------------
# Argument checks
# --------------------------------------------------------------------------------------


def _as_tensor_tuple(example_inputs: object) -> tuple[torch.Tensor, ...]:
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    if not isinstance(example_inputs, tuple | list):
        raise TypeError(
            "example_inputs must be a tensor or a tuple/list of tensors, "
            f"got {type(example_inputs).__name__}"
        )
    for i, value in enumerate(example_inputs):
        if not isinstance(value, torch.Tensor):
            raise TypeError(
                f"example_inputs[{i}] must be a torch.Tensor, got {type(value).__name__}"
            )
    return tuple(example_inputs)


def _check_options(
    args: tuple[torch.Tensor, ...], dynamic_shapes: Any, dynamic_batch: bool, exporter: str
) -> None:
    if exporter not in EXPORTERS:
        raise ValueError(f"unknown exporter {exporter!r}; choose one of {', '.join(EXPORTERS)}")
    if dynamic_shapes is not None and dynamic_batch:
        raise ValueError("pass either dynamic_shapes or dynamic_batch=True, not both")
    if dynamic_shapes is not None and exporter != "dynamo":
        raise ValueError(
            "dynamic_shapes needs exporter='dynamo'; the torchscript exporter supports "
            "dynamic_batch=True only"
        )
    if not dynamic_batch:
        return
    if not args:
        raise ValueError("dynamic_batch=True needs at least one example input")
    scalars = [i for i, t in enumerate(args) if t.dim() == 0]
    if scalars:
        raise ValueError(
            f"dynamic_batch=True: example_inputs{scalars} are scalars, with no batch dim"
        )
    batches = sorted({int(t.shape[0]) for t in args})
    if len(batches) > 1:
        raise ValueError(
            f"dynamic_batch=True: example inputs disagree on the batch size: {batches}"
        )
    if batches[0] == 0:
        raise ValueError("dynamic_batch=True: example inputs have batch size 0")


def _input_names(
    module: torch.nn.Module, args: tuple[torch.Tensor, ...], names: Sequence[str] | None
) -> tuple[str, ...]:
    if names is None:
        params = inspect.signature(module.forward).parameters.values()
        positional = [
            p.name
            for p in params
            if p.kind
            in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        ]
        if len(positional) >= len(args):
            return tuple(positional[: len(args)])
        return tuple(f"input_{i}" for i in range(len(args)))
    return _checked_names("input_names", names, len(args), "example inputs")


def _checked_names(what: str, names: Sequence[str], count: int, of: str) -> tuple[str, ...]:
    if isinstance(names, str) or not all(isinstance(n, str) and n for n in names):
        raise TypeError(f"{what} must be a sequence of non-empty strings, got {names!r}")
    if len(names) != count:
        raise ValueError(f"{what} has {len(names)} names but there are {count} {of}")
    if len(set(names)) != len(names):
        raise ValueError(f"{what} has duplicate names: {list(names)}")
    return tuple(names)


def _output_names(
    module: torch.nn.Module, args: tuple[torch.Tensor, ...], names: Sequence[str] | None
) -> tuple[str, ...]:
    """Run the module once, which checks that it runs at all, and count its outputs."""
    what = type(module).__name__
    try:
        outputs = module(*args)
    except Exception as exc:
        raise TorchExportError(f"{what} failed on the example inputs: {exc}") from exc
    count = len(_flatten_outputs(outputs, what))
    if names is None:
        return ("output",) if count == 1 else tuple(f"output_{i}" for i in range(count))
    return _checked_names("output_names", names, count, "outputs")


def _flatten_outputs(outputs: object, what: str) -> list[torch.Tensor]:
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    if isinstance(outputs, tuple | list):
        return [t for item in outputs for t in _flatten_outputs(item, what)]
    raise TypeError(
        f"{what}.forward returned a {type(outputs).__name__}; from_torch supports tensors "
        "and (nested) tuples or lists of tensors"
    )


def _trace_batch(args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """Repeat batch-1 examples to batch 2, so that torch.export does not specialize the batch.

    torch.export treats a dimension of size 1 as the constant 1 ("0/1 specialization") and
    then rejects the request to make it dynamic; the values of the examples do not matter.
    """
    if args[0].shape[0] != 1:
        return args
    return tuple(torch.cat([t, t]) for t in args)


# --------------------------------------------------------------------------------------
# The exporters
# --------------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in _QUIET_LOGGERS]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        for message in _QUIET_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)


def _export_dynamo(
    module: torch.nn.Module,
    args: tuple[torch.Tensor, ...],
    dynamic_shapes: Any,
    input_names: tuple[str, ...],
    output_names: tuple[str, ...],
    opset: int | None,
    optimize: bool,
) -> onnx.ModelProto:
    what = type(module).__name__
    try:
        program = torch.export.export(
            module, args, dynamic_shapes=_str_dims_to_dynamic(dynamic_shapes), strict=False
        )
    except Exception as exc:
        raise TorchExportError(f"torch.export could not capture {what}: {exc}") from exc
    try:
        onnx_program = torch.onnx.export(
            program,
            args,
            dynamo=True,
            # Passed again only so that torch.onnx names the symbolic dims after the Dims.
            dynamic_shapes=dynamic_shapes,
            input_names=list(input_names),
            output_names=list(output_names),
            opset_version=opset,
            optimize=optimize,
            verbose=False,
        )
    except Exception as exc:
        raise TorchExportError(
            f"the dynamo exporter could not translate {what} to ONNX: {exc}"
        ) from exc
    assert onnx_program is not None  # dynamo=True always returns an ONNXProgram
    return onnx_program.model_proto


def _str_dims_to_dynamic(spec: Any) -> Any:
    """Replace dimension names given as strings (torch.onnx's shorthand) by Dim.DYNAMIC.

    Strings only occur as leaves (argument names are dict keys, which are kept), and
    torch.onnx later names each such dimension after its string.
    """
    if isinstance(spec, str):
        return torch.export.Dim.DYNAMIC
    if isinstance(spec, dict):
        return {key: _str_dims_to_dynamic(value) for key, value in spec.items()}
    if isinstance(spec, list | tuple):
        return type(spec)(_str_dims_to_dynamic(value) for value in spec)
    return spec


def _export_torchscript(
    module: torch.nn.Module,
    args: tuple[torch.Tensor, ...],
    dynamic_batch: bool,
    input_names: tuple[str, ...],
    output_names: tuple[str, ...],
    opset: int | None,
    optimize: bool,
) -> onnx.ModelProto:
    what = type(module).__name__
    dynamic_axes = None
    if dynamic_batch:
        dynamic_axes = {name: {0: BATCH_DIM} for name in (*input_names, *output_names)}
    buffer = io.BytesIO()
    try:
        torch.onnx.export(
            module,
            args,
            buffer,
            dynamo=False,
            input_names=list(input_names),
            output_names=list(output_names),
            opset_version=opset,
            dynamic_axes=dynamic_axes,
            # The legacy exporter folds BatchNormalization into Conv while folding constants.
            do_constant_folding=optimize,
        )
    except Exception as exc:
        raise TorchExportError(f"the torchscript exporter could not export {what}: {exc}") from exc
    return onnx.load_model_from_string(buffer.getvalue())


def _check_graph_inputs(
    proto: onnx.ModelProto, names: tuple[str, ...], dynamic_batch: bool, what: str
) -> None:
    """The exported graph has exactly the requested inputs, with a symbolic batch if asked."""
    graph_inputs = list(proto.graph.input)
    got = tuple(value.name for value in graph_inputs)
    if got != names:
        raise TorchExportError(
            f"the exported {what} has inputs {list(got)}, expected {list(names)} "
            "(an input that forward does not use is dropped by the exporter)"
        )
    if not dynamic_batch:
        return
    for value in graph_inputs:
        dim = value.type.tensor_type.shape.dim[0]
        if not dim.dim_param:
            raise TorchExportError(
                f"the exported {what} has a static batch dimension on input {value.name!r}"
            )
