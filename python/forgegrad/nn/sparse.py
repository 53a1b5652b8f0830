"""Embedding: a lookup table of learnable vectors, as torch.nn.Embedding."""
from __future__ import annotations

import numpy as np

from .. import devices
from .._validate import check_bool, check_flag
from ..tensor import Tensor
from . import init
from .functional_misc import embedding
from .module import Module
from .parameter import Parameter

__all__ = ["Embedding"]


class Embedding(Module):
    """``Embedding(num_embeddings, embedding_dim, padding_idx=None, max_norm=None, norm_type=2.0,
    scale_grad_by_freq=False, sparse=False, _weight=None)``, as torch's.

    ``forward(indices)`` maps an int64 tensor (or array) of any shape (*) to (*, embedding_dim).
    The weight (num_embeddings, embedding_dim) starts from N(0, 1) as in torch; the row
    ``padding_idx`` starts at zero and never receives a gradient, so it stays the padding vector.
    A negative padding_idx counts from the end. max_norm, norm_type, scale_grad_by_freq: as F.embedding's
    (the looked-up rows renormalised in place; each row's gradient divided by its count). sparse=True: the
    weight's gradient is a sparse COO tensor, as torch's (optim.SGD, Adagrad and SparseAdam take it).
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx=None, max_norm=None,
                 norm_type: float = 2.0, scale_grad_by_freq: bool = False, sparse: bool = False, _weight=None):
        super().__init__()
        if max_norm is not None and (isinstance(max_norm, bool) or not isinstance(max_norm, (int, float, np.number))):
            raise TypeError(f"Embedding: max_norm must be a number or None, got {max_norm!r}")
        if max_norm is not None and max_norm <= 0:
            raise ValueError(f"Embedding: max_norm must be a positive number or None, got {max_norm!r}")
        if isinstance(norm_type, bool) or not isinstance(norm_type, (int, float, np.number)):
            raise TypeError(f"Embedding: norm_type must be a number, got {norm_type!r}")
        self.max_norm, self.norm_type = max_norm, norm_type
        self.scale_grad_by_freq = check_bool(scale_grad_by_freq, "Embedding: scale_grad_by_freq")
        self.sparse = check_flag(sparse, "Embedding: sparse")  # torch takes it by truth value
        for name, v in (("num_embeddings", num_embeddings), ("embedding_dim", embedding_dim)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
                raise ValueError(f"Embedding: {name} must be a positive int, got {v!r}")
        self.num_embeddings, self.embedding_dim = int(num_embeddings), int(embedding_dim)
        if padding_idx is not None:
            if not -self.num_embeddings <= padding_idx < self.num_embeddings:
                raise ValueError("Embedding: padding_idx must be within num_embeddings")
            padding_idx = int(padding_idx) % self.num_embeddings
        self.padding_idx = padding_idx
        self.weight = Parameter(_embedding_weight("Embedding", (self.num_embeddings, self.embedding_dim), padding_idx,
                                                  _weight))

    @classmethod
    def from_pretrained(cls, embeddings, freeze: bool = True, padding_idx=None, max_norm=None, norm_type: float = 2.0,
                        scale_grad_by_freq: bool = False, sparse: bool = False):
        """An Embedding holding a copy of ``embeddings`` (2-D); frozen unless ``freeze=False``."""
        arr = np.array(embeddings._data if isinstance(embeddings, Tensor) else embeddings, _float_dtype(embeddings))
        if arr.ndim != 2:
            raise ValueError(f"Embeddings parameter is expected to be 2-dimensional, got shape {arr.shape}")
        m = cls(arr.shape[0], arr.shape[1], padding_idx=padding_idx, max_norm=max_norm, norm_type=norm_type,
                scale_grad_by_freq=scale_grad_by_freq, sparse=sparse, _weight=Tensor._wrap_exact(arr))
        m.weight.requires_grad = not freeze
        return m

    def forward(self, input):
        # getattr: a module built without __init__ (an older pickle) has none of these options
        return embedding(input, self.weight, self.padding_idx, getattr(self, "max_norm", None),
                         getattr(self, "norm_type", 2.0), getattr(self, "scale_grad_by_freq", False),
                         getattr(self, "sparse", False))

    def extra_repr(self) -> str:
        s = f"{self.num_embeddings}, {self.embedding_dim}"
        s += f", padding_idx={self.padding_idx}" if self.padding_idx is not None else ""
        s += f", max_norm={self.max_norm}" if getattr(self, "max_norm", None) is not None else ""
        s += f", norm_type={self.norm_type}" if getattr(self, "norm_type", 2.0) != 2 else ""
        s += ", scale_grad_by_freq=True" if getattr(self, "scale_grad_by_freq", False) else ""
        return s + (", sparse=True" if getattr(self, "sparse", False) else "")


def _float_dtype(data):
    """A float64 Tensor keeps its dtype (as torch); other data is stored as float32 (as Parameter does)."""
    return np.float64 if isinstance(data, Tensor) and data._data.dtype == np.float64 else np.float32


def _embedding_weight(who, shape, padding_idx, _weight):
    """An embedding table (Embedding, EmbeddingBag): ``_weight`` checked against ``shape``, or N(0, 1) drawn on the
    default device (meta: no memory, nothing to initialise; any other device draws on the host, so it gets the
    CPU's numbers), the padding row zeroed."""
    if _weight is not None:
        w = np.asarray(_weight._data if isinstance(_weight, Tensor) else _weight, _float_dtype(_weight))
        if w.shape != shape:
            raise ValueError(f"{who}: _weight must have shape {shape}, got {w.shape}")
        return Tensor._wrap_exact(w)  # a Tensor: Parameter keeps float64 (it stores a float64 ndarray as float32)
    dev = devices.default_device()
    w = devices.empty(shape, device_name=dev if dev == "meta" else "cpu")
    init.normal_(Tensor._wrap(w))
    if padding_idx is not None and devices.has_data(w):
        w[padding_idx] = 0.0
    return devices.transfer(w, dev) if dev not in ("cpu", "meta") else w
