"""3-D pooling (NCDHW) as autograd Functions with torch's arguments: max_pool3d (values and int64 indices
d * H * W + h * W + w per plane), avg_pool3d, adaptive_avg_pool3d, adaptive_max_pool3d. lp_pool3d and max_unpool3d
are the N-d Functions of pool_lp.py and pool_index.py at nd=3.

The arithmetic is ops/_window3d.py's, in the input's dtype (float64 runs the same Function): numpy, and for
float32 max / avg pooling the C++ 2-D pool kernels with the depth taps combined in numpy (ops/_pool3d_planes.py);
exact (max) or summed in a fixed order, so the same bits at any thread count. The ONNX mappings (static spatial sizes)
are in _pool3d_onnx.py; samples in conv3d_samples.py.
"""
from __future__ import annotations

import numpy as np

from .._args import is_int
from .._validate import check_bool, check_flag
from ..autograd import Function
from ..devices import MetaArray
from ..kernels._checks import check_ndim
from . import _pool3d_onnx as PO
from . import _window3d as W
from . import conv3d_samples as CS
from ._op_rules import with_args
from .pool_index import _scatter_rule
from .registry import register_op

__all__ = ["MaxPool3dFunction", "AvgPool3dFunction", "AdaptiveAvgPool3dFunction", "AdaptiveMaxPool3dFunction"]


def _input(x, owner):
    check_ndim(x, "input", 5)
    if x.dtype.kind != "f":
        raise TypeError(f"{owner}: input must be a floating tensor, got {x.dtype}")
    if min(x.shape[1:]) < 1:
        raise ValueError(f"{owner}: input must have nonzero channels and spatial sizes, got shape {tuple(x.shape)}")


def _window_flops(out, x, kernel_size=2, *args, **kwargs):
    values = out[0] if isinstance(out, tuple) else out
    return values.size * int(np.prod(W.sizes(kernel_size, 3, "kernel_size", "pool3d")))


