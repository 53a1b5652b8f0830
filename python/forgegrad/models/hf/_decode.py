"""The lean decode step: one new token per row through a GPT-2 or Llama-style model, as direct kernel
calls on the parameters' own arrays; and the lean prefill: a prompt from position 0 without padding,
the same way, with the fused causal attention kernel.

A decode step is ~20 tiny ops per layer. Through the Tensor layer each op costs tens of microseconds
of Python dispatch, which at GPT-2-small size adds ~10 ms to a ~35 ms memory-bound token; here each op
is one ``forgegrad._C`` call (GEMV with the activation fused into its epilogue, norms, batched GEMM
over the KV cache, softmax) on preallocated buffers. The math is the model's forward, op for op; the
generate tests check both paths against transformers.
"""
from __future__ import annotations

import functools
import math
from typing import Optional

import numpy as np

from ... import _C
from ..._safetensors_read import bfloat16_to_float32
from ...grad_mode import graph_free
from ...nn.hooks import has_call_hooks
from ...nn.linear import packed_weight
# PagedKV and paged_attention_reference are imported from here too (the server's engine, tests)
from ._decode_attention import _NEG, PagedKV, _attention, _tanh_cap, paged_attention_reference  # noqa: F401
from ._layers import KVCache

__all__ = ["LeanDecoder", "PagedKV", "paged_attention_reference"]

_GELU_TANH = {"gelu_new": _C.activation.GELU_TANH, "gelu_pytorch_tanh": _C.activation.GELU_TANH,
              "gelu_fast": _C.activation.GELU_TANH,
              "gelu": _C.activation.GELU, "relu": _C.activation.RELU, "silu": _C.activation.SILU,
              "swish": _C.activation.SILU, "tanh": _C.activation.TANH}


def _layer_norm(x, weight, bias, eps):
    out = np.empty_like(x)
    stats = np.empty((2, x.shape[0]), np.float32)
    _C.layernorm.layer_norm_forward(x, 1, weight, bias, eps, out, stats[0], stats[1])
    return out


def _rms_norm(x, weight, eps):
    out = np.empty_like(x)
    _C.layernorm.rms_norm_forward(x, 1, weight, eps, out, np.empty(x.shape[0], np.float32))
    return out


def _norm(module, x):
    """An nn.LayerNorm's (with its bias: GPT-NeoX) or an nn.RMSNorm's rows of x."""
    if module._parameters.get("bias") is not None:
        return _layer_norm(x, module.weight.numpy(), module.bias.numpy(), module.eps)
    return _rms_norm(x, module.weight.numpy(), module.eps)


def _input_norm(blk, x):
    """A Llama-style layer's norm before attention; x itself where it has none (OLMo 2 norms after attention)."""
    norm = blk._modules.get("input_layernorm")
    return x if norm is None else _norm(norm, x)


def _head_norm(att, name: str, x, heads: int):
    """Qwen3's RMSNorm over each head of the projection x (rows, heads * D) (Phi's LayerNorm), OLMo 2's over the whole
    projection (its weight as wide as x), or a norm with its own arrays step (StableLM's weights per head); x itself
    without one."""
    norm = att._modules.get(name)
    if norm is None:
        return x
    if hasattr(norm, "arrays"):
        return norm.arrays(np.ascontiguousarray(x))
    if norm._parameters.get("bias") is None and norm.weight.shape[0] == x.shape[1]:
        return _rms_norm(np.ascontiguousarray(x), norm.weight.numpy(), norm.eps)
    rows = x.shape[0]
    return _norm(norm, np.ascontiguousarray(x).reshape(rows * heads, -1)).reshape(rows, -1)


def _rope(t, cos, sin):
    """Llama's rotary embedding of t (..., D) on arrays: RotaryEmbedding.apply's operations (the first
    cos.shape[-1] dims rotated, the rest passed through)."""
    rot = cos.shape[-1]
    if rot != t.shape[-1]:
        return np.concatenate([_rope(t[..., :rot], cos, sin), t[..., rot:]], axis=-1)
    half = rot // 2
    return t * cos + np.concatenate([-t[..., half:], t[..., :half]], axis=-1) * sin


def _weight_only_linear():
    from ...quantization.modules import WeightOnlyInt8Linear
    return WeightOnlyInt8Linear


