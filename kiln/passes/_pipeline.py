"""Pipeline strings: ``"fold-constants,fuse-conv-bn{eps=1e-5,keep=true}"`` <-> Pass lists.

A pipeline is a comma-separated list of pass names, each optionally followed by options in
braces. Option values are typed by the pass's ``Options`` dataclass: ``int``, ``float``,
``bool`` (``true``/``false``), ``str`` (bare, or in double quotes when it holds ``,{}[]=``
or spaces), ``None`` (``none``, for optional fields) and tuples of those (``[1,2,3]``).

The canonical form, what :func:`format_pipeline` writes, lists only the options that differ
from their defaults, in the order the dataclass declares them, so
``format_pipeline(parse_pipeline(s)) == s`` for every canonical ``s``.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Sequence
from typing import Any

from kiln.errors import KilnError
from kiln.passes._base import Pass, get_pass

PipelineSpec = str | Pass | Sequence[str | Pass]
_SPECIAL = set(",{}[]=\" ")


def parse_pipeline(spec: PipelineSpec) -> list[Pass]:
    """The passes a pipeline string (or a list of pass strings / Pass instances) names.

    Args:
        spec: a pipeline string, a Pass, or a sequence of pass strings and Pass instances.

    Returns:
        New Pass instances (the Pass instances given are kept as they are).

    Raises:
        KilnError: an unknown pass, an unknown option, a malformed value or string; the
            message names it and lists the valid choices.
    """
    if isinstance(spec, Pass):
        return [spec]
    if isinstance(spec, str):
        return [_parse_one(item) for item in _split(spec, spec) if item or _empty_item(spec)]
    passes: list[Pass] = []
    for item in spec:
        if isinstance(item, Pass):
            passes.append(item)
        elif isinstance(item, str):
            passes.extend(parse_pipeline(item))
        else:
            raise KilnError(f"a pipeline holds pass names or Pass instances, not {item!r}")
    return passes


def format_pipeline(passes: Sequence[Pass]) -> str:
    """The canonical pipeline string of ``passes`` (options that differ from defaults)."""
    return ",".join(_format_one(p) for p in passes)


# -- parsing ----------------------------------------------------------------------------


def _empty_item(spec: str) -> bool:
    """An empty item is an error, except in the empty pipeline ``""``."""
    if spec.strip():
        raise KilnError(f"empty pass name in pipeline {spec!r}")
    return False


def _split(text: str, whole: str) -> list[str]:
    """``text`` split at the commas outside braces, brackets and quotes."""
    items, depth, start, quoted = [], 0, 0, False
    for i, ch in enumerate(text):
        if ch == '"':
            quoted = not quoted
        elif quoted:
            continue
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
            if depth < 0:
                raise KilnError(f"unbalanced {ch!r} in pipeline {whole!r}")
        elif ch == "," and depth == 0:
            items.append(text[start:i].strip())
            start = i + 1
    if quoted or depth:
        raise KilnError(f"unclosed {'quote' if quoted else 'brace'} in pipeline {whole!r}")
    items.append(text[start:].strip())
    return items


def _parse_one(item: str) -> Pass:
    name, brace, rest = item.partition("{")
    name = name.strip()
    if not name:
        raise KilnError(f"missing pass name in {item!r}")
    cls = get_pass(name)
    if not brace:
        return cls()
    if not rest.endswith("}"):
        raise KilnError(f"pass {name!r}: options must end with '}}' in {item!r}")
    hints = _option_types(cls)
    kwargs: dict[str, Any] = {}
    for option in _split(rest[:-1], item):
        if not option:
            continue
        key, eq, text = option.partition("=")
        key = key.strip()
        if not eq:
            raise KilnError(f"pass {name!r}: expected KEY=VALUE, got {option!r}")
        if key not in hints:
            known = ", ".join(hints) or "none"
            raise KilnError(f"pass {name!r}: unknown option {key!r}; options: {known}")
        if key in kwargs:
            raise KilnError(f"pass {name!r}: option {key!r} given twice")
        try:
            kwargs[key] = _parse_value(text.strip(), hints[key])
        except ValueError as exc:
            raise KilnError(f"pass {name!r}: option {key}={text.strip()!r}: {exc}") from None
    return cls(**kwargs)


def _option_types(cls: type[Pass]) -> dict[str, Any]:
    """Option name -> declared type, in declaration order."""
    hints = typing.get_type_hints(cls.Options)
    return {f.name: hints.get(f.name, str) for f in dataclasses.fields(cls.Options)}


def _parse_value(text: str, typ: Any) -> Any:
    """``text`` as a value of type ``typ``; ValueError when it is not one."""
    origin, args = typing.get_origin(typ), typing.get_args(typ)
    if origin in (typing.Union, types.UnionType):
        return _parse_union(text, args)
    if origin is tuple:
        return _parse_tuple(text, args)
    if typ in _SCALARS:
        return _SCALARS[typ](text)
    raise ValueError(f"options of type {typ!r} cannot be given in a pipeline string")


def _parse_union(text: str, args: tuple[Any, ...]) -> Any:
    if text == "none" and type(None) in args:
        return None
    errors = []
    for arg in (a for a in args if a is not type(None)):
        try:
            return _parse_value(text, arg)
        except ValueError as exc:
            errors.append(str(exc))
    raise ValueError(" or ".join(errors))


def _parse_tuple(text: str, args: tuple[Any, ...]) -> tuple[Any, ...]:
    if not (text.startswith("[") and text.endswith("]")):
        raise ValueError("expected a list [a,b,...]")
    items = _split(text[1:-1], text) if text[1:-1].strip() else []
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(_parse_value(t, args[0]) for t in items)
    if len(items) != len(args):
        raise ValueError(f"expected {len(args)} items, got {len(items)}")
    return tuple(_parse_value(t, a) for t, a in zip(items, args, strict=True))


def _parse_bool(text: str) -> bool:
    if text not in ("true", "false"):
        raise ValueError("expected true or false")
    return text == "true"


def _parse_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError("expected an integer") from None


def _parse_float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError("expected a number") from None


def _parse_str(text: str) -> str:
    if text.startswith('"'):
        if len(text) < 2 or not text.endswith('"'):
            raise ValueError("unterminated string")
        return text[1:-1]
    if not text or _SPECIAL & set(text):
        raise ValueError('expected a string (quote it: "...")')
    return text


_SCALARS = {bool: _parse_bool, int: _parse_int, float: _parse_float, str: _parse_str}


# -- formatting -------------------------------------------------------------------------


def _format_one(p: Pass) -> str:
    options = p.options
    if not dataclasses.is_dataclass(options):
        return p.name
    default = type(options)()
    parts = [
        f"{f.name}={_format_value(getattr(options, f.name))}"
        for f in dataclasses.fields(options)
        if getattr(options, f.name) != getattr(default, f.name)
    ]
    return f"{p.name}{{{','.join(parts)}}}" if parts else p.name


def _format_value(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _format_float(value)
    if isinstance(value, tuple | list):
        return "[" + ",".join(_format_value(v) for v in value) + "]"
    if isinstance(value, str):
        special = not value or _SPECIAL & set(value) or value in ("none", "true", "false")
        return f'"{value}"' if special else value
    return str(value)


def _format_float(x: float) -> str:
    """The shortest text that reads back to ``x``, exponent without padding (``1e-5``)."""
    if math.isnan(x) or math.isinf(x):
        return repr(x)
    text = repr(x)
    mantissa, e, exponent = text.partition("e")
    return f"{mantissa}e{int(exponent)}" if e else text
