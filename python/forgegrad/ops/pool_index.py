"""The pools that work with indices: max_unpool1d / 2d / 3d (the inverse of max pooling's scatter, with torch's
flat per-plane indices) and adaptive_max_pool1d / adaptive_max_pool2d (values and int64 indices h * W + w).

max_unpool is numpy code, in the input's dtype (float64 runs the same Function). adaptive max pooling of float32
runs forgegrad._C.pool's kernel (cpp/kernels/per_isa/adaptive_pool.cpp, its backward max_pool2d's scatter); of
float64 the numpy code here, which vectorises over the batch and channels and loops over the output windows in
Python (one slice per window, a reshape when the sizes divide). Both are exact (a copy, a max), so their results
are identical at any thread count. Samples are in _pool_samples.py, the ONNX mappings (MaxUnpool; MaxPool or
ArgMax per window for the indices) in _pool_onnx.py.
"""
from __future__ import annotations

import numpy as np

from .._args import pair, single
from ..autograd import Function, no_grad
from ..devices import MetaArray
from ..kernels import pool as _pool
from ..kernels._checks import check_ndim
from . import _pool_onnx as PO
from . import _pool_samples as PS
from . import conv3d_samples as CS3
from ._op_rules import with_args
from ._window3d import first_max as _first_max
from .registry import register_op


def _sizes(value, name, owner, nd, minimum):
    if nd == 3:
        from ._window3d import sizes
        return sizes(value, 3, name, owner, minimum)
    return (single(value, name, owner, minimum),) if nd == 1 else pair(value, name, owner, minimum)


def unpool_geometry(x_shape, kernel_size, stride=None, padding=0, output_size=None, nd=2, owner="max_unpool2d"):
    """(kernel, stride, padding, output spatial size) of max_unpool, torch's rules: the default size is
    (in - 1) * stride - 2 * padding + kernel; an output_size (the spatial sizes, or with N and C in front) must lie
    strictly within stride of it."""
    k = _sizes(kernel_size, "kernel_size", owner, nd, 1)
    s = k if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0) else \
        _sizes(stride, "stride", owner, nd, 1)
    p = _sizes(padding, "padding", owner, nd, 0)
    spatial = tuple(x_shape[2:])
    default = tuple((n - 1) * s_ - 2 * p_ + k_ for n, s_, p_, k_ in zip(spatial, s, p, k))
    if output_size is None:
        out = default
    else:
        size = (output_size,) if isinstance(output_size, (int, np.integer)) else tuple(output_size)
        if len(size) == nd + 2:
            size = size[2:]
        if len(size) != nd or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in size):
            raise ValueError(f"{owner}: output_size must be {nd} ints (or {nd + 2} with N and C), got {output_size!r}")
        for d, (v, n, s_) in enumerate(zip(size, default, s)):
            if not n - s_ < v < n + s_:
                raise ValueError(f"{owner}: invalid output_size {output_size!r} (dim {d} must be between "
                                 f"{n - s_} and {n + s_}, exclusive)")
        out = tuple(int(v) for v in size)
    if min(out) < 1:
        raise ValueError(f"{owner}: the output size {out} is empty (kernel_size {k}, stride {s}, padding {p})")
    return k, s, p, out


def _unpool_checks(x, indices, owner, nd):
    check_ndim(x, "input", nd + 2)
    if not hasattr(indices, "dtype") or indices.dtype != np.int64:
        raise TypeError(f"{owner}: indices must be an int64 tensor (max pooling's indices), got "
                        f"{getattr(indices, 'dtype', type(indices).__name__)}")
    if tuple(indices.shape) != tuple(x.shape):
        raise ValueError(f"{owner}: indices must have the input's shape {tuple(x.shape)}, got {tuple(indices.shape)}")


def max_unpool_function(nd: int) -> type:
    owner = f"max_unpool{nd}d"

    def forward(ctx, x, indices, kernel_size, stride=None, padding=0, output_size=None):
        _unpool_checks(x, indices, owner, nd)
        _, _, _, out = unpool_geometry(x.shape, kernel_size, stride, padding, output_size, nd, owner)
        area = int(np.prod(out))
        N, C = x.shape[:2]
        per = int(np.prod(x.shape[2:]))  # not -1: N may be 0
        flat = indices.reshape(N * C, per)
        if flat.size and (flat.min() < 0 or flat.max() >= area):
            raise ValueError(f"{owner}: indices must lie in [0, {area}) (the output plane {out}), found "
                             f"{int(flat.min())}..{int(flat.max())}")
        rows = np.arange(N * C)[:, None]
        y = np.zeros((N * C, area), x.dtype)
        y[rows, flat] = x.reshape(N * C, per)  # a repeated index (overlapping windows) holds the same maximum
        ctx.save_for_backward(flat)
        ctx.shapes = (x.shape, (N, C) + out)
        return y.reshape((N, C) + out)

    def backward(ctx, g):
        (flat,) = ctx.saved_tensors
        in_shape, out_shape = ctx.shapes
        rows = np.arange(flat.shape[0])[:, None]
        g2 = g.reshape(flat.shape[0], int(np.prod(out_shape[2:])))
        return np.ascontiguousarray(g2[rows, flat].reshape(in_shape)), None

    return type(f"MaxUnpool{nd}dFunction", (Function,),
                {"forward": staticmethod(forward), "backward": staticmethod(backward), "__module__": __name__,
                 "__doc__": f"{owner}: each value written at its index of a zero (N, C, *output) plane."})


