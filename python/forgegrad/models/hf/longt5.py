"""LongT5 (transformers' ``LongT5ForConditionalGeneration``, model_type "longt5": long-t5-local-*, long-t5-tglobal-*):
T5's decoder over an encoder whose self-attention is block-local, optionally with transient global tokens.

The encoder cuts the sequence into blocks of ``local_radius + 1`` tokens (the last one padded); each block's queries
attend to the keys of their own block and of its two neighbours (3 blocks) that lie within ``local_radius`` of them
and are not padding. The first layer's relative-position table gives the bias of each of the block's (L, 3L)
distances, shared by every block and layer. Scores are (B, blocks, heads, L, 3L): linear in the length, never T x T.

``encoder_attention_type="transient-global"`` adds, in every layer, one global token per ``global_block_size``
tokens: the sum of the block's (normalised) hidden states, the tokens past the last full block counted in it,
padding in none, through the layer's own ``global_input_layer_norm``. Every query also attends to all of them
(keys and values from the layer's k and v), with a bias from the first layer's ``global_relative_attention_bias``
table by (global block - the query's block), and only to those that hold tokens (transformers' segment test).

Masked scores get -1e10 as transformers adds them (a padded query's row is then uniform, as theirs), so the encoder's
output equals transformers' at every position, padding included. The decoder, cross-attention, generate, the lean
decode step are T5's (models/hf/t5.py).

``encode_graph`` (export_seq2seq's encoder graph) computes the same with Tensor ops on any batch and length: the
sequence padded by a whole zero block and sliced to ceil(T / L) blocks (the exporter's ``axis_ceil_divisors``), the
masks from the attention mask, and the global blocks' ids, holdings and buckets as the arithmetic above (the float32
rounding included) on the tokens' places; the global sums are a one-hot (B, G, T) product (transformers' einsum), G =
T // global_block_size (``axis_divisors``; 0 below one global block, where the global columns are empty).
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional, Tuple

import numpy as np

from ... import nn
from ..._torch_indexing import index_add
from ...factories import cat, where, zeros
from ...nn import functional as F
from ...tensor import Tensor
from ._layers import ids_array, key_places, mask_array, rows
from .t5 import T5ForConditionalGeneration, T5SubLayer, init_attention, relative_position_bucket

__all__ = ["LongT5ForConditionalGeneration", "local_block_mask", "transient_global_blocks"]

ATTENTION_TYPES = ("local", "transient-global")
_MASKED = np.float32(-1e10)  # transformers' additive mask of the local and the global keys


def _positive_int(cfg: dict, key: str, default: int) -> int:
    value = cfg.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"LongT5ForConditionalGeneration: config {key} must be a positive integer, got {value!r}")
    return value


def check_config(cfg: dict) -> Tuple[str, int, int]:
    """(encoder_attention_type, block length local_radius + 1, global_block_size) of a LongT5 config, checked."""
    kind = cfg.get("encoder_attention_type", "local")
    if kind not in ATTENTION_TYPES:
        raise ValueError(f"LongT5ForConditionalGeneration: config encoder_attention_type must be one of "
                         f"{', '.join(map(repr, ATTENTION_TYPES))}, got {kind!r}")
    radius = cfg.get("local_radius", 127)
    if not isinstance(radius, int) or isinstance(radius, bool) or radius < 0:
        raise ValueError(f"LongT5ForConditionalGeneration: config local_radius must be a non-negative integer, "
                         f"got {radius!r}")
    return kind, radius + 1, _positive_int(cfg, "global_block_size", 16)


# --- the layout of the blocks (numpy: masks and positions, no parameters) ---
def _three_block_distances(L: int) -> np.ndarray:
    """(L, 3L) key - query distance of a block's queries to the keys of the previous, own and next block."""
    return np.arange(3 * L)[None, :] - np.arange(L, 2 * L)[:, None]


