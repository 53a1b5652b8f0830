"""The opt-in CPU fallback: a registry op with no Function for a device runs on the CPU, its device arrays copied
to the host and its results copied back (torch's PYTORCH_ENABLE_MPS_FALLBACK, for every device).

Switched on by ``FORGEGRAD_CPU_FALLBACK=1`` at import or ``forgegrad.devices.set_cpu_fallback(True)``; off, an op
without a kernel on a device raises NotImplementedError as before. ``Function.apply`` asks for a fallback only on
its other-device branch (``_op_dispatch.function_for_device``), so CPU tensors never reach this module.

The generated Function (one per op and device, cached) computes exactly what the CPU would:

- with no input that needs a gradient (no_grad, inference, integer and bool tensors, a trace of a frozen model) it
  runs the op's own ``apply`` on host tensors, so torch's dtype rules of the CPU path (integer promotion, float16 on
  the float32 kernels, the float64 Function, the inference kernel) hold unchanged;
- with one, it runs the CPU Function's forward (its float64 Function for float64 inputs) on host arrays, keeps the
  CPU ctx for backward (saved tensors stay on the host), and its backward copies the output gradients to the host,
  runs the CPU backward and copies each input's gradient back in that input's dtype.

A view op (``is_view``: the output shares its input's storage) is refused: a device view of host memory does not
exist, and a copy would silently break the aliasing that in-place writes rely on.
"""
from __future__ import annotations

import os
import sys
import warnings
from typing import Dict, Set, Tuple

import numpy as np

from . import devices as _devices
from .grad_mode import no_grad, untraced

__all__ = ["enabled", "set_enabled", "function_for"]

_TRUE = {"1", "true", "yes", "on"}
# read once, when forgegrad is imported (as torch reads PYTORCH_ENABLE_MPS_FALLBACK)
_ON = [os.environ.get("FORGEGRAD_CPU_FALLBACK", "").strip().lower() in _TRUE]

_CACHE: Dict[Tuple[str, str], type] = {}
_WARNED: Set[Tuple[str, str]] = set()
_F16 = np.dtype(np.float16)
_F32 = np.dtype(np.float32)
_F64 = np.dtype(np.float64)

SWITCH = "set FORGEGRAD_CPU_FALLBACK=1 or call forgegrad.devices.set_cpu_fallback(True)"


def enabled() -> bool:
    return _ON[0]


def set_enabled(on: bool) -> None:
    if not isinstance(on, (bool, np.bool_)):
        raise TypeError(f"set_cpu_fallback: expected a bool, got {type(on).__name__}")
    _ON[0] = bool(on)


def forget(device: str) -> None:
    """Drop the fallback Functions of ``device`` (it was unregistered; a new device of that name warns anew)."""
    for key in [k for k in _CACHE if k[1] == device]:
        del _CACHE[key]
    _WARNED.difference_update({k for k in _WARNED if k[1] == device})


def refusal(op, dev: str) -> str:
    """Why the fallback does not run ``op`` on ``dev`` (None: it does)."""
    if op.function.is_view:
        return (f"it is a view op (its output shares its input's storage), which the CPU fallback cannot run: "
                f"a {dev} view of host memory does not exist")
    return None


def function_for(op, dev: str) -> type:
    """The fallback Function of registry op ``op`` on device ``dev`` (made on first use, with a warning)."""
    key = (op.name, dev)
    fn = _CACHE.get(key)
    if fn is None:
        why = refusal(op, dev)
        if why is not None:
            raise NotImplementedError(f"op {op.name!r} has no kernel for device {dev!r} (it runs on: "
                                      f"{', '.join(op.devices)}); {why}. Move its input to the CPU with "
                                      ".cpu() for this op")
        fn = _CACHE[key] = _make(op, dev)
    if key not in _WARNED:
        _WARNED.add(key)
        warnings.warn(f"The operator '{op.name}' is not currently supported on the {dev} device and falls back to "
                      "the CPU (FORGEGRAD_CPU_FALLBACK=1); this may be slow.", UserWarning,
                      stacklevel=_caller_level())
    return fn


_PACKAGE = os.path.dirname(os.path.abspath(__file__))


def _caller_level() -> int:
    """The warning's stacklevel that names the first frame outside forgegrad (the user's call of the op)."""
    f, level = sys._getframe(1), 1
    while f is not None and f.f_code.co_filename.startswith(_PACKAGE):
        f, level = f.f_back, level + 1
    return level


# ---- moving arguments and results ------------------------------------------------------------------------
def _is_device_array(x) -> bool:
    return type(x) is not np.ndarray and _devices.device_of(x) not in ("cpu", "meta") and hasattr(x, "shape")


def _host_arrays(x):
    """An argument with every device array (also inside a Tensor, tuple or list) copied to the host."""
    from .tensor import Tensor
    if _is_device_array(x):
        return _devices.to_host(x)
    if isinstance(x, Tensor):
        return Tensor._wrap_exact(_devices.to_host(x._data)) if _is_device_array(x._data) else x
    if type(x) in (tuple, list):
        return type(x)(_host_arrays(v) for v in x)
    return x


