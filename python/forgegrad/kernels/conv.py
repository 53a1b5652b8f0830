"""2-D convolution on numpy float32 arrays (NCHW), forward and backward, PyTorch semantics.

``conv2d_forward(x, weight, bias, stride, padding, dilation, groups)`` matches
``torch.nn.functional.conv2d``; ``conv2d_backward`` returns the gradients of its inputs.
padding is an int, a pair, ``"same"`` / ``"valid"``, or (an extension) a 4-tuple (top, bottom,
left, right) (``"same"`` needs stride 1 and, for an even
dilated kernel extent, pads one more on the bottom/right, as torch does).
"""
from __future__ import annotations

import numpy as np

from .. import _C
from ._checks import as_f32, check_ndim

__all__ = ["conv2d_forward", "conv2d_backward", "conv2d_output_shape", "conv2d_padding"]


def _pair(v, name: str):
    """An int or a pair of ints -> (a, b); raise TypeError/ValueError naming the argument."""
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return int(v), int(v)
    if isinstance(v, (tuple, list)) and len(v) == 2 and all(
            isinstance(e, (int, np.integer)) and not isinstance(e, bool) for e in v):
        return int(v[0]), int(v[1])
    if isinstance(v, (tuple, list)) and len(v) == 1 and isinstance(v[0], (int, np.integer)):
        return int(v[0]), int(v[0])
    raise TypeError(f"{name} must be an int or a pair of ints, got {v!r}")


def _positive_pair(v, name: str):
    p = _pair(v, name)
    if p[0] < 1 or p[1] < 1:
        raise ValueError(f"{name} must be >= 1, got {v!r}")
    return p


def conv2d_padding(padding, kernel_size, stride, dilation):
    """Resolve padding to (top, bottom, left, right)."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding == "same":
            if tuple(stride) != (1, 1):
                raise ValueError("padding='same' is not supported for strided convolutions (stride must be 1)")
            out = []
            for k, d in zip(kernel_size, dilation):
                total = d * (k - 1)
                out += [total // 2, total - total // 2]
            return tuple(out)
        raise ValueError(f"padding must be an int, a pair, 'same' or 'valid', got {padding!r}")
    if isinstance(padding, (tuple, list)) and len(padding) == 4:  # (top, bottom, left, right)
        if not all(isinstance(e, (int, np.integer)) and not isinstance(e, bool) for e in padding):
            raise TypeError(f"padding must hold ints, got {padding!r}")
        if min(padding) < 0:
            raise ValueError(f"padding must be >= 0, got {padding!r}")
        return tuple(int(e) for e in padding)
    ph, pw = _pair(padding, "padding")
    if ph < 0 or pw < 0:
        raise ValueError(f"padding must be >= 0, got {padding!r}")
    return (ph, ph, pw, pw)


def _geometry(x_shape, w_shape, stride, padding, dilation, groups):
    """Validate arguments; return (stride, pads, dilation, groups, output shape)."""
    stride = _positive_pair(stride, "stride")
    dilation = _positive_pair(dilation, "dilation")
    if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)):
        raise TypeError(f"groups must be an int, got {groups!r}")
    groups = int(groups)
    if groups < 1:
        raise ValueError(f"groups must be >= 1, got {groups}")
    n, c, h, w = x_shape
    oc, cg, kh, kw = w_shape
    if c < 1 or h < 1 or w < 1:
        raise ValueError(f"input must have nonzero channels and spatial sizes, got shape {tuple(x_shape)}")
    if oc < 1 or kh < 1 or kw < 1:
        raise ValueError(f"weight must have nonzero sizes, got shape {tuple(w_shape)}")
    if c % groups:
        raise ValueError(f"in_channels ({c}) must be divisible by groups ({groups})")
    if oc % groups:
        raise ValueError(f"out_channels ({oc}) must be divisible by groups ({groups})")
    if cg != c // groups:
        raise ValueError(
            f"weight must have shape (out_channels, in_channels/groups, kH, kW) = {(oc, c // groups, kh, kw)} "
            f"for input of shape {tuple(x_shape)} and groups={groups}, got {tuple(w_shape)}")
    pads = conv2d_padding(padding, (kh, kw), stride, dilation)
    hp, wp = h + pads[0] + pads[1], w + pads[2] + pads[3]
    eh, ew = dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1
    if eh > hp or ew > wp:
        raise ValueError(
            f"kernel size ({kh}, {kw}) with dilation {dilation} spans ({eh}, {ew}), larger than the "
            f"padded input ({hp}, {wp})")
    oh, ow = (hp - eh) // stride[0] + 1, (wp - ew) // stride[1] + 1
    return stride, pads, dilation, groups, (n, oc, oh, ow)


def conv2d_output_shape(input_shape, weight_shape, stride=1, padding=0, dilation=1, groups=1):
    """Output shape of conv2d (raises ValueError for a bad configuration)."""
    return _geometry(tuple(input_shape), tuple(weight_shape), stride, padding, dilation, groups)[4]


def _check_inputs(x, weight):
    x = as_f32(x, "input")
    weight = as_f32(weight, "weight")
    check_ndim(x, "input", 4)
    check_ndim(weight, "weight", 4)
    return np.ascontiguousarray(x), np.ascontiguousarray(weight)


def conv2d_forward(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1) -> np.ndarray:
    """``y = conv2d(x, weight) + bias`` like ``torch.nn.functional.conv2d``.

    x is (N, C, H, W), weight (OC, C/groups, kH, kW), bias (OC,) or None -> y (N, OC, OH, OW).
    """
    x, weight = _check_inputs(x, weight)
    stride, pads, dilation, groups, yshape = _geometry(x.shape, weight.shape, stride, padding, dilation, groups)
    if bias is not None:
        bias = as_f32(bias, "bias")
        if bias.shape != (weight.shape[0],):
            raise ValueError(f"bias must have shape ({weight.shape[0]},), got {bias.shape}")
        bias = np.ascontiguousarray(bias)
    y = np.empty(yshape, np.float32)
    _C.conv.conv2d_forward(x, weight, bias, y, stride, pads, dilation, groups)
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
    stride, pads, dilation, groups, yshape = _geometry(x.shape, weight.shape, stride, padding, dilation, groups)
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
