"""GroupNorm, InstanceNorm1d/2d/3d, LocalResponseNorm and CrossMapLRN2d (torch.nn's arguments, state_dict keys, init and
results), and the distance modules CosineSimilarity and PairwiseDistance."""
from __future__ import annotations

import warnings

import numpy as np

from .. import devices
from .._args import positive_int
from .._validate import check_bool, check_flag, check_float
from ..autograd import Function
from ..tensor import Tensor
from . import functional as F
from . import init
from .module import Module
from .parameter import Parameter

__all__ = ["GroupNorm", "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d", "LocalResponseNorm",
           "CrossMapLRN2d", "CosineSimilarity", "PairwiseDistance"]


def _tensor(x, cls):
    if not isinstance(x, Tensor):
        raise TypeError(f"{cls}: input must be a forgegrad.Tensor, got {type(x).__name__}")
    return x


class GroupNorm(Module):
    """``GroupNorm(num_groups, num_channels, eps=1e-5, affine=True, *, bias=True)``: normalises input (N, C, *) over
    each group of C / num_groups channels and the spatial positions, then scales by ``weight`` (ones) and shifts by
    ``bias`` (zeros) per channel. state_dict: weight, bias (when affine; bias=False: no bias), as torch."""

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True, *,
                 bias: bool = True):
        super().__init__()
        self.num_groups = positive_int(num_groups, "num_groups", "GroupNorm")
        self.num_channels = positive_int(num_channels, "num_channels", "GroupNorm")
        if self.num_channels % self.num_groups:
            raise ValueError(f"GroupNorm: num_channels ({num_channels}) must be divisible by num_groups "
                             f"({num_groups})")
        self.eps = check_float(eps, "eps", low=0.0)
        self.affine = check_flag(affine, "affine")
        if self.affine:
            self.weight = Parameter(devices.ones((self.num_channels,)))
            if check_flag(bias, "bias"):
                self.bias = Parameter(devices.zeros((self.num_channels,)))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def reset_parameters(self) -> None:
        if self.affine:
            init.ones_(self.weight)
        if self.bias is not None:
            init.zeros_(self.bias)

    def forward(self, input):
        _tensor(input, "GroupNorm")
        if self.affine and input.ndim >= 2 and input.shape[1] != self.num_channels:
            raise ValueError(f"GroupNorm: expected input with num_channels={self.num_channels} channels (dim 1), "
                             f"got input of shape {tuple(input.shape)}")
        return F.group_norm(input, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}, "
                f"bias={self.bias is not None}")


class _InstanceNorm(Module):
    # as torch's _NormBase: a state_dict without num_batches_tracked (saved before torch 0.4.1) loads
    _optional_state_keys = ("num_batches_tracked",)
    _no_batch_dim = 2  # the rank of an unbatched input (C, *spatial)

    def __init__(self, num_features: int, eps: float = 1e-5, momentum=0.1, affine: bool = False,
                 track_running_stats: bool = False, *, bias: bool = True):
        super().__init__()
        cls = type(self).__name__
        self.num_features = positive_int(num_features, "num_features", cls)
        self.eps = check_float(eps, "eps", low=0.0)
        self.momentum = None if momentum is None else check_float(momentum, "momentum")
        self.affine = check_flag(affine, "affine")
        self.track_running_stats = check_flag(track_running_stats, "track_running_stats")
        if self.affine:
            self.weight = Parameter(devices.ones((self.num_features,)))
            if check_flag(bias, "bias"):
                self.bias = Parameter(devices.zeros((self.num_features,)))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if self.track_running_stats:
            self.register_buffer("running_mean", Tensor._stored(devices.zeros((self.num_features,))))
            self.register_buffer("running_var", Tensor._stored(devices.ones((self.num_features,))))
            # torch keeps the counter (shared with batch norm) but instance norm never advances it
            self.register_buffer("num_batches_tracked", Tensor._stored(devices.zeros((), np.int64)))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
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
        _tensor(input, cls)
        ranks = (self._no_batch_dim, self._no_batch_dim + 1)
        if input.ndim not in ranks:
            raise ValueError(f"{cls}: expected {ranks[0]}D (unbatched) or {ranks[1]}D input, got {input.ndim}D input "
                             f"of shape {tuple(input.shape)}")
        feature_dim = input.ndim - self._no_batch_dim
        if input.shape[feature_dim] != self.num_features:
            msg = (f"{cls}: expected input's size at dim={feature_dim} to match num_features ({self.num_features}), "
                   f"got input of shape {tuple(input.shape)}")
            if self.affine:
                raise ValueError(msg)
            warnings.warn(msg + "; the input is normalised anyway (no affine parameters depend on it)", stacklevel=2)
        batched = input.ndim == ranks[1]
        x = input if batched else input.unsqueeze(0)
        y = F.instance_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            self.training or not self.track_running_stats,
                            0.0 if self.momentum is None else self.momentum, self.eps)
        return y if batched else y.squeeze(0)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"bias={self.bias is not None}, track_running_stats={self.track_running_stats}")


class InstanceNorm1d(_InstanceNorm):
    """``InstanceNorm1d(num_features, eps=1e-5, momentum=0.1, affine=False, track_running_stats=False, *, bias=True)``
    over (N, C, L) or unbatched (C, L): each (sample, channel) normalised over L. With track_running_stats, training
    updates running_mean / running_var and evaluation normalises with them, as torch."""

    _no_batch_dim = 2


class InstanceNorm2d(_InstanceNorm):
    """Instance norm over (N, C, H, W) or unbatched (C, H, W), as torch.nn.InstanceNorm2d."""

    _no_batch_dim = 3


class InstanceNorm3d(_InstanceNorm):
    """Instance norm over (N, C, D, H, W) or unbatched (C, D, H, W), as torch.nn.InstanceNorm3d."""

    _no_batch_dim = 4


