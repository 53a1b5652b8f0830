"""Checkpoints: ``forgegrad.save(state_dict, path)`` / ``forgegrad.load(path)`` in the safetensors format.

The file is a plain safetensors file (never pickle: loading one cannot run code), readable by
``safetensors.numpy.load_file`` and, for float32/int64 tensors, by ``safetensors.torch.load_file``.

Writes are atomic: the bytes go to a temporary file in the destination's directory, which is
flushed and fsync'ed, then renamed over the destination with ``os.replace`` and the directory is
fsync'ed. A save that fails for any reason (a bad value, a full disk, Ctrl-C mid-write) leaves the
previous file untouched and no temporary file behind; the temp file of a save killed outright is
removed by the next save to the same path. The file keeps the permissions of the one it replaces
(a new one gets the umask default) and a symlink is written through (see ``forgegrad._atomic_io``).

Reads are bounded: ``load`` refuses anything but a regular file, validates the header before
allocating anything and reads each tensor straight into its own array (peak memory about the
file's size; see ``forgegrad._safetensors_read``).

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

Devices: tensors on a device (``cuda``, any registered one) are copied to the host to be saved; the
device of each such tensor is recorded in the reserved header entry ``"forgegrad.devices"``.
``load(path)`` returns numpy arrays (host memory) as always; ``load(path, map_location=...)`` returns
Tensors placed as torch's ``map_location`` says: a device name or ``forgegrad.device`` (every tensor
there), a dict ``{saved device: device}`` (others stay on their saved device), or a callable
``fn(tensor_on_cpu, saved_device) -> Tensor`` (None: the saved device).
"""
from __future__ import annotations

import contextlib
import io
import os
from collections import OrderedDict
from typing import BinaryIO, Dict, Mapping, Optional, Union

import json

import numpy as np

from . import _checkpoint_structure as _structure
from . import devices as _devices
from . import dtypes as _dtypes
from . import _safetensors_read as _reader
from ._atomic_io import atomic_write
from .tensor import Tensor

__all__ = ["save", "load", "load_metadata"]

PathLike = Union[str, "os.PathLike[str]", BinaryIO]
DEVICES_KEY = "forgegrad.devices"  # header entry: {tensor name: device} for tensors saved from a device

_INSTALL_HINT = 'forgegrad.save/load need the safetensors package: pip install "forgegrad[safetensors]"'


def _safetensors():
    try:
        import safetensors
        import safetensors.numpy as stnp
    except ImportError as e:  # pragma: no cover - safetensors is installed in the test environment
        raise ImportError(_INSTALL_HINT) from e
    return safetensors, stnp


def _as_array(where: str, value, locations: Optional[Dict[int, str]] = None) -> np.ndarray:
    """The C-contiguous numpy array of an array leaf; ``where`` names it in errors (a key or key path).
    A tensor on another device is copied to the host; ``locations`` records its device by the copy's id."""
    if getattr(value, "_is_uninitialized", False):  # an empty array here would load as a (0,)-shaped parameter
        raise ValueError(f"forgegrad.save: value at {where} is an uninitialized parameter or buffer of a lazy module "
                         "(no shape yet): run the model's forward once before saving")
    arr = value._data if isinstance(value, Tensor) else np.asarray(value)  # Tensor and nn.Parameter
    if not isinstance(arr, np.ndarray):
        if not _devices.has_data(arr):
            raise ValueError(f"forgegrad.save: value at {where} is a meta tensor, which has no values to save")
        dev = _devices.device_of(arr)
        arr = _devices.to_host(arr)
        if locations is not None:
            locations[id(arr)] = dev
    if arr.dtype.kind == "c" and arr.dtype.itemsize > 8:
        raise TypeError(f"forgegrad.save: value at {where} has dtype {arr.dtype}, which safetensors cannot store "
                        "(its only complex dtype is C64, complex64): save it as .to(forgegrad.complex64), or "
                        "forgegrad.view_as_real(t) (float64) and view_as_complex after loading")
    if (arr.dtype.kind not in "fiubc" and arr.dtype is not _dtypes._BF16) or arr.dtype.itemsize > 8:
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
    for key in (_structure.STRUCTURE_KEY, DEVICES_KEY):
        if key in metadata:
            raise ValueError(f"forgegrad.save: metadata key {key!r} is reserved (forgegrad's own header entries: "
                             "the structure of nested checkpoints, the devices of saved tensors); use another key")
    return dict(metadata)


