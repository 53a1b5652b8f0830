"""Samples, torch references and bad inputs of the recurrent-layer and embedding ops (ops/rnn.py),
for the generated checks in tests/test_op_registry.py.

RecurrentLayer: every mode (LSTM, GRU, tanh and relu RNN), forward and reverse, initial states
given or None (zeros), both biases, one or none; batches on both sides of the kernels' small-batch
path (B <= 4) and large samples whose GEMMs and gate loops run on several threads. The reference is
torch's own one-layer kernel (torch._VF, what torch.nn.LSTM/GRU/RNN call), run on the time-reversed
sequence for reverse=True. Embedding: indices of any rank (0-d too), padding_idx (negative too).
"""
from __future__ import annotations

import numpy as np

from ._samples import rand
from .registry import BadInput, Sample

# errors of float32 sums compound through time (backpropagation through T steps)
RECURRENT_TOL = (1e-4, 1e-5)
_GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}


def _layer(mode, T, B, I, H, seed=0, h0=True, c0=True, b_ih=True, b_hh=True):
    """(x, h0, c0, w_ih, w_hh, b_ih, b_hh) with torch's initialisation range U(-1/sqrt(H), 1/sqrt(H))."""
    G, k = _GATES[mode], 1.0 / np.sqrt(H)

    def w(*shape, s):
        return rand(*shape, seed=seed + s, low=-k, high=k)

    return (rand(T, B, I, seed=seed), rand(B, H, seed=seed + 1, low=-1, high=1) if h0 else None,
            rand(B, H, seed=seed + 2, low=-1, high=1) if c0 and mode == "lstm" else None,
            w(G * H, I, s=3), w(G * H, H, s=4), w(G * H, s=5) if b_ih else None, w(G * H, s=6) if b_hh else None)


def recurrent_layer_samples():
    return [
        Sample(_layer("lstm", 5, 3, 7, 6), {"mode": "lstm"}, "lstm, h0/c0 and biases given"),
        Sample(_layer("lstm", 4, 2, 5, 7, seed=1, h0=False, c0=False, b_ih=False, b_hh=False),
               {"mode": "lstm", "reverse": True}, "lstm reverse, no states, no biases"),
        Sample(_layer("lstm", 3, 5, 4, 9, seed=2, c0=False, b_hh=False), {"mode": "lstm"},
               "lstm B=5 (not the small-batch path), h0 only, b_ih only"),
        Sample(_layer("gru", 4, 2, 5, 9, seed=3), {"mode": "gru"}, "gru, h0 and biases"),
        Sample(_layer("gru", 5, 6, 3, 4, seed=4, h0=False, b_ih=False), {"mode": "gru", "reverse": True},
               "gru reverse B=6, no h0, b_hh only"),
        Sample(_layer("rnn_tanh", 6, 3, 4, 5, seed=5), {"mode": "rnn_tanh"}, "rnn tanh"),
        Sample(_layer("rnn_relu", 5, 7, 6, 3, seed=6, h0=False, b_ih=False, b_hh=False),
               {"mode": "rnn_relu", "reverse": True}, "rnn relu reverse, no h0, no biases"),
        Sample(_layer("lstm", 6, 16, 24, 40, seed=7), {"mode": "lstm"}, "large lstm (several threads)"),
        Sample(_layer("gru", 5, 9, 17, 33, seed=8), {"mode": "gru", "reverse": True}, "large gru reverse"),
    ]


def recurrent_layer_torch(torch, x, h0, c0, w_ih, w_hh, b_ih, b_hh, mode="lstm", reverse=False):
    from torch import _VF
    B, H = x.shape[1], w_hh.shape[1]
    gh = w_hh.shape[0]
    # torch's one-layer call takes both biases or none: a missing one is zeros (no gradient)
    dt = x.dtype  # the missing ones in the arguments' dtype (the float64 check runs this in double)
    params = [w_ih, w_hh, torch.zeros(gh, dtype=dt) if b_ih is None else b_ih,
              torch.zeros(gh, dtype=dt) if b_hh is None else b_hh]
    h = (torch.zeros(B, H, dtype=dt) if h0 is None else h0).unsqueeze(0)
    xs = x.flip(0) if reverse else x
    if mode == "lstm":
        c = (torch.zeros(B, H, dtype=dt) if c0 is None else c0).unsqueeze(0)
        y, h_n, c_n = _VF.lstm(xs, (h, c), params, True, 1, 0.0, True, False, False)
        states = (h_n[0], c_n[0])
    else:
        fn = {"gru": _VF.gru, "rnn_tanh": _VF.rnn_tanh, "rnn_relu": _VF.rnn_relu}[mode]
        y, h_n = fn(xs, h, params, True, 1, 0.0, True, False, False)
        states = (h_n[0],)
    return ((y.flip(0) if reverse else y),) + states


