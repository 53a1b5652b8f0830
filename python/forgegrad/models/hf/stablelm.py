"""StableLM (transformers' ``StableLmForCausalLM``: StableLM-3B-4E1T, StableLM 2 1.6B / 12B, Zephyr) on
LlamaForCausalLM's skeleton.

What differs from Llama: LayerNorms with biases (``layer_norm_eps``) before attention, before the MLP and at the end;
a rotary embedding over only the first ``partial_rotary_factor`` (default 0.25) of each head's dimensions; biases on
the query, key and value projections where ``use_qkv_bias`` says (StableLM 2); with ``qk_layernorm`` (StableLM 2
12B) a LayerNorm without bias over each head's query and key before the rotation, with weights of its own per head
(the checkpoint's ``q_layernorm.norms.<h>.weight``, stacked here into one (heads, head_dim) weight and split again
on save); and with ``use_parallel_residual`` attention and the MLP both read the first norm's output,
x + attn(ln(x)) + mlp(ln(x)), with no second norm. The MLP is Llama's gated one. Forward, the KV cache, generate, beam
search and ``export_with_past`` run through LlamaForCausalLM's code, the lean decode step and prefill
(models/hf/_decode.py) through Llama's with these norms and residuals, so generate and the batched and paged serving
engines take it."""
from __future__ import annotations

import re
from typing import Dict

import numpy as np

from ... import nn
from ...nn import functional as F
from ...tensor import Tensor
from ._layers import config_probability
from .llama import LlamaAttention, LlamaForCausalLM, LlamaMLP

__all__ = ["StableLmForCausalLM"]

_WHO = "StableLmForCausalLM"


class HeadwiseLayerNorm(nn.Module):
    """A LayerNorm without bias over the last dimension of (B, heads, T, D), with a weight of its own for each head
    (transformers' ``StableLmLayerNormPerHead``): one (heads, D) parameter."""

    def __init__(self, heads: int, head_dim: int, eps: float):
        super().__init__()
        self.heads, self.head_dim, self.eps = heads, head_dim, float(eps)
        self.weight = nn.Parameter(np.ones((heads, head_dim), np.float32))

    def forward(self, x: Tensor) -> Tensor:
        y = F.layer_norm(x, (self.head_dim,), None, None, self.eps)
        return y * self.weight.reshape(1, self.heads, 1, self.head_dim)

    def arrays(self, x: np.ndarray) -> np.ndarray:
        """The lean decode step's norm of rows x (rows, heads * D), on the LayerNorm kernel."""
        from ._decode import _layer_norm
        rows, D = x.shape[0], self.head_dim
        ones, zeros = np.ones(D, np.float32), np.zeros(D, np.float32)
        y = _layer_norm(x.reshape(rows * self.heads, D), ones, zeros, self.eps).reshape(rows, self.heads, D)
        return (y * self.weight.numpy()).reshape(rows, -1)


class StableLmAttention(LlamaAttention):
    """Llama's projections (query/key/value biases where use_qkv_bias says, none on the output) with StableLM's
    per-head query/key LayerNorms where qk_layernorm says."""

    def __init__(self, cfg: dict):
        super().__init__(cfg, qkv_bias=bool(cfg.get("use_qkv_bias", False)), o_bias=False, qk_norm=False)
        if cfg.get("qk_layernorm", False):
            D, eps = cfg["hidden_size"] // self.n_head, cfg.get("layer_norm_eps", 1e-5)
            self.q_norm = HeadwiseLayerNorm(self.n_head, D, eps)
            self.k_norm = HeadwiseLayerNorm(self.n_kv, D, eps)
            self.qk_norm = True