_MISSING = object()


def _pickle_module(pickle_module, who):
    """torch's pickle_module=: None or the standard pickle (torch's default); another (dill, ...) is refused."""
    import pickle
    if pickle_module is not None and pickle_module is not pickle:
        raise TypeError(f"{who}: pickle_module= is not supported (forgegrad checkpoints are safetensors, never "
                        f"pickle), got {getattr(pickle_module, '__name__', pickle_module)!r}")


def _renamed(value, alias, torch_name, alias_name, who):
    """torch's argument, or forgegrad's earlier keyword name for it (``save(state_dict=..., path=...)``)."""
    if alias is _MISSING:
        if value is _MISSING:
            raise TypeError(f"{who}() missing required argument {torch_name!r}")
        return value
    if value is not _MISSING:
        raise TypeError(f"{who}() got {torch_name} and {alias_name} (the same argument): give one")
    return alias


def save(obj=_MISSING, f=_MISSING, pickle_module=None, pickle_protocol=2, _use_new_zipfile_serialization=True,
         _disable_byteorder_record=False, *, metadata: Optional[Mapping[str, str]] = None, state_dict=_MISSING,
         path=_MISSING) -> None:
    """Write ``obj`` (a state dict) to ``f`` as safetensors, atomically (never pickle). torch's signature:
    ``save(obj, f, pickle_module, pickle_protocol, _use_new_zipfile_serialization, _disable_byteorder_record)``;
    the last three choose details of torch's pickle / zip format and are accepted without effect (the file is
    safetensors whatever they say); pickle_module other than None or ``pickle`` is refused. forgegrad's keyword
    names ``state_dict=`` and ``path=`` are taken too.

    Args:
        obj (state_dict): a dict. Either str -> Tensor / Parameter / numpy array (``model.state_dict()``),
            stored as plain safetensors tensors; or a nested state such as
            ``{"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 3}``: dicts with
            str or int keys, lists, tuples, arrays and int/float/bool/str/None values (see the
            module docstring for the layout).
        f (path): destination file (its directory must exist). Conventionally ``*.safetensors``. A
            symlink is written through; an existing file keeps its permissions. Or a binary file
            object (``io.BytesIO``, ``open(p, "wb")``): the bytes are written to it in one call and
            it is left open (atomicity is then the caller's).
        metadata: optional str -> str header entries (see ``load_metadata``); the key
            ``"forgegrad.structure"`` is reserved.

    Raises:
        TypeError: a key that is not str/int, a value that cannot be saved, an unsupported dtype
            (the message names the key path, e.g. ``['optimizer']['state'][0]['exp_avg']``).
        ValueError: a reference cycle or absurd nesting in the state; the reserved metadata key;
            a tensor named ``"__metadata__"`` (reserved by the safetensors format).
        FileNotFoundError: the destination directory does not exist.

    Nothing is written unless the whole state serialises; the previous file is then kept intact.
    """
    state_dict = _renamed(obj, state_dict, "obj", "state_dict", "save")
    path = _renamed(f, path, "f", "path", "save")
    if isinstance(pickle_module, Mapping):  # forgegrad's save(state_dict, path, metadata) before torch's order
        raise TypeError("forgegrad.save: the third argument is torch's pickle_module; pass metadata by keyword "
                        "(save(obj, f, metadata={...}))")
    _pickle_module(pickle_module, "forgegrad.save")
    if isinstance(pickle_protocol, bool) or not isinstance(pickle_protocol, int):
        raise TypeError(f"forgegrad.save: pickle_protocol must be an int, got {type(pickle_protocol).__name__}")
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"forgegrad.save: expected a dict (e.g. model.state_dict(), or a nested dict such as "
                        f"{{'model': ..., 'optimizer': ...}}), got {type(state_dict).__name__}")
    meta = _check_metadata(metadata)
    locations: Dict[int, str] = {}

    def as_array(where, value):
        return _as_array(where, value, locations)

    if _structure.is_flat(state_dict):
        arrays = {key: as_array(repr(key), value) for key, value in state_dict.items()}
    else:
        arrays, structure = _structure.encode(state_dict, as_array)
        meta = dict(meta or {}, **{_structure.STRUCTURE_KEY: structure})
    if locations:
        where = {name: locations[id(a)] for name, a in arrays.items() if id(a) in locations}
        meta = dict(meta or {}, **{DEVICES_KEY: json.dumps(where, sort_keys=True)})
    if "__metadata__" in arrays:  # safetensors' reserved header key: the file would not load
        raise ValueError("forgegrad.save: the name '__metadata__' is reserved by the safetensors format "
                         "(it holds the header metadata); rename that entry")
    _, stnp = _safetensors()
    payload = stnp.save(arrays, metadata=meta)  # serialise fully before touching the disk
    if _is_file_object(path, "write", "forgegrad.save"):
        path.write(payload)  # the caller's stream: written in one call, left open
        return
    atomic_write(path, lambda f: f.write(payload), who="forgegrad.save")


