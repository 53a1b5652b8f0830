"""Gemma 1 and 2 (transformers' ``GemmaForCausalLM``, ``Gemma2ForCausalLM``), and Gemma 3's text model.

Gemma 2: Llama's skeleton with a norm after attention and around
the MLP, embeddings scaled by sqrt(hidden_size), attention scores and final logits soft-capped
(cap * tanh(x / cap)), a GELU (tanh) gated MLP, the query scaled by query_pre_attn_scalar^-1/2, and
sliding-window attention on the layers ``layer_types`` marks (every other one).

Gemma's RMSNorm multiplies by (1 + weight): the stored weights get 1 added on load (and taken off on
save), so forgegrad's RMSNorm computes the same product. Soft-capped scores run on the fused attention
kernel, forward and backward (``F.scaled_dot_product_attention(..., softcap=)``: training, masked and
padded batches, the prompt); only on a device whose attention has no cap (cuda) are they composed from
batched GEMMs, tanh and softmax. generate's decode step caps the scores it computes over the cache
(models/hf/_decode.py)."""
from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np

from ... import devices, nn
from ...nn import functional as F
from ...tensor import Tensor
from ._layers import RotaryEmbedding, activation, attend, on_device
from ._rope import rope_from_config
from .llama import LlamaAttention, LlamaForCausalLM, LlamaMLP, LlamaModel, _window

__all__ = ["GemmaForCausalLM", "Gemma2ForCausalLM", "Gemma3ForCausalLM"]

_NEG = float(np.finfo(np.float32).min)


