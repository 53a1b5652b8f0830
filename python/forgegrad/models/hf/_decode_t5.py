"""T5's lean decode step: one new token per row through the decoder as direct kernel calls on the
parameters' own arrays (RMSNorms, GEMVs with the activation fused, batched GEMMs over the self-attention
cache and the encoder's keys/values, softmax), as ``_decode.LeanDecoder`` does for the decoder-only models.

Through the Tensor layer a T5-small step is ~270 ops, each tens of microseconds of Python dispatch: ~4 ms
on an ~6 ms memory-bound token. The math is the Tensor forward's, op for op (the relative-position bias of
the step's query is a row of the first layer's table, looked up by the same buckets).
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np

from ... import _C
from ...grad_mode import graph_free
from ...nn.linear import packed_weight
from ._decode import _GELU_TANH, _rms_norm

__all__ = ["T5LeanStep", "t5_lean_applies"]


def _plain_types() -> tuple:
    from ... import nn
    from . import t5
    return (t5.T5ForConditionalGeneration, t5.T5Stack, t5.T5Block, t5.T5SubLayer, t5.T5Attention, t5.T5FeedForward,
            nn.Linear, nn.RMSNorm, nn.Embedding, nn.Dropout, nn.ModuleList)


def t5_lean_applies(model) -> bool:
    """Whether the lean step computes what T5's decode does: no graph to record, eval mode, only the module
    types from_pretrained builds, no forward pre-hooks, float32 CPU parameters."""
    if not graph_free() or model.training:
        return False
    plain = _plain_types()
    for m in model.modules():
        if type(m) not in plain or m.__dict__.get("_forward_pre_hooks"):
            return False
        for p in m._parameters.values():
            if p is not None and (type(p._data) is not np.ndarray or p._data.dtype != np.float32):
                return False
    return True


def _linear(layer, x: np.ndarray, act: int = -1) -> np.ndarray:
    return _C.gemm.linear(x, layer.weight.numpy(), None, act, 0.0, packed_weight(layer))


def _attend(q: np.ndarray, keys: np.ndarray, values: np.ndarray, bias: Optional[np.ndarray]) -> np.ndarray:
    """softmax(q k^T + bias) v for q (B, H, D) over keys/values (B, H, L, D) (T5 does not scale the scores);
    ``bias`` broadcasts against the scores (B, H, 1, L)."""
    B, H, L, D = keys.shape
    scores = np.empty((B * H, 1, L), np.float32)
    _C.gemm.bmm(np.ascontiguousarray(q).reshape(B * H, 1, D), keys.reshape(B * H, L, D), scores, False, True, 1.0,
                0.0)
    if bias is not None:
        scores = np.ascontiguousarray(scores.reshape(B, H, 1, L) + bias, dtype=np.float32).reshape(B * H, 1, L)
    probs = np.empty_like(scores)
    _C.softmax.softmax_forward(scores.reshape(-1, L), probs.reshape(-1, L))
    out = np.empty((B * H, 1, D), np.float32)
    _C.gemm.bmm(probs, values.reshape(B * H, L, D), out, False, False, 1.0, 0.0)
    return out.reshape(B, H * D)


class T5LeanStep:
    """``step(tokens (B,)) -> logits (B, vocab)``: the decoder on one new token per row, appending to ``cache``
    (a KVCache) and attending to ``cross`` (each layer's encoder keys and values) with the encoder input's
    padding ``mask`` (B, S) of 0/1, or None."""

    def __init__(self, model, cross: List[Tuple], mask: Optional[np.ndarray], cache):
        from ._layers import KVCache
        from .t5 import _feed_forward_kind, relative_position_bucket
        if not isinstance(cache, KVCache):
            raise TypeError("T5LeanStep: cache must be a KVCache")
        self.model, self.cache = model, cache
        self.cross = [(np.ascontiguousarray(k.numpy()), np.ascontiguousarray(v.numpy())) for k, v in cross]
        self.cross_bias = None
        if mask is not None and not mask.all():
            self.cross_bias = np.where(mask, np.float32(0), np.float32(np.finfo(np.float32).min)).astype(
                np.float32)[:, None, None, :]
        att = model.decoder.block[0].layer[0].SelfAttention
        self._bucket = lambda rel: relative_position_bucket(rel, False, att.num_buckets, att.max_distance)
        self.table = att.relative_attention_bias.weight.numpy()  # (buckets, heads)
        self.heads = att.heads
        gated, act = _feed_forward_kind(model.config)
        self.gated, self.act = gated, _GELU_TANH.get(act)
        if self.act is None:
            raise ValueError(f"T5LeanStep: no fused kernel for the activation {act!r}")

    def __call__(self, tokens: np.ndarray) -> np.ndarray:
        m, cache = self.model, self.cache
        dec = m.decoder
        p = cache.length
        if p + 1 > cache.max_length:
            raise ValueError(f"T5LeanStep: {p + 1} tokens exceed the cache's max_length {cache.max_length}")
        x = m.shared.weight.numpy()[np.asarray(tokens, np.int64)]  # (B, d)
        B, H = x.shape[0], self.heads
        # the query at place p over keys 0..p: the first layer's learned bias of each distance, (1, H, 1, p + 1)
        bias = self.table[self._bucket(np.arange(p + 1) - p)].T[None, :, None, :]
        for i, block in enumerate(dec.block):
            sub_self, sub_cross, sub_ff = block.layer
            att = sub_self.SelfAttention
            h = _rms_norm(x, sub_self.layer_norm.weight.numpy(), sub_self.layer_norm.eps)
            q = _linear(att.q, h).reshape(B, H, -1)
            cache.keys[i][:, :, p] = _linear(att.k, h).reshape(B, H, -1)
            cache.values[i][:, :, p] = _linear(att.v, h).reshape(B, H, -1)
            a = _attend(q, cache.keys[i][:, :, :p + 1], cache.values[i][:, :, :p + 1], bias)
            x = x + _linear(att.o, a)
            ca = sub_cross.EncDecAttention
            h = _rms_norm(x, sub_cross.layer_norm.weight.numpy(), sub_cross.layer_norm.eps)
            k, v = self.cross[i]
            a = _attend(_linear(ca.q, h).reshape(B, H, -1), k, v, self.cross_bias)
            x = x + _linear(ca.o, a)
            ff = sub_ff.DenseReluDense
            h = _rms_norm(x, sub_ff.layer_norm.weight.numpy(), sub_ff.layer_norm.eps)
            f = _linear(ff.wi_0, h, self.act) * _linear(ff.wi_1, h) if self.gated else _linear(ff.wi, h, self.act)
            x = x + _linear(ff.wo, f)
        x = _rms_norm(x, dec.final_layer_norm.weight.numpy(), dec.final_layer_norm.eps)
        cache.advance(1)
        if m.scale_head:
            x = x * (m.config["d_model"] ** -0.5)
        head = m.shared if m.tied else m.lm_head
        return _linear(head, np.ascontiguousarray(x, dtype=np.float32))
