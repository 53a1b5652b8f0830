"""StarCoder2 (transformers' ``Starcoder2ForCausalLM``) on LlamaForCausalLM's skeleton.

What differs from Llama: LayerNorms with biases (``norm_epsilon``) before attention, before the MLP and at the end;
biases on every projection where ``use_bias`` says (default true); a plain two-layer MLP (``c_fc``, the activation,
``c_proj``; GELU's tanh approximation by default) in place of the gated one; sliding-window attention in every layer
when the config gives ``sliding_window`` (as Mistral's); a tied LM head by default; and dropout on the embeddings
(``embedding_dropout``) and on each block's output (``residual_dropout``) in training. Grouped-query heads, the rope
and the parameter names are Llama's otherwise, so the checkpoint loads and saves without renaming. Forward, the KV
cache, generate, beam search and ``export_with_past`` run through LlamaForCausalLM's code, the lean decode step and
prefill (models/hf/_decode.py) through Llama's with these norms and this MLP, so generate and the batched and paged
serving engines take it."""
from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np

from ... import nn
from ...nn import functional as F
from ...tensor import Tensor
from ._layers import activation, config_probability
from .llama import LlamaAttention, LlamaForCausalLM, _window

__all__ = ["Starcoder2ForCausalLM"]

_WHO = "Starcoder2ForCausalLM"


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    return F.dropout(x, p, training=True) if training and p else x


class TwoLayerMLP(nn.Module):
    """Linear, activation, Linear, under the checkpoint's names ``names`` (StarCoder2: c_fc, c_proj; Phi: fc1, fc2),
    with the lean decode step's ``arrays`` (the activation fused into the first GEMM's epilogue)."""

    def __init__(self, cfg: dict, names: Tuple[str, str], bias: bool, act: str, who: str):
        super().__init__()
        E, inner = cfg["hidden_size"], cfg["intermediate_size"]
        self.names, self.act_name = names, act
        self.act = activation(act, who)
        setattr(self, names[0], nn.Linear(E, inner, bias=bias))
        setattr(self, names[1], nn.Linear(inner, E, bias=bias))

    def forward(self, x):
        return getattr(self, self.names[1])(self.act(getattr(self, self.names[0])(x)))

    def arrays(self, h: np.ndarray, linear) -> np.ndarray:
        from ._decode import _GELU_TANH
        return linear(getattr(self, self.names[1]), linear(getattr(self, self.names[0]), h, _GELU_TANH[self.act_name]))


class Starcoder2Attention(LlamaAttention):
    """Llama's attention with biases on every projection (``use_bias``) and dropout on its output in training."""

    def __init__(self, cfg: dict):
        bias = bool(cfg.get("use_bias", True))
        super().__init__(cfg, qkv_bias=bias, o_bias=bias, qk_norm=False)
        self.residual_dropout = config_probability(cfg, "residual_dropout", _WHO)

    def forward(self, x, cos, sin, mask, cache, layer: int):
        return dropout(super().forward(x, cos, sin, mask, cache, layer), self.residual_dropout, self.training)


class Starcoder2DecoderLayer(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        E, eps = cfg["hidden_size"], cfg.get("norm_epsilon", 1e-5)
        self.residual_dropout = config_probability(cfg, "residual_dropout", _WHO)
        self.input_layernorm = nn.LayerNorm(E, eps=eps)
        self.self_attn = Starcoder2Attention(cfg)
        self.post_attention_layernorm = nn.LayerNorm(E, eps=eps)
        self.mlp = TwoLayerMLP(cfg, ("c_fc", "c_proj"), bool(cfg.get("use_bias", True)),
                               cfg.get("hidden_act") or "gelu_pytorch_tanh", _WHO)

    def forward(self, x, cos, sin, mask, cache, layer):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, layer)
        return x + dropout(self.mlp(self.post_attention_layernorm(x)), self.residual_dropout, self.training)


class Starcoder2Model(nn.Module):
    _no_split_modules = ["Starcoder2DecoderLayer"]  # the repeated blocks: FSDP's default units

    def __init__(self, cfg: dict):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg["vocab_size"], cfg["hidden_size"])
        self.layers = nn.ModuleList([Starcoder2DecoderLayer(cfg) for _ in range(cfg["num_hidden_layers"])])
        self.norm = nn.LayerNorm(cfg["hidden_size"], eps=cfg.get("norm_epsilon", 1e-5))


class Starcoder2ForCausalLM(LlamaForCausalLM):
    """StarCoder2 with its (by default tied) LM head; ``forward`` as LlamaForCausalLM's."""

    architecture = "Starcoder2ForCausalLM"
    model_type = "starcoder2"

    def __init__(self, config: dict):
        config = dict(config)
        config.setdefault("tie_word_embeddings", True)  # transformers' Starcoder2Config defaults
        config.setdefault("max_position_embeddings", 4096)
        super().__init__(config)
        self.embedding_dropout = config_probability(self.config, "embedding_dropout", _WHO)

    def _build_model(self, cfg: dict) -> nn.Module:
        return Starcoder2Model(cfg)

    def _sliding_windows(self, cfg: dict) -> List[Optional[int]]:
        return [_window(cfg, self.architecture)] * cfg["num_hidden_layers"]

    def _embed(self, ids) -> Tensor:
        x = self.model.embed_tokens(ids if isinstance(ids, Tensor) else Tensor._wrap(ids))
        return dropout(x, self.embedding_dropout, self.training)


LEAN_TYPES = (Starcoder2ForCausalLM, Starcoder2Model, Starcoder2DecoderLayer, Starcoder2Attention, TwoLayerMLP)
