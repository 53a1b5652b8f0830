"""forgegrad.datasets: small real datasets and readers for local files.

Everything returns numpy arrays: features float32, class labels int64. Wrap them with
``forgegrad.data.TensorDataset`` / ``DataLoader`` or pass them to the Keras-style ``model.fit``.

* ``load_digits`` / ``load_breast_cancer``: the datasets that ship inside scikit-learn (no download;
  needs the optional extra: ``pip install "forgegrad[data]"``).
* ``train_test_split``: a seeded split of several arrays.
* ``read_idx`` / ``load_mnist``: MNIST-format IDX files (gzip'ed or not) from a local folder.
* ``load_npz`` / ``load_csv``: arrays from a local ``.npz`` or CSV file.
"""
from __future__ import annotations

import csv
import gzip
import math
import os
from typing import Optional, Sequence, Union

import numpy as np

__all__ = ["load_digits", "load_breast_cancer", "train_test_split", "read_idx", "load_mnist", "load_npz",
           "load_csv"]

_SKLEARN_HINT = 'this dataset ships with scikit-learn, an optional dependency: pip install "forgegrad[data]"'


def _sklearn_datasets():
    try:
        from sklearn import datasets as skd
    except ImportError as e:
        raise ImportError(_SKLEARN_HINT) from e
    return skd


# ---- seeded split ------------------------------------------------------------------------------
def train_test_split(*arrays, test_size: Union[float, int] = 0.25, seed: Optional[int] = 0,
                     shuffle: bool = True, stratify: Optional[np.ndarray] = None):
    """Split arrays (same first dimension) into train and test parts, in scikit-learn's output order:
    ``X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, seed=0)``.

    Args:
        test_size: a fraction in (0, 1) (the test part gets ``ceil(test_size * n)`` samples) or a count.
        seed: seeds the shuffle (None: forgegrad's global generator, see ``forgegrad.manual_seed``).
        shuffle: False keeps the order (the test part is the last samples).
        stratify: labels whose class proportions both parts should keep (needs shuffle).
    """
    if not arrays:
        raise ValueError("train_test_split: at least one array is required")
    arrays = [np.asarray(a) for a in arrays]
    n = arrays[0].shape[0] if arrays[0].ndim else 0
    sizes = [a.shape[0] if a.ndim else 0 for a in arrays]
    if any(s != n for s in sizes):
        raise ValueError(f"train_test_split: arrays have different numbers of samples: {sizes}")
    if isinstance(test_size, float):
        if not 0.0 < test_size < 1.0:
            raise ValueError(f"train_test_split: a fractional test_size must be in (0, 1), got {test_size}")
        n_test = int(math.ceil(test_size * n))
    elif isinstance(test_size, (int, np.integer)) and not isinstance(test_size, bool):
        n_test = int(test_size)
    else:
        raise TypeError(f"train_test_split: test_size must be a float fraction or an int count, got {test_size!r}")
    if not 0 < n_test < n:
        raise ValueError(f"train_test_split: test_size={test_size} leaves {n_test} test and {n - n_test} train "
                         f"samples out of {n}; both parts must be non-empty")
    from .data.dataset import _resolve_generator
    if stratify is not None:
        if not shuffle:
            raise ValueError("train_test_split: stratify requires shuffle=True")
        gen = _resolve_generator(seed, "train_test_split")
        labels = np.asarray(stratify).reshape(n, -1)[:, 0] if np.asarray(stratify).ndim > 1 else np.asarray(stratify)
        test_idx = []
        classes, counts = np.unique(labels, return_counts=True)
        # per-class share of the test set, rounded down, then the remainder to the largest classes
        share = counts * n_test / n
        take = np.floor(share).astype(int)
        for i in np.argsort(-(share - take), kind="stable")[: n_test - take.sum()]:
            take[i] += 1
        for c, k in zip(classes, take):
            members = np.flatnonzero(labels == c)
            test_idx.append(gen.permutation(members)[:k])
        test_idx = np.sort(np.concatenate(test_idx))
        mask = np.ones(n, bool)
        mask[test_idx] = False
        train_idx = gen.permutation(np.flatnonzero(mask))
        test_idx = gen.permutation(test_idx)
    else:
        order = _resolve_generator(seed, "train_test_split").permutation(n) if shuffle else np.arange(n)
        train_idx, test_idx = order[: n - n_test], order[n - n_test:]
    out = []
    for a in arrays:
        out += [a[train_idx], a[test_idx]]
    return out


