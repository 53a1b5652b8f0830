"""GPT-NeoX (transformers' ``GPTNeoXForCausalLM``: Pythia, GPT-NeoX-20B) on LlamaForCausalLM's skeleton.

What differs from Llama: LayerNorms with biases (``layer_norm_eps``); one fused ``query_key_value`` projection laid
out per head (head h's query, key and value are rows [3hD, 3hD + D), [3hD + D, 3hD + 2D), [3hD + 2D, 3(h + 1)D)),
with biases (``attention_bias``, default true) as on the ``dense`` output projection; a rotary embedding over only
the first ``partial_rotary_factor`` (``rotary_pct``, default 0.25) of each head's dimensions; a plain two-layer
GELU MLP with biases; with ``use_parallel_residual`` (default) attention and MLP both read the block's input,
x + attn(ln1(x)) + mlp(ln2(x)), else they run one after the other; and an untied LM head (``embed_out``; a
``lm_head.weight`` is read as well). Forward, the KV cache, generate, beam search and ``export_with_past`` run
through LlamaForCausalLM's code; the lean decode step and prefill (models/hf/_decode.py) have GPT-NeoX's layers,
so generate and the batched and paged serving engines take them."""
from __future__ import annotations

from typing import Dict, List

import numpy as np

from ... import nn
from ...nn import functional as F
from ._layers import RotaryEmbedding, activation, attend, config_probability, merge_heads
from .llama import LlamaForCausalLM

__all__ = ["GPTNeoXForCausalLM"]

_WHO = "GPTNeoXForCausalLM"


class GPTNeoXAttention(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        E, H = cfg["hidden_size"], cfg["num_attention_heads"]
        if E % H:
            raise ValueError(f"{_WHO}: hidden_size ({E}) must be a multiple of num_attention_heads ({H})")
        bias = bool(cfg.get("attention_bias", True))
        self.n_head = H
        self.dropout_p = config_probability(cfg, "attention_dropout", _WHO)
        self.query_key_value = nn.Linear(E, 3 * E, bias=bias)
        self.dense = nn.Linear(E, E, bias=bias)

    def forward(self, x, cos, sin, mask, cache, layer: int):
        B, T, E = x.shape
        H = self.n_head
        qkv = self.query_key_value(x).reshape(B, T, H, 3 * (E // H)).permute(0, 2, 1, 3)  # (B, H, T, 3D)
        D = E // H
        q, k, v = qkv[..., :D], qkv[..., D:2 * D], qkv[..., 2 * D:]
        q, k = RotaryEmbedding.apply(q, cos, sin), RotaryEmbedding.apply(k, cos, sin)
        if cache is not None:
            k, v = cache.update(layer, k, v)
        o = attend(q, k, v, mask, causal=True, dropout_p=self.dropout_p if self.training else 0.0)
        return self.dense(merge_heads(o))


class GPTNeoXMLP(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        E, inner = cfg["hidden_size"], cfg["intermediate_size"]
        self.dense_h_to_4h = nn.Linear(E, inner)
        self.dense_4h_to_h = nn.Linear(inner, E)
        self.act = activation(cfg.get("hidden_act", "gelu"), _WHO)

    def forward(self, x):
        return self.dense_4h_to_h(self.act(self.dense_h_to_4h(x)))


class GPTNeoXLayer(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        E, eps = cfg["hidden_size"], cfg.get("layer_norm_eps", 1e-5)
        self.parallel = bool(cfg.get("use_parallel_residual", True))
        self.hidden_dropout = config_probability(cfg, "hidden_dropout", _WHO)
        self.input_layernorm = nn.LayerNorm(E, eps=eps)
        self.post_attention_layernorm = nn.LayerNorm(E, eps=eps)
        self.self_attn = GPTNeoXAttention(cfg)
        self.mlp = GPTNeoXMLP(cfg)

    def _drop(self, x):
        return F.dropout(x, self.hidden_dropout, training=True) if self.training and self.hidden_dropout else x

    def forward(self, x, cos, sin, mask, cache, layer):
        a = self._drop(self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, layer))
        if self.parallel:  # both blocks read the layer's input
            return x + a + self._drop(self.mlp(self.post_attention_layernorm(x)))
        a = a + x
        return a + self._drop(self.mlp(self.post_attention_layernorm(a)))


class GPTNeoXModel(nn.Module):
    """LlamaModel's attribute names (``embed_tokens``, ``layers``, ``norm``) over GPT-NeoX's layers."""
    _no_split_modules = ["GPTNeoXLayer"]  # the repeated blocks: FSDP's default units

    def __init__(self, cfg: dict):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg["vocab_size"], cfg["hidden_size"])
        self.layers = nn.ModuleList([GPTNeoXLayer(cfg) for _ in range(cfg["num_hidden_layers"])])
        self.norm = nn.LayerNorm(cfg["hidden_size"], eps=cfg.get("layer_norm_eps", 1e-5))


# checkpoint name pieces -> this model's (applied in order, on the first match each)
_RENAMES = (("gpt_neox.embed_in.", "model.embed_tokens."), ("gpt_neox.final_layer_norm.", "model.norm."),
            ("gpt_neox.layers.", "model.layers."), ("embed_out.", "lm_head."))
# buffers older checkpoints saved with the weights (the causal mask, rotary frequencies): not parameters
_BUFFERS = ("attention.bias", "attention.masked_bias", "rotary_emb.inv_freq")


class GPTNeoXForCausalLM(LlamaForCausalLM):
    """GPT-NeoX / Pythia with its LM head; ``forward`` as LlamaForCausalLM's."""

    architecture = "GPTNeoXForCausalLM"
    model_type = "gpt_neox"

    def __init__(self, config: dict):
        config = dict(config)
        # older configs: rotary_pct, rotary_emb_base and rope_scaling (transformers 5 moves them into rope_parameters)
        params = dict(config.get("rope_parameters") or config.get("rope_scaling") or {})
        params.setdefault("rope_theta", config.get("rotary_emb_base", 10000.0))
        params.setdefault("partial_rotary_factor", config.get("rotary_pct", 0.25))
        params.setdefault("rope_type", params.get("type", "default"))
        config["rope_parameters"] = params
        config.setdefault("tie_word_embeddings", False)
        # no grouped-query attention: transformers ignores a num_key_value_heads key, and so do the cache and lean step
        config["num_key_value_heads"] = config["num_attention_heads"]
        super().__init__(config)

    def _build_model(self, cfg: dict) -> nn.Module:
        return GPTNeoXModel(cfg)

    def _sliding_windows(self, cfg: dict) -> List[None]:
        return [None] * cfg["num_hidden_layers"]

    def from_hf(self, tensors: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        out = {}
        for key, value in tensors.items():
            if key.endswith(_BUFFERS):
                continue
            for old, new in _RENAMES:
                if key.startswith(old):
                    key = new + key[len(old):]
                    break
            out[key.replace(".attention.", ".self_attn.")] = value
        return out

    def to_hf(self) -> Dict[str, np.ndarray]:
        """The checkpoint's names, as transformers writes them (``gpt_neox.*``, ``embed_out.weight``)."""
        out = {}
        for key, t in self.state_dict().items():
            for old, new in _RENAMES:
                if key.startswith(new):
                    key = old + key[len(new):]
                    break
            out[key.replace(".self_attn.", ".attention.")] = t.numpy()
        return out
