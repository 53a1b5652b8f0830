"""Recurrent layers as autograd Functions over the kernels in forgegrad.kernels.rnn.

RecurrentLayer runs one layer in one direction over a whole sequence (LSTM, GRU or Elman RNN) and
backpropagates through time in one kernel call; multi-layer, bidirectional and variable-length
networks are composed from it in forgegrad.nn.rnn.

Both Functions are op records (ops.registry); samples, torch references and bad inputs are in
rnn_samples.py.
"""
from __future__ import annotations

import numpy as np

from .. import _C
from ..autograd import Function, is_grad_enabled
from .._validate import check_bool, check_int
from ..devices import MetaArray
from ..kernels import rnn as K
from ..kernels.embedding import embedding_backward as _embedding_backward
from . import _cuda_pointwise as _CP
from . import _cuda_nn
from . import _meta as M
from . import rnn_samples as RS
from ._op_rules import with_args
from .registry import register_op

MODES = ("lstm", "gru", "rnn_tanh", "rnn_relu")
_GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}
_F32 = np.dtype(np.float32)


def _check_mode(mode):
    if mode not in MODES:
        raise ValueError(f"recurrent layer: mode must be one of {MODES}, got {mode!r}")


# ---- shape rules (the meta device) and FLOP counts ----------------------------------------------------
def _recurrent_layer_meta(x, h0, c0, w_ih, w_hh, b_ih, b_hh, mode="lstm", reverse=False):
    """The shape checks of kernels.rnn on shapes alone; (y (T, B, H), h_n (B, H)[, c_n (B, H)])."""
    _check_mode(mode)
    fn = "recurrent layer"
    if x.ndim != 3 or 0 in x.shape:
        raise ValueError(f"{fn}: x must be 3-D (seq_len, batch, input_size) with no empty axis, got shape {x.shape}")
    T, B, I = x.shape
    G = _GATES[mode]
    if w_hh.ndim != 2 or w_hh.shape[1] == 0 or w_hh.shape[0] != G * w_hh.shape[1]:
        raise ValueError(f"{fn}: w_hh must have shape ({G} * hidden_size, hidden_size), got {w_hh.shape}")
    H = w_hh.shape[1]
    if w_ih.shape != (G * H, I):
        raise ValueError(f"{fn}: w_ih must have shape {(G * H, I)} for x of shape {x.shape}, got {w_ih.shape}")
    states = ((h0, "h0"), (c0, "c0")) if mode == "lstm" else ((h0, "h0"),)
    for s, name in states:
        if s is not None and s.shape != (B, H):
            raise ValueError(f"{fn}: {name} must have shape (batch, hidden_size) = {(B, H)}, got {s.shape}")
    for b, name in ((b_ih, "b_ih"), (b_hh, "b_hh")):
        if b is not None and b.shape != (G * H,):
            raise ValueError(f"{fn}: {name} must have shape {(G * H,)}, got {b.shape}")
    y, h = MetaArray((T, B, H), _F32), MetaArray((B, H), _F32)
    return (y, h, MetaArray((B, H), _F32)) if mode == "lstm" else (y, h)


# Elementwise FLOPs per hidden unit and step, sigmoid / tanh counted 4 (as ops.activation's),
# relu 1. LSTM: 3 sigmoids + 2 tanh, c = f*c + i*g, h = o*tanh(c): 24. GRU: 2 sigmoids + tanh,
# r * (W_hn h + b_hn), its add, h = (1 - z)*n + z*h: 18. RNN: the nonlinearity.
_GATE_MATH = {"lstm": 24, "gru": 18, "rnn_tanh": 4, "rnn_relu": 1}


def _recurrent_layer_flops(out, x, h0, c0, w_ih, w_hh, b_ih, b_hh, mode="lstm", reverse=False):
    """The two projections, 2*T*B*G*H*(I + H), their sum, each bias's add, and the gate math."""
    T, B, I = x.shape
    GH, H = w_hh.shape
    adds = 1 + (b_ih is not None) + (b_hh is not None)
    return T * B * (2 * GH * (I + H) + adds * GH + _GATE_MATH[mode] * H)


def _embedding_meta(weight, indices, padding_idx=None, scale_grad_by_freq=False):
    _check_embedding(weight, indices, padding_idx, scale_grad_by_freq)
    return MetaArray(tuple(indices.shape) + (weight.shape[1],), weight.dtype)


