"""Position encodings for Transformers: learned, sinusoidal and rotary (RoPE).

Attention by itself does not see the order of its inputs; these layers give it positions.

- ``LearnedPositionalEmbedding(max_len, embed_dim)``: one learned vector per position (GPT-2's
  ``wpe``), added to the input ``x`` (N, T, E).
- ``SinusoidalPositionalEncoding(embed_dim, max_len)``: the fixed encoding of "Attention Is All You
  Need" (``sinusoidal_position_encoding``): ``pe[t, 2i] = sin(t / 10000^(2i/E))``,
  ``pe[t, 2i+1] = cos(...)``, added to ``x`` (N, T, E) (or (T, N, E) with ``batch_first=False``).
- ``RotaryEmbedding(head_dim, max_len, base=10000)``: rotary position embedding (RoFormer, used by
  LLaMA/GPT-NeoX), applied to queries and keys after the head split (N, H, T, D): each pair
  (x[i], x[i + D/2]) is rotated by the angle ``t * base^(-2i/D)``, so q.k depends on positions only
  through their difference. ``apply_rotary_pos_emb(x, cos, sin)`` is the same on its own; its
  convention is the "rotate half" one of Hugging Face's LLaMA (checked against it in the tests).

Every position beyond the first T is sliced off a table of ``max_len`` rows, so an exported ONNX
graph keeps the sequence length dynamic (up to ``max_len``).
"""
from __future__ import annotations

import numpy as np

from .. import devices
from .._args import positive_int
from .._validate import check_bool, check_float
from ..factories import cat
from . import init
from .activation import Dropout
from .module import Module
from .parameter import Parameter

__all__ = ["LearnedPositionalEmbedding", "SinusoidalPositionalEncoding", "RotaryEmbedding",
           "sinusoidal_position_encoding", "rotary_cos_sin", "apply_rotary_pos_emb"]


