"""Pieces the Hugging Face architectures share: inputs, masks, the KV cache, attention and RoPE.

Attention runs on forgegrad ops (batched GEMM + softmax), so the same code trains (autograd) and
decodes; under ``no_grad`` every op goes straight to its kernel without building a graph. Grouped-query
attention never copies the key/value heads: the query heads that share one key/value head are folded
into the row axis of one batched GEMM.
"""
from __future__ import annotations

from typing import List, Optional

import numpy as np

from ...factories import cat
from ...tensor import Tensor
from ... import devices, nn
from ...nn import functional as F

__all__ = ["ids_array", "mask_array", "host_array", "model_device", "on_device", "check_device_support", "make_cache",
           "DeviceChecked",
           "DeviceKVCache", "KVCache", "additive_mask", "attend", "split_heads", "merge_heads",
           "activation", "RotaryEmbedding", "LongRopeEmbedding"]

_NEG = float(np.finfo(np.float32).min)  # what transformers adds for masked keys (softmax stays finite)
FLOAT32_MAX = -_NEG  # a graph's bias on a masked key is minus this


def ids_array(input_ids, who: str, vocab_size: int) -> np.ndarray:
    """``input_ids`` (list, numpy array or int Tensor) as an int64 (B, T) array, checked."""
    arr = host_array(input_ids)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2:
        raise ValueError(f"{who}: input_ids must have shape (batch, tokens), got shape {arr.shape}")
    if arr.size and arr.dtype.kind not in "iu":
        raise TypeError(f"{who}: input_ids must hold integers, got dtype {arr.dtype}")
    if arr.shape[1] == 0:
        raise ValueError(f"{who}: input_ids must hold at least one token per row")
    arr = arr.astype(np.int64, copy=False)
    if arr.size and (arr.min() < 0 or arr.max() >= vocab_size):
        raise ValueError(f"{who}: input_ids must be in [0, {vocab_size}) (vocab_size), got values in "
                         f"[{arr.min()}, {arr.max()}]")
    return arr


def mask_array(attention_mask, who: str, shape) -> Optional[np.ndarray]:
    """``attention_mask`` (1 = a real token, 0 = padding) as a bool (B, L) array, or None."""
    if attention_mask is None:
        return None
    arr = host_array(attention_mask)
    if arr.shape != tuple(shape):
        raise ValueError(f"{who}: attention_mask must have shape {tuple(shape)} (batch, past + new tokens), "
                         f"got {arr.shape}")
    if arr.size and not np.isin(arr, (0, 1)).all():
        raise ValueError(f"{who}: attention_mask must hold only 0 (padding) and 1 (token)")
    return arr.astype(bool)


# --- models on a device: ids, masks and positions are checked and built on the host (they are small), copied to
# the parameters' device where an op takes them; the KV cache grows there ---
_HOST = ("cpu", "meta")  # a meta model runs its shape rules on host-built inputs, as the CPU does


def pixel_input(pixel_values, who: str, kinds: str = "fiu") -> Tensor:
    """``pixel_values`` as a float32 Tensor (a Tensor passes through: an export traces it); an array of another
    kind than ``kinds`` (a path, a string) raises a TypeError naming pixel_values. The shape is the caller's check."""
    if isinstance(pixel_values, Tensor):
        return pixel_values
    arr = np.asarray(pixel_values)
    if arr.dtype.kind not in kinds:
        raise TypeError(f"{who}: pixel_values must be a float array (batch, channels, height, width), got "
                        f"{type(pixel_values).__name__} of dtype {arr.dtype}")
    return Tensor._wrap(np.ascontiguousarray(arr, dtype=np.float32))


def host_array(x) -> np.ndarray:
    """``x`` (a Tensor on any device, a numpy array or a list) as a numpy array; a device tensor is copied back."""
    if isinstance(x, Tensor):
        return x._data if isinstance(x._data, np.ndarray) else devices.to_host(x._data)
    return np.asarray(x)