def _bf16_linear():
    from ...quantization.bf16 import WeightOnlyBF16Linear
    return WeightOnlyBF16Linear


def _bf16_embedding():
    from ...quantization.bf16 import BF16Embedding
    return BF16Embedding


@functools.lru_cache(maxsize=None)
def _weight_only_types() -> tuple:
    """(int8, bfloat16) weight-only Linear classes, resolved once: the lookup is an import statement, ~5 us per
    GEMV call (~0.3 ms per token at full size)."""
    return _weight_only_linear(), _bf16_linear()


def lean_linear(layer, x: np.ndarray, act: int = -1) -> np.ndarray:
    """A Linear layer's GEMV (activation fused), or a weight-only layer's (``quantization.quantize_weight_only``
    / ``from_pretrained(dtype="bfloat16")``: int8 streams a quarter of the bytes per token, bfloat16 half)."""
    weight_only, bf16 = _weight_only_types()
    bias = layer._parameters.get("bias")  # a tied head is the Embedding: no bias
    bias = bias.numpy() if bias is not None else None
    if isinstance(layer, (weight_only, bf16)):
        if type(layer) is bf16:
            y = _C.quant.linear_bf16(x, layer.weight.numpy(), bias)
        else:
            y = _C.quant.linear_weight_only(x, layer.weight.numpy(), layer.weight_scale.numpy(), bias)
        if act != -1:
            out = np.empty_like(y)
            _C.activation.act_forward(act, y, out)
            y = out
        return y
    return _C.gemm.linear(x, layer.weight.numpy(), bias, act, 0.0, packed_weight(layer))


def weight_dtypes_are_lean(m, weight_only) -> bool:
    """Whether module ``m``'s parameters are the float32 numpy arrays the lean steps read (an int8 weight-only
    layer's weight: int8; the bfloat16 layers hold theirs as buffers)."""
    for name, p in m._parameters.items():
        want = np.int8 if type(m) is weight_only and name == "weight" else np.float32
        if p is not None and (type(p._data) is not np.ndarray or p._data.dtype != want):
            return False
    return True


def _array(t) -> np.ndarray:
    """A rotary table (a Tensor buffer's slice or an array) as an array."""
    return t if isinstance(t, np.ndarray) else t.numpy()


def _rows(embedding, ids) -> np.ndarray:
    """Rows of an nn.Embedding's table, or a BF16Embedding's widened to float32."""
    w = embedding.weight.numpy()
    return bfloat16_to_float32(w[ids]) if w.dtype == np.uint16 else w[ids]


@functools.lru_cache(maxsize=None)
def _plain_module_types() -> frozenset:
    """The module types from_pretrained builds GPT-2 and Llama-style decoders (Mistral, Qwen2) from (exact types), plus
    the int8 weight-only Linear that ``quantize_weight_only`` puts in their place; resolved once, as a set (every
    forward checks each module's type: a mixture of experts has hundreds)."""
    from ... import nn
    from . import (_layers, gemma2, gemma3_vlm, gpt2, gpt_neox, granite, llama, llava, llava_next, moe, olmo2, olmo3,
                   paligemma, phi, qwen2_vl, stablelm, starcoder2)
    types = (*granite.LEAN_TYPES, *stablelm.LEAN_TYPES, *starcoder2.LEAN_TYPES, *phi.LEAN_TYPES,
            olmo3.Olmo3ForCausalLM,
            olmo2.Olmo2ForCausalLM, olmo2.Olmo2Model, olmo2.Olmo2DecoderLayer, olmo2.Olmo2Attention,
            gpt_neox.GPTNeoXForCausalLM, gpt_neox.GPTNeoXModel, gpt_neox.GPTNeoXLayer, gpt_neox.GPTNeoXAttention,
            gpt_neox.GPTNeoXMLP, gpt2.GPT2LMHeadModel, gpt2.GPT2Model, gpt2.GPT2Block, gpt2.GPT2Attention, gpt2.GPT2MLP,
            llama.LlamaForCausalLM, llama.MistralForCausalLM, llama.Qwen2ForCausalLM, llama.Qwen3ForCausalLM,
            llama.Phi3ForCausalLM, gemma2.Gemma2ForCausalLM, gemma2.Gemma3ForCausalLM, gemma2.Gemma2Model,
            gemma3_vlm.Gemma3ForConditionalGeneration, llava.LlavaForConditionalGeneration,
            llava_next.LlavaNextForConditionalGeneration,
            paligemma.PaliGemmaForConditionalGeneration, paligemma.PaliGemmaGemma1,
            qwen2_vl.Qwen2VLForConditionalGeneration, qwen2_vl.Qwen2_5_VLForConditionalGeneration,
            qwen2_vl.MRopeEmbedding,
            gemma2.GemmaForCausalLM, moe.MixtralForCausalLM, moe.Qwen2MoeForCausalLM, moe.Qwen3MoeForCausalLM,
            moe.SparseMoeBlock,
            gemma2.Gemma2DecoderLayer, gemma2.Gemma2Attention, llama.LlamaModel,
            llama.LlamaDecoderLayer, llama.LlamaAttention, llama.LlamaMLP,
            _layers.RotaryEmbedding, _layers.LongRopeEmbedding, _layers.DynamicNTKRopeEmbedding, nn.Linear,
            nn.LayerNorm, nn.RMSNorm, nn.Embedding, nn.ModuleList, _bf16_linear(), _bf16_embedding(),
            _weight_only_linear())
    return frozenset(types)


