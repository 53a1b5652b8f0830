"""GPT-2 (transformers' ``GPT2LMHeadModel``) on forgegrad layers.

Parameter names are transformers' own (``transformer.h.0.attn.c_attn.weight`` ...). transformers
stores GPT-2's projections as ``Conv1D`` weights of shape (in, out); they are held here as ``Linear``
weights (out, in), whose rows the batch-1 decode GEMV streams contiguously, and transposed back by
``save_pretrained``.
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np

from ... import nn
from ...nn import functional as F
from ...tensor import Tensor
from ._decode import LeanDecoder, lean_prefill
from ._layers import KVCache, activation, additive_mask, attend, ids_array, mask_array, merge_heads, split_heads
from ._layers import DeviceChecked, check_device_support, config_probability, host_array, make_cache, on_device

__all__ = ["GPT2LMHeadModel"]

_CONV1D = (".attn.c_attn.weight", ".attn.c_proj.weight", ".mlp.c_fc.weight", ".mlp.c_proj.weight")


class GPT2Attention(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        E = cfg["n_embd"]
        self.n_head = cfg["n_head"]
        self.c_attn = nn.Linear(E, 3 * E)
        self.c_proj = nn.Linear(E, E)
        self.scale_weights = bool(cfg.get("scale_attn_weights", True))
        self.dropout_p = config_probability(cfg, "attn_pdrop", "GPT2LMHeadModel", 0.1)  # on the weights, in training

    def forward(self, x, mask, cache: Optional[KVCache], layer: int):
        q, k, v = (split_heads(t, self.n_head) for t in _split3(self.c_attn(x)))
        if cache is not None:
            k, v = cache.update(layer, k, v)
        out = attend(q, k, v, mask, causal=True, scale=None if self.scale_weights else 1.0,
                     dropout_p=self.dropout_p if self.training else 0.0)
        return self.c_proj(merge_heads(out))


def _split3(qkv: Tensor):
    E = qkv.shape[-1] // 3
    return qkv[..., :E], qkv[..., E:2 * E], qkv[..., 2 * E:]


class GPT2MLP(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        E = cfg["n_embd"]
        inner = cfg.get("n_inner") or 4 * E
        self.c_fc = nn.Linear(E, inner)
        self.c_proj = nn.Linear(inner, E)
        self.act = activation(cfg.get("activation_function", "gelu_new"), "GPT2")

    def forward(self, x):
        return self.c_proj(self.act(self.c_fc(x)))


class GPT2Block(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        E, eps = cfg["n_embd"], cfg.get("layer_norm_epsilon", 1e-5)
        self.ln_1 = nn.LayerNorm(E, eps=eps)
        self.attn = GPT2Attention(cfg)
        self.ln_2 = nn.LayerNorm(E, eps=eps)
        self.mlp = GPT2MLP(cfg)

    def forward(self, x, mask, cache, layer):
        x = x + self.attn(self.ln_1(x), mask, cache, layer)
        return x + self.mlp(self.ln_2(x))


class GPT2Model(nn.Module):
    _no_split_modules = ["GPT2Block"]  # the repeated blocks: FSDP's default units

    def __init__(self, cfg: dict):
        super().__init__()
        E = cfg["n_embd"]
        self.wte = nn.Embedding(cfg["vocab_size"], E)
        self.wpe = nn.Embedding(cfg["n_positions"], E)
        self.h = nn.ModuleList([GPT2Block(cfg) for _ in range(cfg["n_layer"])])
        self.ln_f = nn.LayerNorm(E, eps=cfg.get("layer_norm_epsilon", 1e-5))


class GPT2LMHeadModel(DeviceChecked, nn.Module):
    """GPT-2 with its language-model head (weights tied to the token embedding unless the config
    says ``tie_word_embeddings: false``).

    ``forward(input_ids, attention_mask=None, position_ids=None, cache=None)`` returns the logits
    (B, T, vocab_size). ``attention_mask`` (B, past + T) marks padding with 0; positions default to
    past + 0..T-1 (``generate`` derives them from the mask for left-padded prompts).
    """

    architecture = "GPT2LMHeadModel"
    model_type = "gpt2"

    def __init__(self, config: dict):
        super().__init__()
        self.config = dict(config)
        self.transformer = GPT2Model(self.config)
        self.tied = bool(self.config.get("tie_word_embeddings", True))
        if not self.tied:
            self.lm_head = nn.Linear(self.config["n_embd"], self.config["vocab_size"], bias=False)

    @property
    def vocab_size(self) -> int:
        return self.config["vocab_size"]

    def tied_embedding(self):
        """The token embedding, which is the LM head while ``tied``."""
        return self.transformer.wte

    @property
    def max_positions(self) -> int:
        return self.config["n_positions"]

    def new_cache(self, batch: int, max_length: int) -> KVCache:
        c = self.config
        return make_cache(self, c["n_layer"], batch, c["n_head"], max_length, c["n_embd"] // c["n_head"])

    def forward(self, input_ids, attention_mask=None, position_ids=None, cache: Optional[KVCache] = None,
                logits_to_keep: int = 0):
        device = check_device_support(self, self.architecture)
        ids = ids_array(input_ids, "GPT2LMHeadModel", self.vocab_size)
        B, T = ids.shape
        past = cache.length if cache is not None else 0
        pad = mask_array(attention_mask, "GPT2LMHeadModel", (B, past + T))
        if position_ids is not None:
            position_ids = host_array(position_ids).astype(np.int64, copy=False)
        last = past + T - 1 if position_ids is None else (position_ids.max() if position_ids.size else 0)
        if last >= self.max_positions:
            raise ValueError(f"GPT2LMHeadModel: position {last} exceeds the model's n_positions {self.max_positions}")
        if past == 0 and device == "cpu" and lean_prefill(self, pad, position_ids, T):
            return Tensor._wrap(LeanDecoder(self).prefill(ids, cache, logits_to_keep))
        tr = self.transformer
        if position_ids is None:
            # positions past..past+T-1 as a slice of the table: an exported graph keeps T dynamic
            pos = tr.wpe.weight[past:past + T]
        else:
            pos = tr.wpe(on_device(position_ids, device))
        x = tr.wte(on_device(ids, device)) + pos
        mask = additive_mask(pad, past, T, causal=True)
        for i, block in enumerate(tr.h):
            x = block(x, mask, cache, i)
        x = tr.ln_f(x)
        if cache is not None:
            cache.advance(T)
        if logits_to_keep:  # the LM head on the last positions only (generate needs the last one)
            x = x[:, -logits_to_keep:]
        return F.linear(x, tr.wte.weight) if self.tied else self.lm_head(x)

    sliding_windows = ()  # every layer attends to every earlier key

    def forward_graph(self, input_ids: Tensor, position_ids: Tensor, biases: dict, cache,
                      logits_to_keep: int = 0) -> Tensor:
        """The logits from Tensor token ids and positions (B, T) and the additive attention bias
        ``biases[None]`` (B, 1, T, past + T), extending ``cache`` (a PastKeyValues): every step a Tensor op,
        so that ``export_with_past`` traces a graph whose masks and positions follow its inputs.
        ``logits_to_keep`` as forward's (1: the last position's only)."""
        tr = self.transformer
        x = tr.wte(input_ids) + tr.wpe(position_ids)
        for i, block in enumerate(tr.h):
            x = block(x, biases[None], cache, i)
        x = tr.ln_f(x)
        if logits_to_keep:
            x = x[:, -logits_to_keep:]
        return F.linear(x, tr.wte.weight) if self.tied else self.lm_head(x)

    @classmethod
    def from_zoo(cls, gpt) -> "GPT2LMHeadModel":
        """The zoo's ``gpt`` (forgegrad.models.GPT: GPT-2's architecture with exact GELU) as a
        GPT2LMHeadModel that shares its parameters, so ``generate`` and ``save_pretrained`` (a directory
        transformers loads) work on a GPT trained with forgegrad. A GPT built with ``bias=False`` gets
        zero biases (the same function)."""
        cfg = {"architectures": [cls.architecture], "model_type": "gpt2", "vocab_size": gpt.vocab_size,
               "n_positions": gpt.block_size, "n_embd": gpt.n_embd, "n_layer": gpt.n_layer, "n_head": gpt.n_head,
               "activation_function": "gelu", "layer_norm_epsilon": gpt.transformer.ln_f.eps,
               "tie_word_embeddings": True, "n_inner": 4 * gpt.n_embd}
        out = cls(cfg)
        ours = dict(out.named_modules())
        for name, module in gpt.named_modules():
            target = ours.get(name)
            if target is None or not isinstance(module, (nn.Linear, nn.LayerNorm, nn.Embedding)):
                continue
            for pname, param in module._parameters.items():
                if param is not None:
                    setattr(target, pname, param)  # the same Parameter: storage shared
                else:
                    getattr(target, pname).numpy()[...] = 0  # no bias: a zero bias
        return out.train(gpt.training)

    # --- checkpoint names ---
    @staticmethod
    def from_hf(tensors: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        out = {}
        for k, v in tensors.items():
            if k.endswith(".attn.bias") or k.endswith(".attn.masked_bias"):
                continue  # old transformers versions saved the causal-mask buffers; we build masks ourselves
            out[k] = np.ascontiguousarray(v.T) if k.endswith(_CONV1D) else v
        return out

    def to_hf(self) -> Dict[str, np.ndarray]:
        return {k: (np.ascontiguousarray(v.T) if k.endswith(_CONV1D) else v)
                for k, v in ((k, t.numpy()) for k, t in self.state_dict().items())}