# ---- max_pool3d -------------------------------------------------------------------------------------------
def max_pool3d_geometry(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    _input(x, "max_pool3d")
    return W.pool_geometry(x.shape, kernel_size, stride, padding, dilation, ceil_mode, "max_pool3d")


def _max_meta(x, kernel_size=2, stride=None, padding=0, dilation=1, ceil_mode=False):
    shape = max_pool3d_geometry(x, kernel_size, stride, padding, dilation, ceil_mode).output_shape
    return MetaArray(shape, x.dtype), MetaArray(shape, np.int64)


def max_pool3d_with_indices(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                            return_indices=False):
    """(values, int64 indices d * H * W + h * W + w of each maximum in its volume); (C, D, H, W) input too."""
    from ..nn.functional_pool import _batched, _unbatch
    from .registry import _OPS
    unbatched, x = _batched(input, 3, "max_pool3d")
    return _unbatch(unbatched, _OPS["max_pool3d"](x, kernel_size=kernel_size, stride=stride, padding=padding,
                                                  dilation=dilation, ceil_mode=check_bool(ceil_mode, "ceil_mode")))


def max_pool3d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    out = max_pool3d_with_indices(input, kernel_size, stride, padding, dilation, ceil_mode)
    return out if check_flag(return_indices, "return_indices") else out[0]


@register_op("max_pool3d", meta=_max_meta, flops=with_args(_window_flops), samples=CS.max_pool3d_samples,
             torch=CS.max_pool3d_torch, bad_inputs=CS.max_pool3d_bad_inputs, onnx=PO.map_max_pool3d,
             differentiable_backward=_scatter_rule("max_pool3d"), functional=max_pool3d)
class MaxPool3dFunction(W.IndexedPool):
    @staticmethod
    def forward(ctx, x, kernel_size=2, stride=None, padding=0, dilation=1, ceil_mode=False):
        geo = max_pool3d_geometry(x, kernel_size, stride, padding, dilation, ceil_mode)
        return W.IndexedPool.saving(ctx, x, *W.max_pool(x, geo))


# ---- avg_pool3d -------------------------------------------------------------------------------------------
def avg_pool3d_arguments(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                         divisor_override=None, owner="avg_pool3d"):
    """(geometry, divisor per output position) of avg_pool3d."""
    _input(x, owner)
    geo = W.pool_geometry(x.shape, kernel_size, stride, padding, 1, ceil_mode, owner)
    if any(n < k for n, k in zip(x.shape[2:], geo.kernel_size)):  # torch's avg_pool3d check: padding not counted
        raise ValueError(f"{owner}: input {tuple(x.shape[2:])} is smaller than kernel_size {geo.kernel_size}")
    count_include_pad = check_bool(count_include_pad, f"{owner}: count_include_pad")
    if divisor_override is not None and (not is_int(divisor_override) or divisor_override == 0):
        raise ValueError(f"{owner}: divisor_override must be a nonzero int or None, got {divisor_override!r}")
    return geo, W.avg_divisor(geo, x.shape[2:], count_include_pad, divisor_override)


def _avg_meta(x, kernel_size=2, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
              divisor_override=None):
    geo, _ = avg_pool3d_arguments(x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
    return MetaArray(geo.output_shape, x.dtype)


def avg_pool3d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    from ..nn.functional_pool import _batched, _unbatch
    from .registry import _OPS
    unbatched, x = _batched(input, 3, "avg_pool3d")
    return _unbatch(unbatched, _OPS["avg_pool3d"](x, kernel_size=kernel_size, stride=stride, padding=padding,
                                                  ceil_mode=check_bool(ceil_mode, "ceil_mode"),
                                                  count_include_pad=check_bool(count_include_pad, "count_include_pad"),
                                                  divisor_override=divisor_override))


@register_op("avg_pool3d", meta=_avg_meta, flops=with_args(_window_flops), samples=CS.avg_pool3d_samples,
             torch=CS.avg_pool3d_torch, bad_inputs=CS.avg_pool3d_bad_inputs, onnx=PO.map_avg_pool3d,
             functional=avg_pool3d)
class AvgPool3dFunction(Function):
    @staticmethod
    def forward(ctx, x, kernel_size=2, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                divisor_override=None):
        geo, div = avg_pool3d_arguments(x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                                        divisor_override)
        ctx.geo, ctx.div, ctx.in_shape = geo, div, x.shape
        return W.avg_pool(x, geo, div)

    @staticmethod
    def backward(ctx, g):
        return W.avg_pool_backward(g, ctx.geo, ctx.div, ctx.in_shape)


# ---- adaptive pools ---------------------------------------------------------------------------------------
def adaptive3d_size(x, output_size, owner):
    _input(x, owner)
    out = W.adaptive_sizes(output_size, x.shape[2:], owner)
    W._check_size(owner, "output_size", tuple(x.shape[:2]) + out)
    return out


def _adaptive_avg_meta(x, output_size=1):
    return MetaArray(tuple(x.shape[:2]) + adaptive3d_size(x, output_size, "adaptive_avg_pool3d"), x.dtype)


def _adaptive_flops(out, x, output_size=1):
    return x.size + (out[0] if isinstance(out, tuple) else out).size


def adaptive_avg_pool3d(input, output_size):
    from ..nn.functional_pool import _batched, _unbatch
    from .registry import _OPS
    unbatched, x = _batched(input, 3, "adaptive_avg_pool3d")
    return _unbatch(unbatched, _OPS["adaptive_avg_pool3d"](x, output_size=output_size))


@register_op("adaptive_avg_pool3d", meta=_adaptive_avg_meta, flops=with_args(_adaptive_flops),
             samples=CS.adaptive_pool3d_samples, torch=CS.adaptive_avg_pool3d_torch,
             bad_inputs=CS.adaptive_pool3d_bad_inputs, onnx=PO.map_adaptive_avg_pool3d, functional=adaptive_avg_pool3d)
class AdaptiveAvgPool3dFunction(Function):
    """Means over torch's windows [floor(i*n/o), ceil((i+1)*n/o)), one axis at a time."""

    @staticmethod
    def forward(ctx, x, output_size=1):
        out = adaptive3d_size(x, output_size, "adaptive_avg_pool3d")
        ctx.in_shape = x.shape
        return W.adaptive_avg(x, out)

    @staticmethod
    def backward(ctx, g):
        return W.adaptive_avg_backward(g, ctx.in_shape)


def _adaptive_max_meta(x, output_size=1):
    shape = tuple(x.shape[:2]) + adaptive3d_size(x, output_size, "adaptive_max_pool3d")
    return MetaArray(shape, x.dtype), MetaArray(shape, np.int64)


def adaptive_max_pool3d_with_indices(input, output_size, return_indices=False):
    from ..nn.functional_pool import _batched, _unbatch
    from .registry import _OPS
    unbatched, x = _batched(input, 3, "adaptive_max_pool3d")
    return _unbatch(unbatched, _OPS["adaptive_max_pool3d"](x, output_size=output_size))


def adaptive_max_pool3d(input, output_size, return_indices=False):
    out = adaptive_max_pool3d_with_indices(input, output_size)
    return out if check_flag(return_indices, "return_indices") else out[0]


@register_op("adaptive_max_pool3d", meta=_adaptive_max_meta, flops=with_args(_adaptive_flops),
             samples=CS.adaptive_max_pool3d_samples, torch=CS.adaptive_max_pool3d_torch,
             bad_inputs=CS.adaptive_pool3d_bad_inputs, onnx=PO.map_adaptive_max_pool3d,
             differentiable_backward=_scatter_rule("adaptive_max_pool3d"), functional=adaptive_max_pool3d)
class AdaptiveMaxPool3dFunction(W.IndexedPool):
    @staticmethod
    def forward(ctx, x, output_size=1):
        return W.IndexedPool.saving(ctx, x, *W.adaptive_max(x, adaptive3d_size(x, output_size, "adaptive_max_pool3d")))


for _fn in (MaxPool3dFunction, AvgPool3dFunction, AdaptiveAvgPool3dFunction, AdaptiveMaxPool3dFunction):
    _fn.op.float64 = _fn  # numpy in the input's dtype
