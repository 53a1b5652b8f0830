"""Whisper speech recognition (transformers' ``WhisperForConditionalGeneration``) with transformers'
parameter names.

The encoder reads log-mel features (B, num_mel_bins, 2 * max_source_positions; whisper_features.py computes
them): two Conv1d layers with GELU (the second halves the length), the checkpoint's fixed position table,
pre-norm layers and a final LayerNorm. The decoder is mBART's pre-norm layer stack (bart.BartLayer: self
attention, cross attention, GELU feed-forward) on token embeddings plus a learned position table (from row
0), a final LayerNorm and an LM head tied to the token embedding. Whisper's key projections have no bias.
``generate`` (whisper_generate.py) builds the decoder prompt (start, language, task, no-timestamps tokens)
and decodes as transformers' Whisper generate does: one window or long-form audio window after window, with
timestamps, segments, conditioning on previous tokens and the temperature fallback.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import numpy as np

from ... import nn
from ...factories import cat
from ...nn import functional as F
from ...random import generator
from ...tensor import Tensor
from ._layers import FLOAT32_MAX, KVCache, additive_mask, config_probability, ids_array, mask_array, rows
from ._layers import split_heads
from ._seq2seq import BartStyleDecoder, EncoderDecoder, causal_bias, decoder_places
from .bart import BartLayer

__all__ = ["WhisperForConditionalGeneration"]

_WHO = "WhisperForConditionalGeneration"


def _layers(cfg: dict, prefix: str) -> nn.ModuleList:
    """BART's pre-norm layers with Whisper's bias-free key projections."""
    layers = nn.ModuleList([BartLayer(cfg, prefix, prefix == "decoder", pre_norm=True)
                            for _ in range(cfg[f"{prefix}_layers"])])
    d = cfg["d_model"]
    for layer in layers:
        for attention in (layer.self_attn, getattr(layer, "encoder_attn", None)):
            if attention is not None:
                attention.k_proj = nn.Linear(d, d, bias=False)
    return layers


class _Stack(nn.Module):
    _no_split_modules = ["BartLayer"]  # the repeated blocks: FSDP's default units
    _fsdp_nested_units = ["encoder_attn.k_proj", "encoder_attn.v_proj"]  # run by cross_kv, outside the blocks

    def __init__(self, cfg: dict, prefix: str):
        super().__init__()
        self.layers = _layers(cfg, prefix)
        self.layer_norm = nn.LayerNorm(cfg["d_model"])
        self.dropout = nn.Dropout(cfg.get("dropout", 0.0))
        self.layerdrop = config_probability(cfg, f"{prefix}_layerdrop", _WHO)

    def run(self, x: Tensor, mask, cross: Optional[list] = None, **kw) -> Tensor:
        for i, layer in enumerate(self.layers):
            if self.training and self.layerdrop and kw.get("cache") is None and generator().random() < self.layerdrop:
                continue  # LayerDrop in training, as transformers
            x = layer(x, mask, cross_kv=None if cross is None else cross[i], layer=i, **kw)
        return self.layer_norm(x)


class WhisperEncoder(_Stack):
    def __init__(self, cfg: dict):
        super().__init__(cfg, "encoder")
        d = cfg["d_model"]
        self.conv1 = nn.Conv1d(cfg["num_mel_bins"], d, 3, padding=1)
        self.conv2 = nn.Conv1d(d, d, 3, stride=2, padding=1)
        self.embed_positions = nn.Embedding(cfg["max_source_positions"], d)

    def forward(self, features: Tensor) -> Tensor:
        x = F.gelu(self.conv2(F.gelu(self.conv1(features)))).transpose(1, 2)
        return self.run(self.dropout(x + self.embed_positions.weight), None)


class WhisperDecoder(_Stack):
    def __init__(self, cfg: dict):
        super().__init__(cfg, "decoder")
        d = cfg["d_model"]
        self.embed_tokens = nn.Embedding(cfg["vocab_size"], d)
        self.embed_positions = nn.Embedding(cfg["max_target_positions"], d)


def _layer_with_probabilities(layer, x: Tensor, bias: Tensor, kv, cache, i: int, heads: List[int]):
    """A decoder layer's pre-norm forward in a graph (eval: no dropout), as ``BartLayer.forward``, that also returns
    the cross-attention probabilities of its ``heads`` (B, len(heads), T, encoder positions): softmax(q k^T /
    sqrt(head_dim)) of their queries, what transformers' eager attention returns as cross_attentions. Only those
    heads' scores are formed (a few of a large checkpoint's); the attention itself still runs on the fused kernel,
    so the logits are those of the graph without them."""
    x = x + layer.self_attn(layer.self_attn_layer_norm(x), bias, cache=cache, layer=i)
    h = layer.encoder_attn_layer_norm(x)
    ea = layer.encoder_attn
    q, k = split_heads(ea.q_proj(h), ea.heads), kv[0]
    q, k = (cat([t[:, j:j + 1] for j in heads], dim=1) for t in (q, k))
    probs = F.softmax(q @ k.transpose(-1, -2) * float(q.shape[-1] ** -0.5), dim=-1)
    x = x + ea(h, None, kv=kv)
    return x + layer.fc2(layer.act(layer.fc1(layer.final_layer_norm(x)))), probs


class WhisperForConditionalGeneration(BartStyleDecoder, EncoderDecoder, nn.Module):
    """``forward(input_features, decoder_input_ids=...)`` -> logits (B, T_dec, vocab); ``encode(input_features)``
    -> the encoder's states (B, max_source_positions, d_model); ``generate(input_features, language=, task=,
    return_timestamps=, return_segments=, attention_mask=)``."""

    architecture = "WhisperForConditionalGeneration"
    model_type = "whisper"

    def __init__(self, config: dict):
        super().__init__()
        self.config = dict(config)
        c = self.config
        if c["d_model"] % c["encoder_attention_heads"] or c["d_model"] % c["decoder_attention_heads"]:
            raise ValueError(f"{_WHO}: d_model {c['d_model']} must be divisible by the attention heads")
        self.encoder, self.decoder = WhisperEncoder(c), WhisperDecoder(c)
        self.embed_scale = float(np.sqrt(c["d_model"])) if c.get("scale_embedding", False) else 1.0
        self.tied = c.get("tie_word_embeddings", True) is not False
        if not self.tied:
            self.lm_head = nn.Linear(c["d_model"], c["vocab_size"], bias=False)  # transformers' proj_out
        self.max_positions = int(c["max_target_positions"])
        self.num_frames = 2 * int(c["max_source_positions"])  # the two convs halve the frames once

    def decoder_embedding(self):
        return self.decoder.embed_tokens

    encoder_embedding = decoder_embedding

    def _features(self, input_features) -> Tensor:
        x = input_features if isinstance(input_features, Tensor) else Tensor._wrap(np.asarray(input_features))
        want = (self.config["num_mel_bins"], self.num_frames)
        if x.ndim != 3 or tuple(x.shape[1:]) != want or x.dtype.kind != "f":
            raise ValueError(f"{_WHO}: input_features must be float (batch, {want[0]}, {want[1]}) log-mel features "
                             f"(one {want[1] // 100}-second window: WhisperFeatureExtractor pads to it), got "
                             f"{x.dtype} of shape {tuple(x.shape)}")
        return x if x.dtype == np.float32 else x.float()

    def encode(self, input_features, attention_mask=None) -> Tensor:
        """The encoder's states; ``attention_mask`` is accepted and ignored, as transformers' Whisper encoder
        ignores it (padding is silence, which the model was trained on)."""
        return self.encoder(self._features(input_features))

    def forward(self, input_features, attention_mask=None, decoder_input_ids=None) -> Tensor:
        if decoder_input_ids is None:
            raise ValueError(f"{_WHO}: decoder_input_ids is required (the decoder's tokens, starting with "
                             f"decoder_start_token_id {self.decoder_start_token_id}); generate() makes them")
        return self.decode(decoder_input_ids, self.encode(input_features))

    def decode(self, decoder_input_ids, encoder_states: Tensor, attention_mask=None,
               cross: Optional[List[Tuple[Tensor, Tensor]]] = None, cache: Optional[KVCache] = None,
               decoder_attention_mask=None) -> Tensor:
        """Logits of the decoder's tokens (appended to ``cache`` when given) after the encoder's states.
        ``decoder_attention_mask`` (B, past + T): 0 for left padding (the previous windows' tokens of different
        lengths, in long-form generate); padding keys are masked and a token's position counts the tokens before
        it only, as transformers' prepare_inputs_for_generation places them."""
        ids = ids_array(decoder_input_ids, _WHO, self.vocab_size)
        T = ids.shape[1]
        past = cache.length if cache is not None else 0
        if past + T > self.max_positions:
            raise ValueError(f"{_WHO}: decoder position {past + T - 1} exceeds max_target_positions "
                             f"{self.max_positions}")
        x, mask = self._decoder_input(ids, past, decoder_attention_mask)
        cross = self.cross_kv(encoder_states) if cross is None else cross
        dec = self.decoder
        x = dec.run(x, mask, causal=mask is None, cross=cross, cache=cache)
        if cache is not None:
            cache.advance(T)
        return F.linear(x, dec.embed_tokens.weight) if self.tied else self.lm_head(x)

    def _decoder_input(self, ids: np.ndarray, past: int, decoder_attention_mask):
        """The decoder's first layer input (token embeddings plus positions) and the additive mask (or None)."""
        T = ids.shape[1]
        padding = mask_array(decoder_attention_mask, _WHO, (ids.shape[0], past + T))
        mask = additive_mask(padding, past, T, causal=True)
        dec = self.decoder
        x = dec.embed_tokens(Tensor._wrap(ids))
        if self.embed_scale != 1.0:
            x = x * self.embed_scale
        if padding is None:
            places = dec.embed_positions.weight[past:past + T]
        else:
            index = np.where(padding, np.cumsum(padding, -1) - 1, 0)[:, past:].astype(np.int64)
            places = rows(dec.embed_positions.weight, Tensor._wrap(index))
        return dec.dropout(x + places), mask

    def cross_attention_weights(self, decoder_input_ids, cross: List[Tuple[Tensor, Tensor]], layers,
                                decoder_attention_mask=None) -> Dict[int, np.ndarray]:
        """Each of ``layers``' cross-attention probabilities (B, heads, T, encoder positions) for the decoder's
        tokens (B, T) in one pass without cache: what transformers' eager attention returns as cross_attentions
        (the decode path's fused attention never forms them). ``cross``: each layer's encoder keys and values
        (``cross_kv``). Token-level timestamps read them (whisper_alignment.py); the layers after the last one
        asked for are not run."""
        ids = ids_array(decoder_input_ids, _WHO, self.vocab_size)
        if ids.shape[1] > self.max_positions:
            raise ValueError(f"{_WHO}: decoder position {ids.shape[1] - 1} exceeds max_target_positions "
                             f"{self.max_positions}")
        x, mask = self._decoder_input(ids, 0, decoder_attention_mask)
        wanted = sorted({int(i) for i in layers})
        out = {}
        for i, layer in enumerate(self.decoder.layers[:wanted[-1] + 1] if wanted else []):
            if i in wanted:  # the layer's input to its cross attention (pre-norm), then its queries' softmax
                attn = layer.self_attn(layer.self_attn_layer_norm(x), mask, mask is None)
                ea = layer.encoder_attn  # its q_proj as a module: int8 or bfloat16 weights are its own to apply
                q = ea.q_proj(layer.encoder_attn_layer_norm(x + attn)).numpy().astype(np.float32)
                B, T, d = q.shape
                q = q.reshape(B, T, ea.heads, d // ea.heads).transpose(0, 2, 1, 3)
                scores = q @ np.swapaxes(cross[i][0].numpy(), -1, -2) * np.float32((d // ea.heads) ** -0.5)
                scores = np.exp(scores - scores.max(-1, keepdims=True))
                out[i] = (scores / scores.sum(-1, keepdims=True)).astype(np.float32)
            x = layer(x, mask, causal=mask is None, cross_kv=cross[i], layer=i)
        return out

    # --- the exported graphs (export_seq2seq traces them; onnx_whisper decodes on them) ---
    def encode_graph(self, input_features: Tensor) -> Tensor:
        """encode on a Tensor, every step a Tensor op."""
        return self.encoder(input_features)

    #: the decoder graph takes ``decoder_attention_mask`` (export_seq2seq): left-padded prompts decode on it
    graph_decoder_mask = True

    def decode_graph(self, input_ids: Tensor, attention_mask, cross, cache, logits_to_keep: int = 0,
                     decoder_attention_mask: Optional[Tensor] = None, alignment_heads=None):
        """decode on Tensor inputs with ``cross`` (each layer's encoder keys and values) and ``cache`` (a
        PastKeyValues of the decoder's own), every step a Tensor op; ``attention_mask`` is None (no encoder mask).
        ``decoder_attention_mask`` (B, past + T) int, 0 at left padding: positions and the self-attention bias as
        ``decode`` computes them from it (a padding place at position 0, its key masked). ``alignment_heads``
        ((layer, head) pairs): also return those heads' cross-attention probabilities (B, pairs, T, encoder
        positions), in the pairs' order: (logits, probabilities)."""
        keys, queries = decoder_places(input_ids, cache)
        if decoder_attention_mask is None:
            positions, bias = queries, causal_bias(keys, queries)
        else:
            mask = decoder_attention_mask.float()
            positions = ((mask.cumsum(-1) - 1) * mask)[:, cache.length:]
            allowed = (keys.unsqueeze(1) <= queries.unsqueeze(2)).float() * mask.unsqueeze(1)
            bias = ((allowed - 1) * FLOAT32_MAX).unsqueeze(1)
        dec = self.decoder
        x = dec.embed_tokens(input_ids)
        if self.embed_scale != 1.0:
            x = x * self.embed_scale
        x = x + rows(dec.embed_positions.weight, positions.long())
        if alignment_heads is None:
            x = dec.run(x, bias, cross=cross, cache=cache)
        else:
            wanted = {}  # layer -> its heads asked for, in the pairs' order
            for layer, head in alignment_heads:
                wanted.setdefault(layer, []).append(head)
            probs = {}
            for i, layer in enumerate(dec.layers):
                if i in wanted:
                    x, p = _layer_with_probabilities(layer, x, bias, cross[i], cache, i, wanted[i])
                    probs.update({(i, head): p[:, j:j + 1] for j, head in enumerate(wanted[i])})
                else:
                    x = layer(x, bias, cross_kv=cross[i], cache=cache, layer=i)
            x = dec.layer_norm(x)
        if logits_to_keep:
            x = x[:, -logits_to_keep:]
        logits = F.linear(x, dec.embed_tokens.weight) if self.tied else self.lm_head(x)
        if alignment_heads is None:
            return logits
        return logits, cat([probs[pair] for pair in alignment_heads], dim=1)

    def graph_alignment_heads(self) -> List[Tuple[int, int]]:
        """The (layer, head) pairs of generation_config.json's ``alignment_heads`` (checked; ValueError naming
        them when missing) whose cross-attention an export with ``cross_attentions=True`` outputs."""
        from .logits_processors import generation_source
        from .whisper_alignment import alignment_settings
        return alignment_settings(self, dict(generation_source(self)))[0]

    def graph_encoder_inputs(self, rng: np.random.Generator, batch: int):
        """The encoder graph's example, names, dynamic axes (the batch: the frames are the window's) and the
        batch sizes to verify at."""
        features = rng.standard_normal((batch, self.config["num_mel_bins"], self.num_frames)).astype(np.float32)
        return [features], ["input_features"], {"input_features": {0: "batch"}}, [{"batch": 1}, {"batch": 3}]

    def graph_metadata(self) -> Dict[str, str]:
        """The settings ``generate_onnx_whisper`` reads from the decoder graph (onnx_whisper.py)."""
        from .onnx_whisper import settings_metadata
        return settings_metadata(self)

    def generate(self, input_features, **kwargs):
        """Token ids of each input's transcription (or translation), (B, n); with ``return_segments=True`` a dict
        of them and each input's segments {start, end (seconds), tokens}; with ``return_token_timestamps=True`` each
        token's time too (``token_timestamps``): ``whisper_generate.generate``."""
        from .whisper_generate import generate
        return generate(self, input_features, **kwargs)

    # --- checkpoint names: transformers' "model." prefix; its head proj_out (our lm_head), not stored when tied ---
    def from_hf(self, tensors: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        out = {}
        for k, v in tensors.items():
            if k == "proj_out.weight":
                if not self.tied:
                    out["lm_head.weight"] = v
                continue
            out[k[len("model."):] if k.startswith("model.") else k] = v
        return out

    def to_hf(self) -> Dict[str, np.ndarray]:
        return {("proj_out.weight" if k == "lm_head.weight" else "model." + k): v.numpy()
                for k, v in self.state_dict().items()}
