"""torch's package-level state and factories that forgegrad lacked: the generator's state (get_rng_state /
set_rng_state, initial_seed, seed), set_printoptions, the deterministic-algorithms switches, set_flush_denormal,
the inter-op thread count, and the factories asarray, frombuffer, empty_strided, scalar_tensor and from_dlpack.
``install()`` puts them on the package (forgegrad/__init__.py calls it once)."""
from __future__ import annotations

import builtins
import warnings

import numpy as np

from . import _print_options
from . import dtypes as _dtypes
from . import random as _random
from ._memory import empty_aligned
from .factories import placed
from .tensor import Tensor

__all__ = ["get_rng_state", "set_rng_state", "initial_seed", "seed", "set_printoptions", "get_printoptions",
           "use_deterministic_algorithms", "are_deterministic_algorithms_enabled",
           "is_deterministic_algorithms_warn_only_enabled", "set_flush_denormal", "get_num_interop_threads",
           "set_num_interop_threads", "asarray", "frombuffer", "empty_strided", "scalar_tensor", "from_dlpack",
           "FUNCTIONS", "install"]

_INT = (builtins.int, np.integer)


def _is_int(v) -> builtins.bool:
    return isinstance(v, _INT) and not isinstance(v, (builtins.bool, np.bool_))


# ---- the generator's state -------------------------------------------------------------------------------------
# A forgegrad state is this tag, then PCG64's 128-bit state and increment and its buffered 32-bit half (little
# endian): 45 bytes, unlike torch's 5056-byte Mersenne Twister state, so one cannot be mistaken for the other.
_RNG_TAG = b"fgPCG64\x01"
_RNG_BYTES = len(_RNG_TAG) + 16 + 16 + 1 + 4


def get_rng_state() -> Tensor:
    """The global generator's state as a uint8 tensor (set_rng_state restores it exactly)."""
    bg = _random.generator().bit_generator
    st = bg.state
    if st["bit_generator"] != "PCG64":
        raise RuntimeError(f"get_rng_state(): forgegrad's generator is {st['bit_generator']}, expected PCG64")
    raw = (_RNG_TAG + st["state"]["state"].to_bytes(16, "little") + st["state"]["inc"].to_bytes(16, "little")
           + builtins.bytes([st["has_uint32"]]) + builtins.int(st["uinteger"]).to_bytes(4, "little"))
    return Tensor(np.frombuffer(raw, np.uint8).copy(), dtype=np.uint8)


def set_rng_state(new_state) -> None:
    """Restore the global generator from a state get_rng_state returned (a uint8 tensor)."""
    if not isinstance(new_state, Tensor):
        raise TypeError(f"set_rng_state(): argument 'new_state' must be a forgegrad.Tensor (from get_rng_state()), "
                        f"got {type(new_state).__name__}")
    if new_state.dtype != _dtypes.uint8:
        raise TypeError(f"set_rng_state(): argument 'new_state' must be a uint8 tensor, got {new_state.dtype}")
    raw = np.ascontiguousarray(new_state.cpu().numpy()).reshape(-1).tobytes()
    # PCG64's increment is odd (numpy accepts an even one and draws another stream: a corrupted state)
    if len(raw) != _RNG_BYTES or not raw.startswith(_RNG_TAG) or raw[_RNG_BYTES - 5] > 1 \
            or not raw[len(_RNG_TAG) + 16] & 1:
        raise ValueError(f"set_rng_state(): argument 'new_state' is not a forgegrad generator state (expected the "
                         f"{_RNG_BYTES} bytes get_rng_state() returns, got {len(raw)} bytes; a torch generator "
                         "state cannot be used)")
    o = len(_RNG_TAG)
    state = {"bit_generator": "PCG64",
             "state": {"state": builtins.int.from_bytes(raw[o:o + 16], "little"),
                       "inc": builtins.int.from_bytes(raw[o + 16:o + 32], "little")},
             "has_uint32": raw[o + 32], "uinteger": builtins.int.from_bytes(raw[o + 33:o + 37], "little")}
    try:
        _random.generator().bit_generator.state = state
    except ValueError as e:
        raise ValueError(f"set_rng_state(): argument 'new_state' is not a valid generator state: {e}") from None


def initial_seed() -> builtins.int:
    """The seed the global generator was last seeded with (manual_seed or seed), or the one drawn at import."""
    return _random.initial_seed()


def seed() -> builtins.int:
    """Seed the global generator with a fresh seed from the OS and return it (torch.seed)."""
    s = builtins.int(np.random.SeedSequence().entropy) % 2**64
    _random.manual_seed(s)
    return s


# ---- printing --------------------------------------------------------------------------------------------------
_PROFILES = {"default": {"precision": 4, "threshold": 1000, "edgeitems": 3, "linewidth": 80},
             "short": {"precision": 2, "threshold": 1000, "edgeitems": 2, "linewidth": 80},
             "full": {"precision": 4, "threshold": float("inf"), "edgeitems": 3, "linewidth": 80}}


