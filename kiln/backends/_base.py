"""The backend contract: a registry of backends, each turning a Model into an Executable."""

from __future__ import annotations

import abc
import dataclasses
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from kiln.backends._inputs import random_inputs_for
from kiln.backends._specs import TensorSpec, check_feeds, model_input_specs
from kiln.errors import KilnError
from kiln.ir import Model


class Executable(abc.ABC):
    """A compiled model: call it with numpy arrays by input name, get arrays by output name.

    ``exe(x=a)`` and ``exe.run({"x": a})`` are the same. Feeds are checked before they
    reach the backend (names, dtypes, ranks, static dimensions and consistent symbolic
    dimensions) and a mismatch raises a KilnError naming the input.

    Attributes:
        model: the model this was compiled from.
        backend: the backend's name.
        target: the target it was compiled for.
        options: the backend options in effect, as a plain dict.
        input_specs: the inputs a call must feed, in graph order.
        output_specs: the outputs a call returns, in graph order.
    """

    def __init__(self, model: Model, backend: str, target: str, options: Mapping[str, Any]):
        self.model = model
        self.backend = backend
        self.target = target
        self.options = dict(options)
        graph = model.graph
        self.input_specs = model_input_specs(model)
        # Initializers listed as graph inputs (IR < 4 models) may be overridden by a feed.
        self._optional_specs = {
            v.name: TensorSpec.from_value(v) for v in graph.inputs if v.is_initializer()
        }
        self.output_specs = tuple(TensorSpec.from_value(v) for v in graph.outputs)

    @property
    def input_names(self) -> list[str]:
        return [s.name for s in self.input_specs]

    @property
    def output_names(self) -> list[str]:
        return [s.name for s in self.output_specs]

    def __call__(self, **feeds: Any) -> dict[str, np.ndarray]:
        """Run on keyword feeds; see :meth:`run`."""
        return self.run(feeds)

    def run(self, feeds: Mapping[str, Any], *, validate: bool = True) -> dict[str, np.ndarray]:
        """Run the model.

        Args:
            feeds: input name -> numpy array, for every input in :attr:`input_specs`.
            validate: check the feeds first (turn off only for feeds already checked, as
                the benchmark harness does between timed runs).

        Returns:
            Output name -> numpy array, in graph output order.

        Raises:
            KilnError: for invalid feeds (naming the input) or when the backend fails.
        """
        if validate:
            feeds = check_feeds(self.input_specs, feeds, self._optional_specs)
        results = self._run(feeds)
        return dict(zip(self.output_names, results, strict=True))

    def random_inputs(
        self,
        *,
        seed: int = 0,
        dims: Mapping[str, int] | None = None,
        int_high: int | Mapping[str, int] | None = None,
    ) -> dict[str, np.ndarray]:
        """Random valid feeds (see :func:`kiln.backends.random_inputs_for`)."""
        return random_inputs_for(self.model, seed=seed, dims=dims, int_high=int_high)

    def export(self, directory: str | os.PathLike, *, external_data: bool | None = None) -> Path:
        """Write a deployable artifact into ``directory`` and return the directory.

        The artifact loads again without kiln (for ONNX-based backends: ``model.onnx``,
        ``model.onnx.data`` when the weights are large or ``external_data`` is set, and
        ``manifest.json`` whose ``runtime`` is :meth:`_artifact_runtime`).
        """
        runtime = self._artifact_runtime()
        if runtime is None:
            raise KilnError(f"backend {self.backend!r} cannot export an artifact")
        from kiln.backends._artifact import write_artifact

        return write_artifact(
            self.model,
            directory,
            backend=self.backend,
            target=self.target,
            inputs=self.input_specs,
            outputs=self.output_specs,
            runtime=runtime,
            external_data=external_data,
        )

    def _artifact_runtime(self) -> dict[str, Any] | None:
        """The manifest's ``runtime`` entry for an ONNX artifact, or None when this
        backend's result is not an ONNX model."""
        return None

    @abc.abstractmethod
    def _run(self, feeds: Mapping[str, Any]) -> list[np.ndarray]:
        """Run on checked feeds; return the outputs in graph output order."""

    def __repr__(self) -> str:
        ins = ", ".join(f"{s.name}: {s.type_str}" for s in self.input_specs)
        outs = ", ".join(f"{s.name}: {s.type_str}" for s in self.output_specs)
        return f"<{type(self).__name__} {self.backend}/{self.target} ({ins}) -> ({outs})>"


