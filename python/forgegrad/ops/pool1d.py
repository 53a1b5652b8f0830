"""1-d pooling (N, C, L): max (values and int64 indices l, torch's per-plane convention), average and adaptive
average, each the 2-d pool's Function on an (N, C, 1, L) view, as conv1d runs on conv2d: the same C++ kernels,
geometry and gradients, and the float64 Functions of ops/_float64_nn.py the same way. Samples are in
_pool_samples.py, the ONNX mappings (1-d MaxPool / AveragePool kernels) in _pool_onnx.py.
"""
from __future__ import annotations

import numpy as np

from .._args import single
from ..autograd import Function, no_grad
from ..devices import MetaArray
from ..kernels._checks import check_ndim
from . import _float64_nn as F64
from . import _pool_onnx as PO
from . import _pool_samples as PS
from ._op_rules import with_args
from .pool import (AdaptiveAvgPool2dFunction, AvgPool2dFunction, MaxPool2dFunction, _adaptive_avg_pool2d_meta,
                   _avg_pool2d_meta, _max_pool2d_meta)
from .registry import register_op

_F32 = np.dtype(np.float32)


def _height1(a):
    return a.reshape(a.shape[:2] + (1,) + a.shape[2:])


def _length(a):
    return a.reshape(a.shape[:2] + a.shape[3:])


def _input(x, owner):
    check_ndim(x, "input", 3)
    if min(x.shape[1:]) < 1:
        raise ValueError(f"{owner}: input must have nonzero channels and length, got shape {tuple(x.shape)}")


def as_2d(owner, kernel_size, stride=None, padding=0, dilation=1):
    """A 1-d pool's (kernel_size, stride, padding, dilation) as the 2-d pool's on a height of 1, checked with
    1-d messages (the 2-d geometry's would name pairs)."""
    k = single(kernel_size, "kernel_size", owner, minimum=1)
    no_stride = stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0)
    s = k if no_stride else single(stride, "stride", owner, minimum=1)
    p = single(padding, "padding", owner, minimum=0)
    d = single(dilation, "dilation", owner, minimum=1)
    if p > k // 2:
        raise ValueError(f"{owner}: padding must be at most half of kernel_size, got padding={p}, kernel_size={k}")
    return (1, k), (1, s), (0, p), (1, d)


def _check_length(owner, n, k, p, d):
    if (k - 1) * d + 1 > n + 2 * p:
        raise ValueError(f"{owner}: kernel_size {k} (dilation {d}) is larger than the padded input length "
                         f"{n} + 2 * {p}")


def _max_args(x, kernel_size, stride, padding, dilation, owner="max_pool1d"):
    _input(x, owner)
    k, s, p, d = as_2d(owner, kernel_size, stride, padding, dilation)
    _check_length(owner, x.shape[2], k[1], p[1], d[1])
    return k, s, p, d


def _avg_args(x, kernel_size, stride, padding, owner="avg_pool1d"):
    _input(x, owner)
    k, s, p, _ = as_2d(owner, kernel_size, stride, padding)
    _check_length(owner, x.shape[2], k[1], p[1], 1)
    return k, s, p


# ---- max_pool1d -------------------------------------------------------------------------------------------
def max_pool1d_function(pool2d: type, device: str) -> type:
    """max_pool1d on ``device``: the 2-d Function ``pool2d`` on (N, C, 1, L) views."""

    def forward(ctx, x, kernel_size=2, stride=None, padding=0, dilation=1, ceil_mode=False):
        geo = _max_args(x, kernel_size, stride, padding, dilation)
        y, idx = pool2d.forward(ctx, _height1(x), *geo, ceil_mode)
        return _length(y), _length(idx)

    def backward(ctx, g, g_idx=None):
        return _length(pool2d.backward(ctx, _height1(g)))

    return type(f"MaxPool1d{device.capitalize()}Function", (Function,),
                {"forward": staticmethod(forward), "backward": staticmethod(backward), "__module__": __name__,
                 "non_differentiable_outputs": (1,), "__doc__": f"max_pool1d: {pool2d.__name__} on a height of 1."})


