"""torch's lazy modules: LazyLinear, LazyConv1d/2d/3d, LazyConvTranspose1d/2d/3d, LazyBatchNorm1d/2d/3d,
LazyInstanceNorm1d/2d/3d, and UninitializedParameter / UninitializedBuffer.

A lazy module holds UninitializedParameter / UninitializedBuffer placeholders until its first forward, which reads
the input size (in_features: the last dim; in_channels: dim 1, dim 0 for an unbatched conv input; num_features:
dim 1, as torch's), materialises them in place (the same objects: an optimizer built before the first forward
updates them afterwards, as torch's does), initialises them as the ordinary module does and then turns the module
into that module (``type(m) is nn.Linear``). ``load_state_dict`` into an uninitialised lazy module materialises its
placeholders at the loaded shapes (Module.load_state_dict); the module becomes the ordinary class at its first
forward. (LazyConv3d & co. wait for nn.Conv3d / nn.BatchNorm3d.)
"""
from __future__ import annotations

import numpy as np

from .. import devices
from ..tensor import Tensor
from .conv import Conv1d, Conv2d
from .conv3d import Conv3d, ConvTranspose3d
from .conv_transpose import ConvTranspose1d, ConvTranspose2d
from .linear import Linear
from .normalization import BatchNorm1d, BatchNorm2d, BatchNorm3d
from .normalization_group import InstanceNorm1d, InstanceNorm2d, InstanceNorm3d
from .parameter import Parameter

__all__ = ["UninitializedParameter", "UninitializedBuffer", "LazyLinear", "LazyConv1d", "LazyConv2d", "LazyConv3d",
           "LazyConvTranspose1d", "LazyConvTranspose2d", "LazyConvTranspose3d", "LazyBatchNorm1d", "LazyBatchNorm2d",
           "LazyBatchNorm3d", "LazyInstanceNorm1d", "LazyInstanceNorm2d", "LazyInstanceNorm3d"]