def lean_path_applies(model) -> bool:
    """Whether the lean step computes what the model's forward does: eval mode, every module one of
    the types from_pretrained builds or quantize_weight_only puts in (a wrapped or replaced layer, e.g.
    an adapter, keeps the Tensor forward), no module hooks anywhere (pruning applies its masks
    through forward pre-hooks), and float32 CPU parameters (the weight-only layers hold theirs as buffers)."""
    if model.training or getattr(model, "output_router_logits", False):  # the Tensor forward keeps router logits
        return False
    plain = _plain_module_types()
    weight_only = _weight_only_types()[0]
    # an image-text model's steps run its text modules only (Gemma3ForConditionalGeneration.text_modules)
    for m in (model.text_modules() if hasattr(model, "text_modules") else model.modules()):
        if type(m) not in plain or has_call_hooks(m) or not weight_dtypes_are_lean(m, weight_only):
            return False
    return True


def lean_prefill(model, padding: Optional[np.ndarray], position_ids, t: int) -> bool:
    """Whether a forward from position 0 can take ``LeanDecoder.prefill``: no graph to record (no_grad,
    no trace), no padding, positions 0..t-1 (or none given), and ``lean_path_applies``."""
    if not graph_free() or (padding is not None and not padding.all()):
        return False
    if position_ids is not None:
        pos = np.asarray(position_ids)
        if pos.shape[-1:] != (t,) or not (pos == np.arange(t)).all():
            return False
    return lean_path_applies(model)


