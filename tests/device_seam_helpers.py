"""A test device for the device seam, registered through the public plugin API only.

``seam`` arrays wrap a numpy array behind a wall: they have ``shape``, ``dtype``, ``ndim`` and ``size``
and nothing else of numpy (``__array__`` raises, there is no arithmetic, indexing or truth value), so
any Python-layer code path that treats device storage as numpy fails loudly instead of silently
working on the CPU. Its op Functions adapt every registry op's CPU Function generically: unwrap the
inputs, run the CPU forward/backward (and no-graph kernel), wrap the outputs. So a model run on
``seam`` computes with exactly the CPU kernels and must give the CPU's bits; what differs is only
the path through the Python layer (dispatch, autograd, optimizers, module moves, serialization).
"""
from __future__ import annotations

import contextlib

import numpy as np

import forgegrad as fg
from forgegrad import devices
from forgegrad._op_dispatch import float64_function as _float64_function
from forgegrad.autograd import Function

DEVICE = "seam"


class SeamArray:
    """Storage of the ``seam`` device: a numpy array nobody outside the backend may touch."""

    __slots__ = ("_a",)
    __array_ufunc__ = None  # numpy ufuncs and operators with a SeamArray operand raise TypeError
    __hash__ = None

    def __init__(self, a: np.ndarray):
        assert isinstance(a, np.ndarray), type(a)
        self._a = a

    @property
    def shape(self):
        return self._a.shape

    @property
    def dtype(self):
        return self._a.dtype

    @property
    def ndim(self):
        return self._a.ndim

    @property
    def size(self):
        return self._a.size

    def __array__(self, *args, **kwargs):
        raise TypeError("a seam device array was used as a numpy array (the Python layer must go through "
                        "the device backend or the op registry)")

    def __bool__(self):
        raise TypeError("truth value of a seam device array")

    def __repr__(self):
        return f"SeamArray(shape={self.shape}, dtype={self.dtype})"


class SeamBackend(devices.DeviceBackend):
    """Allocation and host copies; add/copy are DeviceBackend's defaults (the registry's add/clone
    Functions on this device), so those defaults are what the tests exercise."""

    def __init__(self, array_type=SeamArray):
        self.array_type = array_type
        self.host_copies = 0  # to_host calls: a training step should make none besides .item()

    def empty(self, shape, dtype):
        return self.array_type(np.empty(shape, dtype))

    def full(self, shape, value, dtype):
        return self.array_type(np.full(shape, value, dtype))

    def from_host(self, array):
        return self.array_type(np.array(array, copy=True, order="C"))

    def to_host(self, array):
        self.host_copies += 1
        return np.array(array._a, copy=True)


# ---- op Functions: each registry op's CPU Function, on unwrapped arrays ---------------------------
def _unwrap(x):
    if isinstance(x, SeamArray):
        return x._a
    if isinstance(x, fg.Tensor):  # a tensor inside a container argument (an index tuple)
        return fg.Tensor._wrap_exact(_unwrap(x._data)) if isinstance(x._data, SeamArray) else x
    if type(x) in (tuple, list):
        return type(x)(_unwrap(v) for v in x)
    return x


def _wrap(x, exact: bool, array_type):
    """An output as the CPU path stores it (Tensor._wrap's rules), on the seam device."""
    if x is None:
        return None
    if not isinstance(x, np.ndarray):
        x = np.asarray(x)
    if not exact and x.dtype == np.float64:
        x = x.astype(np.float32)
    return array_type(x)


def _wrap_outputs(out, exact, array_type):
    if type(out) is tuple:
        return tuple(_wrap(o, exact, array_type) for o in out)
    return _wrap(out, exact, array_type)


def _has_f64(raw) -> bool:
    return any(isinstance(a, np.ndarray) and a.dtype == np.float64 for a in raw)


