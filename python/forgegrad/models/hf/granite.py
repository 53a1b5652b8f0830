"""IBM Granite (transformers' ``GraniteForCausalLM``: Granite 3.x dense) on LlamaForCausalLM's skeleton.

What differs from Llama: four scalars of the config. The embeddings are multiplied by ``embedding_multiplier``;
the attention scores are scaled by ``attention_multiplier`` (in place of 1 / sqrt(head_dim)); each block's output
(attention, MLP) by ``residual_multiplier`` before it is added to the residual; and the logits are divided by
``logits_scaling``. The parameter names are Llama's, so the checkpoint loads and saves without renaming. Forward,
the KV cache, generate, beam search and ``export_with_past`` run through LlamaForCausalLM's code, the lean decode
step and prefill (models/hf/_decode.py) through Llama's with these scalars, so generate and the batched and paged
serving engines take it."""
from __future__ import annotations

import math

from ... import nn
from ...tensor import Tensor
from ._layers import attend
from .llama import LlamaAttention, LlamaDecoderLayer, LlamaForCausalLM

__all__ = ["GraniteForCausalLM"]

_WHO = "GraniteForCausalLM"


def multiplier(cfg: dict, key: str, who: str) -> float:
    """A config's scalar ``key`` (1.0 when absent or null) as a float32-representable finite number, nonzero."""
    value = cfg.get(key)
    value = 1.0 if value is None else value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value == 0:
        raise ValueError(f"{who}: config {key} must be a finite nonzero number, got {value!r}")
    return float(value)


class GraniteAttention(LlamaAttention):
    """Llama's attention with the scores scaled by ``attention_multiplier``."""

    def __init__(self, cfg: dict, **variant):
        super().__init__(cfg, **variant)
        self.scale = multiplier(cfg, "attention_multiplier", _WHO)

    def _attend(self, q, k, v, mask):
        return attend(q, k, v, mask, causal=True, scale=self.scale, dropout_p=self.dropout_p if self.training else 0.0)


class GraniteDecoderLayer(LlamaDecoderLayer):
    """Llama's layer with each block's output times ``residual_multiplier``."""

    def __init__(self, cfg: dict, **variant):
        super().__init__(cfg, **variant)
        self.self_attn = GraniteAttention(cfg, **variant)
        self.residual_multiplier = multiplier(cfg, "residual_multiplier", _WHO)

    def forward(self, x, cos, sin, mask, cache, layer):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, layer) * self.residual_multiplier
        return x + self.mlp(self.post_attention_layernorm(x)) * self.residual_multiplier


class GraniteModel(nn.Module):
    _no_split_modules = ["GraniteDecoderLayer"]  # the repeated blocks: FSDP's default units

    def __init__(self, cfg: dict, **variant):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg["vocab_size"], cfg["hidden_size"])
        self.layers = nn.ModuleList([GraniteDecoderLayer(cfg, **variant) for _ in range(cfg["num_hidden_layers"])])
        self.norm = nn.RMSNorm(cfg["hidden_size"], eps=cfg.get("rms_norm_eps", 1e-6))


class GraniteForCausalLM(LlamaForCausalLM):
    """Granite with its LM head; ``forward`` as LlamaForCausalLM's, with Granite's multipliers."""

    architecture = "GraniteForCausalLM"
    model_type = "granite"

    def __init__(self, config: dict):
        super().__init__(config)
        self.embed_scale = multiplier(self.config, "embedding_multiplier", _WHO)
        self.logits_scaling = multiplier(self.config, "logits_scaling", _WHO)

    def _build_model(self, cfg: dict) -> nn.Module:
        return GraniteModel(cfg, **self._variant(cfg))

    def _embed(self, ids) -> Tensor:
        return self.model.embed_tokens(ids if isinstance(ids, Tensor) else Tensor._wrap(ids)) * self.embed_scale

    def _finish(self, logits: Tensor) -> Tensor:
        return logits / self.logits_scaling if self.logits_scaling != 1.0 else logits


LEAN_TYPES = (GraniteForCausalLM, GraniteModel, GraniteDecoderLayer, GraniteAttention)
