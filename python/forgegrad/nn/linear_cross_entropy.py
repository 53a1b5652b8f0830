"""nn.LinearCrossEntropyLoss and LinearCrossEntropyOptions (torch 2.13): a Linear head and its cross-entropy loss in
one op that never holds the (N, C) logits (forgegrad/ops/linear_cross_entropy.py)."""
from __future__ import annotations

import math

from .. import dtypes
from .._args import positive_int
from .._validate import check_bool, check_float
from ..tensor import Tensor
from ..ops.linear_cross_entropy import LinearCrossEntropyOptions, linear_cross_entropy
from .linear import Linear
from .module import Module

__all__ = ["LinearCrossEntropyLoss", "LinearCrossEntropyOptions"]


class LinearCrossEntropyLoss(Module):
    """``cross_entropy(self.linear(input), target)`` with torch's arguments and state_dict keys: ``linear.weight``
    ((num_classes * prod(out_features), in_features): flat storage, reshaped to (num_classes, *out_features,
    in_features) in forward, as torch's), ``linear.bias`` with ``bias=True``, ``weight`` (the class weight buffer)
    when given. ``options``: a LinearCrossEntropyOptions (torch's or forgegrad's) picking the chunk rows; None
    chunks by a memory budget (forgegrad always chunks)."""

    def __init__(self, in_features: int, num_classes: int, *, out_features: tuple = (), bias: bool = False,
                 device=None, dtype=None, reduction: str = "mean", weight=None, ignore_index: int | None = None,
                 label_smoothing: float = 0.0, options=None):
        owner = "LinearCrossEntropyLoss"
        num_classes = positive_int(num_classes, "num_classes", owner)  # in_features: Linear checks it
        if not isinstance(out_features, (tuple, list)):
            raise TypeError(f"{owner}: out_features must be a tuple of positive ints, got {out_features!r}")
        out_features = tuple(positive_int(n, "out_features entries", owner) for n in out_features)
        bias = check_bool(bias, f"{owner}: bias")
        label_smoothing = check_float(label_smoothing, f"{owner}: label_smoothing")
        if weight is not None and not isinstance(weight, Tensor):
            raise TypeError(f"{owner}: weight must be a Tensor of shape ({num_classes},) or None, got "
                            f"{type(weight).__name__}")
        if weight is not None and tuple(weight.shape) != (num_classes,):
            raise RuntimeError(f"LinearCrossEntropyLoss: expected weight shape to be {(num_classes,)}, got "
                               f"{tuple(weight.shape)}")
        if not 0.0 <= label_smoothing <= 1.0:
            raise RuntimeError(f"LinearCrossEntropyLoss: expected label_smoothing to be in range [0, 1], got "
                               f"{label_smoothing}")
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"LinearCrossEntropyLoss: {reduction!r} is not a valid value for reduction")
        super().__init__()
        self.register_buffer("weight", weight)
        self.reduction = reduction
        self.num_classes = num_classes
        self.out_features = tuple(out_features)
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing
        self.linear = Linear(in_features, math.prod(self.out_features, start=num_classes), bias=bias)
        if dtype is not None:
            self.linear.to(dtype=dtypes.to_numpy(dtype))
        if device is not None:
            self.linear.to(str(device))
        self.options = options

    def forward(self, input, target):
        w = self.linear.weight.reshape(self.num_classes, *self.out_features, self.linear.in_features)
        b = None if self.linear.bias is None else self.linear.bias.reshape(self.num_classes, *self.out_features)
        return linear_cross_entropy(input, w, target, linear_bias=b, weight=self.weight, reduction=self.reduction,
                                    ignore_index=self.ignore_index, label_smoothing=self.label_smoothing,
                                    options=self.options)

    def extra_repr(self) -> str:
        return (f"in_features={self.linear.in_features}, num_classes={self.num_classes}, "
                f"out_features={self.out_features}, bias={self.linear.bias is not None}, "
                f"reduction={self.reduction}, ignore_index={self.ignore_index}, "
                f"label_smoothing={self.label_smoothing}, options={self.options}")