class LocalResponseNorm(Module):
    """``LocalResponseNorm(size, alpha=1e-4, beta=0.75, k=1.0)``: input / (k + alpha * mean of input^2 over
    ``size`` neighbouring channels)^beta, over (N, C, *)."""

    def __init__(self, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0):
        super().__init__()
        self.size = positive_int(size, "size", "LocalResponseNorm")
        self.alpha, self.beta, self.k = check_float(alpha, "alpha"), check_float(beta, "beta"), check_float(k, "k")

    def forward(self, input):
        return F.local_response_norm(_tensor(input, "LocalResponseNorm"), self.size, self.alpha, self.beta, self.k)

    def extra_repr(self) -> str:
        return f"{self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"


class _CrossMapLRN2dFunction(Function):
    """torch's CrossMapLRN2d Function (the Lua-era one), step for step in the input's dtype.

    Its forward keeps channel 0's square in every channel's sum once the window has moved past it (torch's
    running-sum loop never subtracts it), and its backward is torch's hand-written one, whose window is not
    the forward's: forgegrad reproduces both, so values and gradients are torch's (torch's gradcheck of this
    layer fails too). Use LocalResponseNorm for the exact operation and its true gradient."""

    handles_float64 = True

    @staticmethod
    def forward(ctx, x, size, alpha, beta, k):
        dt = x.dtype.type
        sq = x * x
        channels = x.shape[1]
        pre_pad = int((size - 1) / 2 + 1)
        scale = np.empty_like(x)
        scale[:, 0] = sq[:, :min(pre_pad, channels)].sum(1)
        for c in range(1, channels):  # torch's running sum, in its order
            cur = scale[:, c - 1].copy()
            if c < channels - pre_pad + 1:
                cur += sq[:, c + pre_pad - 1]
            if c > pre_pad:
                cur -= sq[:, c - pre_pad]
            scale[:, c] = cur
        scale *= dt(alpha / size)
        scale += dt(k)
        out = np.power(scale, dt(-beta)) * x
        ctx.save_for_backward(x, out, scale)
        ctx.size, ctx.alpha, ctx.beta = size, alpha, beta
        return out

    @staticmethod
    def backward(ctx, g):
        x, out, scale = ctx.saved_tensors
        size = ctx.size
        if size < 2:
            raise RuntimeError("CrossMapLRN2d: no gradient for size=1 (torch's backward fails there too); use "
                               "LocalResponseNorm(1), the same operation with a gradient")
        dt = x.dtype.type
        channels = x.shape[1]
        grad = np.power(scale, dt(-ctx.beta)) * g
        inv = int(size - (size - 1) / 2)
        padded = np.zeros((x.shape[0], channels + size - 1) + x.shape[2:], x.dtype)
        padded[:, inv:inv + channels] = g * out / scale
        accum = padded[:, :size - 1].sum(1)
        cache = dt(2 * ctx.alpha * ctx.beta / size)
        for c in range(channels):
            accum += padded[:, c + size - 1]
            grad[:, c] -= cache * x[:, c] * accum
            accum -= padded[:, c]
        return grad, None, None, None, None


class CrossMapLRN2d(Module):
    """``CrossMapLRN2d(size, alpha=1e-4, beta=0.75, k=1)`` over (N, C, H, W): torch's legacy cross-channel local
    response norm, input * (k + alpha / size * sum of input^2 over nearby channels)^-beta, with torch's values and
    torch's (approximate) gradient; see _CrossMapLRN2dFunction. LocalResponseNorm is the exact operation."""

    def __init__(self, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1):
        super().__init__()
        self.size = positive_int(size, "size", "CrossMapLRN2d")
        for name, v in (("alpha", alpha), ("beta", beta), ("k", k)):
            check_float(v, f"CrossMapLRN2d: {name}")
        self.alpha, self.beta, self.k = alpha, beta, k  # as given: torch's repr shows k=1, not 1.0

    def forward(self, input):
        x = _tensor(input, "CrossMapLRN2d")
        if x.ndim != 4:
            raise ValueError(f"CrossMapLRN2d: Expected input to be 4D, got {x.ndim}D instead.")
        if x.shape[1] == 0:
            raise ValueError(f"CrossMapLRN2d: expected at least one channel (dim 1), got shape {tuple(x.shape)}")
        if np.dtype(x.dtype).kind != "f":
            raise TypeError(f"CrossMapLRN2d: input must be a floating point tensor, got {x.dtype}")
        return _CrossMapLRN2dFunction.apply(x, self.size, float(self.alpha), float(self.beta), float(self.k))

    def extra_repr(self) -> str:
        return f"{self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"


class CosineSimilarity(Module):
    """``CosineSimilarity(dim=1, eps=1e-8)``: F.cosine_similarity(x1, x2, dim, eps)."""

    def __init__(self, dim: int = 1, eps: float = 1e-8):
        super().__init__()
        self.dim, self.eps = dim, check_float(eps, "eps", low=0.0)

    def forward(self, x1, x2):
        return F.cosine_similarity(x1, x2, self.dim, self.eps)


class PairwiseDistance(Module):
    """``PairwiseDistance(p=2.0, eps=1e-6, keepdim=False)``: F.pairwise_distance(x1, x2, p, eps, keepdim)."""

    def __init__(self, p: float = 2.0, eps: float = 1e-6, keepdim: bool = False):
        super().__init__()
        self.norm, self.eps = check_float(p, "p"), check_float(eps, "eps")
        self.keepdim = check_bool(keepdim, "keepdim")

    def forward(self, x1, x2):
        return F.pairwise_distance(x1, x2, self.norm, self.eps, self.keepdim)
