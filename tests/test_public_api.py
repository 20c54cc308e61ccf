"""kiln's public API is the names in kiln.__all__ (STYLE.md item 9): no internal name leaks."""

from __future__ import annotations

import types

import kiln
import kiln.ir

# The contract in DESIGN.md, less what later issues add (quantize, prune).
EXPECTED = {
    "KilnError", "__version__", "bench", "compile", "from_torch", "load", "optimize", "save",
}


def test_all_is_the_documented_api():
    assert set(kiln.__all__) == EXPECTED


def test_every_name_in_all_exists():
    for name in kiln.__all__:
        assert hasattr(kiln, name), name
    for name in kiln.ir.__all__:
        assert hasattr(kiln.ir, name), name


def test_no_internal_name_leaks():
    """Every public attribute of kiln is in __all__ or is one of its subpackages."""
    leaked = [
        name
        for name, value in vars(kiln).items()
        if not name.startswith("_")
        and name not in kiln.__all__
        and not (isinstance(value, types.ModuleType) and value.__name__ == f"kiln.{name}")
    ]
    assert leaked == []


def test_ir_exports_no_private_module_names():
    leaked = [
        name
        for name in vars(kiln.ir)
        if not name.startswith("_")
        and name not in kiln.ir.__all__
        and not isinstance(getattr(kiln.ir, name), types.ModuleType)
    ]
    assert leaked == []
