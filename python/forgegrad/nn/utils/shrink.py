"""Structured pruning that makes a model smaller: pruned output rows/channels are cut out of their
Linear/Conv2d layer, and the next layer loses the matching inputs, so the model computes less.

    report = shrink.prune_structured(model, amount=0.5)   # ln_structured (L2, dim 0) + shrink
    # or prune yourself, then cut:  prune.ln_structured(layer, "weight", 0.5, n=2, dim=0); shrink.shrink(model)

The model's layers must run in the order they are registered, one after the other (an nn.Sequential,
nested Sequentials, or a model such as the zoo's LeNet whose forward chains its Sequentials).
Between a pruned layer and the next Linear/Conv2d only these may stand: activations, Dropout,
Identity, pools, BatchNorm1d/2d (sliced too) and, from a Conv2d to a Linear, Flatten (each channel
owns a contiguous block of the Linear's inputs). A pruned row still outputs its bias; that constant,
passed through the layers in between, is folded into the next layer's bias, so ``shrink`` does not
change the outputs (exactly for Linear -> Linear and Conv2d -> Flatten -> Linear; for Conv2d ->
Conv2d with zero padding the folded constant is exact away from the borders only). The layer
objects are kept; their parameters are replaced, so build the optimizer after shrinking.
"""
from __future__ import annotations

import numpy as np

from ...autograd import no_grad
from ...tensor import Tensor
from ..activation import Dropout, _Activation
from ..conv import AdaptiveAvgPool2d, AvgPool2d, Conv2d, MaxPool2d
from ..linear import Flatten, Identity, Linear
from ..normalization import BatchNorm1d, BatchNorm2d
from ..parameter import Parameter
from . import prune

__all__ = ["shrink", "prune_structured", "resize_to_state_dict", "chain"]

_ELEMENTWISE = (_Activation, Identity)
_POOLS = (MaxPool2d, AvgPool2d, AdaptiveAvgPool2d)
_BN = (BatchNorm1d, BatchNorm2d)


def chain(model):
    """[(path, module)] of the model's leaf modules in registration (= call) order."""
    return [(p, m) for p, m in model.named_modules() if not m._modules]


def _is_layer(m) -> bool:
    return type(m) is Linear or (type(m) is Conv2d and m.groups == 1)


def _segments(model):
    """(layer, between, next_layer) for each Linear/Conv2d followed by another one through modules
    that shrinking can pass; layers whose successor cannot be matched are left out."""
    leaves = chain(model)
    out = []
    for i, (_, m) in enumerate(leaves):
        if not _is_layer(m):
            continue
        between = []
        for _, n in leaves[i + 1:]:
            if _is_layer(n):
                flat = any(isinstance(b, Flatten) for b in between)
                if (type(m) is Linear and type(n) is Linear and not flat) or \
                        (type(m) is Conv2d and (type(n) is Conv2d and not flat or type(n) is Linear and flat)):
                    out.append((m, between, n))
                break
            if isinstance(n, _ELEMENTWISE + _POOLS + _BN + (Dropout, Flatten)):
                between.append(n)
                continue
            break
    return out


def _keep_rows(layer) -> np.ndarray:
    """Output rows/channels to keep: those whose pruning mask is not all zero (all, if not pruned)."""
    mask = getattr(layer, "weight_mask", None)
    if mask is None:
        return np.arange(layer.weight.shape[0])
    return np.flatnonzero(mask._data.reshape(mask.shape[0], -1).any(axis=1))


def _constants(layer, between, removed) -> np.ndarray:
    """What each removed channel feeds the next layer: its bias through the elementwise layers and
    BatchNorm in between (pools and Flatten keep a constant map constant; Dropout is off in eval)."""
    if layer.bias is None:
        v = np.zeros(layer.weight.shape[0], np.float32)
    else:
        v = np.array(layer.bias._data, np.float32)
    x = Tensor._stored(v.reshape((1, -1) if type(layer) is Linear else (1, -1, 1, 1)))
    with no_grad():
        for b in between:
            if isinstance(b, _ELEMENTWISE):
                x = b(x)
            elif isinstance(b, _BN):
                was = b.training
                b.eval()
                x = b(x)
                b.train(was)
    return x._data.reshape(-1)[removed]


def _set(module, name, arr):
    setattr(module, name, Parameter(np.ascontiguousarray(arr, dtype=np.float32)))