class StableLmDecoderLayer(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        E, eps = cfg["hidden_size"], cfg.get("layer_norm_eps", 1e-5)
        self.parallel = bool(cfg.get("use_parallel_residual", False))
        self.residual_first = True  # the lean step's order of the parallel sum: x + attention + MLP
        self.hidden_dropout = config_probability(cfg, "hidden_dropout", _WHO)
        self.input_layernorm = nn.LayerNorm(E, eps=eps)
        self.self_attn = StableLmAttention(cfg)
        self.mlp = LlamaMLP(cfg)
        if not self.parallel:
            self.post_attention_layernorm = nn.LayerNorm(E, eps=eps)

    def _drop(self, x):
        return F.dropout(x, self.hidden_dropout, training=True) if self.training and self.hidden_dropout else x

    def forward(self, x, cos, sin, mask, cache, layer):
        h = self.input_layernorm(x)
        a = self.self_attn(h, cos, sin, mask, cache, layer)
        if self.parallel:  # both blocks read the first norm's output
            return x + a + self._drop(self.mlp(h))
        x = x + a
        return x + self._drop(self.mlp(self.post_attention_layernorm(x)))


class StableLmModel(nn.Module):
    _no_split_modules = ["StableLmDecoderLayer"]  # the repeated blocks: FSDP's default units

    def __init__(self, cfg: dict):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg["vocab_size"], cfg["hidden_size"])
        self.layers = nn.ModuleList([StableLmDecoderLayer(cfg) for _ in range(cfg["num_hidden_layers"])])
        self.norm = nn.LayerNorm(cfg["hidden_size"], eps=cfg.get("layer_norm_eps", 1e-5))


_PER_HEAD = re.compile(r"(.*\.self_attn\.)([qk])_layernorm\.norms\.(\d+)\.weight$")


class StableLmForCausalLM(LlamaForCausalLM):
    """StableLM with its LM head; ``forward`` as LlamaForCausalLM's."""

    architecture = "StableLmForCausalLM"
    model_type = "stablelm"

    def __init__(self, config: dict):
        config = dict(config)
        if config.get("head_dim") not in (None, config["hidden_size"] // config["num_attention_heads"]):
            raise ValueError(f"{_WHO}: head_dim {config['head_dim']!r} is not supported: StableLM's heads are "
                             "hidden_size / num_attention_heads wide")
        params = config.get("rope_parameters") or config.get("rope_scaling") or {}
        if "partial_rotary_factor" not in params:  # transformers' StableLmConfig defaults
            config.setdefault("partial_rotary_factor", 0.25)
        config.setdefault("max_position_embeddings", 4096)
        super().__init__(config)

    def _build_model(self, cfg: dict) -> nn.Module:
        return StableLmModel(cfg)

    def from_hf(self, tensors: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """The per-head query/key norm weights stacked into one (heads, head_dim) weight per projection."""
        out, heads = {}, {}
        for key, value in super().from_hf(tensors).items():
            m = _PER_HEAD.match(key)
            if m is None:
                out[key] = value
            else:
                heads.setdefault(f"{m.group(1)}{m.group(2)}_norm.weight", {})[int(m.group(3))] = value
        for key, parts in heads.items():
            if sorted(parts) != list(range(len(parts))) or len({p.shape for p in parts.values()}) != 1:
                raise ValueError(f"{_WHO}: the per-head norm weights of {key[:-len('_norm.weight')]}_layernorm must "
                                 f"be heads 0 .. n-1 of one shape, got heads {sorted(parts)}")
            out[key] = np.stack([parts[h] for h in range(len(parts))])
        return out

    def to_hf(self) -> Dict[str, np.ndarray]:
        out = {}
        for key, value in super().to_hf().items():
            if key.endswith(("self_attn.q_norm.weight", "self_attn.k_norm.weight")):
                base = key[:-len("_norm.weight")] + "_layernorm.norms."
                out.update({f"{base}{h}.weight": np.ascontiguousarray(w) for h, w in enumerate(value)})
            else:
                out[key] = value
        return out


LEAN_TYPES = (StableLmForCausalLM, StableLmModel, StableLmDecoderLayer, StableLmAttention, HeadwiseLayerNorm)
