"""Checkpoints: ``forgegrad.save(state_dict, path)`` / ``forgegrad.load(path)`` in the safetensors format.

The file is a plain safetensors file (never pickle: loading one cannot run code), readable by
``safetensors.numpy.load_file`` and, for float32/int64 tensors, by ``safetensors.torch.load_file``.

Writes are atomic: the bytes go to a temporary file in the destination's directory, which is
flushed and fsync'ed, then renamed over the destination with ``os.replace`` and the directory is
fsync'ed. A save that fails for any reason (a bad value, a full disk, Ctrl-C mid-write) leaves the
previous file untouched and no temporary file behind.

What can be saved:

* a flat mapping ``str -> array`` (a ``Module.state_dict()``: Tensors, Parameters or numpy
  arrays). The file holds exactly those tensors under those names, nothing else, as before
  nested checkpoints existed; ``load`` returns an OrderedDict sorted by key.
* any nested state under a top-level dict, e.g. ``{"model": model.state_dict(), "optimizer":
  opt.state_dict(), "scheduler": sched.state_dict(), "epoch": 3}``: dicts with str or int keys
  (int keys stay ints, as an optimizer's per-parameter state needs), lists, tuples, arrays and
  python scalars (int, float including inf/nan, bool, str, None). The arrays are the file's tensors,
  under unique dotted names ("optimizer.state.0.exp_avg"), so other safetensors readers see them;
  the structure is JSON in one reserved header entry, ``"forgegrad.structure"`` (layout in
  ``forgegrad._checkpoint_structure``). ``load`` rebuilds it: dicts (insertion order, key types
  kept), lists vs tuples, scalars, and numpy arrays where Tensors/arrays were saved. Mapping
  subclasses (OrderedDict, Counter) come back as dicts, namedtuples as tuples.

Optional ``metadata`` (str -> str) is stored in the header and returned by ``load_metadata``.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections import OrderedDict
from typing import Dict, Mapping, Optional, Union

import numpy as np

from . import _checkpoint_structure as _structure
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


def _as_array(where: str, value) -> np.ndarray:
    """The C-contiguous numpy array of an array leaf; ``where`` names it in errors (a key or key path)."""
    arr = value.data if isinstance(value, Tensor) else np.asarray(value)  # Tensor and nn.Parameter
    if arr.dtype.kind not in "fiub" or arr.dtype.itemsize > 8:
        raise TypeError(f"forgegrad.save: value at {where} has dtype {arr.dtype}, which safetensors cannot store")
    # safetensors reads raw memory from the data pointer: it must be C-contiguous. (Not
    # np.ascontiguousarray: it turns 0-d arrays into 1-d ones.)
    return arr if arr.flags.c_contiguous else arr.copy(order="C")


def _check_metadata(metadata) -> Optional[Dict[str, str]]:
    if metadata is None:
        return None
    if not isinstance(metadata, Mapping) or not all(isinstance(k, str) and isinstance(v, str)
                                                    for k, v in metadata.items()):
        raise TypeError("forgegrad.save: metadata must be a dict of str -> str")
    if _structure.STRUCTURE_KEY in metadata:
        raise ValueError(f"forgegrad.save: metadata key {_structure.STRUCTURE_KEY!r} is reserved (it holds the "
                         "structure of nested checkpoints); use another key")
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


def save(state_dict: Mapping, path: PathLike, metadata: Optional[Mapping[str, str]] = None) -> None:
    """Write ``state_dict`` to ``path`` as safetensors, atomically (never pickle).

    Args:
        state_dict: a dict. Either str -> Tensor / Parameter / numpy array (``model.state_dict()``),
            stored as plain safetensors tensors; or a nested state such as
            ``{"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 3}``: dicts with
            str or int keys, lists, tuples, arrays and int/float/bool/str/None values (see the
            module docstring for the layout).
        path: destination file (its directory must exist). Conventionally ``*.safetensors``.
        metadata: optional str -> str header entries (see ``load_metadata``); the key
            ``"forgegrad.structure"`` is reserved.

    Raises:
        TypeError: a key that is not str/int, a value that cannot be saved, an unsupported dtype
            (the message names the key path, e.g. ``['optimizer']['state'][0]['exp_avg']``).
        ValueError: a reference cycle or absurd nesting in the state; the reserved metadata key.
        FileNotFoundError: the destination directory does not exist.

    Nothing is written unless the whole state serialises; the previous file is then kept intact.
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"forgegrad.save: expected a dict (e.g. model.state_dict(), or a nested dict such as "
                        f"{{'model': ..., 'optimizer': ...}}), got {type(state_dict).__name__}")
    meta = _check_metadata(metadata)
    if _structure.is_flat(state_dict):
        arrays = {key: _as_array(repr(key), value) for key, value in state_dict.items()}
    else:
        arrays, structure = _structure.encode(state_dict, _as_array)
        meta = dict(meta or {}, **{_structure.STRUCTURE_KEY: structure})
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


def _header_metadata(data: bytes) -> Dict[str, str]:
    """The ``__metadata__`` of safetensors bytes that ``safetensors`` has already parsed successfully.

    Read from the same bytes as the tensors (not by reopening the path, which may have been
    replaced in between): 8-byte little-endian header length, then the JSON header.
    """
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return meta if isinstance(meta, dict) else {}


def load(path: PathLike):
    """Read a checkpoint written by ``save`` (or any safetensors file).

    Returns:
        For a flat checkpoint (or any plain safetensors file): an OrderedDict str -> numpy array,
        sorted by key; pass it straight to ``Module.load_state_dict``. For a nested checkpoint:
        the saved structure (a dict; int keys stay ints, tuples stay tuples, inf/nan floats are
        restored), e.g. ``opt.load_state_dict(fg.load(path)["optimizer"])``. Arrays are writable
        numpy copies, independent of the file; Tensors come back as numpy arrays.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a valid safetensors file (corrupt, truncated, wrong format), or
            its ``"forgegrad.structure"`` entry is malformed (tampered or damaged). Loading never
            runs code from the file.
    """
    safetensors, stnp = _safetensors()
    data = _read(path)
    try:
        loaded = stnp.load(data)
        meta = _header_metadata(data)
    except (safetensors.SafetensorError, ValueError, KeyError) as e:
        raise _corrupt(path, e) from None
    if _structure.STRUCTURE_KEY in meta:
        try:
            return _structure.decode(meta[_structure.STRUCTURE_KEY], loaded)
        except _structure.StructureError as e:
            raise ValueError(f"forgegrad.load: {os.fspath(path)!r} is not a valid forgegrad checkpoint: its "
                             f"{_structure.STRUCTURE_KEY!r} header entry is malformed (tampered or damaged "
                             f"file?): {e}") from None
    # Hand back writable arrays (np.frombuffer over immutable bytes would be read-only).
    return OrderedDict((k, v if v.flags.writeable else v.copy()) for k, v in sorted(loaded.items()))


def load_metadata(path: PathLike) -> Dict[str, str]:
    """The str -> str metadata given to ``save`` ({} when none); the reserved structure entry of
    nested checkpoints is left out."""
    safetensors, _ = _safetensors()
    _read(path)  # same missing-file errors as load
    try:
        with safetensors.safe_open(os.fspath(path), framework="np") as f:
            meta = dict(f.metadata() or {})
    except (safetensors.SafetensorError, ValueError) as e:
        raise _corrupt(path, e) from None
    meta.pop(_structure.STRUCTURE_KEY, None)
    return meta
