"""PEGASUS-X (transformers' ``PegasusXForConditionalGeneration``, model_type "pegasus_x": pegasus-x-base,
pegasus-x-large and their fine-tunes): Pegasus' pre-norm decoder (unbiased attention projections) over an encoder
whose self-attention is block-local with global tokens.

The encoder pads its input with zeros to whole blocks of ``block_size`` tokens. Each layer carries
``num_global_tokens`` global states next to the tokens (starting from their own table ``embed_global``, normalised by
the layer's ``global_self_attn_layer_norm``, through the same projections and feed-forward as the tokens). A token's
query attends to the global tokens and to the keys of its own block; a global query attends to the global tokens and
to every token. Padding keys are masked with float32's lowest value, as transformers adds it (a padded token's query
still attends, so its output equals transformers' too). With ``stagger_local_blocks`` every odd layer shifts the blocks
by half a block: its (normalised) input gets block_size // 2 masked zero rows on either side. The scores are
(B, heads, blocks, block_size, globals + block_size) and (B, heads, globals, globals + T): linear in the length, never
T x T.

Positions are sinusoids computed for any position (no table in the checkpoint): sines of pos * 10000^(-j / (d/2 - 1))
in the first half, cosines in the second, in float32 as transformers computes them; token embeddings scaled by
sqrt(d_model) as the configs say; no final_logits_bias. The decoder, cross-attention and generate are BART's
(models/hf/bart.py).

``encode_graph`` (export_seq2seq's encoder graph) computes the same with Tensor ops on any batch and length: the
tokens padded by a whole zero block and sliced to ceil(T / block_size) blocks (the exporter's ``axis_ceil_divisors``),
the key biases from the attention mask, the sinusoids from the tokens' places; the decoder graph is BART's with the
sinusoids computed from its places (``sinusoids_of``).
"""
from __future__ import annotations

import math
from typing import Tuple

import numpy as np

from ... import nn
from ...factories import cat
from ...nn import functional as F
from ...random import generator
from ...tensor import Tensor
from ._layers import FLOAT32_MAX, activation, config_probability, ids_array, key_places, mask_array
from .bart import BartLayer, BartStack, PegasusForConditionalGeneration

__all__ = ["PegasusXForConditionalGeneration", "pegasus_x_positions", "check_config"]

_NAME = "PegasusXForConditionalGeneration"
_MASKED = np.finfo(np.float32).min  # transformers' additive mask of padding keys


def _positive_int(cfg: dict, key: str, default: int) -> int:
    value = cfg.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{_NAME}: config {key} must be a positive integer, got {value!r}")
    return value


def check_config(cfg: dict) -> Tuple[int, int, bool]:
    """(block_size, num_global_tokens, stagger_local_blocks) of a PEGASUS-X config, checked with its widths."""
    block = _positive_int(cfg, "block_size", 512)
    globals_ = _positive_int(cfg, "num_global_tokens", 32)
    stagger = cfg.get("stagger_local_blocks", True)
    if not isinstance(stagger, bool):
        raise ValueError(f"{_NAME}: config stagger_local_blocks must be true or false, got {stagger!r}")
    d = _positive_int(cfg, "d_model", 1024)
    if d % 2 or d < 4:  # half the width sines, half cosines; the frequencies divide by d / 2 - 1
        raise ValueError(f"{_NAME}: config d_model must be an even integer of at least 4 (the sinusoidal positions), "
                         f"got {d}")
    for key in ("encoder_attention_heads", "decoder_attention_heads"):
        heads = _positive_int(cfg, key, 16)
        if d % heads:
            raise ValueError(f"{_NAME}: config d_model {d} must be divisible by {key} {heads}")
    if stagger and block % 2 and cfg.get("encoder_layers", 16) > 1:
        raise ValueError(f"{_NAME}: config block_size must be even when stagger_local_blocks shifts the blocks by "
                         f"half a block, got {block}")
    return block, globals_, stagger


def pegasus_x_positions(start: int, length: int, dim: int) -> np.ndarray:
    """(length, dim) float32 sinusoids of positions start..start+length-1, as transformers'
    PegasusXSinusoidalPositionalEmbedding computes them: float32 exponents, frequencies and angles. exp, sin and cos
    are taken in float64 and rounded: torch's float32 functions are (nearly always) correctly rounded, numpy's float32
    exp is not (an ulp off in a third of the frequencies, which far positions multiply)."""
    half = dim // 2
    exponents = np.arange(half, dtype=np.float32) * np.float32(-math.log(10000.0) / (half - 1))
    freq = np.exp(exponents.astype(np.float64)).astype(np.float32)
    angles = (np.arange(start, start + length, dtype=np.float32)[:, None] * freq[None, :]).astype(np.float64)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1).astype(np.float32)


