"""Fusion tests use the shared pass checks (tests/passes/conftest.py); a golden fusion
test also requires the pass to report that it changed the model."""

from __future__ import annotations

import functools
from collections.abc import Callable

import pytest

from kiln.passes import PassResult


@pytest.fixture
def golden(golden) -> Callable[..., PassResult]:
    """The shared golden + numeric check; a given expected model must come with a change."""
    return functools.partial(golden, must_change=True)
