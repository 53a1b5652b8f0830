"""Llama-style decoders (transformers' ``LlamaForCausalLM``, ``MistralForCausalLM``, ``Qwen2ForCausalLM``,
``Qwen3ForCausalLM``, ``Phi3ForCausalLM``):
RMSNorm, rotary position embeddings, a SwiGLU MLP and grouped-query attention, with transformers' parameter
names. Mistral adds sliding-window attention (each query sees its last ``sliding_window`` keys); Qwen2 adds
biases to the query, key and value projections (and sliding windows on the layers its config names); Qwen3
an RMSNorm over each head's query and key before the rotation instead of those biases; Phi-3 stores the
query/key/value and the gate/up projections fused (split on load, fused again on save)."""
from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np

from ... import grad_mode, nn
from ...nn import functional as F
from ...tensor import Tensor
from ._decode import LeanDecoder, lean_prefill
from ._layers import (DeviceChecked, KVCache, LengthScaledRope, PackedBatch, PastKeyValues, RotaryEmbedding,
                      activation, additive_mask, attend, check_device_support, config_probability, host_array,
                      ids_array, make_cache, mask_array, merge_heads, on_device, split_heads)
from ._rope import rope_from_config
from ...utils.checkpoint import checkpoint as _checkpoint

__all__ = ["LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM", "Phi3ForCausalLM"]


class LlamaAttention(nn.Module):
    def __init__(self, cfg: dict, qkv_bias: bool, o_bias: bool, qk_norm: bool):
        super().__init__()
        E, H = cfg["hidden_size"], cfg["num_attention_heads"]
        Hkv = cfg.get("num_key_value_heads") or H
        D = cfg.get("head_dim") or E // H
        if H % Hkv:
            raise ValueError(f"LlamaForCausalLM: num_attention_heads ({H}) must be a multiple of "
                             f"num_key_value_heads ({Hkv})")
        self.n_head, self.n_kv = H, Hkv
        self.dropout_p = config_probability(cfg, "attention_dropout", "LlamaForCausalLM")  # weights, in training
        self.q_proj = nn.Linear(E, H * D, bias=qkv_bias)
        self.k_proj = nn.Linear(E, Hkv * D, bias=qkv_bias)
        self.v_proj = nn.Linear(E, Hkv * D, bias=qkv_bias)
        self.o_proj = nn.Linear(H * D, E, bias=o_bias)
        if qk_norm:  # Qwen3: RMSNorm over each head's query and key before the rotation
            eps = cfg.get("rms_norm_eps", 1e-6)
            self.q_norm = nn.RMSNorm(D, eps=eps)
            self.k_norm = nn.RMSNorm(D, eps=eps)
        self.qk_norm = qk_norm

    def forward(self, x, cos, sin, mask, cache: Optional[KVCache], layer: int):
        q, k = split_heads(self.q_proj(x), self.n_head), split_heads(self.k_proj(x), self.n_kv)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = RotaryEmbedding.apply(q, cos, sin), RotaryEmbedding.apply(k, cos, sin)
        v = split_heads(self.v_proj(x), self.n_kv)
        if cache is not None:
            k, v = cache.update(layer, k, v)
        return self.o_proj(merge_heads(self._attend(q, k, v, mask)))

    def _attend(self, q, k, v, mask):
        return attend(q, k, v, mask, causal=True, dropout_p=self.dropout_p if self.training else 0.0)


class LlamaMLP(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        E, inner = cfg["hidden_size"], cfg["intermediate_size"]
        bias = bool(cfg.get("mlp_bias", False))
        self.gate_proj = nn.Linear(E, inner, bias=bias)
        self.up_proj = nn.Linear(E, inner, bias=bias)
        self.down_proj = nn.Linear(inner, E, bias=bias)
        self.act = activation(cfg.get("hidden_act", "silu"), "LlamaForCausalLM")

    def forward(self, x):
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


class LlamaDecoderLayer(nn.Module):
    def __init__(self, cfg: dict, mlp: Optional[nn.Module] = None, **variant):
        """``mlp``: the layer's feed-forward block (a mixture of experts, say); default Llama's SwiGLU MLP."""
        super().__init__()
        E, eps = cfg["hidden_size"], cfg.get("rms_norm_eps", 1e-6)
        self.input_layernorm = nn.RMSNorm(E, eps=eps)
        self.self_attn = LlamaAttention(cfg, **variant)
        self.post_attention_layernorm = nn.RMSNorm(E, eps=eps)
        self.mlp = LlamaMLP(cfg) if mlp is None else mlp

    def forward(self, x, cos, sin, mask, cache, layer):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, layer)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaModel(nn.Module):
    _no_split_modules = ["LlamaDecoderLayer"]  # the repeated blocks: FSDP's default units

    def __init__(self, cfg: dict, mlps: Optional[List[Optional[nn.Module]]] = None, **variant):
        """``mlps``: each layer's feed-forward block (None: Llama's MLP), for mixture-of-experts decoders."""
        super().__init__()
        n = cfg["num_hidden_layers"]
        mlps = mlps or [None] * n
        self.embed_tokens = nn.Embedding(cfg["vocab_size"], cfg["hidden_size"])
        self.layers = nn.ModuleList([LlamaDecoderLayer(cfg, mlps[i], **variant) for i in range(n)])
        self.norm = nn.RMSNorm(cfg["hidden_size"], eps=cfg.get("rms_norm_eps", 1e-6))