def _is_file_object(obj, method: str, who: str) -> bool:
    """True for a binary file object (torch.save/load accept those too); TypeError for a text one."""
    if isinstance(obj, (str, bytes, os.PathLike)) or not hasattr(obj, method):
        return False
    if isinstance(obj, io.TextIOBase) or "b" not in getattr(obj, "mode", "b"):
        raise TypeError(f"{who}: the file object must be opened in binary mode ('rb'/'wb'), got a text stream")
    return True


def _open(path: PathLike):
    """(binary file, size of what is left to read) and a context that closes only files opened here."""
    if _is_file_object(path, "read", "forgegrad.load"):
        f = path
        if not (hasattr(f, "seekable") and f.seekable()):
            f = io.BytesIO(f.read())  # a pipe or socket: its bytes, then the same bounded parse
        start = f.tell()
        size = f.seek(0, io.SEEK_END) - start
        f.seek(start)
        return f, size, contextlib.nullcontext()
    f, size = _reader.open_regular(os.fspath(path), "forgegrad.load")
    return f, size, f


def _name(path) -> str:
    return repr(getattr(path, "name", "<file object>")) if hasattr(path, "read") else repr(os.fspath(path))


def _corrupt(path, err) -> ValueError:
    return ValueError(f"forgegrad.load: {_name(path)} is not a valid safetensors checkpoint "
                      f"(corrupt or truncated file?): {err}")


