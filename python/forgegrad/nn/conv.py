"""Convolution, pooling and batch-norm layers with PyTorch's names, arguments, parameter/buffer names
and initialisation (NCHW), plus the Keras-style aliases Conv2D and MaxPooling2D."""
from __future__ import annotations



from .._args import pair, positive_int, single
from ..kernels import geometry
from . import functional_conv as F
from . import init
from .linear import _ACTIVATIONS, lazy_parameters
from .module import Module
from .parameter import add_weight_and_bias
from ..tensor import Tensor

__all__ = ["Conv1d", "Conv2d", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "Conv2D", "MaxPooling2D"]

_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def _check_input(x, ndims, cls):
    if not isinstance(x, Tensor):
        raise TypeError(f"{cls}: input must be a forgegrad.Tensor, got {type(x).__name__}")
    if x.ndim not in ndims:
        want = " or ".join(f"{d}D" for d in ndims)
        raise ValueError(f"{cls}: expected {want} input (got {x.ndim}D input)")


def _unbatched(out):
    return tuple(o.squeeze(0) for o in out) if isinstance(out, tuple) else out.squeeze(0)


class _ConvNd(Module):
    """What Conv1d and Conv2d share: the channel and group arguments, the padding mode, torch's initialisation
    and repr. Subclasses set kernel_size, stride, padding and dilation (tuples of their rank)."""

    def _channels(self, cls: str, in_channels, out_channels, groups, padding_mode) -> None:
        self.in_channels = positive_int(in_channels, "in_channels", cls)
        self.out_channels = positive_int(out_channels, "out_channels", cls)
        self.groups = positive_int(groups, "groups", cls)
        if padding_mode not in _PADDING_MODES:
            raise ValueError(f"{cls}: padding_mode must be one of {list(_PADDING_MODES)}, got {padding_mode!r}")
        self.padding_mode = padding_mode

    def _padded(self, input):
        """(input, padding) for the kernel: a non-zero padding_mode pads with F.pad first and convolves unpadded, as
        torch's (``same`` splits each dim's dilation * (kernel - 1) with the extra element after)."""
        if self.padding_mode == "zeros":
            return input, self.padding
        amounts = []
        for i in reversed(range(len(self.kernel_size))):  # F.pad lists the last dim first
            if self.padding == "valid":
                amounts += [0, 0]
            elif self.padding == "same":
                total = self.dilation[i] * (self.kernel_size[i] - 1)
                amounts += [total // 2, total - total // 2]
            else:
                amounts += [self.padding[i], self.padding[i]]
        from .functional import pad
        return pad(input, amounts, mode=self.padding_mode), 0

    def reset_parameters(self) -> None:
        init.layer_default_(self.weight, self.bias)

    def extra_repr(self) -> str:
        rank = len(self.kernel_size)
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0,) * rank:
            s += f", padding={self.padding!r}" if isinstance(self.padding, str) else f", padding={self.padding}"
        if self.dilation != (1,) * rank:
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode}"
        return s