def adapt(op, array_type=SeamArray) -> type:
    """The seam Function of registry op ``op``: its CPU Function behind the wall."""
    cpu = op.function

    class SeamFunction(Function):
        non_differentiable_outputs = cpu.non_differentiable_outputs
        exact_dtype = cpu.exact_dtype

        @staticmethod
        def forward(ctx, *args, **kwargs):
            raw, kw = [_unwrap(a) for a in args], {k: _unwrap(v) for k, v in kwargs.items()}
            f64 = _has_f64(raw)
            fn = _float64_function(cpu) if f64 else cpu  # the CPU's float64 rule (a clear error without one)
            inner = fn.__new__(fn)
            inner.needs_input_grad = ctx.needs_input_grad
            out = fn.forward(inner, *raw, **kw)
            ctx.inner, ctx.fn = inner, fn
            ctx.in_dtypes = [a.dtype if isinstance(a, np.ndarray) else None for a in raw]
            return _wrap_outputs(out, fn.exact_dtype or f64, array_type)

        @staticmethod
        def backward(ctx, *grads):
            gins = ctx.fn.backward(ctx.inner, *[_unwrap(g) for g in grads])
            if not isinstance(gins, tuple):
                gins = (gins,)
            out = []
            for g, dt in zip(gins, ctx.in_dtypes + [None] * len(gins)):
                if g is None:
                    out.append(None)
                    continue
                g = np.asarray(g)
                if dt is not None and g.dtype != dt:  # the engine's CPU rule: a gradient has its input's dtype
                    g = g.astype(dt)
                out.append(array_type(g))
            return tuple(out)

    SeamFunction.__qualname__ = SeamFunction.__name__ = f"Seam{cpu.__name__}"
    return SeamFunction


def adapt_inference(op, name=DEVICE, array_type=SeamArray):
    """The seam no-graph kernel of ``op``: its CPU inference kernel behind the wall."""
    kernel = op.inference.get("cpu")
    if kernel is None:
        return None
    fn = op.functions[name]

    def run(*args, **kwargs):
        raw = [_unwrap(a) for a in args]
        if _has_f64(raw):  # the CPU path never takes its float32 kernel for float64 inputs
            ctx = fn.__new__(fn)
            ctx.needs_input_grad = [False] * len(args)
            return fn.forward(ctx, *args, **kwargs)
        return _wrap_outputs(kernel(*raw, **{k: _unwrap(v) for k, v in kwargs.items()}), op.function.exact_dtype,
                             array_type)

    return run


# ---- optimizer kernels: the CPU kernels on the unwrapped arrays (updated in place) -------------------
def adapt_optimizer_kernel(cpu_kernel):
    def run(*args, **kwargs):
        return cpu_kernel(*[_unwrap(a) for a in args], **{k: _unwrap(v) for k, v in kwargs.items()})
    return run


BACKEND = SeamBackend()


def register(name: str = DEVICE, backend=None) -> None:
    """Register the seam device (idempotent): its backend, every op's Function and inference kernel,
    and every optimizer kernel the CPU has."""
    from forgegrad.optim import kernels as optim_kernels
    if backend is None:
        backend = BACKEND if name == DEVICE else SeamBackend(type(f"{name}Array", (SeamArray,), {}))
    devices.register_device(name, backend.array_type, backend)
    for op in fg.ops.all_ops():
        op.add_device(name, adapt(op, backend.array_type))
        inference = adapt_inference(op, name, backend.array_type)
        if inference is not None:
            op.set_inference(name, inference)
    for opt_name in optim_kernels.optimizers():
        cpu = optim_kernels.kernel(opt_name, "cpu")
        optim_kernels.register_kernel(opt_name, name, adapt_optimizer_kernel(cpu))


@contextlib.contextmanager
def registered(name: str = DEVICE):
    """The device registered for the duration (tests register it per module, so no other test module
    sees a 'seam' row in the op records, the optimizer table or the device list)."""
    register(name)
    try:
        yield
    finally:
        unregister(name)


def unregister(name: str) -> None:
    from forgegrad.optim import kernels as optim_kernels
    for op in fg.ops.all_ops():
        op.remove_device(name)
    for opt_name in optim_kernels.optimizers():
        optim_kernels.unregister_kernel(opt_name, name)
    devices.unregister_device(name)


def host(x) -> np.ndarray:
    """A tensor's values as numpy, from any device (for comparisons in tests)."""
    return x.cpu().numpy() if isinstance(x, fg.Tensor) else np.asarray(x)
