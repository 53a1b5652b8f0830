"""OLMo 2 (transformers' ``Olmo2ForCausalLM``) on LlamaForCausalLM's skeleton.

What differs from Llama: no norm before attention or the MLP; an RMSNorm on each block's output instead
(``post_attention_layernorm``, ``post_feedforward_layernorm``), added to the residual after it; and the query and
key normed by an RMSNorm over the whole projection (``q_norm`` of num_attention_heads * head_dim, ``k_norm`` of
num_key_value_heads * head_dim; Qwen3's are per head) before the split into heads and the rotation. The parameter
names are Llama's otherwise, so the checkpoint loads and saves without renaming. Forward, the KV cache, generate,
beam search and ``export_with_past`` run through LlamaForCausalLM's code, the lean decode step and prefill
(models/hf/_decode.py) through Llama's with these norms, so generate and the batched and paged serving engines take
it."""
from __future__ import annotations

from typing import Optional

from ... import nn
from ._layers import KVCache, RotaryEmbedding, merge_heads, split_heads
from .llama import LlamaAttention, LlamaForCausalLM, LlamaMLP

__all__ = ["Olmo2ForCausalLM"]


class Olmo2Attention(LlamaAttention):
    """Llama's projections, with q_norm / k_norm over the whole query / key projection."""

    def __init__(self, cfg: dict):
        bias = bool(cfg.get("attention_bias", False))
        super().__init__(cfg, qkv_bias=bias, o_bias=bias, qk_norm=False)
        eps, D = cfg.get("rms_norm_eps", 1e-5), cfg.get("head_dim") or cfg["hidden_size"] // self.n_head
        self.q_norm = nn.RMSNorm(self.n_head * D, eps=eps)
        self.k_norm = nn.RMSNorm(self.n_kv * D, eps=eps)

    def forward(self, x, cos, sin, mask, cache: Optional[KVCache], layer: int):
        q = split_heads(self.q_norm(self.q_proj(x)), self.n_head)
        k = split_heads(self.k_norm(self.k_proj(x)), self.n_kv)
        q, k = RotaryEmbedding.apply(q, cos, sin), RotaryEmbedding.apply(k, cos, sin)
        v = split_heads(self.v_proj(x), self.n_kv)
        if cache is not None:
            k, v = cache.update(layer, k, v)
        return self.o_proj(merge_heads(self._attend(q, k, v, mask)))


class Olmo2DecoderLayer(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        E, eps = cfg["hidden_size"], cfg.get("rms_norm_eps", 1e-5)
        self.self_attn = Olmo2Attention(cfg)
        self.mlp = LlamaMLP(cfg)
        self.post_attention_layernorm = nn.RMSNorm(E, eps=eps)
        self.post_feedforward_layernorm = nn.RMSNorm(E, eps=eps)

    def forward(self, x, cos, sin, mask, cache, layer):
        x = x + self.post_attention_layernorm(self.self_attn(x, cos, sin, mask, cache, layer))
        return x + self.post_feedforward_layernorm(self.mlp(x))


class Olmo2Model(nn.Module):
    _no_split_modules = ["Olmo2DecoderLayer"]  # the repeated blocks: FSDP's default units

    def __init__(self, cfg: dict):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg["vocab_size"], cfg["hidden_size"])
        self.layers = nn.ModuleList([Olmo2DecoderLayer(cfg) for _ in range(cfg["num_hidden_layers"])])
        self.norm = nn.RMSNorm(cfg["hidden_size"], eps=cfg.get("rms_norm_eps", 1e-5))


class Olmo2ForCausalLM(LlamaForCausalLM):
    """OLMo 2 with its LM head; ``forward`` as LlamaForCausalLM's."""

    architecture = "Olmo2ForCausalLM"
    model_type = "olmo2"

    def _build_model(self, cfg: dict) -> nn.Module:
        return Olmo2Model(cfg)