def _max_pool1d_meta(x, kernel_size=2, stride=None, padding=0, dilation=1, ceil_mode=False):
    y, _ = _max_pool2d_meta(_height1(x), *_max_args(x, kernel_size, stride, padding, dilation), ceil_mode)
    shape = y.shape[:2] + y.shape[3:]
    return MetaArray(shape, _F32), MetaArray(shape, np.int64)


def _window_flops(out, x, kernel_size=2, *args, **kwargs):
    values = out[0] if isinstance(out, tuple) else out
    return values.size * single(kernel_size, "kernel_size", "pool1d")


def _max_pool1d_rule(ctx, args, kwargs, g, _):
    """The gradient scatters g to each window's argmax (max_pool2d's rule, on one row)."""
    from ._double_backward import _scatter
    from .registry import _OPS
    x = args[0]
    with no_grad():
        _, idx = _OPS["max_pool1d"](x.detach(), *args[1:], **kwargs)
    N, C, L = x.shape
    key = (np.arange(N)[:, None, None], np.arange(C)[None, :, None], idx._data)
    return _scatter(g, key, (N, C, L))


MaxPool1dFunction = register_op(
    "max_pool1d", meta=_max_pool1d_meta, flops=with_args(_window_flops), samples=PS.max_pool1d_samples,
    torch=PS.max_pool1d_torch, bad_inputs=PS.max_pool1d_bad_inputs, onnx=PO.map_max_pool1d,
    differentiable_backward=_max_pool1d_rule)(max_pool1d_function(MaxPool2dFunction, "cpu"))
MaxPool1dFunction.op.float64 = max_pool1d_function(F64.MaxPool2d64Function, "float64")


