"""Static post-training quantization of Linear and Conv2d: prepare, calibrate, convert.

    prepared = prepare(model)                   # observers on each layer's input and output
    calibrate(prepared, loader, num_batches=10) # run float32 data through it (no_grad, eval)
    qmodel = convert(prepared)                  # QuantizedLinear / QuantizedConv2d

Each quantized layer takes a float input, quantizes it to uint8 with the scale and zero point its
input observer chose, multiplies with int8 weights (per output channel, symmetric) accumulating in
int32, adds the bias in float and re-quantizes the result with its output observer's qparams
(as torch's quantized modules, whose outputs are quint8), returning the dequantized float values.
The layers in between (ReLU, pools, Flatten) run in float on those values. The products run on
forgegrad's int8 GEMM kernels (see _int_ops; a convolution is im2col + that GEMM).

``QConfig(activation=..., weight=...)`` picks the observers (factories, as torch's qconfig);
``get_default_qconfig("minmax" | "moving_average" | "percentile")``. Only Linear and Conv2d
(groups=1) are quantized statically; other layers stay float. ``convert`` of a model whose
observers saw no data raises, naming the layer.

``convert`` also fuses, inside an nn.Sequential, a QuantizedConv2d with the nn.ReLU and/or the
non-overlapping nn.MaxPool2d (window = stride, no padding, floor) right after it, as torch's
fuse_modules does: the convolution applies them to its uint8 output (both commute with the
increasing dequantize, so the bits are those of the float layers) and they become nn.Identity.
``convert(..., fuse=False)`` keeps them as they are.
"""
from __future__ import annotations

import copy
from typing import Callable, NamedTuple

import numpy as np

from .. import _C
from ..autograd import no_grad
from ..devices import MetaArray
from ..grad_mode import recorder
from ..nn.activation import ReLU
from ..nn.container import Sequential
from ..nn.conv import Conv2d, MaxPool2d
from ..nn.linear import Identity, Linear
from ..nn.hooks import HOOK_STORES, has_own_call_hooks
from ..nn.module import Module
from ..tensor import Tensor
from . import _int_ops
from ._traced import QuantizedLayerCall
from .histogram import HistogramObserver
from .observers import (MinMaxObserver, MovingAverageMinMaxObserver, ObserverBase, PercentileObserver,
                        PerChannelMinMaxObserver)

__all__ = ["QConfig", "get_default_qconfig", "default_qconfig", "prepare", "calibrate", "convert",
           "ObservedLinear", "ObservedConv2d", "QuantizedLinear", "QuantizedConv2d"]

F32 = np.float32


class QConfig(NamedTuple):
    """Observer factories: ``activation()`` for inputs/outputs (quint8), ``weight()`` for weights (qint8)."""

    activation: Callable[[], ObserverBase]
    weight: Callable[[], ObserverBase]


def _weight_observer():
    return PerChannelMinMaxObserver(ch_axis=0, dtype="qint8", qscheme="per_channel_symmetric")


def get_default_qconfig(activation_observer: str = "minmax", reduce_range: bool = False) -> QConfig:
    """Per-tensor affine quint8 activations observed by "minmax", "moving_average", "percentile"
    (99.99th) or "histogram" (HistogramObserver: torch's x86 default, with reduce_range=True);
    per-channel symmetric qint8 weights.

    ``reduce_range=True`` (torch's x86 / fbgemm default for static activations) maps the observed range
    onto [0, 127] instead of [0, 255]: half the resolution, but inputs inside the calibrated range
    quantize to bytes <= 127, which the AVX2 int8 kernel multiplies with vpmaddubsw (about 1.3x the
    speed of its exact 8-bit path; the same integers). As in torch, activations are still quantized to
    the whole quint8 range at run time, so an input past the calibrated range is not clipped: that call
    simply takes the 8-bit path."""
    rr = bool(reduce_range)
    factories = {"minmax": lambda: MinMaxObserver(dtype="quint8", reduce_range=rr),
                 "moving_average": lambda: MovingAverageMinMaxObserver(dtype="quint8", reduce_range=rr),
                 "percentile": lambda: PercentileObserver(dtype="quint8", reduce_range=rr),
                 "histogram": lambda: HistogramObserver(dtype="quint8", reduce_range=rr)}
    if activation_observer not in factories:
        raise ValueError(f"get_default_qconfig: activation_observer must be one of {sorted(factories)}, "
                         f"got {activation_observer!r}")
    return QConfig(factories[activation_observer], _weight_observer)


