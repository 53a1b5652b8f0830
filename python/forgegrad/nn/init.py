"""Parameter initialisers (in place, from forgegrad's seeded generator), as torch.nn.init.

A tensor on the meta device has no values to fill: every initialiser returns it unchanged (and draws
no random numbers), so modules built under ``forgegrad.device("meta")`` run their usual init code.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

from .. import _version_counter as _vc
from .. import random as _random
from .. import devices
from ..devices import has_data
from ..tensor import Tensor


def _fans(t: Tensor):
    if t.ndim < 2:
        raise ValueError(f"fan in/out need a tensor with at least 2 dimensions, got shape {t.shape}")
    receptive = int(np.prod(t.shape[2:])) if t.ndim > 2 else 1
    return t.shape[1] * receptive, t.shape[0] * receptive


def calculate_gain(nonlinearity: str, param=None) -> float:
    if nonlinearity in ("linear", "conv1d", "conv2d", "sigmoid", "identity"):
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else param
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"unsupported nonlinearity {nonlinearity!r}")


def _write(t: Tensor, values: np.ndarray) -> Tensor:
    """Give ``t`` the host ``values``: in place on the CPU; on another device a copy there replaces the
    storage (the values are drawn on the host, so every device gets the CPU's numbers)."""
    if isinstance(t._data, np.ndarray):
        _vc.bump(t)  # an in-place write, counted as torch's (t._version); first: it refuses an inference tensor
        t._data[...] = values
    else:
        _vc.rebind(t, devices.transfer(np.ascontiguousarray(values, dtype=t._data.dtype), devices.device_of(t._data)))
    return t


def uniform_(t: Tensor, a: float = 0.0, b: float = 1.0) -> Tensor:
    if not has_data(t._data):
        return t
    # drawn in float64 and rounded to the tensor's dtype (float32, or kept for a float64 tensor)
    return _write(t, _random.generator().uniform(a, b, size=t.shape).astype(t._data.dtype))


def normal_(t: Tensor, mean: float = 0.0, std: float = 1.0) -> Tensor:
    if not has_data(t._data):
        return t
    return _write(t, (_random.generator().standard_normal(t.shape) * std + mean).astype(t._data.dtype))


def constant_(t: Tensor, val: float) -> Tensor:
    if not has_data(t._data):
        return t
    if isinstance(t._data, np.ndarray):
        _vc.bump(t)
        t._data.fill(val)
    else:
        _vc.rebind(t, devices.full(t.shape, val, t._data.dtype, devices.device_of(t._data)))
    return t


def zeros_(t: Tensor) -> Tensor:
    return constant_(t, 0.0)


def ones_(t: Tensor) -> Tensor:
    return constant_(t, 1.0)


def kaiming_uniform_(t: Tensor, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu") -> Tensor:
    fan_in, fan_out = _fans(t)
    fan = fan_in if mode == "fan_in" else fan_out
    bound = math.sqrt(3.0) * calculate_gain(nonlinearity, a) / math.sqrt(max(fan, 1))
    return uniform_(t, -bound, bound)


def kaiming_normal_(t: Tensor, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu") -> Tensor:
    fan_in, fan_out = _fans(t)
    fan = fan_in if mode == "fan_in" else fan_out
    return normal_(t, 0.0, calculate_gain(nonlinearity, a) / math.sqrt(max(fan, 1)))


def xavier_uniform_(t: Tensor, gain: float = 1.0) -> Tensor:
    fan_in, fan_out = _fans(t)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(t, -bound, bound)


def xavier_normal_(t: Tensor, gain: float = 1.0) -> Tensor:
    fan_in, fan_out = _fans(t)
    return normal_(t, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)))


def layer_default_(weight: Tensor, bias: Optional[Tensor] = None) -> None:
    """torch's default initialisation of Linear and Conv layers: weight kaiming_uniform_(a=sqrt(5)),
    bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (fan_in counts the kernel's receptive field)."""
    kaiming_uniform_(weight, a=math.sqrt(5))
    if bias is not None:
        bound = 1 / math.sqrt(_fans(weight)[0])
        uniform_(bias, -bound, bound)
