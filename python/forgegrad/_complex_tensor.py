"""torch's complex-number functions: real, imag (views, as torch's: a write through ``z.real`` changes z), conj,
conj_physical, resolve_conj, angle, view_as_real / view_as_complex (views), complex, polar, and the Tensor
attributes ``real``, ``imag``, ``conj()``, ``angle()``, ``is_conj()``. Gradients as torch's (ops/_complex.py)."""
from __future__ import annotations

import numpy as np

from .ops._complex import ComplexConjFunction, ComplexFunction, ComplexAngleFunction
from .devices import MetaArray
from .ops._util import unbroadcast
from .tensor import Tensor

_REAL_OF = {np.dtype(np.complex64): np.dtype(np.float32), np.dtype(np.complex128): np.dtype(np.float64)}
_COMPLEX_OF = {v: k for k, v in _REAL_OF.items()}


def _tensor(x, name, fn):
    if not isinstance(x, Tensor):
        raise TypeError(f"{fn}(): argument '{name}' must be a Tensor, got {type(x).__name__}")
    return x


class RealFunction(ComplexFunction):
    is_view = True
    meta_rule = staticmethod(lambda a: MetaArray(a.shape, _REAL_OF[a.dtype]))  # (the meta device's rule)

    @staticmethod
    def forward(ctx, a):
        return a.real

    @staticmethod
    def backward(ctx, g):
        return g.astype(_COMPLEX_OF[g.dtype])


class ImagFunction(ComplexFunction):
    is_view = True
    meta_rule = staticmethod(lambda a: MetaArray(a.shape, _REAL_OF[a.dtype]))

    @staticmethod
    def forward(ctx, a):
        return a.imag

    @staticmethod
    def backward(ctx, g):
        return g * np.asarray(1j, _COMPLEX_OF[g.dtype])


class ViewAsRealFunction(ComplexFunction):
    is_view = True
    meta_rule = staticmethod(lambda a: MetaArray(a.shape + (2,), _REAL_OF[a.dtype]))

    @staticmethod
    def forward(ctx, a):
        return a[..., None].view(_REAL_OF[a.dtype])  # a numpy view of any layout (a length-1 axis re-read)

    @staticmethod
    def backward(ctx, g):
        return np.ascontiguousarray(g).view(_COMPLEX_OF[g.dtype])[..., 0]


class ViewAsComplexFunction(ComplexFunction):
    is_view = True
    meta_rule = staticmethod(lambda a: MetaArray(a.shape[:-1], _COMPLEX_OF[a.dtype]))

    @staticmethod
    def forward(ctx, a):
        return a.view(_COMPLEX_OF[a.dtype])[..., 0]

    @staticmethod
    def backward(ctx, g):
        return np.ascontiguousarray(g)[..., None].view(_REAL_OF[g.dtype])


class ComplexFromPartsFunction(ComplexFunction):
    meta_rule = staticmethod(lambda real, imag: MetaArray(np.broadcast_shapes(real.shape, imag.shape),
                                                          _COMPLEX_OF[real.dtype]))
    @staticmethod
    def forward(ctx, real, imag):
        ctx.shapes = real.shape, imag.shape
        out = np.empty(np.broadcast_shapes(real.shape, imag.shape), _COMPLEX_OF[real.dtype])
        out.real, out.imag = real, imag
        return out

    @staticmethod
    def backward(ctx, g):
        return unbroadcast(g.real, ctx.shapes[0]), unbroadcast(g.imag, ctx.shapes[1])


class PolarFunction(ComplexFunction):
    meta_rule = staticmethod(lambda abs, angle: MetaArray(np.broadcast_shapes(abs.shape, angle.shape),  # noqa: A006
                                                          _COMPLEX_OF[abs.dtype]))
    @staticmethod
    def forward(ctx, abs, angle):  # noqa: A002  (torch's argument names)
        ctx.shapes = abs.shape, angle.shape
        unit = np.empty(np.broadcast_shapes(abs.shape, angle.shape), _COMPLEX_OF[abs.dtype])
        unit.real, unit.imag = np.cos(angle), np.sin(angle)
        ctx.save_for_backward(abs, unit)
        return abs * unit

    @staticmethod
    def backward(ctx, g):
        r, unit = ctx.saved_tensors
        g_abs = (g * np.conj(unit)).real
        g_angle = (g * np.conj(1j * r * unit)).real
        return unbroadcast(g_abs, ctx.shapes[0]), unbroadcast(g_angle, ctx.shapes[1])


class RealAngleFunction(ComplexFunction):
    """angle of a real tensor: 0 for x >= 0, pi for x < 0 (nan stays nan); gradient 0, as torch's."""

    meta_rule = staticmethod(lambda a: MetaArray(a.shape, a.dtype))

    @staticmethod
    def forward(ctx, a):
        return np.where(np.isnan(a), a, np.where(a < 0, np.pi, 0.0)).astype(a.dtype)

    @staticmethod
    def backward(ctx, g):
        return np.zeros_like(g)


def real(input):
    """torch.real: the real part of a complex tensor, a view of it (writes through it change ``input``); a real
    tensor itself."""
    t = _tensor(input, "input", "real")
    return RealFunction.apply(t) if t._data.dtype.kind == "c" else t


def imag(input):
    """torch.imag: the imaginary part of a complex tensor, a view of it; a real tensor raises, as torch."""
    t = _tensor(input, "input", "imag")
    if t._data.dtype.kind != "c":
        raise RuntimeError("imag is not implemented for tensors with non-complex dtypes.")
    return ImagFunction.apply(t)