default_qconfig = get_default_qconfig()


def _check_qconfig(qconfig) -> QConfig:
    qconfig = default_qconfig if qconfig is None else qconfig
    if not isinstance(qconfig, QConfig):
        raise TypeError(f"qconfig must be a forgegrad.quantization.QConfig, got {type(qconfig).__name__}")
    for name in ("activation", "weight"):
        if not isinstance(getattr(qconfig, name)(), ObserverBase):
            raise TypeError(f"qconfig.{name}() must return an observer")
    return qconfig


# ---- observed (prepared) layers ---------------------------------------------------------------------
def _copy_float(dst, src):
    """dst shares src's parameters and hyper-parameters (dst was made with object.__new__)."""
    Module.__init__(dst)
    for k, v in src.__dict__.items():
        if k not in ("_parameters", "_buffers", "_modules", "_non_persistent") and k not in HOOK_STORES:
            object.__setattr__(dst, k, v)
    for k, p in src._parameters.items():
        dst.register_parameter(k, p)
    dst.training = src.training


class _Observed:
    """Mixin: observe the input and the output of the float layer."""

    @classmethod
    def from_float(cls, mod, qconfig: QConfig):
        obs = cls.__new__(cls)
        _copy_float(obs, mod)
        obs.input_observer = qconfig.activation()
        obs.activation_post_process = qconfig.activation()
        obs.weight_observer = qconfig.weight()
        return obs

    def forward(self, input):
        self.input_observer(input)
        out = super().forward(input)
        self.activation_post_process(out)
        return out


class ObservedLinear(_Observed, Linear):
    pass


class ObservedConv2d(_Observed, Conv2d):
    pass


_OBSERVED = {Linear: ObservedLinear, Conv2d: ObservedConv2d}


def _swap(model, make, what: str, inplace: bool):
    """Replace every exact Linear/Conv2d by ``make(module, path)``; returns the (copied) model."""
    if not isinstance(model, Module):
        raise TypeError(f"{what}: model must be a forgegrad Module, got {type(model).__name__}")
    if not inplace:
        model = copy.deepcopy(model)
    if type(model) in _OBSERVED:
        raise ValueError(f"{what}: wrap a lone {type(model).__name__} in nn.Sequential (the top-level module "
                         "cannot be replaced in place)")
    swapped = 0
    for path, parent in list(model.named_modules()):
        for name, child in list(parent._modules.items()):
            if type(child) in _OBSERVED:
                if type(child) is Conv2d and child.groups != 1:
                    raise ValueError(f"{what}: {path + '.' if path else ''}{name} is a grouped Conv2d "
                                     f"(groups={child.groups}); static quantization supports groups=1 only")
                setattr(parent, name, make(child))
                swapped += 1
    if swapped == 0:
        raise ValueError(f"{what}: {type(model).__name__} has no Linear or Conv2d layer to quantize "
                         "(static quantization supports nn.Linear and nn.Conv2d)")
    return model


def _check_types(modules, what):
    if modules is None:
        return
    bad = [m for m in modules if m not in _OBSERVED]
    if bad:
        names = ", ".join(getattr(m, "__name__", repr(m)) for m in bad)
        raise ValueError(f"{what}: unsupported layer type(s) {names}: static quantization supports nn.Linear and "
                         "nn.Conv2d (use quantize_dynamic for LSTM/GRU)")


def prepare(model, qconfig=None, inplace: bool = False, modules=None):
    """A copy of ``model`` whose Linear and Conv2d layers observe their inputs and outputs.
    ``modules`` (optional): the layer types to quantize; only nn.Linear and nn.Conv2d are supported."""
    _check_types(modules, "prepare")
    qconfig = _check_qconfig(qconfig)
    return _swap(model, lambda m: _OBSERVED[type(m)].from_float(m, qconfig), "prepare", inplace)


