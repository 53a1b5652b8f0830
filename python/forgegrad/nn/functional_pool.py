"""Functional 1-d pools, indexed pools, power-average pools and channel / alpha dropouts, with
torch.nn.functional's names, arguments and input rules (forgegrad.nn.functional exports them). The ops are in
forgegrad/ops/pool1d.py, pool_index.py, pool_lp.py and dropout_feature.py; these functions add the unbatched
forms ((C, L) for 1-d, (C, H, W) for 2-d: a batch of one), return_indices and the dropouts' rank rules.
"""
from __future__ import annotations

import warnings

import numpy as np

from .._validate import check_bool, check_flag
from ..ops.dropout_feature import check_p
from ..ops.registry import _OPS
from .functional_conv import _t, max_pool2d

__all__ = ["max_pool1d", "max_pool1d_with_indices", "max_pool2d_with_indices", "avg_pool1d", "max_unpool1d",
           "max_unpool2d", "adaptive_avg_pool1d", "adaptive_max_pool1d", "adaptive_max_pool1d_with_indices",
           "adaptive_max_pool2d", "adaptive_max_pool2d_with_indices", "lp_pool1d", "lp_pool2d", "lp_pool3d",
           "max_pool3d_with_indices", "adaptive_max_pool3d_with_indices", "dropout1d",
           "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout"]


def _batched(input, spatial: int, owner: str, *rest):
    """input (and the tensors in rest) with a batch axis: unbatched (C, *spatial) gets a batch of one."""
    input = _t(input, "input")
    if input.ndim not in (spatial + 1, spatial + 2):
        raise ValueError(f"{owner}: input must be {spatial + 1}-D (C, ...) or {spatial + 2}-D (N, C, ...), got "
                         f"{input.ndim}-D with shape {tuple(input.shape)}")
    if input.ndim == spatial + 2:
        return False, input, *rest
    return True, input.unsqueeze(0), *(r.unsqueeze(0) if hasattr(r, "unsqueeze") else r for r in rest)


def _unbatch(unbatched, out):
    if not unbatched:
        return out
    return tuple(o.squeeze(0) for o in out) if isinstance(out, tuple) else out.squeeze(0)


def max_pool1d_with_indices(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                            return_indices=False):
    """(values, int64 indices l of each maximum in its row), as torch's."""
    unbatched, x = _batched(input, 1, "max_pool1d")
    return _unbatch(unbatched, _OPS["max_pool1d"](x, kernel_size=kernel_size, stride=stride, padding=padding,
                                                  dilation=dilation, ceil_mode=check_bool(ceil_mode, "ceil_mode")))


def max_pool1d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    out = max_pool1d_with_indices(input, kernel_size, stride, padding, dilation, ceil_mode)
    return out if check_flag(return_indices, "return_indices") else out[0]


def max_pool2d_with_indices(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                            return_indices=False):
    """(values, int64 indices h * W + w of each maximum in its plane), as torch's; (C, H, W) input too."""
    unbatched, x = _batched(input, 2, "max_pool2d")
    return _unbatch(unbatched, max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode, return_indices=True))


def avg_pool1d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    unbatched, x = _batched(input, 1, "avg_pool1d")
    return _unbatch(unbatched, _OPS["avg_pool1d"](x, kernel_size=kernel_size, stride=stride, padding=padding,
                                                  ceil_mode=check_bool(ceil_mode, "ceil_mode"),
                                                  count_include_pad=check_bool(count_include_pad,
                                                                               "count_include_pad")))


def _unpool(nd, input, indices, kernel_size, stride, padding, output_size):
    unbatched, x, idx = _batched(input, nd, f"max_unpool{nd}d", _t(indices, "indices"))
    return _unbatch(unbatched, _OPS[f"max_unpool{nd}d"](x, idx, kernel_size=kernel_size, stride=stride,
                                                        padding=padding, output_size=output_size))


def max_unpool1d(input, indices, kernel_size, stride=None, padding=0, output_size=None):
    """Each value of input written at its index (max_pool1d's) of a zero row of length output_size (default
    (L - 1) * stride - 2 * padding + kernel_size)."""
    return _unpool(1, input, indices, kernel_size, stride, padding, output_size)


