"""Random valid inputs for a model, generated from the types of its graph inputs.

The rules, by element type of each input:

* floating point (f16, bf16, f32, f64): standard normal samples, drawn in float32 and
  cast; complex: normal real and imaginary parts;
* integer: uniform in ``[0, high)``. ``high`` is, in order of precedence, the caller's
  per-input value (``int_high={"input_ids": 30522}``), the bound implied by the model
  when the input is used directly as the indices of a ``Gather`` over a table of static
  size (token ids into an embedding), or 10;
* bool: fair coin flips;
* strings and non-tensor inputs (sequences, maps, optionals): not generated; pass the
  input explicitly.

Dimensions: a static dimension is used as is; a symbolic one (``"N"``) takes the size the
caller gives for that name (``dims={"N": 4}``, the CLI's ``--dim N=4``), else 1; an unknown
dimension is 1. Generation is deterministic for a given ``seed``.
"""

from __future__ import annotations

from collections.abc import Mapping

import ml_dtypes
import numpy as np

from kiln.backends._specs import TensorSpec, model_input_specs
from kiln.errors import KilnError
from kiln.ir import DataType, Model

DEFAULT_INT_HIGH = 10
"""Exclusive upper bound of random integer inputs when nothing tighter is known."""


def concrete_shape(spec: TensorSpec, dims: Mapping[str, int] | None = None) -> tuple[int, ...]:
    """The shape of ``spec`` with symbolic dims taken from ``dims`` (default 1), unknown ones 1.

    Raises:
        KilnError: when the input's rank is unknown.
    """
    if spec.shape is None:
        raise KilnError(f"input {spec.name!r} has unknown rank; pass it explicitly")
    dims = dims or {}
    out = []
    for d in spec.shape:
        if isinstance(d, int):
            out.append(d)
        elif isinstance(d, str):
            out.append(int(dims.get(d, 1)))
        else:
            out.append(1)
    return tuple(out)


def random_inputs(
    specs: tuple[TensorSpec, ...] | list[TensorSpec],
    *,
    seed: int = 0,
    dims: Mapping[str, int] | None = None,
    int_high: int | Mapping[str, int] | None = None,
) -> dict[str, np.ndarray]:
    """Random feeds that satisfy ``specs`` (see the module docstring for the rules).

    Args:
        specs: the inputs to generate, e.g. ``exe.input_specs``.
        seed: seed of the numpy generator.
        dims: sizes of symbolic dimensions by name; others are 1.
        int_high: exclusive upper bound of integer inputs, one for all or per input name.

    Returns:
        Input name -> array.

    Raises:
        KilnError: for an input that cannot be generated (strings, non-tensors, unknown rank).
    """
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for spec in specs:
        if spec.dtype is None:
            raise KilnError(
                f"cannot generate a random value for input {spec.name!r} of type "
                f"{spec.type_str}; pass it explicitly"
            )
        high = int_high.get(spec.name) if isinstance(int_high, Mapping) else int_high
        shape = concrete_shape(spec, dims)
        feeds[spec.name] = _random_array(rng, spec, shape, high or DEFAULT_INT_HIGH)
    return feeds


def _random_array(
    rng: np.random.Generator, spec: TensorSpec, shape: tuple[int, ...], high: int
) -> np.ndarray:
    dtype = spec.dtype
    assert dtype is not None
    if dtype == DataType.BOOL:
        return rng.random(shape) < 0.5
    if dtype in (DataType.COMPLEX64, DataType.COMPLEX128):
        z = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
        return z.astype(dtype.numpy)
    if dtype.is_floating():
        return rng.standard_normal(shape, dtype=np.float32).astype(dtype.numpy)
    if dtype.is_integer():
        high = min(max(int(high), 1), int(ml_dtypes.iinfo(dtype.numpy).max) + 1)
        return rng.integers(0, high, size=shape).astype(dtype.numpy)
    raise KilnError(
        f"cannot generate a random value for input {spec.name!r} of type {spec.type_str}; "
        "pass it explicitly"
    )


def random_inputs_for(
    model: Model,
    *,
    seed: int = 0,
    dims: Mapping[str, int] | None = None,
    int_high: int | Mapping[str, int] | None = None,
) -> dict[str, np.ndarray]:
    """Random valid feeds for ``model`` (see :func:`random_inputs`).

    Integer inputs used as Gather indices stay below the gathered table's size (see
    :func:`gather_index_bounds`) unless ``int_high`` says otherwise.
    """
    specs = model_input_specs(model)
    bounds = gather_index_bounds(model)
    if isinstance(int_high, Mapping):
        bounds.update(int_high)
    elif int_high is not None:
        bounds = {s.name: int(int_high) for s in specs}
    return random_inputs(specs, seed=seed, dims=dims, int_high=bounds)


def gather_index_bounds(model: Model) -> dict[str, int]:
    """Bounds for integer graph inputs used directly as Gather indices.

    For an input read as the indices of a default-domain ``Gather`` whose data has a static
    size along the gathered axis, the bound is that size (the smallest over all such
    uses). Token ids feeding an embedding table are the typical case.
    """
    bounds: dict[str, int] = {}
    for value in model.graph.inputs:
        dtype = value.dtype
        if dtype is None or not dtype.is_integer():
            continue
        for node, index in value.uses():
            size = _gathered_size(node, index)
            if size is not None:
                bounds[value.name] = min(size, bounds.get(value.name, size))
    return bounds


def _gathered_size(node, index: int) -> int | None:
    if node.domain != "" or node.op_type != "Gather" or index != 1:
        return None
    data = node.inputs[0]
    shape = None if data is None else data.shape
    if shape is None or shape.rank == 0:
        return None
    axis = int(node.attr("axis", 0))
    dim = shape.dims[axis % shape.rank]
    return dim if isinstance(dim, int) and dim > 0 else None
