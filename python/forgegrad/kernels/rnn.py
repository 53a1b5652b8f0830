"""Recurrent layers on numpy float32 arrays: LSTM, GRU and Elman RNN (tanh / relu).

One layer, one direction, a whole sequence per call, forward and backward through time. Arrays
follow PyTorch, so the weights of a ``torch.nn.LSTM`` / ``GRU`` / ``RNN`` layer load unchanged:

* ``x`` is (T, B, I), time-major; ``h0`` / ``c0`` are (B, H) (``None`` means zeros);
* ``w_ih`` is (G*H, I), ``w_hh`` is (G*H, H), ``b_ih`` / ``b_hh`` are (G*H,) or ``None``, with
  G = 4 gates for LSTM (order i, f, g, o), 3 for GRU (r, z, n) and 1 for RNN;
* GRU applies the reset gate as torch does: ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``.

``reverse=True`` runs the sequence from t = T-1 down to 0 (the backward direction of a
bidirectional layer); ``y[t]`` stays aligned with ``x[t]``.

Forward returns the outputs and, with ``training=True``, a :class:`RnnSaved` holding what backward
needs (with ``training=False`` it is ``None`` and no activations are kept). Backward takes that
object and the gradients of the outputs (each may be ``None`` for zero) and returns the gradient of
every input, ``None`` for the biases when the layer has none.

Results are bit-identical for any thread count (``forgegrad.set_num_threads``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from .. import _C
from .._validate import check_bool
from ._checks import as_f32, optional_f32

__all__ = [
    "RnnSaved",
    "lstm_forward", "lstm_backward",
    "gru_forward", "gru_backward",
    "rnn_forward", "rnn_backward",
]

_MODES = {"lstm": 0, "gru": 1, "rnn_tanh": 2, "rnn_relu": 3}
_GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}


@dataclass
class RnnSaved:
    """Activations a training-mode forward keeps for backward (treat as opaque)."""

    mode: str
    reverse: bool
    x: np.ndarray
    h0: np.ndarray
    c0: Optional[np.ndarray]
    w_ih: np.ndarray
    w_hh: np.ndarray
    has_bias: bool
    y: np.ndarray
    gates: Optional[np.ndarray]   # (T, B, G*H) gate activations (LSTM, GRU)
    cells: Optional[np.ndarray]   # (T, B, H) LSTM cell states
    hn_lin: Optional[np.ndarray]  # (T, B, H) GRU W_hn h + b_hn


def _f32c(a, name: str) -> np.ndarray:
    return np.ascontiguousarray(as_f32(a, name))


def _check_layer(mode: str, fn: str, x, h0, c0, w_ih, w_hh, b_ih, b_hh):
    """Validate one layer's arguments; return them as C-contiguous float32 arrays plus sizes."""
    x = _f32c(x, "x")
    w_ih = _f32c(w_ih, "w_ih")
    w_hh = _f32c(w_hh, "w_hh")
    if x.ndim != 3:
        raise ValueError(f"{fn}: x must be 3-D (seq_len, batch, input_size), got {x.ndim}-D with shape {x.shape}")
    T, B, I = x.shape
    if T == 0 or B == 0:
        raise ValueError(f"{fn}: x must have at least one time step and one batch entry, got shape {x.shape}")
    if w_hh.ndim != 2:
        raise ValueError(f"{fn}: w_hh must be 2-D (G*hidden_size, hidden_size), got shape {w_hh.shape}")
    G = _GATES[mode]
    H = w_hh.shape[1]
    if H == 0 or w_hh.shape[0] != G * H:
        raise ValueError(
            f"{fn}: w_hh must have shape ({G} * hidden_size, hidden_size) = {(G * H, H)}, got {w_hh.shape}")
    if w_ih.ndim != 2 or w_ih.shape[0] != G * H:
        raise ValueError(f"{fn}: w_ih must have shape ({G * H}, input_size), got {w_ih.shape}")
    if w_ih.shape[1] != I:
        raise ValueError(
            f"{fn}: input size mismatch: x has input_size {I} (shape {x.shape}) but w_ih expects "
            f"{w_ih.shape[1]} (shape {w_ih.shape})")
    if I == 0:
        raise ValueError(f"{fn}: input_size must be >= 1, got x shape {x.shape}")

    def state(s, name):
        if s is None:
            return np.zeros((B, H), np.float32)
        s = _f32c(s, name)
        if s.shape != (B, H):
            raise ValueError(f"{fn}: {name} must have shape (batch, hidden_size) = {(B, H)}, got {s.shape}")
        return s

    h0 = state(h0, "h0")
    c0 = state(c0, "c0") if mode == "lstm" else None

    def bias(b, name):
        if b is None:
            return None
        b = _f32c(b, name)
        if b.shape != (G * H,):
            raise ValueError(f"{fn}: {name} must have shape {(G * H,)}, got {b.shape}")
        return b

    b_ih, b_hh = bias(b_ih, "b_ih"), bias(b_hh, "b_hh")
    return x, h0, c0, w_ih, w_hh, b_ih, b_hh, (T, B, I, H, G)


