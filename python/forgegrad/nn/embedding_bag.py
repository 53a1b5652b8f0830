"""EmbeddingBag and F.embedding_bag: sums, means or maxima of bags of embedding rows, as torch's (the op is
ops/embedding_bag.py)."""
from __future__ import annotations

import numpy as np

from .. import grad_mode
from .._validate import check_bool
from ..ops.embedding_bag import MODES, EmbeddingBagFunction
from ..tensor import Tensor
from . import init
from .functional_misc import _renorm_
from .module import Module
from .parameter import Parameter
from .sparse import _embedding_weight, _float_dtype

__all__ = ["EmbeddingBag"]


def _indices(x, name):
    if x is None:
        return None
    if isinstance(x, Tensor):
        return x
    if isinstance(x, (np.ndarray, list, tuple)):
        return Tensor._stored(np.asarray(x))
    raise TypeError(f"embedding_bag: {name} must be a forgegrad.Tensor of indices, got {type(x).__name__}")


def embedding_bag(input, weight, offsets=None, max_norm=None, norm_type: float = 2, scale_grad_by_freq: bool = False,
                  mode: str = "mean", sparse: bool = False, per_sample_weights=None, include_last_offset: bool = False,
                  padding_idx=None):
    """``torch.nn.functional.embedding_bag``: (bags, embedding_dim), each bag's rows of ``weight`` reduced by
    ``mode`` ("sum", "mean" (the default), "max").

    input: 2-D (bags, L) with offsets None, or 1-D with ``offsets`` (1-D, offsets[0] == 0, non-decreasing; with
    ``include_last_offset`` one more, the end of the last bag, equal to len(input)). ``per_sample_weights``
    (input's shape, mode "sum" only) scales each row. ``padding_idx``: entries equal to it are left out of their
    bag. ``max_norm``: the rows input refers to renormalised in place first, as F.embedding's.
    ``scale_grad_by_freq``: each row's gradient divided by how often input holds it (not with "max").
    sparse=True: the weight's gradient is a sparse COO tensor (one entry per kept position), as torch's; not with
    mode "max" (ValueError) or scale_grad_by_freq (RuntimeError), as torch."""
    if not isinstance(weight, Tensor):
        raise TypeError(f"embedding_bag: weight must be a forgegrad.Tensor, got {type(weight).__name__}")
    input, offsets = _indices(input, "input"), _indices(offsets, "offsets")
    if per_sample_weights is not None and not isinstance(per_sample_weights, Tensor):
        raise TypeError(f"embedding_bag: per_sample_weights must be a forgegrad.Tensor or None, got "
                        f"{type(per_sample_weights).__name__}")
    sparse = check_bool(sparse, "embedding_bag: sparse")
    if mode not in MODES:
        raise ValueError(f"embedding_bag: mode must be one of {MODES}, got {mode!r}")
    if max_norm is not None:
        if isinstance(max_norm, bool) or not isinstance(max_norm, (int, float, np.number)):
            raise TypeError(f"embedding_bag: max_norm must be a number or None, got {max_norm!r}")
        if weight.ndim != 2:
            raise ValueError(f"embedding_bag: weight must be 2-D (num_embeddings, embedding_dim), got shape "
                             f"{tuple(weight.shape)}")
        if grad_mode.recorder() is not None:
            # an export: every row renormed in a copy (see F.embedding), the weight itself left as it is
            weight = Tensor._wrap_exact(weight._data.copy())
            _renorm_(weight, Tensor._wrap_exact(np.arange(weight.shape[0], dtype=np.int64)), float(max_norm),
                     float(norm_type))
        else:
            _renorm_(weight, input, float(max_norm), float(norm_type))
    if sparse:  # the weight's gradient is a sparse COO tensor (forgegrad.sparse)
        if mode == "max":
            raise ValueError("embedding_bag: max mode does not support sparse weights")
        if scale_grad_by_freq:  # torch raises this at backward; here before any work
            raise RuntimeError("embedding_backward: scale_grad_by_freq not supported with sparse gradients")
        from ..sparse._embedding_bag import EmbeddingBagSparse
        return EmbeddingBagSparse.apply(weight, input, offsets, per_sample_weights, mode, include_last_offset,
                                        padding_idx)
    return EmbeddingBagFunction.apply(weight, input, offsets, per_sample_weights, mode=mode,
                                      include_last_offset=include_last_offset, padding_idx=padding_idx,
                                      scale_grad_by_freq=scale_grad_by_freq)


EmbeddingBagFunction.op.functional = embedding_bag