def calibrate(model, loader, num_batches=None) -> int:
    """Run the batches of ``loader`` (``x`` or ``(x, ...)``, float32) through the prepared ``model``
    in eval mode without a graph; returns the number of batches seen."""
    if num_batches is not None and (isinstance(num_batches, bool) or not isinstance(num_batches, int)
                                    or num_batches <= 0):
        raise ValueError(f"calibrate: num_batches must be a positive int or None, got {num_batches!r}")
    was = model.training
    model.eval()
    seen = 0
    try:
        with no_grad():
            for batch in loader:
                x = batch[0] if isinstance(batch, (tuple, list)) else batch
                arr = x._data if isinstance(x, Tensor) else x
                if not isinstance(arr, np.ndarray):
                    raise TypeError(f"calibrate: batches must hold numpy arrays or Tensors, got {type(x).__name__}")
                if arr.dtype != np.float32:
                    raise TypeError(f"calibrate: calibration data must be float32, got {arr.dtype} in batch {seen} "
                                    "(cast it with .astype(np.float32))")
                model(Tensor._stored(arr))
                seen += 1
                if num_batches is not None and seen >= num_batches:
                    break
    finally:
        model.train(was)
    if seen == 0:
        raise ValueError("calibrate: the loader yielded no batches")
    return seen


# ---- quantized layers ----------------------------------------------------------------------------------
def _qparams(observer, path, what):
    if not observer.calibrated:
        raise RuntimeError(f"convert: the {what} observer of {path} has seen no data: calibrate the prepared model "
                           "(forgegrad.quantization.calibrate(model, loader)) or train it with prepare_qat first")
    if what != "weight" and observer.dtype != "quint8":
        raise ValueError(f"convert: {path}: activations must be observed as quint8, got {observer.dtype}")
    scale, zp = observer.calculate_qparams()
    return scale, zp


def _quantize_weight(w, observer, path):
    observer(w)
    if observer.dtype != "qint8" or not observer.symmetric or not observer.qscheme.startswith("per_channel"):
        raise ValueError(f"convert: {path}: weights must be observed per channel, symmetric, qint8 "
                         f"(got {observer.dtype} {observer.qscheme})")
    scale, _ = observer.calculate_qparams()
    shape = (-1,) + (1,) * (w.ndim - 1)
    q = np.clip(np.rint(w * (F32(1.0) / scale).astype(F32).reshape(shape)), observer.quant_min, observer.quant_max)
    return q.astype(np.int8), scale


class _Quantized(Module):
    """int8 weights (buffers ``weight``, ``weight_scale``), float bias, the input and output qparams."""

    def _init_state(self, out_ch, w_shape, has_bias):
        self.register_buffer("weight", Tensor._wrap(np.zeros(w_shape, np.int8)))
        self.register_buffer("weight_scale", Tensor._wrap(np.ones(out_ch, F32)))
        self.register_buffer("bias", Tensor._wrap(np.zeros(out_ch, F32)) if has_bias else None)
        for name in ("input", "output"):
            self.register_buffer(f"{name}_scale", Tensor._wrap(np.ones(1, F32)))
            self.register_buffer(f"{name}_zero_point", Tensor._stored(np.zeros(1, np.int64)))

    def _fill(self, mod, path, weight_observer, input_observer, output_observer):
        w = np.asarray(mod.weight._data, F32)
        if not np.isfinite(w).all():
            raise ValueError(f"convert: {path}: the weight holds NaN or infinity")
        q, scale = _quantize_weight(w, weight_observer, path)
        self.weight._data[...] = q
        self.weight_scale._data[...] = scale
        self._post_load_state_dict()
        if self.bias is not None:
            self.bias._data[...] = mod.bias._data
        for name, obs in (("input", input_observer), ("output", output_observer)):
            s, z = _qparams(obs, path, name)
            getattr(self, f"{name}_scale")._data[...] = s
            getattr(self, f"{name}_zero_point")._data[...] = z

    def _float_input(self, input) -> np.ndarray:
        x = input._data if isinstance(input, Tensor) else input
        if not isinstance(x, (np.ndarray, MetaArray)) or x.dtype != np.float32:
            raise TypeError(f"{type(self).__name__}: input must be a float32 Tensor")
        return x

    def qparams(self, name):
        """(scale, zero_point) of the "input" or the "output"."""
        return float(getattr(self, f"{name}_scale")._data[0]), int(getattr(self, f"{name}_zero_point")._data[0])

    def packed(self):
        """(packed int8 weights, column sums) in the int8 GEMM's layout, built on first use."""
        if self.__dict__.get("_packed") is None:
            w = self.weight._data
            w = _int_ops.conv_weight_matrix(w) if w.ndim == 4 else w
            self.__dict__["_packed"] = _C.quant.pack_weight(np.ascontiguousarray(w))
        return self.__dict__["_packed"]

    def _post_load_state_dict(self) -> None:
        self.__dict__["_packed"] = None  # the int8 weights changed in place: repack on the next call

    def _int_args(self):
        return (self.packed(), self.weight_scale._data, None if self.bias is None else self.bias._data)

    def dequantized_weight(self) -> np.ndarray:
        shape = (-1,) + (1,) * (self.weight._data.ndim - 1)
        return self.weight._data.astype(F32) * self.weight_scale._data.reshape(shape)


