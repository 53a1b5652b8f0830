"""Normalisation kernels on numpy float32 arrays, PyTorch semantics.

Batch norm over the channel axis of (N, C), (N, C, L) or (N, C, H, W): ``batch_norm_forward``
updates ``running_mean`` / ``running_var`` in place when training (momentum update, unbiased
variance, as torch) and returns ``(y, save_mean, save_invstd)``; in evaluation the saved statistics
are the running ones, so ``batch_norm_backward`` takes the same arguments in both modes.

Layer norm and RMS norm over the trailing ``normalized_shape`` axes of x: the leading axes are the
batch, and the saved statistics (``mean``, ``rstd``) have the batch shape ``x.shape[:-k]`` (torch's
native_layer_norm keeps k trailing 1s instead). The backward functions find the normalized axes
from that shape. Non-contiguous inputs are copied once; results are bit-identical for any thread
count.
"""
from __future__ import annotations

import numpy as np

from .. import _C
from .._validate import check_bool, check_float
from ._checks import as_f32, check_ndim, optional_f32

__all__ = ["batch_norm_forward", "batch_norm_backward", "layer_norm_forward", "layer_norm_backward",
           "rms_norm_forward", "rms_norm_backward"]

_LN = _C.layernorm


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
    """x as the kernels take it: (N, C), (N, C, L) or (N, C, H, W); a 5-D (N, C, D, H, W) input (BatchNorm3d) is
    the 4-D (N, C, D, H * W) view, the same per-channel statistics."""
    x = as_f32(x, "input")
    check_ndim(x, "input", (2, 3, 4, 5))
    if x.shape[1] < 1:
        raise ValueError(f"input must have at least one channel, got shape {x.shape}")
    x = np.ascontiguousarray(x)
    return x.reshape(x.shape[:3] + (-1,)) if x.ndim == 5 else x


def batch_norm_forward(x, weight=None, bias=None, running_mean=None, running_var=None, training=False,
                       momentum=0.1, eps=1e-5):
    """``torch.nn.functional.batch_norm`` with the saved statistics.

    Returns ``(y, save_mean, save_invstd)`` where ``save_invstd = 1 / sqrt(var + eps)`` (batch
    statistics when training, running ones otherwise).
    """
    training = check_bool(training, "training")
    momentum, eps = check_float(momentum, "momentum"), check_float(eps, "eps", low=0.0)
    shape = np.shape(x)
    x = _input(x)
    c = x.shape[1]
    weight = _channel(weight, "weight", c)
    bias = _channel(bias, "bias", c)
    running_mean = _channel(running_mean, "running_mean", c, writable=training)
    running_var = _channel(running_var, "running_var", c, writable=training)
    if not training and (running_mean is None or running_var is None):
        raise ValueError("batch_norm: running_mean and running_var are required when training=False")
    if training and x.size // c < 2:
        raise ValueError("batch_norm: expected more than 1 value per channel when training, "
                         f"got input of shape {x.shape}")
    y = np.empty(x.shape, np.float32)
    save_mean = np.empty(c, np.float32)
    save_invstd = np.empty(c, np.float32)
    _C.batchnorm.batch_norm_forward(x, weight, bias, running_mean, running_var, training, momentum,
                                    eps, y, save_mean, save_invstd)
    return y.reshape(shape), save_mean, save_invstd


def batch_norm_backward(grad_y, x, weight, save_mean, save_invstd, training=True, need=(True, True, True)):
    """``(grad_input, grad_weight, grad_bias)`` of batch_norm_forward.

    weight None means a scale of 1 (affine=False). need = (input, weight, bias) flags; an entry
    not needed comes back as None.
    """
    training = check_bool(training, "training")
    shape = np.shape(x)
    x = _input(x)
    c = x.shape[1]
    grad_y = as_f32(grad_y, "grad_output")
    if grad_y.shape != shape:
        raise ValueError(f"grad_output must have shape {shape}, got {grad_y.shape}")
    grad_y = grad_y.reshape(x.shape)
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
    return (None if gx is None else gx.reshape(shape)), gw, gb


_F32 = np.dtype(np.float32)


