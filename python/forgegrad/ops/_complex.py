"""Complex tensors (complex64, complex128): the ops that take them, in numpy, on the CPU.

``Function.apply`` sends an op with a complex tensor argument (or a Python complex number) here
(``apply_complex``): the op's complex Function below runs it, and an op without one raises TypeError naming
the op and the argument ("complex inputs are not supported by X"): nothing drops an imaginary part silently.
The C++ kernels stay float32; complex ops are numpy code, correct rather than fast.

Gradients follow torch's convention: for a real loss L of z = x + iy, ``z.grad`` is dL/dx + i dL/dy (the
conjugate Wirtinger derivative, doubled). A holomorphic f then passes back ``g * conj(f'(z))``; a real tensor
used in a complex op gets the real part of its gradient (autograd's engine takes it).

Three kinds of complex Function:
- ``_Holomorphic`` subclasses: pointwise ops with their derivative (add ... pow, exp, log, sin, tanh, ...);
- the op's own Function where its numpy code is dtype-agnostic and its backward linear (reshape, getitem,
  cat, where, ...): ``_SAME_FUNCTION``;
- the Functions below for the rest (abs, sgn, sum, mean, prod, matmul, compare, isclose, cast).
"""
from __future__ import annotations

import inspect
import warnings

import numpy as np

from .. import dtypes as _dtypes
from ..devices import MetaArray
from .._op_dispatch import COMPLEX_SCALARS as _COMPLEX_SCALARS
from ..autograd import Function
from ._float64 import _check_linear, _same_dtype
from ._util import unbroadcast
from .registry import _OPS


class ComplexFunction(Function):
    """A Function over complex arrays: its outputs keep the dtype forward gives them; Function.apply runs it as is."""

    complex_path = True
    exact_dtype = True
    handles_float64 = True


_REAL_OF = {np.dtype(np.complex64): np.dtype(np.float32), np.dtype(np.complex128): np.dtype(np.float64)}
_FUNCTIONS: dict = {}  # op name -> its complex Function
_SAME: dict = {}  # an unregistered Function allowed complex tensors -> its complex subclass


def _argument_name(cls, args) -> str:
    try:
        params = [p.name for p in inspect.signature(cls.forward).parameters.values()][1:]
    except (TypeError, ValueError):
        params = []
    for i, a in enumerate(args):
        if getattr(getattr(a, "_data", a), "dtype", None) is not None and np.dtype(
                getattr(a, "_data", a).dtype).kind == "c" or isinstance(a, _COMPLEX_SCALARS):
            if i < len(params) and not params[i].startswith("*"):
                return params[i]
            return f"{params[-1] if params else 'input'} (position {i})"
    return "input"


def refuse(name: str, argument: str = "input"):
    raise TypeError(f"complex inputs are not supported by {name} (argument '{argument}' is complex); forgegrad's "
                    "complex ops are listed in docs/torch_compat.md (Complex tensors)")


def real_only(t, name: str, argument: str = "input"):
    """Refuse a complex tensor given to an op written for ordered (real) values; returns ``t``."""
    if getattr(getattr(t, "_data", None), "dtype", np.dtype(np.float32)).kind == "c":
        refuse(name, argument)
    return t


def apply_complex(cls, args, kwargs):
    """Run op ``cls`` with complex arguments through its complex Function, or refuse it."""
    if cls.op is not None:
        composite = _COMPOSITE.get(cls.op.name)
        if composite is not None and not isinstance(args[0], _COMPLEX_SCALARS):
            return composite(args, kwargs)
        fn = _FUNCTIONS.get(cls.op.name)
        if fn is None:
            refuse(cls.op.name, _argument_name(cls, args))
        if isinstance(fn, tuple):  # (Function, check of the arguments)
            fn[1](args, kwargs)
            fn = fn[0]
    else:
        fn = _SAME.get(cls)
        if fn is None:
            refuse(cls.__qualname__, _argument_name(cls, args))
    return fn.apply(*args, **kwargs)


