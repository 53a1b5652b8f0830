from __future__ import annotations

import numpy as np

from .. import _inference_tensors as _inference
from .. import devices
from ..grad_mode import _inference_threads
from .._validate import check_flag
from ..tensor import Tensor, _to_storage

__all__ = ["Parameter", "InferenceParameter"]


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
        # torch's kind: an inference tensor when data is one, or when data is not a Tensor (new storage) and this
        # thread is in inference mode; a normal Tensor's data gives a normal parameter, in the mode or not
        if data._is_inference if isinstance(data, Tensor) else (_inference_threads and _inference.in_mode()):
            self.__class__ = InferenceParameter
        super().__init__(arr, requires_grad=requires_grad, dtype=arr.dtype)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


class InferenceParameter(Parameter):
    """A Parameter that is an inference tensor (``is_inference()``; forgegrad._inference_tensors), with torch's
    rules outside the mode: no in-place write, no ``requires_grad = True``. ``isinstance(p, Parameter)`` holds;
    ``type(p)`` is this class (torch's is Parameter). Pickled and deep-copied as a normal Parameter, as torch's."""

    __slots__ = ()
    _is_inference = True
    requires_grad = _inference.REQUIRES_GRAD_PROPERTY

    def __reduce_ex__(self, protocol):
        return _normal_parameter, (), self.__getstate__()


def _normal_parameter():
    """An empty plain Parameter that pickle or deepcopy then gives an inference parameter's state (its slots)."""
    return Parameter.__new__(Parameter)


def add_weight_and_bias(module, weight_shape, bias: bool, device=None) -> None:
    """Register ``module.weight`` of ``weight_shape`` and ``module.bias`` of ``(weight_shape[0],)`` (or
    None), uninitialised, on ``device`` (the default device when None: on meta, no memory)."""
    module.weight = Parameter(devices.empty(tuple(weight_shape), device_name=device))
    if check_flag(bias, "bias"):
        module.bias = Parameter(devices.empty((weight_shape[0],), device_name=device))
    else:
        module.register_parameter("bias", None)
