"""Convolution and pooling geometry: padding forms, output shapes and the argument checks.

Written once, in C++ (``_C.conv.resolve_padding`` / ``geometry`` / ``weight_shape`` in
cpp/bindings/bind_conv.cpp and ``_C.pool.output_shape`` in bind_pool.cpp), next to the kernels that
rely on it; the kernels' wrappers, the layers and the ONNX exporter all ask these functions instead
of recomputing. This module only turns Python arguments into the ints and pairs the bindings take
(TypeError naming the argument) and passes ``owner``, the class or function named in the errors.

Padding forms for convolution: an int, a pair (ph, pw), (top, bottom, left, right), ``"valid"``, or
``"same"`` (stride 1, as torch: total ``dilation * (kernel - 1)``, the odd pixel on the
bottom/right); ``keras=True`` takes Keras' ``"valid"`` / ``"same"`` (any case; ``"same"`` for any
stride, from the input size).
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

from .. import _C
from .._args import integer, is_int, pair, single
from .._validate import check_bool

__all__ = ["Conv2dGeometry", "conv1d_as_2d", "conv2d_geometry", "conv2d_output_shape", "conv2d_padding",
           "conv2d_weight_shape", "Pool2dGeometry", "pool2d_geometry", "pool2d_output_shape", "adaptive_output_size"]

Quad = Tuple[int, int, int, int]


class Conv2dGeometry(NamedTuple):
    stride: Tuple[int, int]
    padding: Quad  # (top, bottom, left, right)
    dilation: Tuple[int, int]
    groups: int
    output_shape: Quad  # (N, OC, OH, OW)


def _check_owner(owner, fn):
    """owner names the op in the messages; the functions that hand it to _C get pybind11's TypeError for a non-str,
    the others this one."""
    if not isinstance(owner, str):
        raise TypeError(f"{fn}: owner must be a str (the op's name for the messages), got {type(owner).__name__}")


def conv1d_as_2d(stride=1, padding=0, dilation=1, owner: str = "conv1d"):
    """A 1-D convolution's (stride, padding, dilation) as conv2d's on a height of 1 (how conv1d runs and
    exports): the sizes ints or tuples of one int, padding also "same" or "valid"."""
    _check_owner(owner, "conv1d_as_2d")
    if isinstance(padding, str) and padding not in ("same", "valid"):  # was passed on as is, any string
        raise ValueError(f"{owner}: padding must be an int, a 1-tuple, 'same' or 'valid', got {padding!r}")
    pad = padding if isinstance(padding, str) else (0, single(padding, "padding", owner))
    return (1, single(stride, "stride", owner)), pad, (1, single(dilation, "dilation", owner))


def conv2d_geometry(input_shape, weight_shape, stride=1, padding=0, dilation=1, groups=1,
                    owner: str = "conv2d") -> Conv2dGeometry:
    """Validated geometry of ``conv2d(input, weight)``; ValueError / TypeError name the argument."""
    stride = pair(stride, "stride", owner)
    dilation = pair(dilation, "dilation", owner)
    groups = integer(groups, "groups", owner)
    pads, shape = _C.conv.geometry(tuple(input_shape), tuple(weight_shape), stride, padding,
                                   dilation, groups, owner)
    return Conv2dGeometry(stride, tuple(pads), dilation, groups, tuple(shape))


def conv2d_output_shape(input_shape, weight_shape, stride=1, padding=0, dilation=1, groups=1,
                        owner: str = "conv2d") -> Quad:
    """(N, OC, OH, OW) of conv2d (raises ValueError for a bad configuration)."""
    return conv2d_geometry(input_shape, weight_shape, stride, padding, dilation, groups, owner).output_shape


def conv2d_padding(padding, kernel_size, stride=1, dilation=1, input_size=None, keras: bool = False,
                   owner: str = "conv2d") -> Optional[Quad]:
    """padding resolved to (top, bottom, left, right). With ``keras=True``, ``"same"`` needs
    ``input_size`` (H, W); without it the call only validates and returns None."""
    kernel_size = pair(kernel_size, "kernel_size", owner)
    stride = pair(stride, "stride", owner)
    dilation = pair(dilation, "dilation", owner)
    if input_size is not None:
        input_size = pair(input_size, "input_size", owner)
    return _C.conv.resolve_padding(padding, kernel_size, stride, dilation, input_size,
                                   check_bool(keras, f"{owner}: keras"), owner)


def conv2d_weight_shape(in_channels, out_channels, kernel_size, groups=1, owner: str = "Conv2d") -> Quad:
    """(out_channels, in_channels / groups, kH, kW), checking the channels against groups."""
    return tuple(_C.conv.weight_shape(integer(in_channels, "in_channels", owner),
                                      integer(out_channels, "out_channels", owner),
                                      pair(kernel_size, "kernel_size", owner), integer(groups, "groups", owner),
                                      owner))


class Pool2dGeometry(NamedTuple):
    kernel_size: Tuple[int, int]
    stride: Tuple[int, int]
    padding: Tuple[int, int]
    dilation: Tuple[int, int]
    output_shape: Quad  # (N, C, OH, OW)


def pool2d_geometry(input_shape, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                    owner: str = "pool2d") -> Pool2dGeometry:
    """Validated geometry of max / avg pooling, torch's rules (stride None or () means kernel_size)."""
    kernel_size = pair(kernel_size, "kernel_size", owner)
    stride = kernel_size if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0) else \
        pair(stride, "stride", owner)
    padding = pair(padding, "padding", owner)
    dilation = pair(dilation, "dilation", owner)
    ceil_mode = check_bool(ceil_mode, f"{owner}: ceil_mode")  # not truthiness: 'False' is no bool
    shape = _C.pool.output_shape(tuple(input_shape), kernel_size, stride, padding, dilation, ceil_mode, owner)
    return Pool2dGeometry(kernel_size, stride, padding, dilation, tuple(shape))


def pool2d_output_shape(input_shape, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                        owner: str = "pool2d") -> Quad:
    """(N, C, OH, OW) of max / avg pooling."""
    return pool2d_geometry(input_shape, kernel_size, stride, padding, dilation, ceil_mode, owner).output_shape


def adaptive_output_size(output_size, input_hw, owner: str = "adaptive_avg_pool2d") -> Tuple[int, int]:
    """output_size of adaptive pooling (an int or a pair; None keeps the input's size) -> (OH, OW)."""
    if (type(output_size) is int and output_size >= 1 and type(input_hw) is tuple and len(input_hw) == 2
            and type(input_hw[0]) is int and type(input_hw[1]) is int and type(owner) is str):
        return output_size, output_size  # the common call (a global pool: 1), which the checks below pass
    _check_owner(owner, "adaptive_output_size")
    if is_int(output_size):
        output_size = (output_size, output_size)
    if not isinstance(output_size, (tuple, list)) or len(output_size) != 2:
        raise TypeError(f"{owner}: output_size must be an int or a pair (None keeps the input size), "
                        f"got {output_size!r}")
    if isinstance(input_hw, (str, bytes)) or len(input_hw) != 2:
        raise TypeError(f"{owner}: input_hw must be the input's (H, W), got {input_hw!r}")
    input_hw = (integer(input_hw[0], "input_hw", owner), integer(input_hw[1], "input_hw", owner))
    out = tuple(input_hw[i] if v is None else v for i, v in enumerate(output_size))
    if not all(is_int(v) and v >= 1 for v in out):
        raise ValueError(f"{owner}: output_size entries must be positive ints, got {output_size!r}")
    return int(out[0]), int(out[1])
