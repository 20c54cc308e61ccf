"""Just enough of protobuf's wire format to move ONNX weights without copying them.

Loading: :func:`cut_raw_data` walks a serialized ModelProto and cuts the big
``TensorProto.raw_data`` payloads out of the main graph's initializers, so protobuf parses
only the small rest while the weights become zero-copy views of the (memory-mapped) file.
A file is walked with ``pread`` rather than through its mapping, so that loading does not
fault any page of the mapping into the process.

Saving: :func:`len_field` writes the framing (tag and length) of a length-delimited field,
so a big payload can be written straight from an array after its header. Protobuf accepts
the fields of a message in any order and concatenates repeated fields, so a graph written
as "the graph without initializers, then each initializer" parses to the same message.
"""

from __future__ import annotations

import dataclasses
import os

# Wire types.
VARINT, I64, LEN, I32 = 0, 1, 2, 5

# Field numbers (onnx.proto).
MODEL_GRAPH = 7
GRAPH_INITIALIZER = 5
TENSOR_RAW_DATA = 9


class WireError(ValueError):
    """The bytes are not protobuf this module can walk (the caller falls back to protobuf)."""


def encode_varint(n: int) -> bytes:
    """The base-128 varint encoding of a non-negative integer."""
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def len_field(field: int, length: int) -> bytes:
    """The tag and length that open a length-delimited field of ``length`` bytes."""
    return encode_varint(field << 3 | LEN) + encode_varint(length)


def len_field_size(field: int, length: int) -> int:
    """Bytes a length-delimited field takes in all: framing plus payload."""
    return len(len_field(field, length)) + length


class BufferSource:
    """Bytes to walk, held in memory."""

    def __init__(self, buf: memoryview) -> None:
        self.buf = buf
        self.size = len(buf)

    def at(self, pos: int) -> int:
        return self.buf[pos]

    def span(self, start: int, end: int) -> bytes | memoryview:
        return self.buf[start:end]


class FileSource:
    """Bytes to walk, read from a file descriptor in blocks."""

    BLOCK = 1 << 16

    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self.size = size
        self._start = 0
        self._block = b""

    def at(self, pos: int) -> int:
        offset = pos - self._start
        if not 0 <= offset < len(self._block):
            self._block = os.pread(self.fd, self.BLOCK, pos)
            self._start, offset = pos, 0
            if not self._block:
                raise WireError("the file ended early")
        return self._block[offset]

    def span(self, start: int, end: int) -> bytes:
        offset = start - self._start
        if offset >= 0 and end - self._start <= len(self._block):
            return self._block[offset:end - self._start]
        data = os.pread(self.fd, end - start, start)
        if len(data) != end - start:
            raise WireError("the file ended early")
        return data


Source = BufferSource | FileSource


def _varint(src: Source, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end:
            raise WireError("truncated varint")
        b = src.at(pos)
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift >= 64:
            raise WireError("varint longer than 10 bytes")


def _fields(src: Source, start: int, end: int):
    """Yield ``(field, wire_type, field_start, value_start, value_end)`` for each field."""
    pos = start
    while pos < end:
        field_start = pos
        key, pos = _varint(src, pos, end)
        field, wire = key >> 3, key & 7
        if field == 0:
            raise WireError("field number 0")
        if wire == VARINT:
            value_start = pos
            _, pos = _varint(src, pos, end)
        elif wire == LEN:
            length, value_start = _varint(src, pos, end)
            pos = value_start + length
        elif wire in (I64, I32):
            value_start = pos
            pos += 8 if wire == I64 else 4
        else:  # groups are not used by onnx.proto
            raise WireError(f"unsupported wire type {wire}")
        if pos > end:
            raise WireError("a field runs past the end of its message")
        yield field, wire, field_start, value_start, pos


def split_before(data: bytes, field: int) -> tuple[bytes, bytes]:
    """Split a message serialized by protobuf (fields in number order) before the first
    field numbered above ``field``, where that field belongs in canonical order."""
    for number, _, field_start, _, _ in _fields(BufferSource(memoryview(data)), 0, len(data)):
        if number > field:
            return data[:field_start], data[field_start:]
    return data, b""


@dataclasses.dataclass
class CutModel:
    """A serialized ModelProto with big initializer payloads cut out."""

    # The model's bytes without the cut payloads (small: parse it with protobuf).
    proto: bytes
    # Initializer index in the (merged) main graph -> (offset, length) of its raw_data.
    raw_spans: dict[int, tuple[int, int]]


class _Pieces:
    """Output assembled from copied spans of the input and new bytes."""

    def __init__(self, src: Source) -> None:
        self.src = src
        self.parts: list[bytes | memoryview] = []
        self.size = 0

    def copy(self, start: int, end: int) -> None:
        if end > start:
            self.parts.append(self.src.span(start, end))
            self.size += end - start

    def add(self, data: bytes) -> None:
        self.parts.append(data)
        self.size += len(data)

    def extend(self, other: _Pieces) -> None:
        self.parts.extend(other.parts)
        self.size += other.size


def cut_raw_data(src: Source, min_size: int = 4096) -> CutModel:
    """Cut the raw_data of main-graph initializers of ``min_size`` bytes or more.

    Repeated occurrences of a singular field follow protobuf's rules (graphs merge, the
    last raw_data wins), so parsing the result gives the message protobuf would give,
    minus the cut payloads.

    Raises:
        WireError: the bytes are not well-formed protobuf of the expected shape.
    """
    out = _Pieces(src)
    spans: dict[int, tuple[int, int]] = {}
    counter = [0]
    run = 0
    for field, wire, field_start, value_start, value_end in _fields(src, 0, src.size):
        if field != MODEL_GRAPH:
            continue
        if wire != LEN:
            raise WireError("ModelProto.graph is not length-delimited")
        graph = _cut_graph(src, value_start, value_end, min_size, spans, counter)
        if graph is None:
            continue
        out.copy(run, field_start)
        out.add(len_field(MODEL_GRAPH, graph.size))
        out.extend(graph)
        run = value_end
    out.copy(run, src.size)
    return CutModel(b"".join(out.parts), spans)


def _cut_graph(src: Source, start: int, end: int, min_size: int,
               spans: dict[int, tuple[int, int]], counter: list[int]) -> _Pieces | None:
    """The graph with big raw_data cut, or None when nothing was cut."""
    out = _Pieces(src)
    run = start
    for field, wire, field_start, value_start, value_end in _fields(src, start, end):
        if field != GRAPH_INITIALIZER:
            continue
        if wire != LEN:
            raise WireError("GraphProto.initializer is not length-delimited")
        index = counter[0]
        counter[0] += 1
        if value_end - value_start < min_size:
            continue
        tensor = _cut_tensor(src, value_start, value_end)
        if tensor is None:
            continue
        pieces, span = tensor
        spans[index] = span
        out.copy(run, field_start)
        out.add(len_field(GRAPH_INITIALIZER, pieces.size))
        out.extend(pieces)
        run = value_end
    if run == start:
        return None
    out.copy(run, end)
    return out


def _cut_tensor(src: Source, start: int, end: int) -> tuple[_Pieces, tuple[int, int]] | None:
    out = _Pieces(src)
    run = start
    span = None
    for field, wire, field_start, value_start, value_end in _fields(src, start, end):
        if field != TENSOR_RAW_DATA:
            continue
        if wire != LEN:
            raise WireError("TensorProto.raw_data is not length-delimited")
        span = (value_start, value_end - value_start)  # the last occurrence wins
        out.copy(run, field_start)
        run = value_end
    if span is None:
        return None
    out.copy(run, end)
    return out, span
