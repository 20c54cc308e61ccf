"""External data: tensors whose bytes live in files beside the model.

A model file is untrusted, so its external-data references are checked before any file
is mapped: the location must be a relative path inside the model's folder (no absolute
paths, no ``..``, no symbolic link at any component, no hard-linked file, a regular
file), and offset and length must lie within the file and match the tensor's shape and
type. Files are opened component by component relative to the folder (``O_NOFOLLOW``),
so a path cannot be swapped for a link between the check and the open. Data is
memory-mapped lazily, once per file, when a tensor is first used.
"""

from __future__ import annotations

import mmap
import os
import stat
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx

from kiln.errors import ModelLoadError
from kiln.ir import DataType
from kiln.ir.serde import unpack_raw


def location_parts(location: str) -> list[str]:
    """Split an external-data location into path components, refusing anything that could
    leave the model's folder.

    Raises:
        ValueError: why the location is refused.
    """
    if not location:
        raise ValueError("its location is empty")
    if "\0" in location:
        raise ValueError("its location contains a NUL character")
    if "\\" in location:
        raise ValueError(f"its location {location!r} contains a backslash")
    if location.startswith("/") or (len(location) > 1 and location[1] == ":"):
        raise ValueError(f"its location {location!r} is an absolute path")
    parts = [p for p in location.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ValueError(f"its location {location!r} leaves the model's folder ('..')")
    if not parts:
        raise ValueError(f"its location {location!r} names no file")
    return parts


def open_confined(folder: Path, parts: list[str]) -> int:
    """Open ``folder/parts...`` read-only without following links, checking each component.

    Returns:
        An open file descriptor of a regular file that has no other hard links.

    Raises:
        ValueError: why the file is refused.
        OSError: the file cannot be opened.
    """
    if os.open not in os.supports_dir_fd:  # pragma: no cover (Windows)
        return _open_confined_by_path(folder, parts)
    flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)
    dir_fd = os.open(folder, flags | os.O_DIRECTORY)
    try:
        for i, part in enumerate(parts):
            st = os.stat(part, dir_fd=dir_fd, follow_symlinks=False)
            shown = "/".join(parts[: i + 1])
            if stat.S_ISLNK(st.st_mode):
                raise ValueError(f"{shown!r} is a symbolic link")
            last = i == len(parts) - 1
            if last:
                if not stat.S_ISREG(st.st_mode):
                    raise ValueError(f"{shown!r} is not a regular file")
                fd = os.open(part, flags | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
            else:
                if not stat.S_ISDIR(st.st_mode):
                    raise ValueError(f"{shown!r} is not a folder")
                fd = os.open(part, flags | os.O_NOFOLLOW | os.O_DIRECTORY, dir_fd=dir_fd)
            os.close(dir_fd)
            dir_fd = fd
        fd, dir_fd = dir_fd, -1
    finally:
        if dir_fd >= 0:
            os.close(dir_fd)
    return _regular_or_close(fd, "/".join(parts))


def _open_confined_by_path(folder: Path, parts: list[str]) -> int:  # pragma: no cover
    path = folder
    for part in parts:
        path = path / part
        if path.is_symlink():
            raise ValueError(f"{path.relative_to(folder).as_posix()!r} is a symbolic link")
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    return _regular_or_close(fd, "/".join(parts))


def _regular_or_close(fd: int, shown: str) -> int:
    """``fd`` if it is a regular file with one link; otherwise close it and raise."""
    try:
        _check_regular(os.fstat(fd), shown)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _check_regular(st: os.stat_result, shown: str) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{shown!r} is not a regular file")
    if st.st_nlink > 1:
        raise ValueError(f"{shown!r} has {st.st_nlink} hard links")


class _DataFile:
    """One checked external-data file; mapped into memory on first use, once."""

    def __init__(self, folder: Path, location: str, parts: list[str]) -> None:
        self.folder = folder
        self.location = location
        self.parts = parts
        fd = open_confined(folder, parts)
        try:
            st = os.fstat(fd)
        finally:
            os.close(fd)
        self.size = st.st_size
        self.identity = (st.st_dev, st.st_ino)
        self._view: memoryview | None = None

    def view(self) -> memoryview:
        if self._view is None:
            try:
                fd = open_confined(self.folder, self.parts)
            except (OSError, ValueError) as exc:
                why = exc.strerror if isinstance(exc, OSError) else str(exc)
                raise ModelLoadError(
                    f"cannot open external data {self.location!r}: {why}") from None
            try:
                st = os.fstat(fd)
                if (st.st_dev, st.st_ino) != self.identity or st.st_size < self.size:
                    raise ModelLoadError(
                        f"external data file {self.location!r} changed since the model was loaded"
                    )
                self._view = memoryview(mmap.mmap(fd, 0, access=mmap.ACCESS_READ))
            finally:
                os.close(fd)
        return self._view


class ExternalData:
    """Resolves external-data TensorProtos of one model to lazy loaders (see serde)."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self._files: dict[str, _DataFile] = {}
        self._parts: dict[str, list[str]] = {}

    def __call__(self, tp: onnx.TensorProto, what: str) -> Callable[[], np.ndarray]:
        info = {e.key: e.value for e in tp.external_data}
        dtype = DataType(tp.data_type)
        dims = tuple(tp.dims)
        if dtype == DataType.STRING:
            raise ModelLoadError(f"{what}: string tensors cannot use external data")
        expected = _nbytes(dtype, dims)
        location = info.get("location", "")
        try:
            parts = self._parts.get(location) or self._parts.setdefault(
                location, location_parts(location))
            offset = _number(info, "offset", 0)
            length = _number(info, "length", expected)
        except ValueError as exc:
            raise ModelLoadError(f"{what}: external data refused: {exc}") from None
        if length != expected:
            raise ModelLoadError(
                f"{what}: external data length {length} does not match shape {list(dims)} of "
                f"{dtype.name} ({expected} bytes)"
            )
        if self.folder is None:
            raise ModelLoadError(
                f"{what}: external data in {location!r}, but the model was not loaded from a "
                "file (pass base_dir)"
            )
        data = self._file(location, parts, what)
        if offset + length > data.size:
            raise ModelLoadError(
                f"{what}: external data at offset {offset} + length {length} runs past the end "
                f"of {location!r} ({data.size} bytes)"
            )

        def load() -> np.ndarray:
            if length == 0:
                return np.zeros(dims, dtype.numpy)
            return unpack_raw(data.view()[offset:offset + length], dtype, dims)

        return load

    def _file(self, location: str, parts: list[str], what: str) -> _DataFile:
        key = "/".join(parts)
        data = self._files.get(key)
        if data is None:
            assert self.folder is not None
            try:
                data = _DataFile(self.folder, location, parts)
            except ValueError as exc:
                raise ModelLoadError(f"{what}: external data refused: {exc}") from None
            except OSError as exc:
                raise ModelLoadError(
                    f"{what}: cannot open external data {location!r}: {exc.strerror}"
                ) from None
            self._files[key] = data
        return data


def _number(info: dict[str, str], key: str, default: int) -> int:
    text = info.get(key)
    if text is None or text == "":
        return default
    if not text.isascii() or not text.isdigit() or len(text) > 19:
        raise ValueError(f"its {key} {text[:40]!r} is not a non-negative integer")
    return int(text)


def _nbytes(dtype: DataType, dims: tuple[int, ...]) -> int:
    count = 1
    for d in dims:
        count *= d
    return (count * dtype.bitwidth + 7) // 8
