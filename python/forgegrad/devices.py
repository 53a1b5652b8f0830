"""Devices: where a tensor's storage lives, and the one seam through which the Python layer reaches it.

A Tensor's storage is a device array: a numpy ``ndarray`` on the CPU, a :class:`MetaArray` on the
``meta`` device (shape and dtype only, no data: for shape inference, ``Module.summary`` and the
exporter's checks), and on any other device the array type that device registered with
:func:`register_device` (the ``cuda`` device registers ``forgegrad._C.cuda.DeviceArray``).
``device_of(array)`` names the device of an array from its type; the op registry picks an op's
kernels by that name, and everything else the Python layer does with storage (allocating it, copying
it to and from the host, adding gradients) goes through the device's backend here, so adding a
device is one :func:`register_device` call plus each op's Function (``OpDef.add_device``), with no
edit of the Python layer. See docs/devices.md.

    with forgegrad.device("meta"):
        big = nn.Linear(100_000, 100_000)     # no weight memory is allocated
"""
from __future__ import annotations

import contextlib
import importlib
import threading
from typing import Dict, Optional, Tuple

import numpy as np

from ._memory import empty_aligned

__all__ = ["device", "MetaArray", "device_of", "default_device", "empty", "zeros", "ones", "full", "has_data",
           "DeviceBackend", "register_device", "unregister_device", "backend", "known_devices", "is_device_name",
           "to_host", "add", "copy", "set_cpu_fallback", "cpu_fallback_enabled", "cpu_fallback"]

_VOID = np.dtype([])  # an itemsize-0 dtype: arrays of any shape that own no memory


class MetaArray:
    """Shape and dtype of an array that has no data (the ``meta`` device).

    Shape ops run on a zero-byte stand-in (``view()``: numpy indexing, reshape, transpose and
    concatenation work on it without allocating), so their shape rules are numpy's own.
    """

    __slots__ = ("shape", "dtype", "__weakref__")  # weakref: in-place writes are counted per array
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


# ---- device backends: what the Python layer needs of a device ----------------------------------------
class DeviceBackend:
    """What forgegrad's Python layer needs of a device besides its op kernels.

    A device registers an instance with :func:`register_device`. Arrays of the device's array type
    must have ``shape`` (a tuple of ints), ``dtype`` (a numpy dtype), ``ndim`` and ``size``; nothing
    else of numpy is assumed (no ``__array__``, arithmetic or indexing). Subclasses implement
    ``empty``, ``full``, ``from_host`` and ``to_host``; the other methods have defaults: ``zeros`` is
    ``full(.., 0)``, and ``add``/``copy`` (gradient accumulation, copies of gradients) run the op
    registry's ``add``/``clone`` Functions on this device, so a device with those ops needs nothing
    more. Optimizer updates are in forgegrad.optim.kernels (one table per optimizer and device).
    """

    #: the name in "X is not available: ..." errors (the cuda backend says "CUDA")
    label: Optional[str] = None
    name: str = ""  # set by register_device

    def is_available(self) -> bool:
        return True

    def unavailable_reason(self) -> str:
        return ""

    def empty(self, shape: Tuple[int, ...], dtype: np.dtype):
        raise NotImplementedError(f"device {self.name!r}: its backend does not implement empty()")

    def full(self, shape: Tuple[int, ...], value, dtype: np.dtype):
        raise NotImplementedError(f"device {self.name!r}: its backend does not implement full()")

    def zeros(self, shape: Tuple[int, ...], dtype: np.dtype):
        return self.full(shape, 0, dtype)

    def from_host(self, array: np.ndarray):
        """A copy of the numpy array ``array`` on this device (any dtype its kernels take)."""
        raise NotImplementedError(f"device {self.name!r}: its backend does not implement from_host()")

    def to_host(self, array) -> np.ndarray:
        """A numpy copy of the device array ``array``."""
        raise NotImplementedError(f"device {self.name!r}: its backend does not implement to_host()")

    def add(self, a, b):
        """``a + b`` as a new array (same shape and dtype): how autograd adds gradients."""
        return _run_op_forward("add", self.name, a, b)

    def copy(self, a):
        """A new array with ``a``'s values: a leaf's first gradient (optimizers change .grad in place)."""
        return _run_op_forward("clone", self.name, a)

    def synchronize(self) -> None:
        """Wait for the work queued on the device (a no-op for synchronous devices)."""


def _run_op_forward(op_name: str, dev: str, *arrays):
    from .ops import registry
    op = registry.get(op_name)
    fn = op.functions.get(dev)
    if fn is None and cpu_fallback_enabled():
        fn = _fallback().function_for(op, dev)
    if fn is None:
        raise NotImplementedError(f"device {dev!r}: its backend has no {op_name}() and op {op_name!r} has no kernel "
                                  f"for it (the op runs on: {', '.join(op.devices)})")
    ctx = fn.__new__(fn)
    ctx.needs_input_grad = [False] * len(arrays)
    return fn.forward(ctx, *arrays)


