"""forgegrad.nn.utils.clip_grad: gradient clipping with torch.nn.utils' names and semantics."""
from __future__ import annotations

import math
from typing import Iterable, Union

import numpy as np

from ... import devices as _devices
from ...grad_mode import no_grad
from ...kernels import optim as _k
from ...factories import stack
from ...tensor import Tensor

__all__ = ["clip_grad_norm_", "clip_grad_value_"]

_Params = Union[Tensor, Iterable[Tensor]]


def _grads(parameters: _Params):
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    out = []
    for i, p in enumerate(parameters):
        if not isinstance(p, Tensor):
            raise TypeError(f"parameters must be forgegrad Tensors, but entry {i} is {type(p).__name__}")
        if p.grad is not None:
            out.append(_sparse_values(p.grad) if getattr(type(p.grad._data), "_is_sparse_storage", False) else p.grad)
    return out


def _sparse_values(grad: Tensor) -> Tensor:
    """A sparse gradient (Embedding(sparse=True)'s) as its values: coalesced in place first, so the norm is the
    dense gradient's and scaling the values in place scales the gradient."""
    storage = grad._data.coalesce() if hasattr(grad._data, "coalesce") else grad._data
    if not storage.values.flags.writeable or not storage.values.flags.c_contiguous:
        storage = storage.with_values(np.array(storage.values, copy=True))
    grad._data = storage
    return Tensor._wrap_exact(storage.values)


def clip_grad_norm_(parameters: _Params, max_norm: float, norm_type: float = 2.0,
                    error_if_nonfinite: bool = False, foreach=None) -> Tensor:
    """Scale the gradients of ``parameters`` in place so that their total norm is at most ``max_norm``.

    The total norm is the ``norm_type``-norm of all gradients together (as if concatenated).
    Each gradient's norm is a deterministic C++ reduction (bit-identical for any thread count) in
    double; the total and the clip coefficient ``max_norm / (total + 1e-6)``, capped at 1, are
    then rounded to float32 as in torch, and every gradient is multiplied by that coefficient.

    With a float64 gradient among them everything is in float64, in numpy (as torch: the stacked
    norms promote). Gradients on another device: each norm is computed there by the registry's ops
    (in float32), the norms of a device come to the host together, and each gradient is scaled there by
    the ``mul`` op; the returned norm is on the device of the first gradient.

    Returns the total norm (before clipping) as a 0-d float32 (float64) Tensor. With
    ``error_if_nonfinite=True`` a NaN or infinite total raises RuntimeError and nothing is scaled.
    ``foreach`` is accepted for compatibility.
    """
    grads = _grads(parameters)
    norm_type = float(norm_type)
    max_norm = float(max_norm)
    if not grads:
        return Tensor._wrap(np.zeros((), np.float32))
    on_cpu = all(isinstance(g._data, np.ndarray) for g in grads)
    if on_cpu and any(g._data.dtype == np.float64 for g in grads):
        return _clip_float64(grads, max_norm, norm_type, error_if_nonfinite)
    norms = _k.vector_norms([g._data for g in grads], norm_type) if on_cpu else _norms(grads, norm_type)
    if norm_type == math.inf:
        total = max(norms) if not any(math.isnan(n) for n in norms) else math.nan
    else:
        total = _k.vector_norms([np.asarray(norms, np.float32)], norm_type)[0]
    total32 = np.float32(total)
    if error_if_nonfinite and not np.isfinite(total32):
        raise RuntimeError(f"The total norm of order {norm_type} for gradients from `parameters` is non-finite, so "
                           "it cannot be clipped. To disable this error and scale the gradients by the non-finite "
                           "norm anyway, set `error_if_nonfinite=False`")
    with np.errstate(invalid="ignore", over="ignore"):  # a non-finite total scales to NaN/0, as torch
        coef = np.float32(max_norm) / (total32 + np.float32(1e-6))
        coef = np.float32(min(coef, np.float32(1.0))) if not np.isnan(coef) else coef
        for g in grads:
            if isinstance(g._data, np.ndarray):
                g._data *= coef
            else:
                with no_grad():
                    g._data = (Tensor._wrap_exact(g._data) * float(coef))._data
    out = Tensor._wrap(np.array(total32, dtype=np.float32))
    return out if on_cpu else out.to(grads[0].device)


def _device_norm(g: Tensor, norm_type: float) -> Tensor:
    """The norm of one gradient on its device, through registry ops (a 0-d float32 tensor there)."""
    if norm_type == math.inf:
        return g.abs().amax()
    if norm_type == 2.0:
        return (g * g).sum().sqrt()
    if norm_type == 1.0:
        return g.abs().sum()
    return (g.abs() ** norm_type).sum() ** (1.0 / norm_type)


def _norms(grads, norm_type: float):
    """Each gradient's norm as a Python float: the CPU's by the C++ reduction, each other device's
    computed there and copied to the host in one transfer."""
    out = [0.0] * len(grads)
    by_device = {}
    for i, g in enumerate(grads):
        by_device.setdefault(_devices.device_of(g._data) if not isinstance(g._data, np.ndarray) else "cpu",
                             []).append(i)
    with no_grad():
        for dev, idx in by_device.items():
            if dev == "cpu":
                values = _k.vector_norms([grads[i]._data for i in idx], norm_type)
            else:
                values = stack([_device_norm(Tensor._wrap_exact(grads[i]._data), norm_type) for i in idx]).tolist()
            for i, v in zip(idx, values):
                out[i] = float(v)
    return out


def _norm(v: np.ndarray, norm_type: float) -> float:
    a = np.abs(v.reshape(-1).astype(np.float64))
    if norm_type == math.inf:
        return float(a.max()) if a.size else 0.0
    if norm_type == 0:
        return float(np.count_nonzero(a))
    return float((a ** norm_type).sum() ** (1.0 / norm_type))


def _clip_float64(grads, max_norm, norm_type, error_if_nonfinite) -> Tensor:
    # each gradient's norm in its own dtype (a float32 one rounded to float32), then the total in float64
    norms = [np.dtype(g._data.dtype).type(_norm(g._data, norm_type)) for g in grads]
    total = np.float64(_norm(np.asarray(norms, np.float64), norm_type))
    if error_if_nonfinite and not np.isfinite(total):
        raise RuntimeError(f"The total norm of order {norm_type} for gradients from `parameters` is non-finite, so "
                           "it cannot be clipped. To disable this error and scale the gradients by the non-finite "
                           "norm anyway, set `error_if_nonfinite=False`")
    with np.errstate(invalid="ignore", over="ignore"):
        coef = max_norm / (total + 1e-6)
        coef = min(coef, 1.0) if not np.isnan(coef) else coef
        for g in grads:
            g._data *= g._data.dtype.type(coef)
    return Tensor._wrap_exact(np.array(total, dtype=np.float64))


def clip_grad_value_(parameters: _Params, clip_value: float, foreach=None) -> None:
    """Clamp every gradient of ``parameters`` in place to ``[-clip_value, clip_value]``."""
    clip_value = float(clip_value)
    for g in _grads(parameters):
        if isinstance(g._data, np.ndarray):
            np.clip(g._data, -clip_value, clip_value, out=g._data)
        else:  # another device: the clamp op there
            with no_grad():
                g._data = Tensor._wrap_exact(g._data).clamp(-clip_value, clip_value)._data
