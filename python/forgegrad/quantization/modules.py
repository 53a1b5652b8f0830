"""Dynamic-quantized modules (torch.ao.nn.quantized.dynamic's): int8 weights, activations quantized
per call, matrix products on forgegrad's int8 kernels (``forgegrad._C.quant``).

State: ``weight`` (int8, (out_features, in_features)), ``weight_scale`` (float32 per output channel,
zero point 0) and ``bias`` (float32) are buffers, so ``state_dict`` / ``forgegrad.save`` store the
int8 values and the scales (about a quarter of the float32 size). The packed kernel layout is a
cache rebuilt after ``load_state_dict``.
"""
from __future__ import annotations

import numpy as np

from .. import _C
from .._args import positive_int
from ..devices import MetaArray
from ..grad_mode import recorder
from ..nn.hooks import has_call_hooks
from ..nn.module import Module
from ..tensor import Tensor
from .dtypes import as_qdtype, qint8
from ._traced import QuantizedLayerCall
from .functional import quantize_weight_per_channel

__all__ = ["DynamicQuantizedLinear", "WeightOnlyInt8Linear"]

_F32 = np.dtype(np.float32)


def _f32_input(x, cls: str) -> np.ndarray:
    if not isinstance(x, Tensor):
        raise TypeError(f"{cls}: input must be a forgegrad.Tensor, got {type(x).__name__}")
    if x.dtype != np.float32:
        raise TypeError(f"{cls}: input must be float32, got {x.dtype}")
    return x._data