def key_biases(padding: np.ndarray, G: int, L: int, stagger: int = 0) -> Tuple[Tensor, Tensor]:
    """The additive biases of the keys for ``padding`` (B, T) (True: a token), the sequence padded to whole blocks
    of L and ``stagger`` masked rows on either side: (global queries' (B, 1, 1, G + Tp), token queries'
    (B, 1, blocks, 1, G + L)); the global keys are never masked."""
    B, T = padding.shape
    Tp = -(-T // L) * L + 2 * stagger
    keys = np.full((B, Tp), _MASKED, np.float32)
    keys[:, stagger:stagger + T] = np.where(padding, np.float32(0), _MASKED)
    nb = Tp // L
    glob = np.concatenate([np.zeros((B, G), np.float32), keys], axis=1)[:, None, None, :]
    local = np.concatenate([np.zeros((B, nb, G), np.float32), keys.reshape(B, nb, L)], axis=2)[:, None, :, None, :]
    return Tensor._wrap(np.ascontiguousarray(glob)), Tensor._wrap(np.ascontiguousarray(local))


def sinusoids_of(places: Tensor, dim: int) -> Tensor:
    """pegasus_x_positions as Tensor ops (an exported graph's): ``places`` (B, T) float positions -> (B, T, dim); the
    same float32 angles, their sines and cosines in float32."""
    half = dim // 2
    exponents = np.arange(half, dtype=np.float32) * np.float32(-math.log(10000.0) / (half - 1))
    freq = np.exp(exponents.astype(np.float64)).astype(np.float32)
    angles = places.unsqueeze(-1) * Tensor._wrap(freq)
    return cat([angles.sin(), angles.cos()], dim=-1)


def key_biases_of(mask: Tensor, G: int, L: int, stagger: int = 0) -> Tuple[Tensor, Tensor]:
    """key_biases as Tensor ops (the exported graph's): ``mask`` (B, T) float, 1 for a token. The keys are padded by a
    whole block and sliced to ceil(T / L) blocks (the remainder is no size the exporter can compute)."""
    B, T = mask.shape
    keys = F.pad(mask, (0, L))[:, :-(-T // L) * L]
    if stagger:
        keys = F.pad(keys, (stagger, stagger))
    keys = (keys - 1) * FLOAT32_MAX  # 0 for a token, float32's lowest elsewhere
    local = F.pad(keys.reshape(B, keys.shape[1] // L, L), (G, 0))  # (B, blocks, G + L)
    return F.pad(keys, (G, 0)).unsqueeze(1).unsqueeze(1), local.unsqueeze(1).unsqueeze(3)


class PegasusXGlobalLocalAttention(nn.Module):
    """Block-local attention of the tokens plus global tokens (transformers' PegasusXGlobalLocalAttention): unbiased
    q, k, v, out projections shared by both."""

    def __init__(self, d: int, heads: int, block_size: int, dropout: float = 0.0):
        super().__init__()
        self.heads, self.head_dim, self.block_size, self.dropout_p = heads, d // heads, block_size, dropout
        self.scaling = self.head_dim ** -0.5
        self.k_proj, self.v_proj, self.q_proj, self.out_proj = (nn.Linear(d, d, bias=False) for _ in range(4))

    def _heads(self, t: Tensor) -> Tensor:
        """(B, n, d) -> (B, heads, n, head_dim)."""
        return t.reshape(t.shape[0], t.shape[1], self.heads, self.head_dim).permute(0, 2, 1, 3)

    def _project(self, t: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """(queries scaled as transformers scales them, keys, values) of t (B, n, d), each (B, heads, n, head_dim)."""
        return self._heads(self.q_proj(t) * self.scaling), self._heads(self.k_proj(t)), self._heads(self.v_proj(t))

    def _softmax(self, scores: Tensor) -> Tensor:
        weights = F.softmax(scores, dim=-1)
        return F.dropout(weights, self.dropout_p, training=True) if self.training and self.dropout_p else weights

    def forward(self, x: Tensor, g: Tensor, biases: Tuple[Tensor, Tensor]) -> Tuple[Tensor, Tensor]:
        """x (B, Tp, d): the tokens, Tp a multiple of block_size; g (B, G, d): the global tokens; ``biases`` from
        key_biases. -> (tokens' output (B, Tp, d), global tokens' output (B, G, d))."""
        B, T, d = x.shape
        G, L, H, D = g.shape[1], self.block_size, self.heads, self.head_dim
        nb = T // L
        q, k, v = self._project(x)  # (B, H, Tp, D) each
        gq, gk, gv = self._project(g)  # (B, H, G, D) each
        global_bias, local_bias = biases
        # global queries over the global tokens and every token: (B, H, G, G + T)
        weights = self._softmax(gq @ cat([gk, k], dim=2).transpose(-1, -2) + global_bias)
        global_out = (weights @ cat([gv, v], dim=2)).permute(0, 2, 1, 3).reshape(B, G, d)
        # each block's queries over the global tokens and their own block: (B, H, blocks, L, G + L)
        qb, kb, vb = (t.reshape(B, H, nb, L, D) for t in (q, k, v))
        gk5, gv5 = gk.unsqueeze(2), gv.unsqueeze(2)  # (B, H, 1, G, D): the same for every block
        scores = cat([qb @ gk5.transpose(-1, -2), qb @ kb.transpose(-1, -2)], dim=-1) + local_bias
        weights = self._softmax(scores)
        out = weights[..., :G] @ gv5 + weights[..., G:] @ vb  # (B, H, blocks, L, D)
        out = out.permute(0, 2, 3, 1, 4).reshape(B, T, d)
        return self.out_proj(out), self.out_proj(global_out)


class PegasusXEncoderLayer(nn.Module):
    """Pre-norm attention (tokens and global tokens each through their own LayerNorm) and a pre-norm feed-forward
    shared by both (transformers' PegasusXEncoderLayer); ``stagger``: the blocks shifted by half a block."""

    def __init__(self, cfg: dict, stagger: bool):
        super().__init__()
        d, block = cfg["d_model"], check_config(cfg)[0]
        self.stagger = block // 2 if stagger else 0
        self.self_attn = PegasusXGlobalLocalAttention(d, cfg["encoder_attention_heads"], block,
                                                      config_probability(cfg, "attention_dropout", _NAME))
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.global_self_attn_layer_norm = nn.LayerNorm(d)
        self.fc1, self.fc2 = nn.Linear(d, cfg["encoder_ffn_dim"]), nn.Linear(cfg["encoder_ffn_dim"], d)
        self.final_layer_norm = nn.LayerNorm(d)
        self.act = activation(cfg.get("activation_function", "gelu"), "PEGASUS-X")
        self.dropout = nn.Dropout(cfg.get("dropout", 0.1))
        self.activation_dropout = nn.Dropout(cfg.get("activation_dropout", 0.0))

    def _feed_forward(self, x: Tensor) -> Tensor:
        h = self.fc2(self.activation_dropout(self.act(self.fc1(self.final_layer_norm(x)))))
        return x + self.dropout(h)

    def forward(self, x: Tensor, g: Tensor, biases: Tuple[Tensor, Tensor]) -> Tuple[Tensor, Tensor]:
        h = self.self_attn_layer_norm(x)
        s = self.stagger
        if s:  # masked zero rows (after the norm, as transformers pads) shift the blocks by half a block
            h = F.pad(h, (0, 0, s, s))
        h, gh = self.self_attn(h, self.global_self_attn_layer_norm(g), biases)
        if s:
            h = h[:, s:h.shape[1] - s]
        x, g = x + self.dropout(h), g + self.dropout(gh)
        return self._feed_forward(x), self._feed_forward(g)


class PegasusXEncoderStack(nn.Module):
    """The encoder's global-token table, layers (odd ones staggered when the config says) and final LayerNorm."""
    _no_split_modules = ["PegasusXEncoderLayer"]

    def __init__(self, cfg: dict):
        super().__init__()
        _, globals_, stagger = check_config(cfg)
        self.embed_global = nn.Embedding(globals_, cfg["d_model"])
        self.layers = nn.ModuleList([PegasusXEncoderLayer(cfg, stagger and i % 2 == 1)
                                     for i in range(cfg["encoder_layers"])])
        self.layer_norm = nn.LayerNorm(cfg["d_model"])
        self.dropout = nn.Dropout(cfg.get("dropout", 0.1))
        self.layerdrop = config_probability(cfg, "encoder_layerdrop", _NAME)


class PegasusXDecoderStack(nn.Module):
    """Pegasus' pre-norm decoder layers with unbiased attention projections, a LayerNorm after the last, and
    positions computed for any place (BartStack's ``run``)."""
    _no_split_modules = ["BartLayer"]
    _fsdp_nested_units = ["encoder_attn.k_proj", "encoder_attn.v_proj"]  # run by cross_kv, outside the blocks
    positions, embed_norm, offset = "pegasus_x", None, 0
    run = BartStack.run

    def __init__(self, cfg: dict):
        super().__init__()
        self.d_model = cfg["d_model"]
        self.layers = nn.ModuleList([BartLayer(cfg, "decoder", True, pre_norm=True, attention_bias=False)
                                     for _ in range(cfg["decoder_layers"])])
        self.layer_norm = nn.LayerNorm(self.d_model)
        self.dropout = nn.Dropout(cfg.get("dropout", 0.1))
        self.layerdrop = config_probability(cfg, "decoder_layerdrop", _NAME)

    def embed(self, tokens: Tensor, start: int, length: int, ids=None) -> Tensor:
        """Token embeddings (already scaled) plus the positions start..start+length-1, then dropout."""
        return self.dropout(tokens + Tensor._wrap(pegasus_x_positions(start, length, self.d_model)))

    def embed_at(self, tokens: Tensor, places: Tensor, ids=None) -> Tensor:
        """embed with the positions given as a float (B, T) tensor (the exported decoder graph's)."""
        return self.dropout(tokens + sinusoids_of(places, self.d_model))


class PegasusXForConditionalGeneration(PegasusForConditionalGeneration):
    """PEGASUS-X: ``encode`` runs the block-local encoder with global tokens; ``decode``, ``generate``, the checkpoint
    names are BART's (Pegasus' pre-norm decoder). The config's ``block_size``, ``num_global_tokens`` and
    ``stagger_local_blocks`` shape the encoder."""

    architecture = _NAME
    model_type = "pegasus_x"
    logits_bias = False  # no final_logits_bias in the checkpoint: it stays zero

    def __init__(self, config: dict):
        self.block_size, self.num_global_tokens, self.stagger = check_config(config)
        super().__init__(config)

    def make_stacks(self, c: dict) -> tuple:
        return PegasusXEncoderStack(c), PegasusXDecoderStack(c)

    def encode(self, input_ids, attention_mask=None) -> Tensor:
        """The encoder's output (B, S, d_model), every position transformers' (padding included)."""
        ids = ids_array(input_ids, _NAME, self.vocab_size)
        B, S = ids.shape
        if S > self.max_positions:
            raise ValueError(f"{_NAME}: {S} tokens exceed max_position_embeddings {self.max_positions}")
        pad = mask_array(attention_mask, _NAME, ids.shape)
        padding = np.ones(ids.shape, bool) if pad is None else pad.astype(bool)
        L, G = self.block_size, self.num_global_tokens
        x = self.encoder.dropout(self._tokens(ids) + Tensor._wrap(pegasus_x_positions(0, S, self.config["d_model"])))
        if S % L:  # zero rows to whole blocks (masked as keys)
            x = F.pad(x, (0, 0, 0, L - S % L))
        shifted = key_biases(padding, G, L, L // 2) if self._staggered() else None
        x = self._run_layers(x, key_biases(padding, G, L), shifted)
        return self.encoder.layer_norm(x[:, :S] if x.shape[1] != S else x)

    def _staggered(self) -> bool:
        return self.stagger and len(self.encoder.layers) > 1

    def _run_layers(self, x: Tensor, plain, shifted) -> Tensor:
        """The layers on the embedded tokens ``x`` (B, whole blocks, d_model; dropout applied) with the key biases
        (before the final LayerNorm)."""
        enc = self.encoder
        g = enc.embed_global.weight.unsqueeze(0).expand(x.shape[0], self.num_global_tokens, x.shape[2])
        for layer in enc.layers:
            if self.training and enc.layerdrop and generator().random() < enc.layerdrop:
                continue  # LayerDrop (training only): the layer skipped with that probability
            x, g = layer(x, g, shifted if layer.stagger else plain)
        return x

    def graph_axis_divisors(self) -> Tuple[dict, dict]:
        """(floor, ceil) divisors of the encoder's sequence axis for the exporter (export_seq2seq): the blocks are
        ceil(T / block_size)."""
        return {}, ({"encoder_sequence": self.block_size} if self.block_size > 1 else {})

    def encode_graph(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """encode on Tensor inputs, every step a Tensor op (``export_seq2seq`` traces it): the tokens padded by a
        whole block and sliced to the blocks, the biases and sinusoids from the mask."""
        L, G = self.block_size, self.num_global_tokens
        mask = (attention_mask != 0).float()
        S = mask.shape[1]
        x = self.encoder.dropout(self._tokens(input_ids) + sinusoids_of(key_places(mask), self.config["d_model"]))
        x = F.pad(x, (0, 0, 0, L))[:, :-(-S // L) * L]
        shifted = key_biases_of(mask, G, L, L // 2) if self._staggered() else None
        x = self._run_layers(x, key_biases_of(mask, G, L), shifted)
        return self.encoder.layer_norm(x[:, :S])