# ---- avg_pool1d -------------------------------------------------------------------------------------------
def avg_pool1d_function(pool2d: type, device: str) -> type:
    """avg_pool1d on ``device``: the 2-d Function ``pool2d`` on (N, C, 1, L) views."""

    def forward(ctx, x, kernel_size=2, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
        geo = _avg_args(x, kernel_size, stride, padding)
        return _length(pool2d.forward(ctx, _height1(x), *geo, ceil_mode, count_include_pad, None))

    def backward(ctx, g):
        return _length(pool2d.backward(ctx, _height1(g)))

    return type(f"AvgPool1d{device.capitalize()}Function", (Function,),
                {"forward": staticmethod(forward), "backward": staticmethod(backward), "__module__": __name__,
                 "__doc__": f"avg_pool1d: {pool2d.__name__} on a height of 1."})


def _avg_pool1d_meta(x, kernel_size=2, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    y = _avg_pool2d_meta(_height1(x), *_avg_args(x, kernel_size, stride, padding), ceil_mode, count_include_pad)
    return MetaArray(y.shape[:2] + y.shape[3:], _F32)


def _avg_pool1d_decomposed(x, kernel_size=2, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    """avg_pool1d with ops that have rules (the differentiable backward differentiates it)."""
    from .registry import _OPS
    N, C, L = x.shape
    geo = _avg_args(x, kernel_size, stride, padding)
    y = _OPS["avg_pool2d"](x.reshape(N, C, 1, L), *geo, ceil_mode, count_include_pad)
    return y.reshape(N, C, y.shape[3])


AvgPool1dFunction = register_op(
    "avg_pool1d", meta=_avg_pool1d_meta, flops=with_args(_window_flops), samples=PS.avg_pool1d_samples,
    torch=PS.avg_pool1d_torch, bad_inputs=PS.avg_pool1d_bad_inputs, onnx=PO.map_avg_pool1d)(
    avg_pool1d_function(AvgPool2dFunction, "cpu"))
AvgPool1dFunction.op.float64 = avg_pool1d_function(F64.AvgPool2d64Function, "float64")


# ---- adaptive_avg_pool1d ----------------------------------------------------------------------------------
def adaptive_length(output_size, n, owner):
    """An adaptive 1-d pool's output length: an int, a 1-tuple, or None (the input's length)."""
    if output_size is None or (isinstance(output_size, (tuple, list)) and len(output_size) == 1
                               and output_size[0] is None):
        return int(n)
    return single(output_size, "output_size", owner, minimum=1)


def adaptive_avg_pool1d_function(pool2d: type, device: str) -> type:
    def forward(ctx, x, output_size=1):
        _input(x, "adaptive_avg_pool1d")
        o = adaptive_length(output_size, x.shape[2], "adaptive_avg_pool1d")
        return _length(pool2d.forward(ctx, _height1(x), (1, o)))

    def backward(ctx, g):
        return _length(pool2d.backward(ctx, _height1(g)))

    return type(f"AdaptiveAvgPool1d{device.capitalize()}Function", (Function,),
                {"forward": staticmethod(forward), "backward": staticmethod(backward), "__module__": __name__,
                 "__doc__": f"adaptive_avg_pool1d: {pool2d.__name__} on a height of 1."})


def _adaptive_avg_pool1d_meta(x, output_size=1):
    _input(x, "adaptive_avg_pool1d")
    o = adaptive_length(output_size, x.shape[2], "adaptive_avg_pool1d")
    y = _adaptive_avg_pool2d_meta(_height1(x), (1, o))
    return MetaArray(y.shape[:2] + y.shape[3:], _F32)


def _adaptive_avg_pool1d_flops(out, x, output_size=1):
    n, o = x.shape[2], out.shape[2]
    return x.shape[0] * x.shape[1] * sum(-(-((i + 1) * n) // o) - (i * n) // o for i in range(o)) + out.size


def _adaptive_avg_pool1d_decomposed(x, output_size=1):
    from .registry import _OPS
    N, C, L = x.shape
    o = adaptive_length(output_size, L, "adaptive_avg_pool1d")
    return _OPS["adaptive_avg_pool2d"](x.reshape(N, C, 1, L), (1, o)).reshape(N, C, o)


AdaptiveAvgPool1dFunction = register_op(
    "adaptive_avg_pool1d", meta=_adaptive_avg_pool1d_meta, flops=with_args(_adaptive_avg_pool1d_flops),
    samples=PS.adaptive_pool1d_samples, torch=PS.adaptive_avg_pool1d_torch,
    bad_inputs=PS.adaptive_pool1d_bad_inputs, onnx=PO.map_adaptive_avg_pool1d)(
    adaptive_avg_pool1d_function(AdaptiveAvgPool2dFunction, "cpu"))
AdaptiveAvgPool1dFunction.op.float64 = adaptive_avg_pool1d_function(F64.AdaptiveAvgPool2d64Function, "float64")


def lazy_decomposition(fn):
    """decomposition(fn) (ops/_double_backward.py), imported on first use: that module reads every op's record,
    so it loads after all op modules."""
    def rule_fn(ctx, args, kwargs, *grads):
        from ._double_backward import decomposition
        return decomposition(fn)(ctx, args, kwargs, *grads)
    return rule_fn


# the average pools are linear: their differentiable backward differentiates the 2-d op on one row
AvgPool1dFunction.op.differentiable_backward = lazy_decomposition(_avg_pool1d_decomposed)
AdaptiveAvgPool1dFunction.op.differentiable_backward = lazy_decomposition(_adaptive_avg_pool1d_decomposed)

for _fn in (MaxPool1dFunction, AvgPool1dFunction, AdaptiveAvgPool1dFunction):
    _fn.op.float64.op = _fn.op  # the float64 Function finds its op's record (its differentiable rule) as _float64's