def allow(cls) -> type:
    """Let an unregistered Function (dtype-agnostic numpy, a linear backward) take complex tensors as they are."""
    _SAME[cls] = type(cls.__name__ + "Complex", (cls,), {"complex_path": True, "exact_dtype": True,
                                                          "handles_float64": True, "__module__": cls.__module__})
    return cls


def result_dtype(args) -> np.dtype:
    return _dtypes.result_of([a for a in args if a is not None])


def _shape_of(a):
    return a.shape if isinstance(a, np.ndarray) else None


# ---- pointwise ops with a complex derivative ------------------------------------------------------------
class _Holomorphic(ComplexFunction):
    """out = fn(*inputs) in the inputs' promoted dtype; the gradient of input i is g * conj(d_i(inputs, out))."""

    fn = None  # staticmethod(*xs) -> out
    derivatives = None  # staticmethod(*xs, out) -> one derivative per input (arrays or numbers)
    # what backward reads, as torch's saves it: the inputs, the output (an in-place write into anything saved makes
    # backward raise; into the rest, it does not)
    save_inputs = save_output = True

    @staticmethod
    def forward(ctx, *args):
        cls = type(ctx)
        rt = result_dtype(args)
        if rt.kind != "c":
            rt = _dtypes.promote(rt, np.dtype(np.complex64))
        xs = [np.asarray(a, rt) for a in args]
        with np.errstate(all="ignore"):
            out = np.asarray(cls.fn(*xs), rt)
        ctx.shapes = [_shape_of(a) for a in args]
        ctx.save_for_backward(*(xs if cls.save_inputs else ()), *((out,) if cls.save_output else ()))
        return out

    @staticmethod
    def backward(ctx, g):
        cls = type(ctx)
        saved = list(ctx.saved_tensors)
        n = len(ctx.shapes)
        xs = saved[:n] if cls.save_inputs else [None] * n
        out = saved[-1] if cls.save_output else None
        with np.errstate(all="ignore"):
            ds = cls.derivatives(*xs, out)
            if n == 1:
                ds = (ds,)
            return tuple(None if shp is None or not need else unbroadcast(g * np.conj(d), shp)
                         for d, shp, need in zip(ds, ctx.shapes, ctx.needs_input_grad))


def _holomorphic(name, fn, derivatives, save="in"):
    cls = type(f"Complex{name.title().replace('_', '')}Function", (_Holomorphic,),
               {"fn": staticmethod(fn), "derivatives": staticmethod(derivatives), "__module__": __name__,
                "save_inputs": save in ("in", "both"), "save_output": save in ("out", "both")})
    _FUNCTIONS[name] = cls
    return cls


def _pow_exponent(a, b, out):
    return np.where((a == 0) & (b.real >= 0), 0, out * np.log(np.where(a == 0, 1, a)))


def _pow_base(a, b, out):
    return np.where(b == 0, 0, b * a ** (b - 1))