def _max_unpool_meta(nd):
    def meta(x, indices, kernel_size, stride=None, padding=0, output_size=None):
        owner = f"max_unpool{nd}d"
        _unpool_checks(x, indices, owner, nd)
        out = unpool_geometry(x.shape, kernel_size, stride, padding, output_size, nd, owner)[3]
        return MetaArray(tuple(x.shape[:2]) + out, x.dtype)
    return meta


def _unpool_flops(out, x, *args, **kwargs):
    """A copy: no arithmetic."""
    return 0


def _max_unpool_rule(ctx, args, kwargs, g):
    """The gradient gathers g at the indices (a getitem, whose own rule scatters)."""
    x, indices = args[0], args[1]
    N, C = x.shape[:2]
    idx = indices._data.reshape(N, C, -1)
    key = (np.arange(N)[:, None, None], np.arange(C)[None, :, None], idx)
    return g.reshape(N, C, -1)[key].reshape(x.shape), None


MaxUnpool2dFunction = register_op(
    "max_unpool2d", meta=_max_unpool_meta(2), flops=with_args(_unpool_flops), samples=PS.max_unpool2d_samples,
    torch=PS.max_unpool2d_torch, bad_inputs=PS.max_unpool2d_bad_inputs, onnx=PO.map_max_unpool(2),
    differentiable_backward=_max_unpool_rule)(max_unpool_function(2))
MaxUnpool1dFunction = register_op(
    "max_unpool1d", meta=_max_unpool_meta(1), flops=with_args(_unpool_flops), samples=PS.max_unpool1d_samples,
    torch=PS.max_unpool1d_torch, bad_inputs=PS.max_unpool1d_bad_inputs, onnx=PO.map_max_unpool(1),
    differentiable_backward=_max_unpool_rule)(max_unpool_function(1))


