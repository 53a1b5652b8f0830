"""Data sets for the command: the bundled digits or a file, split into train/validation and shaped
for a zoo model's input kind."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from ._errors import CLIError, UsageError

BUILTIN = ("digits",)
FILE_KINDS = (".npz (arrays x and y), .csv (label in the last column), an IDX file (images only), a folder of "
              "MNIST-layout IDX files, .txt (text, for char_lstm)")


@dataclass
class Dataset:
    """Samples x (N, ...) and targets y (N,) int64 class labels, or None (unsupervised / language model)."""

    name: str
    x: np.ndarray
    y: Optional[np.ndarray]
    num_classes: Optional[int]
    vocab: Optional[str] = None  # for text data: the characters, index = token id

    @property
    def sample_shape(self) -> Tuple[int, ...]:
        return tuple(self.x.shape[1:])


def _normalize_loaded(name, obj):
    """forgegrad.datasets readers may return (x, y), a dict/Bunch with data/target, or a dataset
    object with arrays; bring them to (x, y) numpy arrays."""
    if isinstance(obj, tuple) and len(obj) == 2:
        x, y = obj
    elif isinstance(obj, dict) or hasattr(obj, "keys"):
        keys = {k.lower(): k for k in obj.keys()}
        xk = next((keys[k] for k in ("x", "data", "images", "inputs") if k in keys), None)
        yk = next((keys[k] for k in ("y", "target", "targets", "labels") if k in keys), None)
        if xk is None:
            raise CLIError(f"{name}: found arrays {sorted(obj.keys())} but none named x/data/images")
        x, y = obj[xk], (obj[yk] if yk is not None else None)
    elif hasattr(obj, "tensors"):
        x, y = obj.tensors[0], (obj.tensors[1] if len(obj.tensors) > 1 else None)
    else:
        raise CLIError(f"{name}: cannot read a data set from a {type(obj).__name__}")
    x = np.asarray(getattr(x, "data", x))
    y = None if y is None else np.asarray(getattr(y, "data", y))
    return x, y


def _digits():
    """The 1797 bundled 8x8 digits (scikit-learn's copy) as (N, 64) float32 in [0, 1] and int64 labels."""
    from .. import datasets
    try:
        x, y = datasets.load_digits()
    except ImportError as e:  # scikit-learn is optional; the message names the extra
        raise CLIError(str(e)) from None
    return np.asarray(x, np.float32).reshape(len(x), -1), np.asarray(y, np.int64)


def _read_npz(path):
    with np.load(path) as f:
        return _normalize_loaded(path, {k: f[k] for k in f.files})


def _read_csv(path):
    from .. import datasets
    return datasets.load_csv(path)


def _read_idx(path):
    """One IDX file holds one array (images, no labels): usable by the VAEs, not by classifiers."""
    from .. import datasets
    return np.asarray(datasets.read_idx(path)), None


def _read_mnist_folder(path):
    """A folder with the 4 MNIST-layout IDX files: train and test parts joined (the CLI splits itself)."""
    from .. import datasets
    try:
        (x_tr, y_tr), (x_te, y_te) = datasets.load_mnist(path)
    except FileNotFoundError as e:
        raise UsageError(f"{path} is a directory but not an MNIST-layout folder: {e}") from None
    return np.concatenate([x_tr, x_te]), np.concatenate([y_tr, y_te])


def _read_text(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if len(text) < 2:
        raise UsageError(f"{path}: the text file is empty")
    return text


def load(spec: str, text_seq_len: int = 64, vocab: Optional[str] = None) -> Dataset:
    """``spec`` is a built-in name (digits) or a path. Raises UsageError for unknown names and bad paths."""
    if spec in BUILTIN:
        x, y = _digits()
        return Dataset("digits", x, y, 10)
    if not os.path.exists(spec):
        looks_like_path = os.sep in spec or "." in os.path.basename(spec)
        if looks_like_path:
            raise UsageError(f"data file not found: {spec}")
        raise UsageError(f"unknown data set {spec!r}; use one of: {', '.join(BUILTIN)}, "
                         f"or a path to a file: {FILE_KINDS}")
    ext = os.path.splitext(spec)[1].lower()
    try:
        if os.path.isdir(spec):
            x, y = _read_mnist_folder(spec)
        elif ext == ".txt":
            text = _read_text(spec)
            return _text_dataset(spec, text, text_seq_len, vocab)
        if ext == ".npz":
            x, y = _read_npz(spec)
        elif ext == ".csv":
            x, y = _read_csv(spec)
        elif ext in ("", ".gz", ".idx", ".ubyte") or "idx" in os.path.basename(spec).lower():
            x, y = _read_idx(spec)
        else:
            raise UsageError(f"unsupported data file type {ext!r} ({spec}); expected {FILE_KINDS}")
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot read data file {spec}: {e}") from None
    x = np.asarray(x)
    if x.ndim < 2 or len(x) == 0:
        raise UsageError(f"{spec}: expected samples of shape (N, ...), got an array of shape {x.shape}")
    if y is not None:
        if len(y) != len(x):
            raise UsageError(f"{spec}: {len(x)} samples but {len(y)} labels")
        yf = np.asarray(y)
        if yf.dtype.kind == "f" and not np.all(yf == np.round(yf)):
            raise UsageError(f"{spec}: labels must be class indices (integers)")
        y = yf.astype(np.int64).reshape(-1)
        if y.min() < 0:
            raise UsageError(f"{spec}: labels must be class indices >= 0")
    # 8-bit images (IDX/MNIST-style uint8) are scaled to [0, 1] like the digits; other data is used as is
    x = x.astype(np.float32) / np.float32(255.0) if x.dtype == np.uint8 else x.astype(np.float32)
    return Dataset(os.path.basename(spec), x, y, int(y.max()) + 1 if y is not None else None)


def _text_dataset(name, text, seq_len, vocab=None):
    """Characters as token ids; ``vocab`` (a trained model's) fixes the ids, else the text's sorted characters."""
    if vocab is None:
        vocab = "".join(sorted(set(text)))
    unknown = set(text) - set(vocab)
    if unknown:
        raise UsageError(f"{name} has characters the model's vocabulary lacks: {''.join(sorted(unknown))[:20]!r}")
    index = {c: i for i, c in enumerate(vocab)}
    ids = np.fromiter((index[c] for c in text), np.int64, len(text))
    n = (len(ids) - 1) // seq_len
    if n < 2:
        raise UsageError(f"{name}: the text is too short for sequences of {seq_len} characters")
    x = ids[: n * seq_len].reshape(n, seq_len)
    y = ids[1: n * seq_len + 1].reshape(n, seq_len)
    ds = Dataset(os.path.basename(name), x, None, len(vocab), vocab)
    ds.targets = y
    return ds


def split(ds: Dataset, val_fraction: float, seed: int):
    """Indices (train, val) from a seeded permutation; val is empty when val_fraction is 0."""
    n = len(ds.x)
    perm = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * val_fraction))
    if val_fraction > 0 and (n_val == 0 or n_val >= n):
        raise UsageError(f"--val-split {val_fraction} leaves no training or validation samples out of {n}")
    return perm[n_val:], perm[:n_val]


def shape_for(x: np.ndarray, input_kind: str) -> np.ndarray:
    """Samples reshaped for a model's input kind (flat, image, sequence, tokens)."""
    from .. import models
    if input_kind == "flat":
        return x.reshape(len(x), -1)
    if input_kind == "image":
        return x.reshape((len(x),) + models.as_image_shape(x.shape[1:]))
    if input_kind == "sequence":
        return x.reshape((len(x),) + models.as_sequence_shape(x.shape[1:]))
    return x