def _check_embedding(weight, indices, padding_idx, scale_grad_by_freq=False):
    check_bool(scale_grad_by_freq, "embedding: scale_grad_by_freq")
    if weight.ndim != 2:
        raise ValueError(f"embedding: weight must be 2-D (num_embeddings, embedding_dim), got shape {weight.shape}")
    if indices.dtype.kind not in "iu":
        raise TypeError(f"embedding: indices must be an integer tensor, got dtype {indices.dtype}")
    n = weight.shape[0]
    if padding_idx is not None:
        padding_idx = check_int(padding_idx, "embedding: padding_idx")  # 2.0 or True is no index
    if padding_idx is not None and not -n <= padding_idx < n:
        raise ValueError(f"embedding: padding_idx must be within num_embeddings [-{n}, {n}), got {padding_idx}")


def _ready(a) -> bool:
    """An array the kernel binding takes as is (no conversion or copy needed)."""
    return type(a) is np.ndarray and a.dtype == _F32 and a.flags.c_contiguous and a.flags.aligned


def _recurrent_layer_inference(x, h0, c0, w_ih, w_hh, b_ih, b_hh, mode="lstm", reverse=False):
    """The no-graph forward (the op's ``inference`` kernel): straight to the kernel binding, which
    checks every dtype and shape itself. At batch 1 the wrapper's per-argument checks cost as much
    as several time steps. Anything the binding refuses, or that needs converting, goes through the
    checked path (kernels.rnn), so errors carry the same messages either way."""
    lstm = mode == "lstm"
    if not lstm:
        c0 = None
    if (mode in K._MODES and type(reverse) is bool and _ready(x) and x.ndim == 3 and _ready(w_hh) and w_hh.ndim == 2
            and _ready(w_ih) and all(a is None or _ready(a) for a in (h0, c0, b_ih, b_hh))):
        T, B, _ = x.shape
        H = w_hh.shape[1]
        y = np.empty((T, B, H), np.float32)
        h_n = np.empty((B, H), np.float32)
        c_n = np.empty((B, H), np.float32) if lstm else None
        zeros = None
        if h0 is None or (lstm and c0 is None):
            zeros = np.zeros((B, H), np.float32)
        try:
            _C.rnn.forward(K._MODES[mode], x, zeros if h0 is None else h0, zeros if lstm and c0 is None else c0,
                           w_ih, w_hh, b_ih, b_hh, y, h_n, c_n, None, None, None, reverse)
        except (TypeError, ValueError):
            pass  # the checked path below raises it with the wrapper's message
        else:
            return (y, h_n, c_n) if lstm else (y, h_n)
    return _no_graph_forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, mode, reverse)


def _kernel_forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, mode, reverse, training):
    """The mode's forward kernel: ``((y, h_n, c_n) or (y, h_n), saved)``."""
    _check_mode(mode)
    if mode == "lstm":
        y, h_n, c_n, saved = K.lstm_forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, reverse=reverse, training=training)
        return (y, h_n, c_n), saved
    if mode == "gru":
        y, h_n, saved = K.gru_forward(x, h0, w_ih, w_hh, b_ih, b_hh, reverse=reverse, training=training)
    else:
        y, h_n, saved = K.rnn_forward(x, h0, w_ih, w_hh, b_ih, b_hh, nonlinearity=mode[4:], reverse=reverse,
                                      training=training)
    return (y, h_n), saved


def _no_graph_forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, mode, reverse):
    return _kernel_forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, mode, reverse, training=False)[0]


@register_op("recurrent_layer", meta=_recurrent_layer_meta, flops=with_args(_recurrent_layer_flops),
             inference={"cpu": _recurrent_layer_inference},
             samples=RS.recurrent_layer_samples, torch=RS.recurrent_layer_torch,
             bad_inputs=RS.recurrent_layer_bad_inputs, tol=RS.RECURRENT_TOL)
class RecurrentLayerFunction(Function):
    """One layer, one direction: ``x`` (T, B, I), ``h0`` / ``c0`` (B, H) or None (zeros), torch
    weight layout (``w_ih`` (G*H, I), ``w_hh`` (G*H, H), biases (G*H,) or None).

    Returns ``(y, h_n, c_n)`` for ``mode="lstm"``, ``(y, h_n)`` otherwise; ``reverse=True`` runs
    t = T-1 .. 0 with ``y[t]`` aligned to ``x[t]``. Activations are saved only when a graph is
    being recorded.
    """

    @staticmethod
    def forward(ctx, x, h0, c0, w_ih, w_hh, b_ih, b_hh, mode="lstm", reverse=False):
        training = is_grad_enabled() and any(ctx.needs_input_grad)
        ctx.mode = mode
        ctx.has = (h0 is not None, c0 is not None, b_ih is not None, b_hh is not None)
        outputs, ctx.saved = _kernel_forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, mode, reverse, training)
        return outputs

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