def model_device(model) -> str:
    """The device of a model's parameters ("cpu" for a model without any, or one that is no Module: an ONNX
    session's)."""
    params = getattr(model, "parameters", None)
    for p in (params() if callable(params) else ()):
        return devices.device_of(p._data)
    return "cpu"


def on_device(x, device: str) -> Tensor:
    """``x`` (a numpy array or a Tensor) as a Tensor on ``device`` (moved only where it is elsewhere)."""
    t = x if isinstance(x, Tensor) else Tensor._wrap(np.ascontiguousarray(x))
    if device in _HOST or devices.device_of(t._data) == device:
        return t
    return t.to(device)


def _host_only_modules() -> dict:
    """The layers whose forward computes on host arrays (numpy or forgegrad._C on the CPU), so a model holding one
    runs on the CPU only: each with what it is."""
    from ...quantization.bf16 import BF16Embedding, WeightOnlyBF16Linear
    from ...quantization.modules import WeightOnlyInt8Linear
    from .moe import SparseMoeBlock
    return {WeightOnlyBF16Linear: "bfloat16 weights (from_pretrained(..., dtype=\"bfloat16\"))",
            BF16Embedding: "a bfloat16 token embedding (from_pretrained(..., dtype=\"bfloat16\"))",
            WeightOnlyInt8Linear: "int8 weight-only weights (quantize_weight_only)",
            SparseMoeBlock: "mixture-of-experts routing, which picks the experts on the host"}


def check_device_support(model, who: str, device: Optional[str] = None) -> str:
    """The model's device; NotImplementedError naming the layer when the model is on a device (not the CPU) and
    holds a layer that computes on the host only."""
    device = model_device(model) if device is None else device
    if device in _HOST:
        return device
    host_only = _host_only_modules()
    for name, m in model.named_modules():
        what = host_only.get(type(m))
        if what is not None:
            raise NotImplementedError(f"{who}: layer {name or type(m).__name__!r} ({type(m).__name__}: {what}) runs "
                                      f"on the CPU only, and the model is on {device!r}; keep the model on the CPU "
                                      "or load it in float32 without it")
    return device


class DeviceChecked:
    """A decoder's Module.to that refuses a device before moving anything when the model holds a layer that computes
    on the host only (check_device_support's error, naming the layer), rather than a bare copy error or a model
    half moved."""

    def to(self, device=None, dtype=None, non_blocking: bool = False):
        if isinstance(device, (str, devices.device)):
            check_device_support(self, f"{type(self).__name__}.to", devices.device(device).type)
        return super().to(device, dtype, non_blocking)


def make_cache(model, n_layers: int, batch: int, kv_heads: int, max_length: int, head_dim: int):
    """A decoder's KV cache: preallocated host buffers for a model on the CPU, a DeviceKVCache on a device."""
    if model_device(model) in _HOST:
        return KVCache(n_layers, batch, kv_heads, max_length, head_dim)
    return DeviceKVCache(n_layers, max_length)


class KVCache:
    """Preallocated keys and values of every layer: (batch, kv_heads, max_length, head_dim) each.

    ``length`` tokens are filled; a forward pass with the cache appends its tokens in every layer and
    then advances ``length`` once (``advance``), so decoding never reallocates or concatenates.
    """

    def __init__(self, n_layers: int, batch: int, kv_heads: int, max_length: int, head_dim: int):
        shape = (batch, kv_heads, max_length, head_dim)
        self.keys: List[np.ndarray] = [np.zeros(shape, np.float32) for _ in range(n_layers)]
        self.values: List[np.ndarray] = [np.zeros(shape, np.float32) for _ in range(n_layers)]
        self.max_length = max_length
        self.length = 0

    def update(self, layer: int, k: Tensor, v: Tensor):
        """Store the new keys/values (B, kv_heads, t, D) of ``layer``; all keys/values so far, as Tensors."""
        t = k.shape[2]
        end = self.length + t
        if end > self.max_length:
            raise ValueError(f"KVCache: {end} tokens exceed the cache's max_length {self.max_length}")
        self.keys[layer][:, :, self.length:end] = k.numpy()
        self.values[layer][:, :, self.length:end] = v.numpy()
        return Tensor._wrap(self.keys[layer][:, :, :end]), Tensor._wrap(self.values[layer][:, :, :end])

    def store(self, layer: int, k: np.ndarray, v: np.ndarray) -> None:
        """Write the new keys/values (B, kv_heads, t, D) arrays of ``layer`` from place ``length`` (the lean
        prefill's write: ``update`` without returning the keys; a paged pool's BlockCache writes them into blocks)."""
        end = self.length + k.shape[2]
        self.keys[layer][:, :, self.length:end] = k
        self.values[layer][:, :, self.length:end] = v

    def advance(self, t: int) -> None:
        self.length += t