class EmbeddingBag(Module):
    """``EmbeddingBag(num_embeddings, embedding_dim, max_norm=None, norm_type=2.0, scale_grad_by_freq=False,
    mode="mean", sparse=False, _weight=None, include_last_offset=False, padding_idx=None)``, as torch's.

    ``forward(input, offsets=None, per_sample_weights=None)`` -> (bags, embedding_dim), see F.embedding_bag. The
    weight starts from N(0, 1), its row ``padding_idx`` (negative counts from the end) at zero."""

    def __init__(self, num_embeddings: int, embedding_dim: int, max_norm=None, norm_type: float = 2.0,
                 scale_grad_by_freq: bool = False, mode: str = "mean", sparse: bool = False, _weight=None,
                 include_last_offset: bool = False, padding_idx=None):
        super().__init__()
        for name, v in (("num_embeddings", num_embeddings), ("embedding_dim", embedding_dim)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
                raise ValueError(f"EmbeddingBag: {name} must be a positive int, got {v!r}")
        self.num_embeddings, self.embedding_dim = int(num_embeddings), int(embedding_dim)
        if max_norm is not None and (isinstance(max_norm, bool) or not isinstance(max_norm, (int, float, np.number))
                                     or max_norm <= 0):
            raise ValueError(f"EmbeddingBag: max_norm must be a positive number or None, got {max_norm!r}")
        if isinstance(norm_type, bool) or not isinstance(norm_type, (int, float, np.number)):
            raise TypeError(f"EmbeddingBag: norm_type must be a number, got {norm_type!r}")
        if mode not in MODES:
            raise ValueError(f"EmbeddingBag: mode must be one of {MODES}, got {mode!r}")
        self.max_norm, self.norm_type, self.mode = max_norm, norm_type, mode
        self.scale_grad_by_freq = check_bool(scale_grad_by_freq, "EmbeddingBag: scale_grad_by_freq")
        if self.scale_grad_by_freq and mode == "max":
            raise ValueError("EmbeddingBag: scale_grad_by_freq=True is not supported with mode='max' (as torch)")
        self.include_last_offset = check_bool(include_last_offset, "EmbeddingBag: include_last_offset")
        self.sparse = check_bool(sparse, "EmbeddingBag: sparse")
        if padding_idx is not None:
            if isinstance(padding_idx, bool) or not isinstance(padding_idx, (int, np.integer)):
                raise TypeError(f"EmbeddingBag: padding_idx must be an int or None, got {padding_idx!r}")
            if not -self.num_embeddings <= padding_idx < self.num_embeddings:
                raise ValueError(f"EmbeddingBag: padding_idx must be within num_embeddings "
                                 f"[-{self.num_embeddings}, {self.num_embeddings}), got {padding_idx}")
            padding_idx = int(padding_idx) % self.num_embeddings
        self.padding_idx = padding_idx
        self.weight = Parameter(_embedding_weight("EmbeddingBag", (self.num_embeddings, self.embedding_dim),
                                                  padding_idx, _weight))

    def reset_parameters(self) -> None:
        init.normal_(self.weight)
        if self.padding_idx is not None:
            self.weight._data[self.padding_idx] = 0.0

    @classmethod
    def from_pretrained(cls, embeddings, freeze: bool = True, max_norm=None, norm_type: float = 2.0,
                        scale_grad_by_freq: bool = False, mode: str = "mean", sparse: bool = False,
                        include_last_offset: bool = False, padding_idx=None):
        """An EmbeddingBag holding a copy of ``embeddings`` (2-D); frozen unless ``freeze=False``."""
        arr = np.array(embeddings._data if isinstance(embeddings, Tensor) else embeddings, _float_dtype(embeddings))
        if arr.ndim != 2:
            raise ValueError(f"EmbeddingBag.from_pretrained: embeddings must be 2-D, got shape {arr.shape}")
        m = cls(arr.shape[0], arr.shape[1], max_norm=max_norm, norm_type=norm_type,
                scale_grad_by_freq=scale_grad_by_freq, mode=mode, sparse=sparse, _weight=Tensor._wrap_exact(arr),
                include_last_offset=include_last_offset, padding_idx=padding_idx)
        m.weight.requires_grad = not check_bool(freeze, "freeze")
        return m

    def forward(self, input, offsets=None, per_sample_weights=None):
        return embedding_bag(input, self.weight, offsets, self.max_norm, self.norm_type, self.scale_grad_by_freq,
                             self.mode, self.sparse, per_sample_weights, self.include_last_offset, self.padding_idx)

    def extra_repr(self) -> str:
        s = f"{self.num_embeddings}, {self.embedding_dim}"
        s += f", max_norm={self.max_norm}" if self.max_norm is not None else ""
        s += f", norm_type={self.norm_type}" if self.norm_type != 2 else ""
        s += ", scale_grad_by_freq=True" if self.scale_grad_by_freq else ""
        s += f", mode={self.mode!r}"
        return s + (f", padding_idx={self.padding_idx}" if self.padding_idx is not None else "")