_LN2, _LN10 = np.log(2.0), np.log(10.0)
_holomorphic("add", np.add, lambda a, b, out: (1, 1), save="")
_holomorphic("sub", np.subtract, lambda a, b, out: (1, -1), save="")
_holomorphic("mul", np.multiply, lambda a, b, out: (b, a))
_holomorphic("div", np.divide, lambda a, b, out: (1 / b, -a / (b * b)))
_holomorphic("pow", np.power, lambda a, b, out: (_pow_base(a, b, out), _pow_exponent(a, b, out)), save="both")
_holomorphic("neg", np.negative, lambda a, out: -1, save="")
_holomorphic("exp", np.exp, lambda a, out: out, save="out")
_holomorphic("exp2", np.exp2, lambda a, out: out * _LN2, save="out")
_holomorphic("expm1", np.expm1, lambda a, out: out + 1, save="out")
_holomorphic("log", np.log, lambda a, out: 1 / a)
_holomorphic("log2", np.log2, lambda a, out: 1 / (a * _LN2))
_holomorphic("log10", np.log10, lambda a, out: 1 / (a * _LN10))
_holomorphic("log1p", np.log1p, lambda a, out: 1 / (1 + a))
_holomorphic("sqrt", np.sqrt, lambda a, out: 0.5 / out, save="out")
_holomorphic("rsqrt", lambda a: 1 / np.sqrt(a), lambda a, out: -0.5 * out ** 3, save="out")
_holomorphic("reciprocal", np.reciprocal, lambda a, out: -out * out, save="out")
_holomorphic("square", np.square, lambda a, out: 2 * a)
_holomorphic("sin", np.sin, lambda a, out: np.cos(a))
_holomorphic("cos", np.cos, lambda a, out: -np.sin(a))
_holomorphic("tan", np.tan, lambda a, out: 1 + out * out, save="out")
_holomorphic("sinh", np.sinh, lambda a, out: np.cosh(a))
_holomorphic("cosh", np.cosh, lambda a, out: np.sinh(a))
_holomorphic("tanh", np.tanh, lambda a, out: 1 - out * out, save="out")
_holomorphic("asin", np.arcsin, lambda a, out: 1 / np.sqrt(1 - a * a))
_holomorphic("acos", np.arccos, lambda a, out: -1 / np.sqrt(1 - a * a))
_holomorphic("atan", np.arctan, lambda a, out: 1 / (1 + a * a))
_holomorphic("asinh", np.arcsinh, lambda a, out: 1 / np.sqrt(a * a + 1))
_holomorphic("acosh", np.arccosh, lambda a, out: 1 / (np.sqrt(a - 1) * np.sqrt(a + 1)))  # (torch's branch)
_holomorphic("atanh", np.arctanh, lambda a, out: 1 / (1 - a * a))
_holomorphic("sigmoid", lambda a: 1 / (1 + np.exp(-a)), lambda a, out: out * (1 - out), save="out")


# ---- pointwise ops that are not holomorphic --------------------------------------------------------------
def _sgn(z):
    a = np.abs(z)
    return np.where(a == 0, 0, z / np.where(a == 0, 1, a)).astype(z.dtype)


class ComplexAbsFunction(ComplexFunction):
    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return np.abs(a)  # real: float32 of complex64

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved_tensors
        return g * _sgn(a)


class ComplexSgnFunction(ComplexFunction):
    """z / |z| (0 at 0). Its gradient, torch's: (g - conj(g) sgn(z)^2) / (2 |z|), 0 at 0."""

    @staticmethod
    def forward(ctx, a):
        s = _sgn(a)
        ctx.save_for_backward(a, s)
        return s

    @staticmethod
    def backward(ctx, g):
        a, s = ctx.saved_tensors
        r = np.abs(a)
        with np.errstate(all="ignore"):
            return np.where(r == 0, 0, (g - np.conj(g) * s * s) / (2 * np.where(r == 0, 1, r))).astype(a.dtype)


class ComplexAngleFunction(ComplexFunction):
    """arg z (real); gradient g * i z / |z|^2 (0 at 0), as torch's."""

    meta_rule = staticmethod(lambda a: MetaArray(a.shape, _REAL_OF[a.dtype]))  # (the meta device's rule)

    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return np.angle(a).astype(a.real.dtype)

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved_tensors
        r2 = (a * np.conj(a)).real
        with np.errstate(all="ignore"):
            return np.where(r2 == 0, 0, g * 1j * a / np.where(r2 == 0, 1, r2)).astype(a.dtype)


class ComplexConjFunction(ComplexFunction):
    meta_rule = staticmethod(lambda a: MetaArray(a.shape, a.dtype))

    @staticmethod
    def forward(ctx, a):
        return np.conj(a)

    @staticmethod
    def backward(ctx, g):
        return np.conj(g)


class ComplexCastFunction(ComplexFunction):
    """x.to(dtype) with a complex tensor in or out. Complex to real keeps the real part and warns, as torch."""

    meta_rule = staticmethod(lambda a, dtype: MetaArray(a.shape, np.dtype(dtype)))

    @staticmethod
    def forward(ctx, a, dtype):
        dt = np.dtype(dtype)
        ctx.dtype = a.dtype
        if a.dtype.kind == "c" and dt.kind != "c":
            warnings.warn("Casting complex values to real discards the imaginary part", UserWarning, stacklevel=4)
            return np.asarray(a.real.astype(dt))
        return a.astype(dt)

    @staticmethod
    def backward(ctx, g):
        return g.astype(ctx.dtype) if ctx.dtype.kind == "c" else g.real.astype(ctx.dtype)