def _host_tensors(x):
    """An argument of forward (a device array stands for a tensor argument) as the CPU op takes it: a host
    Tensor for a device array."""
    from .tensor import Tensor
    if _is_device_array(x):
        return Tensor._wrap_exact(_devices.to_host(x))
    return _host_arrays(x)


def _to_device(a, dev: str):
    # numpy scalars of 0-d results become arrays; a strided result is made contiguous (np.ascontiguousarray
    # would make a 0-d array 1-d)
    return _devices.transfer(np.asarray(a, order="C"), dev)


def _run_on_host(cpu, dev: str, raw, kwargs):
    """The op's CPU ``apply`` on host tensors, no graph and nothing traced: the CPU path's own results."""
    args = [_host_tensors(a) for a in raw]
    kw = {k: _host_tensors(v) for k, v in kwargs.items()}
    with no_grad(), untraced():
        out = cpu.apply(*args, **kw)
    if isinstance(out, tuple):
        return tuple(_to_device(o._data, dev) for o in out)
    return _to_device(out._data, dev)


# ---- the generated Function ----------------------------------------------------------------------------
def _make(op, dev: str) -> type:
    from .autograd import Function
    from ._op_dispatch import float64_function
    cpu = op.function

    def forward(ctx, *raw, **kwargs):
        needs = ctx.needs_input_grad
        if not any(needs):
            return _run_on_host(cpu, dev, raw, kwargs)
        tensor_at = [_is_device_array(a) for a in raw]
        host = [_host_arrays(a) for a in raw]
        kw = {k: _host_arrays(v) for k, v in kwargs.items()}
        floats = [h.dtype for h, t in zip(host, tensor_at) if t and h.dtype.kind == "f"]
        f64 = _F64 in floats
        half = bool(floats) and all(d == _F16 for d in floats)
        if f64 and not cpu.exact_dtype and all(d in (_F32, _F64) for d in floats):
            # torch's promotion: a 0-d float64 tensor does not widen float32 tensors with dims
            dims = [h.dtype for h, t in zip(host, tensor_at) if t and h.ndim and h.dtype.kind == "f"]
            if dims and all(d == _F32 for d in dims):
                host = [h.astype(_F32) if t and h.dtype == _F64 and h.ndim == 0 else h for h, t in zip(host, tensor_at)]
                f64 = False
        if half:  # float16 runs on the float32 kernels, its floating results rounded back (the CPU's rule)
            host = [h.astype(_F32) if t and h.dtype == _F16 else h for h, t in zip(host, tensor_at)]
        fn = float64_function(cpu) if f64 else cpu
        inner = fn.__new__(fn)
        inner.needs_input_grad = needs
        inner.saved_at = None
        out = fn.forward(inner, *host, **kw)
        single = type(out) is not tuple
        outs = [np.asarray(o) for o in ((out,) if single else out)]
        if half:
            outs = [o.astype(_F16) if o.dtype == _F32 else o for o in outs]
        elif not (f64 or fn.exact_dtype):
            outs = [o.astype(_F32) if o.dtype == _F64 else o for o in outs]  # numpy's promotion undone, as on the CPU
        dev_outs = [_to_device(o, dev) for o in outs]
        ctx.inner, ctx.fn, ctx.half = inner, fn, half
        ctx.in_dtypes = [a.dtype if t else None for a, t in zip(raw, tensor_at)]
        if inner.saved_at is not None:
            # the device arrays the CPU Function saved host copies of: an in-place write into one of them before
            # backward raises torch's error, as it would on the CPU
            mine = {id(h): d for h, d, t in zip(host, raw, tensor_at) if t}
            mine.update({id(h): d for h, d in zip(outs, dev_outs)})
            ctx.save_for_backward(*[mine[id(s)] for s in inner.saved_tensors if id(s) in mine])
        return dev_outs[0] if single else tuple(dev_outs)

    def backward(ctx, *grads):
        host = [None if g is None else _devices.to_host(g) for g in grads]
        if ctx.half:
            host = [g if g is None or g.dtype != _F16 else g.astype(_F32) for g in host]
        gins = ctx.fn.backward(ctx.inner, *host)
        if not isinstance(gins, tuple):
            gins = (gins,)
        out = []
        for i, g in enumerate(gins):
            dt = ctx.in_dtypes[i] if i < len(ctx.in_dtypes) else None
            if g is None or dt is None or not ctx.needs_input_grad[i]:
                out.append(None)
                continue
            g = np.asarray(g)
            if g.dtype != dt:  # a gradient has its input's dtype
                g = g.astype(dt)
            out.append(_to_device(g, dev))
        return tuple(out)

    def inference(*raw, **kwargs):
        return _run_on_host(cpu, dev, raw, kwargs)

    name = f"CpuFallback{cpu.__name__}"
    cls = type(name, (Function,), {
        "__doc__": f"op {op.name!r} on {dev}: its CPU Function on host copies (forgegrad._cpu_fallback).",
        "__module__": __name__, "forward": staticmethod(forward), "backward": staticmethod(backward),
        "non_differentiable_outputs": cpu.non_differentiable_outputs, "exact_dtype": cpu.exact_dtype,
        "cpu_fallback_of": cpu})
    cls.__qualname__ = name
    cls.op = op  # the op's record: its name in errors, its differentiable backward rule, its trace record
    cls.inference = staticmethod(inference)
    return cls
