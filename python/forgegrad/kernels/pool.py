"""2-D pooling on numpy float32 arrays (NCHW), forward and backward, PyTorch semantics.

``max_pool2d_forward`` returns ``(y, indices)`` (int64 flat positions ``h * W + w`` inside each
input plane, as torch's ``return_indices=True``); ``max_pool2d_backward`` scatters through them.
The geometry and its checks come from the C++ side (forgegrad.kernels.geometry).
"""
from __future__ import annotations

import numpy as np

from .. import _C
from .._args import is_int
from .._validate import check_bool
from ._checks import as_f32, check_ndim
from .geometry import adaptive_output_size, pool2d_geometry, pool2d_output_shape
from .reduce_rows import fill_rows, sum_rows


def _shape(input_shape) -> tuple:
    """input_shape as a tuple of ints: int() would truncate 2.5 and a str is no shape."""
    if isinstance(input_shape, (str, bytes)) or not hasattr(input_shape, "__iter__"):
        raise TypeError(f"input_shape must be a tuple of ints, got {input_shape!r}")
    if not all(is_int(v) for v in input_shape):
        raise TypeError(f"input_shape must be a tuple of ints, got {tuple(input_shape)!r}")
    return tuple(int(v) for v in input_shape)

__all__ = [
    "max_pool2d_forward", "max_pool2d_backward", "avg_pool2d_forward", "avg_pool2d_backward",
    "adaptive_avg_pool2d_forward", "adaptive_avg_pool2d_backward", "adaptive_max_pool2d_forward",
    "adaptive_max_pool2d_backward", "pool2d_output_shape",
    "avg_pool2d_is_global", "global_avg_pool2d_forward", "global_avg_pool2d_backward",
]


def _input(x, name="input"):
    x = as_f32(x, name)
    check_ndim(x, name, 4)
    if x.shape[1] < 1 or x.shape[2] < 1 or x.shape[3] < 1:
        raise ValueError(f"{name} must have nonzero channels and spatial sizes, got shape {x.shape}")
    return np.ascontiguousarray(x)


