"""Recurrent layers as autograd Functions over the kernels in forgegrad.kernels.rnn.

RecurrentLayer runs one layer in one direction over a whole sequence (LSTM, GRU or Elman RNN) and
backpropagates through time in one kernel call; multi-layer, bidirectional and variable-length
networks are composed from it in forgegrad.nn.rnn.
"""
from __future__ import annotations

import numpy as np

from ..autograd import Function, is_grad_enabled
from ..kernels import rnn as K

MODES = ("lstm", "gru", "rnn_tanh", "rnn_relu")


class RecurrentLayer(Function):
    """One layer, one direction: ``x`` (T, B, I), ``h0`` / ``c0`` (B, H) or None (zeros), torch
    weight layout (``w_ih`` (G*H, I), ``w_hh`` (G*H, H), biases (G*H,) or None).

    Returns ``(y, h_n, c_n)`` for ``mode="lstm"``, ``(y, h_n)`` otherwise; ``reverse=True`` runs
    t = T-1 .. 0 with ``y[t]`` aligned to ``x[t]``. Activations are saved only when a graph is
    being recorded.
    """

    @staticmethod
    def forward(ctx, x, h0, c0, w_ih, w_hh, b_ih, b_hh, mode="lstm", reverse=False):
        if mode not in MODES:
            raise ValueError(f"recurrent layer: mode must be one of {MODES}, got {mode!r}")
        training = is_grad_enabled() and any(ctx.needs_input_grad)
        ctx.mode = mode
        ctx.has = (h0 is not None, c0 is not None, b_ih is not None, b_hh is not None)
        if mode == "lstm":
            y, h_n, c_n, saved = K.lstm_forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, reverse=reverse,
                                                training=training)
            ctx.saved = saved
            return y, h_n, c_n
        if mode == "gru":
            y, h_n, saved = K.gru_forward(x, h0, w_ih, w_hh, b_ih, b_hh, reverse=reverse, training=training)
        else:
            y, h_n, saved = K.rnn_forward(x, h0, w_ih, w_hh, b_ih, b_hh, nonlinearity=mode[4:], reverse=reverse,
                                          training=training)
        ctx.saved = saved
        return y, h_n

    @staticmethod
    def backward(ctx, grad_y, grad_hn, grad_cn=None):
        if ctx.mode == "lstm":
            gx, gh0, gc0, gwi, gwh, gbi, gbh = K.lstm_backward(ctx.saved, grad_y, grad_hn, grad_cn)
        else:
            fn = K.gru_backward if ctx.mode == "gru" else K.rnn_backward
            gx, gh0, gwi, gwh, gbi, gbh = fn(ctx.saved, grad_y, grad_hn)
            gc0 = None
        has_h0, has_c0, has_bih, has_bhh = ctx.has
        return (gx, gh0 if has_h0 else None, gc0 if has_c0 else None, gwi, gwh,
                gbi if has_bih else None, gbh if has_bhh else None)


class Embedding(Function):
    """``weight[indices]`` for int64 ``indices`` of any shape; the row ``padding_idx`` (if any)
    receives no gradient."""

    @staticmethod
    def forward(ctx, weight, indices, padding_idx=None):
        idx = np.asarray(indices)
        if idx.dtype.kind not in "iu":
            raise TypeError(f"embedding: indices must be an integer tensor, got dtype {idx.dtype}")
        n = weight.shape[0]
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise IndexError(f"embedding: index out of range: indices must be in [0, {n}), got values in "
                             f"[{idx.min()}, {idx.max()}]")
        ctx.idx, ctx.n, ctx.padding_idx = idx, n, padding_idx
        return weight[idx]

    @staticmethod
    def backward(ctx, g):
        gw = np.zeros((ctx.n, g.shape[-1]), np.float32)
        np.add.at(gw, ctx.idx.reshape(-1), g.reshape(-1, g.shape[-1]))
        if ctx.padding_idx is not None:
            gw[ctx.padding_idx] = 0.0
        return gw
