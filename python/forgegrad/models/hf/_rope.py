"""Rotary position settings of Hugging Face configs, computed as transformers computes them (float32
where it works in float32): the plain rope, linear scaling, dynamic (NTK) scaling, Llama 3.1's bands, YaRN
and Phi-3's longrope, over all of a head's dimensions or the first ``partial_rotary_factor`` of them."""
from __future__ import annotations

import math

import numpy as np

from ._layers import DynamicNTKRopeEmbedding, LongRopeEmbedding, RotaryEmbedding, default_inv_freq

__all__ = ["rope_from_config", "llama3_inv_freq", "yarn_inv_freq", "longrope_inv_freqs"]

SUPPORTED = ("default", "linear", "dynamic", "llama3", "yarn", "longrope")


def rope_from_config(cfg: dict, head_dim: int, max_positions: int) -> RotaryEmbedding:
    """The rotary embedding a config describes. transformers 5 keeps rope settings in ``rope_parameters``;
    older configs in ``rope_theta``, ``rope_scaling`` and ``partial_rotary_factor``."""
    params = dict(cfg.get("rope_parameters") or cfg.get("rope_scaling") or {})
    theta = params.get("rope_theta", cfg.get("rope_theta", 10000.0))
    kind = params.get("rope_type", params.get("type", "default"))
    factor = params.get("partial_rotary_factor", cfg.get("partial_rotary_factor", 1.0))
    dim = _rotary_dim(factor, head_dim, odd=kind in ("default", "linear"))
    scaling = _rope_param(params, "factor", kind) if kind == "linear" else 1.0
    if kind in ("default", "linear"):
        # an odd dim (head_dim 12 at GPT-NeoX's 0.25: 3) as transformers: theta^(-2i/dim) for 2i < dim, so one more
        # dimension rotated than dim
        return RotaryEmbedding(dim + dim % 2, theta, scaling_factor=scaling, max_positions=max_positions,
                               inv_freq=default_inv_freq(dim, theta) if dim % 2 else None)
    if kind == "dynamic":
        original = cfg.get("max_position_embeddings")
        if isinstance(original, bool) or not isinstance(original, int) or original <= 0:
            raise ValueError(f"LlamaForCausalLM: the dynamic rope needs max_position_embeddings > 0, got {original!r}")
        return DynamicNTKRopeEmbedding(dim, theta, _rope_param(params, "factor", kind), original, max_positions)
    if kind == "llama3":
        return RotaryEmbedding(dim, theta, max_positions=max_positions,
                               inv_freq=llama3_inv_freq(default_inv_freq(dim, theta), params, cfg))
    if kind == "yarn":
        inv_freq, attention_factor = yarn_inv_freq(dim, theta, params, cfg)
        return RotaryEmbedding(dim, theta, max_positions=max_positions, inv_freq=inv_freq,
                               attention_factor=attention_factor)
    if kind == "longrope":
        short, long, original, attention_factor = longrope_inv_freqs(dim, theta, params, cfg)
        return LongRopeEmbedding(dim, short, long, original, attention_factor, max_positions)
    raise ValueError(f"LlamaForCausalLM: rope type {kind!r} is not supported yet (supported: {', '.join(SUPPORTED)})")


def _rotary_dim(factor, head_dim: int, odd: bool = False) -> int:
    """The rotated dimensions of a head: int(head_dim * partial_rotary_factor), as transformers. ``odd``: an odd
    count is taken (the plain and linear ropes, see rope_from_config), else it must be even."""
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not 0 < factor <= 1:
        raise ValueError(f"LlamaForCausalLM: partial_rotary_factor must be in (0, 1], got {factor!r}")
    dim = int(head_dim * factor)
    if dim < 1 or (dim % 2 and not odd):
        raise ValueError(f"LlamaForCausalLM: partial_rotary_factor {factor} of head_dim {head_dim} rotates {dim} "
                         "dimensions; that must be " + ("at least 1" if odd else "an even number >= 2 for this rope"))
    if dim % 2 and dim == head_dim:
        raise ValueError(f"LlamaForCausalLM: partial_rotary_factor {factor} rotates all {head_dim} dimensions of a "
                         "head; an odd head_dim must keep at least one dimension unrotated")
    return dim


def _rope_param(params: dict, key: str, kind: str, default=None) -> float:
    value = params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ValueError(f"LlamaForCausalLM: the {kind} rope needs {key!r} > 0 in rope_parameters, got {value!r}")
    return float(value)


