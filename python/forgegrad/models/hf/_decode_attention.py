"""The attention of the lean decode step (_decode.py): a step's queries against the first ``length`` keys of a
contiguous KV cache (``_attention``), or against each row's keys in a paged KV cache's blocks (``PagedKV``, the
completions server's paged engine), and the paged step's numpy oracle (``paged_attention_reference``)."""
from __future__ import annotations

import numpy as np

from ... import _C

__all__ = ["PagedKV", "paged_attention_reference"]

_NEG = np.float32(np.finfo(np.float32).min)


def _tanh_cap(x, cap):
    """cap * tanh(x / cap) with the Tensor path's tanh kernel (Gemma 2's soft cap)."""
    y = np.ascontiguousarray(x / np.float32(cap), dtype=np.float32)
    _C.activation.act_forward(_C.activation.TANH, y, y)
    return y * np.float32(cap)


def _attention(q, keys, values, length, mask, scale, softcap=None):
    """q (B, Hkv, rep, D) against the first ``length`` cached keys/values (B, Hkv, max, D); ``softcap``: the
    scores capped (Gemma 2) before the mask."""
    B, Hkv, rep, D = q.shape
    K = keys.reshape(B * Hkv, keys.shape[2], D)[:, :length]
    V = values.reshape(B * Hkv, values.shape[2], D)[:, :length]
    scores = np.empty((B * Hkv, rep, length), np.float32)
    _C.gemm.bmm(np.ascontiguousarray(q).reshape(B * Hkv, rep, D), K, scores, False, True, scale, 0.0)
    if softcap is not None:
        scores = _tanh_cap(scores, softcap)
    if mask is not None:  # (B, length) additive: the same for every head of a row
        scores.reshape(B, Hkv * rep, length)[...] += mask[:, None, :]
    probs = np.empty_like(scores)
    _C.softmax.softmax_forward(scores.reshape(-1, length), probs.reshape(-1, length))
    out = np.empty((B * Hkv, rep, D), np.float32)
    _C.gemm.bmm(probs, V, out, False, False, 1.0, 0.0)
    return out.reshape(B, Hkv * rep * D)


class PagedKV:
    """The keys and values a paged decode step attends to (serve/kv_pool.py): per layer a pool (blocks, Hkv,
    block_tokens, D) of keys and one of values, and for each row its block table and length. Row b's key at
    position p is in block ``tables[b, p // block_tokens]``, place ``p % block_tokens``; the step writes each row's
    new key at position ``lengths[b] - 1`` (its block must be in its table) and attends to its first ``lengths[b]``
    (kernels.attention.paged_attention_decode).

    Args:
        keys, values: per layer (blocks, Hkv, block_tokens, D) float32 arrays.
        tables: (B, width) int64, each row's block ids (padding past its blocks: any valid id, never read).
        lengths: (B,) int64, each row's keys after this step's (>= 1).
    """

    def __init__(self, keys, values, tables: np.ndarray, lengths: np.ndarray):
        self.keys, self.values = keys, values
        self.tables = np.ascontiguousarray(tables, np.int64)
        self.lengths = np.ascontiguousarray(lengths, np.int64)
        blocks, bt = keys[0].shape[0], keys[0].shape[2]
        if self.tables.ndim != 2 or self.lengths.shape != self.tables.shape[:1]:
            raise ValueError(f"PagedKV: tables must be (B, width) and lengths (B,), got {self.tables.shape} and "
                             f"{self.lengths.shape}")
        room = self.tables.shape[1] * bt
        if self.lengths.size and (self.lengths.min() < 1 or self.lengths.max() > room):
            raise ValueError(f"PagedKV: lengths must be in [1, {room}] (the tables' blocks), got "
                             f"{self.lengths.tolist()}")
        pos = self.lengths - 1
        block = self.tables[np.arange(len(pos)), pos // bt]
        # checked before the step writes there: numpy would take -1 as the pools' last block, another row's
        if block.size and (block.min() < 0 or block.max() >= blocks):
            raise ValueError(f"PagedKV: the blocks of the rows' new keys {block.tolist()} must be blocks of the "
                             f"pools (0 .. {blocks - 1})")
        self._write = (block, pos % bt)  # each row's new key: (block, place)

    def advance(self, t: int) -> None:
        """Nothing: the caller keeps each row's length."""

    def attend(self, layer: int, q, k, v, scale: float, softcap=None, window=None, bias=None):
        """Store the new keys and values k, v (B, Hkv, D) of ``layer``, then q (B, Hkv, rep, D) against each row's
        keys; (B, Hkv * rep * D). ``window``: only a row's last ``window`` keys (sliding-window layers); ``bias``:
        an (Hkv * rep, distances) table added by distance to the query (T5's relative-position bias)."""
        from ...kernels.attention import paged_attention_decode
        block, place = self._write
        self.keys[layer][block, :, place] = k
        self.values[layer][block, :, place] = v
        out = paged_attention_decode(q, self.keys[layer], self.values[layer], self.tables, self.lengths, scale,
                                     softcap, window, bias)
        return out.reshape(q.shape[0], -1)


def paged_attention_reference(q, keys, values, tables, lengths, scale, softcap=None, window=None):
    """The oracle of ``kernels.attention.paged_attention_decode``: each row's keys and values gathered from the pools
    into one padded (B, Hkv, width * block_tokens, D) array (the places past a row's length, or before its window,
    masked), then the contiguous decode step's ``_attention``; (B, Hkv * rep * D)."""
    B, Hkv, rep, D = q.shape
    bt = keys.shape[2]
    width = -(-int(lengths.max()) // bt)
    t = tables[:, :width]
    L = width * bt
    K = keys[t].transpose(0, 2, 1, 3, 4).reshape(B, Hkv, L, D)
    V = values[t].transpose(0, 2, 1, 3, 4).reshape(B, Hkv, L, D)
    cols = np.arange(L)[None, :]
    seen = cols < lengths[:, None]
    if window is not None:
        seen &= cols >= lengths[:, None] - window
    mask = None if seen.all() else np.where(seen, np.float32(0), _NEG).astype(np.float32)
    return _attention(q, K, V, L, mask, scale, softcap)
