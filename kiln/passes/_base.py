"""The pass contract: a small class with one job, a kebab-case name and typed options.

A pass takes a Model and returns ``PassResult(model, changed, stats)``. Passes work in
place (``in_place = True``, the default: the returned model is the one given) or return
a new model. Options are a frozen dataclass, so ``fold-constants{size_limit=1024}``
means the same thing in the CLI, the API, the benchmarks and the tests.
"""

from __future__ import annotations

import abc
import dataclasses
from collections import Counter
from typing import Any, ClassVar

from kiln.errors import KilnError
from kiln.ir import Model


@dataclasses.dataclass(frozen=True)
class NoOptions:
    """Options of a pass that takes none."""


@dataclasses.dataclass
class PassResult:
    """What a pass returns: the model, whether it changed, and counts of what it did
    (e.g. ``{"folded": 12}``)."""

    model: Model
    changed: bool
    stats: Counter[str] = dataclasses.field(default_factory=Counter)


class Pass(abc.ABC):
    """Base class of passes.

    Subclasses set ``name`` (kebab-case), optionally ``Options`` (a frozen dataclass with
    defaults) and ``in_place``, and implement :meth:`call`.
    """

    name: ClassVar[str]
    Options: ClassVar[type] = NoOptions
    in_place: ClassVar[bool] = True

    def __init__(self, options: Any = None, **kwargs: Any) -> None:
        if options is not None and kwargs:
            raise TypeError("give options or keyword options, not both")
        if options is None:
            try:
                options = self.Options(**kwargs)
            except TypeError:
                known = ", ".join(f.name for f in dataclasses.fields(self.Options)) or "none"
                raise KilnError(
                    f"pass {self.name!r}: unknown option in {sorted(kwargs)}; options: {known}"
                ) from None
        self.options = options

    def __call__(self, model: Model) -> PassResult:
        result = self.call(model)
        if self.in_place and result.model is not model:
            raise KilnError(f"pass {self.name!r} is in place but returned a new model")
        return result

    @abc.abstractmethod
    def call(self, model: Model) -> PassResult:
        """Run the pass on ``model``."""

    def __repr__(self) -> str:
        fields = dataclasses.fields(self.options) if dataclasses.is_dataclass(self.options) else ()
        opts = ",".join(f"{f.name}={getattr(self.options, f.name)!r}" for f in fields)
        return f"{self.name}{{{opts}}}" if opts else self.name


_REGISTRY: dict[str, type[Pass]] = {}


def register_pass(cls: type[Pass]) -> type[Pass]:
    """Class decorator: make a pass available by its name in pipelines."""
    name = cls.name
    if not name or name != name.lower() or " " in name or "_" in name:
        raise ValueError(f"pass names are kebab-case: {name!r}")
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ValueError(f"two passes are named {name!r}")
    _REGISTRY[name] = cls
    return cls


def get_pass(name: str) -> type[Pass]:
    """The pass class registered as ``name``."""
    _load_builtin_passes()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KilnError(f"unknown pass {name!r}; known passes: {', '.join(sorted(_REGISTRY))}") \
            from None


def available_passes() -> list[str]:
    """Names of every registered pass."""
    _load_builtin_passes()
    return sorted(_REGISTRY)


def _load_builtin_passes() -> None:
    import kiln.passes.cleanup  # noqa: F401  (registers the clean-up passes)
    import kiln.passes.fusion  # noqa: F401  (registers the fusion passes)
