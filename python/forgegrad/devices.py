"""Devices: where a tensor's storage lives, and the one seam through which ops reach it.

A Tensor's storage is a device array: a numpy ``ndarray`` on the CPU, a :class:`MetaArray` on the
``meta`` device (shape and dtype only, no data: for shape inference, ``Module.summary`` and the
exporter's checks) and, once it has tensors, a CUDA device array. ``device_of(array)`` names the
device of an array from its type; the op registry picks an op's kernels by that name, and the
autograd engine allocates its own buffers through :func:`zeros` here, so a new device adds a row to
each table instead of changing the Python layer.

    with forgegrad.device("meta"):
        big = nn.Linear(100_000, 100_000)     # no weight memory is allocated
"""
from __future__ import annotations

import contextlib
import threading
from typing import Dict, Tuple

import numpy as np

from ._memory import empty_aligned

__all__ = ["device", "MetaArray", "device_of", "default_device", "empty", "zeros", "ones", "has_data",
           "KNOWN_DEVICES"]

KNOWN_DEVICES = ("cpu", "meta", "cuda")
_VOID = np.dtype([])  # an itemsize-0 dtype: arrays of any shape that own no memory


class MetaArray:
    """Shape and dtype of an array that has no data (the ``meta`` device).

    Shape ops run on a zero-byte stand-in (``view()``: numpy indexing, reshape, transpose and
    concatenation work on it without allocating), so their shape rules are numpy's own.
    """

    __slots__ = ("shape", "dtype")
    device = "meta"

    def __init__(self, shape, dtype=np.float32):
        self.shape: Tuple[int, ...] = tuple(int(s) for s in shape)
        if any(s < 0 for s in self.shape):
            raise ValueError(f"meta array: sizes must be >= 0, got shape {self.shape}")
        self.dtype = np.dtype(dtype)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def nbytes(self) -> int:
        return 0

    @property
    def itemsize(self) -> int:
        return self.dtype.itemsize

    def view(self) -> np.ndarray:
        """A zero-byte numpy array of this shape, for running numpy's own shape rules."""
        return np.empty(self.shape, _VOID)

    @classmethod
    def like(cls, stand_in: np.ndarray, dtype) -> "MetaArray":
        return cls(stand_in.shape, dtype)

    def reshape(self, *shape):
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        return MetaArray(self.view().reshape(shape).shape, self.dtype)

    def astype(self, dtype, copy=True):
        return MetaArray(self.shape, dtype)

    def __len__(self):
        if not self.shape:
            raise TypeError("len() of a 0-d meta array")
        return self.shape[0]

    def __array__(self, dtype=None, copy=None):
        raise RuntimeError(f"a meta tensor (shape {self.shape}, {self.dtype}) has no data to read; "
                           "move it to a real device or run the model on real inputs")

    def __repr__(self) -> str:
        return f"MetaArray(shape={self.shape}, dtype={self.dtype})"


# ---- which device an array lives on ------------------------------------------------------------
_DEVICE_OF_TYPE: Dict[type, str] = {np.ndarray: "cpu", MetaArray: "meta"}


def register_array_type(array_type: type, device_name: str) -> None:
    """Make arrays of ``array_type`` belong to ``device_name`` (the CUDA backend registers its array)."""
    _DEVICE_OF_TYPE[array_type] = device_name


def device_of(array) -> str:
    return _DEVICE_OF_TYPE.get(type(array), "cpu")


# ---- the default device for new tensors and parameters --------------------------------------------
_state = threading.local()


def default_device() -> str:
    return _state.__dict__.get("device", "cpu")


def _check_name(name) -> str:
    if isinstance(name, device):
        return name.type
    if not isinstance(name, str):
        raise TypeError(f"device must be a str such as 'cpu' or 'meta', got {type(name).__name__}")
    base = name.split(":", 1)[0]
    if base not in KNOWN_DEVICES:
        raise ValueError(f"unknown device {name!r}: expected one of {KNOWN_DEVICES}")
    if base == "cuda":
        from . import cuda  # registers the CUDA array type and its transfers
        if not cuda.is_available():
            raise RuntimeError(f"CUDA is not available: {cuda.unavailable_reason()}")
    return base


class device(contextlib.ContextDecorator):
    """A device name (``fg.device("meta")``) and a context in which new tensors and module
    parameters are created on it: ``with fg.device("meta"): model = build()``."""

    def __init__(self, name):
        self.type = _check_name(name)

    def __enter__(self):
        self._prev = default_device()
        _state.device = self.type
        return self

    def __exit__(self, *exc):
        _state.device = self._prev
        return False

    def __eq__(self, other):
        if isinstance(other, device):
            return self.type == other.type
        return isinstance(other, str) and other == self.type

    def __hash__(self):
        return hash(self.type)

    def __str__(self):
        return self.type

    def __repr__(self):
        return f"device(type={self.type!r})"


_DEVICE_OBJECTS: Dict[str, "device"] = {}


def device_object(name: str) -> "device":
    """The (shared) device object of a device that holds tensors (``Tensor.device``)."""
    obj = _DEVICE_OBJECTS.get(name)
    if obj is None:
        obj = device.__new__(device)
        obj.type = name
        _DEVICE_OBJECTS[name] = obj
    return obj


# ---- moving arrays between devices -----------------------------------------------------------------------
_TRANSFERS: Dict[Tuple[str, str], object] = {}


def register_transfer(src: str, dst: str, fn) -> None:
    """``fn(array) -> array on dst`` copies an array from device src to device dst."""
    _TRANSFERS[(src, dst)] = fn


def transfer(array, dst: str):
    """``array`` on device ``dst`` (the array itself when it is there already)."""
    src = device_of(array)
    if src == dst:
        return array
    if dst == "meta":
        return MetaArray(array.shape, array.dtype)
    if src == "meta":
        raise RuntimeError(f"cannot move a meta tensor (shape {tuple(array.shape)}) to {dst}: it has no values")
    fn = _TRANSFERS.get((src, dst))
    if fn is None:
        raise NotImplementedError(f"no copy from {src} to {dst} is registered")
    return fn(array)


# ---- allocation through the seam ---------------------------------------------------------------------
def empty(shape, dtype=np.float32, device_name=None):
    """Uninitialised storage on ``device_name`` (the default device when None). On the CPU it starts on
    a 64-byte boundary (forgegrad._memory): layers allocate their weights here, and kernels that
    stream a weight every step (the recurrent matmul) run much slower on a misaligned one."""
    dev = default_device() if device_name is None else _check_name(device_name)
    if dev == "meta":
        return MetaArray(shape, dtype)
    return empty_aligned(shape, dtype)


def zeros(shape, dtype=np.float32, device_name=None):
    dev = default_device() if device_name is None else _check_name(device_name)
    if dev == "meta":
        return MetaArray(shape, dtype)
    return np.zeros(shape, dtype)


def ones(shape, dtype=np.float32, device_name=None):
    dev = default_device() if device_name is None else _check_name(device_name)
    if dev == "meta":
        return MetaArray(shape, dtype)
    return np.ones(shape, dtype)


def has_data(array) -> bool:
    """False for storage without values (a meta array): initialisers and copies skip it."""
    return type(array) is not MetaArray
