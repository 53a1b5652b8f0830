"""The differentiable backward rules of the losses, norms, attention and the recurrent layer (the table's second
half, see _double_backward.py): mse_loss and l1_loss by formula, the fused ones (cross_entropy, nll_loss,
layer_norm, rms_norm, batch_norm, binary_cross_entropy(_with_logits), kl_div, scaled_dot_product_attention,
recurrent_layer) by decomposition into ops that have formulas."""
from __future__ import annotations

import math

import numpy as np

from ..tensor import Tensor
from .registry import _OPS
from ._double_backward import _arg, _const, _flat, _for, _is_t, _where, decomposed, decomposition, rule
from .attention import PackedCausalAttentionFunction


def _reduce(per: Tensor, reduction: str) -> Tensor:
    return per.mean() if reduction == "mean" else per.sum() if reduction == "sum" else per


@rule("mse_loss")
def _mse_loss(ctx, args, kwargs, g):
    inp, target = args[0], args[1]
    reduction = _arg(args, kwargs, 2, "reduction", "mean")
    d = inp - target
    scale = 2.0 / d._data.size if reduction == "mean" else 2.0
    gd = (g if reduction == "none" else g.expand(*d.shape)) * d * scale
    return _for(inp, gd), _for(target, -gd) if _is_t(target) else None


@rule("l1_loss")
def _l1_loss(ctx, args, kwargs, g):
    inp, target = args[0], args[1]
    reduction = _arg(args, kwargs, 2, "reduction", "mean")
    d = inp - target
    gd = (g if reduction == "none" else g.expand(*d.shape)) * _flat(d, np.sign)
    if reduction == "mean":
        gd = gd / d._data.size
    return _for(inp, gd), _for(target, -gd) if _is_t(target) else None


def _rows(x: Tensor) -> Tensor:
    """(N, C, d1, ...) -> (N * d1 * ..., C), classes last; (C,) -> (1, C)."""
    if x.ndim == 1:
        return x.reshape(1, x.shape[0])
    if x.ndim > 2:
        x = x.permute(0, *range(2, x.ndim), 1)
    return x.reshape(-1, x.shape[-1])


def _nll_rows(logp: Tensor, target, weight, ignore_index):
    """Per-row -w[y] * logp[row, y] (zero where y == ignore_index) and the weights w[y]."""
    y = (target._data if _is_t(target) else np.asarray(target)).reshape(-1)
    valid = y != ignore_index
    if np.any(valid & ((y < 0) | (y >= logp.shape[1]))):
        raise IndexError(f"target {y[valid & ((y < 0) | (y >= logp.shape[1]))][0]} is out of bounds")
    ys = np.where(valid, y, 0)
    w = np.ones(logp.shape[1]) if weight is None else np.asarray(weight._data if _is_t(weight) else weight)
    wy = np.where(valid, w[ys], 0).astype(logp._data.dtype)
    return -logp[np.arange(len(ys)), ys] * _const(wy, logp), wy, valid


def _class_loss(per: Tensor, denom, reduction, shape):
    if reduction == "none":
        return per.reshape((shape[0],) + tuple(shape[2:]) if len(shape) >= 2 else ())
    total = per.sum()
    return total / float(denom) if reduction == "mean" else total


