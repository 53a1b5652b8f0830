"""forgegrad.nn.functional: stateless ops on Tensors with torch.nn.functional's names."""
from __future__ import annotations

import numpy as np

from .. import devices
from .._validate import check_bool, check_flag, check_float, check_int
from ..ops.grid_sample import INTERPOLATION_MODES as GRID_SAMPLE_INTERPOLATION_MODES  # noqa: F401  (torch's tables)
from ..ops.grid_sample import PADDING_MODES as GRID_SAMPLE_PADDING_MODES  # noqa: F401
from ..ops.registry import _OPS
from ..tensor import Tensor
# _t and _opt (argument checks) are defined once, in functional_conv, which this module builds on
from .functional_conv import _opt, _t, adaptive_avg_pool2d, avg_pool2d, batch_norm, conv1d, conv2d, max_pool2d
from .functional_extra import gumbel_softmax, pdist, upsample, upsample_bilinear, upsample_nearest
from .fractional_pool import (fractional_max_pool2d, fractional_max_pool2d_with_indices, fractional_max_pool3d,
                              fractional_max_pool3d_with_indices)
from .functional_losses import *  # noqa: F401,F403  (torch's loss signatures over the op records' losses)
from .functional_losses import __all__ as _loss_names
from .functional_losses import legacy_reduction, weighted_loss
from .functional_misc import bilinear, embedding, pairwise_distance, triplet_margin_with_distance_loss
from .functional_pool import *  # noqa: F401,F403  (1-d, indexed and power-average pools; channel dropout)
from .functional_pool import __all__ as _pool_names

__all__ = [
    "linear", "relu", "relu_", "leaky_relu", "leaky_relu_", "elu_", "relu6", "hardtanh_", "threshold_", "selu_",
    "celu_", "rrelu_", "gelu", "sigmoid", "tanh", "softmax", "log_softmax",
    "dropout",
    "mse_loss", "l1_loss", "binary_cross_entropy", "binary_cross_entropy_with_logits", "cross_entropy",
    "nll_loss", "kl_div", "one_hot",
    "conv1d", "conv2d", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "batch_norm",
    "bilinear", "embedding", "pairwise_distance", "triplet_margin_with_distance_loss",
    "upsample", "upsample_nearest", "upsample_bilinear", "gumbel_softmax", "pdist", "fractional_max_pool2d",
    "fractional_max_pool3d", "fractional_max_pool2d_with_indices", "fractional_max_pool3d_with_indices",
] + _pool_names + _loss_names


def linear(input, weight, bias=None):
    """y = input @ weight.T + bias; input (..., in_features), weight (out_features, in_features)."""
    return _OPS["linear"].apply(_t(input, "input"), _t(weight, "weight"), _opt(bias))  # (tensors: checked here)


def _maybe_inplace(input, inplace, name: str, compute):
    """``compute(input)``, or with ``inplace=True`` written into ``input`` and returned (torch's rules, see
    forgegrad._inplace: a leaf that requires grad refuses, the rest is differentiated through the write)."""
    input = _t(input, "input")
    if check_flag(inplace, "inplace"):
        from .. import grad_mode
        try:
            return input._inplace(compute, f"{name}_")
        except RuntimeError as e:
            if grad_mode.recorder() is None:
                raise
            # an ONNX export's trace records a write only into an op's result that nothing else shares
            raise RuntimeError(
                f"{name}(inplace=True) (nn.{_MODULE_NAMES.get(name, name)}(inplace=True) or F.{name}_) ran inside "
                "forgegrad.autograd.trace() (an ONNX export) on a graph input, a view or a tensor whose storage a "
                "view shares, which the export cannot write through. "
                "Export with the out-of-place form, which computes the same outputs (on the modules: for m in "
                "model.modules(): setting m.inplace = False where hasattr(m, 'inplace'))") from e
    return compute(input)


_MODULE_NAMES = {"relu": "ReLU", "leaky_relu": "LeakyReLU", "silu": "SiLU", "elu": "ELU", "dropout": "Dropout",
                 "relu6": "ReLU6", "hardtanh": "Hardtanh", "hardsigmoid": "Hardsigmoid", "hardswish": "Hardswish",
                 "mish": "Mish", "selu": "SELU", "celu": "CELU", "threshold": "Threshold", "rrelu": "RReLU"}


def relu(input, inplace: bool = False):
    if inplace is False:  # (the common call: no closure, and the op's apply on the checked tensor)
        return _OPS["relu"].apply(_t(input, "input"))
    return _maybe_inplace(input, inplace, "relu", lambda t: _OPS["relu"](t))


