"""Recurrent modules with PyTorch's names, arguments, parameters and return values: RNN, LSTM,
GRU (multi-layer, bidirectional, batch_first, dropout between layers) and the single-step cells
RNNCell, LSTMCell, GRUCell.

Variable-length batches: pass ``lengths`` (one int per batch entry, 1 <= length <= seq_len) to
``RNN/LSTM/GRU.forward``. Each sequence is then processed only over its own steps, exactly as
torch does with ``pack_padded_sequence(..., enforce_sorted=False)`` followed by
``pad_packed_sequence(..., total_length=seq_len)``: outputs past a sequence's length are zero,
``h_n`` (and ``c_n``) hold each sequence's state at its own end (the reverse direction starts at
the sequence's last real step), and padding never influences the result or the gradients.
"""
from __future__ import annotations

import math
from typing import List

import numpy as np

from .. import devices
from .._args import positive_int
from .._validate import check_bool, check_flag
from ..autograd import Function, graph_free
from ..grad_mode import no_grad, recorder, untraced
from ..ops.rnn import RecurrentLayerFunction, _recurrent_layer_inference
from ..factories import cat, stack, zeros
from ..tensor import Tensor
from . import functional as F
from . import init
from .module import Module
from .parameter import Parameter

__all__ = ["RNNBase", "RNN", "LSTM", "GRU", "RNNCellBase", "RNNCell", "LSTMCell", "GRUCell"]

_GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}


def _tensor(x, name, cls):
    if not isinstance(x, Tensor):
        raise TypeError(f"{cls}: {name} must be a forgegrad.Tensor, got {type(x).__name__}")
    if x.dtype != np.float32 and x.dtype != np.float64:
        raise TypeError(f"{cls}: {name} must be float32 or float64, got {x.dtype}")
    return x


def _batched_input(input, ndim, cls):
    """``input`` with a batch axis and whether it came with one: a layer (ndim 2) takes (T, I) or
    (T, B, I), a cell (ndim 1) takes (I,) or (B, I); the unbatched form gains the axis before I.
    The messages are torch's: a layer names the shape, a cell says "instead"."""
    x = _tensor(input, "input", cls)
    if x.ndim not in (ndim, ndim + 1):
        got = f"tensor of shape {x.shape}" if ndim == 2 else "instead"
        raise ValueError(f"{cls}: Expected input to be {ndim}D or {ndim + 1}D, got {x.ndim}D {got}")
    batched = x.ndim == ndim + 1
    return (x if batched else x.unsqueeze(ndim - 1)), batched


def _run_layer(mode, x, h0, c0, w, reverse, lengths):
    """One layer, one direction. x (T, B, I) Tensor; h0/c0 (B, H) Tensors or None; w = (w_ih, w_hh,
    b_ih, b_hh). Returns y (T, B, H), h_n (B, H), c_n (B, H) or None."""
    lstm = mode == "lstm"
    if lengths is None:
        out = RecurrentLayerFunction.op(x, h0, c0, *w, mode=mode, reverse=reverse)
        return out if lstm else (out[0], out[1], None)
    return _run_layer_lengths(mode, x, h0, c0, w, reverse, lengths)


