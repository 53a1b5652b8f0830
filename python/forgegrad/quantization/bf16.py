"""bfloat16 weights for Linear layers, float32 everywhere else (``quantize_weight_only(model,
dtype="bfloat16")``).

Most published checkpoints store their weights in bfloat16 (the upper 16 bits of a float32).
``from_pretrained`` widens them to float32, which is exact; rounding those weights back to bfloat16
gives the checkpoint's own bits, so a model whose Linear layers hold them computes exactly what the
float32 model computes (the kernel widens each weight as it reads it and runs the float32 GEMM's
arithmetic: the same bits) in half the memory, and a decode step streams half the bytes.

numpy has no bfloat16 dtype: the weights are held as uint16 bit patterns.
"""
from __future__ import annotations

import numpy as np

from .. import _C
from .._safetensors_read import bfloat16_to_float32
from .._args import positive_int
from ..grad_mode import recorder
from ..nn.module import Module
from ..tensor import Tensor
from ._traced import BF16EmbeddingCall, QuantizedLayerCall
from .modules import weight_only_rows

__all__ = ["WeightOnlyBF16Linear", "BF16Embedding", "to_bfloat16_bits", "from_bfloat16_bits"]


def to_bfloat16_bits(x) -> np.ndarray:
    """float32 values rounded to bfloat16 (to nearest, ties to even, as torch's ``.to(torch.bfloat16)``),
    as uint16 bit patterns. NaN stays NaN; a finite value past bfloat16's largest rounds to infinity."""
    a = np.ascontiguousarray(x, dtype=np.float32)
    u = a.view(np.uint32)
    with np.errstate(over="ignore"):
        bits = ((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)).astype(np.uint16)
    nan = np.isnan(a)
    if nan.any():  # quiet NaN with the sign kept (the rounding above could carry a NaN into infinity)
        bits[nan] = ((u[nan] >> np.uint32(16)) | np.uint32(0x40)).astype(np.uint16)
    return bits


def from_bfloat16_bits(bits) -> np.ndarray:
    """uint16 bfloat16 bit patterns widened to float32 (exact)."""
    b = np.asarray(bits)
    if b.dtype != np.uint16:
        raise TypeError(f"from_bfloat16_bits: bits must be uint16, got {b.dtype}")
    return bfloat16_to_float32(b)


class WeightOnlyBF16Linear(Module):
    """y = x W^T + b with W held in bfloat16 and x, b, y in float32: the float32 Linear's result for the
    weight rounded to bfloat16, bit for bit (``forgegrad._C.quant.linear_bf16``). Inference only (no
    gradient); ``state_dict`` / ``forgegrad.save`` store ``weight`` as uint16 bit patterns and ``bias``
    as float32."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.in_features = positive_int(in_features, "in_features", "WeightOnlyBF16Linear")
        self.out_features = positive_int(out_features, "out_features", "WeightOnlyBF16Linear")
        self.register_buffer("weight", Tensor._wrap(np.zeros((self.out_features, self.in_features), np.uint16)))
        self.register_buffer("bias", Tensor._wrap(np.zeros(self.out_features, np.float32)) if bias else None)

    @classmethod
    def from_float(cls, linear, **_ignored) -> "WeightOnlyBF16Linear":
        m = cls(linear.in_features, linear.out_features, linear.bias is not None)
        m.set_weight(np.asarray(linear.weight._data, dtype=np.float32),
                     None if linear.bias is None else np.asarray(linear.bias._data, np.float32))
        return m

    def set_weight(self, w: np.ndarray, bias=None) -> None:
        """Round float32 weights (out_features, in_features) to bfloat16 into this module."""
        w = np.asarray(w, dtype=np.float32)
        if w.shape != self.weight.shape:
            raise ValueError(f"WeightOnlyBF16Linear: weight must have shape {self.weight.shape}, got {w.shape}")
        bits = to_bfloat16_bits(w)
        if not np.isfinite(from_bfloat16_bits(bits)).all():
            raise ValueError("WeightOnlyBF16Linear: the weight holds NaN or infinity, or a value past bfloat16's "
                             "largest (about 3.39e38)")
        self.weight._data[...] = bits
        if bias is not None and self.bias is not None:
            self.bias._data[...] = bias

    def dequantized_weight(self) -> np.ndarray:
        """The weight widened to float32 (out_features, in_features)."""
        return from_bfloat16_bits(self.weight._data)

    def forward(self, input):
        if not isinstance(input, Tensor):
            raise TypeError(f"WeightOnlyBF16Linear: input must be a forgegrad.Tensor, got {type(input).__name__}")
        if input.dtype != np.float32:
            raise TypeError(f"WeightOnlyBF16Linear: input must be float32, got {input.dtype}")
        if recorder() is not None:  # under trace() (the ONNX exporter): one recorded op
            return QuantizedLayerCall.apply(input, self)
        return Tensor._wrap(self._compute(input._data))

    def _compute(self, x: np.ndarray) -> np.ndarray:
        return weight_only_rows(self, x, "WeightOnlyBF16Linear", lambda x2: _C.quant.linear_bf16(
            x2, self.weight._data, None if self.bias is None else self.bias._data))

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                "dtype=bfloat16 (weights only)")


class BF16Embedding(Module):
    """A token embedding table held in bfloat16: ``forward(ids)`` gives the rows widened to float32 (exact), so
    outputs equal a float32 ``nn.Embedding`` holding the widened table. A tied LM head can share the same
    bit patterns (``from_pretrained(DIR, dtype="bfloat16")`` does). Inference only (no gradient); exports to
    ONNX as a Gather from a BFLOAT16 table and a Cast."""

    def __init__(self, num_embeddings: int, embedding_dim: int):
        super().__init__()
        self.num_embeddings = positive_int(num_embeddings, "num_embeddings", "BF16Embedding")
        self.embedding_dim = positive_int(embedding_dim, "embedding_dim", "BF16Embedding")
        self.register_buffer("weight", Tensor._wrap(np.zeros((self.num_embeddings, self.embedding_dim), np.uint16)))

    def rows(self, ids) -> np.ndarray:
        """float32 rows (*ids.shape, embedding_dim) of integer ids in [0, num_embeddings)."""
        idx = np.asarray(ids)
        if idx.dtype.kind not in "iu":
            raise TypeError(f"BF16Embedding: indices must be integers, got {idx.dtype}")
        n = self.num_embeddings
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise IndexError(f"BF16Embedding: index out of range: indices must be in [0, {n}), got values in "
                             f"[{idx.min()}, {idx.max()}]")
        return from_bfloat16_bits(self.weight._data[idx])

    def forward(self, input):
        ids = input if isinstance(input, Tensor) else Tensor._wrap(np.asarray(input))
        if recorder() is not None:  # under trace() (the ONNX exporter): one recorded op
            return BF16EmbeddingCall.apply(ids, self)
        return Tensor._wrap(self.rows(ids._data))

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, dtype=bfloat16"
