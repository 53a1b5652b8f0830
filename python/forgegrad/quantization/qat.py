"""Quantization-aware training: ``prepare_qat`` swaps each Linear / Conv2d for a version that
fake-quantizes its input (quint8, per tensor), its weight (qint8, per output channel, symmetric) and
its output (quint8) in the forward pass, with straight-through gradients, so training learns
weights that survive int8. ``convert`` (forgegrad.quantization.static) then builds the int8 layers
from the fake-quant observers.

    qat_model = prepare_qat(model)
    fit(qat_model, loss_fn, optim.SGD(qat_model.parameters(), lr=1e-3), loader, epochs=2)
    qmodel = convert(qat_model)

With ``inplace=True`` the QAT layers share the float layers' parameters (an optimizer built on the
float model keeps working); their state_dict keys are the float ones plus the fake-quant modules' buffers.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

from ..nn import functional as F
from ..nn.conv import Conv2d
from ..nn.linear import Linear
from .fake_quant import FakeQuantize, default_fake_quant, default_weight_fake_quant
from .static import _check_types, _copy_float, _swap

__all__ = ["QATQConfig", "default_qat_qconfig", "prepare_qat", "QATLinear", "QATConv2d"]


class QATQConfig(NamedTuple):
    """FakeQuantize factories for activations and weights (torch's QConfig with fake quants)."""

    activation: Callable[[], FakeQuantize]
    weight: Callable[[], FakeQuantize]


default_qat_qconfig = QATQConfig(default_fake_quant, default_weight_fake_quant)


class _QAT:
    @classmethod
    def from_float(cls, mod, qconfig: QATQConfig):
        q = cls.__new__(cls)
        _copy_float(q, mod)
        q.input_fake_quant = qconfig.activation()
        q.weight_fake_quant = qconfig.weight()
        q.activation_post_process = qconfig.activation()
        return q

    def forward(self, input):
        out = self._float_forward(self.input_fake_quant(input), self.weight_fake_quant(self.weight))
        return self.activation_post_process(out)


class QATLinear(_QAT, Linear):
    def _float_forward(self, x, w):
        return F.linear(x, w, self.bias)


class QATConv2d(_QAT, Conv2d):
    def _float_forward(self, x, w):
        return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


_QAT_TYPES = {Linear: QATLinear, Conv2d: QATConv2d}


def prepare_qat(model, qconfig=None, inplace: bool = False, modules=None):
    """A copy of ``model`` (or ``model`` itself with ``inplace=True``) whose Linear and Conv2d layers
    fake-quantize inputs, weights and outputs. ``qconfig``: a QATQConfig (default_qat_qconfig)."""
    _check_types(modules, "prepare_qat")
    qconfig = default_qat_qconfig if qconfig is None else qconfig
    if not isinstance(qconfig, QATQConfig):
        raise TypeError(f"prepare_qat: qconfig must be a QATQConfig, got {type(qconfig).__name__}")
    model = _swap(model, lambda m: _QAT_TYPES[type(m)].from_float(m, qconfig), "prepare_qat", inplace)
    return model.train()
