"""Load and save ONNX models: files, bytes, ModelProto, and external data.

Loading memory-maps the file and cuts the big initializer payloads out of the protobuf
before parsing it (see ``_wire``), so weights become zero-copy, read-only numpy views of
the file and loading costs neither time nor memory in proportion to their size.
External data is checked up front and mapped lazily (see ``_external``).

Saving streams: the model is serialized by protobuf without its initializer payloads,
then each payload is written straight from its array after the field framing, so no
intermediate copy of the weights is ever made. Files are written to a temporary file in
the same folder and moved into place, so a failure leaves no half-written file.
"""

from __future__ import annotations

import mmap
import os
import stat
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import onnx

from kiln.errors import KilnError, ModelLoadError
from kiln.frontends import _wire
from kiln.frontends._external import ExternalData, location_parts
from kiln.ir import DataType, Model, Tensor
from kiln.ir.serde import deserialize_model, pack_raw, serialize_model, tensor_to_proto

__all__ = ["load", "save", "to_bytes", "to_proto"]

# Initializers at least this big (serialized) are cut out of the protobuf and mapped.
_CUT_MIN_BYTES = 4096
# Smaller files are parsed whole: cutting would save little.
_SMALL_FILE_BYTES = 1 << 20
# protobuf cannot parse or write a message of 2 GiB or more.
_PROTOBUF_LIMIT = 2**31 - 1
# With external_data=None, a model whose inline form would exceed this goes external.
_AUTO_EXTERNAL_BYTES = 1_800_000_000
# External tensors start at multiples of 64 bytes; those of 1 MiB or more at multiples
# of 64 KiB (the mmap allocation granularity on every platform), as onnx does.
_ALIGN = 64
_BIG_ALIGN = 65536
_BIG_ALIGN_FROM = 1 << 20
# Non-contiguous arrays are written in blocks of about this many bytes.
_BLOCK_BYTES = 64 << 20

# Chunks of output: bytes, or 1-D uint8 arrays viewing a tensor's memory (no copy).
Buffer = bytes | memoryview | np.ndarray
# Arrays at least this big are written with ndarray.tofile (C stdio), measurably faster
# than file.write for big buffers.
_TOFILE_BYTES = 1 << 20


# ----------------------------------------------------------------------------- loading
def load(
    source: str | os.PathLike | bytes | onnx.ModelProto,
    *,
    base_dir: str | os.PathLike | None = None,
) -> Model:
    """Load an ONNX model from a path, serialized bytes, or a ModelProto.

    A file is memory-mapped: its weights become read-only numpy views of the file, and
    external data is mapped lazily on first use.

    Args:
        source: a path to an ``.onnx`` file, its bytes, or a parsed ModelProto.
        base_dir: the folder external data is relative to. Defaults to the model file's
            folder; needed for bytes or a ModelProto that use external data.

    Returns:
        The model.

    Raises:
        ModelLoadError: the file cannot be read, is not valid ONNX, or refers to external
            data outside its folder; the message names the file and the tensor or node.
    """
    folder = Path(base_dir) if base_dir is not None else None
    if isinstance(source, onnx.ModelProto):
        return _deserialize(source, {}, folder, "ModelProto")
    if isinstance(source, bytes | bytearray | memoryview):
        buf = memoryview(source if isinstance(source, bytes) else bytes(source))
        return _parse(buf, _wire.BufferSource(buf), folder, "ONNX bytes")
    path = Path(os.fspath(source))
    folder = folder if folder is not None else path.parent
    try:
        with open(path, "rb") as f:
            buf = _map(f, path)
            if len(buf) < _SMALL_FILE_BYTES:  # e.g. the model file of external data
                return _parse(buf, None, folder, str(path))
            # Walk the file with pread, so that no page of the mapping is touched.
            return _parse(buf, _wire.FileSource(f.fileno(), len(buf)), folder, str(path))
    except OSError as exc:
        raise ModelLoadError(f"cannot read {path}: {exc.strerror}") from None


def _map(f, path: Path) -> memoryview:
    """The file's bytes: read when small, else memory-mapped where the file system allows."""
    st = os.fstat(f.fileno())
    if not stat.S_ISREG(st.st_mode):
        raise ModelLoadError(f"{path}: not a regular file")
    if st.st_size < _SMALL_FILE_BYTES:
        return memoryview(f.read())
    try:
        return memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
    except (OSError, ValueError):
        return memoryview(f.read())


def _parse(buf: memoryview, src: _wire.Source | None, folder: Path | None, what: str) -> Model:
    """Parse a serialized model; with ``src``, big payloads are cut out first and mapped."""
    data: Buffer | None = None
    spans: dict[int, tuple[int, int]] = {}
    if src is not None:
        try:
            cut = _wire.cut_raw_data(src, _CUT_MIN_BYTES)
            data, spans = cut.proto, cut.raw_spans
        except _wire.WireError:
            pass  # not protobuf this scanner can walk: let protobuf itself judge it
    if data is None:
        data = bytes(buf)
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except Exception as exc:  # protobuf's DecodeError, or RuntimeError from upb
        raise ModelLoadError(f"{what}: malformed ONNX protobuf ({exc})") from None
    raw = {index: buf[offset:offset + length] for index, (offset, length) in spans.items()}
    return _deserialize(proto, raw, folder, what)