def max_pool2d_forward(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """``(y, indices)`` of ``torch.nn.functional.max_pool2d(..., return_indices=True)``.

    stride defaults to kernel_size. x is (N, C, H, W) -> y, indices (N, C, OH, OW).
    """
    x, ceil_mode = _input(x), check_bool(ceil_mode, "ceil_mode")
    k, s, p, d, shape = pool2d_geometry(x.shape, kernel_size, stride, padding, dilation, ceil_mode, "max_pool2d")
    y = np.empty(shape, np.float32)
    idx = np.empty(shape, np.int64)
    _C.pool.max_pool2d_forward(x, y, idx, k, s, p, d, ceil_mode)
    return y, idx


def max_pool2d_values(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """The ``y`` of max_pool2d_forward without the indices (inference: nothing will scatter a gradient)."""
    x, ceil_mode = _input(x), check_bool(ceil_mode, "ceil_mode")
    k, s, p, d, shape = pool2d_geometry(x.shape, kernel_size, stride, padding, dilation, ceil_mode, "max_pool2d")
    y = np.empty(shape, np.float32)
    _C.pool.max_pool2d_forward(x, y, None, k, s, p, d, ceil_mode)
    return y


def max_pool2d_backward(grad_y, indices, input_shape):
    """grad_input (input_shape) from grad_y and the indices max_pool2d_forward returned."""
    grad_y = as_f32(grad_y, "grad_output")
    check_ndim(grad_y, "grad_output", 4)
    if not isinstance(indices, np.ndarray) or indices.dtype != np.int64:
        raise TypeError("indices must be the int64 array returned by max_pool2d_forward")
    if indices.shape != grad_y.shape:
        raise ValueError(f"indices must have the shape of grad_output {grad_y.shape}, got {indices.shape}")
    input_shape = _shape(input_shape)
    if len(input_shape) != 4 or input_shape[:2] != grad_y.shape[:2] or min(input_shape[1:]) < 1:
        raise ValueError(f"input_shape {input_shape} does not match grad_output of shape {grad_y.shape}")
    gx = np.empty(input_shape, np.float32)
    _C.pool.max_pool2d_backward(np.ascontiguousarray(grad_y), np.require(indices, requirements="CA"), gx)
    return gx


def _divisor(divisor_override):
    if divisor_override is None:
        return 0
    if not is_int(divisor_override) or divisor_override < 1:
        raise ValueError(f"divisor_override must be a positive int or None, got {divisor_override!r}")
    return int(divisor_override)


def avg_pool2d_forward(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                       divisor_override=None):
    """``torch.nn.functional.avg_pool2d`` (count_include_pad=True by default, as torch)."""
    x, ceil_mode = _input(x), check_bool(ceil_mode, "ceil_mode")
    count_include_pad = check_bool(count_include_pad, "count_include_pad")
    k, s, p, _, shape = pool2d_geometry(x.shape, kernel_size, stride, padding, 1, ceil_mode, "avg_pool2d")
    y = np.empty(shape, np.float32)
    _C.pool.avg_pool2d_forward(x, y, k, s, p, ceil_mode, count_include_pad, _divisor(divisor_override))
    return y


def avg_pool2d_backward(grad_y, input_shape, kernel_size, stride=None, padding=0, ceil_mode=False,
                        count_include_pad=True, divisor_override=None):
    """grad_input of avg_pool2d with the same arguments."""
    grad_y = as_f32(grad_y, "grad_output")
    check_ndim(grad_y, "grad_output", 4)
    input_shape = _shape(input_shape)
    if len(input_shape) != 4 or min(input_shape[1:]) < 1:
        raise ValueError(f"input_shape must be (N, C, H, W) with nonzero C, H, W, got {input_shape}")
    ceil_mode = check_bool(ceil_mode, "ceil_mode")
    count_include_pad = check_bool(count_include_pad, "count_include_pad")
    k, s, p, _, shape = pool2d_geometry(input_shape, kernel_size, stride, padding, 1, ceil_mode, "avg_pool2d")
    if grad_y.shape != shape:
        raise ValueError(f"grad_output must have shape {shape}, got {grad_y.shape}")
    gx = np.empty(input_shape, np.float32)
    _C.pool.avg_pool2d_backward(np.ascontiguousarray(grad_y), gx, k, s, p, ceil_mode,
                                count_include_pad, _divisor(divisor_override))
    return gx


def adaptive_avg_pool2d_forward(x, output_size):
    """``torch.nn.functional.adaptive_avg_pool2d``; output_size is an int or (oh, ow)."""
    x = _input(x)
    oh, ow = adaptive_output_size(output_size, x.shape[2:])
    y = np.empty((x.shape[0], x.shape[1], oh, ow), np.float32)
    _C.pool.adaptive_avg_pool2d_forward(x, y)
    return y


def adaptive_avg_pool2d_backward(grad_y, input_shape):
    grad_y = as_f32(grad_y, "grad_output")
    check_ndim(grad_y, "grad_output", 4)
    input_shape = _shape(input_shape)
    if len(input_shape) != 4 or input_shape[:2] != grad_y.shape[:2] or min(input_shape[1:]) < 1:
        raise ValueError(f"input_shape {input_shape} does not match grad_output of shape {grad_y.shape}")
    gx = np.empty(input_shape, np.float32)
    _C.pool.adaptive_avg_pool2d_backward(np.ascontiguousarray(grad_y), gx)
    return gx


def adaptive_max_pool2d_forward(x, output_size, owner="adaptive_max_pool2d"):
    """``(y, indices)`` of ``torch.nn.functional.adaptive_max_pool2d(..., return_indices=True)``: torch's windows,
    int64 indices ``h * W + w`` (the first maximum of a window in row-major order, or its last NaN)."""
    x = _input(x)
    oh, ow = adaptive_output_size(output_size, x.shape[2:], owner)
    y = np.empty((x.shape[0], x.shape[1], oh, ow), np.float32)
    idx = np.empty(y.shape, np.int64)
    _C.pool.adaptive_max_pool2d_forward(x, y, idx)
    return y, idx


def adaptive_max_pool2d_backward(grad_y, indices, input_shape):
    """grad_input of adaptive max pooling: grad_y added at its indices (in output order, so windows that share a
    maximum add in the same order every run): max_pool2d_backward's scatter."""
    return max_pool2d_backward(grad_y, indices, input_shape)


def avg_pool2d_is_global(input_shape, kernel_size, stride=None, padding=0, ceil_mode=False,
                         divisor_override=None):
    """True when avg_pool2d with these arguments averages each whole (H, W) plane into one output: a kernel of
    the plane's size, no padding, no divisor_override (global_avg_pool2d_forward computes it then)."""
    ceil_mode = check_bool(ceil_mode, "ceil_mode")
    k, _, p, _, shape = pool2d_geometry(input_shape, kernel_size, stride, padding, 1, ceil_mode, "avg_pool2d")
    return (divisor_override is None and tuple(p) == (0, 0) and tuple(k) == tuple(input_shape[2:])
            and tuple(shape[2:]) == (1, 1))


def global_avg_pool2d_forward(x):
    """(N, C, 1, 1): the mean of each (H, W) plane of x, summed in float64 (forgegrad.kernels.reduce_rows's
    order; adaptive_avg_pool2d_forward to 1 computes the same bits)."""
    x = _input(x)
    n, c, h, w = x.shape
    return sum_rows(x.reshape(n * c, h * w), mean=True).reshape(n, c, 1, 1)


def global_avg_pool2d_backward(grad_y, input_shape):
    """grad_input of global_avg_pool2d_forward: grad / (H * W) in every element of its plane."""
    grad_y = as_f32(grad_y, "grad_output")
    input_shape = _shape(input_shape)
    if len(input_shape) != 4 or min(input_shape[1:]) < 1 or grad_y.shape != input_shape[:2] + (1, 1):
        raise ValueError(f"grad_output {grad_y.shape} does not match input_shape {input_shape}")
    hw = input_shape[2] * input_shape[3]
    return fill_rows(grad_y, hw, hw).reshape(input_shape)
