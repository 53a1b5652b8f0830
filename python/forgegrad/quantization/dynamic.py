"""quantize_dynamic: torch.ao.quantization.quantize_dynamic for forgegrad models."""
from __future__ import annotations

import copy

from .. import nn
from .dtypes import as_qdtype, qint8
from .modules import DynamicQuantizedLinear

__all__ = ["quantize_dynamic"]

# The layer types quantize_dynamic can replace, and their quantized counterparts.
_DYNAMIC = {nn.Linear: DynamicQuantizedLinear}


def _spec_types(qconfig_spec):
    if qconfig_spec is None:
        return set(_DYNAMIC)
    if isinstance(qconfig_spec, dict):
        items = qconfig_spec.keys()
    elif isinstance(qconfig_spec, (set, list, tuple, frozenset)):
        items = qconfig_spec
    else:
        raise TypeError("qconfig_spec must be a set (or dict) of layer types, e.g. {nn.Linear}, "
                        f"got {type(qconfig_spec).__name__}")
    types = set()
    for t in items:
        if not isinstance(t, type):
            raise TypeError(f"qconfig_spec entries must be layer types such as nn.Linear, got {t!r}")
        if t not in _DYNAMIC:
            supported = ", ".join(f"nn.{c.__name__}" for c in _DYNAMIC)
            raise ValueError(f"quantize_dynamic cannot quantize {t.__name__} layers (supported: {supported})")
        types.add(t)
    return types


def quantize_dynamic(model, qconfig_spec=None, dtype=qint8, inplace: bool = False, reduce_range: bool = True,
                     fuse_relu: bool = True):
    """Replace the layers of the given types with dynamic-quantized ones (torch.ao's API).

    Args:
        model: an nn.Module.
        qconfig_spec: a set of layer types, e.g. ``{nn.Linear}`` (default: every supported type).
        dtype: qint8 (or ``torch.qint8``): per-output-channel symmetric int8 weights.
        inplace: modify ``model`` itself instead of a deep copy.
        reduce_range: activations in 7 bits as torch's x86 engine (see DynamicQuantizedLinear).
        fuse_relu: in an nn.Sequential, a Linear followed by nn.ReLU runs the ReLU in the int8 kernel's
            output pass (the ReLU module stays, and is then a no-op on non-negative values).

    Returns the quantized model (in eval mode). Raises ValueError for a type it cannot quantize.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"quantize_dynamic: model must be a forgegrad.nn.Module, got {type(model).__name__}")
    if as_qdtype(dtype) is not qint8:
        raise ValueError(f"quantize_dynamic supports dtype=qint8 only, got {dtype!r}")
    types = _spec_types(qconfig_spec)
    if not inplace:
        model = copy.deepcopy(model)
    if type(model) in types:  # the model itself is one layer
        return _DYNAMIC[type(model)].from_float(model, reduce_range=reduce_range).eval()
    _swap(model, types, reduce_range, fuse_relu)
    return model.eval()


def _swap(module, types, reduce_range, fuse_relu):
    children = list(module.named_children())
    for i, (name, child) in enumerate(children):
        if type(child) in types:
            relu = (fuse_relu and isinstance(module, nn.Sequential) and i + 1 < len(children)
                    and type(children[i + 1][1]) is nn.ReLU)
            setattr(module, name, _DYNAMIC[type(child)].from_float(child, reduce_range=reduce_range, relu=relu))
        else:
            _swap(child, types, reduce_range, fuse_relu)