# ---- scikit-learn's bundled datasets ------------------------------------------------------------
def _maybe_split(X, y, return_split, test_size, seed):
    if not return_split:
        return X, y
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=test_size, seed=seed, stratify=y)
    return (X_tr, y_tr), (X_te, y_te)


def load_digits(return_split: bool = False, test_size: float = 0.2, seed: Optional[int] = 0):
    """The 1797 real 8x8 handwritten digits (UCI, as shipped by scikit-learn), 10 classes.

    Returns:
        ``(X, y)`` with X float32 (1797, 64) scaled to [0, 1] (pixel / 16) and y int64 (1797,);
        with ``return_split=True``, ``(X_train, y_train), (X_test, y_test)`` from a seeded stratified
        split (``test_size`` fraction in the test part).
    """
    d = _sklearn_datasets().load_digits()
    X = (np.asarray(d.data, dtype=np.float32) / np.float32(16.0)).astype(np.float32)
    y = np.asarray(d.target, dtype=np.int64)
    return _maybe_split(X, y, return_split, test_size, seed)


def load_breast_cancer(return_split: bool = False, test_size: float = 0.2, seed: Optional[int] = 0):
    """The Wisconsin breast-cancer dataset (569 samples, 30 raw features, label 1 = benign), as shipped
    by scikit-learn. Features are float32 and NOT standardised (do it with the train split's statistics).

    Returns ``(X, y)`` or, with ``return_split=True``, ``(X_train, y_train), (X_test, y_test)``.
    """
    d = _sklearn_datasets().load_breast_cancer()
    X = np.asarray(d.data, dtype=np.float32)
    y = np.asarray(d.target, dtype=np.int64)
    return _maybe_split(X, y, return_split, test_size, seed)


# ---- IDX (MNIST) ---------------------------------------------------------------------------------
_IDX_DTYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def _read_maybe_gzip(path: str) -> bytes:
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path!r}")
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":  # gzip magic, whatever the file is called
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise ValueError(f"{path!r}: corrupt gzip data: {e}") from None
    return raw


