"""forgegrad.fft: torch.fft's discrete Fourier transforms, on numpy's pocketfft (CPU).

fft, ifft, fft2, ifft2, fftn, ifftn (complex to complex), rfft, irfft, rfft2, irfft2, rfftn, irfftn (real to
half-spectrum and back), hfft, ihfft, hfft2, ihfft2, hfftn, ihfftn (Hermitian), fftfreq, rfftfreq, fftshift,
ifftshift, with torch's arguments (``n`` / ``s``, ``dim``, ``norm`` "backward" / "ortho" / "forward") and dtypes:
float32 (and integer) input gives complex64, float64 complex128; numpy >= 2 computes complex64 transforms in single
precision, as torch does, so results agree with torch's to float32 rounding. Gradients follow torch's rules (the
c2r transforms' backward doubles the bins that stand for two, as torch's ``fft_c2r_backward``).
"""
from __future__ import annotations

import builtins
import operator

import numpy as np

from . import dtypes as _dtypes
from .ops._complex import ComplexFunction
from .tensor import Tensor

__all__ = ["fft", "ifft", "fft2", "ifft2", "fftn", "ifftn", "rfft", "irfft", "rfft2", "irfft2", "rfftn", "irfftn",
           "hfft", "ihfft", "hfft2", "ihfft2", "hfftn", "ihfftn", "fftfreq", "rfftfreq", "fftshift", "ifftshift"]

_NORMS = ("backward", "ortho", "forward")
_DUAL = {"backward": "forward", "ortho": "ortho", "forward": "backward"}
_C64, _C128 = np.dtype(np.complex64), np.dtype(np.complex128)
_TORCH_NAME = {_C64: "ComplexFloat", _C128: "ComplexDouble"}


def _resize(a, axes, sizes):
    """``a`` cropped or zero-padded at the end of each of ``axes`` to ``sizes``."""
    for ax, n in zip(axes, sizes):
        have = a.shape[ax]
        if have > n:
            a = np.take(a, np.arange(n), axis=ax)
        elif have < n:
            pad = [(0, 0)] * a.ndim
            pad[ax] = (0, n - have)
            a = np.pad(a, pad)
    return a


class FFTC2CFunction(ComplexFunction):
    @staticmethod
    def forward(ctx, x, axes, sizes, norm, inverse):
        ctx.shape, ctx.axes, ctx.norm, ctx.inverse = x.shape, axes, norm, inverse
        ctx.sizes = sizes
        x = x.astype(_complex_of(x.dtype), copy=False)
        f = np.fft.ifftn if inverse else np.fft.fftn
        return np.asarray(f(x, s=sizes, axes=axes, norm=norm))

    @staticmethod
    def backward(ctx, g):
        f = np.fft.fftn if ctx.inverse else np.fft.ifftn
        return _resize(f(g, s=ctx.sizes, axes=ctx.axes, norm=_DUAL[ctx.norm]), ctx.axes,
                       [ctx.shape[a] for a in ctx.axes])


class FFTR2CFunction(ComplexFunction):
    """rfftn: the transform of real x, its last axis' first n // 2 + 1 bins."""

    @staticmethod
    def forward(ctx, x, axes, sizes, norm):
        ctx.shape, ctx.axes, ctx.sizes, ctx.norm = x.shape, axes, sizes, norm
        return np.asarray(np.fft.rfftn(x, s=sizes, axes=axes, norm=norm))

    @staticmethod
    def backward(ctx, g):
        # the half spectrum's gradient zero-filled to the full one, then the adjoint transform's real part
        full = _resize(g, ctx.axes[-1:], ctx.sizes[-1:])
        gx = np.fft.ifftn(full, s=ctx.sizes, axes=ctx.axes, norm=_DUAL[ctx.norm]).real
        return _resize(gx, ctx.axes, [ctx.shape[a] for a in ctx.axes])


