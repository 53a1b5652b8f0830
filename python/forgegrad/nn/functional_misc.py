"""nn.functional entries made of existing ops: bilinear, embedding (padding_idx, max_norm), pairwise_distance and
triplet_margin_with_distance_loss (the last two defined with the triplet loss in ops/loss_metric.py)."""
from __future__ import annotations

import numpy as np

from .. import devices, grad_mode
from .._validate import check_bool
from .._version_counter import bump
from ..grad_mode import no_grad
from ..ops.loss_metric import pairwise_distance, triplet_margin_with_distance_loss
from ..ops.rnn import EmbeddingFunction
from ..tensor import Tensor
from .functional_conv import _t

__all__ = ["bilinear", "embedding", "pairwise_distance", "triplet_margin_with_distance_loss"]


def bilinear(input1, input2, weight, bias=None):
    """``torch.nn.functional.bilinear``: y[..., o] = sum_ij input1[..., i] weight[o, i, j] input2[..., j] + bias[o].

    input1 (*, in1), input2 (*, in2) with the same leading dims, weight (out, in1, in2), bias (out,) or None.
    One GEMM (input1 against the weight laid out (in1, out * in2)) then a product with input2 summed over in2,
    so its gradients, double backward and ONNX export are those of these ops."""
    x1, x2, w = _t(input1, "input1"), _t(input2, "input2"), _t(weight, "weight")
    if w.ndim != 3:
        raise ValueError(f"bilinear: weight must be 3-D (out_features, in1_features, in2_features), got shape "
                         f"{tuple(w.shape)}")
    out, i1, i2 = w.shape
    if x1.ndim < 1 or x1.shape[-1] != i1:
        raise ValueError(f"bilinear: input1's last dim must be in1_features ({i1}), got shape {tuple(x1.shape)}")
    if x2.ndim < 1 or x2.shape[-1] != i2:
        raise ValueError(f"bilinear: input2's last dim must be in2_features ({i2}), got shape {tuple(x2.shape)}")
    if tuple(x1.shape[:-1]) != tuple(x2.shape[:-1]):
        raise ValueError(f"bilinear: input1 {tuple(x1.shape)} and input2 {tuple(x2.shape)} must have the same "
                         "leading dims")
    if bias is not None:
        bias = _t(bias, "bias")
        if tuple(bias.shape) != (out,):
            raise ValueError(f"bilinear: bias must have shape ({out},), got {tuple(bias.shape)}")
    lead = tuple(x1.shape[:-1])
    a = x1.reshape(-1, i1) @ w.permute(1, 0, 2).reshape(i1, out * i2)
    y = (a.reshape(-1, out, i2) * x2.reshape(-1, 1, i2)).sum(-1)
    if bias is not None:
        y = y + bias
    return y.reshape(lead + (out,))


def embedding(input, weight, padding_idx=None, max_norm=None, norm_type: float = 2.0,
              scale_grad_by_freq: bool = False, sparse: bool = False):
    """``torch.nn.functional.embedding``: rows of ``weight`` (num_embeddings, dim) at the integer ``input``.

    padding_idx (negative counts from the end): that row gets no gradient. max_norm: before the lookup, each
    row that ``input`` refers to whose ``norm_type``-norm exceeds max_norm is scaled, in place in ``weight``
    and outside autograd, to max_norm / (norm + 1e-7) of itself (torch's embedding_renorm_).
    scale_grad_by_freq: each row's gradient is divided by how often ``input`` holds it (cpu only).
    sparse=True: the weight's gradient is a sparse COO tensor (rows looked up, uncoalesced), as torch's; SGD,
    Adagrad and SparseAdam take it."""
    weight = _t(weight, "weight")
    idx = input if isinstance(input, Tensor) else Tensor._stored(np.asarray(input))
    if weight.ndim != 2:
        raise ValueError(f"embedding: weight must be 2-D (num_embeddings, embedding_dim), got shape "
                         f"{tuple(weight.shape)}")
    if np.dtype(idx.dtype.name if hasattr(idx.dtype, "name") else idx._data.dtype).kind not in "iu":
        raise TypeError(f"embedding: input must hold integer indices (int64 or int32), got {idx.dtype}")
    n = weight.shape[0]
    if padding_idx is not None:
        if isinstance(padding_idx, bool) or not isinstance(padding_idx, (int, np.integer)):
            raise TypeError(f"embedding: padding_idx must be an int or None, got {padding_idx!r}")
        if not -n <= padding_idx < n:
            raise ValueError(f"embedding: padding_idx must be within num_embeddings ({n}), got {padding_idx}")
        padding_idx = int(padding_idx) % n
    sparse = check_bool(sparse, "sparse")
    if max_norm is not None:
        if grad_mode.recorder() is not None:
            # an export: the graph would look rows up in the weight as it is, unscaled for the rows this example does
            # not name. The renorm is per row and idempotent, so a lookup in a copy with every row renormed gives
            # the eager values for any index; the weight itself is left as it is
            weight = Tensor._wrap_exact(weight._data.copy())
            idx_all = Tensor._wrap_exact(np.arange(weight.shape[0], dtype=np.int64))
            _renorm_(weight, idx_all, float(max_norm), float(norm_type))
        else:
            _renorm_(weight, idx, float(max_norm), float(norm_type))
    scale = check_bool(scale_grad_by_freq, "scale_grad_by_freq")
    if sparse:  # the weight's gradient is a sparse COO tensor (forgegrad.sparse)
        from ..sparse._functions import EmbeddingSparse
        return EmbeddingSparse.apply(weight, idx, padding_idx, scale)
    return EmbeddingFunction.apply(weight, idx, padding_idx=padding_idx, scale_grad_by_freq=scale)


def _renorm_(weight, idx, max_norm: float, norm_type: float) -> None:
    """torch's embedding_renorm_: rows idx refers to, scaled down to max_norm, in place without a graph."""
    w = weight._data
    if not isinstance(w, np.ndarray):
        raise NotImplementedError(f"embedding: max_norm is supported for cpu weights, got one on "
                                  f"{devices.device_of(w)}")
    rows = np.unique(devices.to_host(idx._data).reshape(-1))
    if rows.size and (rows.min() < -w.shape[0] or rows.max() >= w.shape[0]):
        raise IndexError(f"embedding: index out of range for a weight of {w.shape[0]} rows")
    rows = rows % w.shape[0]
    with no_grad():
        sub = w[rows].astype(np.float64)
        if norm_type == np.inf:
            norms = np.abs(sub).max(1)
        else:
            norms = (np.abs(sub) ** norm_type).sum(1) ** (1.0 / norm_type)
        big = norms > max_norm
        if big.any():
            scale = (max_norm / (norms[big] + 1e-7)).astype(w.dtype)
            w[rows[big]] = w[rows[big]] * scale[:, None]
            bump(weight)
