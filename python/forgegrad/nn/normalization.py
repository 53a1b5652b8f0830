"""Normalisation layers over the trailing dimensions: LayerNorm and RMSNorm, as torch.nn."""
from __future__ import annotations

from .. import devices
from ..kernels.norm import _normalized_shape
from . import functional as F
from .module import Module
from .parameter import Parameter

__all__ = ["LayerNorm", "RMSNorm"]


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
        self.elementwise_affine = bool(elementwise_affine)
        if self.elementwise_affine:
            self.weight = Parameter(devices.ones(self.normalized_shape))
            self.bias = Parameter(devices.zeros(self.normalized_shape)) if bias else None
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if self.elementwise_affine and not bias:
            self.register_parameter("bias", None)

    def reset_parameters(self) -> None:
        if self.weight is not None and not self.weight.is_meta:
            self.weight.data.fill(1.0)
        if self.bias is not None and not self.bias.is_meta:
            self.bias.data.fill(0.0)

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
        if self.weight is not None and not self.weight.is_meta:
            self.weight.data.fill(1.0)

    def forward(self, input):
        return F.rms_norm(input, self.normalized_shape, self.weight, self.eps)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"
