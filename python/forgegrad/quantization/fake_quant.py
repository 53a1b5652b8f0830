"""FakeQuantize: an observer plus fake quantization, as torch.ao.quantization.FakeQuantize.

In training it records the range of what passes (``observer_enabled``), recomputes the scale and
zero point from it and rounds the values to that int grid and back (``fake_quant_enabled``), with a
straight-through gradient (ops ``fake_quantize_per_tensor_affine`` / ``per_channel_affine``).
``disable_observer()`` freezes the qparams (usual after a few QAT epochs).
"""
from __future__ import annotations

import numpy as np

from ..nn.module import Module
from ..ops.fake_quant import fake_quantize_per_channel_affine, fake_quantize_per_tensor_affine
from ..tensor import Tensor
from .observers import MovingAverageMinMaxObserver, MovingAveragePerChannelMinMaxObserver, ObserverBase

__all__ = ["FakeQuantize", "default_fake_quant", "default_weight_fake_quant"]


class FakeQuantize(Module):
    """``FakeQuantize(observer=MovingAverageMinMaxObserver, **observer_kwargs)``."""

    def __init__(self, observer=MovingAverageMinMaxObserver, **observer_kwargs):
        super().__init__()
        obs = observer(**observer_kwargs) if isinstance(observer, type) else observer
        if not isinstance(obs, ObserverBase):
            raise TypeError(f"FakeQuantize: observer must be an observer class or instance from "
                            f"forgegrad.quantization.observers, got {observer!r}")
        self.activation_post_process = obs
        self.quant_min, self.quant_max = obs.quant_min, obs.quant_max
        self.is_per_channel = obs.qscheme.startswith("per_channel")
        self.ch_axis = getattr(obs, "ch_axis", -1)
        self.register_buffer("fake_quant_enabled", Tensor._stored(np.array([1], np.int64)))
        self.register_buffer("observer_enabled", Tensor._stored(np.array([1], np.int64)))
        self.register_buffer("scale", Tensor._stored(np.array([1.0], np.float32)))
        self.register_buffer("zero_point", Tensor._stored(np.array([0], np.int64)))

    def enable_fake_quant(self, enabled: bool = True):
        self.fake_quant_enabled._data[...] = int(bool(enabled))
        return self

    def disable_fake_quant(self):
        return self.enable_fake_quant(False)

    def enable_observer(self, enabled: bool = True):
        self.observer_enabled._data[...] = int(bool(enabled))
        return self

    def disable_observer(self):
        return self.enable_observer(False)

    @property
    def calibrated(self) -> bool:
        return self.activation_post_process.calibrated

    def calculate_qparams(self):
        return self.activation_post_process.calculate_qparams()

    def forward(self, x):
        if int(self.observer_enabled._data[0]):
            self.activation_post_process(x.detach() if isinstance(x, Tensor) else x)
            scale, zero_point = self.calculate_qparams()
            self.scale._data, self.zero_point._data = scale, zero_point
        if int(self.fake_quant_enabled._data[0]):
            if not self.calibrated:
                raise RuntimeError("FakeQuantize: fake quantization is on but no data was observed yet "
                                   "(enable the observer for the first batches)")
            if self.is_per_channel:
                return fake_quantize_per_channel_affine(x, Tensor._stored(self.scale._data),
                                                        Tensor._stored(self.zero_point._data),
                                                        self.ch_axis % x.ndim, self.quant_min, self.quant_max)
            return fake_quantize_per_tensor_affine(x, float(self.scale._data[0]), int(self.zero_point._data[0]),
                                                   self.quant_min, self.quant_max)
        return x

    def extra_repr(self) -> str:
        return (f"fake_quant_enabled={int(self.fake_quant_enabled._data[0])}, "
                f"observer_enabled={int(self.observer_enabled._data[0])}, quant_min={self.quant_min}, "
                f"quant_max={self.quant_max}, ch_axis={self.ch_axis}")


def default_fake_quant() -> FakeQuantize:
    """Activations: quint8, per tensor affine, moving-average min/max (torch's default_fake_quant)."""
    return FakeQuantize(MovingAverageMinMaxObserver, dtype="quint8", qscheme="per_tensor_affine")


def default_weight_fake_quant() -> FakeQuantize:
    """Weights: qint8, per output channel symmetric, moving-average min/max (torch's
    default_per_channel_weight_fake_quant)."""
    return FakeQuantize(MovingAveragePerChannelMinMaxObserver, ch_axis=0, dtype="qint8",
                        qscheme="per_channel_symmetric")
