"""The nn.functional operations torch also exposes at package level (``torch.conv2d``, ``torch.layer_norm``,
``torch.dropout``, ``torch.kl_div``, ...), with the package-level signatures, which are aten's and differ from
nn.functional's in places: batch_norm and instance_norm take weight and bias before the running statistics and
every argument positionally, embedding takes ``(weight, indices)``, dropout needs ``p`` and ``train``, the
losses take ``reduction`` as an int (0 none, 1 mean, 2 sum) and binary_cross_entropy_with_logits takes
pos_weight before it. Their ``reduction`` defaults to 0 (none) when left out: torch 2.13's package-level
functions do so (its Python binding reads aten's default, Mean, as 0), unlike nn.functional's "mean". Each
forwards to forgegrad.nn.functional. ``install()`` puts them on the package."""
from __future__ import annotations

import numpy as np

from .nn import functional as F
from .tensor import Tensor

__all__ = ["FUNCTIONS", "install"]

_REDUCTIONS = {0: "none", 1: "mean", 2: "sum"}


def _reduction(r, who: str) -> str:
    if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or int(r) not in _REDUCTIONS:
        raise TypeError(f"{who}(): argument 'reduction' must be an int, 0 (none), 1 (mean) or 2 (sum) at package "
                        f"level (nn.functional.{who} takes the string), got {r!r}")
    return _REDUCTIONS[int(r)]


def _flag(v, name: str, who: str) -> bool:
    if not isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{who}(): argument {name!r} must be a bool, got {type(v).__name__}")
    return bool(v)


def _stride(stride):
    """aten's empty stride (its default) means the kernel size, nn.functional's None."""
    return None if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0) else stride


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-05, cudnn_enable=True):
    return F.layer_norm(input, normalized_shape, weight, bias, eps)


def group_norm(input, num_groups, weight=None, bias=None, eps=1e-05, cudnn_enabled=True):
    return F.group_norm(input, num_groups, weight, bias, eps)


def batch_norm(input, weight, bias, running_mean, running_var, training, momentum, eps, cudnn_enabled):
    return F.batch_norm(input, running_mean, running_var, weight, bias, _flag(training, "training", "batch_norm"),
                        momentum, eps)


def instance_norm(input, weight, bias, running_mean, running_var, use_input_stats, momentum, eps, cudnn_enabled):
    return F.instance_norm(input, running_mean, running_var, weight, bias,
                           _flag(use_input_stats, "use_input_stats", "instance_norm"), momentum, eps)


def dropout(input, p, train):
    return F.dropout(input, p, _flag(train, "train", "dropout"))


def dropout_(input, p, train):
    """In place: ``input`` itself, its elements zeroed with probability ``p`` and the rest scaled (when train)."""
    return F.dropout(input, p, _flag(train, "train", "dropout_"), inplace=True)


def alpha_dropout(input, p, train):
    return F.alpha_dropout(input, p, _flag(train, "train", "alpha_dropout"))


def feature_alpha_dropout(input, p, train):
    return F.feature_alpha_dropout(input, p, _flag(train, "train", "feature_alpha_dropout"))


def embedding(weight, indices, padding_idx=-1, scale_grad_by_freq=False, sparse=False):
    """torch.embedding(weight, indices, ...): rows of ``weight``; a negative padding_idx means none (aten's)."""
    if isinstance(padding_idx, bool) or not isinstance(padding_idx, (int, np.integer)):
        raise TypeError(f"embedding(): argument 'padding_idx' must be an int, got {type(padding_idx).__name__}")
    return F.embedding(indices, weight, padding_idx=None if padding_idx < 0 else int(padding_idx),
                       scale_grad_by_freq=scale_grad_by_freq, sparse=sparse)


def max_pool1d(input, kernel_size, stride=(), padding=0, dilation=1, ceil_mode=False):
    return F.max_pool1d(input, kernel_size, _stride(stride), padding, dilation, ceil_mode)


def max_pool2d(input, kernel_size, stride=(), padding=0, dilation=1, ceil_mode=False):
    return F.max_pool2d(input, kernel_size, _stride(stride), padding, dilation, ceil_mode)


def max_pool1d_with_indices(input, kernel_size, stride=(), padding=0, dilation=1, ceil_mode=False):
    return F.max_pool1d(input, kernel_size, _stride(stride), padding, dilation, ceil_mode, return_indices=True)


def avg_pool1d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    return F.avg_pool1d(input, kernel_size, _stride(stride), padding, ceil_mode, count_include_pad)


def adaptive_max_pool1d(input, output_size):
    """(values, indices), always (aten's)."""
    return F.adaptive_max_pool1d(input, output_size, return_indices=True)


def selu(input):
    return F.selu(input)


def celu(input, alpha=1.0):
    return F.celu(input, alpha)


def _no_generator(generator, who):
    if generator is not None:
        raise TypeError(f"{who}(): argument 'generator' is not supported; forgegrad draws from its global generator "
                        "(forgegrad.manual_seed)")


