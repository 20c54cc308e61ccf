"""The tvm backend's compile cache, keyed by a functional hash of the graph.

Two models that compute the same thing the same way (same ops, attributes, weights,
input types and wiring) hash the same even when their value and node names, doc strings
or metadata differ, so a renamed or re-exported model is not rebuilt. The key also holds
the target, the backend options that change code, the kiln and TVM versions and a hash of
the lowering and kernel sources, so a change to any of them rebuilds.

Entries are directories ``<cache>/tvm/<key>/`` holding ``model.so`` (the compiled VM
executable, weights included) and ``entry.json``; they are written into a temporary
directory and renamed into place, so a crash never leaves a half-written entry.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import onnx

from kiln.ir import Model, serde

LIBRARY_FILE = "model.so"
ENTRY_FILE = "entry.json"


def default_cache_dir() -> Path:
    """``$KILN_CACHE_DIR``, else ``$XDG_CACHE_HOME/kiln``, else ``~/.cache/kiln``."""
    if os.environ.get("KILN_CACHE_DIR"):
        return Path(os.environ["KILN_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "kiln"


def functional_hash(model: Model) -> str:
    """SHA-256 of the model with every name, doc string and metadata entry canonicalized.

    Values are renamed in order of definition (graph inputs, initializers, node outputs,
    recursively through subgraphs), so the hash depends on what the graph computes and how
    it is wired, not on what anything is called.
    """
    proto = serde.serialize_model(model)
    _canonicalize_model(proto)
    return hashlib.sha256(proto.SerializeToString(deterministic=True)).hexdigest()


def _canonicalize_model(proto: onnx.ModelProto) -> None:
    proto.producer_name = ""
    proto.producer_version = ""
    proto.doc_string = ""
    proto.model_version = 0
    del proto.metadata_props[:]
    _canonicalize_graph(proto.graph, {}, [0])
    for function in proto.functions:
        function.doc_string = ""
        for node in function.node:
            node.name = ""
            node.doc_string = ""


def _canonicalize_graph(graph: onnx.GraphProto, outer: Mapping[str, str], counter: list[int]) -> None:
    names = dict(outer)

    def define(name: str) -> str:
        if not name:
            return name
        new = f"v{counter[0]}"
        counter[0] += 1
        names[name] = new
        return new

    graph.name = ""
    graph.doc_string = ""
    for value in graph.input:
        value.name = define(value.name)
    for tensor in graph.initializer:
        tensor.name = names.get(tensor.name) or define(tensor.name)
    for sparse in graph.sparse_initializer:
        sparse.values.name = names.get(sparse.values.name) or define(sparse.values.name)
    for node in graph.node:
        node.name = ""
        node.doc_string = ""
        for i, name in enumerate(node.input):
            node.input[i] = names.get(name, name)
        for attr in node.attribute:
            attr.doc_string = ""
            if attr.type == onnx.AttributeProto.GRAPH:
                _canonicalize_graph(attr.g, names, counter)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    _canonicalize_graph(sub, names, counter)
        for i, name in enumerate(node.output):
            node.output[i] = define(name)
    for value in graph.output:
        value.name = names.get(value.name, value.name)
        value.doc_string = ""
    kept = [v for v in graph.value_info if v.name in names]
    for value in kept:
        value.name = names[value.name]
        value.doc_string = ""
    del graph.value_info[:]
    graph.value_info.extend(sorted(kept, key=lambda v: int(v.name[1:])))


@functools.cache
def _source_hash() -> str:
    """Hash of the sources that decide the generated code: kiln's lowering and kernels."""
    import kiln.backends.tvm as backend_pkg
    import kiln.kernels as kernels_pkg

    digest = hashlib.sha256()
    for pkg in (backend_pkg, kernels_pkg):
        root = Path(pkg.__file__).parent
        for path in sorted(root.rglob("*.py")):
            digest.update(path.relative_to(root).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def cache_key(model: Model, target: str, options: Mapping[str, Any]) -> str:
    """The cache key of compiling ``model`` for ``target`` (a TVM target's JSON string)
    with the code-relevant ``options``."""
    import tvm

    import kiln

    parts = {
        "graph": functional_hash(model),
        "target": target,
        "options": {k: options[k] for k in sorted(options)},
        "kiln": kiln.__version__,
        "tvm": tvm.__version__,
        "sources": _source_hash(),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


class CompileCache:
    """A directory of compiled libraries keyed by :func:`cache_key`."""

    def __init__(self, directory: str | os.PathLike | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_cache_dir() / "tvm"

    def path(self, key: str) -> Path:
        """The entry directory of ``key`` (present or not)."""
        return self.directory / key

    def lookup(self, key: str) -> Path | None:
        """The library file of ``key``, or None when there is no complete entry."""
        entry = self.path(key)
        library = entry / LIBRARY_FILE
        if library.is_file() and (entry / ENTRY_FILE).is_file():
            return library
        return None

    def store(self, key: str, executable, info: Mapping[str, Any]) -> Path:
        """Export ``executable`` (a ``tvm.runtime.Executable``) under ``key``; returns the
        library path. Writes into a temporary directory first and renames it into place."""
        self.directory.mkdir(parents=True, exist_ok=True)
        final = self.path(key)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=self.directory))
        try:
            executable.export_library(str(tmp / LIBRARY_FILE))
            (tmp / ENTRY_FILE).write_text(json.dumps(dict(info), indent=2, sort_keys=True))
            try:
                os.rename(tmp, final)
            except OSError:  # another process stored the same key first
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final / LIBRARY_FILE