_FUNCTIONS.update({"abs": ComplexAbsFunction, "sgn": ComplexSgnFunction, "cast": ComplexCastFunction})


# ---- reductions ----------------------------------------------------------------------------------------
def _axes(dim, ndim, name):
    if dim is None:
        return tuple(range(ndim))
    dims = (dim,) if isinstance(dim, (int, np.integer)) else tuple(dim)
    if not dims:
        return tuple(range(ndim))
    lo = -max(ndim, 1)
    out = []
    for d in dims:
        if not lo <= d < max(ndim, 1):
            raise IndexError(f"{name}: dim {d} is out of range for a tensor of {ndim} dimensions")
        out.append(int(d) % max(ndim, 1) if ndim else 0)
    return tuple(sorted(set(out))) if ndim else ()


def _spread(g, shape, axes, keepdim):
    """g (reduced over ``axes``) broadcast back to ``shape``."""
    if not keepdim:
        g = np.expand_dims(g, axes) if axes else g
    return np.broadcast_to(g, shape)


class ComplexSumFunction(ComplexFunction):
    @staticmethod
    def forward(ctx, a, dim=None, keepdim=False):
        ctx.shape, ctx.axes, ctx.keepdim = a.shape, _axes(dim, a.ndim, "sum"), keepdim
        return np.asarray(a.sum(axis=ctx.axes, keepdims=keepdim))

    @staticmethod
    def backward(ctx, g):
        return np.array(_spread(g, ctx.shape, ctx.axes, ctx.keepdim))


class ComplexMeanFunction(ComplexFunction):
    @staticmethod
    def forward(ctx, a, dim=None, keepdim=False):
        ctx.shape, ctx.axes, ctx.keepdim = a.shape, _axes(dim, a.ndim, "mean"), keepdim
        ctx.count = int(np.prod([a.shape[i] for i in ctx.axes])) if a.ndim else 1
        return np.asarray(a.mean(axis=ctx.axes, keepdims=keepdim)).astype(a.dtype)

    @staticmethod
    def backward(ctx, g):
        return np.array(_spread(g, ctx.shape, ctx.axes, ctx.keepdim)) / ctx.count


class ComplexProdFunction(ComplexFunction):
    """The product; each element's gradient is g times the conjugate product of the others (zeros handled by
    the products of the elements before and after it)."""

    @staticmethod
    def forward(ctx, input, dim=None, keepdim=False, dtype=None):
        a = input if dtype is None else input.astype(_dtypes.to_numpy(dtype))
        if dim is not None and not isinstance(dim, (int, np.integer)):
            raise TypeError(f"prod: dim must be an int or None, got {type(dim).__name__}")
        ctx.shape, ctx.keepdim = a.shape, keepdim
        ctx.axes = _axes(dim, a.ndim, "prod")
        ctx.save_for_backward(a)
        ctx.dim = dim
        return np.asarray(a.prod(axis=ctx.axes, keepdims=keepdim))

    @staticmethod
    def backward(ctx, g, *_):
        (a,) = ctx.saved_tensors
        if ctx.dim is None:
            flat = a.reshape(-1)
            others = _others_product(flat, 0).reshape(a.shape)
            return np.broadcast_to(g, a.shape) * np.conj(others)
        ax = ctx.axes[0] if ctx.axes else 0
        others = _others_product(a, ax) if a.ndim else np.ones_like(a)
        return _spread(g, a.shape, ctx.axes, ctx.keepdim) * np.conj(others)


def _others_product(a, axis):
    ones = np.ones_like(np.take(a, [0], axis=axis)) if a.shape[axis] else None
    if ones is None:
        return a
    before = np.cumprod(np.concatenate([ones, np.take(a, range(a.shape[axis] - 1), axis=axis)], axis), axis)
    rev = np.flip(a, axis)
    after = np.flip(np.cumprod(np.concatenate([ones, np.take(rev, range(a.shape[axis] - 1), axis=axis)], axis),
                               axis), axis)
    return before * after