def set_printoptions(precision=None, threshold=None, edgeitems=None, linewidth=None, profile=None, sci_mode=None):
    """torch.set_printoptions: how Tensor repr prints values. ``profile`` ("default", "short", "full") sets the first
    four first; each argument given then overrides it; ``sci_mode`` is always set (None: automatic)."""
    for name, v in (("precision", precision), ("edgeitems", edgeitems), ("linewidth", linewidth)):
        if v is not None and (not _is_int(v) or v < 0):
            raise TypeError(f"set_printoptions(): argument {name!r} must be a non-negative int, got {v!r}")
    if threshold is not None and (isinstance(threshold, builtins.bool) or not isinstance(
            threshold, (builtins.int, builtins.float, np.number)) or threshold < 0):
        raise TypeError(f"set_printoptions(): argument 'threshold' must be a non-negative number, got {threshold!r}")
    if sci_mode is not None and not isinstance(sci_mode, builtins.bool):
        raise TypeError(f"set_printoptions(): argument 'sci_mode' must be True, False or None, got {sci_mode!r}")
    if profile is not None and profile not in _PROFILES:
        raise ValueError(f"set_printoptions(): argument 'profile' must be one of {sorted(_PROFILES)}, got {profile!r}")
    opts = _print_options.OPTIONS
    if profile is not None:
        opts.update(_PROFILES[profile])
    for name, v in (("precision", precision), ("threshold", threshold), ("edgeitems", edgeitems),
                    ("linewidth", linewidth)):
        if v is not None:
            opts[name] = v
    opts["sci_mode"] = sci_mode


def get_printoptions() -> dict:
    """The current print options (a copy), as torch's get_printoptions."""
    return dict(_print_options.OPTIONS)


# ---- switches torch has that forgegrad answers trivially --------------------------------------------------------
_DETERMINISTIC = {"mode": False, "warn_only": False}


def use_deterministic_algorithms(mode, *, warn_only=False) -> None:
    """Accepted and reported back: forgegrad's kernels are deterministic already (no atomics, fixed reduction
    orders; the results do not depend on the thread count), so no op ever raises or warns for it."""
    if not isinstance(mode, builtins.bool):
        raise TypeError(f"use_deterministic_algorithms(): argument 'mode' must be a bool, got {type(mode).__name__}")
    if not isinstance(warn_only, builtins.bool):
        raise TypeError(f"use_deterministic_algorithms(): argument 'warn_only' must be a bool, got "
                        f"{type(warn_only).__name__}")
    _DETERMINISTIC.update(mode=mode, warn_only=warn_only)


def are_deterministic_algorithms_enabled() -> builtins.bool:
    return _DETERMINISTIC["mode"]


def is_deterministic_algorithms_warn_only_enabled() -> builtins.bool:
    return _DETERMINISTIC["warn_only"]


def set_flush_denormal(mode) -> builtins.bool:
    """forgegrad never flushes denormals to zero (it does not set the CPU's FTZ/DAZ flags): asking for flushing
    returns False (not done, as torch on a CPU without the flags); asking for no flushing returns True."""
    if not isinstance(mode, builtins.bool):
        raise TypeError(f"set_flush_denormal(): argument 'mode' must be a bool, got {type(mode).__name__}")
    return not mode


_INTEROP = {"n": None}


def get_num_interop_threads() -> builtins.int:
    """torch's inter-op pool size. forgegrad runs one op at a time, each on its kernel thread pool
    (forgegrad.get_num_threads), so this is the value set_num_interop_threads recorded, else that pool's size."""
    if _INTEROP["n"] is not None:
        return _INTEROP["n"]
    from ._runtime import get_num_threads
    return get_num_threads()


def set_num_interop_threads(num) -> None:
    """Recorded for get_num_interop_threads, as torch accepts it; forgegrad has no inter-op pool to resize (the
    kernels' pool is forgegrad.set_num_threads)."""
    if not _is_int(num):
        raise TypeError(f"set_num_interop_threads(): argument 'num' must be an int, got {type(num).__name__}")
    if num <= 0:
        raise RuntimeError(f"set_num_interop_threads(): argument 'num' must be positive, got {num}")
    _INTEROP["n"] = builtins.int(num)


# ---- factories -------------------------------------------------------------------------------------------------
def _finish(t: Tensor, device, requires_grad) -> Tensor:
    t = placed(t, device)
    if requires_grad:
        t.requires_grad_(True)
    return t


def _storable(arr: np.ndarray) -> builtins.bool:
    return arr.dtype in _dtypes._BY_NUMPY


