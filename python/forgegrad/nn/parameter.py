from __future__ import annotations

import numpy as np

from ..tensor import Tensor, _to_storage

__all__ = ["Parameter"]


class Parameter(Tensor):
    """A Tensor that a Module registers as a learnable parameter (requires_grad by default)."""

    __slots__ = ()

    def __init__(self, data=None, requires_grad: bool = True):
        if data is None:
            data = np.empty((0,), np.float32)
        arr = _to_storage(data)
        if arr.dtype != np.float32:
            raise TypeError(f"Parameter data must be floating point (stored as float32), got {arr.dtype}")
        super().__init__(arr, requires_grad=requires_grad)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()