class Conv2d(_ConvNd):
    """2-D convolution over (N, C_in, H, W) -> (N, C_out, H_out, W_out).

    Args as torch.nn.Conv2d: in_channels, out_channels, kernel_size, stride=1, padding=0 (int, pair,
    "same" or "valid"), dilation=1, groups=1, bias=True, padding_mode="zeros" ("reflect", "replicate" and
    "circular" pad with F.pad first, as torch).
    Parameters: weight (out_channels, in_channels / groups, kH, kW) and bias (out_channels,),
    initialised as torch: kaiming_uniform(a=sqrt(5)) and U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, padding_mode="zeros"):
        super().__init__()
        cls = "Conv2d"
        self._channels(cls, in_channels, out_channels, groups, padding_mode)
        self.kernel_size = pair(kernel_size, "kernel_size", cls)
        self.stride = pair(stride, "stride", cls)
        self.dilation = pair(dilation, "dilation", cls)
        # the C++ geometry checks the channels against groups, the sizes and the padding form
        weight_shape = geometry.conv2d_weight_shape(self.in_channels, self.out_channels, self.kernel_size,
                                                    self.groups, cls)
        geometry.conv2d_padding(padding, self.kernel_size, self.stride, self.dilation, owner=cls)
        self.padding = padding if isinstance(padding, str) else pair(padding, "padding", cls)
        add_weight_and_bias(self, weight_shape, bias)  # on the default device (meta: no memory)
        self.reset_parameters()

    def forward(self, input):
        _check_input(input, (4,), "Conv2d")
        input, padding = self._padded(input)
        return F.conv2d(input, self.weight, self.bias, self.stride, padding, self.dilation, self.groups)


class Conv1d(_ConvNd):
    """1-D convolution over (N, C_in, L) -> (N, C_out, L_out), or unbatched (C_in, L) -> (C_out, L_out).

    Args as torch.nn.Conv1d: in_channels, out_channels, kernel_size, stride=1, padding=0 (int, "same" or
    "valid"), dilation=1, groups=1, bias=True, padding_mode="zeros" (or "reflect", "replicate", "circular");
    the sizes are ints or tuples of one int. Parameters: weight (out_channels, in_channels / groups,
    kernel_size) and bias (out_channels,), initialised as torch. Runs Conv2d's kernels on a height of 1.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, padding_mode="zeros"):
        super().__init__()
        cls = "Conv1d"
        self._channels(cls, in_channels, out_channels, groups, padding_mode)
        self.kernel_size = (single(kernel_size, "kernel_size", cls, minimum=1),)
        self.stride = (single(stride, "stride", cls, minimum=1),)
        self.dilation = (single(dilation, "dilation", cls, minimum=1),)
        self.padding = padding if isinstance(padding, str) else (single(padding, "padding", cls, minimum=0),)
        # conv2d's geometry on a height of 1 checks the channels against groups and the padding form
        weight_shape = geometry.conv2d_weight_shape(self.in_channels, self.out_channels, (1,) + self.kernel_size,
                                                    self.groups, cls)
        stride2, padding2, dilation2 = geometry.conv1d_as_2d(self.stride, self.padding, self.dilation, cls)
        geometry.conv2d_padding(padding2, (1,) + self.kernel_size, stride2, dilation2, owner=cls)
        add_weight_and_bias(self, weight_shape[:2] + weight_shape[3:], bias)
        self.reset_parameters()

    def forward(self, input):
        _check_input(input, (2, 3), "Conv1d")
        if input.ndim == 2:  # unbatched, as torch
            return self.forward(input.unsqueeze(0)).squeeze(0)
        input, padding = self._padded(input)
        return F.conv1d(input, self.weight, self.bias, self.stride, padding, self.dilation, self.groups)


class _Pool2d(Module):
    """The window arguments every 2-D pooling layer keeps (stride defaults to the kernel size)."""

    def __init__(self, kernel_size, stride, padding, ceil_mode):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding = padding
        self.ceil_mode = ceil_mode


