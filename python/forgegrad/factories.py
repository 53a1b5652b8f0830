"""Tensor factories (tensor, zeros, ones, full, empty, arange, eye, randn, rand) and the free functions
over several tensors (cat, stack, where). A factory with ``device=`` builds its storage on that device
through forgegrad.devices; on the meta device only the shape exists."""
from __future__ import annotations

from typing import Sequence, Tuple

import inspect

import numpy as np

from . import devices as _devices
from . import dtypes as _dtypes
from .devices import MetaArray
from .ops.registry import _OPS
from .tensor import Tensor, _to_storage

__all__ = ["tensor", "as_tensor", "zeros", "ones", "full", "empty", "arange", "randn", "rand", "eye", "cat",
           "stack", "where", "manual_seed"]


def tensor(data, requires_grad: bool = False, dtype=None, device=None) -> Tensor:
    """A new tensor holding a copy of ``data`` (as torch.tensor: an in-place op on it never writes into the
    caller's ndarray or tensor; ``as_tensor`` and ``from_numpy`` share an ndarray instead).

    As torch.tensor: an ndarray or numpy scalar keeps its dtype (int8/int16/int32/uint8, float16, float64
    ...), Python ints give int64 and Python floats the default dtype; a sequence holding numpy scalars takes
    torch's promotion of its elements' dtypes (``[np.int32(1), np.int32(2)]``: int32; ``[np.int8(1), 2]``:
    int64). (``Tensor(data)``, like torch.Tensor, gives a sequence of numbers the default floating dtype.)
    ``device``: where the tensor lives (a copy of the data there); by default the default device
    (``fg.device(...)``), except that under the meta device data given as values stays on the CPU."""
    return _new_tensor(data, requires_grad, dtype, device, copy=True)


def _new_tensor(data, requires_grad, dtype, device, copy: bool) -> Tensor:
    if dtype is None:
        dtype = _dtypes.inferred_dtype(data)
    arr = _to_storage(data, dtype)
    if copy and type(arr) is np.ndarray:
        source = data._data if isinstance(data, Tensor) else data
        if isinstance(source, np.ndarray) and np.may_share_memory(arr, source):
            arr = arr.copy()
    t = Tensor(arr, requires_grad=requires_grad, dtype=arr.dtype)
    if device is None:
        dev = _devices.default_device()
        if dev in ("cpu", "meta"):
            return t
    return placed(t, device)


def as_tensor(data, *, dtype=None, device=None) -> Tensor:
    """torch.as_tensor: a Tensor of the asked dtype and device is returned itself (its autograd history kept), one
    of another dtype or device converted with ``to`` (differentiable, as torch's); an ndarray is shared, other data
    is copied into a new tensor."""
    if isinstance(data, Tensor):
        out = data
        if dtype is not None and _np_dtype(dtype) != out.dtype:
            out = out.to(dtype)
        if device is not None:
            out = out.to(device)
        return out
    return _new_tensor(data, False, dtype, device, copy=False)


def _np_dtype(dtype) -> np.dtype:
    """``dtype`` as numpy's; None: the default floating dtype (forgegrad.set_default_dtype)."""
    return _dtypes.default_float() if dtype is None else _dtypes.to_numpy(dtype)


def _shape(shape, size=None) -> Tuple[int, ...]:
    """``zeros(2, 3)``, ``zeros((2, 3))`` or torch's keyword ``zeros(size=(2, 3))``."""
    if size is not None:
        if shape:
            raise TypeError("got a shape and size=: give one")
        shape = (size,) if isinstance(size, (tuple, list)) else ((size,),)
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    return tuple(int(s) for s in shape)


def _on_meta(device) -> bool:
    """Whether a factory call creates its tensor on the meta device (explicitly or by default)."""
    return _target(device) == "meta"


def _target(device) -> str:
    """The device a factory creates its tensor on: ``device``, else the default device."""
    if device is None:
        return _devices.default_device()
    if device == "cpu" and type(device) is str:
        return "cpu"
    return _devices.device(device).type  # a clear error for an unknown or unavailable device


_NO_FILL = object()


def _factory(device, shape, dt, host, requires_grad=False, fill=_NO_FILL) -> Tensor:
    """A new tensor of ``shape``/``dt`` on ``device``: from ``host()`` (a numpy array) on the CPU; on
    another device allocated there when the values are a constant ``fill`` (None: uninitialised),
    else ``host()``'s values copied there (random factories draw the same numbers on every device)."""
    dev = _target(device)
    if dev == "meta":
        return Tensor(MetaArray(shape, dt), requires_grad=requires_grad)
    if dev != "cpu" and np.dtype(dt).kind == "c":
        raise NotImplementedError(f"complex tensors live on the CPU only (their ops are numpy code); no {np.dtype(dt)} "
                                  f"tensor on {dev}")
    if dev == "cpu":
        return Tensor(host(), requires_grad=requires_grad, dtype=dt)
    if fill is None:
        data = _devices.empty(shape, dt, dev)
    elif fill is not _NO_FILL:
        data = _devices.full(shape, fill, dt, dev)
    else:
        data = _devices.transfer(_to_storage(host(), dt), dev)
    return Tensor(data, requires_grad=requires_grad)