def max_unpool2d(input, indices, kernel_size, stride=None, padding=0, output_size=None):
    """Each value of input written at its flat index h * W + w (max_pool2d's) of a zero plane of output_size."""
    return _unpool(2, input, indices, kernel_size, stride, padding, output_size)


def adaptive_avg_pool1d(input, output_size):
    unbatched, x = _batched(input, 1, "adaptive_avg_pool1d")
    return _unbatch(unbatched, _OPS["adaptive_avg_pool1d"](x, output_size=output_size))


def adaptive_max_pool1d_with_indices(input, output_size, return_indices=False):
    unbatched, x = _batched(input, 1, "adaptive_max_pool1d")
    return _unbatch(unbatched, _OPS["adaptive_max_pool1d"](x, output_size=output_size))


def adaptive_max_pool1d(input, output_size, return_indices=False):
    out = adaptive_max_pool1d_with_indices(input, output_size)
    return out if check_flag(return_indices, "return_indices") else out[0]


def adaptive_max_pool2d_with_indices(input, output_size, return_indices=False):
    unbatched, x = _batched(input, 2, "adaptive_max_pool2d")
    return _unbatch(unbatched, _OPS["adaptive_max_pool2d"](x, output_size=output_size))


def adaptive_max_pool2d(input, output_size, return_indices=False):
    out = adaptive_max_pool2d_with_indices(input, output_size)
    return out if check_flag(return_indices, "return_indices") else out[0]


def _lp_pool_inf(pool, input, norm_type, kernel_size, stride, ceil_mode):
    """torch's lp_pool for norm_type inf / -inf: the largest / smallest |x| of each window (its own branch in
    torch, the limit of the p-norm), or None for a finite norm_type."""
    if isinstance(norm_type, bool) or not isinstance(norm_type, (int, float, np.integer, np.floating)) or \
            not np.isinf(norm_type):
        return None
    a = _t(input, "input").abs()
    if norm_type > 0:
        return pool(a, kernel_size, stride, 0, 1, ceil_mode)
    return -pool(-a, kernel_size, stride, 0, 1, ceil_mode)


def _lp_pool(nd, pool, input, norm_type, kernel_size, stride, ceil_mode):
    """lp_pool{nd}d: the op, or for norm_type inf / -inf the max pool `pool` of |x| (torch's branch)."""
    out = _lp_pool_inf(pool, input, norm_type, kernel_size, stride, ceil_mode)
    if out is not None:
        return out
    unbatched, x = _batched(input, nd, f"lp_pool{nd}d")
    return _unbatch(unbatched, _OPS[f"lp_pool{nd}d"](x, norm_type, kernel_size, stride, ceil_mode))


def lp_pool1d(input, norm_type, kernel_size, stride=None, ceil_mode=False):
    """(sum over each window of x ** norm_type) ** (1 / norm_type), as torch's (no padding); for norm_type
    inf / -inf the max / min of |x| over each window, as torch's."""
    return _lp_pool(1, max_pool1d, input, norm_type, kernel_size, stride, ceil_mode)


def lp_pool2d(input, norm_type, kernel_size, stride=None, ceil_mode=False):
    return _lp_pool(2, max_pool2d, input, norm_type, kernel_size, stride, ceil_mode)


def max_pool3d_with_indices(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                            return_indices=False):
    """(values, int64 indices d * H * W + h * W + w of each maximum in its volume); (C, D, H, W) input too."""
    from ..ops.pool3d import max_pool3d_with_indices as fn
    return fn(input, kernel_size, stride, padding, dilation, ceil_mode)


def adaptive_max_pool3d_with_indices(input, output_size, return_indices=False):
    from ..ops.pool3d import adaptive_max_pool3d_with_indices as fn
    return fn(input, output_size)


def lp_pool3d(input, norm_type, kernel_size, stride=None, ceil_mode=False):
    from ..ops.pool3d import max_pool3d
    return _lp_pool(3, max_pool3d, input, norm_type, kernel_size, stride, ceil_mode)