_BUILTIN = ("cpu", "meta")
_BACKENDS: Dict[str, DeviceBackend] = {}
# devices whose module registers them when first named (forgegrad.cuda is imported lazily)
_LAZY_DEVICES: Dict[str, str] = {"cuda": "forgegrad.cuda"}
_REQUIRED = ("empty", "full", "from_host", "to_host")


# ---- which device an array lives on ------------------------------------------------------------
_DEVICE_OF_TYPE: Dict[type, str] = {np.ndarray: "cpu", MetaArray: "meta"}


def register_array_type(array_type: type, device_name: str) -> None:
    """Make arrays of ``array_type`` belong to ``device_name`` (register_device does this)."""
    _DEVICE_OF_TYPE[array_type] = device_name


def device_of(array) -> str:
    return _DEVICE_OF_TYPE.get(type(array), "cpu")


def register_device(name: str, array_type: Optional[type], backend: DeviceBackend) -> None:
    """Add the device ``name`` whose tensors store ``array_type`` arrays, served by ``backend``.

    ``backend`` (a :class:`DeviceBackend`) supplies allocation, host copies and the few array
    operations the engine performs itself; ops run on the device through the Functions their records
    get with ``OpDef.add_device(name, Fn)``. After this call ``Tensor.to(name)``, factories with
    ``device=name``, ``forgegrad.device(name)``, ``Module.to(name)``, autograd, ``save``/``load`` and
    the optimizers whose kernel table has the device work on it. ``array_type`` may be None for a
    device that is not available in this build (its backend's ``is_available()`` is False).
    Registering a name again replaces its backend.
    """
    if not isinstance(name, str) or not name or ":" in name or not name.isidentifier():
        raise ValueError(f"register_device: name must be an identifier such as 'cuda', got {name!r}")
    if name in _BUILTIN:
        raise ValueError(f"register_device: {name!r} is a built-in device")
    if not isinstance(backend, DeviceBackend):
        raise TypeError(f"register_device({name!r}): backend must be a forgegrad.devices.DeviceBackend (subclass it "
                        f"and implement {', '.join(_REQUIRED)}), got {type(backend).__name__}")
    missing = [m for m in _REQUIRED if getattr(type(backend), m) is getattr(DeviceBackend, m)]
    if missing:
        raise TypeError(f"register_device({name!r}): backend lacks {', '.join(missing)} (see DeviceBackend)")
    if array_type is not None:
        if not isinstance(array_type, type):
            raise TypeError(f"register_device({name!r}): array_type must be a class, got {type(array_type).__name__}")
        owner = _DEVICE_OF_TYPE.get(array_type)
        if owner is not None and owner != name:
            raise ValueError(f"register_device({name!r}): {array_type.__name__} arrays already belong to {owner!r}")
        _DEVICE_OF_TYPE[array_type] = name
    try:
        backend.name = name
    except AttributeError:  # a backend with __slots__ keeps its own name
        pass
    _BACKENDS[name] = backend
    register_transfer("cpu", name, backend.from_host)
    register_transfer(name, "cpu", backend.to_host)


def unregister_device(name: str) -> None:
    """Remove a device added by register_device (its arrays' type, copies and backend)."""
    if _BACKENDS.pop(name, None) is None:
        raise ValueError(f"unregister_device: no device {name!r} is registered")
    for t in [t for t, d in _DEVICE_OF_TYPE.items() if d == name]:
        del _DEVICE_OF_TYPE[t]
    for key in [k for k in _TRANSFERS if name in k]:
        del _TRANSFERS[key]
    _fallback().forget(name)


def known_devices() -> Tuple[str, ...]:
    return _BUILTIN + tuple(sorted(set(_BACKENDS) | set(_LAZY_DEVICES)))


def is_device_name(name) -> bool:
    """Whether ``name`` ("cpu", "cuda:0", ...) names a device (available or not)."""
    return isinstance(name, str) and name.split(":", 1)[0] in known_devices()


def backend(name: str) -> DeviceBackend:
    """The backend of a registered device (importing the module of a lazily registered one)."""
    be = _BACKENDS.get(name)
    if be is None and name in _LAZY_DEVICES:
        importlib.import_module(_LAZY_DEVICES[name])
        be = _BACKENDS.get(name)
    if be is None:
        if name in _BUILTIN:
            raise ValueError(f"{name!r} is a built-in device without a backend")
        raise ValueError(f"unknown device {name!r}: expected one of {known_devices()}")
    return be


# ---- the opt-in CPU fallback for ops without a kernel on a device (forgegrad._cpu_fallback) ------------------
def _fallback():
    from . import _cpu_fallback
    return _cpu_fallback


def set_cpu_fallback(enabled: bool) -> None:
    """Run an op that has no kernel on a device on the CPU instead: its inputs are copied to the host, the CPU
    kernels run (forward and backward) and the results are copied back, with a UserWarning once per op and
    device. Off by default (such an op raises NotImplementedError); ``FORGEGRAD_CPU_FALLBACK=1`` in the
    environment when forgegrad is imported switches it on. View ops (reshape, permute, expand, indexing,
    unfold) are not covered. The switch is process-wide, as torch's PYTORCH_ENABLE_MPS_FALLBACK."""
    _fallback().set_enabled(enabled)