def recurrent_layer_bad_inputs():
    x, h0, c0, w_ih, w_hh, b_ih, b_hh = _layer("lstm", 5, 3, 7, 6)
    return [BadInput((x, h0, c0, w_ih, w_hh, b_ih, b_hh), {"mode": "LSTM"}, ValueError, "mode"),
            BadInput((x[0], h0, c0, w_ih, w_hh, b_ih, b_hh), {}, ValueError, "x"),
            BadInput((x, h0, c0, w_ih[:, :6], w_hh, b_ih, b_hh), {}, ValueError, "w_ih"),
            BadInput((x, h0, c0, w_ih, w_hh[:18], b_ih, b_hh), {}, ValueError, "w_hh"),
            BadInput((x, h0[:2], c0, w_ih, w_hh, b_ih, b_hh), {}, ValueError, "h0"),
            BadInput((x, h0, c0[:, :5], w_ih, w_hh, b_ih, b_hh), {}, ValueError, "c0"),
            BadInput((x, h0, c0, w_ih, w_hh, b_ih[:23], b_hh), {}, ValueError, "b_ih"),
            BadInput((x, h0, c0, w_ih, w_hh, b_ih, b_hh[None]), {}, ValueError, "b_hh"),
            BadInput((x, h0, c0, w_ih, w_hh, b_ih, b_hh), {"mode": "gru"}, ValueError, "w_hh")]


# ---- embedding -----------------------------------------------------------------------------------------
def _indices(n, *shape, seed=0):
    return np.random.default_rng(seed).integers(0, n, size=shape).astype(np.int64)


def embedding_samples():
    pad = _indices(11, 3, 4, seed=1)
    pad[0, :2] = 2  # the padding row is looked up (and gets no gradient)
    last = _indices(9, 2, 3, 2, seed=3)
    last[1, 2] = 8
    return [Sample((rand(11, 5), pad), {"padding_idx": 2}, "(3, 4) indices, padding_idx 2"),
            Sample((rand(6, 3, seed=1), _indices(6, 7, seed=2)), name="1-D indices, repeats"),
            Sample((rand(4, 6, seed=2), np.array(3, np.int64)), name="0-d index"),
            Sample((rand(9, 4, seed=3), last), {"padding_idx": -1}, "3-D indices, padding_idx -1"),
            Sample((rand(1000, 64, seed=4), _indices(1000, 40, 30, seed=5)), name="large"),
            Sample((rand(6, 3, seed=5), _indices(6, 4, 5, seed=6)), {"scale_grad_by_freq": True},
                   "scale_grad_by_freq, repeats"),
            Sample((rand(11, 5, seed=6), pad), {"padding_idx": 2, "scale_grad_by_freq": True},
                   "scale_grad_by_freq with padding_idx")]


def embedding_torch(torch, weight, indices, padding_idx=None, scale_grad_by_freq=False):
    import torch.nn.functional as F
    return F.embedding(indices, weight, padding_idx, scale_grad_by_freq=scale_grad_by_freq)


def embedding_bad_inputs():
    w, idx = rand(11, 5), _indices(11, 3, 4)
    return [BadInput((w, idx.astype(np.float32)), {}, TypeError, "indices"),
            BadInput((w, idx + 11), {}, IndexError, "indices"),
            BadInput((w, idx - 11), {}, IndexError, "indices"),
            BadInput((rand(11), idx), {}, ValueError, "weight"),
            BadInput((w, idx), {"padding_idx": 11}, ValueError, "padding_idx"),
            BadInput((w, idx), {"padding_idx": -12}, ValueError, "padding_idx"),
            BadInput((w, idx), {"scale_grad_by_freq": "yes"}, TypeError, "scale_grad_by_freq")]
