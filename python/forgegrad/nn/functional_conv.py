"""Functional convolution, pooling and batch norm on Tensors, with torch.nn.functional's names and
arguments (forgegrad.nn.functional exports them)."""
from __future__ import annotations

from .._validate import check_bool, check_flag, check_float
from ..grad_mode import _state as _grad_state
from ..ops.registry import _OPS
from ..tensor import Tensor

__all__ = ["conv1d", "conv2d", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "batch_norm"]


def _t(x, name):
    """x, which must be a Tensor (argument `name`); shared with forgegrad.nn.functional."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a forgegrad.Tensor, got {type(x).__name__}")
    return x


def _opt(x):
    """An optional argument as a Tensor (None stays None)."""
    return None if x is None else (x if isinstance(x, Tensor) else Tensor._stored(x))


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """1-D convolution of input (N, C, L) with weight (OC, C/groups, k), plus bias (OC,).

    stride, dilation: an int (or a tuple of one); padding: an int, "same" (stride 1) or "valid".
    """
    return _OPS["conv1d"](_t(input, "input"), _t(weight, "weight"), _opt(bias), stride=stride, padding=padding,
                          dilation=dilation, groups=groups)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D convolution of input (N, C, H, W) with weight (OC, C/groups, kH, kW), plus bias (OC,).

    padding: int, pair, "same" (stride 1) or "valid".
    """
    return _OPS["conv2d"](_t(input, "input"), _t(weight, "weight"), _opt(bias), stride=stride, padding=padding,
                          dilation=dilation, groups=groups)


def _pool2d(name, input, **kwargs):
    """The registered 2-d pool `name`; unbatched (C, H, W) input, as torch's, runs as a batch of one."""
    x = _t(input, "input")
    if x.ndim != 3:
        return _OPS[name].apply(x, **kwargs)  # (x is a tensor: the record's argument check has nothing to add)
    out = _OPS[name](x.unsqueeze(0), **kwargs)
    return tuple(o.squeeze(0) for o in out) if isinstance(out, tuple) else out.squeeze(0)


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """Max pooling; with return_indices=True also the int64 flat indices (h * W + w per plane)."""
    y, idx = _pool2d("max_pool2d", input, kernel_size=kernel_size, stride=stride, padding=padding,
                     dilation=dilation, ceil_mode=check_bool(ceil_mode, "ceil_mode"))
    return (y, idx) if check_flag(return_indices, "return_indices") else y


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    return _pool2d("avg_pool2d", input, kernel_size=kernel_size, stride=stride, padding=padding,
                   ceil_mode=check_bool(ceil_mode, "ceil_mode"),
                   count_include_pad=check_bool(count_include_pad, "count_include_pad"),
                   divisor_override=divisor_override)


def adaptive_avg_pool2d(input, output_size):
    return _pool2d("adaptive_avg_pool2d", input, output_size=output_size)


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
    """Batch normalisation over dim 1, as torch.nn.functional.batch_norm.

    When training, the batch statistics normalise and running_mean / running_var (if given) are
    updated in place: running = (1 - momentum) * running + momentum * batch (unbiased variance).
    """
    if training and (running_mean is not None or running_var is not None) and _grad_state.__dict__.get("vmap_loop"):
        from ..func._batched import check_batch_norm_in_loop  # (inside forgegrad.func.vmap's loop only)
        check_batch_norm_in_loop(running_mean, running_var)
    return _OPS["batch_norm"](_t(input, "input"), _opt(running_mean), _opt(running_var), _opt(weight), _opt(bias),
                              training=check_bool(training, "training"), momentum=check_float(momentum, "momentum"),
                              eps=check_float(eps, "eps", low=0.0))