class _Uninitialized:
    """What the placeholders share: no shape until ``materialize(shape)`` gives them storage in place."""

    __slots__ = ()
    cls_to_become = Tensor
    _is_uninitialized = True  # Module.load_state_dict materialises such a tensor at the loaded shape

    def materialize(self, shape, device=None, dtype=None) -> None:
        """Give this placeholder uninitialised storage of ``shape`` (on ``device``, default the device the
        placeholder was built on or moved to with Module.to; ``dtype`` default its own, float32 unless Module.double
        made it float64) and turn it into a ``cls_to_become`` (the same object)."""
        shape = (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(int(d) for d in shape)
        dt = np.dtype(self._data.dtype if dtype is None else getattr(dtype, "dtype", dtype))
        dev = devices.device_of(self._data) if device is None else str(device)
        self._data = devices.empty(shape, dtype=dt, device_name=dev)
        self.__class__ = self.cls_to_become

    @property
    def shape(self):
        raise RuntimeError(f"Can't access the shape of an uninitialized parameter or buffer ({type(self).__name__}): "
                           "run the lazy module's forward once (or load a state_dict into it) to materialize it")

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"


class UninitializedParameter(_Uninitialized, Parameter):
    """A parameter whose shape is not known yet (torch.nn.UninitializedParameter); requires_grad by default."""

    __slots__ = ()
    cls_to_become = Parameter

    def __init__(self, requires_grad: bool = True, device=None, dtype=None):
        super().__init__(devices.empty((0,)), requires_grad=requires_grad)  # on the default device


class UninitializedBuffer(_Uninitialized, Tensor):
    """A buffer whose shape is not known yet (torch.nn.UninitializedBuffer)."""

    __slots__ = ()

    def __init__(self, requires_grad: bool = False, device=None, dtype=None):
        super().__init__(devices.empty((0,)), requires_grad=requires_grad)  # on the default device


def _uninitialized(t) -> bool:
    return isinstance(t, _Uninitialized)


class LazyModuleMixin:
    """The first forward infers the sizes (``initialize_parameters``), materialises and initialises the
    placeholders, then makes the module a ``cls_to_become`` and runs its forward."""

    cls_to_become = None

    def has_uninitialized_params(self) -> bool:
        return any(_uninitialized(t) for t in list(self._parameters.values()) + list(self._buffers.values()))

    def initialize_parameters(self, *args, **kwargs) -> None:
        raise NotImplementedError

    def forward(self, *args, **kwargs):
        if not args:
            raise TypeError(f"{type(self).__name__}: the first forward needs the input (its size is inferred from it)")
        if self.has_uninitialized_params():
            self.initialize_parameters(*args, **kwargs)
        else:  # loaded from a state_dict: the sizes come from the loaded shapes
            self._sizes_from_parameters()
        if self.has_uninitialized_params():
            raise RuntimeError(f"module {type(self).__name__} has not been fully initialized")
        self.__class__ = self.cls_to_become
        return self.forward(*args, **kwargs)

    def _post_load_state_dict(self) -> None:
        if not self.has_uninitialized_params():
            self._sizes_from_parameters()
        super()._post_load_state_dict()

    def _sizes_from_parameters(self) -> None:
        """The size attribute from materialised placeholders (after load_state_dict)."""


def _input(x, cls) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{cls}: input must be a forgegrad.Tensor, got {type(x).__name__}")
    return x


def _materialize(module, names, shape) -> None:
    for name in names:
        t = module._parameters.get(name, module._buffers.get(name))
        if _uninitialized(t):
            t.materialize(shape)


# ---- Linear ---------------------------------------------------------------------------------------------
class LazyLinear(LazyModuleMixin, Linear):
    """``LazyLinear(out_features, bias=True)``: a Linear whose in_features is the last dim of its first input."""

    cls_to_become = Linear

    def __init__(self, out_features: int, bias: bool = True, device=None, dtype=None):
        Linear.__init__(self, 1, out_features, bias)
        self.in_features = 0
        self.weight = UninitializedParameter()
        if bias:
            self.bias = UninitializedParameter()

    def initialize_parameters(self, input, *args, **kwargs) -> None:
        x = _input(input, "LazyLinear")
        if x.ndim < 1 or x.shape[-1] == 0:
            raise ValueError(f"LazyLinear: the input's last dim (in_features) must be > 0, got shape {tuple(x.shape)}")
        self.in_features = int(x.shape[-1])
        _materialize(self, ("weight",), (self.out_features, self.in_features))
        _materialize(self, ("bias",), (self.out_features,))
        self.reset_parameters()

    def _sizes_from_parameters(self) -> None:
        self.in_features = int(self.weight.shape[1])


# ---- convolutions ---------------------------------------------------------------------------------------
class _LazyConvMixin(LazyModuleMixin):
    _spatial = 2

    def _lazy_init(self, base, out_channels, kernel_size, stride, padding, dilation, groups, bias, **more):
        # built for in_channels = groups (a valid value), then the weight and bias made placeholders
        base.__init__(self, groups, out_channels, kernel_size, stride=stride, padding=padding, dilation=dilation,
                      groups=groups, bias=bias, **more)
        self.in_channels = 0
        self.weight = UninitializedParameter()
        if bias:
            self.bias = UninitializedParameter()

    def _weight_shape(self):
        if getattr(self, "transposed", False):
            return (self.in_channels, self.out_channels // self.groups) + tuple(self.kernel_size)
        return (self.out_channels, self.in_channels // self.groups) + tuple(self.kernel_size)

    def initialize_parameters(self, input, *args, **kwargs) -> None:
        cls = type(self).__name__
        x = _input(input, cls)
        n = self._spatial
        if x.ndim not in (n + 1, n + 2):
            raise RuntimeError(f"{cls}: expected {n + 1}D (unbatched) or {n + 2}D (batched) input to infer "
                               f"in_channels, got input of shape {tuple(x.shape)}")
        self.in_channels = int(x.shape[1] if x.ndim == n + 2 else x.shape[0])
        if self.in_channels == 0 or self.in_channels % self.groups:
            raise ValueError(f"{cls}: in_channels ({self.in_channels}, from the input's shape {tuple(x.shape)}) must "
                             f"be a positive multiple of groups ({self.groups})")
        _materialize(self, ("weight",), self._weight_shape())
        _materialize(self, ("bias",), (self.out_channels,))
        self.reset_parameters()

    def _sizes_from_parameters(self) -> None:
        w = self.weight.shape
        self.in_channels = int(w[0] if getattr(self, "transposed", False) else w[1] * self.groups)


class LazyConv1d(_LazyConvMixin, Conv1d):
    """``LazyConv1d(out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, bias=True,
    padding_mode="zeros")``: a Conv1d whose in_channels is read from the first input."""

    cls_to_become = Conv1d
    _spatial = 1

    def __init__(self, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, bias=True,
                 padding_mode="zeros", device=None, dtype=None):
        self._lazy_init(Conv1d, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                        padding_mode=padding_mode)


class LazyConv2d(_LazyConvMixin, Conv2d):
    """``LazyConv2d(out_channels, kernel_size, ...)``: a Conv2d whose in_channels is read from the first input."""

    cls_to_become = Conv2d

    def __init__(self, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, bias=True,
                 padding_mode="zeros", device=None, dtype=None):
        self._lazy_init(Conv2d, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                        padding_mode=padding_mode)


class LazyConv3d(_LazyConvMixin, Conv3d):
    """``LazyConv3d(out_channels, kernel_size, ...)``: a Conv3d whose in_channels is read from the first input."""

    cls_to_become = Conv3d
    _spatial = 3

    def __init__(self, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, bias=True,
                 padding_mode="zeros", device=None, dtype=None):
        self._lazy_init(Conv3d, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                        padding_mode=padding_mode)


class LazyConvTranspose1d(_LazyConvMixin, ConvTranspose1d):
    """``LazyConvTranspose1d(out_channels, kernel_size, stride=1, padding=0, output_padding=0, groups=1, bias=True,
    dilation=1, padding_mode="zeros")``: in_channels read from the first input."""

    cls_to_become = ConvTranspose1d
    _spatial = 1

    def __init__(self, out_channels, kernel_size, stride=1, padding=0, output_padding=0, groups=1, bias=True,
                 dilation=1, padding_mode="zeros", device=None, dtype=None):
        self._lazy_init(ConvTranspose1d, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                        output_padding=output_padding, padding_mode=padding_mode)


class LazyConvTranspose2d(_LazyConvMixin, ConvTranspose2d):
    """``LazyConvTranspose2d(out_channels, kernel_size, ...)``: in_channels read from the first input."""

    cls_to_become = ConvTranspose2d

    def __init__(self, out_channels, kernel_size, stride=1, padding=0, output_padding=0, groups=1, bias=True,
                 dilation=1, padding_mode="zeros", device=None, dtype=None):
        self._lazy_init(ConvTranspose2d, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                        output_padding=output_padding, padding_mode=padding_mode)


class LazyConvTranspose3d(_LazyConvMixin, ConvTranspose3d):
    """``LazyConvTranspose3d(out_channels, kernel_size, ...)``: in_channels read from the first input."""

    cls_to_become = ConvTranspose3d
    _spatial = 3

    def __init__(self, out_channels, kernel_size, stride=1, padding=0, output_padding=0, groups=1, bias=True,
                 dilation=1, padding_mode="zeros", device=None, dtype=None):
        self._lazy_init(ConvTranspose3d, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                        output_padding=output_padding, padding_mode=padding_mode)


# ---- normalization --------------------------------------------------------------------------------------
class _LazyNormMixin(LazyModuleMixin):
    def _lazy_init(self, base, eps, momentum, affine, track_running_stats, **more):
        base.__init__(self, 1, eps=eps, momentum=momentum, affine=affine, track_running_stats=track_running_stats,
                      **more)
        self.num_features = 0
        if self.affine:
            self.weight = UninitializedParameter()
            if self.bias is not None:
                self.bias = UninitializedParameter()
        if self.track_running_stats:
            self.running_mean = UninitializedBuffer()
            self.running_var = UninitializedBuffer()

    def initialize_parameters(self, input, *args, **kwargs) -> None:
        cls = type(self).__name__
        x = _input(input, cls)
        if x.ndim < 2 or x.shape[1] == 0:  # torch reads dim 1 (an unbatched instance norm input too)
            raise ValueError(f"{cls}: num_features is inferred from the input's dim 1, got input of shape "
                             f"{tuple(x.shape)}")
        self.num_features = int(x.shape[1])
        _materialize(self, ("weight", "bias", "running_mean", "running_var"), (self.num_features,))
        self.reset_parameters()

    def _sizes_from_parameters(self) -> None:
        t = self.weight if self.weight is not None else self.running_mean
        if t is not None:
            self.num_features = int(t.shape[0])


class LazyBatchNorm1d(_LazyNormMixin, BatchNorm1d):
    """``LazyBatchNorm1d(eps=1e-5, momentum=0.1, affine=True, track_running_stats=True)``: num_features from the
    first input's dim 1."""

    cls_to_become = BatchNorm1d

    def __init__(self, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True, device=None, dtype=None, *,
                 bias=True):
        self._lazy_init(BatchNorm1d, eps, momentum, affine, track_running_stats, bias=bias)


class LazyBatchNorm2d(_LazyNormMixin, BatchNorm2d):
    """``LazyBatchNorm2d(eps=1e-5, momentum=0.1, affine=True, track_running_stats=True)``."""

    cls_to_become = BatchNorm2d

    def __init__(self, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True, device=None, dtype=None, *,
                 bias=True):
        self._lazy_init(BatchNorm2d, eps, momentum, affine, track_running_stats, bias=bias)


class LazyBatchNorm3d(_LazyNormMixin, BatchNorm3d):
    """``LazyBatchNorm3d(eps=1e-5, momentum=0.1, affine=True, track_running_stats=True)``."""

    cls_to_become = BatchNorm3d

    def __init__(self, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True, device=None, dtype=None, *,
                 bias=True):
        self._lazy_init(BatchNorm3d, eps, momentum, affine, track_running_stats, bias=bias)


class LazyInstanceNorm1d(_LazyNormMixin, InstanceNorm1d):
    """``LazyInstanceNorm1d(eps=1e-5, momentum=0.1, affine=True, track_running_stats=True)`` (torch's lazy defaults,
    unlike InstanceNorm1d's): num_features from the first input's dim 1."""

    cls_to_become = InstanceNorm1d

    def __init__(self, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True, device=None, dtype=None):
        self._lazy_init(InstanceNorm1d, eps, momentum, affine, track_running_stats)


class LazyInstanceNorm2d(_LazyNormMixin, InstanceNorm2d):
    """``LazyInstanceNorm2d(eps=1e-5, momentum=0.1, affine=True, track_running_stats=True)``."""

    cls_to_become = InstanceNorm2d

    def __init__(self, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True, device=None, dtype=None):
        self._lazy_init(InstanceNorm2d, eps, momentum, affine, track_running_stats)



class LazyInstanceNorm3d(_LazyNormMixin, InstanceNorm3d):
    """``LazyInstanceNorm3d(eps=1e-5, momentum=0.1, affine=True, track_running_stats=True)``."""

    cls_to_become = InstanceNorm3d

    def __init__(self, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True, device=None, dtype=None):
        self._lazy_init(InstanceNorm3d, eps, momentum, affine, track_running_stats)
