"""BART encoder-decoders (transformers' ``BartForConditionalGeneration``: BART, and the summarisation
checkpoints fine-tuned from it such as bart-large-cnn), Marian translation models (``MarianMTModel``:
BART's layers with fixed sinusoidal positions), mBART (``MBartForConditionalGeneration``: pre-norm
layers and a LayerNorm after each stack) and M2M100 / NLLB (``M2M100ForConditionalGeneration``: mBART's layers
with a fixed position table), Pegasus (mBART's layers with Marian's positions) and BlenderBot / BlenderBot-small
(learned positions from row 0; pre-norm, and post-norm with embedding LayerNorms) with transformers' parameter names.

Learned positions offset by 2 (BART's convention), token embeddings scaled by sqrt(d_model) when the
config says ``scale_embedding``, a LayerNorm on the embeddings, post-norm layers (residual, then
LayerNorm), GELU feed-forward, biased projections, and an LM head tied to the shared embedding plus a
``final_logits_bias``. The same encode / decode / cross_kv interface as T5, so ``generate`` runs it
(with the config's forced first and last tokens, as transformers does).
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Tuple

import numpy as np

from ... import nn
from ...nn import functional as F
from ...random import generator
from ...tensor import Tensor
from ._layers import KVCache, activation, additive_mask, attend, ids_array, mask_array, merge_heads, split_heads
from ._layers import config_probability, key_places, padding_bias, rows
from ._seq2seq import BartStyleDecoder, EncoderDecoder, attention_kv, causal_bias, decoder_places

__all__ = ["BartForConditionalGeneration", "MarianMTModel", "MBartForConditionalGeneration",
           "M2M100ForConditionalGeneration", "PegasusForConditionalGeneration", "BlenderbotForConditionalGeneration",
           "BlenderbotSmallForConditionalGeneration", "sinusoidal_positions", "m2m100_positions"]

_OFFSET = 2  # BART's learned position tables start at row 2


class BartAttention(nn.Module):
    def __init__(self, d: int, heads: int, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        self.heads, self.dropout_p = heads, dropout  # attention_dropout: on the weights, in training
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(d, d, bias=bias) for _ in range(4))

    def project_kv(self, states: Tensor) -> Tuple[Tensor, Tensor]:
        return split_heads(self.k_proj(states), self.heads), split_heads(self.v_proj(states), self.heads)

    def forward(self, x: Tensor, mask: Optional[np.ndarray], causal: bool = False,
                kv: Optional[Tuple[Tensor, Tensor]] = None, cache: Optional[KVCache] = None, layer: int = 0):
        q = split_heads(self.q_proj(x), self.heads)
        k, v = attention_kv(self, x, kv, cache, layer)
        drop = self.dropout_p if self.training else 0.0
        return self.out_proj(merge_heads(attend(q, k, v, mask, causal=causal, dropout_p=drop)))


class BartLayer(nn.Module):
    """BartEncoderLayer, or BartDecoderLayer with ``cross``: post-norm sub-layers (transformers' names); with
    ``pre_norm`` (mBART) each sub-layer normalizes its input and adds its output to the residual. ``attention_bias``
    False: unbiased attention projections (PEGASUS-X's decoder)."""

    def __init__(self, cfg: dict, prefix: str, cross: bool, pre_norm: bool = False, attention_bias: bool = True):
        super().__init__()
        self.pre_norm = pre_norm
        d = cfg["d_model"]
        heads, ffn = cfg[f"{prefix}_attention_heads"], cfg[f"{prefix}_ffn_dim"]
        attention_dropout = config_probability(cfg, "attention_dropout", "BartForConditionalGeneration")
        self.self_attn = BartAttention(d, heads, attention_dropout, attention_bias)
        self.self_attn_layer_norm = nn.LayerNorm(d)
        if cross:
            self.encoder_attn = BartAttention(d, heads, attention_dropout, attention_bias)
            self.encoder_attn_layer_norm = nn.LayerNorm(d)
        self.fc1, self.fc2 = nn.Linear(d, ffn), nn.Linear(ffn, d)
        self.final_layer_norm = nn.LayerNorm(d)
        self.act = activation(cfg.get("activation_function", "gelu"), "BART")
        self.dropout = nn.Dropout(cfg.get("dropout", 0.1))
        self.activation_dropout = nn.Dropout(cfg.get("activation_dropout", 0.0))

    def forward(self, x, mask, causal=False, cross_kv=None, cross_mask=None, cache=None, layer=0):
        if self.pre_norm:
            x = x + self.dropout(self.self_attn(self.self_attn_layer_norm(x), mask, causal, cache=cache, layer=layer))
            if cross_kv is not None:
                x = x + self.dropout(self.encoder_attn(self.encoder_attn_layer_norm(x), cross_mask, kv=cross_kv))
            h = self.fc2(self.activation_dropout(self.act(self.fc1(self.final_layer_norm(x)))))
            return x + self.dropout(h)
        x = self.self_attn_layer_norm(x + self.dropout(self.self_attn(x, mask, causal, cache=cache, layer=layer)))
        if cross_kv is not None:
            x = self.encoder_attn_layer_norm(x + self.dropout(self.encoder_attn(x, cross_mask, kv=cross_kv)))
        h = self.fc2(self.activation_dropout(self.act(self.fc1(x))))
        return self.final_layer_norm(x + self.dropout(h))


def sinusoidal_positions(n_positions: int, dim: int) -> np.ndarray:
    """Marian's fixed position table: sines of pos / 10000^(2(j//2)/dim) in the first half, cosines in the
    second (not interleaved), computed in float64 and rounded to float32 as transformers does."""
    j = np.arange(dim)
    angles = np.arange(n_positions)[:, None] / np.power(10000, 2 * (j // 2) / dim)[None, :]
    half = dim // 2 if dim % 2 == 0 else dim // 2 + 1
    out = np.empty((n_positions, dim), np.float32)
    out[:, :half] = np.sin(angles[:, 0::2])
    out[:, half:] = np.cos(angles[:, 1::2])
    return out


class BartStack(nn.Module):
    """BART's stack: learned positions from row ``offset`` (BART's 2; BlenderBot's 0); ``positions="marian"``:
    fixed sinusoidal positions from row 0 (not in the checkpoint; Marian's and Pegasus'); ``"m2m100"``: M2M100's
    fixed table, a token's row counted from its non-padding tokens (padding: the zero row ``pad_token_id``).
    ``embed_norm``: where a LayerNorm ``layernorm_embedding`` sits: ``"sum"`` on the token embeddings plus the
    positions (BART), ``"tokens"`` on the token embeddings before the positions are added (BlenderBot-small's
    decoder), None: none. ``pre_norm`` (mBART, M2M100, Pegasus, BlenderBot): pre-norm layers and a LayerNorm after
    the last."""
    _no_split_modules = ["BartLayer"]  # the repeated blocks: FSDP's default units
    _fsdp_nested_units = ["encoder_attn.k_proj", "encoder_attn.v_proj"]  # run by cross_kv, outside the blocks

    def __init__(self, cfg: dict, prefix: str, positions: str = "learned", pre_norm: bool = False,
                 offset: int = _OFFSET, embed_norm: Optional[str] = "sum", make_layer=None):
        super().__init__()
        if embed_norm not in ("sum", "tokens", None):
            raise ValueError(f"BartStack: embed_norm must be 'sum', 'tokens' or None, got {embed_norm!r}")
        d, n = cfg["d_model"], cfg["max_position_embeddings"]
        self.positions, self.embed_norm = positions, embed_norm
        self.offset = 0 if positions == "marian" else offset
        if positions == "marian":
            self.register_buffer("embed_positions", sinusoidal_positions(n, d), persistent=False)
        elif positions == "m2m100":
            self.pad = _pad_token(cfg)
            self.offset = self.pad + 1  # the first token's row (transformers: padding_idx + 1)
            self.register_buffer("embed_positions", m2m100_positions(n + self.offset, d, self.pad), persistent=False)
        else:
            self.embed_positions = nn.Embedding(n + self.offset, d)
        if embed_norm is not None:
            self.layernorm_embedding = nn.LayerNorm(d)
        # ``make_layer(i)``: layer i of a family with its own layers (NLLB-MoE's sparse ones), else BART's
        make_layer = make_layer or (lambda i: BartLayer(cfg, prefix, prefix == "decoder", pre_norm))
        self.layers = nn.ModuleList([make_layer(i) for i in range(cfg[f"{prefix}_layers"])])
        if pre_norm:  # mBART, M2M100, Pegasus, BlenderBot: a LayerNorm on the last layer's output
            self.layer_norm = nn.LayerNorm(d)
        self.dropout = nn.Dropout(cfg.get("dropout", 0.1))
        self.layerdrop = config_probability(cfg, f"{prefix}_layerdrop", "BartForConditionalGeneration")

    def run(self, x: Tensor, mask, cross: Optional[list] = None, **kw) -> Tensor:
        """The layers on x (layer i with ``cross[i]``, its encoder keys and values, if given), then mBART's final
        LayerNorm."""
        for i, layer in enumerate(self.layers):
            if self.training and self.layerdrop and kw.get("cache") is None and generator().random() < self.layerdrop:
                continue  # LayerDrop (training only, as transformers): the layer skipped with that probability
            x = layer(x, mask, cross_kv=None if cross is None else cross[i], layer=i, **kw)
        return self.layer_norm(x) if hasattr(self, "layer_norm") else x

    def _table(self) -> Tensor:
        return self.embed_positions if isinstance(self.embed_positions, Tensor) else self.embed_positions.weight

    def _finish(self, tokens: Tensor, positions: Tensor) -> Tensor:
        """The stack's input: token embeddings plus positions, with the embedding LayerNorm where ``embed_norm``
        puts it, then dropout."""
        if self.embed_norm == "tokens":
            return self.dropout(self.layernorm_embedding(tokens) + positions)
        x = tokens + positions
        return self.dropout(self.layernorm_embedding(x) if self.embed_norm == "sum" else x)

    def position_rows(self, ids: np.ndarray, start: int) -> np.ndarray:
        """M2M100's table rows of tokens ``ids`` (B, T) following ``start`` earlier ones (transformers'
        ``create_position_ids_from_input_ids``): the count of non-padding tokens up to each one, past ``start``,
        from row pad + 1; padding tokens take the zero row ``pad``."""
        real = np.asarray(ids) != self.pad
        return np.where(real, np.cumsum(real, axis=1) + start + self.pad, self.pad)

    def embed_at(self, tokens: Tensor, places: Tensor, ids: Optional[Tensor] = None) -> Tensor:
        """embed with the positions given as a float (B, T) tensor (an exported graph's; M2M100's rows are counted
        from ``ids``, after the first place)."""
        if self.positions == "m2m100":
            real = (ids != self.pad).float()
            index = (real.cumsum(-1) + places[:, :1]) * real + self.pad
        else:
            index = places + self.offset
        return self._finish(tokens, rows(self._table(), index.long()))

    def embed(self, tokens: Tensor, start: int, length: int, ids: Optional[np.ndarray] = None) -> Tensor:
        """Token embeddings (already scaled) plus the positions start..start+length-1 (M2M100: of ``ids``)."""
        table = self._table()
        if self.positions == "m2m100":
            return self._finish(tokens, Tensor._wrap(table.numpy()[self.position_rows(ids, start)]))
        return self._finish(tokens, table[start + self.offset:start + self.offset + length])


def _pad_token(cfg: dict) -> int:
    pad = cfg.get("pad_token_id", 1)
    if isinstance(pad, bool) or not isinstance(pad, int) or not 0 <= pad < cfg["vocab_size"]:
        raise ValueError(f"M2M100ForConditionalGeneration: config pad_token_id must be a token id, got {pad!r}")
    return pad


def _padding_idx(cfg: dict, vocab: int) -> Optional[int]:
    """The token tables' padding_idx, as transformers builds them: the pad token, whose row gets no gradient from the
    lookup (the tied head's still reaches it); None without a pad token in the table."""
    pad = cfg.get("pad_token_id")
    return pad if isinstance(pad, int) and not isinstance(pad, bool) and 0 <= pad < vocab else None


def m2m100_positions(n_positions: int, dim: int, pad: int) -> np.ndarray:
    """M2M100's fixed position table (tensor2tensor's): sines of pos * 10000^(-j / (dim/2 - 1)) in the first half,
    cosines in the second, in float32 as transformers computes it; row ``pad`` zero."""
    half = dim // 2
    step = math.log(10000) / (half - 1)
    freq = np.exp(np.arange(half, dtype=np.float32) * np.float32(-step)).astype(np.float32)
    angles = (np.arange(n_positions, dtype=np.float32)[:, None] * freq[None, :]).astype(np.float32)
    out = np.zeros((n_positions, dim), np.float32)
    out[:, :half], out[:, half:2 * half] = np.sin(angles), np.cos(angles)
    out[pad] = 0
    return out


def _cross_mask(padding: Optional[np.ndarray], t: int) -> Optional[np.ndarray]:
    """(B, 1, t, S) additive mask of the encoder's padding for t decoder queries, or None."""
    if padding is None or padding.all():
        return None
    keys = np.where(padding, np.float32(0), np.float32(np.finfo(np.float32).min)).astype(np.float32)
    return np.ascontiguousarray(np.broadcast_to(keys[:, None, None, :], (padding.shape[0], 1, t, padding.shape[1])))


class BartForConditionalGeneration(BartStyleDecoder, EncoderDecoder, nn.Module):
    """``forward(input_ids, attention_mask=None, decoder_input_ids=...)`` -> logits (B, T_dec, vocab)."""

    architecture = "BartForConditionalGeneration"
    model_type = "bart"
    start_fallback = "eos_token_id"
    marian = False
    pre_norm = False
    positions = "learned"
    position_offset = _OFFSET  # the first token's row of a learned table (BlenderBot's: 0)
    embedding_norms = ("sum", "sum")  # the encoder's and decoder's BartStack embed_norm
    logits_bias = True  # a final_logits_bias in the checkpoint (M2M100 has none: it stays zero)

    def __init__(self, config: dict):
        super().__init__()
        self.config = dict(config)
        c = self.config
        # Marian's separate source and target vocabularies (transformers' share_encoder_decoder_embeddings:
        # false): the encoder's table of vocab_size rows, the decoder's (and its head's) of decoder_vocab_size
        self.separate_vocabs = c.get("share_encoder_decoder_embeddings", True) is False
        if self.separate_vocabs and not self.marian:
            raise ValueError(f"{type(self).__name__}: separate encoder and decoder vocabularies "
                             "(share_encoder_decoder_embeddings: false) are Marian's only")
        if self.separate_vocabs:
            target = c.get("decoder_vocab_size")
            if target is None:
                target = c["vocab_size"]
            if isinstance(target, bool) or not isinstance(target, int) or target <= 0:
                raise ValueError(f"{type(self).__name__}: config decoder_vocab_size must be a positive integer, "
                                 f"got {target!r}")
        else:
            target = c["vocab_size"]
        self.tied = c.get("tie_word_embeddings", True) is not False
        # untied (tie_word_embeddings: false), transformers 5 unties the stacks' token tables from ``shared`` as well
        # as the head: each stack looks its tokens up in its own table, and ``shared`` takes part in no forward
        self.stack_tables = self.separate_vocabs or not self.tied
        if not self.stack_tables:
            self.shared = nn.Embedding(c["vocab_size"], c["d_model"], padding_idx=_padding_idx(c, c["vocab_size"]))
        self.encoder, self.decoder = self.make_stacks(c)
        if self.stack_tables:
            self.encoder.embed_tokens = nn.Embedding(c["vocab_size"], c["d_model"],
                                                     padding_idx=_padding_idx(c, c["vocab_size"]))
            self.decoder.embed_tokens = nn.Embedding(target, c["d_model"], padding_idx=_padding_idx(c, target))
        self.embed_scale = math.sqrt(c["d_model"]) if c.get("scale_embedding", False) else 1.0
        self.register_buffer("final_logits_bias", np.zeros((1, self.decoder_vocab_size), np.float32))
        if not self.tied:
            self.lm_head = nn.Linear(c["d_model"], self.decoder_vocab_size, bias=False)
        self.max_positions = int(c["max_position_embeddings"])

    def make_stacks(self, c: dict) -> tuple:
        """(encoder, decoder): by default make_stack's for each (PEGASUS-X replaces the pair, NLLB-MoE one stack's
        layers)."""
        return tuple(self.make_stack(c, prefix, norm)
                     for prefix, norm in zip(("encoder", "decoder"), self.embedding_norms))

    def make_stack(self, cfg: dict, prefix: str, embed_norm: Optional[str]) -> BartStack:
        """The encoder's (``prefix`` "encoder") or decoder's stack."""
        return BartStack(cfg, prefix, self.positions, self.pre_norm, self.position_offset, embed_norm)

    @property
    def decoder_vocab_size(self) -> int:
        """The decoder's vocabulary (its tokens, the logits' width): vocab_size, or Marian's decoder_vocab_size
        when the vocabularies are separate."""
        if self.separate_vocabs:
            target = self.config.get("decoder_vocab_size")
            return self.config["vocab_size"] if target is None else int(target)
        return self.config["vocab_size"]

    def encoder_embedding(self):
        return self.encoder.embed_tokens if self.stack_tables else self.shared

    def decoder_embedding(self):
        return self.decoder.embed_tokens if self.stack_tables else self.shared

    def _tokens(self, ids, decoder: bool = False) -> Tensor:
        table = self.decoder_embedding() if decoder else self.encoder_embedding()
        x = table(ids if isinstance(ids, Tensor) else Tensor._wrap(ids))
        return x * self.embed_scale if self.embed_scale != 1.0 else x

    def encode(self, input_ids, attention_mask=None) -> Tensor:
        ids = ids_array(input_ids, self.architecture, self.vocab_size)
        B, S = ids.shape
        if S > self.max_positions:
            raise ValueError(f"{self.architecture}: {S} tokens exceed max_position_embeddings "
                             f"{self.max_positions}")
        pad = mask_array(attention_mask, self.architecture, ids.shape)
        mask = additive_mask(pad, 0, S, causal=False)
        return self.encoder.run(self.encoder.embed(self._tokens(ids), 0, S, ids), mask)

    def decode(self, decoder_input_ids, encoder_states: Tensor, attention_mask=None,
               cross: Optional[List[Tuple[Tensor, Tensor]]] = None, cache: Optional[KVCache] = None) -> Tensor:
        ids = ids_array(decoder_input_ids, self.architecture, self.decoder_vocab_size)
        B, T = ids.shape
        pad = mask_array(attention_mask, self.architecture, tuple(encoder_states.shape[:2]))
        past = cache.length if cache is not None else 0
        if past + T > self.max_positions:
            raise ValueError(f"{self.architecture}: decoder position {past + T - 1} exceeds "
                             f"max_position_embeddings {self.max_positions}")
        mask = additive_mask(None, past, T, causal=True)
        cross = self.cross_kv(encoder_states) if cross is None else cross
        cross_mask = _cross_mask(pad, T)
        x = self.decoder.embed(self._tokens(ids, decoder=True), past, T, ids)
        x = self.decoder.run(x, mask, causal=mask is None, cross=cross, cross_mask=cross_mask, cache=cache)
        if cache is not None:
            cache.advance(T)
        logits = F.linear(x, self.decoder_embedding().weight) if self.tied else self.lm_head(x)
        return logits + self.final_logits_bias

    def encode_graph(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """encode on Tensor inputs, every step a Tensor op (``export_seq2seq`` traces it)."""
        mask = attention_mask.float()
        x = self.encoder.embed_at(self._tokens(input_ids), key_places(mask), input_ids)
        return self.encoder.run(x, padding_bias(mask), **self.graph_layer_arguments(input_ids, mask))

    def graph_layer_arguments(self, input_ids: Tensor, mask: Optional[Tensor] = None) -> dict:
        """Further keyword arguments of every layer in the exported graphs (the encoder's with its float ``mask``,
        the decoder's without): none here; NLLB-MoE's routers take which tokens they route."""
        return {}

    def decode_graph(self, input_ids: Tensor, attention_mask: Tensor, cross, cache, logits_to_keep: int = 0) -> Tensor:
        """decode on Tensor inputs with ``cross`` (each layer's encoder keys and values) and ``cache`` (a
        PastKeyValues of the decoder's own), every step a Tensor op (``export_seq2seq`` traces it)."""
        keys, queries = decoder_places(input_ids, cache)
        causal = causal_bias(keys, queries)
        cross_bias = padding_bias(attention_mask.float())
        x = self.decoder.embed_at(self._tokens(input_ids, decoder=True), queries, input_ids)
        x = self.decoder.run(x, causal, cross=cross, cross_mask=cross_bias, cache=cache,
                             **self.graph_layer_arguments(input_ids))
        if logits_to_keep:
            x = x[:, -logits_to_keep:]
        logits = F.linear(x, self.decoder_embedding().weight) if self.tied else self.lm_head(x)
        return logits + self.final_logits_bias

    # --- checkpoint names: transformers' "model." prefix dropped; the stacks' copies of the shared table dropped
    # (and Marian's fixed position tables, which older checkpoints store) ---
    def from_hf(self, tensors: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        out = {}
        # the stacks' copies of the shared table (separate vocabularies or untied: the stacks' own tables, kept)
        skip = set() if self.stack_tables else {"encoder.embed_tokens.weight", "decoder.embed_tokens.weight"}
        if self.stack_tables and not self.separate_vocabs:
            skip.add("shared.weight")  # untied: read by no forward; a checkpoint whose stacks shared it gives it them
            shared = tensors.get("model.shared.weight")
            for stack in ("encoder", "decoder"):
                if f"model.{stack}.embed_tokens.weight" not in tensors and shared is not None:
                    out[f"{stack}.embed_tokens.weight"] = shared
        if self.positions != "learned":
            skip |= {f"{stack}.embed_positions.{w}" for stack in ("encoder", "decoder") for w in ("weight", "weights")}
        for k, v in tensors.items():
            name = k[len("model."):] if k.startswith("model.") else k
            if name in skip:
                continue
            if name == "lm_head.weight" and self.tied:
                continue
            out[name] = v
        if (not self.stack_tables and "shared.weight" not in out
                and "encoder.embed_tokens.weight" in {k[6:] for k in tensors}):
            out["shared.weight"] = tensors["model.encoder.embed_tokens.weight"]
        if "final_logits_bias" not in out:  # transformers may leave the zero buffer out
            out["final_logits_bias"] = np.zeros((1, self.decoder_vocab_size), np.float32)
        return out

    def to_hf(self) -> Dict[str, np.ndarray]:
        out = {}
        for k, v in self.state_dict().items():
            if k == "final_logits_bias" and not self.logits_bias:
                continue
            out[k if k in ("final_logits_bias", "lm_head.weight") else "model." + k] = v.numpy()
        if self.stack_tables and not self.separate_vocabs:  # transformers' model.shared (untied: in no forward)
            out["model.shared.weight"] = out["model.encoder.embed_tokens.weight"].copy()
        return out


class MarianMTModel(BartForConditionalGeneration):
    """Marian translation models (Helsinki-NLP's opus-mt): BART's layers with fixed sinusoidal positions,
    no embedding LayerNorm, and (as their configs say) scaled embeddings and the pad token as the decoder's
    start. ``share_encoder_decoder_embeddings: false``: separate source and target vocabularies, the encoder's
    table ``encoder.embed_tokens`` (vocab_size rows) and the decoder's ``decoder.embed_tokens``
    (``decoder_vocab_size`` rows, the head's and final_logits_bias's vocabulary) in place of ``shared``."""

    architecture = "MarianMTModel"
    model_type = "marian"
    marian = True
    positions = "marian"
    embedding_norms = (None, None)


class MBartForConditionalGeneration(BartForConditionalGeneration):
    """mBART (mbart-large-cc25, mbart-large-50 and their translation fine-tunes): BART's learned positions and
    embedding LayerNorm with pre-norm layers and a LayerNorm after each stack (``encoder.layer_norm``,
    ``decoder.layer_norm``). The target language is the decoder's forced first token (``forced_bos_token_id``
    in the config or generation_config.json)."""

    architecture = "MBartForConditionalGeneration"
    model_type = "mbart"
    pre_norm = True


class M2M100ForConditionalGeneration(MBartForConditionalGeneration):
    """M2M100 and NLLB-200 (the dense checkpoints, e.g. nllb-200-distilled-600M): mBART's pre-norm layers and
    final LayerNorms with a fixed sinusoidal position table (tensor2tensor's; rows counted over the non-padding
    tokens from ``pad_token_id`` + 1, padding on the zero row), no embedding LayerNorm and no final_logits_bias.
    The target language is the decoder's forced first token (``forced_bos_token_id``)."""

    architecture = "M2M100ForConditionalGeneration"
    model_type = "m2m_100"
    positions = "m2m100"
    embedding_norms = (None, None)
    logits_bias = False


class PegasusForConditionalGeneration(MBartForConditionalGeneration):
    """Pegasus (pegasus-large, pegasus-xsum, pegasus-cnn_dailymail, ...): mBART's pre-norm layers and a LayerNorm
    after each stack with Marian's fixed sinusoidal positions from row 0 (a frozen table, recomputed, not read from
    the checkpoint), no embedding LayerNorm, embeddings scaled by sqrt(d_model) as its configs say; the pad token
    starts the decoder."""

    architecture = "PegasusForConditionalGeneration"
    model_type = "pegasus"
    positions = "marian"
    embedding_norms = (None, None)


class BlenderbotForConditionalGeneration(MBartForConditionalGeneration):
    """BlenderBot (blenderbot-400M-distill, blenderbot-1B-distill, blenderbot-3B): mBART's pre-norm layers and a
    LayerNorm after each stack, learned positions from row 0 (no offset), no embedding LayerNorm. Its config's
    ``encoder_no_repeat_ngram_size`` (3) applies in generate, as transformers'."""

    architecture = "BlenderbotForConditionalGeneration"
    model_type = "blenderbot"
    position_offset = 0
    embedding_norms = (None, None)


class BlenderbotSmallForConditionalGeneration(BartForConditionalGeneration):
    """BlenderBot-small (blenderbot_small-90M): BART's post-norm layers with learned positions from row 0 and a
    ``layernorm_embedding`` in each stack, which the encoder applies to the token embeddings plus the positions (as
    BART) and the decoder to the token embeddings alone, before the positions are added (as transformers does)."""

    architecture = "BlenderbotSmallForConditionalGeneration"
    model_type = "blenderbot-small"
    position_offset = 0
    embedding_norms = ("sum", "tokens")
