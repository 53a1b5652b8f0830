"""Power-average pooling lp_pool1d / 2d / 3d, torch's formula: (avg_pool(x ** p) * window size) ** (1 / p)
with padding 0 and count_include_pad (so a ceil_mode window cut by the input's end is scaled up to a whole one, as
torch's), on the C++ avg_pool2d kernel (float32; float64 on ops/_float64_nn.py's numpy pool). The gradient is
torch's chain: zero where a window's average is exactly 0 (torch's sign * relu(abs) step there). 1-d runs on an
(N, C, 1, L) view; 3-d on avg_pool3d (numpy, any dtype). Samples in _pool_samples.py (3-d: conv3d_samples.py), the
ONNX mapping (LpPool, or the formula) in _pool_onnx.py.
"""
from __future__ import annotations

import math
import types

import numpy as np

from .._args import pair, single
from .._validate import check_bool
from ..autograd import Function
from ..devices import MetaArray
from ..kernels._checks import check_ndim
from . import _float64_nn as F64
from . import _pool_onnx as PO
from . import _pool_samples as PS
from . import conv3d_samples as CS3
from ._op_rules import with_args
from .pool import AvgPool2dFunction, _avg_pool2d_meta
from ._util import sign0
from .pool1d import lazy_decomposition
from .registry import register_op


def lp_arguments(x, norm_type, kernel_size, stride=None, ceil_mode=False, nd=2):
    """(p, kernel, stride, ceil_mode) of lp_pool{nd}d, kernel and stride as the 2-d pool's pairs."""
    owner = f"lp_pool{nd}d"
    check_ndim(x, "input", nd + 2)
    if isinstance(norm_type, bool) or not isinstance(norm_type, (int, float, np.integer, np.floating)):
        raise TypeError(f"{owner}: norm_type must be a number, got {norm_type!r}")
    if x.dtype.kind != "f":
        raise TypeError(f"{owner}: input must be a floating tensor, got {x.dtype}")
    p = float(norm_type)
    if not (math.isfinite(p) and p > 0):
        raise ValueError(f"{owner}: norm_type must be a positive finite number, got {norm_type!r}")
    if nd == 1:
        k = (1, single(kernel_size, "kernel_size", owner, minimum=1))
        s = k if stride is None else (1, single(stride, "stride", owner, minimum=1))
    elif nd == 3:
        from ._window3d import sizes
        k = sizes(kernel_size, 3, "kernel_size", owner, 1)
        s = k if stride is None else sizes(stride, 3, "stride", owner, 1)
    else:
        k = pair(kernel_size, "kernel_size", owner, minimum=1)
        s = k if stride is None else pair(stride, "stride", owner, minimum=1)
    if any(kk > n for kk, n in zip(k, (1,) * (nd == 1) + tuple(x.shape[2:]))):
        size = k[1] if nd == 1 else k
        raise ValueError(f"{owner}: kernel_size {size} is larger than the input {tuple(x.shape[2:])}")
    return p, k, s, check_bool(ceil_mode, f"{owner}: ceil_mode")


def _view(x, nd):
    return x.reshape(x.shape[:2] + (1,) + x.shape[2:]) if nd == 1 else x


def _avg_function(x, nd):
    """The average pool Function lp_pool{nd}d runs (the 3-D one is numpy in any dtype)."""
    if nd == 3:
        from .pool3d import AvgPool3dFunction
        return AvgPool3dFunction
    return AvgPool2dFunction if x.dtype == np.float32 else F64.AvgPool2d64Function


def lp_pool_function(nd: int) -> type:
    def forward(ctx, x, norm_type, kernel_size, stride=None, ceil_mode=False):
        p, k, s, ceil = lp_arguments(x, norm_type, kernel_size, stride, ceil_mode, nd)
        avg_fn = _avg_function(x, nd)
        x4 = _view(x, nd)
        sub = types.SimpleNamespace()
        with np.errstate(invalid="ignore"):  # a negative sum's fractional root is NaN, as torch's
            avg = avg_fn.forward(sub, x4 ** x.dtype.type(p), k, s, 0, ceil, True, None)
            m = avg * x.dtype.type(np.prod(k))
            # the root's exponent in float64 (torch's scalar): 1 / p may underflow float32 (1 / 1e300 -> 0)
            y = (m.astype(np.float64) ** (1.0 / p)).astype(x.dtype)
        ctx.save_for_backward(x4, avg, m)
        ctx.parts = (avg_fn, sub, p, int(np.prod(k)), x.shape)
        return y.reshape(y.shape[:2] + y.shape[3:]) if nd == 1 else y

    def backward(ctx, g):
        x4, avg, m = ctx.saved_tensors
        avg_fn, sub, p, kk, in_shape = ctx.parts
        t = x4.dtype.type
        g = g.reshape(avg.shape)
        with np.errstate(divide="ignore", invalid="ignore"):
            gm = g * (t(1.0 / p) * m ** t(1.0 / p - 1.0))
            # torch's (sign(avg) * relu(|avg|)) backward: times sign(avg) twice (sign(NaN) = 0, so a window
            # holding a NaN passes no gradient where gm is finite), 0 where avg == 0
            s = sign0(avg)
            ga = np.where(avg != 0, gm * t(kk) * s, t(0)) * s
            gx = avg_fn.backward(sub, ga) * (t(p) * x4 ** t(p - 1.0))
        return gx.reshape(in_shape).astype(x4.dtype, copy=False)

    return type(f"LpPool{nd}dFunction", (Function,),
                {"forward": staticmethod(forward), "backward": staticmethod(backward), "__module__": __name__,
                 "__doc__": f"lp_pool{nd}d(x, norm_type, kernel_size, stride, ceil_mode), torch's formula."})