def placed(t: Tensor, device) -> Tensor:
    """``t`` (made on the CPU) on ``device``, else on the default device unless that is meta (values given
    on the CPU stay there); internal."""
    dev = _devices.default_device() if device is None else _target(device)
    if dev == "cpu" or (device is None and dev == "meta"):
        return t
    out = Tensor._wrap_exact(_devices.transfer(t._data, dev))
    out.requires_grad = t.requires_grad
    return out


def zeros(*shape, size=None, requires_grad=False, dtype=None, device=None) -> Tensor:
    shape, dt = _shape(shape, size), _np_dtype(dtype)
    return _factory(device, shape, dt, lambda: np.zeros(shape, dt), requires_grad, fill=0)


def ones(*shape, size=None, requires_grad=False, dtype=None, device=None) -> Tensor:
    shape, dt = _shape(shape, size), _np_dtype(dtype)
    return _factory(device, shape, dt, lambda: np.ones(shape, dt), requires_grad, fill=1)


def empty(*shape, size=None, requires_grad=False, dtype=None, device=None) -> Tensor:
    shape, dt = _shape(shape, size), _np_dtype(dtype)
    return _factory(device, shape, dt, lambda: np.empty(shape, dt), requires_grad, fill=None)


def _fill_dtype(fill_value) -> np.dtype:
    """torch.full's dtype when none is given: bool for a bool, int64 for an integer, else the default floating
    dtype (a one-element tensor or array counts by its dtype's kind)."""
    kind = getattr(getattr(fill_value, "dtype", None), "kind", None)
    if isinstance(fill_value, (bool, np.bool_)) or kind == "b":
        return np.dtype(np.bool_)
    if isinstance(fill_value, (int, np.integer)) or kind in ("i", "u"):
        return np.dtype(np.int64)
    if isinstance(fill_value, (complex, np.complexfloating)) or kind == "c":
        return _dtypes.default_complex()
    return _dtypes.default_float()


def full(size, fill_value, requires_grad=False, dtype=None, device=None) -> Tensor:
    shape = _shape((size,))
    dt = _fill_dtype(fill_value) if dtype is None else _np_dtype(dtype)
    if isinstance(fill_value, Tensor):
        fill_value = fill_value.item()

    def host():
        with np.errstate(over="ignore"):  # a value past the dtype's range fills inf (torch refuses it), no warning
            return np.full(shape, fill_value, dt)
    return _factory(device, shape, dt, host, requires_grad, fill=fill_value)


def _arange_signature(start=0, end=None, step=1, *, dtype=None, device=None, requires_grad=False):
    """torch's signature of arange, for help() and inspect (the function itself parses its arguments)."""


_ARANGE_NAMES = ("start", "end", "step", "dtype", "device", "requires_grad")


def arange(*args, **kwargs) -> Tensor:
    """torch.arange(end), arange(start, end, step=1); by keyword too (``arange(end=5)``, ``arange(1, end=5)``,
    ``arange(start=1, end=5)``). A lone positional number is the end, as torch's; ``start`` by keyword without
    ``end`` is an error there too (``arange(start=1)`` has no end)."""
    if len(args) > 3:
        raise TypeError(f"arange(): takes at most 3 positional arguments (start, end, step), got {len(args)}")
    a = dict(zip(("start", "end", "step"), args))
    for name, value in kwargs.items():
        if name not in _ARANGE_NAMES:
            raise TypeError(f"arange(): got an unexpected keyword argument '{name}'")
        if name in a:
            raise TypeError(f"arange(): got multiple values for argument '{name}'")
        a[name] = value
    if "step" in a and ("start" not in a or a.get("end") is None):
        raise TypeError("arange(): a step needs start and end (arange(start, end, step)), as torch's")
    start, end, step = a.get("start", 0), a.get("end"), a.get("step", 1)
    if end is None:
        if "start" in kwargs:
            raise TypeError("arange(): argument 'end' is missing: arange(start=...) needs end= as well "
                            "(a lone number is the end: arange(5))")
        if "start" not in a:
            raise TypeError("arange(): argument 'end' is missing")
        start, end = 0, start
    values, dtype = np.arange(start, end, step), a.get("dtype")
    t = (Tensor._stored(values) if dtype is None else Tensor(values, dtype=dtype))  # integers stay int64
    if a.get("requires_grad", False):
        t.requires_grad_(True)
    return placed(t, a.get("device"))