class FFTC2RFunction(ComplexFunction):
    """irfftn: the real signal of a half spectrum (its last axis cut or padded to n // 2 + 1 bins)."""

    @staticmethod
    def forward(ctx, x, axes, sizes, norm):
        ctx.shape, ctx.axes, ctx.sizes, ctx.norm = x.shape, axes, sizes, norm
        x = x.astype(_complex_of(x.dtype), copy=False)
        return np.asarray(np.fft.irfftn(x, s=sizes, axes=axes, norm=norm))

    @staticmethod
    def backward(ctx, g):
        # torch's fft_c2r_backward: the r2c transform of g, scaled as the forward was, and the bins that stand for
        # two (their conjugates are the rest of the full spectrum) doubled
        gx = np.fft.rfftn(g, axes=ctx.axes, norm=_DUAL[ctx.norm])
        n = ctx.sizes[-1]
        double = n - (n // 2 + 1)
        if double > 0:
            idx = [slice(None)] * gx.ndim
            idx[ctx.axes[-1]] = slice(1, 1 + double)
            gx[tuple(idx)] *= 2
        last = ctx.axes[-1]
        gx = _resize(gx, ctx.axes[:-1], [ctx.shape[a] for a in ctx.axes[:-1]])
        return _resize(gx, (last,), (ctx.shape[last],))


def _complex_of(dt) -> np.dtype:
    dt = np.dtype(dt)
    if dt.kind == "c":
        return dt
    return _C128 if dt == np.float64 else _C64


# ---- arguments ---------------------------------------------------------------------------------------------
def _input(x, fn, real=False):
    if not isinstance(x, Tensor):
        raise TypeError(f"fft_{fn}(): argument 'input' must be a Tensor, got {type(x).__name__}")
    dt = x._data.dtype
    if dt == np.float16:
        raise RuntimeError(f"fft_{fn}: unsupported dtype Half (forgegrad's FFTs take float32, float64, complex64, "
                           "complex128 and integer tensors)")
    if real and dt.kind == "c":
        raise RuntimeError(f"{fn} expects a real input tensor, but got {_TORCH_NAME[dt]}")
    if dt.kind in "iub":  # integer input: the default floating dtype, as torch
        x = x.to(_dtypes.default_float())
    return x


def _norm(norm, fn):
    if norm is None:
        return "backward"
    if norm not in _NORMS:
        raise RuntimeError(f'fft_{fn}: Invalid normalization mode: "{norm}" (expected "backward", "ortho" or '
                           '"forward")')
    return norm


def _dim(d, ndim, fn):
    try:
        d = operator.index(d)
    except TypeError:
        raise TypeError(f"fft_{fn}(): argument 'dim' must be an int or a tuple of ints, got {type(d).__name__}") \
            from None
    if not -max(ndim, 1) <= d < max(ndim, 1) or ndim == 0:
        raise IndexError(f"fft_{fn}: Dimension out of range (expected to be in range of [{-max(ndim, 1)}, "
                         f"{max(ndim, 1) - 1}], but got {d})")
    return d % ndim


def _size(n, fn, arg):
    if isinstance(n, builtins.bool) or not isinstance(n, (builtins.int, np.integer)):
        raise TypeError(f"fft_{fn}(): argument '{arg}' must be an int (or a tuple of ints for s), got "
                        f"{type(n).__name__}")
    return int(n)


def _plan(x, s, dim, fn, c2r=False):
    """The axes and the output sizes (the signal's, for c2r) of an n-dimensional transform."""
    if s is not None and not isinstance(s, (tuple, list)):
        s = (s,)
    if dim is not None and not isinstance(dim, (tuple, list)):
        dim = (dim,)
    if dim is None:
        axes = list(range(x.ndim)) if s is None else list(range(x.ndim - len(s), x.ndim))
        if s is not None and len(s) > x.ndim:
            raise RuntimeError(f"fft_{fn}: Got shape with {len(s)} values but input tensor only has {x.ndim} "
                               "dimensions.")
    else:
        axes = [_dim(d, x.ndim, fn) for d in dim]
        if len(set(axes)) != len(axes):
            raise RuntimeError(f"fft_{fn}: FFT dims must be unique")
    if s is not None and len(s) != len(axes):
        raise RuntimeError(f"fft_{fn}: When given, dim and shape arguments must have the same length")
    if not axes:
        raise RuntimeError(f"fft_{fn}: expected at least one dimension to transform")
    sizes = []
    for i, ax in enumerate(axes):
        n = -1 if s is None else _size(s[i], fn, "s" if len(axes) > 1 or fn.endswith("n") else "n")
        if n == -1:
            n = x.shape[ax]
            if c2r and i == len(axes) - 1:
                n = 2 * (n - 1)
        if n <= 0:
            raise RuntimeError(f"fft_{fn}: Invalid number of data points ({n}) specified")
        sizes.append(n)
    return tuple(axes), tuple(sizes)


def _refuse_out(out, fn):
    if out is not None:
        raise TypeError(f"fft_{fn}(): out= is not supported by forgegrad; use the returned tensor")


def _one(n, dim, fn):
    if n is not None:
        _size(n, fn, "n")
    return None if n is None else (n,), (dim,)


# ---- complex to complex ---------------------------------------------------------------------------------------
def fftn(input, s=None, dim=None, norm=None, *, out=None):
    """torch.fft.fftn: the n-dimensional discrete Fourier transform over ``dim`` (all dims, or the last len(s))."""
    _refuse_out(out, "fftn")
    x = _input(input, "fftn")
    axes, sizes = _plan(x, s, dim, "fftn")
    return FFTC2CFunction.apply(x, axes, sizes, _norm(norm, "fftn"), False)


def ifftn(input, s=None, dim=None, norm=None, *, out=None):
    """torch.fft.ifftn: the inverse of fftn."""
    _refuse_out(out, "ifftn")
    x = _input(input, "ifftn")
    axes, sizes = _plan(x, s, dim, "ifftn")
    return FFTC2CFunction.apply(x, axes, sizes, _norm(norm, "ifftn"), True)


def fft(input, n=None, dim=-1, norm=None, *, out=None):
    """torch.fft.fft: the one-dimensional transform over ``dim`` (padded with zeros or cut to ``n`` first)."""
    _refuse_out(out, "fft")
    s, d = _one(n, dim, "fft")
    x = _input(input, "fft")
    axes, sizes = _plan(x, s, d, "fft")
    return FFTC2CFunction.apply(x, axes, sizes, _norm(norm, "fft"), False)


def ifft(input, n=None, dim=-1, norm=None, *, out=None):
    """torch.fft.ifft: the inverse of fft."""
    _refuse_out(out, "ifft")
    s, d = _one(n, dim, "ifft")
    x = _input(input, "ifft")
    axes, sizes = _plan(x, s, d, "ifft")
    return FFTC2CFunction.apply(x, axes, sizes, _norm(norm, "ifft"), True)


def fft2(input, s=None, dim=(-2, -1), norm=None, *, out=None):
    """torch.fft.fft2: fftn over two dims (the last two by default)."""
    _refuse_out(out, "fft2")
    return fftn(input, s, dim, norm)


def ifft2(input, s=None, dim=(-2, -1), norm=None, *, out=None):
    """torch.fft.ifft2: ifftn over two dims (the last two by default)."""
    _refuse_out(out, "ifft2")
    return ifftn(input, s, dim, norm)


# ---- real to half spectrum and back ------------------------------------------------------------------------------
def rfftn(input, s=None, dim=None, norm=None, *, out=None):
    """torch.fft.rfftn: the transform of a real signal, the last dim's first n // 2 + 1 bins."""
    _refuse_out(out, "rfftn")
    x = _input(input, "rfftn", real=True)
    axes, sizes = _plan(x, s, dim, "rfftn")
    return FFTR2CFunction.apply(x, axes, sizes, _norm(norm, "rfftn"))


def irfftn(input, s=None, dim=None, norm=None, *, out=None):
    """torch.fft.irfftn: the real signal of a half spectrum (last dim of length s[-1], by default 2 (m - 1))."""
    _refuse_out(out, "irfftn")
    x = _input(input, "irfftn")
    axes, sizes = _plan(x, s, dim, "irfftn", c2r=True)
    return FFTC2RFunction.apply(x, axes, sizes, _norm(norm, "irfftn"))


def rfft(input, n=None, dim=-1, norm=None, *, out=None):
    """torch.fft.rfft: the one-dimensional transform of a real signal, n // 2 + 1 bins."""
    _refuse_out(out, "rfft")
    s, d = _one(n, dim, "rfft")
    x = _input(input, "rfft", real=True)
    axes, sizes = _plan(x, s, d, "rfft")
    return FFTR2CFunction.apply(x, axes, sizes, _norm(norm, "rfft"))


def irfft(input, n=None, dim=-1, norm=None, *, out=None):
    """torch.fft.irfft: the inverse of rfft (``n`` output points, by default 2 (m - 1))."""
    _refuse_out(out, "irfft")
    s, d = _one(n, dim, "irfft")
    x = _input(input, "irfft")
    axes, sizes = _plan(x, s, d, "irfft", c2r=True)
    return FFTC2RFunction.apply(x, axes, sizes, _norm(norm, "irfft"))


def rfft2(input, s=None, dim=(-2, -1), norm=None, *, out=None):
    """torch.fft.rfft2: rfftn over two dims."""
    _refuse_out(out, "rfft2")
    return rfftn(input, s, dim, norm)


def irfft2(input, s=None, dim=(-2, -1), norm=None, *, out=None):
    """torch.fft.irfft2: irfftn over two dims."""
    _refuse_out(out, "irfft2")
    return irfftn(input, s, dim, norm)


# ---- Hermitian: hfft is irfft of the conjugate, scaled the other way (numpy's and torch's definition) -----------
def hfftn(input, s=None, dim=None, norm=None, *, out=None):
    """torch.fft.hfftn: the real transform of a one-sided Hermitian signal (its last dim halved)."""
    from ._complex_tensor import conj
    _refuse_out(out, "hfftn")
    x = _input(input, "hfftn")
    axes, sizes = _plan(x, s, dim, "hfftn", c2r=True)
    return FFTC2RFunction.apply(conj(x), axes, sizes, _DUAL[_norm(norm, "hfftn")])


def ihfftn(input, s=None, dim=None, norm=None, *, out=None):
    """torch.fft.ihfftn: the inverse of hfftn, of a real signal: the last dim's first n // 2 + 1 bins."""
    from ._complex_tensor import conj
    _refuse_out(out, "ihfftn")
    x = _input(input, "ihfftn", real=True)
    axes, sizes = _plan(x, s, dim, "ihfftn")
    return conj(FFTR2CFunction.apply(x, axes, sizes, _DUAL[_norm(norm, "ihfftn")]))


def hfft(input, n=None, dim=-1, norm=None, *, out=None):
    """torch.fft.hfft: the real transform of a one-sided Hermitian signal (``n`` points, by default 2 (m - 1))."""
    _refuse_out(out, "hfft")
    s, d = _one(n, dim, "hfft")
    return hfftn(input, s, d, norm)


def ihfft(input, n=None, dim=-1, norm=None, *, out=None):
    """torch.fft.ihfft: the inverse of hfft, of a real signal (n // 2 + 1 bins)."""
    _refuse_out(out, "ihfft")
    s, d = _one(n, dim, "ihfft")
    return ihfftn(input, s, d, norm)


def hfft2(input, s=None, dim=(-2, -1), norm=None, *, out=None):
    """torch.fft.hfft2: hfftn over two dims."""
    _refuse_out(out, "hfft2")
    return hfftn(input, s, dim, norm)


def ihfft2(input, s=None, dim=(-2, -1), norm=None, *, out=None):
    """torch.fft.ihfft2: ihfftn over two dims."""
    _refuse_out(out, "ihfft2")
    return ihfftn(input, s, dim, norm)


# ---- frequencies and shifts -----------------------------------------------------------------------------------
def _freq_tensor(values, d, dtype, device, requires_grad, fn):
    from .factories import placed
    try:
        d = float(d)
    except (TypeError, ValueError):
        raise TypeError(f"{fn}(): argument 'd' must be a number, got {type(d).__name__}") from None
    dt = _dtypes.default_float() if dtype is None else _dtypes.to_numpy(dtype)
    if dt.kind not in "fc":
        raise RuntimeError(f"{fn}: expected a floating or complex dtype, got {_dtypes.of(dt)}")
    return placed(Tensor(np.asarray(values / d, dt), requires_grad=requires_grad, dtype=dt), device)


def fftfreq(n, d=1.0, *, out=None, dtype=None, layout=None, device=None, requires_grad=False):
    """torch.fft.fftfreq: the sample frequencies of a length-``n`` transform, [0, 1, ..., -1] / (d n)."""
    _refuse_out(out, "fftfreq")
    n = _size(n, "fftfreq", "n")
    if n <= 0:
        raise RuntimeError(f"fftfreq: n must be positive, got {n}")
    k = np.concatenate([np.arange(0, (n - 1) // 2 + 1), np.arange(-(n // 2), 0)]).astype(np.float64)
    return _freq_tensor(k / n, d, dtype, device, requires_grad, "fftfreq")


def rfftfreq(n, d=1.0, *, out=None, dtype=None, layout=None, device=None, requires_grad=False):
    """torch.fft.rfftfreq: the sample frequencies of rfft's n // 2 + 1 bins, [0, 1, ..., n // 2] / (d n)."""
    _refuse_out(out, "rfftfreq")
    n = _size(n, "rfftfreq", "n")
    if n <= 0:
        raise RuntimeError(f"rfftfreq: n must be positive, got {n}")
    return _freq_tensor(np.arange(n // 2 + 1, dtype=np.float64) / n, d, dtype, device, requires_grad, "rfftfreq")


def _shift(input, dim, fn, sign):
    from ._torch_indexing_shape import roll
    if not isinstance(input, Tensor):
        raise TypeError(f"{fn}(): argument 'input' must be a Tensor, got {type(input).__name__}")
    if dim is None:
        dims = list(range(input.ndim))
    else:
        dims = [_dim(d, input.ndim, fn) for d in ((dim,) if not isinstance(dim, (tuple, list)) else dim)]
    if not dims:
        return input.clone()
    shifts = [(input.shape[d] // 2) if sign > 0 else -(input.shape[d] // 2) for d in dims]
    return roll(input, shifts, dims)


def fftshift(input, dim=None):
    """torch.fft.fftshift: the zero frequency moved to the centre (a roll by n // 2 over ``dim``, all by default)."""
    return _shift(input, dim, "fftshift", 1)


def ifftshift(input, dim=None):
    """torch.fft.ifftshift: the inverse of fftshift (a roll by -(n // 2))."""
    return _shift(input, dim, "ifftshift", -1)
