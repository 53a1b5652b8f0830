"""Deprecated torch.nn loss aliases: NLLLoss2d (NLLLoss, which takes (N, C, d1, ...) inputs already)."""
from __future__ import annotations

import warnings

from .loss import NLLLoss

__all__ = ["NLLLoss2d"]


def _legacy_reduction(size_average, reduce, reduction: str) -> str:
    """torch's rule for the deprecated size_average / reduce arguments (either given: they decide)."""
    if size_average is None and reduce is None:
        return reduction
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    return "none" if not reduce else ("mean" if size_average else "sum")


class NLLLoss2d(NLLLoss):
    """``NLLLoss2d(weight=None, size_average=None, ignore_index=-100, reduce=None, reduction="mean")``: NLLLoss, with
    torch's FutureWarning that it is deprecated."""

    def __init__(self, weight=None, size_average=None, ignore_index: int = -100, reduce=None,
                 reduction: str = "mean"):
        warnings.warn("`NLLLoss2d` has been deprecated. Please use `NLLLoss` instead as a drop-in replacement and see "
                      "https://pytorch.org/docs/main/nn.html#torch.nn.NLLLoss for more details.", FutureWarning,
                      stacklevel=2)
        super().__init__(weight, ignore_index, _legacy_reduction(size_average, reduce, reduction))