class PastKeyValues:
    """Keys and values of every layer as Tensors (batch, kv_heads, past, head_dim) that a forward extends
    by concatenation: the form an exported graph takes them in (``past_key_values.<i>.key`` inputs,
    ``present.<i>.key`` outputs), where a preallocated KVCache written in place cannot be traced."""

    def __init__(self, keys: List[Optional[Tensor]], values: List[Optional[Tensor]]):
        """None for a layer with no past (a plain forward's export: the new keys are the whole cache)."""
        self.keys, self.values = list(keys), list(values)
        self.length = keys[0].shape[2] if keys and keys[0] is not None else 0

    def update(self, layer: int, k: Tensor, v: Tensor):
        if self.keys[layer] is None:
            self.keys[layer], self.values[layer] = k, v
        else:
            self.keys[layer] = cat([self.keys[layer], k], dim=2)
            self.values[layer] = cat([self.values[layer], v], dim=2)
        return self.keys[layer], self.values[layer]

    def advance(self, t: int) -> None:
        self.length += t


class DeviceKVCache(PastKeyValues):
    """The KV cache of a model on a device: each layer's keys and values, device Tensors, grown by ``cat`` (a device
    array takes no item assignment, so there is no preallocated buffer to write into), at most ``max_length``."""

    def __init__(self, n_layers: int, max_length: int):
        super().__init__([None] * n_layers, [None] * n_layers)
        self.max_length = max_length

    def update(self, layer: int, k: Tensor, v: Tensor):
        end = self.length + k.shape[2]
        if end > self.max_length:
            raise ValueError(f"KVCache: {end} tokens exceed the cache's max_length {self.max_length}")
        return super().update(layer, k, v)


def additive_mask(padding: Optional[np.ndarray], past: int, t: int, causal: bool,
                  window: Optional[int] = None) -> Optional[np.ndarray]:
    """The float mask (B or 1, 1, t, past + t) added to attention scores: 0 where a query may look,
    the float32 minimum where it may not (later keys when ``causal``, padding keys, and with a sliding
    ``window`` the keys ``window`` or more places before the query, as transformers counts them: by
    place in the sequence, padding included). None when nothing is masked (one new token, no padding,
    no key out of the window), or when plain causal masking from position 0 applies
    (``attend(..., causal=True)`` then skips the masked blocks instead).

    A finite minimum rather than -inf, as transformers: a padding query, whose keys are all masked,
    gets uniform weights instead of NaN, so its (unused) keys and values in the cache stay finite.
    """
    length = past + t
    padded = padding is not None and not padding.all()
    windowed = window is not None and length > window
    if not padded and not windowed and (t == 1 or (causal and past == 0)):
        return None
    allowed = None
    if causal and t > 1:
        allowed = (np.arange(length)[None, :] <= (past + np.arange(t))[:, None])[None]  # (1, t, L)
    if windowed:
        near = ((past + np.arange(t))[:, None] - np.arange(length)[None, :] < window)[None]
        allowed = near if allowed is None else (allowed & near)
    if padded:
        keys = padding[:, None, :]  # (B, 1, L)
        allowed = keys if allowed is None else (allowed & keys)
    if allowed is None:
        return None
    allowed = np.broadcast_to(allowed, (allowed.shape[0], t, length))
    return np.where(allowed, np.float32(0), np.float32(_NEG))[:, None]