# ---- layer norm / RMS norm --------------------------------------------------------------------
def _contig(a):
    # np.ascontiguousarray would turn a 0-d statistic (of 1-D x) into shape (1,)
    return np.asarray(a, order="C")


def _normalized_shape(normalized_shape) -> tuple:
    if isinstance(normalized_shape, (int, np.integer)) and not isinstance(normalized_shape, (bool, np.bool_)):
        shape = (int(normalized_shape),)
    elif isinstance(normalized_shape, (tuple, list)):
        shape = tuple(normalized_shape)
    else:
        raise TypeError(f"normalized_shape must be an int or a tuple of ints, got {type(normalized_shape).__name__}")
    for d in shape:
        if isinstance(d, (bool, np.bool_)) or not isinstance(d, (int, np.integer)):
            raise TypeError(f"normalized_shape must hold ints, got {normalized_shape!r}")
    if not shape:
        raise ValueError("normalized_shape must have at least one dimension, got ()")
    if any(d < 1 for d in shape):
        raise ValueError(f"normalized_shape must hold sizes >= 1, got {shape}")
    return tuple(int(d) for d in shape)


def _rows_input(x, normalized_shape):
    """x as a contiguous float32 array whose trailing axes equal normalized_shape, and that shape."""
    x = as_f32(x, "x")
    shape = _normalized_shape(normalized_shape)
    if x.ndim < len(shape) or x.shape[x.ndim - len(shape):] != shape:
        raise ValueError(f"x's trailing dimensions must equal normalized_shape {shape}, got x of shape {x.shape}")
    return _contig(x), shape


def _param(v, name, shape):
    """An optional weight / bias of the normalized shape, contiguous."""
    return optional_f32(v, name, shape, "{name} must have the normalized shape {shape}, got {got}")


def _eps(eps):
    if isinstance(eps, (bool, np.bool_)) or not isinstance(eps, (int, float, np.integer, np.floating)):
        raise TypeError(f"eps must be a number, got {type(eps).__name__}")
    eps = float(eps)
    if not (0.0 <= eps < float("inf")):
        raise ValueError(f"eps must be a finite number >= 0, got {eps}")
    return eps


def _needs(needs, n):
    try:
        flags = tuple(bool(v) for v in needs)
    except TypeError:
        flags = ()
    if len(flags) != n:
        raise ValueError(f"needs must be a tuple of {n} booleans, got {needs!r}")
    return flags


def _backward_inputs(grad, x, stats):
    """Checked (grad, x, stats..., normalized shape) of a backward call; stats are (name, array)
    pairs whose shape (the batch shape) says where the normalized axes of x start."""
    x = _contig(as_f32(x, "x"))
    grad = as_f32(grad, "grad")
    if grad.shape != x.shape:
        raise ValueError(f"grad must have the shape of x {x.shape}, got {grad.shape}")
    out = []
    batch = None
    for name, s in stats:
        s = as_f32(s, name)
        if batch is None:
            batch = s.shape
            if s.ndim >= x.ndim or x.shape[:s.ndim] != s.shape:
                raise ValueError(f"{name} must have the batch shape of x (its axes before the normalized ones), "
                                 f"got {s.shape} for x of shape {x.shape}")
        elif s.shape != batch:
            raise ValueError(f"{name} must have the shape of {stats[0][0]} {batch}, got {s.shape}")
        out.append(_contig(s))
    return _contig(grad), x, out, x.shape[len(batch):]


def _plain_last_axis(x, normalized_shape, weight, bias, eps) -> bool:
    """The common call, which needs no conversion: a C-contiguous float32 x normalised over its last
    axis (an int or a 1-tuple of ints equal to it), float32 arrays or None as weight / bias, a finite
    float eps >= 0, parameters of shape (D,). The binding checks the rest (overlap) itself; these
    Python-side checks cost more than a batch-1 row's normalisation (a GPT forward makes 9 calls)."""
    if type(x) is not np.ndarray or x.dtype != _F32 or x.ndim < 1 or not x.flags.c_contiguous:
        return False
    ns = normalized_shape
    if type(ns) is not int:
        if type(ns) not in (tuple, list) or len(ns) != 1 or type(ns[0]) is not int:
            return False
        ns = ns[0]
    return (ns >= 1 and ns == x.shape[-1] and type(eps) is float and 0.0 <= eps < float("inf")
            and (weight is None or _plain_param(weight, ns)) and (bias is None or _plain_param(bias, ns)))