arange.__signature__ = inspect.signature(_arange_signature)


def eye(n, m=None, *, dtype=None, device=None, requires_grad=False) -> Tensor:
    """torch.eye(n, m=None, *, dtype=None, device=None, requires_grad=False); dtype defaults to the default float."""
    dt = _dtypes.default_float() if dtype is None else _np_dtype(dtype)
    return placed(Tensor(np.eye(n, m, dtype=dt), requires_grad=requires_grad, dtype=dt), device)


# ---- random numbers: one seeded generator for init, dropout and shuffling ---------------------
from . import random as _random  # noqa: E402

manual_seed = _random.manual_seed


def _float_dtype(dtype) -> np.dtype:
    dt = _np_dtype(dtype)
    if dt not in (np.float32, np.float64, np.complex64, np.complex128) and not _dtypes.is_low_precision(dt):
        raise TypeError(f"expected dtype float32, float64, float16, bfloat16, complex64 or complex128, got "
                        f"{_dtypes.of(dt)}")
    return dt


def _low_precision_draw(draw, shape, dt, below_one=False):
    """float16 / bfloat16 values: float32 draws rounded to ``dt`` (``below_one``: kept below 1, which rounding can
    reach, as torch's rand is)."""
    out = draw(shape, np.float32).astype(dt)
    if below_one:
        out = np.minimum(out, np.asarray(1 - _dtypes.finfo_eps(dt) / 2, np.float32).astype(dt))
    return out


def _complex_draw(draw, shape, dt, scale=1.0):
    """A complex array of ``shape`` whose real and imaginary parts are draws (``draw(shape, real dtype)``)."""
    real = np.dtype(np.float64 if dt == np.complex128 else np.float32)
    parts = draw(tuple(shape) + (2,), real)
    return (parts * real.type(scale)).view(dt)[..., 0]


def randn(*shape, size=None, requires_grad=False, device=None, dtype=None, generator=None) -> Tensor:
    """Standard normal values; complex dtypes as torch's: variance 1, half in the real part, half in the imaginary."""
    dt, shape, gen = _float_dtype(dtype), _shape(shape, size), _random.resolve(generator, "randn")
    if dt.kind == "c":
        return _factory(device, shape, dt, lambda: _complex_draw(
            lambda s, d: gen.standard_normal(s, dtype=d), shape, dt, np.sqrt(0.5)), requires_grad)
    if _dtypes.is_low_precision(dt):
        return _factory(device, shape, dt, lambda: _low_precision_draw(
            lambda s, d: gen.standard_normal(s, dtype=d), shape, dt), requires_grad)
    return _factory(device, shape, dt, lambda: gen.standard_normal(shape, dtype=dt), requires_grad)


def rand(*shape, size=None, requires_grad=False, device=None, dtype=None, generator=None) -> Tensor:
    """Uniform values in [0, 1); complex dtypes as torch's: real and imaginary parts each uniform in [0, 1)."""
    dt, shape, gen = _float_dtype(dtype), _shape(shape, size), _random.resolve(generator, "rand")
    if dt.kind == "c":
        return _factory(device, shape, dt, lambda: _complex_draw(
            lambda s, d: gen.random(s, dtype=d), shape, dt), requires_grad)
    if _dtypes.is_low_precision(dt):
        return _factory(device, shape, dt, lambda: _low_precision_draw(
            lambda s, d: gen.random(s, dtype=d), shape, dt, below_one=True), requires_grad)
    return _factory(device, shape, dt, lambda: gen.random(shape, dtype=dt), requires_grad)


# ---- free functions over several tensors -------------------------------------------------------
def cat(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    return _OPS["cat"](*tensors, dim=dim)


concatenate = cat


def stack(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    return _OPS["stack"](*tensors, dim=dim)


def where(condition, input=None, other=None) -> Tensor:
    """Elementwise ``input`` where condition else ``other`` (with broadcasting); condition is cast to bool.
    ``where(condition)`` alone is ``condition.nonzero(as_tuple=True)``, as torch's.

    A tensor condition stays a tensor (cast by a recorded op when it is not bool) so that
    autograd.trace() links the result to the op that computed the condition.
    """
    if input is None and other is None:
        if not isinstance(condition, Tensor):
            raise TypeError(f"where(): argument 'condition' must be a Tensor, got {type(condition).__name__}")
        return condition.nonzero(as_tuple=True)
    if input is None or other is None:
        raise TypeError("where() takes condition alone, or condition, input and other")
    if isinstance(condition, Tensor):
        cond = condition.bool()
    else:
        cond = np.asarray(condition).astype(bool)
    return _OPS["where"](cond, input, other)