def relu_(input):
    """``torch.nn.functional.relu_``: relu written into ``input``."""
    return relu(input, inplace=True)


def leaky_relu(input, negative_slope: float = 0.01, inplace: bool = False):
    slope = check_float(negative_slope, "negative_slope")
    return _maybe_inplace(input, inplace, "leaky_relu", lambda t: _OPS["leaky_relu"](t, negative_slope=slope))


def leaky_relu_(input, negative_slope: float = 0.01):
    return leaky_relu(input, negative_slope, inplace=True)


def elu_(input, alpha: float = 1.0):
    """``torch.nn.functional.elu_``: elu written into ``input``."""
    from ..ops.activation_smooth import elu
    return elu(input, alpha, inplace=True)


# torch's in-place functions (and relu6) over the records' functionals in ops/activation_hard.py & co.
def relu6(input, inplace: bool = False):
    """``torch.nn.functional.relu6``: min(max(input, 0), 6) (hardtanh(input, 0, 6), as torch's)."""
    from ..ops.activation_hard import relu6 as _relu6
    return _relu6(input, inplace)


def hardtanh_(input, min_val: float = -1.0, max_val: float = 1.0):
    from ..ops.activation_hard import hardtanh
    return hardtanh(input, min_val, max_val, inplace=True)


def threshold_(input, threshold: float, value: float):
    from ..ops.activation_hard import threshold_ as _threshold_
    return _threshold_(input, threshold, value)


def selu_(input):
    from ..ops.activation_more import selu
    return selu(input, inplace=True)


def celu_(input, alpha: float = 1.0):
    from ..ops.activation_more import celu
    return celu(input, alpha, inplace=True)


def rrelu_(input, lower: float = 1.0 / 8, upper: float = 1.0 / 3, training: bool = False):
    from ..ops.activation_param import rrelu
    return rrelu(input, lower, upper, training, inplace=True)


def gelu(input, approximate: str = "none"):
    return _OPS["gelu"](_t(input, "input"), approximate=approximate)


def sigmoid(input):
    return _OPS["sigmoid"](_t(input, "input"))


def tanh(input):
    return _OPS["tanh"](_t(input, "input"))


def softmax(input, dim=None, _stacklevel: int = 3, dtype=None):
    """``torch.nn.functional.softmax``: ``dtype`` casts the input first (the gradient comes back in the input's
    dtype); dim=None picks torch's implicit dim (0 for 0-, 1- and 3-d input, else 1) with torch's warning."""
    input = _t(input, "input")
    return input.softmax(dim if dim is not None else _implicit_dim(input, dim, "softmax"), dtype)


def log_softmax(input, dim=None, _stacklevel: int = 3, dtype=None):
    """``torch.nn.functional.log_softmax``: as softmax."""
    input = _t(input, "input")
    return input.log_softmax(_implicit_dim(input, dim, "log_softmax"), dtype)


def _implicit_dim(input, dim, name):
    if dim is not None:
        return dim
    from ..ops.activation_more import softmax_dim
    return softmax_dim(input.ndim, name)


def dropout(input, p: float = 0.5, training: bool = True, inplace: bool = False):
    p, training = check_float(p, "p"), check_bool(training, "training")
    if check_flag(inplace, "inplace") and (not training or p == 0.0):
        # nothing to write: torch returns the input itself, so that eval mode accepts a leaf that requires grad
        return _t(input, "input")
    return _maybe_inplace(input, inplace, "dropout", lambda t: _OPS["dropout"](t, p=p, training=training))


# The losses take torch's parameters in torch's order: the deprecated size_average / reduce included, so that a
# positional call means what it means in torch (functional_losses.legacy_reduction).
def mse_loss(input, target, size_average=None, reduce=None, reduction: str = "mean", weight=None):
    """``weight`` (input's shape, torch 2.13): weighted squared errors; "mean" divides by weight.sum()."""
    reduction = legacy_reduction(size_average, reduce, reduction, "mse_loss")
    if weight is not None:
        return weighted_loss(mse_loss(input, target, reduction="none"), weight, input, reduction, "mse_loss", True)
    return _OPS["mse_loss"](_t(input, "input"), _t(target, "target"), reduction=reduction)


def l1_loss(input, target, size_average=None, reduce=None, reduction: str = "mean", weight=None):
    """``weight`` as mse_loss's."""
    reduction = legacy_reduction(size_average, reduce, reduction, "l1_loss")
    if weight is not None:
        return weighted_loss(l1_loss(input, target, reduction="none"), weight, input, reduction, "l1_loss", True)
    return _OPS["l1_loss"](_t(input, "input"), _t(target, "target"), reduction=reduction)