class Backend(abc.ABC):
    """A backend: declares its options, targets and supported ops, and compiles models.

    Subclasses set ``name``, ``targets`` (the first is the default) and ``Options`` (a
    frozen dataclass of typed options with defaults), implement :meth:`supports` and
    :meth:`compile`, and are registered with :func:`register_backend`.
    """

    name: ClassVar[str]
    targets: ClassVar[tuple[str, ...]] = ("cpu",)
    Options: ClassVar[type]

    def __init__(self, target: str | None = None, **options: Any) -> None:
        self.target = self.targets[0] if target is None else target
        if self.target not in self.targets:
            raise KilnError(
                f"backend {self.name!r} has no target {self.target!r} "
                f"(targets: {', '.join(self.targets)})"
            )
        known = [f.name for f in dataclasses.fields(self.Options)]
        unknown = [k for k in options if k not in known]
        if unknown:
            raise KilnError(
                f"backend {self.name!r} has no option {unknown[0]!r} "
                f"(options: {', '.join(known) or 'none'})"
            )
        self.options = self.Options(**options)

    @classmethod
    def option_names(cls) -> list[str]:
        """The names of this backend's options."""
        return [f.name for f in dataclasses.fields(cls.Options)]

    @abc.abstractmethod
    def supports(self, model: Model) -> list[str]:
        """The ops of ``model`` this backend cannot run, as ``domain::Op`` labels (empty
        when it runs them all)."""

    @abc.abstractmethod
    def compile(self, model: Model) -> Executable:
        """Compile ``model``; call only when :meth:`supports` found nothing missing."""


_REGISTRY: dict[str, type[Backend]] = {}


def register_backend(cls: type[Backend]) -> type[Backend]:
    """Class decorator: make ``cls`` available to :func:`compile` under ``cls.name``."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"a backend named {cls.name!r} is already registered")
    _REGISTRY[cls.name] = cls
    return cls


def get_backend(name: str) -> type[Backend]:
    """The backend class registered as ``name``.

    Raises:
        KilnError: when no backend has that name.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KilnError(
            f"unknown backend {name!r} (backends: {', '.join(available_backends())})"
        ) from None


def available_backends() -> list[str]:
    """The names of the registered backends."""
    return sorted(_REGISTRY)


def compile(
    model: Model | str | os.PathLike | bytes,
    backend: str = "ort",
    target: str | None = None,
    **options: Any,
) -> Executable:
    """Compile a model for a backend.

    Args:
        model: a kiln Model, or a path to (or the bytes of) an ONNX model.
        backend: a registered backend name: ``"ort"`` (ONNX Runtime) or ``"reference"``
            (onnx.reference.ReferenceEvaluator), and any registered later.
        target: the backend's target (default: its first, ``"cpu"``).
        **options: backend options, e.g. for ort ``threads=4, optimize="disable"``.

    Returns:
        An Executable.

    Raises:
        KilnError: for an unknown backend, target or option, or ops the backend does not
            support (all of them are named).
    """
    if not isinstance(model, Model):
        from kiln.frontends.onnx import load

        model = load(model)
    be = get_backend(backend)(target, **options)
    unsupported = be.supports(model)
    if unsupported:
        raise KilnError(f"backend {backend!r} does not support: {', '.join(unsupported)}")
    return be.compile(model)


def model_op_labels(model: Model) -> dict[tuple[str, str], int]:
    """(domain, op_type) -> highest opset the model imports for that domain, for every op
    used anywhere in the model (subgraphs and local function bodies included), except calls
    to model-local functions, whose bodies are listed instead."""
    found: dict[tuple[str, str], int] = {}

    def visit(graph, opsets: Mapping[str, int]) -> None:
        for node in graph.all_nodes():
            key = (node.domain, node.op_type, node.overload)
            if key in model.functions:
                continue
            found[(node.domain, node.op_type)] = opsets.get(node.domain, 1)

    visit(model.graph, model.opset_imports)
    for f in model.functions.values():
        visit(f.graph, {**model.opset_imports, **f.opset_imports})
    return found


def one_line(exc: BaseException, limit: int = 400) -> str:
    """An exception's message on one line, shortened to ``limit`` characters (runtime
    errors often span several lines)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    # ONNX Runtime prefixes a source location and a C++ signature; neither helps a user.
    text = re.sub(r"\S*onnxruntime_src/\S+:\d+ (?:[\w:~<>]+\(.*?\) (?=[A-Z\[]))?", "", text)
    return text if len(text) <= limit else text[: limit - 3] + "..."