class LeanDecoder:
    """``step(tokens (B,), positions (B,), padding (B, length) bool or None, cache)`` -> logits (B, V).

    ``rows_apart``: with a rotary embedding whose frequencies depend on a call's longest position (dynamic NTK,
    longrope), each row's own position picks its frequencies, as if it were decoded alone (the serving engines' rows
    are separate requests); False (generate's batches): the batch's longest position, as transformers picks them."""

    def __init__(self, model, rows_apart: bool = False):
        from .gpt2 import GPT2LMHeadModel
        from .gpt_neox import GPTNeoXForCausalLM
        from .llama import LlamaForCausalLM
        self.model, self.rows_apart = model, rows_apart
        # where the rotary positions start (PaliGemma counts from 1, as transformers' PaliGemma does); the caches'
        # places stay 0-based
        self.position_offset = int(getattr(model, "position_offset", 0))
        self.neox = isinstance(model, GPTNeoXForCausalLM)  # Llama's skeleton, GPT-NeoX's layers
        if self.neox:
            self._layer = self._neox_layer
            c = model.config
            self.heads = self.kv_heads = c["num_attention_heads"]
            self.act = _GELU_TANH[c.get("hidden_act", "gelu")]
            self.scale = 1.0 / math.sqrt(model.head_dim)
            self.softcap, self.post_norms, self.embed_scale, self.final_softcap = None, False, None, None
            self.logits_scaling = None
        elif isinstance(model, GPT2LMHeadModel):
            self._layer = self._gpt2_layer
            c = model.config
            self.heads, self.kv_heads = c["n_head"], c["n_head"]
            self.act = _GELU_TANH[c.get("activation_function", "gelu_new")]
            self.scale = 1.0 / math.sqrt(c["n_embd"] // c["n_head"]) if c.get("scale_attn_weights", True) else 1.0
        elif isinstance(model, LlamaForCausalLM):
            self._layer = self._llama_layer
            c = model.config
            self.heads = c["num_attention_heads"]
            self.kv_heads = c.get("num_key_value_heads") or self.heads
            gemma = hasattr(model.model.layers[0], "pre_feedforward_layernorm")  # Gemma 2's layer
            act = (c.get("hidden_activation") or "gelu_pytorch_tanh") if gemma else c.get("hidden_act", "silu")
            post_norms = hasattr(model.model.layers[0], "post_feedforward_layernorm")  # Gemma 2's, OLMo 2's
            self.act = _GELU_TANH[act]
            att = model.model.layers[0].self_attn
            self.scale = getattr(att, "scale", 1.0 / math.sqrt(model.head_dim))
            # Gemma 2: capped scores and logits, scaled embeddings, norms after attention and around the MLP
            self.softcap, self.post_norms = getattr(att, "softcap", None), post_norms
            self.embed_scale = getattr(model, "embed_scale", None)
            self.final_softcap = getattr(model, "final_softcap", None)
            self.logits_scaling = getattr(model, "logits_scaling", None)
        else:
            raise TypeError(f"LeanDecoder: no decode step for {type(model).__name__}")

    def step(self, tokens: np.ndarray, positions: np.ndarray, padding: Optional[np.ndarray],
             cache) -> np.ndarray:
        """``cache``: a KVCache (the new keys at column ``cache.length``, ``padding`` masking columns), or a PagedKV
        (each row's keys through its block table; no padding)."""
        x = self._embed(tokens, positions)
        # Qwen2-VL: after a prompt with images, each row's rotary positions run rope_deltas ahead of its tokens
        deltas = getattr(cache, "rope_deltas", None)
        ctx = self._context(positions if deltas is None else positions + deltas)
        if isinstance(cache, PagedKV):
            length, masks = None, [None] * len(self._blocks())
        else:
            length = cache.length + 1
            mask = None
            if padding is not None and not padding.all():
                mask = np.where(padding, np.float32(0), _NEG).astype(np.float32)
            masks = self._window_masks(mask, length)
        for i in range(len(self._blocks())):
            x = self._layer(i, x, ctx[i], cache, length, masks[i])
        cache.advance(1)
        return self._head(x)

    def _window_masks(self, mask: Optional[np.ndarray], length: int) -> list:
        """Each layer's additive mask over the ``length`` cached keys: ``mask`` (padding, or None), with
        the keys before a sliding window masked too (Mistral, Qwen2's sliding layers)."""
        windows = getattr(self.model, "sliding_windows", None) or [None] * len(self._blocks())
        made = {}
        for w in set(windows):
            if w is None or length <= w:
                made[w] = mask
            else:
                m = np.zeros((1, length), np.float32) if mask is None else mask.copy()
                m[:, :length - w] = _NEG
                made[w] = m
        return [made[w] for w in windows]

    def prefill(self, ids: np.ndarray, cache: Optional[KVCache], logits_to_keep: int = 0, embeds=None,
                masks=None, positions=None) -> np.ndarray:
        """Logits (B, T or logits_to_keep, V) of token ids (B, T) at positions 0..T-1 with no padding;
        fills ``cache`` (empty) when given. The ops and kernels of the model's forward, on arrays.

        A Llama-style model's prompt with images (models/hf/_image_prefill.py) passes ``embeds`` (B, T, E), the
        input rows in place of the ids' (scaled already), ``masks`` {sliding window: additive mask (B or 1, 1, T,
        T) or None (causal)} for each of its layers' windows, and ``positions`` (B, T) the rotary positions as
        given (None: 0..T-1)."""
        B, T = ids.shape
        if cache is not None and T > cache.max_length:  # as KVCache.update says it on the Tensor path
            raise ValueError(f"KVCache: {T} tokens exceed the cache's max_length {cache.max_length}")
        m = self.model
        if hasattr(m, "transformer"):
            x = _rows(m.transformer.wte, ids) + m.transformer.wpe.weight.numpy()[:T]
            ctx = None
        else:
            if embeds is not None:
                x = embeds
            else:
                x = _rows(m.model.embed_tokens, ids)
                if self.embed_scale is not None:
                    x = x * np.float32(self.embed_scale)
            if positions is None:
                start = self.position_offset if embeds is None else 0
                ctx = m.per_layer(lambda r: tuple(_array(t) for t in r.cos_sin_range(start, T)))
            else:
                ctx = m.per_layer(lambda r: tuple(_array(t) for t in r.cos_sin(positions)))
        x = x.reshape(B * T, -1)
        layer = self._gpt2_prefill_layer if ctx is None else (
            self._neox_prefill_layer if self.neox else self._llama_prefill_layer)
        windows = getattr(m, "sliding_windows", None)
        for i in range(len(self._blocks())):
            if masks is not None:
                x = self._llama_prefill_layer(i, x, B, T, ctx[i], cache, masks[windows[i]])
            else:
                x = layer(i, x, B, T, None if ctx is None else ctx[i], cache)
        if cache is not None:
            cache.advance(T)
        if logits_to_keep:
            x = np.ascontiguousarray(x.reshape(B, T, -1)[:, -logits_to_keep:]).reshape(-1, x.shape[-1])
        logits = self._head(x)
        return logits.reshape(B, -1, logits.shape[-1])

    def _gpt2_prefill_layer(self, i, x, B, T, ctx, cache):
        from ...kernels.attention import attention_forward_packed
        blk = self.model.transformer.h[i]
        E = x.shape[1]
        H = self.heads
        h = _layer_norm(x, blk.ln_1.weight.numpy(), blk.ln_1.bias.numpy(), blk.ln_1.eps)
        qkv = self._linear(blk.attn.c_attn, h).reshape(B, T, 3 * E)
        o, _, split = attention_forward_packed(qkv, H, self.scale)  # split: q, k, v as (B * H, T, D)
        if cache is not None:
            cache.store(i, split[1].reshape(B, H, T, -1), split[2].reshape(B, H, T, -1))
        x = x + self._linear(blk.attn.c_proj, o.reshape(B * T, E))
        h = _layer_norm(x, blk.ln_2.weight.numpy(), blk.ln_2.bias.numpy(), blk.ln_2.eps)
        f = self._linear(blk.mlp.c_fc, h, self.act)
        return x + self._linear(blk.mlp.c_proj, f)

    def _llama_prefill_layer(self, i, x, B, T, ctx, cache, mask=None):
        """``mask``: None (causal from position 0) or an additive mask (B or 1, 1, T, T), as the layers' attend."""
        from ...kernels.attention import attention_forward, prepare_mask
        blk = self.model.model.layers[i]
        att = blk.self_attn
        H, Hkv = self.heads, self.kv_heads
        cos, sin = ctx

        def heads(t, n):  # (B * T, n * D) -> (B, n, T, D), as split_heads
            return t.reshape(B, T, n, -1).transpose(0, 2, 1, 3)

        h = _input_norm(blk, x)
        q = _rope(heads(_head_norm(att, "q_norm", self._linear(att.q_proj, h), H), H), cos, sin)
        k = _rope(heads(_head_norm(att, "k_norm", self._linear(att.k_proj, h), Hkv), Hkv), cos, sin)
        v = heads(self._linear(att.v_proj, h), Hkv)
        if cache is not None:
            cache.store(i, k, v)
        if H != Hkv:  # grouped-query heads: each key/value head serves H / Hkv query heads
            k, v = np.repeat(k, H // Hkv, axis=1), np.repeat(v, H // Hkv, axis=1)
        D = q.shape[-1]
        o, _ = attention_forward(q.reshape(B * H, T, D), k.reshape(B * H, T, D), v.reshape(B * H, T, D),
                                 self.scale, causal=mask is None,
                                 mask=None if mask is None else prepare_mask(mask, (B, H), T, T), softcap=self.softcap)
        o = o.reshape(B, H, T, D).transpose(0, 2, 1, 3).reshape(B * T, H * D)
        return self._llama_tail(blk, x, self._linear(att.o_proj, o), h)

    def _llama_tail(self, blk, x, o, h):
        """x plus the attention block's output o, then the MLP block, both (rows, E): Llama's order, or Gemma
        2/3's norms after attention and around the MLP, or OLMo 2's after each, or (``blk.parallel``: Phi, StableLM)
        the MLP reading the attention's input h too, or both blocks scaled by ``blk.residual_multiplier`` (Granite):
        the decoder layers' operations, in their order."""
        if getattr(blk, "parallel", False):
            return x + o + self._mlp(blk.mlp, h) if blk.residual_first else o + self._mlp(blk.mlp, h) + x
        scale = getattr(blk, "residual_multiplier", None)
        if scale is not None:
            x = x + o * np.float32(scale)
            return x + self._mlp(blk.mlp, _norm(blk.post_attention_layernorm, x)) * np.float32(scale)
        if self.post_norms:
            x = x + _rms_norm(o, blk.post_attention_layernorm.weight.numpy(), blk.post_attention_layernorm.eps)
            pre = blk._modules.get("pre_feedforward_layernorm")
            f = self._mlp(blk.mlp, x if pre is None else _norm(pre, x))
            return x + _rms_norm(f, blk.post_feedforward_layernorm.weight.numpy(), blk.post_feedforward_layernorm.eps)
        x = x + o
        return x + self._mlp(blk.mlp, _norm(blk.post_attention_layernorm, x))

    def _mlp(self, mlp, h):
        """The feed-forward block on rows h: a gated MLP, a mixture of experts (models/hf/moe.py), or a block with its
        own arrays step (a plain two-layer MLP: Starcoder2's, Phi's)."""
        if hasattr(mlp, "arrays"):
            return mlp.arrays(h, self._linear)
        if hasattr(mlp, "experts"):
            from .moe import sparse_moe_arrays
            return sparse_moe_arrays(mlp, h, self._linear, self._mlp)
        return self._linear(mlp.down_proj, self._linear(mlp.gate_proj, h, self.act) * self._linear(mlp.up_proj, h))

    # --- GPT-2 ---
    def _blocks(self):
        m = self.model
        return m.transformer.h if hasattr(m, "transformer") else m.model.layers

    def _embed(self, tokens, positions):
        m = self.model
        if hasattr(m, "transformer"):
            return _rows(m.transformer.wte, tokens) + m.transformer.wpe.weight.numpy()[positions]
        x = _rows(m.model.embed_tokens, tokens)
        return x if self.embed_scale is None else x * np.float32(self.embed_scale)

    def _context(self, positions):
        """Per layer: None (GPT-2) or the (cos, sin) of its rotary embedding, each (B, 1, D)."""
        if hasattr(self.model, "transformer"):
            return [None] * len(self._blocks())
        positions = positions + self.position_offset if self.position_offset else positions
        from ._layers import LengthScaledRope

        def cos_sin(r):  # (B, 1, 1, D) -> (B, 1, D): broadcast over heads
            if self.rows_apart and isinstance(r, LengthScaledRope) and len(positions) > 1:
                each = [r.cos_sin(positions[b:b + 1, None]) for b in range(len(positions))]
                return tuple(np.concatenate([e[k].numpy()[:, 0] for e in each]) for k in range(2))
            return tuple(t.numpy()[:, 0] for t in r.cos_sin(positions[:, None]))
        return self.model.per_layer(cos_sin)

    def _head(self, x):
        m = self.model
        if hasattr(m, "transformer"):
            x = _layer_norm(x, m.transformer.ln_f.weight.numpy(), m.transformer.ln_f.bias.numpy(),
                            m.transformer.ln_f.eps)
            if not m.tied:
                return self._linear(m.lm_head, x)
            return _C.gemm.linear(x, m.transformer.wte.weight.numpy())
        x = _norm(m.model.norm, x)
        logits = self._linear(m.lm_head, x) if not m.tied else self._tied_logits(x)
        if self.logits_scaling is not None:  # Granite divides its logits
            logits = logits / np.float32(self.logits_scaling)
        return logits if self.final_softcap is None else _tanh_cap(logits, self.final_softcap)

    def _tied_logits(self, x):
        """x (rows, E) times the tied embedding's table (V, E), transposed."""
        return _C.gemm.linear(x, self.model.model.embed_tokens.weight.numpy())

    def _gpt2_layer(self, i, x, ctx, cache, length, mask):
        blk = self.model.transformer.h[i]
        B, E = x.shape
        H = self.heads
        D = E // H
        h = _layer_norm(x, blk.ln_1.weight.numpy(), blk.ln_1.bias.numpy(), blk.ln_1.eps)
        qkv = self._linear(blk.attn.c_attn, h)
        o = self._attend(i, qkv[:, :E].reshape(B, H, 1, D), qkv[:, E:2 * E].reshape(B, H, D),
                         qkv[:, 2 * E:].reshape(B, H, D), cache, length, mask)
        x = x + self._linear(blk.attn.c_proj, o)
        h = _layer_norm(x, blk.ln_2.weight.numpy(), blk.ln_2.bias.numpy(), blk.ln_2.eps)
        f = self._linear(blk.mlp.c_fc, h, self.act)
        return x + self._linear(blk.mlp.c_proj, f)

    def _attend(self, i, q, k, v, cache, length, mask, softcap=None):
        """Layer i's new keys and values k, v (B, Hkv, D) into the cache, then q (B, Hkv, rep, D) against the keys so
        far: a KVCache's first ``length`` columns (``mask``: padding and window), or a PagedKV's rows."""
        if isinstance(cache, PagedKV):
            windows = getattr(self.model, "sliding_windows", None)
            return cache.attend(i, q, k, v, self.scale, softcap, windows[i] if windows else None)
        cache.keys[i][:, :, length - 1] = k
        cache.values[i][:, :, length - 1] = v
        return _attention(q, cache.keys[i], cache.values[i], length, mask, self.scale, softcap)

    # --- Llama ---
    _linear = staticmethod(lean_linear)

    def _llama_layer(self, i, x, ctx, cache, length, mask):
        blk = self.model.model.layers[i]
        att = blk.self_attn
        B = x.shape[0]
        H, Hkv = self.heads, self.kv_heads
        cos, sin = ctx
        h = _input_norm(blk, x)
        q = _head_norm(att, "q_norm", self._linear(att.q_proj, h), H).reshape(B, H, -1)
        k = _head_norm(att, "k_norm", self._linear(att.k_proj, h), Hkv).reshape(B, Hkv, -1)
        D = q.shape[-1]
        o = self._attend(i, _rope(q, cos, sin).reshape(B, Hkv, H // Hkv, D), _rope(k, cos, sin),
                         self._linear(att.v_proj, h).reshape(B, Hkv, D), cache, length, mask, self.softcap)
        return self._llama_tail(blk, x, self._linear(att.o_proj, o), h)

    # --- GPT-NeoX ---
    def _neox_layer(self, i, x, ctx, cache, length, mask):
        blk = self.model.model.layers[i]
        B, H = x.shape[0], self.heads
        cos, sin = ctx
        qkv = self._linear(blk.self_attn.query_key_value, _norm(blk.input_layernorm, x)).reshape(B, H, 3, -1)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # each head's query, key, value: (B, H, D)
        o = self._attend(i, _rope(q, cos, sin)[:, :, None], _rope(k, cos, sin), np.ascontiguousarray(v), cache, length,
                         mask)
        return self._neox_tail(blk, x, self._linear(blk.self_attn.dense, o))

    def _neox_prefill_layer(self, i, x, B, T, ctx, cache):
        from ...kernels.attention import attention_forward
        blk = self.model.model.layers[i]
        H = self.heads
        cos, sin = ctx
        qkv = self._linear(blk.self_attn.query_key_value, _norm(blk.input_layernorm, x))
        qkv = qkv.reshape(B, T, H, 3, -1).transpose(3, 0, 2, 1, 4)  # (3, B, H, T, D)
        q, k, v = _rope(qkv[0], cos, sin), _rope(qkv[1], cos, sin), qkv[2]
        if cache is not None:
            cache.store(i, k, v)
        D = q.shape[-1]
        o, _ = attention_forward(np.ascontiguousarray(q).reshape(B * H, T, D),
                                 np.ascontiguousarray(k).reshape(B * H, T, D),
                                 np.ascontiguousarray(v).reshape(B * H, T, D), self.scale, causal=True)
        o = o.reshape(B, H, T, D).transpose(0, 2, 1, 3).reshape(B * T, H * D)
        return self._neox_tail(blk, x, self._linear(blk.self_attn.dense, o))

    def _neox_tail(self, blk, x, a):
        """x plus the attention block's output a and the MLP block's: both reading x (use_parallel_residual), or
        the MLP reading x + a."""
        mlp = blk.mlp
        if not blk.parallel:
            x = x + a
        f = self._linear(mlp.dense_4h_to_h, self._linear(mlp.dense_h_to_4h, _norm(blk.post_attention_layernorm, x),
                                                          self.act))
        return x + a + f if blk.parallel else x + f
