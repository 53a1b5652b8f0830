"""T5 encoder-decoders (transformers' ``T5ForConditionalGeneration``: T5, T5 v1.1, Flan-T5;
``MT5ForConditionalGeneration``: mT5; ``UMT5ForConditionalGeneration``: umT5) with transformers' parameter names:
summarisation and translation models.

T5's attention has no position embeddings and no 1/sqrt(d) scaling: the first layer of each stack
computes a learned bias per head from the bucketed distance between query and key (bidirectional in
the encoder, looking back only in the decoder) and every layer adds it to its scores, together with
the padding (and, in the decoder, causal) mask. Norms are RMSNorms without bias, applied before each
sub-layer. The original T5 scales the decoder output by d_model ** -0.5 before the LM head (the
config's ``scale_decoder_outputs``, or, in older configs, tied embeddings; mT5 never does). umT5 gives every layer's
self-attention its own bias table instead of the first layer's.

The attention here is written with forgegrad's differentiable ops (the bias is a learned parameter, so
it must get its gradient), not the fused kernel.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Tuple

import numpy as np

from ... import nn
from ...nn import functional as F
from ...tensor import Tensor
from ._layers import KVCache, activation, ids_array, mask_array, merge_heads, split_heads
from ._layers import FLOAT32_MAX as _FLOAT32_MAX
from ._layers import key_places, padding_bias, rows
from ._seq2seq import EncoderDecoder, attention_kv, decoder_places

__all__ = ["T5ForConditionalGeneration", "MT5ForConditionalGeneration", "UMT5ForConditionalGeneration",
           "relative_position_bucket"]

_NEG = np.float32(np.finfo(np.float32).min)


def relative_position_bucket(relative: np.ndarray, bidirectional: bool, num_buckets: int,
                             max_distance: int) -> np.ndarray:
    """transformers' T5Attention._relative_position_bucket, in its float32 arithmetic (the bucket of
    a distance on a boundary depends on that rounding): exact buckets for small distances, logarithmic
    ones up to ``max_distance``, one bucket past it."""
    buckets = np.zeros(relative.shape, np.int64)
    if bidirectional:
        num_buckets //= 2
        buckets += (relative > 0).astype(np.int64) * num_buckets
        relative = np.abs(relative)
    else:
        relative = -np.minimum(relative, 0)
    max_exact = num_buckets // 2
    is_small = relative < max_exact
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = (np.log(relative.astype(np.float32) / np.float32(max_exact))
                  / np.float32(math.log(max_distance / max_exact)) * np.float32(num_buckets - max_exact))
        large = max_exact + np.where(is_small, 0, scaled).astype(np.int64)
    large = np.minimum(large, num_buckets - 1)
    return buckets + np.where(is_small, relative, large)


def _feed_forward_kind(cfg: dict) -> Tuple[bool, str]:
    """(gated, activation name) from feed_forward_proj ("relu", "gated-gelu", "gated-silu", ...)."""
    proj = cfg.get("feed_forward_proj", "relu")
    gated = proj.startswith("gated-")
    act = proj[len("gated-"):] if gated else proj
    return gated, ("gelu_new" if proj == "gated-gelu" else act)  # transformers' special case


def init_attention(m: nn.Module, cfg: dict, has_relative_attention_bias: bool) -> None:
    """T5's attention parameters (q, k, v, o without bias, dropout, the first layer's bucket table) on ``m``;
    shared with LongT5's encoder attentions."""
    d, inner = cfg["d_model"], cfg["num_heads"] * cfg["d_kv"]
    m.heads = cfg["num_heads"]
    m.num_buckets = cfg.get("relative_attention_num_buckets", 32)
    m.max_distance = cfg.get("relative_attention_max_distance", 128)
    m.q, m.k, m.v = (nn.Linear(d, inner, bias=False) for _ in range(3))
    m.o = nn.Linear(inner, d, bias=False)
    m.dropout = nn.Dropout(cfg.get("dropout_rate", 0.1))
    if has_relative_attention_bias:
        m.relative_attention_bias = nn.Embedding(m.num_buckets, m.heads)