def split_heads(x: Tensor, heads: int) -> Tensor:
    """(B, T, heads * D) -> (B, heads, T, D)."""
    B, T, E = x.shape
    return x.reshape(B, T, heads, E // heads).permute(0, 2, 1, 3)


def merge_heads(x: Tensor) -> Tensor:
    """(B, heads, T, D) -> (B, T, heads * D)."""
    B, H, T, D = x.shape
    return x.permute(0, 2, 1, 3).reshape(B, T, H * D)


def config_probability(cfg: dict, key: str, who: str, default: float = 0.0) -> float:
    """A dropout probability of a config (``default`` when absent or null), checked to be in [0, 1]."""
    p = cfg.get(key)
    p = default if p is None else p
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
        raise ValueError(f"{who}: config {key} must be a probability in [0, 1], got {p!r}")
    return float(p)


def attend(q: Tensor, k: Tensor, v: Tensor, mask, causal: bool = False,
           scale: Optional[float] = None, softcap: Optional[float] = None, dropout_p: float = 0.0) -> Tensor:
    """softmax(q k^T * scale + mask) v with q (B, H, t, D) and k, v (B, Hkv, L, D), H a multiple of Hkv,
    on the fused attention kernel (``causal``: keys after the query's position masked, positions from 0).
    ``mask``: None, a numpy array (additive_mask's) or a Tensor (an exported graph's attention bias).
    ``softcap``: the scaled scores s become softcap * tanh(s / softcap) before the mask (Gemma 2).
    ``dropout_p``: attention-weight dropout (layers pass it in training only)."""
    gqa = k.shape[1] != q.shape[1]
    m = None if mask is None else on_device(mask, devices.device_of(q._data))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=m, is_causal=causal and m is None and q.shape[2] > 1,
                                          scale=scale, enable_gqa=gqa, softcap=softcap, dropout_p=dropout_p)


_ACTIVATIONS = {
    "gelu": lambda x: F.gelu(x),
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_fast": lambda x: F.gelu(x, approximate="tanh"),  # GPT-NeoX-20B: the same tanh approximation
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": lambda x: F.relu(x),
    "silu": lambda x: F.silu(x),
    "swish": lambda x: F.silu(x),
    "tanh": lambda x: F.tanh(x),
}


def activation(name, who: str):
    if name not in _ACTIVATIONS:
        raise ValueError(f"{who}: activation {name!r} is not supported (supported: {', '.join(sorted(_ACTIVATIONS))})")
    return _ACTIVATIONS[name]


def default_inv_freq(head_dim: int, theta: float) -> np.ndarray:
    """theta^(-2i/D) for i < D/2, in float32 as transformers computes it."""
    return (1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / head_dim))).astype(
        np.float32)


