"""Tensor's in-place fills (copy_, fill_, zero_, normal_, uniform_): each computes the new values and writes
them through forgegrad._inplace (version counter, autograd rebasing, views), as torch's in-place ops."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from . import devices as _devices
from . import dtypes as _dtypes

if TYPE_CHECKING:
    from .tensor import Tensor


def _tensor():
    from .tensor import Tensor  # (tensor.py imports this module)
    return Tensor


def _wrap(arr):
    return _tensor()._wrap_exact(arr)


class TensorFills:
    __slots__ = ()  # Tensor keeps its slots (no per-instance dict)

    def copy_(self, src, non_blocking=False) -> "Tensor":
        Tensor = _tensor()
        src = src if isinstance(src, Tensor) else Tensor._stored(np.asarray(src))
        return self._inplace(_copy_result, "copy_", src, cast=True)

    def _inplace(self, compute, name, *others, cast=False):
        from ._inplace import inplace
        return inplace(self, compute, name, *others, cast=cast)

    def fill_(self, value) -> "Tensor":
        return self._inplace(lambda t: _wrap(
            _devices.full(t.shape, value, t._data.dtype, _devices.device_of(t._data))), "fill_")

    def zero_(self) -> "Tensor":
        return self.fill_(0)

    def normal_(self, mean=0.0, std=1.0, *, generator=None) -> "Tensor":
        """In place, values from N(mean, std^2) drawn with forgegrad's seeded generator (as nn.init.normal_), e.g.
        DCGAN's ``m.weight.data.normal_(0.0, 0.02)``; on a leaf that requires grad it raises, as torch's."""
        mean, std = float(mean), float(std)  # a 0-d tensor too, as torch's
        if std < 0:
            raise RuntimeError(f"normal_: std must be >= 0, got {std}")
        return self._random_fill(lambda g: g.standard_normal(self.shape) * std + mean, "normal_", generator)

    def uniform_(self, from_=0.0, to=1.0, *, generator=None, **kwargs) -> "Tensor":
        """In place, values from U(from, to) drawn with forgegrad's seeded generator (torch's ``uniform_(from, to)``;
        ``from`` is also taken by keyword)."""
        from_ = kwargs.pop("from", from_)
        if kwargs:
            raise TypeError(f"uniform_() got unexpected keyword arguments {sorted(kwargs)}")
        from_, to = float(from_), float(to)
        if from_ > to:
            raise RuntimeError(f"uniform_: expects from <= to, got from={from_} and to={to}")
        return self._random_fill(lambda g: g.uniform(from_, to, size=self.shape), "uniform_", generator)

    def _random_fill(self, draw, name, generator=None) -> "Tensor":
        if not _dtypes.is_floating(np.dtype(self._data.dtype)):
            raise TypeError(f"{name}: expected a floating point tensor, got dtype {self.dtype}")
        if not _devices.has_data(self._data):
            return self  # a meta tensor has no values: nothing drawn, as nn.init
        from . import random as _random
        # drawn in float64, rounded as nn.init's
        values = draw(_random.resolve(generator, name)).astype(self._data.dtype)
        return self._inplace(lambda t: _wrap(
            _devices.transfer(values, _devices.device_of(t._data))), name)


def _copy_result(t, src):
    """copy_'s value: src broadcast to t's shape in t's dtype (recorded when src requires grad), on
    t's device (copy_ copies across devices, as torch's)."""
    if src.device != t.device and t.device != "meta":
        src = src.to(t.device)
    if src.requires_grad or not isinstance(src._data, np.ndarray):
        return src.to(t.dtype).expand(*t.shape) + 0  # + 0: a node of its own, even without a broadcast
    return _wrap(_dtypes.astype(np.broadcast_to(src._data, t.shape), t._data.dtype))
