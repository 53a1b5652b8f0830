"""Normalisation layers, as torch.nn: BatchNorm1d/2d (over dim 1, with running statistics), and
LayerNorm and RMSNorm (over the trailing dimensions)."""
from __future__ import annotations

import numpy as np

from .. import devices
from .._args import positive_int
from .._validate import check_flag, check_float
from ..kernels.norm import _normalized_shape
from . import functional as F
from . import init
from .conv import _check_input
from .module import Module
from .parameter import Parameter
from ..tensor import Tensor

__all__ = ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "LayerNorm", "RMSNorm"]


class LayerNorm(Module):
    """``LayerNorm(normalized_shape, eps=1e-5, elementwise_affine=True, bias=True)``.

    Normalises each sample over its trailing ``normalized_shape`` dimensions (mean 0, variance 1,
    biased variance as torch), then scales by ``weight`` (ones) and shifts by ``bias`` (zeros).

    Shape: input (*, *normalized_shape) -> output of the same shape.
    """

    def __init__(self, normalized_shape, eps: float = 1e-5, elementwise_affine: bool = True, bias: bool = True):
        super().__init__()
        self.normalized_shape = _normalized_shape(normalized_shape)
        self.eps = float(eps)
        self.elementwise_affine = check_flag(elementwise_affine, "elementwise_affine")
        bias = check_flag(bias, "bias")
        if self.elementwise_affine:
            self.weight = Parameter(devices.ones(self.normalized_shape))
            self.bias = Parameter(devices.zeros(self.normalized_shape)) if bias else None
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if self.elementwise_affine and not bias:
            self.register_parameter("bias", None)

    def reset_parameters(self) -> None:
        if self.weight is not None:
            init.ones_(self.weight)  # meta tensors are left as they are
        if self.bias is not None:
            init.zeros_(self.bias)

    def forward(self, input):
        return F.layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


class RMSNorm(Module):
    """``RMSNorm(normalized_shape, eps=None, elementwise_affine=True)``: x / sqrt(mean(x^2) + eps) * weight
    over the trailing ``normalized_shape`` dimensions (eps None: float32's machine epsilon, as torch)."""

    def __init__(self, normalized_shape, eps=None, elementwise_affine: bool = True):
        super().__init__()
        self.normalized_shape = _normalized_shape(normalized_shape)
        self.eps = None if eps is None else float(eps)
        self.elementwise_affine = bool(elementwise_affine)
        if self.elementwise_affine:
            self.weight = Parameter(devices.ones(self.normalized_shape))
        else:
            self.register_parameter("weight", None)

    def reset_parameters(self) -> None:
        if self.weight is not None:
            init.ones_(self.weight)

    def forward(self, input):
        return F.rms_norm(input, self.normalized_shape, self.weight, self.eps)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


class _BatchNorm(Module):
    _ndims = (2, 3, 4)
    # as torch's _NormBase: a state_dict without num_batches_tracked (saved before torch 0.4.1) loads
    _optional_state_keys = ("num_batches_tracked",)

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True, device=None,
                 dtype=None, *, bias=True):
        super().__init__()
        cls = type(self).__name__
        self.num_features = positive_int(num_features, "num_features", cls)
        self.eps = check_float(eps, "eps", low=0.0)
        self.momentum = momentum
        self.affine = check_flag(affine, "affine")
        self.track_running_stats = check_flag(track_running_stats, "track_running_stats")
        if not isinstance(bias, bool):
            raise TypeError(f"{cls}: bias must be a bool, got {bias!r}")
        if affine:  # bias=False (torch 2.13): a weight and no bias
            self.weight = Parameter(devices.ones((self.num_features,)))
            if bias:
                self.bias = Parameter(devices.zeros((self.num_features,)))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", Tensor._stored(devices.zeros((self.num_features,))))
            self.register_buffer("running_var", Tensor._stored(devices.ones((self.num_features,))))
            self.register_buffer("num_batches_tracked", Tensor._stored(devices.zeros((), np.int64)))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        if device is not None or dtype is not None:  # floating tensors only: num_batches_tracked stays int64
            self.to(device=device, dtype=dtype)

    def reset_running_stats(self) -> None:
        if self.track_running_stats:  # through init: buffers on meta have nothing to reset
            init.zeros_(self.running_mean)
            init.ones_(self.running_var)
            init.zeros_(self.num_batches_tracked)

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        if self.affine:
            init.ones_(self.weight)
            if self.bias is not None:
                init.zeros_(self.bias)

    def forward(self, input):
        cls = type(self).__name__
        _check_input(input, self._ndims, cls)
        if input.shape[1] != self.num_features:
            raise ValueError(f"{cls}: expected {self.num_features} channels (dim 1), got input of shape "
                             f"{tuple(input.shape)}")
        factor = self._advance()
        use_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        keep_stats = not self.training or self.track_running_stats
        return F.batch_norm(input, self.running_mean if keep_stats else None,
                            self.running_var if keep_stats else None, self.weight, self.bias,
                            use_batch_stats, factor, self.eps)

    def _advance(self) -> float:
        """Count a training batch (num_batches_tracked) and return the running statistics' update factor."""
        factor = 0.0 if self.momentum is None else self.momentum
        # on meta the counter has no value to advance (and the op computes shapes only)
        if self.training and self.track_running_stats and devices.has_data(self.num_batches_tracked._data):
            count = self.num_batches_tracked
            if isinstance(count._data, np.ndarray):
                count._data[...] += 1
            else:  # on another device: the add op there (the counter is no graph's input)
                count._data = (Tensor._wrap_exact(count._data) + 1)._data
            if self.momentum is None:  # cumulative moving average
                factor = 1.0 / float(count.item())
        return factor

    def extra_repr(self) -> str:  # torch 2.13's, with bias=
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"bias={self.bias is not None}, track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """Batch norm over (N, C) or (N, C, L), as torch.nn.BatchNorm1d. Parameters weight (ones) and
    bias (zeros); buffers running_mean, running_var and num_batches_tracked."""

    _ndims = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch norm over (N, C, H, W), as torch.nn.BatchNorm2d."""

    _ndims = (4,)


class BatchNorm3d(_BatchNorm):
    """Batch norm over (N, C, D, H, W), as torch.nn.BatchNorm3d (the batch-norm kernels on (N, C, D, H * W))."""

    _ndims = (5,)