def conj(input):
    """torch.conj: the complex conjugate (forgegrad computes it: no lazy conjugate bit); a real tensor itself."""
    t = _tensor(input, "input", "conj")
    return ComplexConjFunction.apply(t) if t._data.dtype.kind == "c" else t


def conj_physical(input):
    """torch.conj_physical: the complex conjugate, computed; a real tensor itself."""
    return conj(_tensor(input, "input", "conj_physical"))


def resolve_conj(input):
    """torch.resolve_conj: forgegrad's conjugates are computed, so ``input`` itself."""
    return _tensor(input, "input", "resolve_conj")


def resolve_neg(input):
    """torch.resolve_neg: ``input`` itself (forgegrad has no lazy negation bit)."""
    return _tensor(input, "input", "resolve_neg")


def is_conj(input) -> bool:
    """torch.is_conj: always False (no lazy conjugate bit)."""
    _tensor(input, "input", "is_conj")
    return False


def is_neg(input) -> bool:
    """torch.is_neg: always False (no lazy negation bit)."""
    _tensor(input, "input", "is_neg")
    return False


def angle(input):
    """torch.angle: arg(z) in (-pi, pi], real; of a real tensor 0 or pi (an integer one in the default dtype)."""
    t = _tensor(input, "input", "angle")
    kind = t._data.dtype.kind
    if kind == "c":
        return ComplexAngleFunction.apply(t)
    if kind != "f":
        from .dtypes import default_float
        t = t.to(default_float())
    return RealAngleFunction.apply(t)


def view_as_real(input):
    """torch.view_as_real: a complex tensor of shape S as a real one of shape S + (2,) (real, imaginary), a view."""
    t = _tensor(input, "input", "view_as_real")
    if t._data.dtype.kind != "c":
        raise RuntimeError(f"view_as_real is only supported for complex tensors, got dtype {t.dtype}")
    return ViewAsRealFunction.apply(t)


def view_as_complex(input):
    """torch.view_as_complex: a float32 / float64 tensor of shape S + (2,) as a complex one of shape S, a view."""
    t = _tensor(input, "input", "view_as_complex")
    if t._data.dtype not in _COMPLEX_OF:
        raise RuntimeError(f"view_as_complex is only supported for float and double tensors, but got a tensor of "
                           f"scalar type: {t.dtype}")
    if t.ndim == 0 or t.shape[-1] != 2:
        raise RuntimeError(f"Tensor must have a last dimension of size 2, got shape {tuple(t.shape)}")
    if isinstance(t._data, MetaArray):  # (no strides: a meta tensor is contiguous)
        pass
    elif t._data.strides[-1] != t._data.itemsize:
        raise RuntimeError("Tensor must have a last dimension with stride 1")
    elif t.ndim > 1 and any(s % (2 * t._data.itemsize) for s in t._data.strides[:-1]):
        raise RuntimeError("Tensor must have a stride divisible by 2 for all but last dimension")
    return ViewAsComplexFunction.apply(t)


def _two_floats(fn, a, b, names):
    _tensor(a, names[0], fn)
    _tensor(b, names[1], fn)
    for t, n in ((a, names[0]), (b, names[1])):
        if t._data.dtype not in _COMPLEX_OF:
            raise RuntimeError(f"{fn}(): expected both inputs to be float or double tensors, but argument '{n}' "
                               f"has dtype {t.dtype}")
    if a._data.dtype != b._data.dtype:
        raise RuntimeError(f"{fn}(): expected object of scalar type {a.dtype} but got scalar type {b.dtype} for "
                           f"second argument")


def complex(real, imag, *, out=None):  # noqa: A001
    """torch.complex(real, imag): real + i imag, both float32 (complex64) or both float64 (complex128)."""
    if out is not None:
        raise TypeError("complex(): out= is not supported by forgegrad; use the returned tensor")
    _two_floats("complex", real, imag, ("real", "imag"))
    return ComplexFromPartsFunction.apply(real, imag)


def polar(abs, angle, *, out=None):  # noqa: A002
    """torch.polar(abs, angle): abs * (cos(angle) + i sin(angle)), both float32 or both float64."""
    if out is not None:
        raise TypeError("polar(): out= is not supported by forgegrad; use the returned tensor")
    _two_floats("polar", abs, angle, ("abs", "angle"))
    return PolarFunction.apply(abs, angle)


FUNCTIONS = {f.__name__: f for f in (real, imag, conj, conj_physical, resolve_conj, resolve_neg, is_conj, is_neg,
                                     angle, view_as_real, view_as_complex, complex, polar)}
def _cfloat(self):
    """torch's Tensor.cfloat(): self as complex64."""
    return self.to(np.complex64)


def _cdouble(self):
    """torch's Tensor.cdouble(): self as complex128."""
    return self.to(np.complex128)


_METHODS = ("conj", "conj_physical", "resolve_conj", "resolve_neg", "is_conj", "is_neg", "angle")


def install(namespace: dict, tensor_cls) -> None:
    """The functions on the package, the methods and the ``real`` / ``imag`` attributes on Tensor."""
    namespace.update(FUNCTIONS)
    for name in _METHODS:
        if not hasattr(tensor_cls, name):
            setattr(tensor_cls, name, FUNCTIONS[name])
    for name, fn in (("cfloat", _cfloat), ("cdouble", _cdouble)):
        if not hasattr(tensor_cls, name):
            setattr(tensor_cls, name, fn)
    if not hasattr(tensor_cls, "real"):
        tensor_cls.real = property(real, doc="The real part (a view of a complex tensor; a real tensor itself).")
        tensor_cls.imag = property(imag, doc="The imaginary part, a view (complex tensors only).")