# ---- dropout -----------------------------------------------------------------------------------------------
def _dropout(name, op, input, p, training, inplace, unbatched=False):
    from .functional import _maybe_inplace
    input = _t(input, "input")
    p, training = check_p(p, name), check_bool(training, f"{name}: training")
    if check_flag(inplace, "inplace") and (not training or p == 0.0):
        return input  # nothing to write: the input itself, as torch's

    def compute(t):
        if unbatched:
            return _OPS[op](t.unsqueeze(0), p=p, training=training).squeeze(0)
        return _OPS[op](t, p=p, training=training)
    return _maybe_inplace(input, inplace, name, compute)


def dropout1d(input, p=0.5, training=True, inplace=False):
    """Zero whole channels of (N, C, L) or (C, L) input with probability p, scale the rest by 1 / (1 - p)."""
    x = _t(input, "input")
    check_p(p, "dropout1d")
    if x.ndim not in (2, 3):
        raise ValueError(f"dropout1d: expected 2-D (C, L) or 3-D (N, C, L) input, got {x.ndim}-D with shape "
                         f"{tuple(x.shape)}")
    return _dropout("dropout1d", "feature_dropout", x, p, training, inplace, unbatched=x.ndim == 2)


def dropout2d(input, p=0.5, training=True, inplace=False):
    """Channel dropout of (N, C, H, W) input. torch's rules and warnings for other ranks: a 3-D input is taken as
    (N, C, L) (channel-wise 1-d dropout), any other rank is deprecated (channel dropout over dims 0 and 1)."""
    x = _t(input, "input")
    check_p(p, "dropout2d")
    if x.ndim not in (3, 4):
        warnings.warn(f"dropout2d: Received a {x.ndim}-D input to dropout2d, which is deprecated and will result in "
                      "an error in a future release. To retain the behavior and silence this warning, please use "
                      "dropout instead. Note that dropout2d exists to provide channel-wise dropout on inputs with 2 "
                      "spatial dimensions, a channel dimension, and an optional batch dimension (i.e. 3D or 4D "
                      "inputs).", stacklevel=2)
    if x.ndim == 3:
        warnings.warn("dropout2d: Received a 3D input to dropout2d and assuming that channel-wise 1D dropout "
                      "behavior is desired - input is interpreted as shape (N, C, L), where C is the channel dim. "
                      "This behavior will change in a future release to interpret the input as one without a batch "
                      "dimension, i.e. shape (C, H, W). To maintain the 1D channel-wise dropout behavior, please "
                      "switch to using dropout1d instead.", stacklevel=2)
    return _dropout("dropout2d", "feature_dropout", x, p, training, inplace)


def dropout3d(input, p=0.5, training=True, inplace=False):
    """Channel dropout of (N, C, D, H, W) or (C, D, H, W) input; other ranks warn (deprecated, as torch's) and are
    taken as unbatched."""
    x = _t(input, "input")
    check_p(p, "dropout3d")
    if x.ndim not in (4, 5):
        warnings.warn(f"dropout3d: Received a {x.ndim}-D input to dropout3d, which is deprecated and will result in "
                      "an error in a future release. To retain the behavior and silence this warning, please use "
                      "dropout instead. Note that dropout3d exists to provide channel-wise dropout on inputs with 3 "
                      "spatial dimensions, a channel dimension, and an optional batch dimension (i.e. 4D or 5D "
                      "inputs).", stacklevel=2)
    return _dropout("dropout3d", "feature_dropout", x, p, training, inplace, unbatched=x.ndim != 5)


def alpha_dropout(input, p=0.5, training=False, inplace=False):
    """Alpha dropout (for SELU networks): keeps zero mean and unit variance. training defaults to False, as
    torch's."""
    return _dropout("alpha_dropout", "alpha_dropout", input, p, training, inplace)


def feature_alpha_dropout(input, p=0.5, training=False, inplace=False):
    """Alpha dropout of whole channels (dims 0 and 1 index them). training defaults to False, as torch's."""
    return _dropout("feature_alpha_dropout", "feature_alpha_dropout", input, p, training, inplace)


for _name in ("max_pool1d", "avg_pool1d", "max_unpool1d", "max_unpool2d", "adaptive_avg_pool1d", "adaptive_max_pool1d",
              "adaptive_max_pool2d", "lp_pool1d", "lp_pool2d", "lp_pool3d", "alpha_dropout",
              "feature_alpha_dropout"):
    _OPS[_name].functional = globals()[_name]