def _forward(mode, fn, x, h0, c0, w_ih, w_hh, b_ih, b_hh, reverse, training):
    reverse, training = check_bool(reverse, "reverse"), check_bool(training, "training")
    x, h0, c0, w_ih, w_hh, b_ih, b_hh, (T, B, I, H, G) = _check_layer(mode, fn, x, h0, c0, w_ih, w_hh, b_ih, b_hh)
    y = np.empty((T, B, H), np.float32)
    h_n = np.empty((B, H), np.float32)
    c_n = np.empty((B, H), np.float32) if mode == "lstm" else None
    gates = cells = hn_lin = None
    if training and mode in ("lstm", "gru"):
        gates = np.empty((T, B, G * H), np.float32)
        if mode == "lstm":
            cells = np.empty((T, B, H), np.float32)
        else:
            hn_lin = np.empty((T, B, H), np.float32)
    _C.rnn.forward(_MODES[mode], x, h0, c0, w_ih, w_hh, b_ih, b_hh, y, h_n, c_n, gates, cells, hn_lin,
                   reverse)
    saved = None
    if training:
        saved = RnnSaved(mode, reverse, x, h0, c0, w_ih, w_hh, b_ih is not None or b_hh is not None,
                         y, gates, cells, hn_lin)
    return y, h_n, c_n, saved


def _backward(fn, saved, grad_y, grad_hn, grad_cn):
    if not isinstance(saved, RnnSaved):
        raise TypeError(f"{fn}: saved must be the RnnSaved a training-mode forward returned, got "
                        f"{type(saved).__name__}")
    s = saved
    T, B, I = s.x.shape
    H = s.w_hh.shape[1]
    G = _GATES[s.mode]

    def grad(g, name, shape):
        return optional_f32(g, name, shape, fn + ": {name} must have shape {shape}, got {got}")

    grad_y = grad(grad_y, "grad_y", (T, B, H))
    grad_hn = grad(grad_hn, "grad_hT", (B, H))
    grad_cn = grad(grad_cn, "grad_cT", (B, H))
    gx = np.empty((T, B, I), np.float32)
    gh0 = np.empty((B, H), np.float32)
    gc0 = np.empty((B, H), np.float32) if s.mode == "lstm" else None
    gw_ih = np.empty((G * H, I), np.float32)
    gw_hh = np.empty((G * H, H), np.float32)
    gb_ih = np.empty((G * H,), np.float32) if s.has_bias else None
    gb_hh = np.empty((G * H,), np.float32) if s.has_bias else None
    _C.rnn.backward(_MODES[s.mode], s.x, s.h0, s.c0, s.w_ih, s.w_hh, s.y, s.gates, s.cells, s.hn_lin,
                    grad_y, grad_hn, grad_cn, gx, gh0, gc0, gw_ih, gw_hh, gb_ih, gb_hh, s.reverse)
    return gx, gh0, gc0, gw_ih, gw_hh, gb_ih, gb_hh


def lstm_forward(x, h0, c0, w_ih, w_hh, b_ih=None, b_hh=None, *, reverse: bool = False, training: bool = True):
    """One LSTM layer over a sequence.

    Returns ``(y, h_n, c_n, saved)``: y (T, B, H), h_n and c_n (B, H) the state after the last
    processed step, saved an :class:`RnnSaved` (``None`` when ``training=False``).
    """
    return _forward("lstm", "lstm_forward", x, h0, c0, w_ih, w_hh, b_ih, b_hh, reverse, training)


def lstm_backward(saved, grad_y, grad_hT=None, grad_cT=None):
    """Gradients of one LSTM layer: ``(gx, gh0, gc0, gw_ih, gw_hh, gb_ih, gb_hh)``.

    grad_y (T, B, H), grad_hT and grad_cT (B, H); any may be None (zero). The bias gradients are
    None when the forward had no bias.
    """
    _expect_mode(saved, ("lstm",), "lstm_backward")
    return _backward("lstm_backward", saved, grad_y, grad_hT, grad_cT)


def gru_forward(x, h0, w_ih, w_hh, b_ih=None, b_hh=None, *, reverse: bool = False, training: bool = True):
    """One GRU layer over a sequence. Returns ``(y, h_n, saved)``."""
    y, h_n, _, saved = _forward("gru", "gru_forward", x, h0, None, w_ih, w_hh, b_ih, b_hh, reverse, training)
    return y, h_n, saved


def gru_backward(saved, grad_y, grad_hT=None):
    """Gradients of one GRU layer: ``(gx, gh0, gw_ih, gw_hh, gb_ih, gb_hh)``."""
    _expect_mode(saved, ("gru",), "gru_backward")
    gx, gh0, _, gw_ih, gw_hh, gb_ih, gb_hh = _backward("gru_backward", saved, grad_y, grad_hT, None)
    return gx, gh0, gw_ih, gw_hh, gb_ih, gb_hh


def rnn_forward(x, h0, w_ih, w_hh, b_ih=None, b_hh=None, *, nonlinearity: str = "tanh", reverse: bool = False,
                training: bool = True):
    """One Elman RNN layer, ``h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)`` with act tanh or relu.

    Returns ``(y, h_n, saved)``.
    """
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"rnn_forward: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
    y, h_n, _, saved = _forward("rnn_" + nonlinearity, "rnn_forward", x, h0, None, w_ih, w_hh, b_ih, b_hh,
                                reverse, training)
    return y, h_n, saved


def rnn_backward(saved, grad_y, grad_hT=None):
    """Gradients of one Elman RNN layer: ``(gx, gh0, gw_ih, gw_hh, gb_ih, gb_hh)``."""
    _expect_mode(saved, ("rnn_tanh", "rnn_relu"), "rnn_backward")
    gx, gh0, _, gw_ih, gw_hh, gb_ih, gb_hh = _backward("rnn_backward", saved, grad_y, grad_hT, None)
    return gx, gh0, gw_ih, gw_hh, gb_ih, gb_hh


def _expect_mode(saved, modes, fn):
    if not isinstance(saved, RnnSaved):
        raise TypeError(f"{fn}: saved must be the RnnSaved a training-mode forward returned, got "
                        f"{type(saved).__name__}")
    if saved.mode not in modes:
        raise ValueError(f"{fn}: saved comes from a {saved.mode} forward")
