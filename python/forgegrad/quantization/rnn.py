"""Dynamic-quantized LSTM and GRU (torch.ao.nn.quantized.dynamic.LSTM / GRU): both matrix products of
every layer and direction run on the int8 kernels.

Each layer and direction holds two DynamicQuantizedLinear: ``ih_l{k}{_reverse}`` (input -> gates, with
bias_ih) and ``hh_l{k}{_reverse}`` (hidden -> gates, with bias_hh), per-channel int8 weights. The input
product runs once for the whole sequence (its activations quantized over all steps, one GEMM of
T*B rows); the steps run in one C++ call (``_C.quant.rnn_dynamic_layer``): h quantized per step, the
recurrent product on the int8 kernel, the gate arithmetic in float32 with the RNN kernels' SIMD
sigmoid/tanh and torch's gate order (LSTM i, f, g, o; GRU r, z, n). At batch 1 on the VNNI kernels,
with hidden_size a multiple of 16, the product and the gates run as one fused step, 16 hidden units at
a time (cpp/kernels/per_isa/qrnn_step.cpp): the same bits.
"""
from __future__ import annotations

import numpy as np

from .. import _C, nn
from ..devices import MetaArray
from ..grad_mode import recorder
from ..nn.module import Module
from ..tensor import Tensor
from ._traced import DynamicQuantizedRNNCall
from .modules import DynamicQuantizedLinear

__all__ = ["DynamicQuantizedLSTM", "DynamicQuantizedGRU"]