def _cap(value, name: str) -> float:
    """A config's soft cap as a float: a finite number > 0 (transformers divides by it)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < float(value) < float("inf"):
        raise ValueError(f"Gemma: config {name} must be a finite number > 0 or null, got {value!r}")
    return float(value)


def attend_softcapped(q: Tensor, k: Tensor, v: Tensor, mask, scale: float,
                      cap: Optional[float], dropout_p: float = 0.0) -> Tensor:
    """softmax(cap * tanh(q k^T * scale / cap) + mask) v, causal when ``mask`` is None (transformers'
    eager attention: each key/value head serves H / Hkv query heads). On the fused kernel (forward and
    backward, any mask additive_mask makes) but on devices whose attention takes no cap (cuda), where
    :func:`attend_softcapped_composed` runs."""
    if cap is None or q.device.type in ("cpu", "meta"):
        return attend(q, k, v, mask, causal=True, scale=scale, softcap=cap, dropout_p=dropout_p)
    return attend_softcapped_composed(q, k, v, mask, scale, cap, dropout_p)


def attend_softcapped_composed(q: Tensor, k: Tensor, v: Tensor, mask, scale: float, cap: float,
                               dropout_p: float = 0.0) -> Tensor:
    """attend_softcapped as Tensor ops: batched GEMMs, tanh, the mask and softmax (the (B, H, t, L) scores
    stored, for backward as well)."""
    B, H, t, D = q.shape
    Hkv, L = k.shape[1], k.shape[2]
    if H != Hkv:  # repeat_kv: query head h reads key/value head h // (H / Hkv)
        k = k.unsqueeze(2).expand(B, Hkv, H // Hkv, L, D).reshape(B, H, L, D)
        v = v.unsqueeze(2).expand(B, Hkv, H // Hkv, L, D).reshape(B, H, L, D)
    scores = (q @ k.transpose(2, 3)) * scale
    scores = F.tanh(scores / cap) * cap  # divided by the cap, as transformers (not times 1 / cap)
    if mask is None and t > 1:  # plain causal from position 0
        mask = np.triu(np.full((t, L), _NEG, np.float32), 1 + L - t)[None, None]
    if isinstance(mask, Tensor):  # an exported graph's attention bias
        scores = scores + mask
    elif mask is not None:
        scores = scores + on_device(np.asarray(mask, dtype=np.float32), devices.device_of(scores._data))
    weights = F.softmax(scores, dim=-1)
    return (F.dropout(weights, dropout_p, training=True) if dropout_p else weights) @ v


class Gemma2Attention(LlamaAttention):
    """Llama's attention (Gemma 3: with its per-head query/key norms) with the query scaled by
    query_pre_attn_scalar^-1/2 and the scores soft-capped."""

    def __init__(self, cfg: dict, qk_norm: bool = False):
        bias = bool(cfg.get("attention_bias", False))
        super().__init__(cfg, qkv_bias=bias, o_bias=bias, qk_norm=qk_norm)
        D = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
        self.scale = float(cfg.get("query_pre_attn_scalar") or D) ** -0.5
        cap = cfg.get("attn_logit_softcapping")
        self.softcap = None if cap is None else _cap(cap, "attn_logit_softcapping")

    def _attend(self, q, k, v, mask):
        return attend_softcapped(q, k, v, mask, self.scale, self.softcap, self.dropout_p if self.training else 0.0)


class Gemma2DecoderLayer(nn.Module):
    def __init__(self, cfg: dict, qk_norm: bool = False):
        super().__init__()
        E, eps = cfg["hidden_size"], cfg.get("rms_norm_eps", 1e-6)
        self.input_layernorm = nn.RMSNorm(E, eps=eps)
        self.self_attn = Gemma2Attention(cfg, qk_norm)
        self.post_attention_layernorm = nn.RMSNorm(E, eps=eps)
        self.pre_feedforward_layernorm = nn.RMSNorm(E, eps=eps)
        self.mlp = LlamaMLP({**cfg, "hidden_act": cfg.get("hidden_activation") or cfg.get("hidden_act")
                             or "gelu_pytorch_tanh"})
        self.post_feedforward_layernorm = nn.RMSNorm(E, eps=eps)

    def forward(self, x, cos, sin, mask, cache, layer):
        x = x + self.post_attention_layernorm(self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, layer))
        return x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x)))


class Gemma2Model(nn.Module):
    _no_split_modules = ["Gemma2DecoderLayer"]  # the repeated blocks: FSDP's default units

    def __init__(self, cfg: dict, qk_norm: bool = False):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg["vocab_size"], cfg["hidden_size"])
        self.layers = nn.ModuleList([Gemma2DecoderLayer(cfg, qk_norm) for _ in range(cfg["num_hidden_layers"])])
        self.norm = nn.RMSNorm(cfg["hidden_size"], eps=cfg.get("rms_norm_eps", 1e-6))


class Gemma2ForCausalLM(LlamaForCausalLM):
    """Gemma 2 with its (tied) LM head; ``forward`` as LlamaForCausalLM's."""

    architecture = "Gemma2ForCausalLM"
    model_type = "gemma2"

    def __init__(self, config: dict):
        config = dict(config)
        config.setdefault("tie_word_embeddings", True)
        activation(config.get("hidden_activation") or "gelu_pytorch_tanh", self.architecture)
        super().__init__(config)
        cap = self.config.get("final_logit_softcapping")
        self.final_softcap = None if cap is None else _cap(cap, "final_logit_softcapping")
        # transformers: the embedding times sqrt(hidden_size) in the weights' dtype
        self.embed_scale = float(np.float32(self.config["hidden_size"] ** 0.5))

    def _build_model(self, cfg: dict) -> nn.Module:
        return Gemma2Model(cfg)

    def _sliding_windows(self, cfg: dict) -> List[Optional[int]]:
        n = cfg["num_hidden_layers"]
        kinds = cfg.get("layer_types") or ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(n)]
        if not isinstance(kinds, list) or len(kinds) != n or not set(kinds) <= {"full_attention", "sliding_attention"}:
            raise ValueError(f"{self.architecture}: layer_types must list 'full_attention' or 'sliding_attention' "
                             f"for each of the {n} layers, got {kinds!r}")
        window = _window(cfg, self.architecture) if "sliding_attention" in kinds else None
        return [window if k == "sliding_attention" else None for k in kinds]

    def _embed(self, ids) -> Tensor:
        return self.model.embed_tokens(ids if isinstance(ids, Tensor) else Tensor._wrap(ids)) * self.embed_scale

    def _finish(self, logits: Tensor) -> Tensor:
        if self.final_softcap is None:
            return logits
        return F.tanh(logits / self.final_softcap) * self.final_softcap

    @staticmethod
    def _norm_key(key: str) -> bool:
        """The (1 + w) norms: every layer's, the final one, Gemma 3's per-head query/key norms."""
        return key.endswith(("layernorm.weight", "q_norm.weight", "k_norm.weight")) or key == "model.norm.weight"

    def from_hf(self, tensors: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        out = super().from_hf(tensors)
        return {k: (np.asarray(v, np.float32) + np.float32(1)) if self._norm_key(k) else v for k, v in out.items()}

    def to_hf(self) -> Dict[str, np.ndarray]:
        return {k: (v - np.float32(1)) if self._norm_key(k) else v for k, v in super().to_hf().items()}


class Gemma3ForCausalLM(Gemma2ForCausalLM):
    """Gemma 3 (text; transformers' ``Gemma3ForCausalLM``, model_type ``gemma3_text``): Gemma 2's layers with
    a (1 + w) RMSNorm over each head's query and key, no soft caps by default, five sliding-window layers to
    one global, and a rotary embedding per kind of layer (``rope_parameters`` per layer type: the local
    layers' base 10,000, the global ones' 1,000,000 with their own scaling)."""

    architecture = "Gemma3ForCausalLM"
    model_type = "gemma3_text"

    def __init__(self, config: dict):
        super().__init__(config)
        params = self.config.get("rope_parameters") or {}
        if "full_attention" in params or "sliding_attention" in params:
            full, local = params.get("full_attention") or {}, params.get("sliding_attention") or {}
        else:  # older configs: rope_theta / rope_scaling for the global layers, rope_local_base_freq for the local
            full = dict(self.config.get("rope_scaling") or {}, rope_theta=self.config.get("rope_theta", 1e6))
            local = {"rope_type": "default", "rope_theta": self.config.get("rope_local_base_freq", 10000.0)}
        c = {k: v for k, v in self.config.items() if k not in ("rope_parameters", "rope_scaling", "rope_theta")}
        self.rotary = rope_from_config({**c, "rope_parameters": full}, self.head_dim, self.max_positions)
        self.rotary_local = rope_from_config({**c, "rope_parameters": local}, self.head_dim, self.max_positions)

    def layer_rotary(self, i: int) -> RotaryEmbedding:
        return self.rotary_local if self.sliding_windows[i] is not None else self.rotary

    def _build_model(self, cfg: dict) -> nn.Module:
        return Gemma2Model(cfg, qk_norm=True)

    def _sliding_windows(self, cfg: dict) -> List[Optional[int]]:
        if cfg.get("layer_types") is None:  # transformers' default pattern: every sixth layer is global
            pattern = cfg.get("sliding_window_pattern", 6)
            cfg = {**cfg, "layer_types": ["full_attention" if (i + 1) % pattern == 0 else "sliding_attention"
                                          for i in range(cfg["num_hidden_layers"])]}
        return super()._sliding_windows(cfg)


class GemmaForCausalLM(Gemma2ForCausalLM):
    """Gemma (1; transformers' ``GemmaForCausalLM``): Llama's layers (no extra norms, no caps, no windows) with
    Gemma 2's (1 + w) norms, embeddings scaled by sqrt(hidden_size), a GELU (tanh) gated MLP, ``head_dim``
    apart from hidden_size / heads and a tied LM head. ``hidden_act: "gelu"`` (the first releases' configs)
    means the tanh approximation, as transformers reads it."""

    architecture = "GemmaForCausalLM"
    model_type = "gemma"

    def __init__(self, config: dict):
        config = dict(config)
        act = config.get("hidden_act") or config.get("hidden_activation") or "gelu_pytorch_tanh"
        config["hidden_act"] = "gelu_pytorch_tanh" if act == "gelu" else act
        if config.get("use_bidirectional_attention"):
            raise ValueError(f"{self.architecture}: use_bidirectional_attention is not supported (causal only)")
        super().__init__(config)

    def _build_model(self, cfg: dict) -> nn.Module:
        return LlamaModel(cfg, **self._variant(cfg))

    def _sliding_windows(self, cfg: dict) -> List[Optional[int]]:
        return [None] * cfg["num_hidden_layers"]