# ---- adaptive max ------------------------------------------------------------------------------------------
def _bins(n, o):
    return [((i * n) // o, -(-((i + 1) * n) // o)) for i in range(o)]


def adaptive_max_pool2d_arrays(x, out_hw):
    """(values, int64 indices h * W + w) of adaptive max pooling of an (N, C, H, W) array to out_hw."""
    N, C, H, W = x.shape
    oh, ow = out_hw
    if H % oh == 0 and W % ow == 0:  # equal windows: one reshape
        kh, kw = H // oh, W // ow
        win = x.reshape(N, C, oh, kh, ow, kw).transpose(0, 1, 2, 4, 3, 5).reshape(N, C, oh, ow, kh * kw)
        a = _first_max(win)
        y = np.take_along_axis(win, a[..., None], -1)[..., 0]
        rows = np.arange(oh)[:, None] * kh + a // kw
        cols = np.arange(ow)[None, :] * kw + a % kw
        return np.ascontiguousarray(y), (rows * W + cols).astype(np.int64)
    y = np.empty((N, C, oh, ow), x.dtype)
    idx = np.empty((N, C, oh, ow), np.int64)
    for i, (h0, h1) in enumerate(_bins(H, oh)):
        for j, (w0, w1) in enumerate(_bins(W, ow)):
            win = x[:, :, h0:h1, w0:w1].reshape(N, C, -1)
            a = _first_max(win)
            y[:, :, i, j] = np.take_along_axis(win, a[..., None], -1)[..., 0]
            idx[:, :, i, j] = (h0 + a // (w1 - w0)) * W + w0 + a % (w1 - w0)
    return y, idx


def _adaptive_hw(output_size, hw, owner):
    from ..kernels.geometry import adaptive_output_size
    return adaptive_output_size(output_size, hw, owner)


def _adaptive_out(x, output_size, nd):
    """The (N, C, H, W) view of x and the 2-d output size of adaptive_max_pool{nd}d."""
    owner = f"adaptive_max_pool{nd}d"
    check_ndim(x, "input", nd + 2)
    if min(x.shape[1:]) < 1:
        raise ValueError(f"{owner}: input must have nonzero channels and spatial sizes, got shape {tuple(x.shape)}")
    if nd == 1:
        from .pool1d import adaptive_length
        return x.reshape(x.shape[:2] + (1, x.shape[2])), (1, adaptive_length(output_size, x.shape[2], owner))
    return x, _adaptive_hw(output_size, x.shape[2:], owner)


def adaptive_max_function(nd: int) -> type:
    def forward(ctx, x, output_size=1):
        x4, out_hw = _adaptive_out(x, output_size, nd)
        if x4.dtype == np.float32:  # the C++ kernel (forgegrad.kernels.pool); float64 stays numpy
            y, idx = _pool.adaptive_max_pool2d_forward(x4, out_hw, f"adaptive_max_pool{nd}d")
        else:
            y, idx = adaptive_max_pool2d_arrays(x4, out_hw)
        if nd == 1:
            y, idx = y[:, :, 0, :], idx[:, :, 0, :]
        ctx.save_for_backward(idx)
        ctx.in_shape = x.shape
        return np.ascontiguousarray(y), np.ascontiguousarray(idx)

    def backward(ctx, g, g_idx=None):
        (idx,) = ctx.saved_tensors
        N, C = ctx.in_shape[:2]
        if g.dtype == np.float32:
            shape4 = ctx.in_shape if nd == 2 else tuple(ctx.in_shape[:2]) + (1, ctx.in_shape[2])
            idx4 = idx if nd == 2 else idx[:, :, None, :]
            g4 = g if nd == 2 else g[:, :, None, :]
            return _pool.adaptive_max_pool2d_backward(g4, idx4, shape4).reshape(ctx.in_shape)
        gx = np.zeros((N * C, int(np.prod(ctx.in_shape[2:]))), g.dtype)
        # overlapping windows can share a maximum: add (np.add.at adds in order: the same bits every run)
        np.add.at(gx, (np.arange(N * C)[:, None], idx.reshape(N * C, -1)), g.reshape(N * C, -1))
        return gx.reshape(ctx.in_shape)

    return type(f"AdaptiveMaxPool{nd}dFunction", (Function,),
                {"forward": staticmethod(forward), "backward": staticmethod(backward), "__module__": __name__,
                 "non_differentiable_outputs": (1,),
                 "__doc__": f"adaptive_max_pool{nd}d: (values, int64 flat per-plane indices), numpy."})


def _adaptive_max_meta(nd):
    def meta(x, output_size=1):
        _, out_hw = _adaptive_out(x, output_size, nd)
        shape = tuple(x.shape[:2]) + (out_hw[1:] if nd == 1 else out_hw)
        return MetaArray(shape, x.dtype), MetaArray(shape, np.int64)
    return meta


def _adaptive_max_flops(out, x, output_size=1):
    """One compare per element of each output's window (the windows overlap by at most one element)."""
    return x.size + out[0].size


def _scatter_rule(name):
    """The gradient of a max pool: g scattered to each window's maximum (as max_pool2d's rule)."""
    def rule_fn(ctx, args, kwargs, g, _):
        from ._double_backward import _scatter
        from .registry import _OPS
        x = args[0]
        with no_grad():
            _, idx = _OPS[name](x.detach(), *args[1:], **kwargs)
        N, C = x.shape[:2]
        key = (np.arange(N)[:, None, None], np.arange(C)[None, :, None], idx._data.reshape(N, C, -1))
        return _scatter(g.reshape(N, C, -1), key, (N, C, int(np.prod(x.shape[2:])))).reshape(x.shape)
    return rule_fn


AdaptiveMaxPool2dFunction = register_op(
    "adaptive_max_pool2d", meta=_adaptive_max_meta(2), flops=with_args(_adaptive_max_flops),
    samples=PS.adaptive_max_pool2d_samples, torch=PS.adaptive_max_pool2d_torch,
    bad_inputs=PS.adaptive_max_pool2d_bad_inputs, onnx=PO.map_adaptive_max_pool2d,
    differentiable_backward=_scatter_rule("adaptive_max_pool2d"))(adaptive_max_function(2))
AdaptiveMaxPool1dFunction = register_op(
    "adaptive_max_pool1d", meta=_adaptive_max_meta(1), flops=with_args(_adaptive_max_flops),
    samples=PS.adaptive_pool1d_samples, torch=PS.adaptive_max_pool1d_torch,
    bad_inputs=PS.adaptive_pool1d_bad_inputs, onnx=PO.map_adaptive_max_pool1d,
    differentiable_backward=_scatter_rule("adaptive_max_pool1d"))(adaptive_max_function(1))

def max_unpool3d(input, indices, kernel_size, stride=None, padding=0, output_size=None):
    """Each value of input written at its flat index d * H * W + h * W + w (max_pool3d's) of a zero volume."""
    from ..nn.functional_pool import _unpool
    return _unpool(3, input, indices, kernel_size, stride, padding, output_size)


MaxUnpool3dFunction = register_op(
    "max_unpool3d", meta=_max_unpool_meta(3), flops=with_args(_unpool_flops), samples=CS3.max_unpool3d_samples,
    torch=CS3.max_unpool3d_torch, bad_inputs=CS3.max_unpool3d_bad_inputs, onnx=PO.map_max_unpool(3),
    differentiable_backward=_max_unpool_rule, functional=max_unpool3d)(max_unpool_function(3))

for _fn in (MaxUnpool2dFunction, MaxUnpool1dFunction, MaxUnpool3dFunction, AdaptiveMaxPool2dFunction,
            AdaptiveMaxPool1dFunction):
    _fn.op.float64 = _fn  # numpy in the input's dtype
