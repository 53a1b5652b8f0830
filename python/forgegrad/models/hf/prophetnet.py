"""ProphetNet (transformers' ``ProphetNetForConditionalGeneration``, model_type "prophetnet": prophetnet-large-uncased
and its fine-tunes such as prophetnet-large-uncased-cnndm), with transformers' parameter names (less the
"prophetnet." prefix).

The encoder: token embeddings plus learned positions (rows pad_token_id + 1 on, clamped to the table as transformers
clamps them), a LayerNorm, post-norm layers (attention with biased projections, the query divided by sqrt(head_dim);
a feed-forward ``intermediate`` / ``output``). The decoder runs a main stream and ``ngram`` predicting streams through
each layer: the main stream is an ordinary causal self-attention of the tokens with a relative-position bias (the
query's ``relative_pos_embeddings`` projection read at the bucket of each key's distance: ``num_buckets`` buckets,
logarithmic up to ``relative_max_distance``); predicting stream s (its input the ``ngram_embeddings`` row
(s - 1) mod ngram plus the next place's position, no token) attends to the main stream's keys up to s places back
(and always the first one) and to its own key at its place. Cross-attention and feed-forward treat every stream's
rows alike. The logits are the first predicting stream's (transformers' ``logits``; its generate reads these) through
the LM head, tied to ``word_embeddings`` unless tie_word_embeddings is false; ``ngram_logits`` gives all ``ngram``
streams' (``logits_ngram`` the rest) and ``loss`` transformers' loss over them (label smoothing ``eps``,
``disable_ngram_loss``).

generate runs a KV cache of the main stream's keys and values and computes only the first predicting stream (the one
the logits read: a predicting stream feeds nothing else), every place vectorised (no loop over tokens); its steps are
direct kernel calls (models/hf/_decode_prophetnet.py), which the completions server's batched rows run too.
``export_seq2seq`` writes the same step (encode_graph, decode_graph): the main stream's keys and values as the cache,
the first predicting stream's logits, its relative projections read as the cached generation reads them (so that a call
on T new places gives what T one-place steps give, not what a forward over them gives: see below).

Two things transformers (5.24) does that are reproduced here, since its outputs are the reference: over more than one
decoder place (its forward without a cache) it reads the predicting streams' relative-position projections in a
permuted layout (see ProphetNetNgramSelfAttention.forward), while its cached generation (one place a step) reads them
as laid out, so a forward's logits past the first place are not what generate's steps compute; and streams 1.. see
the main keys up to s places back in a forward but all of them in its cached steps (no mask), which no logits of
generate read. transformers' cached generate also needs pad_token_id 0 (its own check on the positions).
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Tuple

import numpy as np

from ... import nn
from ...factories import cat
from ...nn import functional as F
from ...tensor import Tensor
from ._layers import (KVCache, activation, config_probability, ids_array, key_places, mask_array, merge_heads,
                      padding_bias, rows, split_heads)
from ._seq2seq import EncoderDecoder, causal_bias, decoder_places

__all__ = ["ProphetNetForConditionalGeneration", "relative_buckets", "check_config"]

_NAME = "ProphetNetForConditionalGeneration"
_MASKED = np.finfo(np.float32).min  # transformers' additive mask (causal, padding)


def _positive_int(cfg: dict, key: str, default: int) -> int:
    value = cfg.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{_NAME}: config {key} must be a positive integer, got {value!r}")
    return value


def check_config(cfg: dict) -> dict:
    """The checked sizes of a ProphetNet config (transformers' names and defaults)."""
    c = {k: _positive_int(cfg, k, d) for k, d in (
        ("vocab_size", 30522), ("hidden_size", 1024), ("encoder_ffn_dim", 4096), ("decoder_ffn_dim", 4096),
        ("num_encoder_layers", 12), ("num_decoder_layers", 12), ("num_encoder_attention_heads", 16),
        ("num_decoder_attention_heads", 16), ("max_position_embeddings", 512), ("ngram", 2), ("num_buckets", 32),
        ("relative_max_distance", 128))}
    d = c["hidden_size"]
    for key in ("num_encoder_attention_heads", "num_decoder_attention_heads"):
        if d % c[key]:
            raise ValueError(f"{_NAME}: config hidden_size {d} must be divisible by {key} {c[key]}")
    if c["num_buckets"] < 2:  # the exact half of the buckets must hold distance 0
        raise ValueError(f"{_NAME}: config num_buckets must be at least 2, got {c['num_buckets']}")
    if c["relative_max_distance"] <= c["num_buckets"] // 2:  # log(relative_max_distance / exact) must be > 0
        raise ValueError(f"{_NAME}: config relative_max_distance must exceed num_buckets // 2 "
                         f"({c['num_buckets'] // 2}), got {c['relative_max_distance']}")
    pad = cfg.get("pad_token_id", 0)
    if isinstance(pad, bool) or not isinstance(pad, int) or not 0 <= pad < c["max_position_embeddings"] - 2:
        raise ValueError(f"{_NAME}: config pad_token_id must be an integer in [0, max_position_embeddings - 2) "
                         f"(the positions start at its row + 1), got {pad!r}")
    eps = cfg.get("eps", 0.0)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0.0 <= eps <= 1.0:
        raise ValueError(f"{_NAME}: config eps (the label smoothing) must be a number in [0, 1], got {eps!r}")
    if cfg.get("add_cross_attention", True) is not True:
        raise ValueError(f"{_NAME}: config add_cross_attention must be true (the decoder reads the encoder)")
    return c


def relative_buckets(distance: np.ndarray, num_buckets: int, max_distance: int) -> np.ndarray:
    """transformers' ``compute_relative_buckets`` (unidirectional) of ``distance`` = key place - query place: keys
    ahead of the query fall in bucket 0, the first num_buckets // 2 distances back each have their bucket, farther
    ones share logarithmically wider buckets up to num_buckets - 1 (float32 arithmetic, as torch computes it)."""
    back = np.maximum(-np.asarray(distance), 0)
    exact = num_buckets // 2
    with np.errstate(divide="ignore"):
        ratio = np.log(back.astype(np.float32) / np.float32(exact)) / np.float32(math.log(max_distance / exact))
    large = np.minimum(np.float32(exact) + ratio * np.float32(num_buckets - exact), np.float32(num_buckets - 1))
    return np.where(back < exact, back, np.trunc(np.nan_to_num(large, neginf=0)).astype(np.int64)).astype(np.int64)


def _one_hot(buckets: np.ndarray, n: int) -> Tensor:
    """(T, n, K) float32 selector of buckets (T, K): multiplying a (.., T, 1, n) table by it reads each key's bucket."""
    out = np.zeros(buckets.shape[:1] + (n,) + buckets.shape[1:], np.float32)
    t, k = np.indices(buckets.shape)
    out[t, buckets, k] = 1.0
    return Tensor._wrap(out)


class ProphetNetAttention(nn.Module):
    """Attention with biased projections, the query scaled after its projection (transformers' names)."""

    def __init__(self, d: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.heads, self.head_dim, self.dropout_p = heads, d // heads, dropout
        self.key_proj, self.value_proj, self.query_proj, self.out_proj = (nn.Linear(d, d) for _ in range(4))

    def project_kv(self, states: Tensor) -> Tuple[Tensor, Tensor]:
        return split_heads(self.key_proj(states), self.heads), split_heads(self.value_proj(states), self.heads)

    def forward(self, x: Tensor, bias: Optional[Tensor], kv: Optional[Tuple[Tensor, Tensor]] = None) -> Tensor:
        q = split_heads(self.query_proj(x) / self.head_dim ** 0.5, self.heads)
        k, v = self.project_kv(x) if kv is None else kv
        scores = q @ k.transpose(-1, -2)
        weights = F.softmax(scores if bias is None else scores + bias, dim=-1)
        if self.training and self.dropout_p:
            weights = F.dropout(weights, self.dropout_p, training=True)
        return self.out_proj(merge_heads(weights @ v))


class ProphetNetFeedForward(nn.Module):
    def __init__(self, cfg: dict, ffn: int):
        super().__init__()
        d = cfg["hidden_size"]
        self.intermediate, self.output = nn.Linear(d, ffn), nn.Linear(ffn, d)
        self.act = activation(cfg.get("activation_function", "gelu"), "ProphetNet")
        self.activation_dropout = nn.Dropout(cfg.get("activation_dropout", 0.1))
        self.dropout = nn.Dropout(cfg.get("dropout", 0.1))

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.output(self.activation_dropout(self.act(self.intermediate(x)))))


class ProphetNetEncoderLayer(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        d = cfg["hidden_size"]
        self.self_attn = ProphetNetAttention(d, cfg["num_encoder_attention_heads"],
                                             config_probability(cfg, "attention_dropout", _NAME))
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.feed_forward = ProphetNetFeedForward(cfg, cfg["encoder_ffn_dim"])
        self.feed_forward_layer_norm = nn.LayerNorm(d)
        self.dropout = nn.Dropout(cfg.get("dropout", 0.1))

    def forward(self, x: Tensor, bias: Optional[Tensor]) -> Tensor:
        x = self.self_attn_layer_norm(x + self.dropout(self.self_attn(x, bias)))
        return self.feed_forward_layer_norm(x + self.feed_forward(x))


class _StreamPlan:
    """What every decoder layer's ngram self-attention needs for T new places after ``past`` cached ones, S predicting
    streams: the main stream's causal bias (T, K) and bucket selector (T, nb, K), the predicting streams' bias of the
    main keys (S, 1, T, K) and selector (T, nb, K); K = past + T keys. ``padding`` (B, K) (False: a padding token
    among the decoder's, its key masked in both, as transformers adds decoder_attention_mask): the biases get a
    leading batch axis, (B, 1, T, K) and (B, S, 1, T, K)."""

    laid_out = False  # the predicting streams' relative projections read as transformers' forward reads them

    def __init__(self, past: int, T: int, S: int, num_buckets: int, max_distance: int,
                 padding: Optional[np.ndarray] = None):
        q = np.arange(past, past + T)[:, None]  # the queries' places
        k = np.arange(past + T)[None, :]
        main_bias = np.where(k <= q, np.float32(0), _MASKED).astype(np.float32)
        keys = None if padding is None else np.where(padding, np.float32(0), _MASKED).astype(np.float32)
        if keys is not None:  # (float32: a padding key after the query gets min + min = -inf, as in transformers)
            with np.errstate(over="ignore"):
                main_bias = main_bias[None, None] + keys[:, None, None, :]
        self.main_bias = Tensor._wrap(main_bias)
        self.main_select = _one_hot(relative_buckets(k - q, num_buckets, max_distance), num_buckets)
        # stream s sees the main keys up to s places back, and always the first (transformers' ngram_attention_bias)
        s = np.arange(S)[:, None, None]
        seen = (k[None] <= q[None] - s) | (k[None] == 0)
        predict_bias = np.where(seen, np.float32(0), _MASKED).astype(np.float32)[:, None]  # (S, 1, T, K)
        if keys is not None:
            with np.errstate(over="ignore"):
                predict_bias = predict_bias[None] + keys[:, None, None, None, :]
        self.predict_bias = Tensor._wrap(predict_bias)
        # the main keys' distances as transformers buckets them for a predicting stream: one place further
        self.predict_select = _one_hot(relative_buckets(k - q - 1, num_buckets, max_distance), num_buckets)


class _GraphStreamPlan:
    """_StreamPlan's biases and selectors as Tensor ops of the exported decoder step's places (``decoder_places``:
    keys (B, K), queries (B, T) float), for the first predicting stream alone, its relative projections read as
    laid out (transformers' cached generation, one place a step): main_bias (B, 1, T, K), main_select
    (B, 1, T, buckets, K), predict_bias (B, 1, 1, T, K), predict_select (B, 1, 1, T, buckets, K). The buckets of
    the distances 0 .. max_distance back are a one-hot table computed as relative_buckets computes them; farther
    keys share the last bucket, as they do there."""

    laid_out = True

    def __init__(self, keys: Tensor, queries: Tensor, num_buckets: int, max_distance: int):
        back = np.arange(max_distance + 1)
        buckets = relative_buckets(-back, num_buckets, max_distance)
        assert buckets[-1] == num_buckets - 1  # so that clamping the distance at max_distance is exact
        table = Tensor._wrap(np.eye(num_buckets, dtype=np.float32)[buckets])  # (max_distance + 1, buckets)
        behind = queries.unsqueeze(2) - keys.unsqueeze(1)  # (B, T, K): how far back each key is

        def select(distance: Tensor) -> Tensor:  # (B, T, K) -> (B, T, buckets, K)
            return rows(table, distance.clamp(0, max_distance).long()).permute(0, 1, 3, 2)

        self.main_bias = causal_bias(keys, queries)  # a later key masked (the first stream sees the same keys)
        self.main_select = select(behind).unsqueeze(1)
        self.predict_bias = self.main_bias.unsqueeze(1)
        # the main keys' distances as transformers buckets them for a predicting stream: one place further
        self.predict_select = select(behind + 1).unsqueeze(1).unsqueeze(1)


class ProphetNetNgramSelfAttention(nn.Module):
    """The decoder's self-attention of the main stream and the predicting streams (transformers' names): shared
    projections, and ``relative_pos_embeddings`` giving each query a bias per (bucket, head)."""

    def __init__(self, cfg: dict):
        super().__init__()
        d = cfg["hidden_size"]
        self.heads = cfg["num_decoder_attention_heads"]
        self.head_dim, self.num_buckets = d // self.heads, cfg["num_buckets"]
        self.dropout_p = config_probability(cfg, "attention_dropout", _NAME)
        self.key_proj, self.value_proj, self.query_proj, self.out_proj = (nn.Linear(d, d) for _ in range(4))
        self.relative_pos_embeddings = nn.Linear(d, self.num_buckets * self.heads)

    def _softmax(self, scores: Tensor) -> Tensor:
        weights = F.softmax(scores, dim=-1)
        return F.dropout(weights, self.dropout_p, training=True) if self.training and self.dropout_p else weights

    def _bucket_table(self, h: Tensor) -> Tensor:
        """(.., T, d) -> (.., heads, T, 1, num_buckets): each query's bias per bucket (the projection's columns
        are bucket-major, head-minor)."""
        r = self.relative_pos_embeddings(h)
        r = r.reshape(*h.shape[:-1], self.num_buckets, self.heads)
        nd = r.dim()
        order = list(range(nd - 3)) + [nd - 1, nd - 3, nd - 2]  # (.., heads, T, buckets)
        return r.permute(*order).unsqueeze(-2)

    def forward(self, x: Tensor, plan: _StreamPlan, cache: Optional[KVCache], layer: int) -> Tensor:
        """x (B, 1 + S, T, d): the main stream then S predicting streams -> their outputs, the same shape."""
        B, n, T, d = x.shape
        H, D = self.heads, self.head_dim
        q = (self.query_proj(x) / D ** 0.5).reshape(B, n, T, H, D).permute(0, 1, 3, 2, 4)  # (B, n, H, T, D)
        k = self.key_proj(x).reshape(B, n, T, H, D).permute(0, 1, 3, 2, 4)
        v = self.value_proj(x).reshape(B, n, T, H, D).permute(0, 1, 3, 2, 4)
        km, vm = k[:, 0], v[:, 0]  # the main stream's keys and values (B, H, T, D)
        if cache is not None:
            km, vm = cache.update(layer, km, vm)  # (B, H, past + T, D)
        # main stream: causal, with the relative bias at each key's bucket
        rel = (self._bucket_table(x[:, 0]) @ plan.main_select).squeeze(-2)  # (B, H, T, K)
        main = self._softmax(q[:, 0] @ km.transpose(-1, -2) + rel + plan.main_bias) @ vm
        outs = [main.unsqueeze(1)]
        if n > 1:  # predicting streams: the main keys they may see, then their own key at their place
            qp, kp, vp = q[:, 1:], k[:, 1:], v[:, 1:]  # (B, S, H, T, D)
            # transformers reads the streams' projections laid out (B, T, S, heads, buckets) as (B, S, heads, T,
            # buckets): a query's row of biases comes from another place's, stream's or head's projection when T > 1
            # (where T = 1, as in its cached generation, the two layouts agree). Reproduced as it computes it.
            # The exported step (plan.laid_out) reads them as laid out at every T: what T cached one-place steps
            # compute, the generation it serves.
            if plan.laid_out:
                table = self._bucket_table(x[:, 1:])  # (B, S, H, T, 1, buckets)
            else:
                r = self.relative_pos_embeddings(x[:, 1:]).reshape(B, n - 1, T, self.num_buckets, H)
                table = r.permute(0, 2, 1, 4, 3).reshape(B, n - 1, H, T, self.num_buckets).unsqueeze(-2)
            rel_main = (table @ plan.predict_select).squeeze(-2)  # (B, S, H, T, K)
            own_bias = table.squeeze(-2)[..., :1]  # its own key: distance 0 (bucket 0)
            scores_main = qp @ km.unsqueeze(1).transpose(-1, -2) + rel_main + plan.predict_bias
            scores_own = (qp * kp).sum(-1, keepdim=True) + own_bias
            weights = self._softmax(cat([scores_main, scores_own], dim=-1))  # the own key last
            outs.append(weights[..., :-1] @ vm.unsqueeze(1) + weights[..., -1:] * vp)
        out = cat(outs, dim=1) if len(outs) > 1 else outs[0]  # (B, n, H, T, D)
        return self.out_proj(out.permute(0, 1, 3, 2, 4).reshape(B, n, T, d))


class ProphetNetDecoderLayer(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        d = cfg["hidden_size"]
        self.self_attn = ProphetNetNgramSelfAttention(cfg)
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.cross_attn = ProphetNetAttention(d, cfg["num_decoder_attention_heads"],
                                              config_probability(cfg, "attention_dropout", _NAME))
        self.cross_attn_layer_norm = nn.LayerNorm(d)
        self.feed_forward = ProphetNetFeedForward(cfg, cfg["decoder_ffn_dim"])
        self.feed_forward_layer_norm = nn.LayerNorm(d)
        self.dropout = nn.Dropout(cfg.get("dropout", 0.1))

    def forward(self, x: Tensor, plan: _StreamPlan, cross_kv, cross_bias, cache=None, layer: int = 0) -> Tensor:
        """x (B, 1 + S, T, d) -> the same shape."""
        B, n, T, d = x.shape
        x = self.self_attn_layer_norm(x + self.dropout(self.self_attn(x, plan, cache, layer)))
        flat = x.reshape(B, n * T, d)  # cross-attention and feed-forward: every stream's rows alike
        flat = self.cross_attn_layer_norm(flat + self.dropout(self.cross_attn(flat, cross_bias, kv=cross_kv)))
        flat = self.feed_forward_layer_norm(flat + self.feed_forward(flat))
        return flat.reshape(B, n, T, d)


class ProphetNetEncoder(nn.Module):
    _no_split_modules = ["ProphetNetEncoderLayer"]

    def __init__(self, cfg: dict):
        super().__init__()
        d, pad = cfg["hidden_size"], cfg.get("pad_token_id", 0)
        self.position_embeddings = nn.Embedding(cfg["max_position_embeddings"], d, padding_idx=pad)
        self.embeddings_layer_norm = nn.LayerNorm(d)
        self.layers = nn.ModuleList([ProphetNetEncoderLayer(cfg) for _ in range(cfg["num_encoder_layers"])])
        self.dropout = nn.Dropout(cfg.get("dropout", 0.1))


class ProphetNetDecoder(nn.Module):
    _no_split_modules = ["ProphetNetDecoderLayer"]

    def __init__(self, cfg: dict):
        super().__init__()
        d, pad = cfg["hidden_size"], cfg.get("pad_token_id", 0)
        self.position_embeddings = nn.Embedding(cfg["max_position_embeddings"], d, padding_idx=pad)
        self.ngram_embeddings = nn.Embedding(cfg["ngram"], d)
        self.embeddings_layer_norm = nn.LayerNorm(d)
        self.layers = nn.ModuleList([ProphetNetDecoderLayer(cfg) for _ in range(cfg["num_decoder_layers"])])
        self.dropout = nn.Dropout(cfg.get("dropout", 0.1))


def _key_bias(padding: Optional[np.ndarray]) -> Optional[Tensor]:
    """(B, 1, 1, S) additive bias of the padding keys, or None."""
    if padding is None or padding.all():
        return None
    return Tensor._wrap(np.where(padding, np.float32(0), _MASKED).astype(np.float32)[:, None, None, :])


class ProphetNetForConditionalGeneration(EncoderDecoder, nn.Module):
    """``forward(input_ids, attention_mask=None, decoder_input_ids=...)`` -> logits (B, T_dec, vocab): the first
    predicting stream's (transformers' ``logits``). ``ngram_logits`` -> (B, ngram, T_dec, vocab); ``loss`` ->
    transformers' loss for ``labels``."""

    architecture = _NAME
    model_type = "prophetnet"
    _fsdp_nested_units = ["cross_attn.key_proj", "cross_attn.value_proj"]  # run by cross_kv, outside the blocks

    def __init__(self, config: dict):
        super().__init__()
        self.config = dict(config)
        c = self.config
        sizes = check_config(c)
        self.ngram, self.pad = sizes["ngram"], c.get("pad_token_id", 0)
        self.position_rows = sizes["max_position_embeddings"]
        # the decoder places the table holds (generate's limit): place p's predicting streams read row pad + p + 2
        self.max_positions = self.position_rows - self.pad - 2
        self.tied = c.get("tie_word_embeddings", True) is not False
        # untied, each stack its own table (``tied`` alone may turn False later: quantize_weight_only's own head)
        self.stack_tables = not self.tied
        padding_idx = self.pad if self.pad < c["vocab_size"] else None
        self.encoder, self.decoder = ProphetNetEncoder(c), ProphetNetDecoder(c)
        if self.tied:  # one table for both stacks and the head
            self.word_embeddings = nn.Embedding(c["vocab_size"], c["hidden_size"], padding_idx=padding_idx)
        else:  # transformers 5 unties the stacks' tables too: each its own, the shared one read by no forward
            self.encoder.word_embeddings = nn.Embedding(c["vocab_size"], c["hidden_size"], padding_idx=padding_idx)
            self.decoder.word_embeddings = nn.Embedding(c["vocab_size"], c["hidden_size"], padding_idx=padding_idx)
            self.lm_head = nn.Linear(c["hidden_size"], c["vocab_size"], bias=False)

    def encoder_embedding(self):
        return self.encoder.word_embeddings if self.stack_tables else self.word_embeddings

    def decoder_embedding(self):
        return self.decoder.word_embeddings if self.stack_tables else self.word_embeddings

    def _head(self, x: Tensor) -> Tensor:
        return F.linear(x, self.word_embeddings.weight) if self.tied else self.lm_head(x)

    def _positions(self, index: np.ndarray) -> Tensor:
        return self.decoder.position_embeddings(Tensor._wrap(np.asarray(index, np.int64)))

    def encode(self, input_ids, attention_mask=None) -> Tensor:
        ids = ids_array(input_ids, _NAME, self.vocab_size)
        B, S = ids.shape
        pad = mask_array(attention_mask, _NAME, ids.shape)
        enc = self.encoder
        # transformers' places ignore the mask: rows pad + 1 on, clamped to the table
        rows = np.minimum(np.arange(S) + self.pad + 1, self.position_rows - 1)
        x = self.encoder_embedding()(Tensor._wrap(ids)) + enc.position_embeddings(Tensor._wrap(rows))
        x = enc.dropout(enc.embeddings_layer_norm(x))
        bias = _key_bias(None if pad is None else pad.astype(bool))
        for layer in enc.layers:
            x = layer(x, bias)
        return x

    def cross_kv(self, encoder_states: Tensor) -> list:
        return [layer.cross_attn.project_kv(encoder_states) for layer in self.decoder.layers]

    def new_cache(self, batch: int, max_length: int) -> KVCache:
        """The main stream's keys and values of every decoder layer."""
        heads = self.config["num_decoder_attention_heads"]
        return KVCache(len(self.decoder.layers), batch, heads, max_length, self.config["hidden_size"] // heads)

    def _streams(self, decoder_input_ids, encoder_states: Tensor, attention_mask, cross, cache, S: int,
                 decoder_attention_mask=None) -> Tensor:
        """The decoder's last states of its first S predicting streams (B, S, T, d) after ``cache``'s places."""
        ids = ids_array(decoder_input_ids, _NAME, self.vocab_size)
        B, T = ids.shape
        dec_pad = mask_array(decoder_attention_mask, _NAME, ids.shape)
        if dec_pad is not None and cache is not None:
            raise ValueError(f"{_NAME}: decoder_attention_mask is taken without a cache only (a whole forward)")
        past = cache.length if cache is not None else 0
        first = self.pad + 1 + past  # the main stream's first row; a predicting stream reads the next row
        if past + T > self.max_positions:  # the last place's predicting streams read row pad + place + 2
            raise ValueError(f"{_NAME}: {past + T} decoder tokens ({past} cached + {T} given) exceed the "
                             f"{self.max_positions} decoder places max_position_embeddings {self.position_rows} "
                             f"holds with pad_token_id {self.pad} (place p's predicting streams read row "
                             f"pad_token_id + p + 2)")
        pad = mask_array(attention_mask, _NAME, tuple(encoder_states.shape[:2]))
        cross = self.cross_kv(encoder_states) if cross is None else cross
        cross_bias = _key_bias(None if pad is None else pad.astype(bool))
        dec, c = self.decoder, self.config
        places = np.arange(first, first + T)
        main = self.decoder_embedding()(Tensor._wrap(ids)) + self._positions(places)  # (B, T, d)
        # stream s: the ngram embedding row (s - 1) mod ngram (transformers' ngram_embeddings[s - 1]) plus the next
        # place's position, the same for every row of the batch
        grams = dec.ngram_embeddings(Tensor._wrap((np.arange(S) - 1) % self.ngram))  # (S, d)
        predict = grams.unsqueeze(1) + self._positions(places + 1).unsqueeze(0)  # (S, T, d)
        x = F.pad(main.unsqueeze(1), (0, 0, 0, 0, 0, S)) + F.pad(predict.unsqueeze(0), (0, 0, 0, 0, 1, 0))
        x = dec.dropout(dec.embeddings_layer_norm(x))  # (B, 1 + S, T, d)
        plan = _StreamPlan(past, T, S, c["num_buckets"], c["relative_max_distance"],
                           None if dec_pad is None or dec_pad.all() else dec_pad.astype(bool))
        for i, layer in enumerate(dec.layers):
            x = layer(x, plan, cross[i], cross_bias, cache=cache, layer=i)
        if cache is not None:
            cache.advance(T)
        return x[:, 1:]

    def decode(self, decoder_input_ids, encoder_states: Tensor, attention_mask=None,
               cross: Optional[List[Tuple[Tensor, Tensor]]] = None, cache: Optional[KVCache] = None) -> Tensor:
        """Logits (B, T, vocab) of the first predicting stream (the next token's: what generate reads); only that
        stream is computed (the others feed nothing it reads)."""
        T = np.shape(decoder_input_ids.numpy() if isinstance(decoder_input_ids, Tensor) else decoder_input_ids)[-1]
        streams = 1 if T == 1 else self.ngram  # (T > 1: stream 0's relative biases read every stream's projection)
        return self._head(self._streams(decoder_input_ids, encoder_states, attention_mask, cross, cache, streams)[:, 0])

    def forward(self, input_ids, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None) -> Tensor:
        """Logits (B, T_dec, vocab) of ``decoder_input_ids`` (transformers' ``logits``: the first predicting
        stream's); ``decoder_attention_mask`` (B, T_dec): 0 at the decoder's padding tokens (their keys masked)."""
        if decoder_attention_mask is None:
            return super().forward(input_ids, attention_mask, decoder_input_ids)
        return self.ngram_logits(input_ids, attention_mask, decoder_input_ids, decoder_attention_mask)[:, 0]

    def ngram_logits(self, input_ids, attention_mask=None, decoder_input_ids=None,
                     decoder_attention_mask=None) -> Tensor:
        """(B, ngram, T, vocab): every predicting stream's logits (stream 0 is ``forward``'s, streams 1.. are
        transformers' ``logits_ngram``: the tokens 2, 3, .. places ahead)."""
        if decoder_input_ids is None:
            raise ValueError(f"{_NAME}: decoder_input_ids is required")
        states = self.encode(input_ids, attention_mask)
        return self._head(self._streams(decoder_input_ids, states, attention_mask, None, None, self.ngram,
                                        decoder_attention_mask))

    def shift_right(self, labels) -> np.ndarray:
        """transformers' ``_shift_right``: the decoder's input for ``labels`` (decoder_start_token_id first, -100
        as the pad token)."""
        labels = np.asarray(labels.numpy() if isinstance(labels, Tensor) else labels, np.int64)
        out = np.empty_like(labels)
        out[:, 0] = self.decoder_start_token_id
        out[:, 1:] = labels[:, :-1]
        return np.where(out == -100, self.pad, out)

    def loss(self, input_ids, attention_mask=None, labels=None, decoder_input_ids=None,
             decoder_attention_mask=None) -> Tensor:
        """transformers' loss: the mean negative log-likelihood of ``labels`` (B, T; -100 ignored) under every
        predicting stream (each scored against the same labels, as transformers does; only stream 0 with
        ``disable_ngram_loss``), label-smoothed with ``eps``: (1 - eps) nll + eps / vocab * mean(-sum log p)."""
        if labels is None:
            raise ValueError(f"{_NAME}.loss: labels is required")
        target = np.asarray(labels.numpy() if isinstance(labels, Tensor) else labels, np.int64)
        if target.ndim != 2:
            raise ValueError(f"{_NAME}.loss: labels must be (batch, length), got shape {target.shape}")
        if ((target < 0) & (target != -100)).any() or (target >= self.vocab_size).any():
            raise ValueError(f"{_NAME}.loss: labels must be token ids below vocab_size {self.vocab_size} or -100")
        dec = self.shift_right(target) if decoder_input_ids is None else decoder_input_ids
        logits = self.ngram_logits(input_ids, attention_mask, dec, decoder_attention_mask)
        logp = F.log_softmax(logits, dim=-1)  # (B, n, T, V)
        V = logp.shape[-1]
        valid = np.repeat((target != -100)[:, None, :], self.ngram, axis=1)  # (B, n, T)
        if self.config.get("disable_ngram_loss", False):
            valid[:, 1:] = False
        pick = np.zeros(valid.shape + (V,), np.float32)
        b, s, t = np.nonzero(valid)
        pick[b, s, t, np.repeat(target[:, None, :], self.ngram, axis=1)[b, s, t]] = 1.0
        count = float(valid.sum())
        nll = -(logp * Tensor._wrap(pick)).sum() / count
        eps = float(self.config.get("eps", 0.0))
        if eps <= 0.0:
            return nll
        smooth = -(logp.sum(-1) * Tensor._wrap(valid.astype(np.float32))).sum() / count
        return nll * (1.0 - eps) + smooth * (eps / V)

    # --- checkpoint names: transformers' "prophetnet." prefix dropped, the stacks' copies of the shared table (and a
    # tied head) dropped ---
    def from_hf(self, tensors: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        out = {}
        shared = tensors.get("prophetnet.word_embeddings.weight")
        for k, v in tensors.items():
            name = k[len("prophetnet."):] if k.startswith("prophetnet.") else k
            if name in ("encoder.word_embeddings.weight", "decoder.word_embeddings.weight"):
                if not self.stack_tables:
                    out.setdefault("word_embeddings.weight", v if shared is None else shared)
                else:
                    out[name] = v
                continue
            if (name == "lm_head.weight" and self.tied) or (name == "word_embeddings.weight" and self.stack_tables):
                continue
            out[name] = v
        if self.stack_tables and shared is not None:  # untied, a checkpoint whose stacks shared the table gives it them
            for stack in ("encoder", "decoder"):
                out.setdefault(f"{stack}.word_embeddings.weight", shared)
        return out

    def to_hf(self) -> Dict[str, np.ndarray]:
        out = {k if k == "lm_head.weight" else "prophetnet." + k: v.numpy() for k, v in self.state_dict().items()}
        if self.stack_tables:  # transformers' prophetnet.word_embeddings (untied: read by no forward)
            out["prophetnet.word_embeddings.weight"] = out["prophetnet.encoder.word_embeddings.weight"].copy()
        return out

    def encode_graph(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """encode on Tensor inputs, every step a Tensor op (``export_seq2seq`` traces it)."""
        enc, mask = self.encoder, attention_mask.float()
        places = (key_places(mask) + (self.pad + 1)).clamp(0, self.position_rows - 1).long()
        x = self.encoder_embedding()(input_ids) + enc.position_embeddings(places)
        x = enc.dropout(enc.embeddings_layer_norm(x))
        bias = padding_bias(mask)
        for layer in enc.layers:
            x = layer(x, bias)
        return x

    def decode_graph(self, input_ids: Tensor, attention_mask: Tensor, cross, cache, logits_to_keep: int = 0) -> Tensor:
        """decode on Tensor inputs with ``cross`` (each layer's encoder keys and values) and ``cache`` (a
        PastKeyValues of the main stream's), every step a Tensor op (``export_seq2seq`` traces it): the main stream
        and the first predicting stream (the logits'), whose relative projections are read as transformers' cached
        generation reads them, so that T new places give what T one-place steps give."""
        dec, c = self.decoder, self.config
        keys, queries = decoder_places(input_ids, cache)
        places = queries.long() + (self.pad + 1)  # the main stream's rows; the predicting stream reads the next
        main = self.decoder_embedding()(input_ids) + dec.position_embeddings(places)  # (B, T, d)
        gram = dec.ngram_embeddings(Tensor._wrap(np.array([self.ngram - 1], np.int64)))  # stream 0's row, (1, d)
        predict = gram + dec.position_embeddings(places + 1)
        x = dec.dropout(dec.embeddings_layer_norm(cat([main.unsqueeze(1), predict.unsqueeze(1)], dim=1)))
        plan = _GraphStreamPlan(keys, queries, c["num_buckets"], c["relative_max_distance"])
        cross_bias = padding_bias(attention_mask.float())
        for i, layer in enumerate(dec.layers):
            x = layer(x, plan, cross[i], cross_bias, cache=cache, layer=i)
        x = x[:, 1]
        return self._head(x[:, -logits_to_keep:] if logits_to_keep else x)