def asarray(obj, *, dtype=None, device=None, copy=None, requires_grad=False) -> Tensor:
    """torch.asarray: a tensor sharing ``obj``'s memory where it can (a Tensor, a numpy array, an object with the
    buffer or array interface), else a new one (sequences, numbers: floats in the default dtype). ``copy=True``
    always copies; ``copy=False`` raises where sharing is impossible."""
    if copy is not None and not isinstance(copy, builtins.bool):
        raise TypeError(f"asarray(): argument 'copy' must be a bool or None, got {type(copy).__name__}")
    want = None if dtype is None else _dtypes.to_numpy(dtype)
    if isinstance(obj, Tensor):
        out = obj
        if want is not None and want != obj._data.dtype:
            if copy is False:
                raise ValueError(f"asarray(): copy=False, but casting {obj.dtype} to {_dtypes.of(want)} needs a copy")
            out = obj.to(want)
        elif copy:
            out = obj.detach().clone()
        if device is not None and str(out.device) != str(device):
            if copy is False:
                raise ValueError("asarray(): copy=False, but moving the tensor to another device needs a copy")
            out = out.to(device)
        if requires_grad and out is obj:
            out = obj.detach()  # torch's: a new leaf over the same memory
        return out.requires_grad_(True) if requires_grad else out
    shareable = isinstance(obj, np.ndarray) or hasattr(obj, "__array_interface__") or (
        isinstance(obj, (builtins.bytearray, memoryview)))
    if not shareable and hasattr(obj, "__dlpack__"):  # another library's CPU tensor (torch's): shared
        try:
            obj, shareable = np.from_dlpack(obj), True
        except (RuntimeError, BufferError, TypeError, ValueError):
            pass
    if shareable:
        arr = np.asarray(obj)
        if want is None and not _storable(arr):
            raise TypeError(f"asarray(): argument 'obj' has dtype {arr.dtype}, which forgegrad tensors cannot hold")
        target = arr.dtype if want is None else want
        if copy is False and target != arr.dtype:
            raise ValueError(f"asarray(): copy=False, but converting {arr.dtype} to {target} needs a copy")
        data = np.array(arr, dtype=target, copy=True) if copy else np.asarray(arr, dtype=target)
        return _finish(Tensor(data, dtype=target), device, requires_grad)
    if copy is False:
        raise ValueError(f"asarray(): copy=False, but a {type(obj).__name__} has no memory to share")
    try:
        arr = np.asarray(obj)
    except (ValueError, TypeError) as e:
        raise TypeError(f"asarray(): argument 'obj' must be a tensor, array, buffer, sequence or number: {e}") from None
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"asarray(): argument 'obj' must hold numbers or bools, got {arr.dtype} data")
    if want is None:  # torch's inference: bool, int64, or the default floating dtype
        want = np.dtype(np.bool_) if arr.dtype.kind == "b" else np.dtype(np.int64) if arr.dtype.kind in "iu" \
            else _dtypes.default_float()
    return _finish(Tensor(np.array(arr, dtype=want), dtype=want), device, requires_grad)


def frombuffer(buffer, *, dtype, count=-1, offset=0, requires_grad=False) -> Tensor:
    """torch.frombuffer: a 1-d tensor over the memory of an object with the buffer protocol (shared, not copied),
    ``count`` elements (-1: all) from byte ``offset``."""
    try:
        view = memoryview(buffer)
    except TypeError:
        raise TypeError(f"frombuffer(): argument 'buffer' must implement the buffer protocol, got "
                        f"{type(buffer).__name__}") from None
    dt = _dtypes.to_numpy(dtype)
    for name, v in (("count", count), ("offset", offset)):
        if not _is_int(v):
            raise TypeError(f"frombuffer(): argument {name!r} must be an int, got {type(v).__name__}")
    size = view.nbytes
    if offset < 0 or offset > size or (offset == size and size > 0):
        raise ValueError(f"frombuffer(): argument 'offset' must be in [0, {size}) for a buffer of {size} bytes, "
                         f"got {offset}")
    if count == 0 or count < -1:
        raise ValueError(f"frombuffer(): argument 'count' must be positive or -1, got {count}")
    if count == -1:
        if (size - offset) % dt.itemsize:
            raise ValueError(f"frombuffer(): the buffer's {size - offset} bytes after offset {offset} are not a "
                             f"multiple of the element size {dt.itemsize}; pass count")
        count = (size - offset) // dt.itemsize
    elif offset + count * dt.itemsize > size:
        raise ValueError(f"frombuffer(): count {count} elements of {dt.itemsize} bytes from offset {offset} run past "
                         f"the buffer's {size} bytes")
    if view.readonly:
        warnings.warn("frombuffer(): the buffer is not writable; writing to the tensor will fail", UserWarning,
                      stacklevel=2)
    arr = np.frombuffer(buffer, dtype=dt, count=count, offset=offset)
    return _finish(Tensor(arr, dtype=dt), None, requires_grad)


