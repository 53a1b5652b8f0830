"""Batch normalisation on numpy float32 arrays: (N, C), (N, C, L) or (N, C, H, W), PyTorch semantics.

``batch_norm_forward`` updates ``running_mean`` / ``running_var`` in place when training (momentum
update, unbiased variance, as torch) and returns ``(y, save_mean, save_invstd)``; in evaluation
the saved statistics are the running ones, so ``batch_norm_backward`` takes the same arguments in
both modes.
"""
from __future__ import annotations

import numpy as np

from .. import _C
from .._validate import check_bool, check_float
from ._checks import as_f32, check_ndim

__all__ = ["batch_norm_forward", "batch_norm_backward"]


def _channel(v, name, c, writable=False):
    if v is None:
        return None
    if writable and isinstance(v, np.ndarray) and not v.flags.aligned:  # as_f32 would update a copy
        raise ValueError(f"{name} is updated in place: it must be aligned (numpy flags.aligned)")
    v = as_f32(v, name)
    if v.shape != (c,):
        raise ValueError(f"{name} must have shape ({c},), got {v.shape}")
    if writable:
        if not v.flags.writeable or not v.flags.c_contiguous:
            raise ValueError(f"{name} is updated in place: it must be writeable and contiguous")
        return v
    return np.ascontiguousarray(v)


def _input(x):
    x = as_f32(x, "input")
    check_ndim(x, "input", (2, 3, 4))
    if x.shape[1] < 1:
        raise ValueError(f"input must have at least one channel, got shape {x.shape}")
    return np.ascontiguousarray(x)


def batch_norm_forward(x, weight=None, bias=None, running_mean=None, running_var=None, training=False,
                       momentum=0.1, eps=1e-5):
    """``torch.nn.functional.batch_norm`` with the saved statistics.

    Returns ``(y, save_mean, save_invstd)`` where ``save_invstd = 1 / sqrt(var + eps)`` (batch
    statistics when training, running ones otherwise).
    """
    training = check_bool(training, "training")
    momentum, eps = check_float(momentum, "momentum"), check_float(eps, "eps", low=0.0)
    x = _input(x)
    c = x.shape[1]
    weight = _channel(weight, "weight", c)
    bias = _channel(bias, "bias", c)
    running_mean = _channel(running_mean, "running_mean", c, writable=training)
    running_var = _channel(running_var, "running_var", c, writable=training)
    if not training and (running_mean is None or running_var is None):
        raise ValueError("batch_norm: running_mean and running_var are required when training=False")
    if training and x.size // c < 2:
        raise ValueError(f"batch_norm: expected more than 1 value per channel when training, got input of shape {x.shape}")
    y = np.empty(x.shape, np.float32)
    save_mean = np.empty(c, np.float32)
    save_invstd = np.empty(c, np.float32)
    _C.batchnorm.batch_norm_forward(x, weight, bias, running_mean, running_var, training, momentum,
                                    eps, y, save_mean, save_invstd)
    return y, save_mean, save_invstd


def batch_norm_backward(grad_y, x, weight, save_mean, save_invstd, training=True, need=(True, True, True)):
    """``(grad_input, grad_weight, grad_bias)`` of batch_norm_forward.

    weight None means a scale of 1 (affine=False). need = (input, weight, bias) flags; an entry
    not needed comes back as None.
    """
    training = check_bool(training, "training")
    x = _input(x)
    c = x.shape[1]
    grad_y = as_f32(grad_y, "grad_output")
    if grad_y.shape != x.shape:
        raise ValueError(f"grad_output must have shape {x.shape}, got {grad_y.shape}")
    weight = _channel(weight, "weight", c)
    save_mean = _channel(save_mean, "save_mean", c)
    save_invstd = _channel(save_invstd, "save_invstd", c)
    if save_mean is None or save_invstd is None:
        raise ValueError("batch_norm_backward: save_mean and save_invstd are required")
    need_x, need_w, need_b = (check_bool(v, f"need[{i}]") for i, v in enumerate(need))
    gx = np.empty(x.shape, np.float32) if need_x else None
    gw = np.empty(c, np.float32) if need_w else None
    gb = np.empty(c, np.float32) if need_b else None
    _C.batchnorm.batch_norm_backward(x, np.ascontiguousarray(grad_y), weight, save_mean, save_invstd,
                                     training, gx, gw, gb)
    return gx, gw, gb