def load(f=_MISSING, map_location=None, pickle_module=None, *, weights_only=None, mmap=None, path=_MISSING):
    """Read a checkpoint written by ``save`` (or any safetensors file), from a path or a binary file
    object (read from its current position; left open).

    ``map_location``: None (numpy arrays, below), or Tensors placed as torch's: a device name
    ("cpu", "cuda", ...) or ``forgegrad.device``; a dict ``{saved device: device}``; a callable
    ``fn(tensor_on_cpu, saved_device) -> Tensor or None`` (None: on its saved device). A tensor's
    saved device is where it was when saved ("cpu" for files from elsewhere).

    Returns:
        For a flat checkpoint (or any plain safetensors file): an OrderedDict str -> numpy array,
        sorted by key; pass it straight to ``Module.load_state_dict``. For a nested checkpoint:
        the saved structure (a dict; int keys stay ints, tuples stay tuples, inf/nan floats are
        restored), e.g. ``opt.load_state_dict(fg.load(path)["optimizer"])``. Arrays are writable
        numpy copies, independent of the file; Tensors come back as numpy arrays.

    Raises:
        FileNotFoundError: the file does not exist.
        IsADirectoryError: the path is a directory.
        ValueError: the path is not a regular file (a FIFO, a device...); the file is not a valid
            safetensors file (corrupt, truncated, wrong format: checked on the header before any
            tensor memory is allocated); or its ``"forgegrad.structure"`` entry is malformed
            (tampered or damaged). Loading never runs code from the file.

    ``weights_only`` (torch's): any value is accepted, since every forgegrad load is weights-only (safetensors,
    never pickle). ``mmap=True`` is refused (the arrays are read into memory), and so is a ``pickle_module`` other
    than None or ``pickle``. ``f`` is torch's name; forgegrad's ``path=`` is taken too.
    """
    path = _renamed(f, path, "f", "path", "load")
    _pickle_module(pickle_module, "forgegrad.load")
    if weights_only is not None and not isinstance(weights_only, bool):
        raise TypeError(f"load(): weights_only must be a bool or None, got {type(weights_only).__name__}")
    if mmap:
        raise NotImplementedError("load(): mmap=True is not supported; forgegrad reads the tensors into memory")
    f, size, closing = _open(path)
    with closing:
        try:
            meta, entries = _reader.read_header(f, size)
            # BF16 tensors: bfloat16 arrays (ml_dtypes) where forgegrad.bfloat16 is available, else float32 (exact)
            loaded = _reader.read_tensors(f, entries, widen_bfloat16=not _reader.bfloat16_available())
            loaded = {k: _reader.bfloat16_bits_as_bfloat16(v) for k, v in loaded.items()}
        except _reader.CorruptFile as e:
            raise _corrupt(path, e) from None
    if map_location is not None:
        loaded = _placed(loaded, _saved_devices(meta, path), map_location)
    if _structure.STRUCTURE_KEY in meta:
        try:
            return _structure.decode(meta[_structure.STRUCTURE_KEY], loaded)
        except _structure.StructureError as e:
            raise ValueError(f"forgegrad.load: {_name(path)} is not a valid forgegrad checkpoint: its "
                             f"{_structure.STRUCTURE_KEY!r} header entry is malformed (tampered or damaged "
                             f"file?): {e}") from None
    return OrderedDict(sorted(loaded.items()))  # each array owns its (writable) memory


def _saved_devices(meta, path) -> Dict[str, str]:
    text = meta.get(DEVICES_KEY)
    if text is None:
        return {}
    try:
        where = json.loads(text)
    except ValueError:
        where = None
    if not isinstance(where, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in where.items()):
        raise ValueError(f"forgegrad.load: {_name(path)} is not a valid forgegrad checkpoint: its {DEVICES_KEY!r} "
                         "header entry is malformed")
    return where


def _placed(loaded: Dict[str, np.ndarray], saved: Dict[str, str], map_location) -> Dict[str, Tensor]:
    """Each loaded array as a Tensor on the device map_location gives it."""
    if isinstance(map_location, (str, _devices.device)):
        target = _devices.device(map_location).type  # clear errors for unknown or unavailable devices
        return {name: Tensor._wrap_exact(arr).to(target) for name, arr in loaded.items()}
    if isinstance(map_location, Mapping):
        out = {}
        for name, arr in loaded.items():
            where = saved.get(name, "cpu")
            target = map_location.get(where, where)
            out[name] = Tensor._wrap_exact(arr).to(_devices.device(target).type)
        return out
    if callable(map_location):
        out = {}
        for name, arr in loaded.items():
            where = saved.get(name, "cpu")
            t = map_location(Tensor._wrap_exact(arr), where)
            if t is None:
                t = Tensor._wrap_exact(arr).to(_devices.device(where).type)
            elif not isinstance(t, Tensor):
                raise TypeError(f"forgegrad.load: map_location returned {type(t).__name__} for {name!r}; expected a "
                                "forgegrad Tensor or None")
            out[name] = t
        return out
    raise TypeError("forgegrad.load: map_location must be a device (str or forgegrad.device), a dict "
                    f"{{saved device: device}} or a callable, got {type(map_location).__name__}")


def load_metadata(path: PathLike) -> Dict[str, str]:
    """The str -> str metadata given to ``save`` ({} when none); the reserved structure entry of
    nested checkpoints is left out."""
    f, size, closing = _open(path)
    with closing:
        try:
            meta, _ = _reader.read_header(f, size)  # the header only; no tensor data is read
        except _reader.CorruptFile as e:
            raise _corrupt(path, e) from None
    meta.pop(_structure.STRUCTURE_KEY, None)
    meta.pop(DEVICES_KEY, None)
    return meta