def _run_layer_lengths(mode, x, h0, c0, w, reverse, lengths):
    """Variable-length sequences: sort by length, then run the kernel over time segments in which
    the set of active sequences is constant (a prefix of the sorted batch)."""
    lstm = mode == "lstm"
    Tn, B, _ = x.shape
    H = w[1].shape[1]
    order = np.argsort(-lengths, kind="stable")
    inv = np.argsort(order, kind="stable")
    Ls = lengths[order]
    xs = x[:, order]
    h0s = _state_rows(h0, order, B, H, x.dtype)
    c0s = _state_rows(c0, order, B, H, x.dtype) if lstm else None
    # Segment boundaries: times where the number of active sequences changes.
    bounds = sorted(set(int(v) for v in Ls) | {0})
    segs = [(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]  # [t0, t1): active = #(Ls >= t1)
    ys = {}
    if not reverse:
        h, c = h0s, c0s
        done_h: List[Tensor] = []
        done_c: List[Tensor] = []
        for t0, t1 in segs:
            n = int(np.sum(Ls >= t1))
            if h.shape[0] > n:  # sequences that ended at t0 keep their state as the final one
                done_h.append(h[n:])
                h = h[:n]
                if lstm:
                    done_c.append(c[n:])
                    c = c[:n]
            out = RecurrentLayerFunction.op(xs[t0:t1, :n], h, c, *w, mode=mode, reverse=False)
            ys[t0] = out[0]
            h = out[1]
            if lstm:
                c = out[2]
        h_fin = cat([h] + done_h[::-1], dim=0)
        c_fin = cat([c] + done_c[::-1], dim=0) if lstm else None
    else:
        h = c = None
        for t0, t1 in reversed(segs):
            n = int(np.sum(Ls >= t1))
            m = 0 if h is None else h.shape[0]
            if n > m:  # sequences whose last real step is t1 - 1 start here from their h0
                h = h0s[m:n] if h is None else cat([h, h0s[m:n]], dim=0)
                if lstm:
                    c = c0s[m:n] if c is None else cat([c, c0s[m:n]], dim=0)
            out = RecurrentLayerFunction.op(xs[t0:t1, :n], h, c, *w, mode=mode, reverse=True)
            ys[t0] = out[0]
            h = out[1]
            if lstm:
                c = out[2]
        h_fin, c_fin = h, c
    pieces = []
    for t0, t1 in segs:
        y = ys[t0]
        n = y.shape[1]
        if n < B:
            y = cat([y, zeros(t1 - t0, B - n, H, dtype=x.dtype)], dim=1)
        pieces.append(y)
    if segs[-1][1] < Tn:
        pieces.append(zeros(Tn - segs[-1][1], B, H, dtype=x.dtype))  # past the longest sequence
    y = cat(pieces, dim=0) if len(pieces) > 1 else pieces[0]
    return y[:, inv], h_fin[inv], (c_fin[inv] if lstm else None)


class RecurrentLayerWithLengths(Function):
    """One layer and direction over variable-length sequences as one op, for an ONNX export: ``lengths`` (B,) is
    an input, so the graph gets one LSTM / GRU / RNN node with ``sequence_lens`` instead of the segments the
    eager path cuts at the example's lengths. The result is the eager path's (``_run_layer_lengths``). Recorded
    only under ``trace()`` (no gradient)."""

    @staticmethod
    def forward(ctx, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, mode="lstm", reverse=False):
        def wrap(a):
            return None if a is None else Tensor._wrap(a)
        with untraced(), no_grad():
            y, h, c = _run_layer_lengths(mode, Tensor._wrap(x), wrap(h0), wrap(c0),
                                         tuple(wrap(a) for a in (w_ih, w_hh, b_ih, b_hh)), reverse,
                                         np.asarray(lengths, np.int64))
        return (y._data, h._data, c._data) if mode == "lstm" else (y._data, h._data)

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError("RecurrentLayerWithLengths is the export form of a recurrent layer with lengths: it has "
                           "no gradient (training runs the per-segment ops)")


def _state_rows(s, order, B, H, dtype):
    """Initial states reordered to the sorted batch (zeros in the input's dtype when not given)."""
    return zeros(B, H, dtype=dtype) if s is None else s[order]


def _check_lengths(lengths, B, Tn, cls):
    if isinstance(lengths, Tensor):
        lengths = devices.to_host(lengths._data)  # lengths are read on the host (torch keeps them on the CPU)
    arr = np.asarray(lengths)
    if arr.dtype.kind not in "iu" or arr.shape != (B,):
        raise ValueError(f"{cls}: lengths must be {B} integers (one per batch entry), got {arr.dtype} array of "
                         f"shape {arr.shape}")
    if arr.size and (arr.min() < 1 or arr.max() > Tn):
        raise ValueError(f"{cls}: lengths must lie in [1, seq_len={Tn}], got values in [{arr.min()}, {arr.max()}]")
    return arr.astype(np.int64)


class RNNBase(Module):
    """Shared machinery of RNN, LSTM and GRU (see their docstrings)."""

    def __init__(self, mode: str, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False):
        super().__init__()
        cls = type(self).__name__
        self.mode = mode
        self.input_size = positive_int(input_size, "input_size", cls)
        self.hidden_size = positive_int(hidden_size, "hidden_size", cls)
        self.num_layers = positive_int(num_layers, "num_layers", cls)
        self.bias = check_bool(bias, "bias")
        self.batch_first = check_bool(batch_first, "batch_first")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout <= 1.0:
            raise ValueError(f"{cls}: dropout should be a number in range [0, 1] representing the probability of "
                             f"an element being zeroed, got {dropout!r}")
        self.dropout = float(dropout)
        self.bidirectional = check_flag(bidirectional, "bidirectional")
        G, H = _GATES[mode], self.hidden_size
        D = 2 if self.bidirectional else 1
        for layer in range(self.num_layers):
            in_size = self.input_size if layer == 0 else H * D
            for suffix in ("", "_reverse")[:D]:
                s = f"_l{layer}{suffix}"
                # on the default device (meta under `with forgegrad.device("meta")`: no memory); on the CPU
                # 64-byte aligned: the small-batch kernels stream W_hh every step (see _memory)
                setattr(self, "weight_ih" + s, Parameter(devices.empty((G * H, in_size))))
                setattr(self, "weight_hh" + s, Parameter(devices.empty((G * H, H))))
                if self.bias:
                    setattr(self, "bias_ih" + s, Parameter(devices.empty((G * H,))))
                    setattr(self, "bias_hh" + s, Parameter(devices.empty((G * H,))))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Every weight and bias from U(-1/sqrt(hidden_size), 1/sqrt(hidden_size)), as torch."""
        k = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            init.uniform_(p, -k, k)

    def flatten_parameters(self) -> None:
        """No-op kept for torch compatibility (the kernels read each weight where it is)."""

    def _layer_weights(self, layer: int, suffix: str):
        s = f"_l{layer}{suffix}"
        b = (getattr(self, "bias_ih" + s), getattr(self, "bias_hh" + s)) if self.bias else (None, None)
        return (getattr(self, "weight_ih" + s), getattr(self, "weight_hh" + s)) + b

    def forward(self, input, hx=None, lengths=None):
        if lengths is None and graph_free():
            out = self._forward_graph_free(input, hx)
            if out is not None:
                return out
        cls = type(self).__name__
        lstm = self.mode == "lstm"
        x, batched = _batched_input(input, 2, cls)
        if batched and self.batch_first:
            x = x.transpose(0, 1)
        Tn, B, I = x.shape
        if I != self.input_size:
            raise ValueError(f"{cls}: input.size(-1) must be equal to input_size. Expected {self.input_size}, got {I}")
        D = 2 if self.bidirectional else 1
        L, H = self.num_layers, self.hidden_size
        want = (L * D, B, H) if batched else (L * D, H)
        h0 = c0 = None
        if hx is not None:
            if lstm:
                if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                    raise TypeError(f"{cls}: hx must be a tuple (h_0, c_0)")
                h0, c0 = _tensor(hx[0], "h_0", cls), _tensor(hx[1], "c_0", cls)
            else:
                h0 = _tensor(hx, "hx", cls)
            for name, s in (("h_0" if lstm else "hx", h0), ("c_0", c0)):
                if s is not None and s.shape != want:
                    raise ValueError(f"{cls}: Expected hidden size {want} for {name}, got {s.shape}")
            if not batched:
                h0 = h0.unsqueeze(1)
                c0 = c0.unsqueeze(1) if c0 is not None else None
        lens = traced_lengths = None
        if lengths is not None:
            lens = _check_lengths(lengths, B, Tn, cls)
            if recorder() is not None:  # an ONNX export: the lengths become the nodes' sequence_lens input
                traced_lengths = lengths if isinstance(lengths, Tensor) else Tensor._wrap(lens)
            elif np.all(lens == Tn):
                lens = None  # nothing is padded: the plain path is identical
        h_n: List[Tensor] = []
        c_n: List[Tensor] = []
        layer_in = x
        for layer in range(L):
            outs = []
            for d, suffix in enumerate(("", "_reverse")[:D]):
                k = layer * D + d
                hk = h0[k] if h0 is not None else None
                ck = c0[k] if c0 is not None else None
                w = self._layer_weights(layer, suffix)
                if traced_lengths is not None:
                    out = RecurrentLayerWithLengths.apply(layer_in, hk, ck, *w, traced_lengths, mode=self.mode,
                                                          reverse=d == 1)
                    y, hT, cT = out if lstm else (out[0], out[1], None)
                else:
                    y, hT, cT = _run_layer(self.mode, layer_in, hk, ck, w, d == 1, lens)
                outs.append(y)
                h_n.append(hT)
                if lstm:
                    c_n.append(cT)
            layer_in = outs[0] if D == 1 else cat(outs, dim=2)
            if self.dropout > 0 and self.training and layer < L - 1:
                layer_in = F.dropout(layer_in, self.dropout, True)
        out = layer_in
        # One layer, one direction (the common case): a view, not a stack op (per-call overhead)
        hN = h_n[0].unsqueeze(0) if len(h_n) == 1 else stack(h_n, dim=0)
        cN = (c_n[0].unsqueeze(0) if len(c_n) == 1 else stack(c_n, dim=0)) if lstm else None
        if not batched:
            out = out.squeeze(1)
            hN = hN.squeeze(1)
            cN = cN.squeeze(1) if lstm else None
        elif self.batch_first:
            out = out.transpose(0, 1)
        return (out, (hN, cN)) if lstm else (out, hN)

    def _forward_graph_free(self, input, hx):
        """forward without a graph on float32 CPU arrays: each layer and direction is one call of the
        op's inference kernel (what RecurrentLayerFunction.op runs under no_grad), with the reshapes,
        transposes and state slicing done on the arrays. At batch 1 the Tensor-level version of that
        bookkeeping (an op dispatch per unsqueeze, transpose and state index) cost about as much as
        the kernel call itself. Same kernels in the same order, so the same results. None when the
        call needs the general path: other devices or dtypes, dropout between layers in training
        mode, or any argument the general path would reject (which then raises its own message)."""
        if not isinstance(input, Tensor):
            return None
        x = input._data
        if type(x) is not np.ndarray or x.dtype != np.float32 or x.ndim not in (2, 3):
            return None
        L, H = self.num_layers, self.hidden_size
        D = 2 if self.bidirectional else 1
        if self.dropout > 0 and self.training and L > 1:
            return None
        lstm = self.mode == "lstm"
        batched = x.ndim == 3
        if not batched:
            x = x[:, None, :]
        elif self.batch_first:
            x = x.transpose(1, 0, 2)
        Tn, B, I = x.shape
        if I != self.input_size or Tn == 0 or B == 0:
            return None
        h0 = c0 = None
        if hx is not None:
            states = hx if lstm else (hx,)
            if lstm and (not isinstance(hx, (tuple, list)) or len(hx) != 2):
                return None
            want = (L * D, B, H) if batched else (L * D, H)
            arrays = []
            for s in states:
                if not isinstance(s, Tensor) or type(s._data) is not np.ndarray or s._data.dtype != np.float32 \
                        or s._data.shape != want:
                    return None
                arrays.append(s._data if batched else s._data[:, None, :])
            h0 = arrays[0]
            c0 = arrays[1] if lstm else None
        h_n: List[np.ndarray] = []
        c_n: List[np.ndarray] = []
        layer_in = np.ascontiguousarray(x)
        for layer in range(L):
            outs = []
            for d, suffix in enumerate(("", "_reverse")[:D]):
                w = []
                for p in self._layer_weights(layer, suffix):
                    if p is None:
                        w.append(None)
                        continue
                    if not isinstance(p, Tensor) or type(p._data) is not np.ndarray or p._data.dtype != np.float32:
                        return None
                    w.append(p._data)
                k = layer * D + d
                hk = np.ascontiguousarray(h0[k]) if h0 is not None else None
                ck = np.ascontiguousarray(c0[k]) if c0 is not None else None
                out = _recurrent_layer_inference(layer_in, hk, ck, *w, mode=self.mode, reverse=d == 1)
                outs.append(out[0])
                h_n.append(out[1])
                if lstm:
                    c_n.append(out[2])
            layer_in = outs[0] if D == 1 else np.concatenate(outs, axis=2)
        out = layer_in
        hN = h_n[0][None] if len(h_n) == 1 else np.stack(h_n)
        cN = (c_n[0][None] if len(c_n) == 1 else np.stack(c_n)) if lstm else None
        if not batched:
            out = out[:, 0]
            hN = hN[:, 0]
            cN = cN[:, 0] if lstm else None
        elif self.batch_first:
            out = out.transpose(1, 0, 2)
        wrap = Tensor._wrap
        return (wrap(out), (wrap(hN), wrap(cN))) if lstm else (wrap(out), wrap(hN))

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        return s


class RNN(RNNBase):
    """Elman RNN: ``h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)``, act tanh or relu.

    ``RNN(input_size, hidden_size, num_layers=1, nonlinearity='tanh', bias=True, batch_first=False,
    dropout=0.0, bidirectional=False)``. ``forward(input, hx=None, lengths=None)`` returns
    ``(output, h_n)`` with torch's shapes: output (T, B, D*H) (batch_first: (B, T, D*H)),
    h_n (num_layers*D, B, H). See the module docstring for ``lengths``.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh",
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNN: Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'.")
        super().__init__("rnn_" + nonlinearity, input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional)
        self.nonlinearity = nonlinearity

    def extra_repr(self) -> str:
        s = super().extra_repr()
        return s + (", nonlinearity='relu'" if self.nonlinearity == "relu" else "")


