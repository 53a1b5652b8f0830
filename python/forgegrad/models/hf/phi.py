"""Phi (transformers' ``PhiForCausalLM``: phi-1, phi-1.5, phi-2) on LlamaForCausalLM's skeleton.

What differs from Llama: one LayerNorm with bias (``layer_norm_eps``) per layer, whose output both attention and the
MLP read, their outputs added to the residual together (the parallel block: attn(ln(x)) + mlp(ln(x)) + x); biases on
every projection; a rotary embedding over only the first ``partial_rotary_factor`` (default 0.5) of each head's
dimensions; a plain two-layer MLP (``fc1``, GELU's tanh approximation by default, ``fc2``); with ``qk_layernorm`` a
LayerNorm over each head's query and key (one weight and bias for all heads) before the rotation; a final LayerNorm
(``final_layernorm``) and an LM head with a bias, never tied; and dropout on the embeddings (``embd_pdrop``) and on
both blocks' outputs (``resid_pdrop``) in training. The checkpoint's ``dense``, ``q_layernorm``, ``k_layernorm`` and
``final_layernorm`` are Llama's ``o_proj``, ``q_norm``, ``k_norm`` and ``norm`` here (renamed on load and back on
save). Forward, the KV cache, generate, beam search and ``export_with_past`` run through LlamaForCausalLM's code, the
lean decode step and prefill (models/hf/_decode.py) through Llama's with the parallel block and this MLP, so generate
and the batched and paged serving engines take it. (Phi-3 is ``Phi3ForCausalLM``, models/hf/llama.py.)"""
from __future__ import annotations

from typing import Dict

import numpy as np

from ... import nn
from ...tensor import Tensor
from ._layers import config_probability
from .llama import LlamaAttention, LlamaForCausalLM
from .starcoder2 import TwoLayerMLP, dropout

__all__ = ["PhiForCausalLM"]

_WHO = "PhiForCausalLM"


class PhiAttention(LlamaAttention):
    """Llama's attention with biases on every projection and, where qk_layernorm says, a LayerNorm over each head's
    query and key."""

    def __init__(self, cfg: dict):
        super().__init__(cfg, qkv_bias=True, o_bias=True, qk_norm=False)
        if cfg.get("qk_layernorm", False):
            D, eps = cfg["hidden_size"] // cfg["num_attention_heads"], cfg.get("layer_norm_eps", 1e-5)
            self.q_norm = nn.LayerNorm(D, eps=eps)
            self.k_norm = nn.LayerNorm(D, eps=eps)
            self.qk_norm = True


class PhiDecoderLayer(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        self.parallel = True
        self.residual_first = False  # the lean step's order of the sum: attention + MLP + x, as transformers adds
        self.resid_pdrop = config_probability(cfg, "resid_pdrop", _WHO)
        self.self_attn = PhiAttention(cfg)
        self.mlp = TwoLayerMLP(cfg, ("fc1", "fc2"), True, cfg.get("hidden_act") or "gelu_new", _WHO)
        self.input_layernorm = nn.LayerNorm(cfg["hidden_size"], eps=cfg.get("layer_norm_eps", 1e-5))

    def forward(self, x, cos, sin, mask, cache, layer):
        h = self.input_layernorm(x)
        a = dropout(self.self_attn(h, cos, sin, mask, cache, layer), self.resid_pdrop, self.training)
        return a + dropout(self.mlp(h), self.resid_pdrop, self.training) + x


class PhiModel(nn.Module):
    _no_split_modules = ["PhiDecoderLayer"]  # the repeated blocks: FSDP's default units

    def __init__(self, cfg: dict):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg["vocab_size"], cfg["hidden_size"])
        self.layers = nn.ModuleList([PhiDecoderLayer(cfg) for _ in range(cfg["num_hidden_layers"])])
        self.norm = nn.LayerNorm(cfg["hidden_size"], eps=cfg.get("layer_norm_eps", 1e-5))


# checkpoint name pieces <-> this model's
_RENAMES = (("model.final_layernorm.", "model.norm."), (".self_attn.dense.", ".self_attn.o_proj."),
            (".self_attn.q_layernorm.", ".self_attn.q_norm."), (".self_attn.k_layernorm.", ".self_attn.k_norm."))


class PhiForCausalLM(LlamaForCausalLM):
    """Phi with its LM head (with a bias); ``forward`` as LlamaForCausalLM's."""

    architecture = "PhiForCausalLM"
    model_type = "phi"

    def __init__(self, config: dict):
        config = dict(config)
        if config.get("tie_word_embeddings"):
            raise ValueError(f"{_WHO}: tie_word_embeddings is not supported: Phi's LM head has a bias of its own "
                             "(transformers' phi checkpoints are untied)")
        params = config.get("rope_parameters") or config.get("rope_scaling") or {}
        if "partial_rotary_factor" not in params:  # transformers' Phi default
            config.setdefault("partial_rotary_factor", 0.5)
        super().__init__(config)
        self.lm_head = nn.Linear(self.config["hidden_size"], self.config["vocab_size"], bias=True)
        self.embd_pdrop = config_probability(self.config, "embd_pdrop", _WHO)

    def _build_model(self, cfg: dict) -> nn.Module:
        return PhiModel(cfg)

    def _embed(self, ids) -> Tensor:
        x = self.model.embed_tokens(ids if isinstance(ids, Tensor) else Tensor._wrap(ids))
        return dropout(x, self.embd_pdrop, self.training)

    def from_hf(self, tensors: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        out = {}
        for key, value in tensors.items():
            for old, new in _RENAMES:
                key = key.replace(old, new)
            out[key] = value
        return super().from_hf(out)

    def to_hf(self) -> Dict[str, np.ndarray]:
        out = {}
        for key, value in super().to_hf().items():
            for old, new in _RENAMES:
                key = key.replace(new, old)
            out[key] = value
        return out


LEAN_TYPES = (PhiForCausalLM, PhiModel, PhiDecoderLayer, PhiAttention)