class QuantizedLinear(_Quantized):
    """Static int8 Linear: see the module docstring."""

    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        self._init_state(out_features, (out_features, in_features), bias)

    @classmethod
    def from_observed(cls, mod, path="", weight_observer=None, input_observer=None, output_observer=None):
        q = cls(mod.in_features, mod.out_features, mod.bias is not None)
        q._fill(mod, path, weight_observer or mod.weight_observer, input_observer or mod.input_observer,
                output_observer or mod.activation_post_process)
        return q

    def forward(self, input):
        x = self._float_input(input)
        if recorder() is not None:  # under trace() (the ONNX exporter): one recorded op
            return QuantizedLayerCall.apply(input, self)
        return Tensor._wrap(self._compute(x))

    def _compute(self, x):
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"QuantizedLinear: input must have shape (*, {self.in_features}), got {x.shape}")
        if type(x) is MetaArray:  # the meta device (summary, shape checks): the output's shape only
            return MetaArray(x.shape[:-1] + (self.out_features,), F32)
        xq = _int_ops.quantize_u8(x, *self.qparams("input"))
        packed, w_scale, bias = self._int_args()
        yq = _int_ops.linear(xq.reshape(-1, self.in_features), *self.qparams("input"), packed, w_scale, bias,
                             *self.qparams("output"))
        return _int_ops.dequantize_u8(yq.reshape(xq.shape[:-1] + (self.out_features,)), *self.qparams("output"))

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"input_scale={float(self.input_scale._data[0]):.4g}, "
                f"output_scale={float(self.output_scale._data[0]):.4g}")