class RotaryEmbedding(nn.Module):
    """Rotary position embedding as Llama uses it: pairs (i, i + D/2) of each head rotated by
    position * theta^(-2i/D) (transformers' ``rotate_half`` layout)."""

    TABLE_POSITIONS = 4096  # positions kept precomputed (4 MB at head_dim 128); later ones are computed

    def __init__(self, head_dim: int, theta: float = 10000.0, scaling_factor: float = 1.0,
                 max_positions: int = TABLE_POSITIONS, inv_freq=None, attention_factor: float = 1.0):
        """``inv_freq``: the (head_dim / 2,) frequencies of a scaled rope (llama3, yarn), else theta's;
        ``scaling_factor`` divides them (linear scaling), as transformers does, in float32;
        ``attention_factor`` multiplies cos and sin (yarn's attention scaling)."""
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"RotaryEmbedding: head_dim must be even, got {head_dim}")
        self.head_dim = head_dim
        inv = default_inv_freq(head_dim, theta) if inv_freq is None else np.asarray(inv_freq, np.float32)
        if inv.shape != (head_dim // 2,):
            raise ValueError(f"RotaryEmbedding: inv_freq must have shape ({head_dim // 2},), got {inv.shape}")
        self.scaling_factor = float(scaling_factor)
        if self.scaling_factor != 1.0:
            inv = (inv / np.float32(self.scaling_factor)).astype(np.float32)
        self.inv_freq = inv
        self.attention_factor = float(attention_factor)
        # cos/sin of positions 0.. as buffers (not saved): a forward from position 0 slices them, so an
        # exported graph keeps the sequence length dynamic instead of baking in a table of the example's size
        cos, sin = self.cos_sin(np.arange(min(max_positions, self.TABLE_POSITIONS))[None])
        self.register_buffer("cos_table", cos, persistent=False)
        self.register_buffer("sin_table", sin, persistent=False)

    def cos_sin_range(self, start: int, t: int):
        """cos and sin of shape (1, 1, t, D) for positions start .. start + t - 1 (slices of the tables
        where they reach; the same values as ``cos_sin``)."""
        if start + t <= self.cos_table.shape[2]:
            return self.cos_table[:, :, start:start + t], self.sin_table[:, :, start:start + t]
        return self.cos_sin(np.arange(start, start + t)[None])

    def cos_sin_of(self, position_ids: Tensor):
        """cos_sin on int64 Tensor positions, as Tensor ops (an exported graph computes them from its inputs)."""
        return self._cos_sin_of(position_ids, Tensor._wrap(self.inv_freq))

    def _cos_sin_of(self, position_ids: Tensor, inv_freq: Tensor):
        freqs = position_ids.float().unsqueeze(-1) * inv_freq  # (B, T, D/2), float32
        emb = cat([freqs, freqs], dim=-1).unsqueeze(1)
        cos, sin = emb.cos(), emb.sin()
        if self.attention_factor != 1.0:
            cos, sin = cos * self.attention_factor, sin * self.attention_factor
        return cos, sin

    def cos_sin(self, position_ids: np.ndarray):
        """cos and sin of shape (B, 1, T, D) for int positions (B, T)."""
        return self._cos_sin(position_ids, self.inv_freq)

    def _cos_sin(self, position_ids: np.ndarray, inv_freq: np.ndarray):
        freqs = position_ids.astype(np.float32)[..., None] * inv_freq  # (B, T, D/2), float32 as transformers
        emb = np.concatenate([freqs, freqs], axis=-1)[:, None]
        cos, sin = np.cos(emb).astype(np.float32), np.sin(emb).astype(np.float32)
        if self.attention_factor != 1.0:  # transformers: cos() * attention_scaling, in float32
            cos, sin = cos * np.float32(self.attention_factor), sin * np.float32(self.attention_factor)
        return Tensor._wrap(cos), Tensor._wrap(sin)

    @staticmethod
    def apply(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        """x rotated; with cos/sin narrower than x's last dim (a partial rotary factor, Phi-3/Phi-4-mini)
        only its first cos.shape[-1] dims are, the rest pass through (transformers' order)."""
        rot = cos.shape[-1]
        if rot != x.shape[-1]:
            return cat([RotaryEmbedding.apply(x[..., :rot], cos, sin), x[..., rot:]], dim=-1)
        half = rot // 2
        return x * cos + cat([-x[..., half:], x[..., :half]], dim=-1) * sin


class LengthScaledRope(RotaryEmbedding):
    """A rope whose frequencies depend on how far a call reaches: theta's (or the short set: the tables) while
    its last position is below ``original_max``, ``inv_freq_for(L)`` past it, for L = max(position_ids) + 1
    per forward call, as transformers picks them (keys cached earlier keep their rotation)."""

    def inv_freq_for(self, length: int) -> np.ndarray:
        raise NotImplementedError

    def cos_sin(self, position_ids: np.ndarray):
        original = self.__dict__.get("original_max")  # None while the base class builds the tables
        if original is not None and position_ids.size and int(position_ids.max()) + 1 > original:
            return self._cos_sin(position_ids, self.inv_freq_for(int(position_ids.max()) + 1))
        return self._cos_sin(position_ids, self.inv_freq)

    def cos_sin_range(self, start: int, t: int):
        if start + t > self.original_max:
            return self.cos_sin(np.arange(start, start + t)[None])
        return super().cos_sin_range(start, t)

    def inv_freq_of(self, length: Tensor) -> Tensor:
        """``inv_freq_for`` as Tensor ops of a float32 scalar length (> original_max)."""
        raise NotImplementedError

    def cos_sin_of(self, position_ids: Tensor):
        """As ``cos_sin``, in Tensor ops: the call's length L = max(position_ids) + 1 is read in the graph, and
        the frequencies past the original context chosen by a Where on L, so an exported graph switches
        as the eager model does at every length."""
        from ...factories import where
        length = position_ids.amax().float() + 1
        inv = where(length > float(self.original_max), self.inv_freq_of(length), Tensor._wrap(self.inv_freq))
        return self._cos_sin_of(position_ids, inv)


class LongRopeEmbedding(LengthScaledRope):
    """Phi-3's longrope: frequencies divided by per-dimension ``short_factor``s, or by ``long_factor``s in
    a call whose last position reaches past ``original_max``. The tables hold the short set."""

    def __init__(self, rotary_dim: int, short_inv_freq, long_inv_freq, original_max: int,
                 attention_factor: float, max_positions: int):
        super().__init__(rotary_dim, max_positions=min(max_positions, original_max), inv_freq=short_inv_freq,
                         attention_factor=attention_factor)
        self.long_inv_freq = np.asarray(long_inv_freq, np.float32)
        self.original_max = int(original_max)

    def inv_freq_for(self, length: int) -> np.ndarray:
        return self.long_inv_freq

    def inv_freq_of(self, length: Tensor) -> Tensor:
        return Tensor._wrap(self.long_inv_freq)


class DynamicNTKRopeEmbedding(LengthScaledRope):
    """The "dynamic" (NTK-aware) rope: in a call whose last position reaches past ``original_max``
    (the config's max_position_embeddings), the base becomes theta * (factor * L / original_max - (factor -
    1)) ** (D / (D - 2)), in float32 as transformers computes it; shorter calls use theta's frequencies (the
    tables). (transformers' module also keeps the largest L it has seen for later calls that are shorter but
    still past ``original_max``; here each call's own L counts.)"""

    def __init__(self, rotary_dim: int, theta: float, factor: float, original_max: int, max_positions: int):
        super().__init__(rotary_dim, theta, max_positions=min(max_positions, original_max))
        self.theta, self.factor, self.original_max = float(theta), float(factor), int(original_max)

    def inv_freq_for(self, length: int) -> np.ndarray:
        """The frequencies of a call whose last position is length - 1 (> original_max)."""
        f32, dim = np.float32, self.head_dim
        stretch = (f32(self.factor) * f32(length) / f32(self.original_max) - f32(self.factor - 1)) ** f32(
            dim / (dim - 2))
        base = f32(self.theta) * stretch
        return (f32(1) / (base ** self._exponents())).astype(f32)

    def _exponents(self) -> np.ndarray:
        return np.arange(0, self.head_dim, 2, dtype=np.int64).astype(np.float32) / np.float32(self.head_dim)

    def inv_freq_of(self, length: Tensor) -> Tensor:
        # clamped to original_max, where the stretch is 1: the branch the Where drops stays finite (a shorter
        # length would raise a negative number to a fractional power)
        f32, dim = np.float32, self.head_dim
        length = length.clamp(min=float(self.original_max))
        stretch = (length * f32(self.factor) / f32(self.original_max) - f32(self.factor - 1)) ** f32(dim / (dim - 2))
        return 1.0 / ((stretch * f32(self.theta)) ** Tensor._wrap(self._exponents()))


# --- exported graphs' positions and masks, as Tensor ops of their inputs (export_with_past and export_seq2seq
# trace them) ---
def rows(table: Tensor, index: Tensor) -> Tensor:
    """table[index] for an int64 index tensor (an Embedding lookup on a table that is not a layer's)."""
    from ...ops.rnn import EmbeddingFunction
    return EmbeddingFunction.apply(table, index)


def key_places(mask: Tensor) -> Tensor:
    """Each column's index 0 .. L - 1 of a float (B, L) tensor, as a float (B, L) tensor."""
    return (mask * 0 + 1).cumsum(-1) - 1


def padding_bias(mask: Tensor) -> Tensor:
    """(B, 1, 1, L) additive bias of a float (B, L) mask: 0 for a token, minus float32's max for padding."""
    return ((mask - 1) * FLOAT32_MAX).unsqueeze(1).unsqueeze(1)


def _sequence(s, who: str, name: str) -> np.ndarray:
    """One sequence of ``name`` (a list of ids) as a 1-D array of its own dtype (ids_array then refuses floats and
    bools rather than a cast truncating them); an empty one as int64."""
    arr = np.asarray(s)
    if arr.ndim != 1:
        raise ValueError(f"{who}: {name} must be a list of sequences, each a list of ids, got an element of shape "
                         f"{arr.shape}")
    return arr if arr.size else arr.astype(np.int64)


class PackedBatch:
    """Token-id sequences of different lengths, for an ``encode_packed``: the real tokens stacked (``ids``,
    ``positions`` 0..n-1 each) and the right-padded (B, T) batch they sit in (``padded_ids``, ``real``), with the
    moves of a (total, n) projection into the padded (B, T, n) batch and back (``padded``, ``gather``) around
    attention. Checks: eval mode, ids in the vocabulary, at least one sequence, at most ``max_tokens`` each."""

    def __init__(self, model, sequences, vocab_size: int, max_tokens: int):
        who = self.who = f"{type(model).__name__}.encode_packed"
        if model.training:
            raise RuntimeError(f"{who}: inference only; call model.eval() first")
        self.rows = [ids_array(_sequence(s, who, "sequences")[None], who, vocab_size)[0] for s in sequences]
        if not self.rows:
            raise ValueError(f"{who}: sequences must hold at least one sequence")
        self.lengths = np.array([len(r) for r in self.rows])
        self.B, self.T = len(self.rows), int(self.lengths.max())
        if self.T > max_tokens:
            raise ValueError(f"{who}: {self.T} tokens exceed the {max_tokens} the model takes")
        self.real = np.arange(self.T)[None, :] < self.lengths[:, None]  # (B, T)
        self.where = np.flatnonzero(self.real)  # the real tokens' places in the (B * T) padded rows
        self.ids = np.concatenate(self.rows)

    def types(self, token_types, type_vocab_size: int) -> np.ndarray:
        """Each real token's type id, stacked as ``ids``: ``token_types`` one sequence of type ids per sequence (as
        ``sequences``), zeros where None."""
        if token_types is None:
            return np.zeros_like(self.ids)
        if len(token_types) != self.B or any(len(t) != n for t, n in zip(token_types, self.lengths)):
            raise ValueError(f"{self.who}: token_types must give one type id per token")
        return ids_array(np.concatenate([_sequence(t, self.who, "token_types") for t in token_types])[None],
                         f"{self.who} (token_types)", type_vocab_size)[0]

    def padded_ids(self) -> np.ndarray:
        out = np.zeros((self.B, self.T), np.int64)
        out[self.real] = self.ids
        return out

    def padded(self, t: Tensor) -> Tensor:
        """(total, n) -> (B, T, n), zeros at the padding."""
        out = np.zeros((self.B * self.T, t.shape[-1]), np.float32)
        out[self.where] = t.numpy()
        return Tensor._wrap(out.reshape(self.B, self.T, -1))

    def gather(self, t: Tensor) -> Tensor:
        """(B, T, n) -> (total, n): the real tokens' rows."""
        return Tensor._wrap(np.ascontiguousarray(t.numpy().reshape(self.B * self.T, -1)[self.where]))
