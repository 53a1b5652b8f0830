"""1-d pooling, unpooling, adaptive max and power-average pooling layers with torch.nn's names and arguments
(the 2-d max / average / adaptive average layers are in nn/conv.py). Each takes batched or unbatched input, as
torch's; the functions they call are in nn/functional_pool.py."""
from __future__ import annotations

from . import functional_pool as F
from .module import Module

__all__ = ["MaxPool1d", "AvgPool1d", "MaxUnpool1d", "MaxUnpool2d", "AdaptiveAvgPool1d", "AdaptiveMaxPool1d",
           "AdaptiveMaxPool2d", "LPPool1d", "LPPool2d"]


def _single(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v,)


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


class _Window(Module):
    """kernel_size, stride (defaults to kernel_size) and padding, as torch's pooling layers keep them: as given
    (MaxPool1d), or as tuples (``_sizes``: torch's _single / _pair, which AvgPool1d and MaxUnpool keep and print)."""

    _sizes = None

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        size = self._sizes or (lambda v: v)
        self.kernel_size = size(kernel_size)
        self.stride = size(stride if stride is not None else kernel_size)
        self.padding = size(padding)


class MaxPool1d(_Window):
    """torch.nn.MaxPool1d(kernel_size, stride=None, padding=0, dilation=1, return_indices=False, ceil_mode=False)
    on (N, C, L) or (C, L); with return_indices also the int64 position of each maximum in its row."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False, ceil_mode=False):
        super().__init__(kernel_size, stride, padding)
        self.dilation, self.return_indices, self.ceil_mode = dilation, return_indices, ceil_mode

    def forward(self, input):
        return F.max_pool1d(input, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode,
                            self.return_indices)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class AvgPool1d(_Window):
    """torch.nn.AvgPool1d(kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True)."""

    _sizes = staticmethod(_single)

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
        super().__init__(kernel_size, stride, padding)
        self.ceil_mode, self.count_include_pad = ceil_mode, count_include_pad

    def forward(self, input):
        return F.avg_pool1d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                            self.count_include_pad)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class MaxUnpool1d(_Window):
    """torch.nn.MaxUnpool1d(kernel_size, stride=None, padding=0): ``forward(input, indices, output_size=None)``
    writes each value at its index (MaxPool1d's) of a zero row."""

    _sizes = staticmethod(_single)

    def forward(self, input, indices, output_size=None):
        return F.max_unpool1d(input, indices, self.kernel_size, self.stride, self.padding, output_size)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class MaxUnpool2d(MaxUnpool1d):
    """torch.nn.MaxUnpool2d(kernel_size, stride=None, padding=0): ``forward(input, indices, output_size=None)``
    writes each value at its flat index h * W + w (MaxPool2d's) of a zero plane."""

    _sizes = staticmethod(_pair)

    def forward(self, input, indices, output_size=None):
        return F.max_unpool2d(input, indices, self.kernel_size, self.stride, self.padding, output_size)


class AdaptiveAvgPool1d(Module):
    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def forward(self, input):
        return F.adaptive_avg_pool1d(input, self.output_size)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


class AdaptiveMaxPool1d(AdaptiveAvgPool1d):
    """torch.nn.AdaptiveMaxPool1d(output_size, return_indices=False)."""

    def __init__(self, output_size, return_indices=False):
        super().__init__(output_size)
        self.return_indices = return_indices

    def forward(self, input):
        return F.adaptive_max_pool1d(input, self.output_size, self.return_indices)


class AdaptiveMaxPool2d(AdaptiveMaxPool1d):
    """torch.nn.AdaptiveMaxPool2d(output_size, return_indices=False); output_size an int or a pair (None keeps the
    input's size)."""

    def forward(self, input):
        return F.adaptive_max_pool2d(input, self.output_size, self.return_indices)


class LPPool1d(Module):
    """torch.nn.LPPool1d(norm_type, kernel_size, stride=None, ceil_mode=False): (sum of x ** p over each window)
    ** (1 / p)."""

    def __init__(self, norm_type, kernel_size, stride=None, ceil_mode=False):
        super().__init__()
        self.norm_type, self.kernel_size, self.stride, self.ceil_mode = norm_type, kernel_size, stride, ceil_mode

    def forward(self, input):
        return F.lp_pool1d(input, float(self.norm_type), self.kernel_size, self.stride, self.ceil_mode)

    def extra_repr(self) -> str:
        return (f"norm_type={self.norm_type}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"ceil_mode={self.ceil_mode}")


class LPPool2d(LPPool1d):
    """torch.nn.LPPool2d(norm_type, kernel_size, stride=None, ceil_mode=False)."""

    def forward(self, input):
        return F.lp_pool2d(input, float(self.norm_type), self.kernel_size, self.stride, self.ceil_mode)