class QuantizedConv2d(_Quantized):
    """Static int8 Conv2d (groups=1): see the module docstring."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=(1, 1), padding=(0, 0), dilation=(1, 1),
                 bias=True):
        super().__init__()
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size, self.stride, self.dilation = tuple(kernel_size), tuple(stride), tuple(dilation)
        self.padding = padding if isinstance(padding, str) else tuple(padding)
        self._init_state(out_channels, (out_channels, in_channels) + self.kernel_size, bias)
        # set by convert's fusion: ReLU and a max-pool window (stride = window) applied to the output
        self.fused_relu, self.fused_pool = False, None

    @classmethod
    def from_observed(cls, mod, path="", weight_observer=None, input_observer=None, output_observer=None):
        q = cls(mod.in_channels, mod.out_channels, mod.kernel_size, mod.stride, mod.padding, mod.dilation,
                mod.bias is not None)
        q._fill(mod, path, weight_observer or mod.weight_observer, input_observer or mod.input_observer,
                output_observer or mod.activation_post_process)
        return q

    def forward(self, input):
        x = self._float_input(input)
        if recorder() is not None:  # under trace() (the ONNX exporter): one recorded op
            return QuantizedLayerCall.apply(input, self)
        return Tensor._wrap(self._compute(x))

    def _compute(self, x):
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"QuantizedConv2d: input must be (N, {self.in_channels}, H, W), got {x.shape}")
        if type(x) is MetaArray:
            oh, ow = self.output_size(x.shape[2:])
            pool = getattr(self, "fused_pool", None) or (1, 1)
            return MetaArray((x.shape[0], self.out_channels, oh // pool[0], ow // pool[1]), F32)
        packed, w_scale, bias = self._int_args()
        relu, pool = getattr(self, "fused_relu", False), getattr(self, "fused_pool", None)
        if pool is not None:
            oh, ow = self.output_size(x.shape[2:])
            if oh < pool[0] or ow < pool[1]:
                raise ValueError(f"QuantizedConv2d: the fused max-pool window {pool} is larger than the "
                                 f"convolution's output ({oh}, {ow})")
        return _int_ops.conv2d_f32(x, *self.qparams("input"), packed, self.weight._data.shape, w_scale, bias,
                                   self.stride, self.padding, self.dilation, *self.qparams("output"), relu,
                                   pool or (1, 1))

    def output_size(self, hw):
        """(OH, OW) of the convolution (before a fused pool) for an input of spatial size ``hw``."""
        pads = _int_ops._pads(self.padding, self.kernel_size, self.dilation)
        return tuple((h + p0 + p1 - d * (k - 1) - 1) // s + 1
                     for h, (p0, p1), k, s, d in zip(hw, pads, self.kernel_size, self.stride, self.dilation))

    def extra_repr(self):
        fused = (", fused_relu=True" if getattr(self, "fused_relu", False) else "") + (
            f", fused_pool={self.fused_pool}" if getattr(self, "fused_pool", None) else "")
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, input_scale={float(self.input_scale._data[0]):.4g}{fused}")


_QUANTIZED = {Linear: QuantizedLinear, Conv2d: QuantizedConv2d}


def _float_type(mod):
    for t in (Linear, Conv2d):
        if isinstance(mod, t):
            return t
    return None


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _pool_window(m):
    """(kh, kw) of a max-pool the int8 convolution can apply on its bytes, else None."""
    if type(m) is not MaxPool2d or m.ceil_mode or m.return_indices:
        return None
    k = tuple(int(v) for v in _pair(m.kernel_size))
    if tuple(_pair(m.stride)) != k or tuple(_pair(m.padding)) != (0, 0) or tuple(_pair(m.dilation)) != (1, 1):
        return None
    return k


def _fuse(model) -> int:
    """Fold the ReLU / max-pool after each QuantizedConv2d of an nn.Sequential into it (see the module
    docstring); returns the number of layers replaced by nn.Identity."""
    done = 0
    for _, seq in list(model.named_modules()):
        if not isinstance(seq, Sequential):
            continue
        items = list(seq._modules.items())
        for i, (_, conv) in enumerate(items):
            if type(conv) is not QuantizedConv2d or conv.fused_relu or conv.fused_pool:
                continue
            for name, nxt in items[i + 1:i + 3]:
                if has_own_call_hooks(nxt):  # someone watches this layer: keep it
                    break
                if type(nxt) is ReLU and not conv.fused_relu:
                    conv.fused_relu = True
                elif _pool_window(nxt) is not None and conv.fused_pool is None:
                    conv.fused_pool = _pool_window(nxt)
                else:
                    break
                setattr(seq, name, Identity())
                done += 1
    return done


def convert(model, inplace: bool = False, fuse: bool = True):
    """Replace the observed (``prepare``) or fake-quantized (``prepare_qat``) layers of ``model`` by
    QuantizedLinear / QuantizedConv2d; returns the converted model (in eval mode). ``fuse``: fold the
    nn.ReLU / nn.MaxPool2d right after a QuantizedConv2d into it (see the module docstring)."""
    from .qat import _QAT

    if not isinstance(model, Module):
        raise TypeError(f"convert: model must be a forgegrad Module, got {type(model).__name__}")
    if not inplace:
        model = copy.deepcopy(model)
    done = 0
    for path, parent in list(model.named_modules()):
        for name, child in list(parent._modules.items()):
            full = f"{path}.{name}" if path else name
            if isinstance(child, _Observed):
                q = _QUANTIZED[_float_type(child)].from_observed(child, full)
            elif isinstance(child, _QAT):
                q = _QUANTIZED[_float_type(child)].from_observed(
                    child, full, child.weight_fake_quant.activation_post_process,
                    child.input_fake_quant.activation_post_process,
                    child.activation_post_process.activation_post_process)
            else:
                continue
            setattr(parent, name, q)
            done += 1
    if done == 0:
        raise ValueError("convert: the model has no prepared layers: run forgegrad.quantization.prepare (and "
                         "calibrate) or prepare_qat (and train) first")
    if fuse:
        _fuse(model)
    return model.eval()