class LSTM(RNNBase):
    """Long short-term memory, torch's gate order (i, f, g, o) and parameter names.

    ``forward(input, hx=None, lengths=None)`` with hx = (h_0, c_0) returns
    ``(output, (h_n, c_n))``.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False):
        super().__init__("lstm", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional)


class GRU(RNNBase):
    """Gated recurrent unit, torch's gate order (r, z, n) and reset-gate placement
    ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``. Returns ``(output, h_n)``."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False):
        super().__init__("gru", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional)


class RNNCellBase(Module):
    def __init__(self, mode: str, input_size: int, hidden_size: int, bias: bool = True):
        super().__init__()
        cls = type(self).__name__
        self.mode = mode
        self.input_size = positive_int(input_size, "input_size", cls)
        self.hidden_size = positive_int(hidden_size, "hidden_size", cls)
        self.bias = check_flag(bias, "bias")  # (RNNBase checks isinstance bool, RNNCellBase does not)
        G, H = _GATES[mode], self.hidden_size
        self.weight_ih = Parameter(devices.empty((G * H, self.input_size)))
        self.weight_hh = Parameter(devices.empty((G * H, H)))
        if self.bias:
            self.bias_ih = Parameter(devices.empty((G * H,)))
            self.bias_hh = Parameter(devices.empty((G * H,)))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        k = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            init.uniform_(p, -k, k)

    def _step(self, input, hx):
        """One step through the sequence kernel (T = 1). Returns (h', c' or None)."""
        cls = type(self).__name__
        x, batched = _batched_input(input, 1, cls)
        if x.shape[1] != self.input_size:
            raise ValueError(f"{cls}: input has inconsistent input_size: got {x.shape[1]} expected {self.input_size}")
        B, H = x.shape[0], self.hidden_size
        lstm = self.mode == "lstm"
        states = [None, None]
        if hx is not None:
            parts = hx if lstm else (hx,)
            if lstm and (not isinstance(hx, (tuple, list)) or len(hx) != 2):
                raise TypeError(f"{cls}: hx must be a tuple (h, c)")
            for i, s in enumerate(parts):
                s = _tensor(s, "hx", cls)
                if not batched:
                    s = s.unsqueeze(0)
                if s.shape != (B, H):
                    raise ValueError(f"{cls}: hidden state must have shape {(B, H) if batched else (H,)}, "
                                     f"got {tuple(parts[i].shape)}")
                states[i] = s
        w = (self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)
        out = RecurrentLayerFunction.op(x.unsqueeze(0), states[0], states[1], *w, mode=self.mode, reverse=False)
        h, c = out[1], (out[2] if lstm else None)
        if not batched:
            h = h.squeeze(0)
            c = c.squeeze(0) if c is not None else None
        return h, c

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}" + ("" if self.bias else ", bias=False")


class RNNCell(RNNCellBase):
    """One Elman step: ``h' = act(x W_ih^T + b_ih + h W_hh^T + b_hh)``; ``forward(input, hx=None)``."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "tanh"):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNNCell: Unknown nonlinearity: {nonlinearity}")
        super().__init__("rnn_" + nonlinearity, input_size, hidden_size, bias)
        self.nonlinearity = nonlinearity

    def forward(self, input, hx=None):
        return self._step(input, hx)[0]


class LSTMCell(RNNCellBase):
    """One LSTM step: ``forward(input, hx=None)`` with hx = (h, c) returns ``(h', c')``."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True):
        super().__init__("lstm", input_size, hidden_size, bias)

    def forward(self, input, hx=None):
        return self._step(input, hx)


class GRUCell(RNNCellBase):
    """One GRU step: ``forward(input, hx=None)`` returns ``h'``."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True):
        super().__init__("gru", input_size, hidden_size, bias)

    def forward(self, input, hx=None):
        return self._step(input, hx)[0]
