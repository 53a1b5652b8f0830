"""forgegrad.nn.functional: stateless ops on Tensors with torch.nn.functional's names."""
from __future__ import annotations

import numpy as np

from ..ops import activation as A
from ..ops import linalg as Lin
from ..ops import loss as L
from .._validate import check_bool, check_float, check_int
from ..tensor import Tensor

__all__ = [
    "linear", "relu", "leaky_relu", "gelu", "sigmoid", "tanh", "softmax", "log_softmax", "dropout",
    "mse_loss", "l1_loss", "binary_cross_entropy", "binary_cross_entropy_with_logits", "cross_entropy",
    "nll_loss", "kl_div", "one_hot",
    "conv2d", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "batch_norm",
]


def _t(x, name):
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a forgegrad.Tensor, got {type(x).__name__}")
    return x


def _opt(x):
    return None if x is None else (x if isinstance(x, Tensor) else Tensor(x))


def linear(input, weight, bias=None):
    """y = input @ weight.T + bias; input (..., in_features), weight (out_features, in_features)."""
    return Lin.Linear.apply(_t(input, "input"), _t(weight, "weight"), _opt(bias))


def relu(input):
    return A.Relu.apply(_t(input, "input"))


def leaky_relu(input, negative_slope: float = 0.01):
    return A.LeakyRelu.apply(_t(input, "input"), negative_slope=check_float(negative_slope, "negative_slope"))


def gelu(input, approximate: str = "none"):
    return A.Gelu.apply(_t(input, "input"), approximate=approximate)


def sigmoid(input):
    return A.Sigmoid.apply(_t(input, "input"))


def tanh(input):
    return A.Tanh.apply(_t(input, "input"))


def softmax(input, dim: int = -1):
    return A.Softmax.apply(_t(input, "input"), dim=dim)


def log_softmax(input, dim: int = -1):
    return A.LogSoftmax.apply(_t(input, "input"), dim=dim)


def dropout(input, p: float = 0.5, training: bool = True):
    return A.Dropout.apply(_t(input, "input"), p=check_float(p, "p"), training=check_bool(training, "training"))


def mse_loss(input, target, reduction: str = "mean"):
    return L.MSELoss.apply(_t(input, "input"), _t(target, "target"), reduction=reduction)


def l1_loss(input, target, reduction: str = "mean"):
    return L.L1Loss.apply(_t(input, "input"), _t(target, "target"), reduction=reduction)


def binary_cross_entropy(input, target, weight=None, reduction: str = "mean"):
    return L.BinaryCrossEntropy.apply(_t(input, "input"), _t(target, "target"), _opt(weight), reduction=reduction)


def binary_cross_entropy_with_logits(input, target, weight=None, reduction: str = "mean", pos_weight=None):
    return L.BinaryCrossEntropyWithLogits.apply(_t(input, "input"), _t(target, "target"), _opt(weight),
                                                _opt(pos_weight), reduction=reduction)


def cross_entropy(input, target, weight=None, ignore_index: int = -100, reduction: str = "mean",
                  label_smoothing: float = 0.0):
    """Cross entropy over class dim 1 of logits ``input`` (N, C) or (N, C, d1, ...).

    target: class indices (int64, shape (N,) or (N, d1, ...)) or class probabilities (input's shape).
    """
    return L.CrossEntropy.apply(_t(input, "input"), _t(target, "target"), _opt(weight),
                                ignore_index=check_int(ignore_index, "ignore_index"), reduction=reduction,
                                label_smoothing=check_float(label_smoothing, "label_smoothing", low=0.0, high=1.0))


def nll_loss(input, target, weight=None, ignore_index: int = -100, reduction: str = "mean"):
    return L.NLLLoss.apply(_t(input, "input"), _t(target, "target"), _opt(weight),
                           ignore_index=check_int(ignore_index, "ignore_index"), reduction=reduction)


def kl_div(input, target, reduction: str = "mean", log_target: bool = False):
    return L.KLDiv.apply(_t(input, "input"), _t(target, "target"), reduction=reduction,
                         log_target=check_bool(log_target, "log_target"))


def one_hot(tensor, num_classes: int = -1) -> Tensor:
    idx = _t(tensor, "tensor").data
    if idx.dtype.kind not in "iu":
        raise TypeError(f"one_hot: expected an integer tensor, got dtype {idx.dtype}")
    n = int(idx.max()) + 1 if num_classes < 0 else num_classes
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise ValueError(f"one_hot: class values must be in [0, {n})")
    return Tensor._wrap(np.eye(n, dtype=np.int64)[idx])


from .functional_conv import adaptive_avg_pool2d, avg_pool2d, batch_norm, conv2d, max_pool2d  # noqa: E402
