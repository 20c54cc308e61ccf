"""scikit-learn's digits data set and the ``digits_cnn`` model trained on it.

The data set ships with scikit-learn (nothing is downloaded): 1797 grayscale 8x8 images
of the digits 0-9, pixel values 0-16. kiln scales them to [0, 1] and splits them once,
stratified by label, with ``train_test_split(test_size=0.25, random_state=0)``: 1347
training and 450 held-out images.

``digits_cnn`` trains in about five seconds on two cores (15 epochs of Adam with a cosine
schedule, batch 32) and reaches about 99% held-out top-1. Training is deterministic on a
given machine and torch version: seeded initialisation and a seeded batch order.
The trained weights are cached in-process, and on disk under
``$KILN_CACHE_DIR/zoo`` (default ``$XDG_CACHE_HOME/kiln`` or ``~/.cache/kiln``; set
``KILN_CACHE_DIR`` to the empty string to turn the disk cache off). The cache file holds
only tensors and is read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import functools
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from kiln.zoo._models import DigitsCNN, seeded

# Bump when the data split, the network or the training recipe changes, so that stale
# cache files are not reused.
RECIPE_VERSION = 1
_SEED = 8
_EPOCHS = 15
_BATCH = 32
_LR = 3e-3

DigitsSplit = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


@functools.cache
def _split() -> DigitsSplit:
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    labels = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=0.25, random_state=0, stratify=labels
    )
    return x_train, y_train, x_test, y_test


def digits_data() -> DigitsSplit:
    """The fixed train / held-out split of scikit-learn's digits.

    Returns:
        ``(X_train, y_train, X_test, y_test)``: images as float32 [N, 1, 8, 8] scaled to
        [0, 1], labels as int64 [N]. 1347 training and 450 held-out images; the split is
        ``train_test_split(test_size=0.25, random_state=0, stratify=labels)``. The arrays
        are fresh copies, so callers may modify them.
    """
    return tuple(array.copy() for array in _split())  # type: ignore[return-value]


def accuracy(
    model: torch.nn.Module | Callable[[np.ndarray], object], x: np.ndarray, y: np.ndarray
) -> float:
    """Top-1 accuracy of a classifier on images ``x`` with labels ``y``.

    Args:
        model: A torch module, or a callable that takes the float32 batch ``x`` and returns
            logits [N, classes] as an array or tensor (a list or tuple of outputs, as
            ONNX Runtime's ``run`` returns, is read as its first element).
        x: The input batch, e.g. ``X_test`` from :func:`digits_data`.
        y: Integer labels [N].

    Returns:
        The fraction of rows whose arg-max logit equals the label.
    """
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} rows but y has {len(y)} labels")
    if isinstance(model, torch.nn.Module):
        with torch.no_grad():
            logits = model.eval()(torch.from_numpy(np.ascontiguousarray(x))).numpy()
    else:
        logits = model(x)
        if isinstance(logits, list | tuple):
            logits = logits[0]
        logits = np.asarray(logits)
    if logits.ndim != 2 or logits.shape[0] != len(y):
        raise ValueError(f"expected logits of shape [{len(y)}, classes], got {logits.shape}")
    return float((logits.argmax(axis=1) == np.asarray(y)).mean())


def _train() -> dict[str, torch.Tensor]:
    """Train DigitsCNN from scratch, deterministically, and return its state_dict."""
    x_train, y_train, _, _ = _split()
    x = torch.from_numpy(x_train)
    y = torch.from_numpy(y_train)
    with seeded(_SEED):
        model = DigitsCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=_LR)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=_EPOCHS)
    order = torch.Generator().manual_seed(_SEED)
    model.train()
    for _ in range(_EPOCHS):
        for batch in torch.randperm(len(x), generator=order).split(_BATCH):
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[batch]), y[batch])
            loss.backward()
            optimizer.step()
        scheduler.step()
    return {name: t.detach().clone() for name, t in model.state_dict().items()}


def cache_dir() -> Path | None:
    """The directory for kiln's on-disk cache, or None when ``KILN_CACHE_DIR`` is empty."""
    configured = os.environ.get("KILN_CACHE_DIR")
    if configured is not None:
        return Path(configured).expanduser() if configured else None
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "kiln"


def _cache_file() -> Path | None:
    root = cache_dir()
    if root is None:
        return None
    torch_version = torch.__version__.replace("+", "_")
    return root / "zoo" / f"digits_cnn-v{RECIPE_VERSION}-torch{torch_version}.pt"


def _read_cache(path: Path) -> dict[str, torch.Tensor] | None:
    """The cached state_dict if it is present and fits DigitsCNN, else None."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        DigitsCNN().load_state_dict(state)  # strict: rejects missing, extra or misshaped keys
    except Exception as exc:  # a corrupt or foreign file: retrain and overwrite it
        warnings.warn(f"ignoring unreadable kiln cache file {path}: {exc}", stacklevel=3)
        return None
    return state


def _write_cache(path: Path, state: dict[str, torch.Tensor]) -> None:
    """Write atomically (temporary file, then rename); a failure only warns."""
    tmp_name = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as tmp:
            tmp_name = tmp.name
            torch.save(state, tmp)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except OSError as exc:
        warnings.warn(f"could not write kiln cache file {path}: {exc}", stacklevel=3)
        if tmp_name is not None:
            Path(tmp_name).unlink(missing_ok=True)


@functools.cache
def trained_state() -> dict[str, torch.Tensor]:
    """DigitsCNN's trained state_dict: from this process, the disk cache, or training."""
    path = _cache_file()
    state = _read_cache(path) if path is not None else None
    if state is None:
        state = _train()
        if path is not None:
            _write_cache(path, state)
    return state


def build_digits_cnn() -> DigitsCNN:
    """DigitsCNN with its trained weights, in eval mode."""
    model = DigitsCNN()
    model.load_state_dict(trained_state())
    return model.eval()