def _lp_meta(nd):
    def meta(x, norm_type, kernel_size, stride=None, ceil_mode=False):
        p, k, s, ceil = lp_arguments(x, norm_type, kernel_size, stride, ceil_mode, nd)
        if nd == 3:
            from .pool3d import _avg_meta
            return _avg_meta(x, k, s, 0, ceil)
        y = _avg_pool2d_meta(MetaArray(_view(x, nd).shape, x.dtype), k, s, 0, ceil)
        shape = y.shape[:2] + y.shape[3:] if nd == 1 else y.shape
        return MetaArray(shape, x.dtype)
    return meta


def _lp_flops(out, x, norm_type, kernel_size, *args, **kwargs):
    """A power per input element, an add per window element, a scale and a root per output."""
    from ._window3d import sizes
    k = int(np.prod(sizes(kernel_size, x.ndim - 2, "kernel_size", f"lp_pool{x.ndim - 2}d")))
    return x.size + out.size * (k + 2)


def _lp_decomposed(nd):
    """lp_pool with ops that have rules (torch's formula, for the differentiable backward)."""
    def fn(x, norm_type, kernel_size, stride=None, ceil_mode=False):
        from ._double_backward import _flat
        from .registry import _OPS
        p, k, s, ceil = lp_arguments(x, norm_type, kernel_size, stride, ceil_mode, nd)
        a = _OPS["avg_pool3d" if nd == 3 else "avg_pool2d"](_view(x, nd) ** p, k, s, 0, ceil, True)
        # sign(a) * relu(|a|) is a with a zero slope at 0, where the root's slope is infinite
        step = _flat(a, lambda v: (v != 0).astype(v.dtype))
        safe = a * step + (1 - step)
        y = ((safe * float(np.prod(k))) ** (1.0 / p)) * step
        return y.reshape(y.shape[:2] + y.shape[3:]) if nd == 1 else y
    return fn


LpPool2dFunction = register_op(
    "lp_pool2d", meta=_lp_meta(2), flops=with_args(_lp_flops), samples=PS.lp_pool2d_samples,
    torch=PS.lp_pool2d_torch, bad_inputs=lambda: PS.lp_pool_bad_inputs(4), onnx=PO.map_lp_pool(2),
    differentiable_backward=lazy_decomposition(_lp_decomposed(2)), tol=(2e-5, 1e-5))(lp_pool_function(2))
LpPool1dFunction = register_op(
    "lp_pool1d", meta=_lp_meta(1), flops=with_args(_lp_flops), samples=PS.lp_pool1d_samples,
    torch=PS.lp_pool1d_torch, bad_inputs=lambda: PS.lp_pool_bad_inputs(3), onnx=PO.map_lp_pool(1),
    differentiable_backward=lazy_decomposition(_lp_decomposed(1)), tol=(2e-5, 1e-5))(lp_pool_function(1))

LpPool3dFunction = register_op(
    "lp_pool3d", meta=_lp_meta(3), flops=with_args(_lp_flops), samples=CS3.lp_pool3d_samples,
    torch=CS3.lp_pool3d_torch, bad_inputs=lambda: PS.lp_pool_bad_inputs(5), onnx=PO.map_lp_pool(3),
    differentiable_backward=lazy_decomposition(_lp_decomposed(3)), tol=(2e-5, 1e-5))(lp_pool_function(3))

for _fn in (LpPool2dFunction, LpPool1dFunction, LpPool3dFunction):
    _fn.op.float64 = _fn  # the float64 average pool is picked by the input's dtype