class LlamaForCausalLM(DeviceChecked, nn.Module):
    """A Llama-style decoder with its LM head. ``forward(input_ids, attention_mask=None,
    position_ids=None, cache=None)`` returns the logits (B, T, vocab_size)."""

    architecture = "LlamaForCausalLM"
    model_type = "llama"
    fused_prefill = True  # a prompt from position 0 may take LeanDecoder.prefill

    def __init__(self, config: dict):
        super().__init__()
        self.config = dict(config)
        c = self.config
        self.head_dim = c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"]
        self.sliding_windows = self._sliding_windows(c)
        self.model = self._build_model(c)
        self.rotary = rope_from_config(c, self.head_dim, self.max_positions)
        self.tied = bool(c.get("tie_word_embeddings", False))
        if not self.tied:
            self.lm_head = nn.Linear(c["hidden_size"], c["vocab_size"], bias=False)

    base_name = None  # a base model's checkpoint (no LM head): its architecture's name (headless)
    gradient_checkpointing = False  # set by gradient_checkpointing_enable()

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs=None) -> None:
        """transformers' method: in training (no cache), every decoder layer runs under
        forgegrad.utils.checkpoint, its activations recomputed in backward; the gradients are unchanged."""
        kw = dict(gradient_checkpointing_kwargs or {})
        if kw.pop("use_reentrant", False) not in (True, False) or kw:
            raise ValueError(f"gradient_checkpointing_enable: only use_reentrant is accepted in "
                             f"gradient_checkpointing_kwargs, got {gradient_checkpointing_kwargs!r}")
        self.gradient_checkpointing = True

    def gradient_checkpointing_disable(self) -> None:
        self.gradient_checkpointing = False

    @property
    def is_gradient_checkpointing(self) -> bool:
        return self.gradient_checkpointing

    def headless(self, architecture: str) -> None:
        """Make this a base model (transformers' ``Qwen3Model``, ...): no LM head, weights named without the
        ``model.`` prefix; ``encode_packed`` gives its hidden states, ``forward`` refuses (there are no logits)."""
        self.base_name = architecture
        self.tied = False
        if "lm_head" in self._modules:
            del self._modules["lm_head"]

    @property
    def architecture_name(self) -> str:
        return self.base_name or self.architecture

    def _build_model(self, cfg: dict) -> nn.Module:
        """The decoder stack: ``embed_tokens``, ``layers`` (each called as layer(x, cos, sin, mask, cache, i)),
        ``norm``."""
        return LlamaModel(cfg, **self._variant(cfg))

    def _embed(self, ids) -> Tensor:
        return self.model.embed_tokens(ids if isinstance(ids, Tensor) else Tensor._wrap(ids))

    def _finish(self, logits: Tensor) -> Tensor:
        """The logits as the architecture returns them (Gemma 2 soft-caps them)."""
        return logits

    @staticmethod
    def _variant(cfg: dict) -> dict:
        """What the attention layers have: biases on the query/key/value projections and on the output
        projection; an RMSNorm over each head's query and key."""
        bias = bool(cfg.get("attention_bias", False))
        return dict(qkv_bias=bias, o_bias=bias, qk_norm=False)

    def _sliding_windows(self, cfg: dict) -> List[Optional[int]]:
        """Each layer's attention window (None: every earlier key); Llama has none."""
        return [None] * cfg["num_hidden_layers"]

    def layer_rotary(self, i: int) -> RotaryEmbedding:
        """The rotary embedding of layer i (one for every layer, but Gemma 3's local and global layers)."""
        return self.rotary

    def per_layer(self, compute) -> list:
        """compute(rotary) for every layer's rotary embedding (its cos and sin, say), computed once per
        distinct embedding."""
        made, out = {}, []
        for i in range(len(self.model.layers)):
            r = self.layer_rotary(i)
            if id(r) not in made:
                made[id(r)] = compute(r)
            out.append(made[id(r)])
        return out

    def windows_matter(self, length: int) -> bool:
        """Whether a sequence of ``length`` tokens reaches past some layer's sliding window (then the
        attention masks keys, and the fused causal prefill does not apply)."""
        return any(w is not None and length > w for w in self.sliding_windows)

    @property
    def vocab_size(self) -> int:
        return self.config["vocab_size"]

    def tied_embedding(self):
        """The token embedding, which is the LM head while ``tied``."""
        return self.model.embed_tokens

    @property
    def max_positions(self) -> int:
        n = self.config.get("max_position_embeddings", 2048)
        params = self.config.get("rope_parameters") or self.config.get("rope_scaling") or {}
        factor = params.get("factor")
        if params.get("rope_type", params.get("type")) == "dynamic" and isinstance(factor, (int, float)) and factor > 1:
            return int(n * factor)  # the dynamic rope is there to run past the trained context: factor times it
        return n

    def new_cache(self, batch: int, max_length: int) -> KVCache:
        c = self.config
        kv = c.get("num_key_value_heads") or c["num_attention_heads"]
        return make_cache(self, c["num_hidden_layers"], batch, kv, max_length, self.head_dim)

    def forward(self, input_ids, attention_mask=None, position_ids=None, cache: Optional[KVCache] = None,
                logits_to_keep: int = 0):
        if self.base_name is not None:
            raise ValueError(f"{self.base_name} is a base model without an LM head: it gives hidden states "
                             "(encode_packed), not logits")
        device = check_device_support(self, self.architecture)
        ids = ids_array(input_ids, "LlamaForCausalLM", self.vocab_size)
        B, T = ids.shape
        past = cache.length if cache is not None else 0
        pad = mask_array(attention_mask, "LlamaForCausalLM", (B, past + T))
        if position_ids is not None:  # positions are read on the host (the rope tables are computed there)
            position_ids = host_array(position_ids)
        if grad_mode.recorder() is not None and (any(w is not None for w in self.sliding_windows)
                                                 or isinstance(self.rotary, LengthScaledRope)):
            # an export of a sliding-window or length-scaled-rope model: the masks and frequencies as ops of the
            # input (export_with_past's graph with no past), not the example's
            return self._export_forward(input_ids, attention_mask, position_ids, cache, logits_to_keep)
        if past == 0 and self.fused_prefill and device == "cpu" and not self.windows_matter(T) and \
                lean_prefill(self, pad, position_ids, T):
            return Tensor._wrap(LeanDecoder(self).prefill(ids, cache, logits_to_keep))
        return self._head(self._stack(ids, pad, past, position_ids, cache, device), logits_to_keep)

    def _head(self, x: Tensor, logits_to_keep: int = 0) -> Tensor:
        """The logits of the stack's output: the LM head (the tied embedding or lm_head), on the last
        ``logits_to_keep`` positions only when given (generate needs the last one)."""
        if logits_to_keep:
            x = x[:, -logits_to_keep:]
        return self._finish(F.linear(x, self.model.embed_tokens.weight) if self.tied else self.lm_head(x))

    def _stack(self, ids: np.ndarray, pad, past: int, position_ids, cache, device: str = "cpu", embeds=None,
               masks=None) -> Tensor:
        """The decoder stack's normed output (B, T, hidden) for ``ids`` after ``past`` cached tokens, on ``device``
        (the parameters'): the ids and the rope's cos and sin are made on the host and copied there. ``embeds``:
        the input rows in place of the ids' embeddings; ``masks``: the additive masks per sliding window in place
        of the causal ones (an image-text model's)."""
        T = ids.shape[1]
        if position_ids is None:
            tables = self.per_layer(lambda r: r.cos_sin_range(past, T))
        else:
            positions = np.asarray(position_ids, dtype=np.int64)
            tables = self.per_layer(lambda r: r.cos_sin(positions))
        if device != "cpu":  # (the tables' slices are on the device already: the buffers moved with the model)
            tables = [(on_device(c, device), on_device(s, device)) for c, s in tables]
        x = self._embed(on_device(ids, device)) if embeds is None else embeds
        if masks is None:
            masks = {w: additive_mask(pad, past, T, causal=True, window=w) for w in set(self.sliding_windows)}
        ckpt = getattr(self, "gradient_checkpointing", False) and self.training and cache is None \
            and grad_mode.is_grad_enabled()
        for i, layer in enumerate(self.model.layers):
            if ckpt:  # each layer's activations recomputed in backward (utils.checkpoint): less memory
                x = _checkpoint(layer, x, *tables[i], masks[self.sliding_windows[i]], None, i, use_reentrant=False)
            else:
                x = layer(x, *tables[i], masks[self.sliding_windows[i]], cache, i)
        x = self.model.norm(x)
        if cache is not None:
            cache.advance(T)
        return x

    @property
    def max_tokens(self) -> int:
        return int(self.max_positions)

    def encode_packed(self, sequences, token_types=None) -> np.ndarray:
        """The last layer's normed hidden states of the tokens of ``sequences`` (token-id lists of any lengths),
        stacked (total tokens, hidden): what a decoder embedding model (Qwen3-Embedding, as sentence-transformers
        runs it) pools. The batch is right-padded with no mask: a causal model's tokens never see the padding after
        them. Eval mode only, no graph."""
        from ...autograd import no_grad
        p = PackedBatch(self, sequences, self.vocab_size, self.max_tokens)
        with no_grad():
            return self._stack(p.padded_ids(), None, 0, None, None).numpy()[p.real]

    def forward_graph(self, input_ids: Tensor, position_ids: Tensor, biases: dict, cache,
                      logits_to_keep: int = 0, inputs_embeds: Optional[Tensor] = None) -> Tensor:
        """The logits from Tensor token ids and positions (B, T) and additive attention biases (B, 1, T,
        past + T), one per distinct sliding window of the layers (``biases[None]``: full attention),
        extending ``cache`` (a PastKeyValues): every step a Tensor op, so that ``export_with_past`` traces a
        graph whose masks and positions follow its inputs. ``logits_to_keep`` as forward's (1: the last
        position's only). ``inputs_embeds`` (B, T, hidden): the input rows in place of the ids' embeddings (an
        image-text model's decoder graph, onnx_image_text.py; ``input_ids`` is then None)."""
        tables = self.per_layer(lambda r: r.cos_sin_of(position_ids))
        x = self._embed(input_ids) if inputs_embeds is None else inputs_embeds
        for i, layer in enumerate(self.model.layers):
            x = layer(x, *tables[i], biases[self.sliding_windows[i]], cache, i)
        return self._head(self.model.norm(x), logits_to_keep)

    def _export_forward(self, input_ids, attention_mask, position_ids, cache, logits_to_keep):
        from .onnx_export import graph_logits
        if cache is not None or position_ids is not None or not isinstance(input_ids, Tensor):
            raise NotImplementedError(f"{type(self).__name__}: an export of a sliding-window or longrope / dynamic "
                                      "rope model takes input_ids (and attention_mask) as graph inputs, without "
                                      "a cache or position_ids (export_with_past exports the cache)")
        mask = attention_mask if isinstance(attention_mask, Tensor) else input_ids * 0 + 1
        fresh = PastKeyValues([None] * len(self.model.layers), [None] * len(self.model.layers))
        return graph_logits(self, input_ids, mask, fresh, logits_to_keep)

    @staticmethod
    def from_hf(tensors: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        out = {k: v for k, v in tensors.items() if not k.endswith("rotary_emb.inv_freq")}
        if out and not any(k.startswith("model.") for k in out):  # a base model's names (Qwen3Model, ...)
            out = {("model." + k): v for k, v in out.items()}
        return out

    def to_hf(self) -> Dict[str, np.ndarray]:
        state = {k: t.numpy() for k, t in self.state_dict().items()}
        if self.base_name is not None:
            state = {(k[6:] if k.startswith("model.") else k): v for k, v in state.items()}
        return state


def _window(cfg: dict, who: str) -> Optional[int]:
    w = cfg.get("sliding_window")
    if w is None:
        return None
    if isinstance(w, bool) or not isinstance(w, int) or w <= 0:
        raise ValueError(f"{who}: sliding_window must be a positive integer or null, got {w!r}")
    return w


class MistralForCausalLM(LlamaForCausalLM):
    """Mistral: Llama's layers with sliding-window attention in every layer when the config gives
    ``sliding_window`` (Mistral 7B v0.1: 4096; later versions: null, i.e. plain causal attention)."""

    architecture = "MistralForCausalLM"
    model_type = "mistral"

    def _sliding_windows(self, cfg: dict) -> List[Optional[int]]:
        return [_window(cfg, self.architecture)] * cfg["num_hidden_layers"]


class Qwen2ForCausalLM(LlamaForCausalLM):
    """Qwen2 / Qwen2.5: Llama's layers with biases on the query, key and value projections (none on the
    output projection); sliding windows only on the layers ``layer_types`` marks "sliding_attention"
    (with ``use_sliding_window``: the layers from ``max_window_layers`` on, in configs without layer_types)."""

    architecture = "Qwen2ForCausalLM"
    model_type = "qwen2"

    @staticmethod
    def _variant(cfg: dict) -> dict:
        return dict(qkv_bias=True, o_bias=False, qk_norm=False)

    def _sliding_windows(self, cfg: dict) -> List[Optional[int]]:
        n = cfg["num_hidden_layers"]
        kinds = cfg.get("layer_types")
        if kinds is None:
            start = cfg.get("max_window_layers", n) if cfg.get("use_sliding_window") else n
            kinds = ["sliding_attention" if i >= start else "full_attention" for i in range(n)]
        if not isinstance(kinds, list) or len(kinds) != n or not set(kinds) <= {"full_attention", "sliding_attention"}:
            raise ValueError(f"{self.architecture}: layer_types must list 'full_attention' or 'sliding_attention' "
                             f"for each of the {n} layers, got {kinds!r}")
        window = _window(cfg, self.architecture) if "sliding_attention" in kinds else None
        if "sliding_attention" in kinds and window is None:
            raise ValueError(f"{self.architecture}: layer_types has sliding_attention layers but sliding_window "
                             "is null")
        return [window if k == "sliding_attention" else None for k in kinds]


class Qwen3ForCausalLM(Qwen2ForCausalLM):
    """Qwen3 (dense): Qwen2's layers and windows, with an RMSNorm over each head's query and key
    (``q_norm``, ``k_norm``, before the rotation) and biases only where ``attention_bias`` says."""

    architecture = "Qwen3ForCausalLM"
    model_type = "qwen3"

    @staticmethod
    def _variant(cfg: dict) -> dict:
        bias = bool(cfg.get("attention_bias", False))
        return dict(qkv_bias=bias, o_bias=bias, qk_norm=True)


class Phi3ForCausalLM(MistralForCausalLM):
    """Phi-3 / Phi-3.5 / Phi-4-mini: Llama's layers with Mistral's sliding window; the checkpoint holds the
    query/key/value projections as one ``qkv_proj`` and the gate/up projections as one ``gate_up_proj``
    (split into Llama's layers on load, fused again by ``to_hf``). Longrope and a partial rotary factor
    come from the rope settings."""

    architecture = "Phi3ForCausalLM"
    model_type = "phi3"

    @property
    def recompute_cache_at(self):
        """generate recomputes the whole sequence once it grows past this length (transformers' Phi-3 drops
        its cache there: longrope switches to its long frequencies past the original context)."""
        return self.config.get("original_max_position_embeddings")

    def _split_sizes(self):
        c = self.config
        H, Hkv = c["num_attention_heads"], c.get("num_key_value_heads") or c["num_attention_heads"]
        return H * self.head_dim, Hkv * self.head_dim, c["intermediate_size"]

    def from_hf(self, tensors: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        q, kv, inner = self._split_sizes()
        out = {}
        for key, value in tensors.items():
            if key.endswith("self_attn.qkv_proj.weight") and value.shape[0] == q + 2 * kv:
                base = key[:-len("qkv_proj.weight")]
                out[base + "q_proj.weight"], out[base + "k_proj.weight"], out[base + "v_proj.weight"] = (
                    value[:q], value[q:q + kv], value[q + kv:])
            elif key.endswith("mlp.gate_up_proj.weight") and value.shape[0] == 2 * inner:
                base = key[:-len("gate_up_proj.weight")]
                out[base + "gate_proj.weight"], out[base + "up_proj.weight"] = value[:inner], value[inner:]
            else:  # a fused tensor of the wrong size stays as it is: the shape check names it
                out[key] = value
        return super().from_hf(out)

    def to_hf(self) -> Dict[str, np.ndarray]:
        state = super().to_hf()
        for i in range(self.config["num_hidden_layers"]):
            attn, mlp = f"model.layers.{i}.self_attn.", f"model.layers.{i}.mlp."
            state[attn + "qkv_proj.weight"] = np.concatenate(
                [state.pop(attn + name + ".weight") for name in ("q_proj", "k_proj", "v_proj")])
            state[mlp + "gate_up_proj.weight"] = np.concatenate(
                [state.pop(mlp + name + ".weight") for name in ("gate_proj", "up_proj")])
        return state