class T5Attention(nn.Module):
    def __init__(self, cfg: dict, has_relative_attention_bias: bool, is_decoder: bool):
        super().__init__()
        self.is_decoder = is_decoder
        init_attention(self, cfg, has_relative_attention_bias)

    def position_bias(self, query_positions: np.ndarray, key_length: int) -> Tensor:
        """(1, heads, queries, keys) learned bias of each query/key distance."""
        rel = np.arange(key_length)[None, :] - query_positions[:, None]
        buckets = relative_position_bucket(rel, not self.is_decoder, self.num_buckets, self.max_distance)
        values = self.relative_attention_bias(Tensor._wrap(buckets))  # (q, k, heads)
        return values.permute(2, 0, 1).reshape(1, self.heads, len(query_positions), key_length)

    def position_bias_of(self, relative: Tensor) -> Tensor:
        """position_bias as Tensor ops (an exported graph's): ``relative`` (B, q, k) float key - query
        distances -> (B, heads, q, k). The buckets of distances -max_distance..max_distance are a table
        computed here as ``position_bias`` computes them; farther ones share the end buckets."""
        md = self.max_distance
        span = np.arange(-md, md + 1) if not self.is_decoder else -np.arange(md + 1)
        table = self.relative_attention_bias(Tensor._wrap(relative_position_bucket(
            span, not self.is_decoder, self.num_buckets, md)))  # (len(span), heads)
        if self.is_decoder:  # only earlier keys: distance query - key, 0..max_distance
            index = (-relative).clamp(0, md)
        else:
            index = relative.clamp(-md, md) + md
        return rows(table, index.long()).permute(0, 3, 1, 2)

    def project_kv(self, states: Tensor) -> Tuple[Tensor, Tensor]:
        return split_heads(self.k(states), self.heads), split_heads(self.v(states), self.heads)

    def forward(self, x: Tensor, bias: Optional[Tensor], kv: Optional[Tuple[Tensor, Tensor]] = None,
                cache: Optional[KVCache] = None, layer: int = 0) -> Tensor:
        """Self-attention over x (with ``cache``: appended to the cached keys), or cross-attention over
        the precomputed ``kv`` of the encoder; ``bias`` (position bias + mask) is added to the scores."""
        q = split_heads(self.q(x), self.heads)
        k, v = attention_kv(self, x, kv, cache, layer)
        scores = q @ k.transpose(-1, -2)
        if bias is not None:
            scores = scores + bias
        weights = self.dropout(F.softmax(scores, dim=-1))
        return self.o(merge_heads(weights @ v))


class T5SubLayer(nn.Module):
    """RMSNorm -> attention or feed-forward -> dropout, plus the residual: T5LayerSelfAttention,
    T5LayerCrossAttention and T5LayerFF (the attribute names are transformers')."""

    def __init__(self, cfg: dict, kind: str, has_bias: bool = False, is_decoder: bool = False):
        super().__init__()
        self.kind = kind
        if kind == "self":
            self.SelfAttention = T5Attention(cfg, has_bias, is_decoder)
        elif kind == "cross":
            self.EncDecAttention = T5Attention(cfg, False, True)
        else:
            self.DenseReluDense = T5FeedForward(cfg)
        self.layer_norm = nn.RMSNorm(cfg["d_model"], eps=cfg.get("layer_norm_epsilon", 1e-6))
        self.dropout = nn.Dropout(cfg.get("dropout_rate", 0.1))

    def forward(self, x, bias=None, kv=None, cache=None, layer=0):
        h = self.layer_norm(x)
        if self.kind == "self":
            h = self.SelfAttention(h, bias, cache=cache, layer=layer)
        elif self.kind == "cross":
            h = self.EncDecAttention(h, bias, kv=kv)
        else:
            h = self.DenseReluDense(h)
        return x + self.dropout(h)