def _strided(size, stride, dt, who):
    if isinstance(size, (builtins.int, np.integer)):
        size = (size,)
    if isinstance(stride, (builtins.int, np.integer)):
        stride = (stride,)
    for name, v in (("size", size), ("stride", stride)):
        if not isinstance(v, (tuple, list)) or not all(_is_int(n) and n >= 0 for n in v):
            raise TypeError(f"{who}(): argument {name!r} must be a sequence of non-negative ints, got {v!r}")
    if len(size) != len(stride):
        raise RuntimeError(f"{who}(): size {tuple(size)} and stride {tuple(stride)} must have the same length")
    n = 0 if 0 in size else 1 + builtins.sum((s - 1) * st for s, st in zip(size, stride))
    base = empty_aligned((n,), dt)
    return np.lib.stride_tricks.as_strided(base, shape=tuple(size), strides=tuple(st * dt.itemsize for st in stride))


def empty_strided(size, stride, *, dtype=None, device=None, requires_grad=False) -> Tensor:
    """torch.empty_strided: an uninitialised tensor of ``size`` whose elements lie ``stride`` elements apart.
    On the CPU only."""
    dt = _dtypes.default_float() if dtype is None else _dtypes.to_numpy(dtype)
    if device is not None and str(device) != "cpu":
        raise NotImplementedError("empty_strided(): forgegrad makes strided tensors on the CPU only")
    return _finish(Tensor._wrap_exact(_strided(size, stride, dt, "empty_strided")), None, requires_grad)


def scalar_tensor(s, *, dtype=None, device=None, requires_grad=False) -> Tensor:
    """torch.scalar_tensor: a 0-d tensor holding the number ``s`` (in the default floating dtype unless ``dtype``,
    even for an int or a bool, as torch's)."""
    if isinstance(s, Tensor):
        if s.numel() != 1:
            raise ValueError(f"scalar_tensor(): argument 's' must be a number, got a tensor of shape {s.shape}")
        s = s.item()
    if not isinstance(s, (builtins.int, builtins.float, builtins.bool, np.number, np.bool_)):
        raise TypeError(f"scalar_tensor(): argument 's' must be a number, got {type(s).__name__}")
    dt = _dtypes.default_float() if dtype is None else _dtypes.to_numpy(dtype)
    return _finish(Tensor(np.array(s, dtype=dt), dtype=dt), device, requires_grad)


def from_dlpack(ext_tensor, *, device=None, copy=None) -> Tensor:
    """torch.from_dlpack: a tensor sharing the memory of a CPU object with ``__dlpack__`` (a numpy array, a torch
    tensor, ...), through numpy's DLPack import; the dtype must be one forgegrad tensors hold. ``copy=True``: a copy
    (never shared), ``copy=False``: shared or BufferError, None: shared where it can be (torch's). ``device``: where
    the result lives (a device other than the CPU copies it there; copy=False then raises; meta is refused, as
    torch's)."""
    if not hasattr(ext_tensor, "__dlpack__"):
        raise TypeError(f"from_dlpack(): argument 'ext_tensor' must implement __dlpack__, got "
                        f"{type(ext_tensor).__name__}")
    if copy is not None and not isinstance(copy, bool):
        raise TypeError(f"from_dlpack(): argument 'copy' must be a bool or None, got {type(copy).__name__}")
    from .devices import device as _device
    where = None if device is None else _device(device).type
    if where == "meta":
        raise BufferError("from_dlpack(): cannot import into the meta device (it holds no data), as torch's")
    if where not in (None, "cpu") and copy is False:
        raise BufferError(f"from_dlpack(): device={where!r} needs a copy of the CPU data, and copy=False")
    try:
        arr = np.from_dlpack(ext_tensor, copy=copy)
    except (RuntimeError, BufferError, TypeError, ValueError) as e:
        raise TypeError(f"from_dlpack(): numpy cannot import this object (forgegrad takes CPU memory only): {e}") \
            from None
    if not _storable(arr):
        raise TypeError(f"from_dlpack(): dtype {arr.dtype} is not one forgegrad tensors hold")
    out = Tensor(arr, dtype=arr.dtype)
    return out if where in (None, "cpu") else out.to(where)


FUNCTIONS = {f.__name__: f for f in (
    get_rng_state, set_rng_state, initial_seed, seed, set_printoptions,
    use_deterministic_algorithms, are_deterministic_algorithms_enabled, is_deterministic_algorithms_warn_only_enabled,
    set_flush_denormal, get_num_interop_threads, set_num_interop_threads, asarray, frombuffer, empty_strided,
    scalar_tensor, from_dlpack)}


def install(package_namespace: dict) -> None:
    for name, fn in FUNCTIONS.items():
        package_namespace.setdefault(name, fn)