def sinusoidal_position_encoding(length: int, embed_dim: int, base: float = 10000.0) -> np.ndarray:
    """The (length, embed_dim) float32 table of "Attention Is All You Need": even columns sin,
    odd columns cos of ``t / base^(2i / embed_dim)`` (an odd embed_dim drops the last cos column)."""
    length = positive_int(length, "length", "sinusoidal_position_encoding")
    embed_dim = positive_int(embed_dim, "embed_dim", "sinusoidal_position_encoding")
    pos = np.arange(length, dtype=np.float64)[:, None]
    div = np.exp(np.arange(0, embed_dim, 2, dtype=np.float64) * (-np.log(base) / embed_dim))
    pe = np.zeros((length, embed_dim), np.float64)
    pe[:, 0::2] = np.sin(pos * div)
    pe[:, 1::2] = np.cos(pos * div)[:, : embed_dim // 2]
    return pe.astype(np.float32)


def rotary_cos_sin(length: int, head_dim: int, base: float = 10000.0):
    """(cos, sin), each (length, head_dim) float32: angle ``t * base^(-2i/head_dim)`` for the pair i,
    repeated for both halves (the "rotate half" layout)."""
    length = positive_int(length, "length", "rotary_cos_sin")
    head_dim = positive_int(head_dim, "head_dim", "rotary_cos_sin")
    if head_dim % 2:
        raise ValueError(f"rotary_cos_sin: head_dim must be even, got {head_dim}")
    inv_freq = 1.0 / (base ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    ang = np.arange(length, dtype=np.float64)[:, None] * inv_freq[None, :]
    ang = np.concatenate([ang, ang], axis=1)
    return np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)


def _rotate_half(x):
    half = x.shape[-1] // 2
    return cat([-x[..., half:], x[..., :half]], dim=-1)


def apply_rotary_pos_emb(x, cos, sin):
    """``x * cos + rotate_half(x) * sin``: rotary position embedding of ``x`` (..., T, D) with
    ``cos``/``sin`` broadcastable to it (e.g. (T, D) from ``rotary_cos_sin``)."""
    if x.shape[-1] % 2:
        raise ValueError(f"apply_rotary_pos_emb: the last dim of x must be even, got shape {tuple(x.shape)}")
    return x * cos + _rotate_half(x) * sin


def _check_length(x, seq_dim, max_len, owner):
    if x.ndim < 2:
        raise ValueError(f"{owner}: expected input with a sequence dim, got shape {tuple(x.shape)}")
    t = x.shape[seq_dim]
    if t > max_len:
        raise ValueError(f"{owner}: sequence length {t} exceeds max_len={max_len}")
    return t


class LearnedPositionalEmbedding(Module):
    """``LearnedPositionalEmbedding(max_len, embed_dim)``: ``forward(x)`` returns ``x + weight[:T]``
    for x (N, T, E) (batch first); ``weight`` (max_len, E) starts from N(0, 0.02) (GPT-2)."""

    def __init__(self, max_len: int, embed_dim: int):
        super().__init__()
        self.max_len = positive_int(max_len, "max_len", "LearnedPositionalEmbedding")
        self.embed_dim = positive_int(embed_dim, "embed_dim", "LearnedPositionalEmbedding")
        self.weight = Parameter(devices.empty((self.max_len, self.embed_dim)))
        init.normal_(self.weight, 0.0, 0.02)

    def forward(self, x):
        t = _check_length(x, -2, self.max_len, "LearnedPositionalEmbedding")
        return x + self.weight[:t]

    def extra_repr(self) -> str:
        return f"{self.max_len}, {self.embed_dim}"


class SinusoidalPositionalEncoding(Module):
    """``SinusoidalPositionalEncoding(embed_dim, max_len=5000, dropout=0.0, batch_first=True)``:
    ``forward(x)`` returns ``dropout(x + pe[:T])``; ``pe`` is a non-persistent buffer (not in the
    state_dict: it is a function of the sizes)."""

    def __init__(self, embed_dim: int, max_len: int = 5000, dropout: float = 0.0, batch_first: bool = True,
                 base: float = 10000.0):
        super().__init__()
        self.embed_dim = positive_int(embed_dim, "embed_dim", "SinusoidalPositionalEncoding")
        self.max_len = positive_int(max_len, "max_len", "SinusoidalPositionalEncoding")
        self.batch_first = check_bool(batch_first, "batch_first")
        self.dropout = Dropout(check_float(dropout, "dropout", low=0.0, high=1.0))
        pe = sinusoidal_position_encoding(self.max_len, self.embed_dim, base)
        self.register_buffer("pe", pe if self.batch_first else pe[:, None, :], persistent=False)

    def forward(self, x):
        t = _check_length(x, -2 if self.batch_first else 0, self.max_len, "SinusoidalPositionalEncoding")
        return self.dropout(x + self.pe[:t])

    def extra_repr(self) -> str:
        return f"{self.embed_dim}, max_len={self.max_len}, batch_first={self.batch_first}"


class RotaryEmbedding(Module):
    """``RotaryEmbedding(head_dim, max_len=2048, base=10000.0)``: ``forward(q, k, offset=0)`` returns
    q and k (N, H, T, D) rotated for positions offset..offset+T-1 (offset: the length of a cached
    prefix). ``cos``/``sin`` are non-persistent buffers (max_len, head_dim)."""

    def __init__(self, head_dim: int, max_len: int = 2048, base: float = 10000.0):
        super().__init__()
        self.head_dim = positive_int(head_dim, "head_dim", "RotaryEmbedding")
        self.max_len = positive_int(max_len, "max_len", "RotaryEmbedding")
        self.base = check_float(base, "base", low=1.0)
        cos, sin = rotary_cos_sin(self.max_len, self.head_dim, self.base)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def forward(self, q, k, offset: int = 0):
        for x, name in ((q, "q"), (k, "k")):
            if x.shape[-1] != self.head_dim:
                raise ValueError(f"RotaryEmbedding: {name} must have head_dim={self.head_dim} in its last dim, got "
                                 f"shape {tuple(x.shape)}")
        if offset < 0:
            raise ValueError(f"RotaryEmbedding: offset must be >= 0, got {offset}")

        def rotate(x, name):
            t = _check_length(x, -2, self.max_len - offset, f"RotaryEmbedding ({name}, offset {offset})")
            cos, sin = self.cos[offset:offset + t], self.sin[offset:offset + t]
            return apply_rotary_pos_emb(x, cos, sin)

        return rotate(q, "q"), rotate(k, "k")

    def extra_repr(self) -> str:
        return f"{self.head_dim}, max_len={self.max_len}, base={self.base}"