class T5FeedForward(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        d, ff = cfg["d_model"], cfg["d_ff"]
        self.gated, act = _feed_forward_kind(cfg)
        if self.gated:
            self.wi_0, self.wi_1 = nn.Linear(d, ff, bias=False), nn.Linear(d, ff, bias=False)
        else:
            self.wi = nn.Linear(d, ff, bias=False)
        self.wo = nn.Linear(ff, d, bias=False)
        self.act = activation(act, "T5")
        self.dropout = nn.Dropout(cfg.get("dropout_rate", 0.1))

    def forward(self, x):
        h = self.act(self.wi_0(x)) * self.wi_1(x) if self.gated else self.act(self.wi(x))
        return self.wo(self.dropout(h))


class T5Block(nn.Module):
    def __init__(self, cfg: dict, has_bias: bool, is_decoder: bool):
        super().__init__()
        kinds = ["self", "cross", "ff"] if is_decoder else ["self", "ff"]
        self.layer = nn.ModuleList([T5SubLayer(cfg, k, has_bias and k == "self", is_decoder) for k in kinds])


class T5Stack(nn.Module):
    """The blocks and final RMSNorm; ``per_layer_bias`` (umT5): every block's self-attention has its own
    relative-position table, else (T5) the first block's serves them all."""
    _no_split_modules = ["T5SubLayer"]  # the repeated blocks (T5Block is called through these): FSDP's units
    _fsdp_root_modules = ["relative_attention_bias"]  # read by the stack (self_biases), not by its block
    _fsdp_nested_units = ["EncDecAttention.k", "EncDecAttention.v"]  # run by T5's cross_kv, outside the blocks

    def __init__(self, cfg: dict, n_layers: int, is_decoder: bool, per_layer_bias: bool = False):
        super().__init__()
        self.is_decoder, self.per_layer_bias = is_decoder, per_layer_bias
        self.block = nn.ModuleList([T5Block(cfg, i == 0 or per_layer_bias, is_decoder) for i in range(n_layers)])
        self.final_layer_norm = nn.RMSNorm(cfg["d_model"], eps=cfg.get("layer_norm_epsilon", 1e-6))
        self.dropout = nn.Dropout(cfg.get("dropout_rate", 0.1))

    def bias_attentions(self) -> list:
        """Each block's self-attention whose table gives that block's position bias."""
        first = self.block[0].layer[0].SelfAttention
        return [b.layer[0].SelfAttention if self.per_layer_bias else first for b in self.block]

    def layer_biases(self, make) -> list:
        """Each block's self-attention bias, ``make(attention)`` of its table's attention (computed once per table)."""
        made = {}
        for att in self.bias_attentions():
            if id(att) not in made:
                made[id(att)] = make(att)
        return [made[id(att)] for att in self.bias_attentions()]

    def self_biases(self, positions: np.ndarray, key_length: int, mask: Optional[np.ndarray]) -> list:
        """Each block's position bias plus the additive ``mask`` (B, 1, q, k) or None."""
        extra = None if mask is None else Tensor._wrap(mask)
        return self.layer_biases(lambda att: _plus(att.position_bias(positions, key_length), extra))


def _plus(bias: Tensor, extra: Optional[Tensor]) -> Tensor:
    return bias if extra is None else bias + extra


def _padding_mask(padding: Optional[np.ndarray]) -> Optional[np.ndarray]:
    """(B, 1, 1, L) additive mask of padding keys (transformers' finite minimum), or None."""
    if padding is None or padding.all():
        return None
    return np.where(padding, np.float32(0), _NEG)[:, None, None, :].astype(np.float32)


class T5ForConditionalGeneration(EncoderDecoder, nn.Module):
    """``forward(input_ids, attention_mask=None, decoder_input_ids=...)`` -> logits (B, T_dec, vocab);
    ``encode`` and ``decode`` run the two stacks (``generate`` runs the encoder once and the decoder
    with a KV cache)."""

    architecture = "T5ForConditionalGeneration"
    model_type = "t5"
    per_layer_bias = False  # umT5: each layer's own relative-position table
    scales_head = True  # whether the config's scale_decoder_outputs (or tying) may scale the output (mT5's never does)

    def __init__(self, config: dict):
        super().__init__()
        self.config = dict(config)
        c = self.config
        self.shared = nn.Embedding(c["vocab_size"], c["d_model"])
        self.encoder = self.make_encoder(c)
        self.decoder = T5Stack(c, c.get("num_decoder_layers") or c["num_layers"], True, self.per_layer_bias)
        self.tied = c.get("tie_word_embeddings", True) is not False
        # T5 scales the decoder output by d_model ** -0.5 before the head, T5 v1.1 / Flan-T5 do not. Older configs
        # say which by tie_word_embeddings; transformers 5 writes scale_decoder_outputs (and ties always).
        # Kept apart from `tied`, which a bfloat16 load clears when it gives the tied head its own module.
        self.scale_head = bool(c.get("scale_decoder_outputs", self.tied)) and self.scales_head
        if not self.tied:
            self.lm_head = nn.Linear(c["d_model"], c["vocab_size"], bias=False)
        self.max_positions = 1 << 30  # relative positions: no table to run past

    def make_encoder(self, cfg: dict) -> nn.Module:
        """The encoder stack (LongT5 builds its block-local one)."""
        return T5Stack(cfg, cfg["num_layers"], False, self.per_layer_bias)

    def encode(self, input_ids, attention_mask=None) -> Tensor:
        """The encoder's output (B, S, d_model)."""
        ids = ids_array(input_ids, "T5ForConditionalGeneration", self.vocab_size)
        pad = mask_array(attention_mask, "T5ForConditionalGeneration", ids.shape)
        enc = self.encoder
        x = enc.dropout(self.shared(Tensor._wrap(ids)))
        S = ids.shape[1]
        biases = enc.self_biases(np.arange(S), S, _padding_mask(pad))
        for block, bias in zip(enc.block, biases):
            for sub in block.layer:
                x = sub(x, bias) if sub.kind == "self" else sub(x)
        return enc.dropout(enc.final_layer_norm(x))

    def cross_kv(self, encoder_states: Tensor) -> List[Tuple[Tensor, Tensor]]:
        """Every decoder layer's cross-attention keys and values (computed once per generation)."""
        return [block.layer[1].EncDecAttention.project_kv(encoder_states) for block in self.decoder.block]

    def new_cache(self, batch: int, max_length: int) -> KVCache:
        c = self.config
        return KVCache(len(self.decoder.block), batch, c["num_heads"], max_length, c["d_kv"])

    def decode(self, decoder_input_ids, encoder_states: Tensor, attention_mask=None,
               cross: Optional[List[Tuple[Tensor, Tensor]]] = None, cache: Optional[KVCache] = None) -> Tensor:
        """Logits (B, T, vocab) of the decoder tokens given the encoder's output (``attention_mask``: the
        encoder input's padding); with ``cache``, the tokens continue the cached ones."""
        ids = ids_array(decoder_input_ids, "T5ForConditionalGeneration", self.vocab_size)
        B, T = ids.shape
        pad = mask_array(attention_mask, "T5ForConditionalGeneration", tuple(encoder_states.shape[:2]))
        past = cache.length if cache is not None else 0
        dec = self.decoder
        causal = None
        if T > 1:
            allowed = np.arange(past + T)[None, :] <= (past + np.arange(T))[:, None]
            causal = np.where(allowed, np.float32(0), _NEG)[None, None].astype(np.float32)
        self_biases = dec.self_biases(np.arange(past, past + T), past + T, causal)
        cross_mask = _padding_mask(pad)
        cross_bias = None if cross_mask is None else Tensor._wrap(cross_mask)
        cross = self.cross_kv(encoder_states) if cross is None else cross
        x = dec.dropout(self.shared(Tensor._wrap(ids)))
        for i, block in enumerate(dec.block):
            x = block.layer[0](x, self_biases[i], cache=cache, layer=i)
            x = block.layer[1](x, cross_bias, kv=cross[i])
            x = block.layer[2](x)
        x = dec.dropout(dec.final_layer_norm(x))
        if cache is not None:
            cache.advance(T)
        if self.scale_head:
            x = x * (self.config["d_model"] ** -0.5)
        return F.linear(x, self.shared.weight) if self.tied else self.lm_head(x)

    def encode_graph(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """encode on Tensor inputs, every step a Tensor op (``export_seq2seq`` traces it)."""
        enc = self.encoder
        mask = attention_mask.float()
        place = key_places(mask)
        rel, pad = place.unsqueeze(1) - place.unsqueeze(2), padding_bias(mask)
        biases = enc.layer_biases(lambda att: att.position_bias_of(rel) + pad)
        x = enc.dropout(self.shared(input_ids))
        for block, bias in zip(enc.block, biases):
            for sub in block.layer:
                x = sub(x, bias) if sub.kind == "self" else sub(x)
        return enc.dropout(enc.final_layer_norm(x))

    def decode_graph(self, input_ids: Tensor, attention_mask: Tensor, cross, cache, logits_to_keep: int = 0) -> Tensor:
        """decode on Tensor inputs with ``cross`` (each layer's encoder keys and values) and ``cache`` (a
        PastKeyValues of the decoder's own), every step a Tensor op (``export_seq2seq`` traces it)."""
        dec = self.decoder
        keys, queries = decoder_places(input_ids, cache)
        rel = keys.unsqueeze(1) - queries.unsqueeze(2)  # (B, T, past + T)
        later = (((rel <= 0).float() - 1) * _FLOAT32_MAX).unsqueeze(1)  # later keys masked
        self_biases = dec.layer_biases(lambda att: att.position_bias_of(rel) + later)
        cross_bias = padding_bias(attention_mask.float())
        x = dec.dropout(self.shared(input_ids))
        for i, block in enumerate(dec.block):
            x = block.layer[0](x, self_biases[i], cache=cache, layer=i)
            x = block.layer[1](x, cross_bias, kv=cross[i])
            x = block.layer[2](x)
        x = dec.dropout(dec.final_layer_norm(x))
        if logits_to_keep:
            x = x[:, -logits_to_keep:]
        if self.scale_head:
            x = x * (self.config["d_model"] ** -0.5)
        return F.linear(x, self.shared.weight) if self.tied else self.lm_head(x)

    # --- checkpoint names: ours are transformers', less the stacks' copies of the shared embedding ---
    def from_hf(self, tensors: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        shared = tensors.get("shared.weight", tensors.get("encoder.embed_tokens.weight"))
        head = tensors.get("lm_head.weight")
        if self.tied and head is not None and shared is not None and not np.array_equal(head, shared):
            # a head of its own in a checkpoint whose config says tied (transformers 5 writes tie_word_embeddings
            # true for every T5, mT5 and umT5, e.g. a Flan-T5 or mT5 it saved again): transformers keeps it, so do we
            from ...devices import device
            with device("meta"):  # its parameter takes the checkpoint's array (from_pretrained's materialize)
                self.lm_head = nn.Linear(self.config["d_model"], self.vocab_size, bias=False)
            self.tied = False
        drop = {"encoder.embed_tokens.weight", "decoder.embed_tokens.weight"}
        if self.tied:
            drop.add("lm_head.weight")
        out = {k: v for k, v in tensors.items() if k not in drop}
        if "shared.weight" not in out and "encoder.embed_tokens.weight" in tensors:
            out["shared.weight"] = tensors["encoder.embed_tokens.weight"]
        return out

    def to_hf(self) -> Dict[str, np.ndarray]:
        return {k: v.numpy() for k, v in self.state_dict().items()}


class MT5ForConditionalGeneration(T5ForConditionalGeneration):
    """mT5 (mt5-small ... mt5-xxl and their fine-tunes): T5 v1.1's layers (gated GELU, a head of its own when the
    checkpoint has one), and, as transformers' MT5, never the d_model ** -0.5 output scale, whatever the config says
    about tying."""

    architecture = "MT5ForConditionalGeneration"
    model_type = "mt5"
    scales_head = False


class UMT5ForConditionalGeneration(T5ForConditionalGeneration):
    """umT5 (umt5-small ... umt5-xxl): mT5's layers with a relative-position bias table in every layer's
    self-attention (``encoder.block.{i}.layer.0.SelfAttention.relative_attention_bias``), not only the first's; the
    output scaled by d_model ** -0.5 as its config's ``scale_decoder_outputs`` says."""

    architecture = "UMT5ForConditionalGeneration"
    model_type = "umt5"
    per_layer_bias = True
