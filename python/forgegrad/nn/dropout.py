"""Channel and alpha dropout layers with torch.nn's names and arguments (nn.Dropout is in nn/activation.py):
active in training mode, the identity in eval mode. The functions are in nn/functional_pool.py, the ops (masks
from forgegrad's generator) in forgegrad/ops/dropout_feature.py."""
from __future__ import annotations

from .._validate import check_flag
from ..ops.dropout_feature import check_p
from . import functional_pool as F
from .module import Module

__all__ = ["Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout", "FeatureAlphaDropout"]


class _DropoutNd(Module):
    _function = None

    def __init__(self, p: float = 0.5, inplace: bool = False):
        super().__init__()
        self.p = check_p(p, type(self).__name__)
        self.inplace = check_flag(inplace, "inplace")

    def forward(self, input):
        return type(self)._function(input, self.p, self.training, self.inplace)

    def extra_repr(self):
        return f"p={self.p}, inplace={self.inplace}"


class Dropout1d(_DropoutNd):
    """Zeroes whole channels of (N, C, L) or (C, L) input with probability p (scaled by 1 / (1 - p))."""

    _function = staticmethod(F.dropout1d)


class Dropout2d(_DropoutNd):
    """Zeroes whole channels of (N, C, H, W) input (torch's rules and warnings for 3-D and other ranks)."""

    _function = staticmethod(F.dropout2d)


class Dropout3d(_DropoutNd):
    """Zeroes whole channels of (N, C, D, H, W) or (C, D, H, W) input."""

    _function = staticmethod(F.dropout3d)


class AlphaDropout(_DropoutNd):
    """Alpha dropout for SELU networks: dropped elements take SELU's negative saturation, then an affine map keeps
    zero mean and unit variance."""

    _function = staticmethod(F.alpha_dropout)


class FeatureAlphaDropout(_DropoutNd):
    """Alpha dropout of whole channels."""

    _function = staticmethod(F.feature_alpha_dropout)
