"""2-D convolution on numpy float32 arrays (NCHW), forward and backward, PyTorch semantics.

``conv2d_forward(x, weight, bias, stride, padding, dilation, groups)`` matches
``torch.nn.functional.conv2d``; ``conv2d_backward`` returns the gradients of its inputs.
padding is an int, a pair, ``"same"`` / ``"valid"``, or (an extension) a 4-tuple (top, bottom,
left, right) (``"same"`` needs stride 1 and, for an even
dilated kernel extent, pads one more on the bottom/right, as torch does). The geometry and its
checks come from the C++ side (forgegrad.kernels.geometry).
"""
from __future__ import annotations

import numpy as np

from .. import _C
from .._validate import check_bool
from ._checks import as_f32, check_ndim
from .geometry import conv2d_geometry, conv2d_output_shape, conv2d_padding

__all__ = ["conv2d_forward", "conv2d_backward", "conv2d_output_shape", "conv2d_padding"]


def _check_inputs(x, weight):
    x = as_f32(x, "input")
    weight = as_f32(weight, "weight")
    check_ndim(x, "input", 4)
    check_ndim(weight, "weight", 4)
    return np.ascontiguousarray(x), np.ascontiguousarray(weight)


def conv2d_forward(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, activation=-1,
                   alpha=0.0, max_pool2x2=False) -> np.ndarray:
    """``y = conv2d(x, weight) + bias`` like ``torch.nn.functional.conv2d``.

    x is (N, C, H, W), weight (OC, C/groups, kH, kW), bias (OC,) or None -> y (N, OC, OH, OW).
    activation: an activation code (``_C.activation.RELU``, ...; -1: none) applied to y as each block
    of it is written (alpha: leaky_relu's slope): the bits of the activation op run on y afterwards,
    without a second pass over y. max_pool2x2: return ``max_pool2d(y, 2)`` (N, OC, OH // 2, OW // 2)
    instead, each block pooled while in cache (y itself is never stored).
    """
    max_pool2x2 = check_bool(max_pool2x2, "conv2d: max_pool2x2")
    x, weight = _check_inputs(x, weight)
    stride, pads, dilation, groups, yshape = conv2d_geometry(x.shape, weight.shape, stride, padding, dilation, groups)
    if bias is not None:
        bias = as_f32(bias, "bias")
        if bias.shape != (weight.shape[0],):
            raise ValueError(f"bias must have shape ({weight.shape[0]},), got {bias.shape}")
        bias = np.ascontiguousarray(bias)
    if max_pool2x2:
        yshape = (yshape[0], yshape[1], yshape[2] // 2, yshape[3] // 2)
    y = np.empty(yshape, np.float32)
    _C.conv.conv2d_forward(x, weight, bias, y, stride, pads, dilation, groups, activation, alpha, max_pool2x2)
    return y


def conv2d_backward(x, weight, grad_y, stride=1, padding=0, dilation=1, groups=1,
                    need=(True, True, True)):
    """Gradients of conv2d: ``(grad_input, grad_weight, grad_bias)``.

    need = (input, weight, bias) flags; an entry not needed comes back as None.
    grad_y is (N, OC, OH, OW), the shape conv2d_forward returned.
    """
    x, weight = _check_inputs(x, weight)
    grad_y = as_f32(grad_y, "grad_output")
    check_ndim(grad_y, "grad_output", 4)
    stride, pads, dilation, groups, yshape = conv2d_geometry(x.shape, weight.shape, stride, padding, dilation, groups)
    if grad_y.shape != yshape:
        raise ValueError(f"grad_output must have shape {yshape}, got {grad_y.shape}")
    grad_y = np.ascontiguousarray(grad_y)
    need_x, need_w, need_b = (bool(v) for v in need)
    gx = gw = gb = None
    if need_x:
        gx = np.empty(x.shape, np.float32)
        _C.conv.conv2d_backward_input(grad_y, weight, gx, stride, pads, dilation, groups)
    if need_w or need_b:
        gw = np.empty(weight.shape, np.float32) if need_w else None
        gb = np.empty((weight.shape[0],), np.float32) if need_b else None
        _C.conv.conv2d_backward_weight(x, grad_y, gw, gb, list(weight.shape), stride, pads, dilation, groups)
    return gx, gw, gb