# the cuda device: host time loop over SGEMMs and fused gate kernels (ops/_cuda_pointwise.py)
RecurrentLayerFunction.op.add_device("cuda", _CP.RecurrentLayerCudaFunction)


# a gather: data movement only
@register_op("embedding", meta=_embedding_meta, flops=M.no_flops, samples=RS.embedding_samples,
             torch=RS.embedding_torch, bad_inputs=RS.embedding_bad_inputs)
class EmbeddingFunction(Function):
    """``weight[indices]`` for int64 ``indices`` of any shape; the row ``padding_idx`` (if any)
    receives no gradient; with ``scale_grad_by_freq`` each row's gradient is divided by how often ``indices``
    holds it, as torch's."""

    @staticmethod
    def forward(ctx, weight, indices, padding_idx=None, scale_grad_by_freq=False):
        idx = np.asarray(indices)
        _check_embedding(weight, idx, padding_idx, scale_grad_by_freq)
        n = weight.shape[0]
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise IndexError(f"embedding: index out of range: indices must be in [0, {n}), got values in "
                             f"[{idx.min()}, {idx.max()}]")
        ctx.save_for_backward(idx)  # changing the indices in place before backward raises, as torch's
        ctx.n, ctx.padding_idx = n, padding_idx
        ctx.scale_grad_by_freq = bool(scale_grad_by_freq)
        return weight[idx]

    @staticmethod
    def backward(ctx, g):
        (idx,) = ctx.saved_tensors
        if ctx.scale_grad_by_freq:  # torch adds each position's gradient times 1 / (its row's count)
            inv = 1.0 / np.bincount(idx.reshape(-1), minlength=ctx.n)[idx]
            g = g * inv.astype(g.dtype)[..., None]
        if g.dtype == np.float64:  # the kernel is float32: numpy's add.at sums in position order too
            gw = np.zeros((ctx.n, g.shape[-1]), g.dtype)
            np.add.at(gw, idx.reshape(-1), g.reshape(-1, g.shape[-1]))
            if ctx.padding_idx is not None:
                gw[ctx.padding_idx] = 0
            return gw, None
        # rows summed in ascending position order by the C++ kernel: same bits at any thread count
        return _embedding_backward(g, idx, ctx.n, ctx.padding_idx)


class EmbeddingCudaFunction(Function):
    """embedding on cuda: a row gather; the backward sums each row's gradients in ascending position
    order without sorting or float atomics (cuda/embedding.cu); ``scale_grad_by_freq`` scales each
    position's gradient by 1 / its row's count first (counted on the host, as the CPU's). int64 indices;
    an index out of range gives a NaN row (a kernel cannot raise IndexError)."""

    @staticmethod
    def forward(ctx, weight, indices, padding_idx=None, scale_grad_by_freq=False):
        _check_embedding(weight, indices, padding_idx, scale_grad_by_freq)
        if indices.dtype != np.int64:
            raise TypeError(f"embedding on cuda: indices must be int64, got {indices.dtype}")
        n = weight.shape[0]
        ctx.save_for_backward(indices)
        ctx.n, ctx.scale_grad_by_freq = n, bool(scale_grad_by_freq)
        ctx.padding_idx = -1 if padding_idx is None else (padding_idx + n if padding_idx < 0 else padding_idx)
        return _cuda_nn.kernels().embedding_forward(weight, indices)

    @staticmethod
    def backward(ctx, g):
        (indices,) = ctx.saved_tensors
        if ctx.scale_grad_by_freq:  # each position's gradient times 1 / (its row's count), as the CPU's
            from .. import cuda
            idx = cuda.to_host(indices)
            inv = (1.0 / np.bincount(idx.reshape(-1), minlength=ctx.n)[idx]).astype(np.float32)
            g = _cuda_nn.pw("mul", g, cuda.to_device(inv[..., None], g.device))
        return _cuda_nn.kernels().embedding_backward(g, indices, ctx.n, ctx.padding_idx), None, None


EmbeddingFunction.op.add_device("cuda", EmbeddingCudaFunction)
