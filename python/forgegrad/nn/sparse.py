"""Embedding: a lookup table of learnable vectors, as torch.nn.Embedding."""
from __future__ import annotations

import numpy as np

from .. import devices
from ..ops.rnn import EmbeddingFunction as _EmbeddingFn
from ..tensor import Tensor
from . import init
from .module import Module
from .parameter import Parameter

__all__ = ["Embedding"]


class Embedding(Module):
    """``Embedding(num_embeddings, embedding_dim, padding_idx=None, max_norm=None, norm_type=2.0)``.

    ``forward(indices)`` maps an int64 tensor (or array) of any shape (*) to (*, embedding_dim).
    The weight (num_embeddings, embedding_dim) starts from N(0, 1) as in torch; the row
    ``padding_idx`` starts at zero and never receives a gradient, so it stays the padding vector.
    A negative padding_idx counts from the end. max_norm: the rows a forward looks up whose norm_type-norm
    exceeds it are first scaled to it, in place (torch's embedding_renorm_, as F.embedding).
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx=None, max_norm=None, norm_type=2.0,
                 scale_grad_by_freq=False, sparse=False, _weight=None):
        super().__init__()
        # the unsupported options raise here, at construction, with F.embedding's message
        if scale_grad_by_freq:
            raise NotImplementedError("Embedding: scale_grad_by_freq=True is not supported by forgegrad")
        if sparse:
            raise NotImplementedError("Embedding: sparse=True (sparse gradients) is not supported by forgegrad")
        if max_norm is not None and (isinstance(max_norm, bool) or not isinstance(max_norm, (int, float))
                                     or max_norm <= 0):
            raise ValueError(f"Embedding: max_norm must be a positive number or None, got {max_norm!r}")
        self.max_norm, self.norm_type = max_norm, float(norm_type)
        self.scale_grad_by_freq, self.sparse = False, False
        for name, v in (("num_embeddings", num_embeddings), ("embedding_dim", embedding_dim)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
                raise ValueError(f"Embedding: {name} must be a positive int, got {v!r}")
        self.num_embeddings, self.embedding_dim = int(num_embeddings), int(embedding_dim)
        if padding_idx is not None:
            if not -self.num_embeddings <= padding_idx < self.num_embeddings:
                raise ValueError("Embedding: padding_idx must be within num_embeddings")
            padding_idx = int(padding_idx) % self.num_embeddings
        self.padding_idx = padding_idx
        if _weight is None:
            # on the default device (meta: no memory, nothing to initialise); drawn on the host for any
            # other device, so it gets the CPU's numbers
            dev = devices.default_device()
            w = devices.empty((self.num_embeddings, self.embedding_dim), device_name=dev if dev == "meta" else "cpu")
            init.normal_(Tensor._wrap(w))
            if padding_idx is not None and devices.has_data(w):
                w[padding_idx] = 0.0
            if dev not in ("cpu", "meta"):
                w = devices.transfer(w, dev)
        else:
            w = np.asarray(_weight._data if isinstance(_weight, Tensor) else _weight, _float_dtype(_weight))
            if w.shape != (self.num_embeddings, self.embedding_dim):
                raise ValueError(f"Embedding: _weight must have shape {(self.num_embeddings, self.embedding_dim)}, "
                                 f"got {w.shape}")
        self.weight = Parameter(w)

    @classmethod
    def from_pretrained(cls, embeddings, freeze: bool = True, padding_idx=None, max_norm=None, norm_type=2.0,
                        scale_grad_by_freq=False, sparse=False):
        """An Embedding holding a copy of ``embeddings`` (2-D); frozen unless ``freeze=False``."""
        arr = np.array(embeddings._data if isinstance(embeddings, Tensor) else embeddings, _float_dtype(embeddings))
        if arr.ndim != 2:
            raise ValueError(f"Embeddings parameter is expected to be 2-dimensional, got shape {arr.shape}")
        m = cls(arr.shape[0], arr.shape[1], padding_idx=padding_idx, max_norm=max_norm, norm_type=norm_type,
                scale_grad_by_freq=scale_grad_by_freq, sparse=sparse, _weight=arr)
        m.weight.requires_grad = not freeze
        return m

    def forward(self, input):
        idx = input if isinstance(input, Tensor) else Tensor(np.asarray(input))
        if getattr(self, "max_norm", None) is not None:  # rows renormalised in place first, as torch's
            from .functional_misc import embedding
            return embedding(idx, self.weight, self.padding_idx, self.max_norm, self.norm_type)
        return _EmbeddingFn.apply(self.weight, idx, padding_idx=self.padding_idx)

    def extra_repr(self) -> str:
        s = f"{self.num_embeddings}, {self.embedding_dim}"
        s += f", padding_idx={self.padding_idx}" if self.padding_idx is not None else ""
        return s + (f", max_norm={self.max_norm}" if getattr(self, "max_norm", None) is not None else "")


def _float_dtype(data):
    """A float64 Tensor keeps its dtype (as torch); other data is stored as float32 (as Parameter does)."""
    return np.float64 if isinstance(data, Tensor) and data._data.dtype == np.float64 else np.float32