def cpu_fallback_enabled() -> bool:
    """Whether ops without a kernel on a device fall back to the CPU (see set_cpu_fallback)."""
    return _fallback().enabled()


@contextlib.contextmanager
def cpu_fallback(enabled: bool = True):
    """``with devices.cpu_fallback():`` the CPU fallback on (or off) for the block, then as it was."""
    prev = cpu_fallback_enabled()
    set_cpu_fallback(enabled)
    try:
        yield
    finally:
        set_cpu_fallback(prev)


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
    if base in _BUILTIN:
        return base
    if base not in _BACKENDS and base not in _LAZY_DEVICES:
        raise ValueError(f"unknown device {name!r}: expected one of {known_devices()}")
    be = backend(base)
    if not be.is_available():
        raise RuntimeError(f"{be.label or base} is not available: {be.unavailable_reason()}")
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
        return isinstance(other, str) and other.split(":", 1)[0] == self.type

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
    """``fn(array) -> array on dst`` copies an array from device src to device dst (a direct copy
    between two devices; without one, transfer goes through the host)."""
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
    if dst != "cpu" and np.dtype(array.dtype).kind == "c":
        raise NotImplementedError(f"complex tensors live on the CPU only (their ops are numpy code); a {array.dtype} "
                                  f"tensor cannot move to {dst}")
    fn = _TRANSFERS.get((src, dst))
    if fn is not None:
        return fn(array)
    if src != "cpu" and dst != "cpu" and (src, "cpu") in _TRANSFERS and ("cpu", dst) in _TRANSFERS:
        return _TRANSFERS[("cpu", dst)](_TRANSFERS[(src, "cpu")](array))
    raise NotImplementedError(f"no copy from {src} to {dst} is registered")


def to_host(array) -> np.ndarray:
    """A numpy array with ``array``'s values: the array itself on the CPU, a copy from another device."""
    if type(array) is np.ndarray or isinstance(array, np.ndarray):
        return array
    return transfer(array, "cpu")


# ---- allocation through the seam ---------------------------------------------------------------------
def _target(device_name) -> str:
    return default_device() if device_name is None else _check_name(device_name)


def _dtype_or_default(dtype):
    """``dtype``, or the default floating dtype (forgegrad.set_default_dtype: layers' parameters follow it)."""
    if dtype is None:
        from .dtypes import default_float
        return default_float()
    return dtype


def empty(shape, dtype=None, device_name=None):
    """Uninitialised storage on ``device_name`` (the default device when None). On the CPU it starts on
    a 64-byte boundary (forgegrad._memory): layers allocate their weights here, and kernels that
    stream a weight every step (the recurrent matmul) run much slower on a misaligned one."""
    dtype = _dtype_or_default(dtype)
    dev = _target(device_name)
    if dev == "cpu":
        return empty_aligned(shape, dtype)
    if dev == "meta":
        return MetaArray(shape, dtype)
    return _BACKENDS[dev].empty(_shape(shape), np.dtype(dtype))


def zeros(shape, dtype=None, device_name=None):
    dtype = _dtype_or_default(dtype)
    dev = _target(device_name)
    if dev == "cpu":
        return np.zeros(shape, dtype)
    if dev == "meta":
        return MetaArray(shape, dtype)
    return _BACKENDS[dev].zeros(_shape(shape), np.dtype(dtype))


def full(shape, value, dtype=None, device_name=None):
    dtype = _dtype_or_default(dtype)
    dev = _target(device_name)
    if dev == "cpu":
        return np.full(shape, value, dtype)
    if dev == "meta":
        return MetaArray(shape, dtype)
    return _BACKENDS[dev].full(_shape(shape), value, np.dtype(dtype))


def ones(shape, dtype=None, device_name=None):
    return full(shape, 1, dtype, device_name)


def _shape(shape) -> Tuple[int, ...]:
    return (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(int(s) for s in shape)


# ---- the array operations the engine performs itself --------------------------------------------------
def add(a, b):
    """``a + b`` for two arrays on one device (gradient accumulation)."""
    dev = "cpu" if isinstance(a, np.ndarray) else device_of(a)  # numpy scalars are the CPU's too
    if dev == "cpu":
        out = a + b
        return np.asarray(out) if isinstance(out, np.generic) else out  # 0-d + 0-d is a numpy scalar: keep an array
    return _BACKENDS[dev].add(a, b)


def copy(a):
    """A new array with ``a``'s values on ``a``'s device."""
    dev = "cpu" if isinstance(a, np.ndarray) else device_of(a)
    if dev == "cpu":
        return np.array(a, copy=True)
    return _BACKENDS[dev].copy(a)


def has_data(array) -> bool:
    """False for storage without values (a meta array): initialisers and copies skip it."""
    return type(array) is not MetaArray


def __getattr__(name):
    if name == "KNOWN_DEVICES":  # kept for code written before devices could be registered
        return known_devices()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
