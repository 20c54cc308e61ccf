"""kiln's user-facing errors."""

from __future__ import annotations


class KilnError(Exception):
    """Base class for kiln's user-facing errors."""


class ModelLoadError(KilnError):
    """A model file or protobuf could not be loaded, or was refused as unsafe."""


class VerificationError(KilnError):
    """The IR breaks one of its invariants (SSA, order, types, opsets)."""


class ParseError(KilnError):
    """The text form of a model could not be parsed."""