class DynamicQuantizedLinear(Module):
    """y = x W^T + b with W in int8 (per output channel, symmetric) and x quantized to uint8 per call
    over the whole batch, as ``torch.ao.nn.quantized.dynamic.Linear``.

    Args:
        in_features, out_features, bias: as nn.Linear.
        dtype: qint8 (the only weight dtype).
        reduce_range: quantize activations to 7 bits as torch's x86/fbgemm engine does (default
            True, for parity with torch); False uses all 8 bits (half the activation rounding error;
            forgegrad's kernels are exact either way).
        relu: apply ReLU in the kernel's output pass (set by quantize_dynamic for Linear + ReLU).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, dtype=qint8,
                 reduce_range: bool = True, relu: bool = False):
        super().__init__()
        if as_qdtype(dtype) is not qint8:
            raise ValueError(f"DynamicQuantizedLinear: weights must be qint8, got {dtype!r}")
        self.in_features = positive_int(in_features, "in_features", "DynamicQuantizedLinear")
        self.out_features = positive_int(out_features, "out_features", "DynamicQuantizedLinear")
        self.reduce_range = bool(reduce_range)
        self.relu = bool(relu)
        self.register_buffer("weight", Tensor._wrap(np.zeros((self.out_features, self.in_features), np.int8)))
        self.register_buffer("weight_scale", Tensor._wrap(np.ones(self.out_features, np.float32)))
        self.register_buffer("bias", Tensor._wrap(np.zeros(self.out_features, np.float32)) if bias else None)
        self._packed = None

    @classmethod
    def from_float(cls, linear, reduce_range: bool = True, relu: bool = False) -> "DynamicQuantizedLinear":
        """The quantized copy of an nn.Linear (weights per-channel symmetric, as torch's
        per_channel_dynamic_qconfig)."""
        q = cls(linear.in_features, linear.out_features, linear.bias is not None, reduce_range=reduce_range,
                relu=relu)
        w = np.asarray(linear.weight._data, dtype=np.float32)
        if not np.isfinite(w).all():
            raise ValueError("DynamicQuantizedLinear.from_float: the weight holds NaN or infinity")
        q.set_weight(w, None if linear.bias is None else np.asarray(linear.bias._data, np.float32))
        return q

    def set_weight(self, w: np.ndarray, bias=None) -> None:
        """Quantize float32 weights (out_features, in_features) into this module."""
        qw, scale = quantize_weight_per_channel(w)
        if qw.shape != self.weight.shape:
            raise ValueError(f"weight must have shape {self.weight.shape}, got {qw.shape}")
        self.weight._data[...] = qw
        self.weight_scale._data[...] = scale
        if bias is not None and self.bias is not None:
            self.bias._data[...] = bias
        self._packed = None

    def _post_load_state_dict(self) -> None:
        self._packed = None  # the int8 weights changed in place: repack on the next call

    def packed(self):
        """(packed weights, column sums, weight scales, bias) as the kernel takes them, built on first use."""
        if self._packed is None:
            packed, colsum = _C.quant.pack_weight(np.ascontiguousarray(self.weight._data))
            self._packed = (packed, colsum, self.weight_scale._data, None if self.bias is None else self.bias._data)
        return self._packed

    def dequantized_weight(self) -> np.ndarray:
        return self.weight._data.astype(np.float32) * self.weight_scale._data[:, None]

    def forward(self, input):
        if recorder() is not None:  # under trace() (the ONNX exporter): one recorded op
            _f32_input(input, "DynamicQuantizedLinear")
            return QuantizedLayerCall.apply(input, self)
        x = input._data if type(input) is Tensor else _f32_input(input, "DynamicQuantizedLinear")
        return Tensor._wrap(self._compute(x))

    def _compute(self, x: np.ndarray) -> np.ndarray:
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"DynamicQuantizedLinear: input must have shape (*, {self.in_features}), got {x.shape}")
        if type(x) is MetaArray:  # the meta device (summary, shape checks): the output's shape only
            return MetaArray(x.shape[:-1] + (self.out_features,), np.float32)
        packed, colsum, scale, bias = self._packed or self.packed()
        if x.ndim == 2:  # the common case: no reshape (the kernel checks dtype and layout)
            if x.flags.c_contiguous and x.dtype == np.float32:
                return _C.quant.linear_dynamic(x, packed, colsum, scale, bias, self.reduce_range, self.relu)
        if x.dtype != np.float32:
            raise TypeError(f"DynamicQuantizedLinear: input must be float32, got {x.dtype}")
        x2 = np.ascontiguousarray(x.reshape(-1, self.in_features))
        y = _C.quant.linear_dynamic(x2, packed, colsum, scale, bias, self.reduce_range, self.relu)
        return y.reshape(x.shape[:-1] + (self.out_features,))

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, dtype=qint8, "
                f"qscheme=per_channel_symmetric, reduce_range={self.reduce_range}"
                + (", relu=True" if self.relu else ""))


class DynamicLinearChain:
    """A Sequential of DynamicQuantizedLinear layers (and the nn.Identity that quantize_dynamic leaves where it
    fused a ReLU) run back to back on arrays: at batch 1 an MLP's three int8 kernel calls take ~4 us and the
    module calls around them (Module.__call__, forward, checks, the Tensors between layers) as long again.
    quantize_dynamic attaches one to each such Sequential, whose __call__ runs it outside trace() while its
    modules are the ones it was made for. ``run`` reads each layer's packed weights and settings at each call
    and returns None (the modules then run one by one and raise their usual errors) for anything they would
    not pass straight to the kernel: an input that is not a 2-D C-contiguous float32 array, a module with
    forward pre-hooks, sizes that do not chain. Same kernel calls, same arguments: the same bits."""

    def __init__(self, mods):
        self.mods = tuple(mods)
        self.layers = tuple(m for m in self.mods if type(m) is DynamicQuantizedLinear)

    @classmethod
    def of(cls, mods):
        """The chain of ``mods`` (a Sequential's modules), or None when one is not a DynamicQuantizedLinear or
        an nn.Identity, or none is a DynamicQuantizedLinear."""
        from ..nn.linear import Identity
        mods = tuple(mods)
        if not any(type(m) is DynamicQuantizedLinear for m in mods) or \
                any(type(m) is not DynamicQuantizedLinear and type(m) is not Identity for m in mods):
            return None
        return cls(mods)

    def run(self, x):
        if type(x) is not np.ndarray or x.ndim != 2 or x.dtype is not _F32 or not x.flags.c_contiguous:
            return None
        for m in self.mods:
            if has_call_hooks(m):
                return None
        linear = _C.quant.linear_dynamic
        for layer in self.layers:
            if x.shape[1] != layer.in_features:
                return None
            packed, colsum, scale, bias = layer._packed or layer.packed()
            x = linear(x, packed, colsum, scale, bias, layer.reduce_range, layer.relu)
        return x


def weight_only_rows(layer, x: np.ndarray, who: str, kernel) -> np.ndarray:
    """A weight-only Linear's output for x (*, in_features): ``kernel`` on x as 2-D contiguous rows, shaped back
    (the meta device: the shape only)."""
    if x.ndim < 1 or x.shape[-1] != layer.in_features:
        raise ValueError(f"{who}: input must have shape (*, {layer.in_features}), got {x.shape}")
    if type(x) is MetaArray:
        return MetaArray(x.shape[:-1] + (layer.out_features,), np.float32)
    x2 = x if (x.ndim == 2 and x.flags.c_contiguous) else np.ascontiguousarray(x.reshape(-1, layer.in_features))
    y = kernel(x2)
    return y if x.ndim == 2 else y.reshape(x.shape[:-1] + (layer.out_features,))


class WeightOnlyInt8Linear(DynamicQuantizedLinear):
    """y = x (W_int8 * scale)^T + b with float32 activations: only the weights are int8 (per output
    channel, symmetric), converted to float inside the kernel as they stream in (the decoder-LLM
    case: at a few rows the product is bound by reading W, and int8 reads a quarter of the bytes).
    Same state as DynamicQuantizedLinear (``weight`` int8, ``weight_scale``, ``bias``)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, dtype=qint8):
        super().__init__(in_features, out_features, bias, dtype=dtype)

    @classmethod
    def from_float(cls, linear, **_ignored) -> "WeightOnlyInt8Linear":
        q = cls(linear.in_features, linear.out_features, linear.bias is not None)
        w = np.asarray(linear.weight._data, dtype=np.float32)
        if not np.isfinite(w).all():
            raise ValueError("WeightOnlyInt8Linear.from_float: the weight holds NaN or infinity")
        q.set_weight(w, None if linear.bias is None else np.asarray(linear.bias._data, np.float32))
        return q

    def forward(self, input):
        if recorder() is not None:  # under trace() (the ONNX exporter): one recorded op
            _f32_input(input, "WeightOnlyInt8Linear")
            return QuantizedLayerCall.apply(input, self)
        return Tensor._wrap(self._compute(_f32_input(input, "WeightOnlyInt8Linear")))

    def _compute(self, x: np.ndarray) -> np.ndarray:
        return weight_only_rows(self, x, "WeightOnlyInt8Linear", lambda x2: _C.quant.linear_weight_only(
            x2, self.weight._data, self.weight_scale._data, None if self.bias is None else self.bias._data))

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, dtype=qint8 (weights only), "
                "qscheme=per_channel_symmetric")