def binary_cross_entropy(input, target, weight=None, size_average=None, reduce=None, reduction: str = "mean"):
    reduction = legacy_reduction(size_average, reduce, reduction, "binary_cross_entropy")
    return _OPS["binary_cross_entropy"](_t(input, "input"), _t(target, "target"), _opt(weight), reduction=reduction)


def binary_cross_entropy_with_logits(input, target, weight=None, size_average=None, reduce=None,
                                     reduction: str = "mean", pos_weight=None):
    reduction = legacy_reduction(size_average, reduce, reduction, "binary_cross_entropy_with_logits")
    return _OPS["binary_cross_entropy_with_logits"](_t(input, "input"), _t(target, "target"), _opt(weight),
                                                _opt(pos_weight), reduction=reduction)


def cross_entropy(input, target, weight=None, size_average=None, ignore_index: int = -100, reduce=None,
                  reduction: str = "mean", label_smoothing: float = 0.0):
    """Cross entropy over class dim 1 of logits ``input`` (N, C) or (N, C, d1, ...).

    target: class indices (int64, shape (N,) or (N, d1, ...)) or class probabilities (input's shape).
    """
    reduction = legacy_reduction(size_average, reduce, reduction, "cross_entropy")
    return _OPS["cross_entropy"](_t(input, "input"), _t(target, "target"), _opt(weight),
                                 ignore_index=check_int(ignore_index, "ignore_index"), reduction=reduction,
                                 label_smoothing=check_float(label_smoothing, "label_smoothing", low=0.0, high=1.0))


def nll_loss(input, target, weight=None, size_average=None, ignore_index: int = -100, reduce=None,
             reduction: str = "mean"):
    reduction = legacy_reduction(size_average, reduce, reduction, "nll_loss")
    return _OPS["nll_loss"](_t(input, "input"), _t(target, "target"), _opt(weight),
                            ignore_index=check_int(ignore_index, "ignore_index"), reduction=reduction)


def kl_div(input, target, size_average=None, reduce=None, reduction: str = "mean", log_target: bool = False):
    reduction = legacy_reduction(size_average, reduce, reduction, "kl_div")
    return _OPS["kl_div"](_t(input, "input"), _t(target, "target"), reduction=reduction,
                          log_target=check_bool(log_target, "log_target"))


def one_hot(tensor, num_classes: int = -1) -> Tensor:
    """int64 one-hot rows of ``tensor``'s class indices; ``num_classes=-1`` (only -1, as in torch) infers
    it as max + 1. Errors as torch's: RuntimeError for an empty tensor with -1, negative class values,
    values >= num_classes and any other negative num_classes."""
    tensor = _t(tensor, "tensor")
    idx = devices.to_host(tensor._data)  # the checks read values: from another device, a copy
    if idx.dtype.kind not in "iu":
        raise TypeError(f"one_hot: expected an integer tensor, got dtype {idx.dtype}")
    num_classes = check_int(num_classes, "num_classes")
    if num_classes == -1:
        if idx.size == 0:
            raise RuntimeError("one_hot: can not infer total number of classes from an empty tensor; "
                               "pass num_classes")
        n = int(idx.max()) + 1
    elif num_classes < -1:
        raise RuntimeError(f"one_hot: num_classes must be -1 (infer it) or >= 0, got {num_classes}")
    else:
        n = num_classes
    if idx.size and idx.min() < 0:
        raise RuntimeError("one_hot: class values must be non-negative")
    if idx.size and idx.max() >= n:
        raise RuntimeError(f"one_hot: class values must be smaller than num_classes ({n}), got {int(idx.max())}")
    out = Tensor._wrap(np.eye(n, dtype=np.int64)[idx])
    return out if isinstance(tensor._data, np.ndarray) else out.to(tensor.device)


def __getattr__(name):
    # Ops whose record carries their functional entry point (ops.registry: OpDef.functional) are served
    # from there, so adding such an op does not touch this file.
    from ..ops.registry import functionals
    fn = functionals().get(name)
    if fn is None:
        raise AttributeError(f"module 'forgegrad.nn.functional' has no attribute {name!r}")
    globals()[name] = fn  # found once: later lookups are plain attribute reads
    return fn


def __dir__():
    from ..ops.registry import functionals
    return sorted(set(globals()) | set(functionals()))
