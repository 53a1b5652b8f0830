"""Volumetric layers with torch.nn's names, arguments, parameter names and initialisation: Conv3d, ConvTranspose3d,
MaxPool3d, AvgPool3d, AdaptiveAvgPool3d, AdaptiveMaxPool3d, LPPool3d and MaxUnpool3d (ops/conv3d.py, ops/pool3d.py,
pool_lp.py, pool_index.py). Each takes batched (N, C, D, H, W) or unbatched (C, D, H, W) input, as torch's;
BatchNorm3d is in nn/normalization.py."""
from __future__ import annotations

from .. import devices
from ..ops import _window3d as W
from ..ops.conv3d import conv3d, conv_transpose3d
from ..ops.pool3d import adaptive_avg_pool3d, adaptive_max_pool3d, avg_pool3d, max_pool3d
from . import functional_pool as FP
from .conv import _ConvNd, _check_input
from .conv_transpose import _ConvTransposeNd
from .parameter import Parameter
from .pooling import AdaptiveAvgPool1d, LPPool1d, MaxUnpool1d, _Window

__all__ = ["Conv3d", "ConvTranspose3d", "MaxPool3d", "AvgPool3d", "AdaptiveAvgPool3d", "AdaptiveMaxPool3d",
           "LPPool3d", "MaxUnpool3d"]


def _triple(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v, v)


class Conv3d(_ConvNd):
    """3-D convolution over (N, C_in, D, H, W) (or unbatched (C_in, D, H, W)) -> (N, C_out, D_out, H_out, W_out).

    Args as torch.nn.Conv3d: in_channels, out_channels, kernel_size, stride=1, padding=0 (int, triple, "same" or
    "valid"), dilation=1, groups=1, bias=True, padding_mode="zeros" (or "reflect", "replicate", "circular": F.pad
    first, as torch). Parameters weight (out_channels, in_channels / groups, kD, kH, kW) and bias (out_channels,),
    initialised as torch's; torch state_dicts load unchanged.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, padding_mode="zeros"):
        super().__init__()
        cls = "Conv3d"
        self._channels(cls, in_channels, out_channels, groups, padding_mode)
        self.kernel_size = W.sizes(kernel_size, 3, "kernel_size", cls, 1)
        self.stride = W.sizes(stride, 3, "stride", cls, 1)
        self.dilation = W.sizes(dilation, 3, "dilation", cls, 1)
        for n, c in (("in_channels", self.in_channels), ("out_channels", self.out_channels)):
            if c % self.groups:
                raise ValueError(f"{cls}: {n} ({c}) must be divisible by groups ({self.groups})")
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"{cls}: padding must be an int, a tuple of 3 ints, 'same' or 'valid', got "
                                 f"{padding!r}")
            if padding == "same" and self.stride != (1, 1, 1):
                raise ValueError(f"{cls}: padding='same' is not supported for strided convolutions (stride must "
                                 f"be 1), got stride {self.stride}")
            self.padding = padding
        else:
            self.padding = W.sizes(padding, 3, "padding", cls, 0)
        self.weight = Parameter(devices.empty((self.out_channels, self.in_channels // self.groups)
                                              + self.kernel_size))
        if bias:
            self.bias = Parameter(devices.empty((self.out_channels,)))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def forward(self, input):
        _check_input(input, (4, 5), "Conv3d")
        if input.ndim == 4:  # unbatched, as torch
            return self.forward(input.unsqueeze(0)).squeeze(0)
        input, padding = self._padded(input)
        return conv3d(input, self.weight, self.bias, self.stride, padding, self.dilation, self.groups)


class ConvTranspose3d(_ConvTransposeNd):
    """Transposed 3-D convolution over (N, C_in, D, H, W) (or unbatched) -> (N, C_out, D_out, H_out, W_out),
    D_out = (D - 1) * stride - 2 * padding + dilation * (kD - 1) + output_padding + 1.

    Args as torch.nn.ConvTranspose3d (in_channels, out_channels, kernel_size, stride=1, padding=0, output_padding=0,
    groups=1, bias=True, dilation=1, padding_mode="zeros"); ``forward(input, output_size=None)``. Parameters weight
    (in_channels, out_channels / groups, kD, kH, kW) and bias (out_channels,), initialised as torch's."""

    _rank = 3
    _cls = "ConvTranspose3d"

    def _size(self, value, name, minimum):
        return W.sizes(value, 3, name, self._cls, minimum)

    def forward(self, input, output_size=None):
        self._check(input)
        return conv_transpose3d(input, self.weight, self.bias, self.stride, self.padding,
                                self._output_padding(input, output_size), self.groups, self.dilation)


class MaxPool3d(_Window):
    """torch.nn.MaxPool3d(kernel_size, stride=None, padding=0, dilation=1, return_indices=False, ceil_mode=False);
    with return_indices also the int64 flat index d * H * W + h * W + w of each maximum in its volume."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False, ceil_mode=False):
        super().__init__(kernel_size, stride, padding)
        self.dilation, self.return_indices, self.ceil_mode = dilation, return_indices, ceil_mode

    def forward(self, input):
        return max_pool3d(input, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode,
                          self.return_indices)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class AvgPool3d(_Window):
    """torch.nn.AvgPool3d(kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
    divisor_override=None)."""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                 divisor_override=None):
        super().__init__(kernel_size, stride, padding)
        self.ceil_mode, self.count_include_pad, self.divisor_override = ceil_mode, count_include_pad, divisor_override

    def forward(self, input):
        return avg_pool3d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode, self.count_include_pad,
                          self.divisor_override)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AdaptiveAvgPool3d(AdaptiveAvgPool1d):
    """torch.nn.AdaptiveAvgPool3d(output_size): an int or a triple (None entries keep the input's size)."""

    def forward(self, input):
        return adaptive_avg_pool3d(input, self.output_size)


class AdaptiveMaxPool3d(AdaptiveAvgPool1d):
    """torch.nn.AdaptiveMaxPool3d(output_size, return_indices=False)."""

    def __init__(self, output_size, return_indices=False):
        super().__init__(output_size)
        self.return_indices = return_indices

    def forward(self, input):
        return adaptive_max_pool3d(input, self.output_size, self.return_indices)


class LPPool3d(LPPool1d):
    """torch.nn.LPPool3d(norm_type, kernel_size, stride=None, ceil_mode=False)."""

    def forward(self, input):
        return FP.lp_pool3d(input, float(self.norm_type), self.kernel_size, self.stride, self.ceil_mode)


class MaxUnpool3d(MaxUnpool1d):
    """torch.nn.MaxUnpool3d(kernel_size, stride=None, padding=0): ``forward(input, indices, output_size=None)``
    writes each value at its flat index (MaxPool3d's) of a zero volume."""

    _sizes = staticmethod(_triple)

    def forward(self, input, indices, output_size=None):
        from ..ops.pool_index import max_unpool3d
        return max_unpool3d(input, indices, self.kernel_size, self.stride, self.padding, output_size)
