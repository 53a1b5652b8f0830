"""nn.functional entries made of existing ops: the deprecated upsample / upsample_nearest / upsample_bilinear
(interpolate with torch's defaults), gumbel_softmax (straight-through with hard=True) and pdist."""
from __future__ import annotations

import itertools
import warnings

import numpy as np

from .._validate import check_bool, check_float, check_int
from ..tensor import Tensor

__all__ = ["upsample", "upsample_nearest", "upsample_bilinear", "gumbel_softmax", "pdist"]


def _deprecated(name):
    warnings.warn(f"`nn.functional.{name}` is deprecated. Use `nn.functional.interpolate` instead.", stacklevel=3)


def upsample(input, size=None, scale_factor=None, mode: str = "nearest", align_corners=None):
    """``torch.nn.functional.upsample`` (deprecated, as torch warns): ``F.interpolate`` with the same arguments."""
    from ..ops.resample import interpolate
    _deprecated("upsample")
    return interpolate(input, size, scale_factor, mode, align_corners)


def upsample_nearest(input, size=None, scale_factor=None):
    """``torch.nn.functional.upsample_nearest`` (deprecated): ``F.interpolate(..., mode="nearest")``."""
    from ..ops.resample import interpolate
    _deprecated("upsample_nearest")
    return interpolate(input, size, scale_factor, mode="nearest")


def upsample_bilinear(input, size=None, scale_factor=None):
    """``torch.nn.functional.upsample_bilinear`` (deprecated): ``F.interpolate(..., mode="bilinear",
    align_corners=True)`` (torch's choice for this alias, unlike interpolate's default)."""
    from ..ops.resample import interpolate
    _deprecated("upsample_bilinear")
    return interpolate(input, size, scale_factor, mode="bilinear", align_corners=True)


def gumbel_softmax(logits, tau: float = 1, hard: bool = False, eps: float = 1e-10, dim: int = -1):
    """``torch.nn.functional.gumbel_softmax``: softmax((logits + g) / tau) along ``dim`` with g ~ Gumbel(0, 1) drawn
    from forgegrad's generator (``forgegrad.manual_seed``). ``hard=True``: the one-hot of the argmax in the forward,
    the soft sample's gradient in the backward (straight-through: y_hard - y_soft.detach() + y_soft). ``eps`` is
    unused, as torch's."""
    from .. import rand_like, zeros_like
    if not isinstance(logits, Tensor):
        raise TypeError(f"gumbel_softmax: logits must be a forgegrad.Tensor, got {type(logits).__name__}")
    if np.dtype(logits.dtype).kind != "f":
        raise TypeError(f"gumbel_softmax: logits must be a floating point tensor, got {logits.dtype}")
    tau = check_float(tau, "gumbel_softmax: tau")
    hard = check_bool(hard, "gumbel_softmax: hard")
    check_float(eps, "gumbel_softmax: eps")
    dim = check_int(dim, "gumbel_softmax: dim")
    if logits.ndim and not -logits.ndim <= dim < logits.ndim:
        raise IndexError(f"gumbel_softmax: dim {dim} is out of range for logits of shape {tuple(logits.shape)}")
    gumbels = -(-rand_like(logits).log()).log()  # -log(Exp(1)), as torch's -empty_like().exponential_().log()
    y_soft = ((logits + gumbels) / tau).softmax(dim)
    if not hard:
        return y_soft
    index = y_soft.argmax(dim, keepdim=True)
    y_hard = zeros_like(logits).scatter(dim, index, 1.0)
    return y_hard - y_soft.detach() + y_soft


def pdist(input, p: float = 2):
    """``torch.nn.functional.pdist``: the p-norm distances between the rows of ``input`` (N, M), pair (i, j) with
    i < j in row-major order: N * (N - 1) / 2 values. p >= 0 (inf included); the gradient at a zero distance is 0,
    as torch's."""
    from ..linalg import vector_norm
    if not isinstance(input, Tensor):
        raise TypeError(f"pdist: input must be a forgegrad.Tensor, got {type(input).__name__}")
    if input.ndim != 2:
        raise ValueError(f"pdist: input must be 2-D (N, M), got shape {tuple(input.shape)}")
    if np.dtype(input.dtype).kind != "f":
        raise TypeError(f"pdist: input must be a floating point tensor, got {input.dtype}")
    p = check_float(p, "pdist: p")
    if not p >= 0:
        raise ValueError(f"pdist: p must be >= 0, got {p}")
    n = input.shape[0]
    pairs = np.array(list(itertools.combinations(range(n), 2)), np.int64).reshape(-1, 2)
    if pairs.shape[0] == 0:
        return (input.reshape(-1)[:0] * 0.0).reshape(0)
    diff = input[Tensor._stored(pairs[:, 0])] - input[Tensor._stored(pairs[:, 1])]
    if p == float("inf") and diff.shape[-1]:
        # torch's pdist backward gives every element tied at the max its full sign(diff) (vector_norm's splits
        # the gradient among ties): the max's value with the tied elements' |diff| as the gradient path
        a = diff.abs()
        top = a.amax(-1, keepdim=True).detach()
        tied = (a == top).to(a.dtype)
        return (top + (tied * (a - a.detach())).sum(-1, keepdim=True)).squeeze(-1)
    return vector_norm(diff, ord=p, dim=-1)
