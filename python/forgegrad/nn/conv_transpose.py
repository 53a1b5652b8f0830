"""Transposed convolution and the sliding-block layers with PyTorch's names, arguments, parameter names, layouts and
initialisation: ConvTranspose1d, ConvTranspose2d (ops/conv_transpose.py), Unfold and Fold (ops/fold.py)."""
from __future__ import annotations

from .. import devices
from .._args import pair, positive_int, single
from ..ops.conv_transpose import conv_transpose1d, conv_transpose2d, conv_transpose_output_padding
from ..ops.fold import fold, unfold
from ..tensor import Tensor
from . import init
from .module import Module
from .parameter import Parameter

__all__ = ["ConvTranspose1d", "ConvTranspose2d", "Unfold", "Fold"]


class _ConvTransposeNd(Module):
    """What ConvTranspose1d and ConvTranspose2d share: arguments, parameters (weight (in_channels,
    out_channels / groups, *kernel_size), bias (out_channels,)), torch's initialisation, output_size, repr."""

    _rank = 2
    _cls = "ConvTranspose2d"

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, output_padding=0, groups=1,
                 bias=True, dilation=1, padding_mode="zeros"):
        super().__init__()
        cls = self._cls
        self.in_channels = positive_int(in_channels, "in_channels", cls)
        self.out_channels = positive_int(out_channels, "out_channels", cls)
        self.groups = positive_int(groups, "groups", cls)
        if self.in_channels % self.groups:
            raise ValueError(f"{cls}: in_channels ({self.in_channels}) must be divisible by groups ({self.groups})")
        if self.out_channels % self.groups:
            raise ValueError(f"{cls}: out_channels ({self.out_channels}) must be divisible by groups ({self.groups})")
        if padding_mode != "zeros":
            raise ValueError(f"{cls}: padding_mode {padding_mode!r} is not supported: only 'zeros' (as torch's "
                             "ConvTranspose)")
        self.padding_mode = padding_mode
        size = self._size
        self.kernel_size = size(kernel_size, "kernel_size", 1)
        self.stride = size(stride, "stride", 1)
        self.padding = size(padding, "padding", 0)
        self.output_padding = size(output_padding, "output_padding", 0)
        self.dilation = size(dilation, "dilation", 1)
        self.transposed = True
        shape = (self.in_channels, self.out_channels // self.groups) + self.kernel_size
        self.weight = Parameter(devices.empty(shape))
        if bias:
            self.bias = Parameter(devices.empty((self.out_channels,)))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def _size(self, value, name, minimum):
        if self._rank == 1:
            return (single(value, name, self._cls, minimum=minimum),)
        return pair(value, name, self._cls, minimum=minimum)

    def reset_parameters(self) -> None:
        # torch's: kaiming_uniform(a=sqrt(5)) and U(+-1/sqrt(fan_in)), fan_in from the weight's dim 1 (out / groups)
        init.layer_default_(self.weight, self.bias)

    def _output_padding(self, input, output_size):
        if output_size is None:
            return self.output_padding
        spatial = tuple(input.shape[-self._rank:])
        return conv_transpose_output_padding(spatial, output_size, self.kernel_size, self.stride, self.padding,
                                             self.dilation, self._cls, batched=input.ndim == self._rank + 2)

    def _check(self, input):
        if not isinstance(input, Tensor):
            raise TypeError(f"{self._cls}: input must be a forgegrad.Tensor, got {type(input).__name__}")
        if input.ndim not in (self._rank + 1, self._rank + 2):
            raise ValueError(f"{self._cls}: expected {self._rank + 1}-D (unbatched) or {self._rank + 2}-D (batched) "
                             f"input, got input of shape {tuple(input.shape)}")

    def forward(self, input, output_size=None):
        self._check(input)
        fn = conv_transpose2d if self._rank == 2 else conv_transpose1d
        return fn(input, self.weight, self.bias, self.stride, self.padding, self._output_padding(input, output_size),
                  self.groups, self.dilation)

    def extra_repr(self) -> str:
        r = self._rank
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0,) * r:
            s += f", padding={self.padding}"
        if self.dilation != (1,) * r:
            s += f", dilation={self.dilation}"
        if self.output_padding != (0,) * r:
            s += f", output_padding={self.output_padding}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s


class ConvTranspose2d(_ConvTransposeNd):
    """Transposed 2-D convolution over (N, C_in, H, W) (or unbatched (C_in, H, W)) -> (N, C_out, H_out, W_out),
    H_out = (H - 1) * stride - 2 * padding + dilation * (kH - 1) + output_padding + 1.

    Args as torch.nn.ConvTranspose2d: in_channels, out_channels, kernel_size, stride=1, padding=0,
    output_padding=0, groups=1, bias=True, dilation=1, padding_mode="zeros" (the only mode, as torch's); sizes
    are ints or pairs. ``forward(input, output_size=None)``: output_size picks the output_padding (torch's rule:
    within stride - 1 of the smallest size). Parameters: weight (in_channels, out_channels / groups, kH, kW),
    bias (out_channels,), initialised as torch's; torch state_dicts load unchanged.
    """


class ConvTranspose1d(_ConvTransposeNd):
    """Transposed 1-D convolution over (N, C_in, L) (or unbatched (C_in, L)) -> (N, C_out, L_out), torch's
    arguments (sizes are ints or tuples of one int) and parameters (weight (in_channels, out_channels / groups,
    kernel_size)); runs ConvTranspose2d's kernels on a height of 1."""

    _rank = 1
    _cls = "ConvTranspose1d"


class Unfold(Module):
    """torch.nn.Unfold(kernel_size, dilation=1, padding=0, stride=1): (N, C, H, W) -> (N, C * kH * kW, L)."""

    def __init__(self, kernel_size, dilation=1, padding=0, stride=1):
        super().__init__()
        self.kernel_size, self.dilation, self.padding, self.stride = kernel_size, dilation, padding, stride

    def forward(self, input):
        return unfold(input, self.kernel_size, self.dilation, self.padding, self.stride)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, dilation={self.dilation}, padding={self.padding}, "
                f"stride={self.stride}")


class Fold(Module):
    """torch.nn.Fold(output_size, kernel_size, dilation=1, padding=0, stride=1): (N, C * kH * kW, L) ->
    (N, C, H, W), overlapping blocks summed."""

    def __init__(self, output_size, kernel_size, dilation=1, padding=0, stride=1):
        super().__init__()
        self.output_size, self.kernel_size = output_size, kernel_size
        self.dilation, self.padding, self.stride = dilation, padding, stride

    def forward(self, input):
        return fold(input, self.output_size, self.kernel_size, self.dilation, self.padding, self.stride)

    def extra_repr(self) -> str:
        return (f"output_size={self.output_size}, kernel_size={self.kernel_size}, dilation={self.dilation}, "
                f"padding={self.padding}, stride={self.stride}")