def _deserialize(proto: onnx.ModelProto, raw: dict[int, memoryview], folder: Path | None,
                 what: str) -> Model:
    external = ExternalData(folder)
    try:
        return deserialize_model(proto, external=external, raw_data=raw)
    except ModelLoadError as exc:
        raise ModelLoadError(f"{what}: {exc}") from None
    except (ValueError, TypeError) as exc:  # the IR refusing a malformed value
        raise ModelLoadError(f"{what}: invalid model: {exc}") from exc


# ----------------------------------------------------------------------------- saving
def save(
    model: Model,
    path: str | os.PathLike,
    external_data: bool | None = None,
    *,
    size_threshold: int = 1024,
    location: str | None = None,
) -> None:
    """Save a model as an ONNX file, streaming the weights from their arrays.

    Args:
        model: the model.
        path: the ``.onnx`` file to write (replaced atomically).
        external_data: write initializers to a separate data file. ``None`` (the default)
            does so when the model would not fit protobuf's 2 GB limit (over about
            1.8 GB), or when ``location`` is given.
        size_threshold: with external data, initializers of fewer bytes stay inline.
        location: the data file, relative to the model's folder; defaults to
            ``<file name>.data``, e.g. ``model.onnx.data``.

    Raises:
        KilnError: the file cannot be written, the model is too big for an inline file,
            or ``location`` is not inside the model's folder.
    """
    path = Path(os.fspath(path))
    if external_data is None:
        external_data = location is not None or _inline_size(model) > _AUTO_EXTERNAL_BYTES
    try:
        if external_data:
            _save_external(model, path, size_threshold, location or f"{path.name}.data")
        else:
            _save_inline(model, path)
    except OSError as exc:
        raise KilnError(f"cannot write {exc.filename or path}: {exc.strerror}") from None


def to_proto(model: Model) -> onnx.ModelProto:
    """The model as an ONNX ModelProto (weights copied into it)."""
    return serialize_model(model)


def to_bytes(model: Model) -> bytes:
    """The model serialized as one ONNX protobuf, built without intermediate copies.

    Raises:
        KilnError: the model does not fit protobuf's 2 GB limit.
    """
    stream = _InlineStream(model)
    _check_inline_size(stream.size, "the model")
    return b"".join(stream.chunks())


def _inline_size(model: Model) -> int:
    """About how many bytes the model takes as one protobuf (its weights dominate)."""
    return sum(v.const_value.nbytes for v in model.graph.initializers.values()
               if v.const_value is not None)


def _check_inline_size(size: int, what: str) -> None:
    if size > _PROTOBUF_LIMIT:
        raise KilnError(
            f"{what} takes {size} bytes, over protobuf's 2 GB limit: save it with "
            "external_data=True"
        )


class _InlineStream:
    """A model as the chunks of one serialized ModelProto: the protobuf-serialized model
    without initializer payloads, then each initializer framed around its array's bytes."""

    def __init__(self, model: Model) -> None:
        mp = serialize_model(model, initializer_data=False)
        tensors = [v.const_value for v in model.graph.initializers.values()]
        # (serialized header, tensor whose bytes follow it or None, payload size)
        self.entries: list[tuple[bytes, Tensor | None, int]] = []
        for header, tensor in zip(mp.graph.initializer, tensors, strict=True):
            assert tensor is not None
            if tensor.dtype == DataType.STRING:
                full = tensor_to_proto(tensor, header.name).SerializeToString()
                self.entries.append((full, None, 0))
            else:
                self.entries.append((header.SerializeToString(), tensor, tensor.nbytes))
        # Fields go in protobuf's canonical (field number) order, so the bytes equal what
        # protobuf itself would write for the same message.
        mp.graph.ClearField("initializer")
        self.graph_head, self.graph_tail = _wire.split_before(
            mp.graph.SerializeToString(), _wire.GRAPH_INITIALIZER)
        mp.ClearField("graph")
        self.head, self.tail = _wire.split_before(mp.SerializeToString(), _wire.MODEL_GRAPH)
        self.graph_size = len(self.graph_head) + len(self.graph_tail) + sum(
            _wire.len_field_size(_wire.GRAPH_INITIALIZER, self._tensor_size(h, t, n))
            for h, t, n in self.entries
        )
        self.size = (len(self.head) + _wire.len_field_size(_wire.MODEL_GRAPH, self.graph_size)
                     + len(self.tail))

    @staticmethod
    def _tensor_size(header: bytes, tensor: Tensor | None, nbytes: int) -> int:
        if tensor is None:
            return len(header)
        return len(header) + _wire.len_field_size(_wire.TENSOR_RAW_DATA, nbytes)

    def chunks(self) -> Iterator[Buffer]:
        yield self.head
        yield _wire.len_field(_wire.MODEL_GRAPH, self.graph_size)
        yield self.graph_head
        for header, tensor, nbytes in self.entries:
            yield _wire.len_field(_wire.GRAPH_INITIALIZER,
                                  self._tensor_size(header, tensor, nbytes))
            if tensor is None:
                yield header
                continue
            # raw_data (9) goes after dims, data_type and name, before doc_string (12).
            before, after = _wire.split_before(header, _wire.TENSOR_RAW_DATA)
            yield before
            yield _wire.len_field(_wire.TENSOR_RAW_DATA, nbytes)
            yield from _checked(_array_bytes(tensor), nbytes, tensor)
            yield after
        yield self.graph_tail
        yield self.tail


