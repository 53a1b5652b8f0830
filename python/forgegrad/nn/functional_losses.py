"""torch.nn.functional's loss signatures over the op records' loss functions: torch's parameter order (the
deprecated ``size_average`` / ``reduce`` where torch has them, so that positional calls mean what they mean in
torch) and ``weight=`` on huber_loss (torch 2.13). The ops' own functions keep their shorter signatures."""
from __future__ import annotations

import warnings

from ..ops.loss_huber import huber_loss as _huber_loss
from ..ops.loss_huber import smooth_l1_loss as _smooth_l1_loss
from ..ops.loss_margin import cosine_embedding_loss as _cosine_embedding_loss
from ..ops.loss_margin import hinge_embedding_loss as _hinge_embedding_loss
from ..ops.loss_margin import margin_ranking_loss as _margin_ranking_loss
from ..ops.loss_margin import multilabel_soft_margin_loss as _multilabel_soft_margin_loss
from ..ops.loss_margin import soft_margin_loss as _soft_margin_loss
from ..ops.loss_metric import poisson_nll_loss as _poisson_nll_loss
from ..ops.loss_metric import triplet_margin_loss as _triplet_margin_loss
from ..ops.loss_multimargin import multi_margin_loss as _multi_margin_loss
from ..ops.loss_multimargin import multilabel_margin_loss as _multilabel_margin_loss

__all__ = ["cosine_embedding_loss", "hinge_embedding_loss", "margin_ranking_loss", "multi_margin_loss",
           "multilabel_margin_loss", "multilabel_soft_margin_loss", "poisson_nll_loss", "smooth_l1_loss",
           "soft_margin_loss", "triplet_margin_loss", "huber_loss"]


def legacy_reduction(size_average, reduce, reduction: str, who: str) -> str:
    """torch's rule for the deprecated ``size_average`` / ``reduce`` (either given: they decide, with torch's
    warning). A string there is a reduction passed positionally into their slot: torch would read it as a flag
    (``"sum"`` is true: a mean), so it is refused rather than followed."""
    if size_average is None and reduce is None:
        return reduction
    for name, v in (("size_average", size_average), ("reduce", reduce)):
        if v is not None and not isinstance(v, (bool, int)):
            raise TypeError(f"{who}(): {name} must be a bool or None (torch's deprecated flag), got "
                            f"{type(v).__name__} {v!r}; pass the reduction by keyword: reduction={v!r}")
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    reduction = "none" if not reduce else ("mean" if size_average else "sum")
    warnings.warn(f"size_average and reduce args will be deprecated, please use reduction='{reduction}' instead.",
                  UserWarning, stacklevel=3)
    return reduction


def weighted_loss(unreduced, weight, input, reduction: str, who: str, mean_over_weight: bool):
    """torch 2.13's ``weight=`` of mse_loss / l1_loss / huber_loss: the elementwise loss times ``weight`` (input's
    shape), then reduced; "mean" divides by weight.sum() for mse / l1 and by the element count for huber, as
    torch's."""
    from .functional_conv import _t
    weight = _t(weight, "weight")
    if tuple(weight.shape) != tuple(input.shape):
        raise ValueError(f"{who}(): Weights and input must have the same size (weight {tuple(weight.shape)}, "
                         f"input {tuple(input.shape)})")
    if reduction not in ("none", "mean", "sum"):
        raise ValueError(f"{who}(): Invalid reduction mode: {reduction}. Expected one of 'none', 'mean', 'sum'.")
    loss = unreduced * weight
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / weight.sum() if mean_over_weight else loss.mean()


def cosine_embedding_loss(input1, input2, target, margin: float = 0, size_average=None, reduce=None,
                          reduction: str = "mean"):
    reduction = legacy_reduction(size_average, reduce, reduction, "cosine_embedding_loss")
    return _cosine_embedding_loss(input1, input2, target, margin=margin, reduction=reduction)


def hinge_embedding_loss(input, target, margin: float = 1.0, size_average=None, reduce=None, reduction: str = "mean"):
    reduction = legacy_reduction(size_average, reduce, reduction, "hinge_embedding_loss")
    return _hinge_embedding_loss(input, target, margin=margin, reduction=reduction)


def margin_ranking_loss(input1, input2, target, margin: float = 0, size_average=None, reduce=None,
                        reduction: str = "mean"):
    reduction = legacy_reduction(size_average, reduce, reduction, "margin_ranking_loss")
    return _margin_ranking_loss(input1, input2, target, margin=margin, reduction=reduction)


def multi_margin_loss(input, target, p: int = 1, margin: float = 1.0, weight=None, size_average=None, reduce=None,
                      reduction: str = "mean"):
    reduction = legacy_reduction(size_average, reduce, reduction, "multi_margin_loss")
    return _multi_margin_loss(input, target, p=p, margin=margin, weight=weight, reduction=reduction)


def multilabel_margin_loss(input, target, size_average=None, reduce=None, reduction: str = "mean"):
    reduction = legacy_reduction(size_average, reduce, reduction, "multilabel_margin_loss")
    return _multilabel_margin_loss(input, target, reduction=reduction)


def multilabel_soft_margin_loss(input, target, weight=None, size_average=None, reduce=None, reduction: str = "mean"):
    reduction = legacy_reduction(size_average, reduce, reduction, "multilabel_soft_margin_loss")
    return _multilabel_soft_margin_loss(input, target, weight=weight, reduction=reduction)


def poisson_nll_loss(input, target, log_input: bool = True, full: bool = False, size_average=None,
                     eps: float = 1e-8, reduce=None, reduction: str = "mean"):
    reduction = legacy_reduction(size_average, reduce, reduction, "poisson_nll_loss")
    return _poisson_nll_loss(input, target, log_input=log_input, full=full, eps=eps, reduction=reduction)


def smooth_l1_loss(input, target, size_average=None, reduce=None, reduction: str = "mean", beta: float = 1.0):
    reduction = legacy_reduction(size_average, reduce, reduction, "smooth_l1_loss")
    return _smooth_l1_loss(input, target, reduction=reduction, beta=beta)


def soft_margin_loss(input, target, size_average=None, reduce=None, reduction: str = "mean"):
    reduction = legacy_reduction(size_average, reduce, reduction, "soft_margin_loss")
    return _soft_margin_loss(input, target, reduction=reduction)


def triplet_margin_loss(anchor, positive, negative, margin: float = 1.0, p: float = 2, eps: float = 1e-6,
                        swap: bool = False, size_average=None, reduce=None, reduction: str = "mean"):
    reduction = legacy_reduction(size_average, reduce, reduction, "triplet_margin_loss")
    return _triplet_margin_loss(anchor, positive, negative, margin=margin, p=p, eps=eps, swap=swap,
                                reduction=reduction)


def huber_loss(input, target, reduction: str = "mean", delta: float = 1.0, weight=None):
    if weight is None:
        return _huber_loss(input, target, reduction=reduction, delta=delta)
    return weighted_loss(_huber_loss(input, target, reduction="none", delta=delta), weight, input, reduction,
                         "huber_loss", mean_over_weight=False)
