from __future__ import annotations

import numpy as np

from .. import devices
from .._validate import check_flag
from ..tensor import Tensor, _to_storage

__all__ = ["Parameter"]


class Parameter(Tensor):
    """A Tensor that a Module registers as a learnable parameter (requires_grad by default)."""

    __slots__ = ()

    def __init__(self, data=None, requires_grad: bool = True):
        if data is None:
            data = np.empty((0,), np.float32)
        # a Tensor keeps its dtype (a float64 tensor gives a float64 parameter, as torch); other data is
        # stored as a tensor would store it (float -> float32)
        arr = data._data if isinstance(data, Tensor) else _to_storage(data)
        if arr.dtype not in (np.float32, np.float64):
            raise TypeError(f"Parameter data must be floating point (float32 or float64), got {arr.dtype}")
        super().__init__(arr, requires_grad=requires_grad, dtype=arr.dtype)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


def add_weight_and_bias(module, weight_shape, bias: bool, device=None) -> None:
    """Register ``module.weight`` of ``weight_shape`` and ``module.bias`` of ``(weight_shape[0],)`` (or
    None), uninitialised, on ``device`` (the default device when None: on meta, no memory)."""
    module.weight = Parameter(devices.empty(tuple(weight_shape), device_name=device))
    if check_flag(bias, "bias"):
        module.bias = Parameter(devices.empty((weight_shape[0],), device_name=device))
    else:
        module.register_parameter("bias", None)