def _plain_param(p, n: int) -> bool:
    return type(p) is np.ndarray and p.dtype == _F32 and p.shape == (n,) and p.flags.c_contiguous


def layer_norm_forward(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """``torch.nn.functional.layer_norm`` over the trailing ``normalized_shape`` axes of x.

    Returns ``(y, mean, rstd)``: mean and ``rstd = 1 / sqrt(var + eps)`` (biased variance) per row,
    with the batch shape of x. weight / bias: None or arrays of ``normalized_shape``.
    """
    if _plain_last_axis(x, normalized_shape, weight, bias, eps):  # the binding's checks suffice
        y = np.empty(x.shape, np.float32)
        mean = np.empty(x.shape[:-1], np.float32)
        rstd = np.empty(x.shape[:-1], np.float32)
        _LN.layer_norm_forward(x, 1, weight, bias, eps, y, mean, rstd)
        return y, mean, rstd
    x, shape = _rows_input(x, normalized_shape)
    weight = _param(weight, "weight", shape)
    bias = _param(bias, "bias", shape)
    eps = _eps(eps)
    batch = x.shape[:x.ndim - len(shape)]
    y = np.empty(x.shape, np.float32)
    mean = np.empty(batch, np.float32)
    rstd = np.empty(batch, np.float32)
    _LN.layer_norm_forward(x, len(shape), weight, bias, eps, y, mean, rstd)
    return y, mean, rstd


def layer_norm_backward(grad, x, mean, rstd, weight=None, needs=(True, True, True)):
    """``(grad_x, grad_weight, grad_bias)`` of layer_norm_forward from its saved mean and rstd.

    weight None means a scale of 1. needs = (x, weight, bias) flags; an entry not needed comes back
    as None. grad_weight / grad_bias are column sums over the rows in a fixed order.
    """
    grad, x, (mean, rstd), shape = _backward_inputs(grad, x, [("mean", mean), ("rstd", rstd)])
    weight = _param(weight, "weight", shape)
    need_x, need_w, need_b = _needs(needs, 3)
    gx = np.empty(x.shape, np.float32) if need_x else None
    gw = np.empty(shape, np.float32) if need_w else None
    gb = np.empty(shape, np.float32) if need_b else None
    if need_x or need_w or need_b:
        _LN.layer_norm_backward(grad, x, mean, rstd, weight, gx, gw, gb)
    return gx, gw, gb


def rms_norm_forward(x, normalized_shape, weight=None, eps=None):
    """``torch.nn.functional.rms_norm``: y = x * rstd * weight, rstd = 1 / sqrt(mean(x^2) + eps).

    eps None means ``torch.finfo(float32).eps`` (torch's default). Returns ``(y, rstd)``, rstd with
    the batch shape of x.
    """
    x, shape = _rows_input(x, normalized_shape)
    weight = _param(weight, "weight", shape)
    eps = float(np.finfo(np.float32).eps) if eps is None else _eps(eps)
    y = np.empty(x.shape, np.float32)
    rstd = np.empty(x.shape[:x.ndim - len(shape)], np.float32)
    _LN.rms_norm_forward(x, len(shape), weight, eps, y, rstd)
    return y, rstd


def rms_norm_backward(grad, x, rstd, weight=None, needs=(True, True)):
    """``(grad_x, grad_weight)`` of rms_norm_forward from its saved rstd; needs = (x, weight) flags,
    an entry not needed comes back as None. weight None means a scale of 1."""
    grad, x, (rstd,), shape = _backward_inputs(grad, x, [("rstd", rstd)])
    weight = _param(weight, "weight", shape)
    need_x, need_w = _needs(needs, 2)
    gx = np.empty(x.shape, np.float32) if need_x else None
    gw = np.empty(shape, np.float32) if need_w else None
    if need_x or need_w:
        _LN.rms_norm_backward(grad, x, rstd, weight, gx, gw)
    return gx, gw