_FUNCTIONS.update({"sum": ComplexSumFunction, "mean": ComplexMeanFunction, "prod": ComplexProdFunction})


# ---- matrix products -------------------------------------------------------------------------------------
class ComplexMatMulFunction(ComplexFunction):
    @staticmethod
    def forward(ctx, a, b):
        if a.ndim == 0 or b.ndim == 0:
            raise ValueError(f"matmul: both arguments need at least 1 dimension, got shapes {a.shape} and {b.shape}")
        _same_dtype("matmul", a, b)
        ctx.save_for_backward(a, b)
        return np.asarray(np.matmul(a, b))

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        g2 = np.reshape(g, (1, 1)) if a.ndim == 1 and b.ndim == 1 else g
        if not (a.ndim == 1 and b.ndim == 1):
            g2 = g2[..., None, :] if a.ndim == 1 else g2
            g2 = g2[..., None] if b.ndim == 1 else g2
        ga = gb = None
        if ctx.needs_input_grad[0]:
            ga = unbroadcast(np.matmul(g2, np.conj(np.swapaxes(b2, -1, -2))), a2.shape).reshape(a.shape)
        if ctx.needs_input_grad[1]:
            gb = unbroadcast(np.matmul(np.conj(np.swapaxes(a2, -1, -2)), g2), b2.shape).reshape(b.shape)
        return ga, gb