class MaxPool2d(_Pool2d):
    """Max pooling as torch.nn.MaxPool2d(kernel_size, stride=None, padding=0, dilation=1,
    return_indices=False, ceil_mode=False)."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False, ceil_mode=False):
        super().__init__(kernel_size, stride, padding, ceil_mode)
        self.dilation = dilation
        self.return_indices = return_indices

    def forward(self, input):
        _check_input(input, (3, 4), "MaxPool2d")
        if input.ndim == 3:  # unbatched (C, H, W), as torch
            return _unbatched(self.forward(input.unsqueeze(0)))
        return F.max_pool2d(input, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode,
                            self.return_indices)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class AvgPool2d(_Pool2d):
    """Average pooling as torch.nn.AvgPool2d(kernel_size, stride=None, padding=0, ceil_mode=False,
    count_include_pad=True, divisor_override=None)."""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                 divisor_override=None):
        super().__init__(kernel_size, stride, padding, ceil_mode)
        self.count_include_pad = count_include_pad
        self.divisor_override = divisor_override

    def forward(self, input):
        _check_input(input, (3, 4), "AvgPool2d")
        if input.ndim == 3:  # unbatched (C, H, W), as torch
            return _unbatched(self.forward(input.unsqueeze(0)))
        return F.avg_pool2d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                            self.count_include_pad, self.divisor_override)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AdaptiveAvgPool2d(Module):
    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def forward(self, input):
        _check_input(input, (3, 4), "AdaptiveAvgPool2d")
        if input.ndim == 3:  # unbatched (C, H, W), as torch
            return _unbatched(self.forward(input.unsqueeze(0)))
        return F.adaptive_avg_pool2d(input, self.output_size)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


class Conv2D(Module):
    """Keras-style convolution on channels-first (N, C, H, W) input:
    ``Conv2D(filters, kernel_size, strides=1, padding="valid", activation=None, use_bias=True,
    dilation_rate=1, groups=1, in_channels=None)``.

    The input channel count is inferred on the first call unless in_channels is given. padding
    "same" follows Keras for any stride (pads (total // 2) before and the rest after, computed from
    the input size). Parameters use Conv2d's names and layout.
    """

    def __init__(self, filters, kernel_size, strides=1, padding="valid", activation=None, use_bias=True,
                 dilation_rate=1, groups=1, in_channels=None):
        super().__init__()
        cls = "Conv2D"
        self.filters = positive_int(filters, "filters", cls)
        self.kernel_size = pair(kernel_size, "kernel_size", cls)
        self.strides = pair(strides, "strides", cls)
        self.dilation_rate = pair(dilation_rate, "dilation_rate", cls)
        self.groups = positive_int(groups, "groups", cls)
        # Keras' padding strings; "same" depends on the input size, so this only validates
        geometry.conv2d_padding(padding, self.kernel_size, self.strides, self.dilation_rate, keras=True, owner=cls)
        self.padding = padding.lower()
        if isinstance(activation, str) or activation is None:
            if activation not in _ACTIVATIONS:
                raise ValueError(f"{cls}: unknown activation {activation!r}")
            self._act = _ACTIVATIONS[activation]
        elif callable(activation):
            self._act = activation
        else:
            raise TypeError(f"{cls}: activation must be a name or a callable")
        self.activation = activation
        self.use_bias = use_bias
        lazy_parameters(self, "in_channels", in_channels, "in_channels", cls)

    def _build(self, in_channels: int) -> None:
        shape = geometry.conv2d_weight_shape(in_channels, self.filters, self.kernel_size, self.groups, "Conv2D")
        self.in_channels = in_channels
        add_weight_and_bias(self, shape, self.use_bias, self._param_device)
        init.layer_default_(self.weight, self.bias)

    def _padding(self, h, w):
        return geometry.conv2d_padding(self.padding, self.kernel_size, self.strides, self.dilation_rate,
                                       input_size=(h, w), keras=True, owner="Conv2D")

    def forward(self, input):
        _check_input(input, (4,), "Conv2D")
        if self.weight is None:
            self._build(input.shape[1])
        y = F.conv2d(input, self.weight, self.bias, self.strides, self._padding(*input.shape[2:]),
                     self.dilation_rate, self.groups)
        return y if self._act is None else self._act(y)

    def extra_repr(self) -> str:
        return (f"filters={self.filters}, kernel_size={self.kernel_size}, strides={self.strides}, "
                f"padding={self.padding!r}, in_channels={self.in_channels}")


class MaxPooling2D(Module):
    """Keras-style max pooling on (N, C, H, W): ``MaxPooling2D(pool_size=2, strides=None,
    padding="valid")`` (strides default to pool_size; padding "valid" only)."""

    def __init__(self, pool_size=2, strides=None, padding="valid"):
        super().__init__()
        self.pool_size = pair(pool_size, "pool_size", "MaxPooling2D")
        self.strides = self.pool_size if strides is None else pair(strides, "strides", "MaxPooling2D")
        if padding != "valid":
            raise ValueError(f"MaxPooling2D: only padding='valid' is supported, got {padding!r}")
        self.padding = padding

    def forward(self, input):
        _check_input(input, (4,), "MaxPooling2D")
        return F.max_pool2d(input, self.pool_size, self.strides)

    def extra_repr(self) -> str:
        return f"pool_size={self.pool_size}, strides={self.strides}"
