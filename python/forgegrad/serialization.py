"""Checkpoints: ``forgegrad.save(state_dict, path)`` / ``forgegrad.load(path)`` in the safetensors format.

The file is a plain safetensors file (never pickle: loading one cannot run code), readable by
``safetensors.numpy.load_file`` and, for float32/int64 tensors, by ``safetensors.torch.load_file``.

Writes are atomic: the bytes go to a temporary file in the destination's directory, which is
flushed and fsync'ed, then renamed over the destination with ``os.replace`` and the directory is
fsync'ed. A save that fails for any reason (a bad value, a full disk, Ctrl-C mid-write) leaves the
previous file untouched and no temporary file behind.

Scope: a flat mapping ``str -> array`` (a ``Module.state_dict()``: Tensors, Parameters or numpy
arrays). Nested structures such as an optimizer's ``state_dict()`` (dicts of per-parameter dicts
plus python scalars) are not supported; flatten them to string keys and arrays yourself.
Optional ``metadata`` (str -> str) is stored in the header and returned by ``load_metadata``.
"""
from __future__ import annotations

import os
import tempfile
from collections import OrderedDict
from typing import Dict, Mapping, Optional, Union

import numpy as np

from .tensor import Tensor

__all__ = ["save", "load", "load_metadata"]

PathLike = Union[str, "os.PathLike[str]"]

_INSTALL_HINT = 'forgegrad.save/load need the safetensors package: pip install "forgegrad[safetensors]"'


def _safetensors():
    try:
        import safetensors
        import safetensors.numpy as stnp
    except ImportError as e:  # pragma: no cover - safetensors is installed in the test environment
        raise ImportError(_INSTALL_HINT) from e
    return safetensors, stnp


def _as_array(key: str, value) -> np.ndarray:
    if isinstance(value, Tensor):  # Tensor and nn.Parameter
        arr = value.data
    elif isinstance(value, (np.ndarray, np.generic)):
        arr = np.asarray(value)
    else:
        raise TypeError(f"forgegrad.save: value for key {key!r} is a {type(value).__name__}; expected a "
                        "forgegrad Tensor/Parameter or a numpy array (nested optimizer state is not supported: "
                        "flatten it to string keys and arrays)")
    if arr.dtype.kind not in "fiub" or arr.dtype.itemsize > 8:
        raise TypeError(f"forgegrad.save: value for key {key!r} has dtype {arr.dtype}, which safetensors cannot store")
    # safetensors reads raw memory from the data pointer: it must be C-contiguous. (Not
    # np.ascontiguousarray: it turns 0-d arrays into 1-d ones.)
    return arr if arr.flags.c_contiguous else arr.copy(order="C")


def _check_metadata(metadata) -> Optional[Dict[str, str]]:
    if metadata is None:
        return None
    if not isinstance(metadata, Mapping) or not all(isinstance(k, str) and isinstance(v, str)
                                                    for k, v in metadata.items()):
        raise TypeError("forgegrad.save: metadata must be a dict of str -> str")
    return dict(metadata)


def _fsync_dir(directory: str) -> None:
    """Make the rename durable. Some filesystems/OSes cannot open a directory; that is not fatal."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save(state_dict: Mapping[str, object], path: PathLike, metadata: Optional[Mapping[str, str]] = None) -> None:
    """Write ``state_dict`` (str -> Tensor / Parameter / numpy array) to ``path`` as safetensors, atomically.

    Args:
        state_dict: e.g. ``model.state_dict()``. Keys must be strings.
        path: destination file (its directory must exist). Conventionally ``*.safetensors``.
        metadata: optional str -> str header entries (see ``load_metadata``).

    Raises:
        TypeError: a non-string key, a value that is not an array, an unsupported dtype.
        FileNotFoundError: the destination directory does not exist.
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"forgegrad.save: expected a dict of str -> array (e.g. model.state_dict()), "
                        f"got {type(state_dict).__name__}")
    arrays = {}
    for key, value in state_dict.items():
        if not isinstance(key, str):
            raise TypeError(f"forgegrad.save: keys must be str, got {type(key).__name__} key {key!r}")
        arrays[key] = _as_array(key, value)
    meta = _check_metadata(metadata)
    _, stnp = _safetensors()
    payload = stnp.save(arrays, metadata=meta)  # serialise fully before touching the disk

    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"forgegrad.save: directory {directory!r} does not exist")
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # includes KeyboardInterrupt: never leave a half-written temp file
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(directory)


def _read(path: PathLike) -> bytes:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"forgegrad.load: no such file: {path!r}")
    if os.path.isdir(path):
        raise IsADirectoryError(f"forgegrad.load: {path!r} is a directory, not a checkpoint file")
    with open(path, "rb") as f:
        return f.read()


def _corrupt(path, err) -> ValueError:
    return ValueError(f"forgegrad.load: {os.fspath(path)!r} is not a valid safetensors checkpoint "
                      f"(corrupt or truncated file?): {err}")


def load(path: PathLike) -> "OrderedDict[str, np.ndarray]":
    """Read a checkpoint written by ``save`` (or any safetensors file) into str -> numpy array.

    The arrays are writable copies, independent of the file. Pass the result straight to
    ``Module.load_state_dict``.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a valid safetensors file (corrupt, truncated, wrong format).
    """
    safetensors, stnp = _safetensors()
    data = _read(path)
    try:
        loaded = stnp.load(data)
    except (safetensors.SafetensorError, ValueError, KeyError) as e:
        raise _corrupt(path, e) from None
    # Hand back writable arrays (np.frombuffer over immutable bytes would be read-only).
    return OrderedDict((k, v if v.flags.writeable else v.copy()) for k, v in sorted(loaded.items()))


def load_metadata(path: PathLike) -> Dict[str, str]:
    """The str -> str metadata stored in a checkpoint's header ({} when none)."""
    safetensors, _ = _safetensors()
    _read(path)  # same missing-file errors as load
    try:
        with safetensors.safe_open(os.fspath(path), framework="np") as f:
            return dict(f.metadata() or {})
    except (safetensors.SafetensorError, ValueError) as e:
        raise _corrupt(path, e) from None