def _slice_bn(bn, keep):
    for name in ("weight", "bias"):
        if getattr(bn, name, None) is not None:
            _set(bn, name, bn._parameters[name]._data[keep])
    for name in ("running_mean", "running_var"):
        buf = bn._buffers.get(name)
        if buf is not None:
            bn.register_buffer(name, Tensor._stored(np.ascontiguousarray(buf._data[keep])))
    bn.num_features = len(keep)


def shrink(model) -> dict:
    """Cut the structurally pruned rows/channels (rows whose ``weight_mask`` is all zero) out of every
    Linear/Conv2d that feeds another one, and the matching inputs of that next layer; pruning on the
    touched layers is made permanent (``prune.remove``). Returns {layer path: (size before, after)}."""
    names = {id(m): p for p, m in model.named_modules()}
    plan = [(m, between, n, _keep_rows(m)) for m, between, n in _segments(model)]
    report = {}
    for m, between, n, keep in plan:
        # make every pruning permanent first, so the slices below act on plain parameters
        for layer in (m, n):
            if "weight_orig" in layer._parameters:
                prune.remove(layer, "weight")
    for m, between, n, keep in plan:
        size = m.weight.shape[0]
        removed = np.setdiff1d(np.arange(size), keep)
        if len(removed) == 0 or len(keep) == 0:
            continue
        c = _constants(m, between, removed)
        w_next = n.weight._data
        flat = type(m) is Conv2d and type(n) is Linear
        if flat:
            block = w_next.shape[1] // size
            w3 = w_next.reshape(w_next.shape[0], size, block)
            shift = (w3[:, removed, :] * c[None, :, None]).sum(axis=(1, 2))
            new_w = w3[:, keep, :].reshape(w_next.shape[0], len(keep) * block)
        elif type(n) is Conv2d:
            shift = w_next[:, removed].sum(axis=(2, 3)) @ c
            new_w = w_next[:, keep]
        else:
            shift = w_next[:, removed] @ c
            new_w = w_next[:, keep]
        if np.any(shift != 0):
            if n.bias is None:
                _set(n, "bias", np.zeros(w_next.shape[0], np.float32))
            _set(n, "bias", n.bias._data + shift.astype(np.float32))
        _set(n, "weight", new_w)
        if type(n) is Linear:
            n.in_features = new_w.shape[1]
        else:
            n.in_channels = new_w.shape[1]
        _set(m, "weight", m.weight._data[keep])
        if m.bias is not None:
            _set(m, "bias", m.bias._data[keep])
        if type(m) is Linear:
            m.out_features = len(keep)
        else:
            m.out_channels = len(keep)
        for b in between:
            if isinstance(b, _BN):
                _slice_bn(b, keep)
        report[names.get(id(m), type(m).__name__)] = (size, len(keep))
    return report


def prune_structured(model, amount, n=2) -> dict:
    """``prune.ln_structured(layer, "weight", amount, n, dim=0)`` on every Linear/Conv2d that feeds
    another one (never the output layer), then ``shrink``. Returns shrink's report."""
    segments = _segments(model)
    if not segments:
        raise ValueError(f"prune_structured: {type(model).__name__} has no Linear/Conv2d feeding another one "
                         "through layers shrinking can pass (activations, Dropout, pools, BatchNorm, Flatten)")
    for m, _, _ in segments:
        prune.ln_structured(m, "weight", amount=amount, n=n, dim=0)
    return shrink(model)


def resize_to_state_dict(model, state_dict) -> None:
    """Give the Linear/Conv2d/BatchNorm layers of ``model`` (built at its original sizes) the shapes in a
    shrunk model's ``state_dict``, so that ``model.load_state_dict(state_dict)`` loads it."""
    for path, m in model.named_modules():
        pre = path + "." if path else ""
        w = state_dict.get(pre + "weight")
        if w is None or not isinstance(m, (Linear, Conv2d) + _BN):
            continue
        shape = tuple(np.shape(w._data if isinstance(w, Tensor) else w))
        if shape == tuple(m.weight.shape):
            continue
        _set(m, "weight", np.zeros(shape, np.float32))
        if isinstance(m, _BN):
            _slice_bn(m, np.zeros(shape[0], np.int64))  # placeholders of the new size
            continue
        if m.bias is not None:
            _set(m, "bias", np.zeros(shape[0], np.float32))
        if type(m) is Linear:
            m.out_features, m.in_features = shape
        else:
            m.out_channels, m.in_channels = shape[0], shape[1] * m.groups