def read_idx(path: Union[str, os.PathLike]) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzip-compressed or not, into a numpy array.

    Header: two zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32,
    0x0E float64), the number of dimensions, then each dimension as a big-endian uint32.
    The array keeps the file's type, converted to native byte order.

    Raises:
        FileNotFoundError: no such file.
        ValueError: bad magic number, unknown type code, or a size that does not match the header.
    """
    path = os.fspath(path)
    buf = _read_maybe_gzip(path)
    if len(buf) < 4:
        raise ValueError(f"{path!r}: not an IDX file: {len(buf)} bytes is shorter than the 4-byte magic number")
    if buf[0] != 0 or buf[1] != 0:
        raise ValueError(f"{path!r}: not an IDX file: magic number starts with {buf[:2].hex()} instead of 0000")
    code, ndim = buf[2], buf[3]
    if code not in _IDX_DTYPES:
        raise ValueError(f"{path!r}: unknown IDX data type code 0x{code:02x} (expected one of "
                         + ", ".join(f"0x{c:02x}" for c in _IDX_DTYPES) + ")")
    if ndim == 0:
        raise ValueError(f"{path!r}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(buf) < header:
        raise ValueError(f"{path!r}: truncated IDX header: {ndim} dimensions need {header} bytes, file has {len(buf)}")
    shape = tuple(int(d) for d in np.frombuffer(buf, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(buf) - header != expected:
        raise ValueError(f"{path!r}: IDX data size mismatch: header says shape {shape} of {dtype.name} "
                         f"({expected} bytes) but the file has {len(buf) - header} bytes of data")
    arr = np.frombuffer(buf, dtype=dtype, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="))  # native order; also a writable copy


_MNIST_FILES = {
    "train_images": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "train_labels": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "test_images": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "test_labels": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}


def _find_mnist_file(folder: str, names: Sequence[str]) -> str:
    for name in names:
        for candidate in (name, name + ".gz"):
            p = os.path.join(folder, candidate)
            if os.path.isfile(p):
                return p
    raise FileNotFoundError(f"load_mnist: {names[0]}[.gz] not found in {folder!r} (expected the 4 standard files "
                            "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
                            "t10k-labels-idx1-ubyte, each optionally .gz)")


def load_mnist(folder: Union[str, os.PathLike], normalize: bool = True, flatten: bool = False):
    """Load MNIST (or Fashion-MNIST, or any dataset in the same layout) from the 4 standard IDX files.

    Args:
        folder: directory holding train-images-idx3-ubyte, train-labels-idx1-ubyte,
            t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (each may be .gz; the
            ``train-images.idx3-ubyte`` spelling is accepted too).
        normalize: images as float32 in [0, 1] (pixel / 255); otherwise the raw uint8.
        flatten: images as (N, rows*cols) instead of (N, rows, cols).

    Returns:
        ``(x_train, y_train), (x_test, y_test)``; labels int64.
    """
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"load_mnist: {folder!r} is not a directory")
    parts = {k: read_idx(_find_mnist_file(folder, names)) for k, names in _MNIST_FILES.items()}
    out = []
    for split in ("train", "test"):
        x, y = parts[f"{split}_images"], parts[f"{split}_labels"]
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"load_mnist: {split} images ({x.shape[0]}) and labels ({y.shape[0]}) differ in count")
        if y.ndim != 1:
            raise ValueError(f"load_mnist: {split} labels must be 1-dimensional, got shape {y.shape}")
        if normalize:
            x = x.astype(np.float32) / np.float32(255.0)
        if flatten:
            x = x.reshape(x.shape[0], -1)
        out.append((x, y.astype(np.int64)))
    return tuple(out)


# ---- npz / csv --------------------------------------------------------------------------------------
def _features_and_labels(X, y):
    X = np.asarray(X)
    if X.dtype.kind in "fiub":
        X = X.astype(np.float32)
    y = np.asarray(y)
    if y.dtype.kind in "iub":
        y = y.astype(np.int64)
    elif y.dtype.kind == "f":
        integral = y.size and np.all(np.isfinite(y)) and np.all(y == np.round(y))
        y = y.astype(np.int64) if integral else y.astype(np.float32)
    return X, y


def load_npz(path: Union[str, os.PathLike], x_key: str = "x", y_key: Optional[str] = "y"):
    """Load features and labels from a local ``.npz`` file (``np.savez``), without pickle.

    Returns ``(X, y)`` with X float32 and y int64 when its values are integral (float32 otherwise),
    or just X when ``y_key`` is None.
    """
    import zipfile
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"load_npz: no such file: {path!r}")
    # Open the file ourselves: np.load leaks its handle when the archive is corrupt.
    with open(path, "rb") as fh:
        try:
            f = np.load(fh, allow_pickle=False)
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
            raise ValueError(f"load_npz: {path!r} is not a valid .npz file: {e}") from None
        if not hasattr(f, "files"):  # a plain .npy file loads as one array
            raise ValueError(f"load_npz: {path!r} holds a single array (.npy), not a .npz archive of named arrays")
        with f:
            keys = list(f.files)
            for k in (x_key, y_key):
                if k is not None and k not in keys:
                    raise KeyError(f"load_npz: {path!r} has no array {k!r}; it holds {keys}")
            try:
                X = f[x_key]
                y = f[y_key] if y_key is not None else None
            except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:  # object arrays need pickle
                raise ValueError(f"load_npz: cannot read {path!r}: {e}") from None
    if X.ndim == 0 or (y is not None and y.ndim == 0):
        raise ValueError(f"load_npz: {path!r}: arrays need a first (sample) dimension, got 0-d arrays")
    if y is None:
        return _features_and_labels(X, np.zeros(0))[0]
    if X.shape[0] != y.shape[0]:
        raise ValueError(f"load_npz: {x_key!r} has {X.shape[0]} samples but {y_key!r} has {y.shape[0]}")
    return _features_and_labels(X, y)


def _parse_row(row, lineno, path):
    try:
        return [float(v) for v in row]
    except ValueError:
        bad = next(v for v in row if not _is_number(v))
        raise ValueError(f"load_csv: {path!r} line {lineno}: {bad!r} is not a number") from None


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def load_csv(path: Union[str, os.PathLike], target_column: Union[int, str, None] = -1,
             skip_header: Optional[bool] = None, delimiter: str = ","):
    """Load a numeric CSV file: one sample per row, one column is the target.

    Args:
        target_column: the label column, by index (negative counts from the end) or by header name;
            None returns only the features.
        skip_header: True: the first row is a header; False: there is none; None (default): the first
            row is a header exactly when it is not all numbers.
        delimiter: field separator.

    Returns:
        ``(X, y)``: X float32 (n_rows, n_columns - 1); y int64 when every value is integral,
        float32 otherwise. Just X when target_column is None.

    Raises:
        FileNotFoundError: no such file. ValueError: an empty file, a header whose column count
        differs from the data, ragged rows, non-numeric values, an unknown target column.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"load_csv: no such file: {path!r}")
    with open(path, newline="") as f:
        rows = [(i + 1, r) for i, r in enumerate(csv.reader(f, delimiter=delimiter)) if r and any(c.strip() for c in r)]
    if not rows:
        raise ValueError(f"load_csv: {path!r} is empty")
    header = None
    first_numeric = all(_is_number(c) for c in rows[0][1])
    if skip_header is None:
        skip_header = not first_numeric
    if skip_header:
        header = [c.strip() for c in rows[0][1]]
        rows = rows[1:]
        if not rows:
            raise ValueError(f"load_csv: {path!r} has a header but no data rows")
    elif not first_numeric:
        raise ValueError(f"load_csv: {path!r} line {rows[0][0]} is not numeric ({rows[0][1]}); "
                         "if it is a header pass skip_header=True")
    ncols = len(rows[0][1])
    if header is not None and len(header) != ncols:
        raise ValueError(f"load_csv: malformed header in {path!r}: {len(header)} column names {header} "
                         f"but the data rows have {ncols} columns")
    for lineno, r in rows:
        if len(r) != ncols:
            raise ValueError(f"load_csv: {path!r} line {lineno} has {len(r)} columns, expected {ncols}")
    data = np.array([_parse_row(r, lineno, path) for lineno, r in rows], dtype=np.float64)
    if target_column is None:
        return data.astype(np.float32)
    if isinstance(target_column, str):
        if header is None:
            raise ValueError(f"load_csv: target_column={target_column!r} is a name but {path!r} has no header")
        if target_column not in header:
            raise ValueError(f"load_csv: no column named {target_column!r} in header {header}")
        col = header.index(target_column)
    else:
        col = int(target_column)
        if not -ncols <= col < ncols:
            raise ValueError(f"load_csv: target_column={target_column} is out of range for {ncols} columns")
        col %= ncols
    if ncols < 2:
        raise ValueError(f"load_csv: {path!r} has a single column; there are no features besides the target")
    X = np.delete(data, col, axis=1)
    return _features_and_labels(X, data[:, col])
