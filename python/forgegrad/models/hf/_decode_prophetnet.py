"""ProphetNet's lean decode step: what its cached decode computes for one new place (models/hf/prophetnet.py,
``decode`` with T = 1: the main stream and the first predicting stream only, the one the logits read) as direct
kernel calls on arrays, for ``generate`` and the completions server's batched rows (serve/seq2seq_batch.py).

Per layer, both streams' rows go through the shared projections together (2B rows: the main stream's, then the
predicting stream's). The main stream's query attends to the row's cached main keys and its own new one, with the
relative-position bias its own ``relative_pos_embeddings`` projection gives each key's bucket (``relative_buckets`` of
key place - query place); the predicting stream's query attends to the same main keys with its projection's bias at
the bucket one place further, and to its own key (bucket 0), one softmax over both. The new main key and value go
into the cache; the predicting stream's are never kept. Cross-attention and feed-forward treat both streams' rows
alike; the logits are the predicting stream's through the LM head.

In a batch each row's cached keys are right-aligned behind masked padding (``padding``) and each row has its own
decoder place (``positions``): its position rows are pad + 1 + place (main) and pad + 2 + place (predicting), and the
distance of a right-aligned key to the new query is the same as in the row alone. A paged pool is not taken: the
relative bias depends on each row's own query (no table by distance for the paged kernel), so the server batches
ProphetNet on the contiguous engine.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np

from ... import _C
from ._decode import _rows
from ._decode_seq2seq import _LeanStep, _linear, _norm

__all__ = ["ProphetNetLeanStep"]

_MASKED = np.float32(np.finfo(np.float32).min)


class ProphetNetLeanStep(_LeanStep):
    """``step(tokens (B,), positions (B,) or None, padding (B, p + 1) or None) -> logits (B, vocab)``: the decoder on
    one new token per row, appending its main-stream keys to ``cache`` (a KVCache) and attending to ``cross`` (each
    layer's encoder keys and values) with the encoder input's padding ``mask`` (B, S) of 0/1, or None."""

    def __init__(self, model, cross: List[Tuple], mask: Optional[np.ndarray], cache):
        super().__init__(model, cross, mask, cache, model.config.get("activation_function", "gelu"))
        c = model.config
        self.num_buckets, self.max_distance = c["num_buckets"], c["relative_max_distance"]

    def rebind(self, cache, cross, cross_bias: Optional[np.ndarray]) -> None:
        from ._decode import PagedKV
        if isinstance(cache, PagedKV):
            raise TypeError("ProphetNetLeanStep: no paged step (the relative bias depends on each row's query); "
                            "give a KVCache")
        super().rebind(cache, cross, cross_bias)

    def _buckets(self, distance: np.ndarray) -> np.ndarray:
        from .prophetnet import relative_buckets
        return relative_buckets(distance, self.num_buckets, self.max_distance)

    def __call__(self, tokens: np.ndarray, positions: Optional[np.ndarray] = None,
                 padding: Optional[np.ndarray] = None) -> np.ndarray:
        m, cache = self.model, self.cache
        dec = m.decoder
        p = self._next_place()
        tokens = np.asarray(tokens, np.int64)
        B = tokens.shape[0]
        at = np.full(B, p, np.int64) if positions is None else np.asarray(positions, np.int64)
        if (at + m.pad + 2 >= m.position_rows).any():
            raise ValueError(f"ProphetNetLeanStep: decoder place {int(at.max())} needs position row "
                             f"{int(at.max()) + m.pad + 2}, past max_position_embeddings {m.position_rows}")
        table = dec.position_embeddings
        main = _rows(m.decoder_embedding(), tokens) + _rows(table, at + m.pad + 1)
        gram = _rows(dec.ngram_embeddings, np.array([m.ngram - 1]))  # the first predicting stream's row
        predict = gram + _rows(table, at + m.pad + 2)
        x = _norm(dec.embeddings_layer_norm, np.concatenate([main, predict]))  # (2B, d)
        pad = None if padding is None else np.where(np.asarray(padding, bool), np.float32(0), _MASKED)[:, None]
        keys_at = np.arange(p + 1) - p  # each cached key's place - the query's (right-aligned rows: the same)
        main_buckets, predict_buckets = self._buckets(keys_at), self._buckets(keys_at - 1)
        for i, layer in enumerate(dec.layers):
            att = layer.self_attn
            H, D = att.heads, att.head_dim
            q = (_linear(att.query_proj, x) / np.float32(D ** 0.5)).reshape(2, B, H, D)
            k = _linear(att.key_proj, x).reshape(2, B, H, D)
            v = _linear(att.value_proj, x).reshape(2, B, H, D)
            r = _linear(att.relative_pos_embeddings, x).reshape(2, B, self.num_buckets, H)
            keys, values = cache.keys[i], cache.values[i]
            keys[:, :, p], values[:, :, p] = k[0], v[0]
            K, V = keys[:, :, :p + 1], values[:, :, :p + 1]  # (B, H, p + 1, D)
            # the main stream: its keys with its query's bias per bucket
            scores = np.einsum("bhd,bhkd->bhk", q[0], K) + r[0][:, main_buckets].transpose(0, 2, 1)
            if pad is not None:
                scores = scores + pad
            out_main = np.einsum("bhk,bhkd->bhd", _softmax(scores), V)
            # the predicting stream: the main keys one place further, then its own key (bucket 0)
            scores = np.einsum("bhd,bhkd->bhk", q[1], K) + r[1][:, predict_buckets].transpose(0, 2, 1)
            if pad is not None:
                scores = scores + pad
            own = (q[1] * k[1]).sum(-1, keepdims=True) + r[1][:, 0][:, :, None]
            w = _softmax(np.concatenate([scores, own], axis=-1))
            out_predict = np.einsum("bhk,bhkd->bhd", w[..., :-1], V) + w[..., -1:] * v[1]
            a = np.concatenate([out_main, out_predict]).reshape(2 * B, H * D)
            x = _norm(layer.self_attn_layer_norm, x + _linear(att.out_proj, np.ascontiguousarray(a, np.float32)))
            ca = layer.cross_attn
            cq = (_linear(ca.query_proj, x) / np.float32(D ** 0.5)).reshape(2, B, H, D)
            c = np.concatenate([self._cross_attention(i, cq[0], 1.0), self._cross_attention(i, cq[1], 1.0)])
            x = _norm(layer.cross_attn_layer_norm, x + _linear(ca.out_proj, c))
            ff = layer.feed_forward
            x = _norm(layer.feed_forward_layer_norm, x + _linear(ff.output, _linear(ff.intermediate, x, self.act)))
        cache.advance(1)
        head = m.word_embeddings if m.tied else m.lm_head
        return _linear(head, np.ascontiguousarray(x[B:], dtype=np.float32))


def _softmax(scores: np.ndarray) -> np.ndarray:
    flat = np.ascontiguousarray(scores, dtype=np.float32).reshape(-1, scores.shape[-1])
    out = np.empty_like(flat)
    _C.softmax.softmax_forward(flat, out)
    return out.reshape(scores.shape)