def local_block_mask(padding: np.ndarray, L: int) -> np.ndarray:
    """(B, blocks, 1, L, 3L) additive mask of the local attention: 0 where query and key are tokens (not padding,
    not past the end) less than L apart, -1e10 elsewhere (transformers' _get_local_attention_mask)."""
    B, T = padding.shape
    nb = -(-T // L)
    tokens = np.zeros((B, (nb + 2) * L), bool)  # a block of nothing before the first and after the last
    tokens[:, L:L + T] = padding
    queries = tokens[:, L:(nb + 1) * L].reshape(B, nb, L)
    keys = np.lib.stride_tricks.sliding_window_view(tokens, 3 * L, axis=1)[:, ::L]  # (B, nb, 3L)
    near = np.abs(_three_block_distances(L)) < L
    allowed = queries[:, :, :, None] & keys[:, :, None, :] & near
    return np.where(allowed, np.float32(0), _MASKED)[:, :, None]


def transient_global_blocks(padding: np.ndarray, block: int) -> Tuple[np.ndarray, np.ndarray]:
    """(block id of each token (B, T), -1 for padding; whether each of the T // block global tokens holds any (B, G))
    as transformers' _make_global_fixed_block_ids computes them, in its float32 arithmetic (the id of a token far
    into a long sequence depends on that rounding): tokens past the last full block join it."""
    B, T = padding.shape
    step = np.full(T, np.float32(1) / np.float32(block), np.float32)
    before = np.cumsum(step, dtype=np.float64).astype(np.float32) - step  # torch's CPU cumsum adds in float64
    ids = np.floor(np.float32(1) + before - np.float32(1)).astype(np.int64)
    ids = np.where(padding, ids[None, :], -1)
    ends = (np.arange(T) % block == block - 1) & (ids >= 0)
    full = ends.sum(-1, keepdims=True) - 1  # the last full block of each row (-1: none)
    ids = np.where(ids < full, ids, full)
    G = T // block
    holds = np.arange(G)[None, :] <= (ids.max(-1, keepdims=True) if T else np.full((B, 1), -1))
    return ids, holds


def _blocks(x: Tensor, L: int, before: int = 0, graph: bool = False) -> Tensor:
    """(B, T, ...) -> (B, blocks, L, ...): x padded with zeros to whole blocks, plus ``before`` zero blocks in front
    and as many after. ``graph``: as the exported graph pads (a whole zero block, sliced to the blocks: the remainder
    is no size the exporter can compute; the blocks are ceil(T / L), which it can)."""
    T = x.shape[1]
    nb = -(-T // L)
    if graph:
        x = F.pad(x, (0, 0) * (x.ndim - 2) + (0, L))[:, :nb * L]
        x = x.reshape(x.shape[0], nb, L, *x.shape[2:])
        return F.pad(x, (0, 0) * (x.ndim - 2) + (before, before)) if before else x
    pad = [0, 0] * (x.ndim - 2) + [before * L, nb * L - T + before * L]
    x = F.pad(x, tuple(pad)) if any(pad) else x
    return x.reshape(x.shape[0], nb + 2 * before, L, *x.shape[2:])


def _three_blocks(x: Tensor, L: int, graph: bool = False) -> Tensor:
    """(B, T, H, D) -> (B, blocks, 3L, H, D): each block's keys, its neighbours' on either side."""
    padded = _blocks(x, L, before=1, graph=graph)
    nb = padded.shape[1] - 2
    return cat([padded[:, 0:nb], padded[:, 1:nb + 1], padded[:, 2:nb + 2]], dim=2)


def local_block_bias(mask: Tensor, L: int) -> Tensor:
    """local_block_mask as Tensor ops (the exported graph's): ``mask`` (B, T) float, 1 for a token."""
    tokens = _blocks(mask, L, before=1, graph=True)  # (B, blocks + 2, L)
    nb = tokens.shape[1] - 2
    keys = cat([tokens[:, 0:nb], tokens[:, 1:nb + 1], tokens[:, 2:nb + 2]], dim=2)  # (B, nb, 3L)
    near = Tensor._wrap((np.abs(_three_block_distances(L)) < L).astype(np.float32))
    allowed = tokens[:, 1:nb + 1].unsqueeze(-1) * keys.unsqueeze(-2) * near  # (B, nb, L, 3L)
    return ((allowed - 1) * float(-_MASKED)).unsqueeze(2)


class BlockLayout(NamedTuple):
    """What every encoder layer shares besides the local bias. ``graph``: the blocks cut as the exported graph cuts
    them. Transient-global: ``aggregate`` (x (B, T, D) -> the sums of each global block's tokens (B, G, D)) and
    ``side_bias`` (B, blocks, heads, L, G); None without global tokens (the eager encoder, shorter than a global
    block)."""
    graph: bool = False
    aggregate: Optional[Callable[[Tensor], Tensor]] = None
    side_bias: Optional[Tensor] = None


class LongT5LocalAttention(nn.Module):
    """Block-local self-attention (the encoder's ``LocalSelfAttention``); the first layer's holds the table."""

    def __init__(self, cfg: dict, has_relative_attention_bias: bool):
        super().__init__()
        self.d_kv = cfg["d_kv"]
        self.block_len = check_config(cfg)[1]
        init_attention(self, cfg, has_relative_attention_bias)

    def _bucket(self, relative: np.ndarray) -> np.ndarray:
        return relative_position_bucket(relative, True, self.num_buckets, self.max_distance)

    def block_bias(self) -> Tensor:
        """(1, 1, heads, L, 3L) bias of a block's queries to its 3 blocks of keys."""
        L = self.block_len
        values = self.relative_attention_bias(Tensor._wrap(self._bucket(_three_block_distances(L))))  # (L, 3L, H)
        return values.permute(2, 0, 1).reshape(1, 1, self.heads, L, 3 * L)

    def _split(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], x.shape[1], self.heads, self.d_kv)

    def attend(self, x: Tensor, bias: Tensor, side: Optional[Tuple[Tensor, Tensor, Tensor]] = None,
               graph: bool = False) -> Tensor:
        """x (B, T, d_model) -> (B, T, d_model). ``bias`` (B or 1, blocks, heads, L, 3L): position bias and mask;
        ``side``: (keys, values (B, 1, heads, G, d_kv), bias (B, blocks, heads, L, G)) of the global tokens;
        ``graph``: the blocks cut as the exported graph cuts them."""
        B, T, _ = x.shape
        L = self.block_len
        q = _blocks(self._split(self.q(x)), L, graph=graph).permute(0, 1, 3, 2, 4)  # (B, nb, H, L, D)
        k = _three_blocks(self._split(self.k(x)), L, graph).permute(0, 1, 3, 4, 2)  # (B, nb, H, D, 3L)
        v = _three_blocks(self._split(self.v(x)), L, graph).permute(0, 1, 3, 2, 4)  # (B, nb, H, 3L, D)
        scores = q @ k + bias
        if side is not None:
            side_k, side_v, side_bias = side
            scores = cat([scores, q @ side_k.transpose(-1, -2) + side_bias], dim=-1)
        weights = self.dropout(F.softmax(scores, dim=-1))
        out = weights[..., :3 * L] @ v
        if side is not None:
            out = out + weights[..., 3 * L:] @ side_v
        nb = q.shape[1]
        out = out.permute(0, 1, 3, 2, 4).reshape(B, nb * L, self.heads * self.d_kv)
        return self.o(out[:, :T] if nb * L != T or graph else out)

    def forward(self, x: Tensor, bias: Tensor, layout: Optional[BlockLayout] = None) -> Tensor:
        return self.attend(x, bias, graph=layout is not None and layout.graph)


class LongT5TransientGlobalAttention(LongT5LocalAttention):
    """LongT5LocalAttention plus the transient global tokens (``TransientGlobalSelfAttention``): every layer
    normalises its own block sums; the first layer holds the global bias table too."""

    def __init__(self, cfg: dict, has_relative_attention_bias: bool):
        super().__init__(cfg, has_relative_attention_bias)
        self.global_block_size = check_config(cfg)[2]
        if has_relative_attention_bias:
            self.global_relative_attention_bias = nn.Embedding(self.num_buckets, self.heads)
        self.global_input_layer_norm = nn.RMSNorm(cfg["d_model"], eps=cfg.get("layer_norm_epsilon", 1e-6))

    def side_bias(self, padding: np.ndarray, ids: np.ndarray, holds: np.ndarray) -> Tensor:
        """(B, blocks, heads, L, G) bias of each query to each global token: the table's by (global block - the
        query's block) plus -1e10 where the global token is not the query's kind (transformers compares the
        query's mask to the token's holding: a padded query sees only the empty global tokens)."""
        B, T = padding.shape
        G, L = holds.shape[1], self.block_len
        same = padding.astype(np.int64)[:, :, None] == holds.astype(np.int64)[:, None, :]  # (B, T, G)
        mask = Tensor._wrap(np.where(same, np.float32(0), _MASKED)[:, None])  # (B, 1, T, G)
        buckets = self._bucket(np.arange(G)[None, None, :] - ids[:, :, None])
        table = self.global_relative_attention_bias(Tensor._wrap(buckets)).permute(0, 3, 1, 2)  # (B, H, T, G)
        bias = (mask + table).permute(0, 2, 1, 3)  # (B, T, H, G); queries past the end get 0, as theirs
        return _blocks(bias, L).permute(0, 1, 3, 2, 4)

    def side_bias_of(self, relative: Tensor, same: Tensor) -> Tensor:
        """side_bias as Tensor ops (the exported graph's): ``relative`` (B, T, G) float global block - the query's
        block, ``same`` (B, T, G) 1 where the global token is the query's kind. Distances past max_distance share the
        end buckets, as in T5's position_bias_of."""
        md = self.max_distance
        table = self.global_relative_attention_bias(Tensor._wrap(self._bucket(np.arange(-md, md + 1))))
        values = rows(table, (relative.clamp(-md, md) + md).long())  # (B, T, G, H)
        bias = (((same - 1) * float(-_MASKED)).unsqueeze(-1) + values).permute(0, 1, 3, 2)  # (B, T, H, G)
        return _blocks(bias, self.block_len, graph=True).permute(0, 1, 3, 2, 4)

    def forward(self, x: Tensor, bias: Tensor, layout: Optional[BlockLayout] = None) -> Tensor:
        """``layout``: the global blocks' aggregation and bias (LongT5ForConditionalGeneration.encode)."""
        graph = layout is not None and layout.graph
        if layout is None or layout.aggregate is None:  # shorter than one global block: no global tokens
            return self.attend(x, bias, graph=graph)
        globals_ = self.global_input_layer_norm(layout.aggregate(x))
        side_k = self._split(self.k(globals_)).permute(0, 2, 1, 3).unsqueeze(1)  # (B, 1, H, G, D)
        side_v = self._split(self.v(globals_)).permute(0, 2, 1, 3).unsqueeze(1)
        return self.attend(x, bias, (side_k, side_v, layout.side_bias), graph=graph)


class LongT5EncoderSubLayer(nn.Module):
    """RMSNorm -> local (or transient-global) attention -> dropout, plus the residual (transformers'
    LongT5LayerLocalSelfAttention / LongT5LayerTransientGlobalSelfAttention)."""

    kind = "self"

    def __init__(self, cfg: dict, has_bias: bool):
        super().__init__()
        if check_config(cfg)[0] == "local":
            self.LocalSelfAttention = LongT5LocalAttention(cfg, has_bias)
        else:
            self.TransientGlobalSelfAttention = LongT5TransientGlobalAttention(cfg, has_bias)
        self.layer_norm = nn.RMSNorm(cfg["d_model"], eps=cfg.get("layer_norm_epsilon", 1e-6))
        self.dropout = nn.Dropout(cfg.get("dropout_rate", 0.1))

    @property
    def attention(self) -> LongT5LocalAttention:
        local = getattr(self, "LocalSelfAttention", None)
        return local if local is not None else self.TransientGlobalSelfAttention

    def forward(self, x, bias, layout=None):
        return x + self.dropout(self.attention(self.layer_norm(x), bias, layout))


class LongT5EncoderBlock(nn.Module):
    def __init__(self, cfg: dict, has_bias: bool):
        super().__init__()
        self.layer = nn.ModuleList([LongT5EncoderSubLayer(cfg, has_bias), T5SubLayer(cfg, "ff")])


class LongT5EncoderStack(nn.Module):
    """The encoder's blocks and final RMSNorm; the first block's attention holds the tables of every block's bias."""
    _no_split_modules = ["LongT5EncoderSubLayer", "T5SubLayer"]
    _fsdp_root_modules = ["relative_attention_bias", "global_relative_attention_bias"]

    def __init__(self, cfg: dict, n_layers: int):
        super().__init__()
        self.block = nn.ModuleList([LongT5EncoderBlock(cfg, i == 0) for i in range(n_layers)])
        self.final_layer_norm = nn.RMSNorm(cfg["d_model"], eps=cfg.get("layer_norm_epsilon", 1e-6))
        self.dropout = nn.Dropout(cfg.get("dropout_rate", 0.1))


class LongT5ForConditionalGeneration(T5ForConditionalGeneration):
    """LongT5: ``encode`` runs the block-local (or transient-global) encoder; the rest is T5's (``forward``,
    ``decode``, ``generate``'s cache and lean step). Its config's ``encoder_attention_type`` is "local" or
    "transient-global", ``local_radius`` and ``global_block_size`` size the blocks."""

    architecture = "LongT5ForConditionalGeneration"
    model_type = "longt5"

    def __init__(self, config: dict):
        self.attention_type, self.block_len, self.global_block_size = check_config(config)
        super().__init__(config)

    def make_encoder(self, cfg: dict):
        return LongT5EncoderStack(cfg, cfg["num_layers"])

    def encode(self, input_ids, attention_mask=None) -> Tensor:
        """The encoder's output (B, S, d_model), every position transformers' (padding included)."""
        ids = ids_array(input_ids, "LongT5ForConditionalGeneration", self.vocab_size)
        pad = mask_array(attention_mask, "LongT5ForConditionalGeneration", ids.shape)
        padding = np.ones(ids.shape, bool) if pad is None else pad.astype(bool)
        enc = self.encoder
        first = enc.block[0].layer[0].attention
        bias = first.block_bias() + Tensor._wrap(local_block_mask(padding, self.block_len))
        layout = None
        if self.attention_type == "transient-global":
            block_ids, holds = transient_global_blocks(padding, self.global_block_size)
            B, G = holds.shape
            if G:
                index = Tensor._wrap((np.where(block_ids >= 0, block_ids, G) + (G + 1) * np.arange(B)[:, None])
                                     .reshape(-1))

                def aggregate(x: Tensor) -> Tensor:  # each global block's sum; padding into row G, dropped
                    D = x.shape[2]
                    sums = index_add(zeros(B * (G + 1), D, dtype=x.dtype), 0, index, x.reshape(-1, D))
                    return sums.reshape(B, G + 1, D)[:, :G]
                layout = BlockLayout(False, aggregate, first.side_bias(padding, block_ids, holds))
        return self._run_encoder(self.shared(Tensor._wrap(ids)), bias, layout)

    def _run_encoder(self, x: Tensor, bias: Tensor, layout: Optional[BlockLayout]) -> Tensor:
        enc = self.encoder
        x = enc.dropout(x)
        for block in enc.block:
            x = block.layer[0](x, bias, layout)
            x = block.layer[1](x)
        return enc.dropout(enc.final_layer_norm(x))

    def graph_axis_divisors(self) -> Tuple[dict, dict]:
        """(floor, ceil) divisors of the encoder's sequence axis for the exporter (export_seq2seq): the local blocks
        are ceil(T / L); the global tokens T // global_block_size."""
        floor = {"encoder_sequence": self.global_block_size} if self.attention_type == "transient-global" else {}
        if floor and self.global_block_size == self.block_len:
            raise NotImplementedError("export_seq2seq: LongT5ForConditionalGeneration with global_block_size equal "
                                      f"to local_radius + 1 ({self.block_len}) has no ONNX graph: the exporter cannot "
                                      "tell floor(T / L) from ceil(T / L) - 1 on its traces")
        return floor, ({"encoder_sequence": self.block_len} if self.block_len > 1 else {})

    def graph_example_length(self) -> int:
        """An example length with at least one global token (the traces then run the global path)."""
        return self.global_block_size + 2 if self.attention_type == "transient-global" else 5

    def encode_graph(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """encode on Tensor inputs, every step a Tensor op (``export_seq2seq`` traces it; see the module's
        docstring)."""
        first = self.encoder.block[0].layer[0].attention
        mask = (attention_mask != 0).float()
        bias = first.block_bias() + local_block_bias(mask, self.block_len)
        layout = BlockLayout(graph=True)
        if self.attention_type == "transient-global":
            layout = transient_global_layout(mask, self.global_block_size, first)
        return self._run_encoder(self.shared(input_ids), bias, layout)


def transient_global_layout(mask: Tensor, block: int, first: LongT5TransientGlobalAttention) -> BlockLayout:
    """The exported graph's BlockLayout of the global tokens: transient_global_blocks and side_bias as Tensor ops on
    ``mask`` (B, T) float, 1 for a token, for any T (G = T // block global tokens, 0 in a shorter input)."""
    B, T = mask.shape
    G = T // block
    step = float(np.float32(1) / np.float32(block))
    # transformers' float32 cumsum of the steps (computed in float64: exact multiples of the step), less the step
    before = (key_places(mask) + 1) * step - step
    ids = ((before + 1) - 1).floor() * mask + (mask - 1)  # floor(1 + before - 1) as theirs; padding -1
    ends = mask[:, :G * block].reshape(B, G, block)  # (B, G, block): the tokens of each whole global block
    full = ends[:, :, block - 1].sum(-1, keepdim=True) - 1  # the last full block of each row (-1: none)
    ids = where(ids < full, ids, full)  # the tokens past it join it
    slots = key_places(ends[:, :, 0])  # (B, G): 0 .. G - 1
    holds = (slots <= ids.amax(-1, keepdim=True)).float()
    one_hot = (ids.unsqueeze(1) == slots.unsqueeze(2)).float()  # (B, G, T); padding (-1) in none
    same = (mask.unsqueeze(2) == holds.unsqueeze(1)).float()  # (B, T, G)
    side = first.side_bias_of(slots.unsqueeze(1) - ids.unsqueeze(2), same)
    return BlockLayout(True, lambda x: one_hot @ x, side)