def _save_inline(model: Model, path: Path) -> None:
    stream = _InlineStream(model)
    _check_inline_size(stream.size, str(path))
    tmp = _write_temp(path, stream.chunks())
    _replace(tmp, path)


def _save_external(model: Model, path: Path, size_threshold: int, location: str) -> None:
    try:
        parts = location_parts(location)
    except ValueError as exc:
        raise KilnError(f"cannot save {path}: external data refused: {exc}") from None
    data_path = path.parent.joinpath(*parts)
    mp = serialize_model(model, initializer_data=False)
    tensors = [v.const_value for v in model.graph.initializers.values()]
    layout: list[tuple[int, Tensor, int]] = []
    end = 0
    for tp, tensor in zip(mp.graph.initializer, tensors, strict=True):
        assert tensor is not None
        nbytes = tensor.nbytes if tensor.dtype != DataType.STRING else 0
        if tensor.dtype == DataType.STRING or nbytes < size_threshold:
            tp.CopyFrom(tensor_to_proto(tensor, tp.name))
            continue
        align = _BIG_ALIGN if nbytes >= _BIG_ALIGN_FROM else _ALIGN
        offset = -(-end // align) * align
        tp.data_location = onnx.TensorProto.EXTERNAL
        for key, value in (("location", "/".join(parts)), ("offset", str(offset)),
                           ("length", str(nbytes))):
            entry = tp.external_data.add()
            entry.key = key
            entry.value = value
        layout.append((offset, tensor, nbytes))
        end = offset + nbytes
    header = mp.SerializeToString()
    _check_inline_size(len(header), str(path))
    data_path.parent.mkdir(parents=True, exist_ok=True)
    data_tmp = _write_temp(data_path, _data_chunks(layout))
    try:
        model_tmp = _write_temp(path, [header])
    except BaseException:
        data_tmp.unlink(missing_ok=True)
        raise
    try:
        _replace(data_tmp, data_path)
    except BaseException:
        model_tmp.unlink(missing_ok=True)
        raise
    _replace(model_tmp, path)


def _data_chunks(layout: list[tuple[int, Tensor, int]]) -> Iterator[Buffer]:
    position = 0
    for offset, tensor, nbytes in layout:
        if offset > position:
            yield bytes(offset - position)
        yield from _checked(_array_bytes(tensor), nbytes, tensor)
        position = offset + nbytes


def _array_bytes(tensor: Tensor) -> Iterator[Buffer]:
    """A tensor's ONNX raw data (little endian, sub-byte types packed), without copying
    contiguous little-endian arrays."""
    arr = np.asarray(tensor.numpy())
    dtype = tensor.dtype
    if dtype.bitwidth < 8 or arr.ndim == 0:
        yield pack_raw(arr, dtype)
        return
    if arr.dtype.newbyteorder("=") != dtype.numpy:
        arr = arr.astype(dtype.numpy)
    little = arr.dtype.byteorder == "<" or (arr.dtype.byteorder in "=|" and
                                             sys.byteorder == "little")
    if little and arr.flags.c_contiguous:
        yield arr.reshape(-1).view(np.uint8)
        return
    rows = max(1, _BLOCK_BYTES // max(1, arr[0].nbytes)) if arr.shape[0] else 1
    for start in range(0, arr.shape[0], rows):
        block = np.ascontiguousarray(arr[start:start + rows])
        if not little:
            block = block.astype(block.dtype.newbyteorder("<"))
        yield block.reshape(-1).view(np.uint8)


def _checked(chunks: Iterable[Buffer], nbytes: int, tensor: Tensor) -> Iterator[Buffer]:
    written = 0
    for chunk in chunks:
        written += len(chunk)
        yield chunk
    if written != nbytes:
        raise KilnError(f"tensor {tensor.name!r}: wrote {written} bytes, expected {nbytes}")


def _write_temp(path: Path, chunks: Iterable[Buffer]) -> Path:
    """Write ``chunks`` to a new temporary file beside ``path``; removed on failure."""
    mode = _file_mode(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                if isinstance(chunk, np.ndarray) and chunk.nbytes >= _TOFILE_BYTES:
                    chunk.tofile(f)
                else:
                    f.write(chunk)
        os.chmod(tmp, mode)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _replace(tmp: Path, path: Path) -> None:
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _file_mode(path: Path) -> int:
    """The mode a new file would get (or the existing file's)."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        pass
    umask = 0o022
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    umask = int(line.split()[1], 8)
    except OSError:
        pass
    return 0o666 & ~umask
