"""Tensor's dtype and device conversions (float(), long(), type(), to(), cpu(), cuda(), ...), as torch's.

Casts go through the registry's ``cast`` op so that autograd.trace() (the ONNX exporter) records them; like torch,
a cast to the tensor's own dtype returns the tensor itself."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from . import _version_counter as _vc
from . import devices as _devices
from . import dtypes as _dtypes
from .ops.registry import _OPS

if TYPE_CHECKING:
    from .tensor import Tensor

_TENSOR_TYPE_NAMES = _vc.TYPE_NAMES  # torch's type names by dtype ("FloatTensor")


class TensorConversions:
    def _cast(self, dtype) -> "Tensor":
        dtype = _dtypes.to_numpy(dtype)
        if dtype == self._data.dtype:
            return self
        if dtype.kind == "c" and self._data.dtype.kind != "c":  # real -> complex (complex in goes there anyway)
            from .ops._complex import ComplexCastFunction
            return ComplexCastFunction.apply(self, dtype)
        return _OPS["cast"](self, dtype=dtype)

    def float(self) -> "Tensor":
        return self._cast(np.float32)

    def double(self) -> "Tensor":
        return self._cast(np.float64)

    def int(self) -> "Tensor":
        return self._cast(np.int32)

    def type(self, dtype=None, non_blocking=False):
        """type() -> torch's type name (e.g. "torch.FloatTensor", which programs compare with);
        type(dtype) -> the tensor cast to dtype (a dtype or a name such as "torch.LongTensor")."""
        if dtype is None:
            return "torch." + _TENSOR_TYPE_NAMES.get(self._data.dtype, "Tensor")
        if isinstance(dtype, str) and dtype.endswith("Tensor"):
            names = {v: k for k, v in _TENSOR_TYPE_NAMES.items()}
            key = dtype.split(".")[-1]
            if key not in names:
                raise TypeError(f"type: unknown tensor type {dtype!r}")
            dtype = names[key]
        return self._cast(dtype)

    def type_as(self, other) -> "Tensor":
        return self._cast(other._data.dtype)

    def is_floating_point(self) -> bool:
        return _dtypes.is_floating(self._data.dtype)

    def element_size(self) -> int:
        return self._data.dtype.itemsize

    def nelement(self) -> int:
        return self.numel()

    def long(self) -> "Tensor":
        return self._cast(np.int64)

    def bool(self) -> "Tensor":
        return self._cast(np.bool_)

    def to(self, *args, **kwargs) -> "Tensor":
        """to(device=None, dtype=None, non_blocking=False, copy=False), to(dtype, non_blocking=False, copy=False)
        or to(tensor, non_blocking=False, copy=False) (tensor's device and dtype), as torch's: the first positional
        argument's type picks the overload (forgegrad/_torch_named_args.py).

        Moving between devices is recorded by autograd (the gradient flows back to this tensor's
        device) when this tensor requires grad."""
        from ._torch_named_args import to_arguments
        device, dtype, non_blocking, copy = to_arguments(args, kwargs)
        if device is not None and not (isinstance(device, _devices.device) or _devices.is_device_name(device)):
            if dtype is not None:  # not a device: forgegrad has always read it as a dtype (a numpy type, ...)
                raise TypeError(f"to(): got two dtypes, {device!r} and dtype={dtype!r}")
            device, dtype = None, device
        out = self
        if device is not None:
            dev = _devices.device(device).type  # a clear error for a device that is not available
            here = _devices.device_of(self._data)
            if here == dev:
                out = self
            elif self.requires_grad and dev != "meta" and here != "meta":
                from .grad_mode import records_graph
                from .autograd import ToDevice
                out = ToDevice.apply(self, dev) if records_graph() else type(self)._wrap_exact(
                    _devices.transfer(self._data, dev))
            else:
                out = type(self)._wrap_exact(_devices.transfer(self._data, dev))
        if dtype is not None:
            out = out._cast(dtype)
        if copy and out is self:
            out = self.clone()
        return out

    def cpu(self) -> "Tensor":
        return self.to("cpu")

    # non_blocking (torch's hint that a copy may overlap the host's work): forgegrad's copies are synchronous,
    # which a non-blocking copy is allowed to be
    def cuda(self, device=None, non_blocking=False) -> "Tensor":
        return self.to("cuda" if device is None else device)