def llama3_inv_freq(inv_freq: np.ndarray, params: dict, cfg: dict) -> np.ndarray:
    """Llama 3.1's rope scaling (transformers' ``_compute_llama3_parameters``, in float32 as it
    computes): wavelengths longer than original_max_position_embeddings / low_freq_factor are divided
    by ``factor``, those shorter than it / high_freq_factor kept, the band between interpolated."""
    factor = _rope_param(params, "factor", "llama3")
    low = _rope_param(params, "low_freq_factor", "llama3")
    high = _rope_param(params, "high_freq_factor", "llama3")
    old = _rope_param(params, "original_max_position_embeddings", "llama3", cfg.get("max_position_embeddings"))
    if not high > low:
        raise ValueError(f"LlamaForCausalLM: the llama3 rope needs high_freq_factor ({high}) > low_freq_factor ({low})")
    low_wavelen, high_wavelen = old / low, old / high
    wavelen = (2 * math.pi / inv_freq).astype(np.float32)
    scaled = np.where(wavelen > low_wavelen, inv_freq / np.float32(factor), inv_freq).astype(np.float32)
    smooth = ((np.float32(old) / wavelen - np.float32(low)) / np.float32(high - low)).astype(np.float32)
    smoothed = (1 - smooth) * scaled / np.float32(factor) + smooth * scaled
    medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
    return np.where(medium, smoothed, scaled).astype(np.float32)


def yarn_inv_freq(head_dim: int, theta: float, params: dict, cfg: dict):
    """YaRN (transformers' ``_compute_yarn_parameters``, float32 where it computes in float32): each
    frequency blends the original (extrapolation) and the one divided by ``factor`` (interpolation) by a
    linear ramp between the dimensions that turn beta_fast and beta_slow times over the original context;
    cos and sin are then scaled by the attention factor (0.1 ln(factor) + 1 unless the config gives it,
    or DeepSeek's mscale ratio). Returns (inv_freq, attention_factor)."""
    old = _rope_param(params, "original_max_position_embeddings", "yarn")
    factor = params.get("factor")
    factor = cfg.get("max_position_embeddings", old) / old if factor is None else _rope_param(params, "factor", "yarn")

    def mscale_of(scale, m=1.0):
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    attention_factor = params.get("attention_factor")
    if attention_factor is None:
        m, m_all = params.get("mscale"), params.get("mscale_all_dim")
        attention_factor = mscale_of(factor, m) / mscale_of(factor, m_all) if m and m_all else mscale_of(factor)
    else:
        attention_factor = _rope_param(params, "attention_factor", "yarn")
    beta_fast, beta_slow = params.get("beta_fast") or 32, params.get("beta_slow") or 1
    for name, value in (("beta_fast", beta_fast), ("beta_slow", beta_slow)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
            raise ValueError(f"LlamaForCausalLM: the yarn rope needs {name!r} > 0 in rope_parameters, got {value!r}")

    def correction_dim(rotations):  # the dimension that turns `rotations` times over the original context
        return head_dim * math.log(old / (rotations * 2 * math.pi)) / (2 * math.log(theta))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if params.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, head_dim - 1)
    if low == high:
        high += 0.001  # as transformers: no division by zero
    pos_freqs = (np.float32(theta) ** (np.arange(0, head_dim, 2).astype(np.float32) / np.float32(head_dim)))
    pos_freqs = pos_freqs.astype(np.float32)
    extrapolation = (np.float32(1.0) / pos_freqs).astype(np.float32)
    interpolation = (np.float32(1.0) / (np.float32(factor) * pos_freqs)).astype(np.float32)
    ramp = np.clip((np.arange(head_dim // 2, dtype=np.float32) - np.float32(low)) / np.float32(high - low), 0, 1)
    keep = (np.float32(1.0) - ramp.astype(np.float32)).astype(np.float32)  # weight of the extrapolation
    inv_freq = interpolation * (np.float32(1.0) - keep) + extrapolation * keep
    return inv_freq.astype(np.float32), float(attention_factor)


def longrope_inv_freqs(dim: int, theta: float, params: dict, cfg: dict):
    """Phi-3's longrope (transformers' ``_compute_longrope_parameters``): theta's frequencies divided by
    ``short_factor`` (one per rotated pair) or by ``long_factor`` past ``original_max_position_embeddings``;
    cos and sin scaled by sqrt(1 + ln(factor) / ln(original)) unless the config gives ``attention_factor``
    (factor: the config's, else max_position_embeddings / original). Returns (short, long, original,
    attention_factor)."""
    original = params.get("original_max_position_embeddings", cfg.get("original_max_position_embeddings"))
    original = int(_rope_param({"original_max_position_embeddings": original}, "original_max_position_embeddings",
                               "longrope"))
    sets = []
    for key in ("short_factor", "long_factor"):
        f = params.get(key)
        if not isinstance(f, (list, tuple)) or len(f) != dim // 2 or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < math.inf for v in f):
            raise ValueError(f"LlamaForCausalLM: the longrope rope needs {key!r}: {dim // 2} positive numbers (one "
                             f"per rotated pair), got {f!r}")
        sets.append(np.asarray(f, np.float32))
    factor = params.get("factor")
    factor = cfg.get("max_position_embeddings", original) / original if factor is None else \
        _rope_param(params, "factor", "longrope")
    attention_factor = params.get("attention_factor")
    if attention_factor is None:
        attention_factor = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(original))
    else:
        attention_factor = _rope_param(params, "attention_factor", "longrope")
    shape = (np.float32(theta) ** (np.arange(0, dim, 2).astype(np.float32) / np.float32(dim))).astype(np.float32)
    short, long = ((np.float32(1.0) / (ext * shape)).astype(np.float32) for ext in sets)
    return short, long, original, float(attention_factor)