def _cross_entropy(logits, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    C = logits.shape[1] if logits.ndim >= 2 else logits.shape[0]
    logp = _rows(logits).log_softmax(-1)
    eps = float(label_smoothing)
    wt = None if weight is None else (weight if _is_t(weight) else _const(weight, logp))
    if target._data.dtype.kind == "f":  # class probabilities
        t = _rows(target)
        if eps > 0:
            t = t * (1 - eps) + eps / C
        per = -((t * logp * wt) if wt is not None else t * logp).sum(dim=-1)
        return _class_loss(per, per.shape[0], reduction, logits.shape)
    nll, wy, valid = _nll_rows(logp, target, weight, ignore_index)
    per = nll * (1 - eps)
    if eps > 0:
        wl = logp * wt if wt is not None else logp
        per = per + (-wl.sum(dim=-1) * _const(valid, logp)) * (eps / C)
    return _class_loss(per, wy.sum(), reduction, logits.shape)


def _nll_loss(logp, target, weight=None, ignore_index=-100, reduction="mean"):
    nll, wy, _ = _nll_rows(_rows(logp), target, weight, ignore_index)
    return _class_loss(nll, wy.sum(), reduction, logp.shape)


def _trailing(x, normalized_shape):
    n = 1 if isinstance(normalized_shape, (int, np.integer)) else len(tuple(normalized_shape))
    return tuple(range(x.ndim - n, x.ndim))


def _layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    axes = _trailing(x, normalized_shape)
    d = x - x.mean(dim=axes, keepdim=True)
    y = d / ((d * d).mean(dim=axes, keepdim=True) + eps).sqrt()
    if weight is not None:
        y = y * weight
    return y + bias if bias is not None else y


def _rms_norm(x, normalized_shape, weight=None, eps=None):
    axes = _trailing(x, normalized_shape)
    eps = float(np.finfo(x._data.dtype).eps) if eps is None else eps
    y = x / ((x * x).mean(dim=axes, keepdim=True) + eps).sqrt()
    return y * weight if weight is not None else y


def _bce_with_logits(x, target, weight=None, pos_weight=None, reduction="mean"):
    softplus_neg = (-x).relu() + ((-x.abs()).exp() + 1).log()  # log(1 + exp(-x)), stable
    coef = 1 if pos_weight is None else (pos_weight - 1) * target + 1
    per = (1 - target) * x + coef * softplus_neg
    if weight is not None:
        per = per * weight
    return _reduce(per, reduction)


decomposed("cross_entropy", _cross_entropy)
decomposed("nll_loss", _nll_loss)
decomposed("layer_norm", _layer_norm)
decomposed("rms_norm", _rms_norm)
decomposed("binary_cross_entropy_with_logits", _bce_with_logits)


def _attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False,
               softcap=None):
    """softmax(q k^T * scale (soft-capped), masked) v, a row that no key takes part in giving 0 (the op's rule)."""
    if dropout_p:
        raise NotImplementedError("create_graph=True: scaled_dot_product_attention with dropout_p > 0 has no "
                                  "differentiable rule (its mask is drawn inside the kernel); use dropout_p=0")
    if enable_gqa and k.ndim >= 3 and k.shape[-3] != q.shape[-3]:
        heads = (Ellipsis, np.arange(q.shape[-3]) // (q.shape[-3] // k.shape[-3]), slice(None), slice(None))
        k, v = k[heads], v[heads]
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = (q * scale) @ k.transpose(-1, -2)
    if softcap is not None:
        s = (s / softcap).tanh() * softcap
    L, S = q.shape[-2], k.shape[-2]
    keep = np.tril(np.ones((L, S), dtype=bool)) if is_causal else None
    if attn_mask is not None:
        m = attn_mask._data if _is_t(attn_mask) else np.asarray(attn_mask)
        if m.dtype == np.bool_:
            keep = m
        else:
            s = s + attn_mask
    if keep is None:
        return s.softmax(-1) @ v
    keep = np.broadcast_to(keep, s.shape)
    live = keep.any(axis=-1, keepdims=True)
    s = _where(keep | ~live, s, -math.inf)  # a row without keys: plain scores, then zeroed
    return _where(live, s.softmax(-1), 0.0) @ v


decomposed("scaled_dot_product_attention", _attention)


def _packed_causal_attention(qkv, heads, scale=None):
    """GPT's fused attention (ops.attention.PackedCausalAttentionFunction) as the ops it fuses: qkv (B, T, 3C)
    split into q, k, v of (B, heads, T, D), causal attention, the heads merged back to (B, T, C)."""
    B, T, C = qkv.shape[0], qkv.shape[1], qkv.shape[2] // 3
    q, k, v = (qkv[:, :, i * C:(i + 1) * C].reshape(B, T, heads, C // heads).permute(0, 2, 1, 3) for i in range(3))
    return _attention(q, k, v, is_causal=True, scale=scale).permute(0, 2, 1, 3).reshape(B, T, C)


PackedCausalAttentionFunction.differentiable_backward = staticmethod(decomposition(_packed_causal_attention))


def _batch_norm(x, running_mean=None, running_var=None, weight=None, bias=None, training=False, momentum=0.1,
                eps=1e-5):
    """Batch statistics when training (or without running ones), else the running ones (constants). The running
    buffers are read, never updated: the forward did that."""
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    if training or running_mean is None:
        d = x - x.mean(dim=axes, keepdim=True)
        y = d / ((d * d).mean(dim=axes, keepdim=True) + eps).sqrt()
    else:
        mean = _const(running_mean._data.reshape(shape), x)
        y = (x - mean) / _const(np.sqrt(running_var._data.reshape(shape) + eps), x)
    if weight is not None:
        y = y * weight.reshape(shape)
    return y + bias.reshape(shape) if bias is not None else y


def _bce(p, target, weight=None, reduction="mean"):
    """torch's: the log terms clamped at -100."""
    per = -(target * p.log().clamp(min=-100) + (1 - target) * (1 - p).log().clamp(min=-100))
    return _reduce(per * weight if weight is not None else per, reduction)


def _kl_div(inp, target, reduction="mean", log_target=False):
    if log_target:
        per = target.exp() * (target - inp)
    else:  # xlogy(t, t) - t * inp: 0 where t == 0
        pos = (target._data if _is_t(target) else np.asarray(target)) > 0
        per = _where(pos, target * _where(pos, target, 1.0).log(), 0.0) - target * inp
    if reduction == "batchmean":
        return per.sum() / float(inp.shape[0]) if inp.ndim else per.sum()
    return _reduce(per, reduction)


decomposed("batch_norm", _batch_norm)
decomposed("binary_cross_entropy", _bce)
decomposed("kl_div", _kl_div)


def _recurrent(x, h0, c0, w_ih, w_hh, b_ih, b_hh, mode="lstm", reverse=False):
    """One layer, one direction, torch's gate order (LSTM i, f, g, o; GRU r, z, n): x (T, B, In) ->
    (y (T, B, H), h_n[, c_n])."""
    T, B = x.shape[0], x.shape[1]
    H = w_hh.shape[1]
    zeros = _const(np.zeros((B, H)), x)
    h = zeros if h0 is None else h0
    c = (zeros if c0 is None else c0) if mode == "lstm" else None
    xw = x @ w_ih.t()
    if b_ih is not None:
        xw = xw + b_ih
    ys = [None] * T
    for t in (range(T - 1, -1, -1) if reverse else range(T)):
        hw = h @ w_hh.t()
        if b_hh is not None:
            hw = hw + b_hh
        if mode == "lstm":
            a = xw[t] + hw
            i, f, o = a[:, :H].sigmoid(), a[:, H:2 * H].sigmoid(), a[:, 3 * H:].sigmoid()
            c = f * c + i * a[:, 2 * H:3 * H].tanh()
            h = o * c.tanh()
        elif mode == "gru":
            r = (xw[t][:, :H] + hw[:, :H]).sigmoid()
            z = (xw[t][:, H:2 * H] + hw[:, H:2 * H]).sigmoid()
            n = (xw[t][:, 2 * H:] + r * hw[:, 2 * H:]).tanh()
            h = (1 - z) * n + z * h
        else:
            a = xw[t] + hw
            h = a.tanh() if mode == "rnn_tanh" else a.relu()
        ys[t] = h
    y = _OPS["stack"](*ys, dim=0)
    return (y, h, c) if mode == "lstm" else (y, h)


decomposed("recurrent_layer", _recurrent)
