"""Which Function runs an op, chosen in Function.apply: the tensors' device (one device, or meta for shape rules),
the float64 Function of a float32 op, and torch's rule that a 0-d float64 tensor does not widen float32 ones.
Adding a device adds a Function to the op's record (ops/registry.py); nothing here changes."""
from __future__ import annotations

import numpy as np

from . import devices as _devices
from .tensor import Tensor

_NDARRAY = np.ndarray
_F64 = np.dtype(np.float64)
_F32 = np.dtype(np.float32)


def zero_dim_float64_demoted(args, raw):
    """torch's promotion: a 0-d tensor does not widen dimensioned tensors of its category, so float32 tensors with
    a 0-d float64 one compute (and give) float32. (raw with such 0-d float64 arrays as float32, whether a float64
    tensor is left.) The gradient of the 0-d tensor is cast back to float64 where it is accumulated."""
    dims = [d.dtype for a, d in zip(args, raw) if isinstance(a, Tensor) and d.ndim and d.dtype.kind == "f"]
    if not dims or any(dt != _F32 for dt in dims):
        return raw, True
    out = [d.astype(_F32) if isinstance(a, Tensor) and d.dtype is _F64 and d.ndim == 0 else d
           for a, d in zip(args, raw)]
    return out, False


def float64_function(cls):
    """The Function that runs op ``cls`` on float64 arrays; a clear error for an op whose kernels are
    float32 only (never a silent cast)."""
    if cls.op is None and cls.handles_float64:
        return cls
    fn = None if cls.op is None else cls.op.float64
    if fn is None:
        name = cls.__qualname__ if cls.op is None else f"op {cls.op.name!r}"
        raise TypeError(f"{name} has float32 kernels only and got a float64 tensor: convert with .float() "
                        "(see docs/torch_compat.md for the ops that run in float64)")
    return fn


def device_of_args(cls, args, raw) -> str:
    """The device of an op's tensor arguments, which must all be on one device. Meta is the exception:
    an op with any meta tensor runs its shape rule (real weights may meet a meta input)."""
    found = []
    for a, d in zip(args, raw):
        if isinstance(a, Tensor):
            if isinstance(d, _NDARRAY):
                dev = "cpu"
                freed = getattr(d, "fsdp_freed", None)  # a freed FSDP unit's parameter (distributed/_pages.py)
                if freed:
                    raise RuntimeError(f"{cls.__qualname__ if cls.op is None else cls.op.name}: {freed}")
            else:
                dev = _devices.device_of(d)
            if dev not in found:
                found.append(dev)
    if "meta" in found:
        return "meta"
    if len(found) > 1:
        name = cls.__qualname__ if cls.op is None else cls.op.name
        raise RuntimeError(f"{name}: expected all tensors to be on the same device, but found {found[0]} and "
                           f"{found[1]}; move them with .to(device)")
    return found[0] if found else "cpu"


def apply_on_meta(cls, raw, kwargs):
    """An op on meta tensors runs its shape rule; no graph is recorded (there are no values)."""
    if cls.op is None:
        raise NotImplementedError(f"{cls.__qualname__} is not a registered op, so it has no shape rule for "
                                  "the meta device")
    out = cls.op.meta_call(raw, kwargs)
    if any(isinstance(d, (_NDARRAY, _devices.MetaArray)) and d.dtype == _F64 for d in raw):
        out = as_float64_meta(out)
    if type(out) is tuple:
        return tuple([Tensor._wrap_exact(o) for o in out])
    return Tensor._wrap_exact(out)


def as_float64_meta(out):
    """A float64 input's float outputs are float64, as its float64 Function gives (the shape rules
    are written for the float32 kernels)."""
    if type(out) is tuple:
        return tuple(as_float64_meta(o) for o in out)
    if out.dtype == np.float32:
        out.dtype = _F64
    return out


def function_for_device(cls, dev: str):
    """The Function that runs op ``cls`` on device ``dev`` (its forward/backward take that device's arrays)."""
    fn = None if cls.op is None else cls.op.functions.get(dev)
    if fn is None:
        if cls.op is None:
            raise NotImplementedError(f"{cls.__qualname__} has no kernel for device {dev!r} (it is not a registered "
                                      "op, so it runs on the CPU only)")
        raise NotImplementedError(f"op {cls.op.name!r} has no kernel for device {dev!r} (it runs on: "
                                  f"{', '.join(cls.op.devices)})")
    return fn