class ComplexLinearFunction(ComplexFunction):
    @staticmethod
    def forward(ctx, x, weight, bias=None):
        _check_linear(x, weight)
        if bias is not None:
            _same_dtype("linear", x, bias)
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        y = np.matmul(x, weight.T)
        return y if bias is None else y + bias

    @staticmethod
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        x2, g2 = x.reshape(-1, weight.shape[1]), g.reshape(-1, weight.shape[0])
        gx = (g2 @ np.conj(weight)).reshape(x.shape) if ctx.needs_input_grad[0] else None
        gw = g2.T @ np.conj(x2) if ctx.needs_input_grad[1] else None
        gb = g2.sum(axis=0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return gx, gw, gb


_FUNCTIONS.update({"matmul": ComplexMatMulFunction, "linear": ComplexLinearFunction})


# ---- comparisons and predicates (no gradient) ---------------------------------------------------------------
class ComplexCompareFunction(ComplexFunction):
    non_differentiable_outputs = (0,)

    @staticmethod
    def forward(ctx, a, b, op="lt"):
        if op not in ("eq", "ne"):
            refuse(f"compare '{op}' (complex numbers are not ordered)", "a")
        return np.asarray(np.equal(a, b) if op == "eq" else np.not_equal(a, b))

    @staticmethod
    def backward(ctx, g):
        return None, None


class ComplexIscloseFunction(ComplexFunction):
    non_differentiable_outputs = (0,)

    @staticmethod
    def forward(ctx, input, other, rtol=1e-05, atol=1e-08, equal_nan=False):
        return np.asarray(np.isclose(input, other, rtol=rtol, atol=atol, equal_nan=equal_nan))

    @staticmethod
    def backward(ctx, g):
        return None, None


def _predicate(name, fn):
    cls = type(f"Complex{name.title()}Function", (ComplexFunction,), {
        "non_differentiable_outputs": (0,), "__module__": __name__,
        "forward": staticmethod(lambda ctx, input: np.asarray(fn(input))),
        "backward": staticmethod(lambda ctx, g: None)})
    _FUNCTIONS[name] = cls


_FUNCTIONS.update({"compare": ComplexCompareFunction, "isclose": ComplexIscloseFunction})
for _name, _fn in (("isfinite", np.isfinite), ("isnan", np.isnan), ("isinf", np.isinf)):
    _predicate(_name, _fn)


# ---- ops whose own Function is dtype-agnostic numpy with a linear backward ---------------------------------------
# The dropouts are among them: a real mask (drawn as for a real input of that shape, so a seed drops the same
# elements) scales both parts of each element, and the gradient is g times the mask. torch's CPU build raises
# NotImplementedError there in training mode (no complex bernoulli_); eval mode and p = 0 / 1 agree with it.
_SAME_FUNCTION = ("reshape", "permute", "expand", "getitem", "cat", "stack", "clone", "where", "index_select",
                  "gather", "repeat_interleave", "diff", "rot90", "scatter", "scatter_add", "diagonal",
                  "dropout", "feature_dropout", "alpha_dropout", "feature_alpha_dropout")
for _name in _SAME_FUNCTION:
    _base = _OPS[_name].function
    _FUNCTIONS[_name] = type(_base.__name__ + "Complex", (_base,), {
        "complex_path": True, "exact_dtype": True, "handles_float64": True, "__module__": _base.__module__})


class ComplexCumsumFunction(ComplexFunction):
    @staticmethod
    def forward(ctx, a, dim):
        ctx.axis = _axes(dim, a.ndim, "cumsum")
        return np.cumsum(a, axis=ctx.axis[0]) if a.ndim else a.copy()

    @staticmethod
    def backward(ctx, g):
        if g.ndim == 0:
            return g
        ax = ctx.axis[0]
        return np.flip(np.cumsum(np.flip(g, ax), axis=ax), ax)


def _constant_pad(args, kwargs):
    mode = args[2] if len(args) > 2 else kwargs.get("mode", "constant")
    if mode != "constant":
        refuse(f"pad (mode {mode!r}; complex tensors take mode 'constant')", "x")


_FUNCTIONS["cumsum"] = ComplexCumsumFunction
_FUNCTIONS["pad"] = (type("PadFunctionComplex", (_OPS["pad"].function,), {
    "complex_path": True, "exact_dtype": True, "handles_float64": True, "__module__": __name__}), _constant_pad)


# ---- ops made of others: var(z) = var(z.real) + var(z.imag) (real), std its root, as torch's ------------------------
def _var(args, kwargs, root=False):
    from .._complex_tensor import imag, real
    z = args[0]
    op = _OPS["var"]
    v = op(real(z), *args[1:], **kwargs) + op(imag(z), *args[1:], **kwargs)
    return v.sqrt() if root else v


_COMPOSITE = {"var": _var, "std": lambda args, kwargs: _var(args, kwargs, True)}


def complex_ops():
    """Names of the registered ops that take complex tensors."""
    return sorted(set(_FUNCTIONS) | set(_COMPOSITE))


# ---- the meta device: torch's result dtypes for complex inputs ------------------------------------------------
# The shape rules (ops/_meta.py) are written for real dtypes (a sum of a non-float is int64, matmul is float32);
# with a complex input, the outputs take torch's promotion of the inputs instead, as torch's meta tensors do
# (which run every op, also those forgegrad's CPU refuses for complex values). Kept as the rule gives them:
# bool outputs, an index output (the second of values / indices, or an arg* / count op's), an explicit dtype=.
_REAL_RESULT = {"abs", "var", "std", "norm", "vector_norm", "linalg_vector_norm", "dist"}  # real of complex
_INDEX_RESULT = {"argmax", "argmin", "argsort", "nonzero", "count_nonzero", "searchsorted", "bucketize"}


def meta_dtypes(name, raw, kwargs, out):
    """``out`` (MetaArray or a tuple of them) of op ``name`` with a complex argument, in torch's dtypes."""
    if name == "cast" or kwargs.get("dtype") is not None:
        return out
    flat = [e for a in raw for e in (a if isinstance(a, (list, tuple)) else (a,)) if e is not None]
    ct = _dtypes.result_of(flat)
    if ct is None or ct.kind != "c":
        return out
    outs = out if isinstance(out, tuple) else (out,)
    for i, o in enumerate(outs):
        kind = o.dtype.kind
        if kind == "b" or kind in "iu" and (i > 0 or name in _INDEX_RESULT):
            continue
        o.dtype = _REAL_OF[ct] if name in _REAL_RESULT else ct
    return out