class _DynamicQuantizedRNN(Module):
    _MODE = ""
    _GATES = 0

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, bidirectional=False,
                 reduce_range=True):
        super().__init__()
        self.input_size, self.hidden_size, self.num_layers = int(input_size), int(hidden_size), int(num_layers)
        self.bias, self.batch_first, self.bidirectional = bool(bias), bool(batch_first), bool(bidirectional)
        G, H = self._GATES, self.hidden_size
        D = 2 if self.bidirectional else 1
        for layer in range(self.num_layers):
            in_size = self.input_size if layer == 0 else H * D
            for sfx in ("", "_reverse")[:D]:
                rr = reduce_range
                setattr(self, f"ih_l{layer}{sfx}", DynamicQuantizedLinear(in_size, G * H, bias, reduce_range=rr))
                setattr(self, f"hh_l{layer}{sfx}", DynamicQuantizedLinear(H, G * H, bias, reduce_range=rr))

    @classmethod
    def from_float(cls, rnn, reduce_range: bool = True):
        if rnn.mode != cls._MODE:
            raise TypeError(f"{cls.__name__}.from_float needs an nn.{cls._MODE.upper()}, got {type(rnn).__name__}")
        q = cls(rnn.input_size, rnn.hidden_size, rnn.num_layers, rnn.bias, rnn.batch_first, rnn.bidirectional,
                reduce_range=reduce_range)
        D = 2 if rnn.bidirectional else 1
        for layer in range(rnn.num_layers):
            for sfx in ("", "_reverse")[:D]:
                w_ih, w_hh, b_ih, b_hh = rnn._layer_weights(layer, sfx)
                for part, w, b in (("ih", w_ih, b_ih), ("hh", w_hh, b_hh)):
                    w = np.asarray(w._data, np.float32)
                    if not np.isfinite(w).all():
                        raise ValueError(f"{cls.__name__}.from_float: weight_{part}_l{layer}{sfx} holds NaN or "
                                         "infinity")
                    getattr(q, f"{part}_l{layer}{sfx}").set_weight(w, None if b is None else np.asarray(b._data))
        return q

    def _direction(self, x, h, c, layer, sfx, reverse):
        """x (T, B, I) float32; h, c (B, H). Returns y (T, B, H), h_n, c_n (None for GRU)."""
        T, B, _ = x.shape
        gi = getattr(self, f"ih_l{layer}{sfx}")._compute(x.reshape(T * B, -1)).reshape(T, B, -1)
        hh = getattr(self, f"hh_l{layer}{sfx}")
        packed, colsum, scale, bias = hh.packed()
        return _C.quant.rnn_dynamic_layer(0 if self._MODE == "lstm" else 1, gi, packed, colsum, scale, bias, h, c,
                                          reverse, hh.reduce_range)

    def forward(self, input, hx=None):
        cls = type(self).__name__
        if not isinstance(input, Tensor) or input.dtype != np.float32:
            raise TypeError(f"{cls}: input must be a float32 forgegrad.Tensor")
        lstm = self._MODE == "lstm"
        if lstm and hx is not None and (not isinstance(hx, (tuple, list)) or len(hx) != 2):
            raise TypeError(f"{cls}: hx must be a tuple (h_0, c_0)")
        h0, c0 = (None, None) if hx is None else (tuple(hx) if lstm else (hx, None))
        if recorder() is not None:  # under trace() (the ONNX exporter): one recorded op
            outs = DynamicQuantizedRNNCall.apply(input, h0, c0, self)
        else:
            outs = tuple(Tensor._wrap(a) for a in self._run(input._data, h0, c0))
        return (outs[0], (outs[1], outs[2])) if lstm else (outs[0], outs[1])

    def _run(self, x, h0, c0):
        """The whole forward on arrays: (output, h_n) and, for the LSTM, c_n."""
        cls = type(self).__name__
        if x.ndim not in (2, 3):
            raise ValueError(f"{cls}: Expected input to be 2D or 3D, got {x.ndim}D tensor of shape {x.shape}")
        batched = x.ndim == 3
        if x.shape[-1] != self.input_size:
            raise ValueError(f"{cls}: input.size(-1) must be equal to input_size. Expected {self.input_size}, "
                             f"got {x.shape[-1]}")
        lstm = self._MODE == "lstm"
        if type(x) is MetaArray:  # the meta device (summary, shape checks): the outputs' shapes only
            T, B = (x.shape[:2][::-1] if self.batch_first else x.shape[:2]) if batched else (x.shape[0], 1)
            return self._meta_outputs(T, B, batched, lstm)
        x = (np.swapaxes(x, 0, 1) if self.batch_first else x) if batched else x[:, None, :]
        D, L, B = (2 if self.bidirectional else 1), self.num_layers, x.shape[1]
        x = np.ascontiguousarray(x, dtype=np.float32)
        h0, c0 = self._initial_state(h0, c0, L * D, B, batched, lstm, cls)
        hn, cn = [], []
        for layer in range(L):
            outs = []
            for d, sfx in enumerate(("", "_reverse")[:D]):
                k = layer * D + d
                y, h, c = self._direction(x, h0[k], c0[k] if lstm else None, layer, sfx, reverse=d == 1)
                outs.append(y)
                hn.append(h)
                cn.append(c)
            x = outs[0] if D == 1 else np.ascontiguousarray(np.concatenate(outs, axis=2))
        out = np.swapaxes(x, 0, 1) if (batched and self.batch_first) else x
        h_n = np.stack(hn)
        if not batched:
            out, h_n = out[:, 0], h_n[:, 0]
        out = np.ascontiguousarray(out)
        if not lstm:
            return out, h_n
        c_n = np.stack(cn)
        return out, h_n, (c_n if batched else c_n[:, 0])

    def _meta_outputs(self, T, B, batched, lstm):
        D, H = (2 if self.bidirectional else 1), self.hidden_size
        out = ((B, T) if self.batch_first else (T, B)) if batched else (T,)
        state = (self.num_layers * D,) + ((B,) if batched else ()) + (H,)
        arrays = (MetaArray(out + (D * H,)), MetaArray(state))
        return arrays + ((MetaArray(state),) if lstm else ())

    def _initial_state(self, h0, c0, layers, B, batched, lstm, cls):
        shape = (layers, B, self.hidden_size)
        if h0 is None:
            z = np.zeros(shape, np.float32)
            return z, (z if lstm else None)
        arrs = []
        for name, p in zip(("h_0", "c_0"), (h0, c0) if lstm else (h0,)):
            a = p._data if isinstance(p, Tensor) else np.asarray(p)
            a = a if batched else a[:, None, :]
            if a.shape != shape:
                want = shape if batched else (layers, self.hidden_size)
                raise ValueError(f"{cls}: {name} must have shape {want}, got {a.shape if batched else a[:, 0].shape}")
            arrs.append(np.ascontiguousarray(a, dtype=np.float32))
        return arrs[0], (arrs[1] if lstm else None)

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, dtype=qint8"
                + (", batch_first=True" if self.batch_first else "")
                + (", bidirectional=True" if self.bidirectional else ""))


class DynamicQuantizedLSTM(_DynamicQuantizedRNN):
    """nn.LSTM with int8 weights and per-call int8 activations; forward(input, hx=None) returns
    (output, (h_n, c_n)) as nn.LSTM (no ``lengths``; inference only)."""
    _MODE, _GATES = "lstm", 4


class DynamicQuantizedGRU(_DynamicQuantizedRNN):
    """nn.GRU with int8 weights and per-call int8 activations; forward(input, hx=None) returns
    (output, h_n) as nn.GRU (no ``lengths``; inference only)."""
    _MODE, _GATES = "gru", 3


FLOAT_TO_DYNAMIC = {nn.LSTM: DynamicQuantizedLSTM, nn.GRU: DynamicQuantizedGRU}