def rrelu(input, lower=0.125, upper=1.0 / 3, training=False, generator=None):
    _no_generator(generator, "rrelu")
    return F.rrelu(input, lower, upper, training)


def rrelu_(input, lower=0.125, upper=1.0 / 3, training=False, generator=None):
    _no_generator(generator, "rrelu_")
    return F.rrelu_(input, lower, upper, training)


def threshold(input, threshold, value):
    return F.threshold(input, threshold, value)


def kl_div(input, target, reduction=0, *, log_target=False):
    """Mean (reduction=1) is over all elements here, as aten's (nn.functional's "batchmean" is not an option)."""
    return F.kl_div(input, target, reduction=_reduction(reduction, "kl_div"), log_target=log_target)


def ctc_loss(log_probs, targets, input_lengths, target_lengths, blank=0, reduction=0, zero_infinity=False):
    return F.ctc_loss(log_probs, targets, input_lengths, target_lengths, blank, _reduction(reduction, "ctc_loss"),
                      zero_infinity)


def margin_ranking_loss(input1, input2, target, margin=0.0, reduction=0):
    return F.margin_ranking_loss(input1, input2, target, margin,
                                 reduction=_reduction(reduction, "margin_ranking_loss"))


def hinge_embedding_loss(input, target, margin=1.0, reduction=0):
    return F.hinge_embedding_loss(input, target, margin, reduction=_reduction(reduction, "hinge_embedding_loss"))


def cosine_embedding_loss(input1, input2, target, margin=0.0, reduction=0):
    return F.cosine_embedding_loss(input1, input2, target, margin,
                                   reduction=_reduction(reduction, "cosine_embedding_loss"))


def triplet_margin_loss(anchor, positive, negative, margin=1.0, p=2.0, eps=1e-06, swap=False, reduction=0):
    return F.triplet_margin_loss(anchor, positive, negative, margin, p, eps, swap,
                                 reduction=_reduction(reduction, "triplet_margin_loss"))


def poisson_nll_loss(input, target, log_input, full, eps, reduction):
    return F.poisson_nll_loss(input, target, _flag(log_input, "log_input", "poisson_nll_loss"),
                              _flag(full, "full", "poisson_nll_loss"), eps=eps,
                              reduction=_reduction(reduction, "poisson_nll_loss"))


def binary_cross_entropy_with_logits(input, target, weight=None, pos_weight=None, reduction=0):
    return F.binary_cross_entropy_with_logits(input, target, weight,
                                              reduction=_reduction(reduction, "binary_cross_entropy_with_logits"),
                                              pos_weight=pos_weight)


def rsub(input, other, alpha=1):
    """``other - alpha * input`` (torch.rsub: sub with the operands swapped)."""
    if not isinstance(input, Tensor):
        raise TypeError(f"rsub(): argument 'input' must be a forgegrad.Tensor, got {type(input).__name__}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.number)):
        raise TypeError(f"rsub(): argument 'alpha' must be a number, got {type(alpha).__name__}")
    if isinstance(alpha, (float, np.floating)) and not input.dtype.is_floating_point and not (
            isinstance(other, Tensor) and other.dtype.is_floating_point):
        raise RuntimeError("rsub(): for integral input tensors, argument 'alpha' must not be a floating point number")
    scaled = input if alpha == 1 else input * alpha
    return other - scaled if isinstance(other, Tensor) else scaled.__rsub__(other)


def constant_pad_nd(input, pad, value=0):
    """torch.constant_pad_nd(input, pad, value=0): nn.functional.pad in constant mode (a negative pad crops)."""
    return F.pad(input, pad, "constant", value)


# the ones whose package-level signature is nn.functional's own
_SAME = ("conv1d", "conv2d", "conv_transpose1d", "conv_transpose2d", "adaptive_avg_pool1d", "pixel_shuffle",
         "pixel_unshuffle", "channel_shuffle", "cosine_similarity", "pairwise_distance", "prelu", "selu_", "celu_",
         "threshold_", "hardshrink", "relu_", "bilinear", "rms_norm")

FUNCTIONS = {n: getattr(F, n) for n in _SAME}
FUNCTIONS.update({f.__name__: f for f in (
    layer_norm, group_norm, batch_norm, instance_norm, dropout, dropout_, alpha_dropout, feature_alpha_dropout,
    embedding, max_pool1d, max_pool2d, max_pool1d_with_indices, avg_pool1d, adaptive_max_pool1d, selu, celu, rrelu,
    rrelu_, threshold, kl_div, ctc_loss, margin_ranking_loss, hinge_embedding_loss, cosine_embedding_loss,
    triplet_margin_loss, poisson_nll_loss, binary_cross_entropy_with_logits, rsub, constant_pad_nd)})


def install(package_namespace: dict) -> None:
    for name, fn in FUNCTIONS.items():
        package_namespace.setdefault(name, fn)
