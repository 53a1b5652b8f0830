"""quantize_dynamic: torch.ao.quantization.quantize_dynamic for forgegrad models."""
from __future__ import annotations

import copy

import numpy as np

from .. import nn
from .dtypes import as_qdtype, qint8
from .bf16 import WeightOnlyBF16Linear
from .modules import DynamicLinearChain, DynamicQuantizedLinear, WeightOnlyInt8Linear
from .rnn import FLOAT_TO_DYNAMIC

__all__ = ["quantize_dynamic", "quantize_weight_only"]

# The layer types quantize_dynamic can replace, and their quantized counterparts.
_DYNAMIC = {nn.Linear: DynamicQuantizedLinear, **FLOAT_TO_DYNAMIC}


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
        qconfig_spec: a set of layer types, e.g. ``{nn.Linear, nn.LSTM, nn.GRU}`` (default: all three).
        dtype: qint8 (or ``torch.qint8``): per-output-channel symmetric int8 weights.
        inplace: modify ``model`` itself instead of a deep copy.
        reduce_range: activations in 7 bits as torch's x86 engine (see DynamicQuantizedLinear).
        fuse_relu: in an nn.Sequential, a Linear followed by nn.ReLU runs the ReLU in the int8 kernel's
            output pass and the ReLU becomes nn.Identity (as torch's fuse_modules does).

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
            kwargs = {"relu": relu} if type(child) is nn.Linear else {}
            setattr(module, name, _DYNAMIC[type(child)].from_float(child, reduce_range=reduce_range, **kwargs))
            if relu:
                setattr(module, children[i + 1][0], nn.Identity())
        else:
            _swap(child, types, reduce_range, fuse_relu)
    if isinstance(module, nn.Sequential):
        # its int8 layers run back to back (modules.DynamicLinearChain) while its modules stay these
        module.__dict__["_int8_chain"] = DynamicLinearChain.of(module._modules.values())


def _weight_only_type(dtype):
    """WeightOnlyInt8Linear for int8 (qint8, "int8", "qint8", torch.qint8), WeightOnlyBF16Linear for
    bfloat16 ("bfloat16", "bf16", torch.bfloat16)."""
    text = str(dtype).rsplit(".", 1)[-1] if not isinstance(dtype, type(qint8)) else "qint8"
    if text in ("qint8", "int8"):
        return WeightOnlyInt8Linear
    if text in ("bfloat16", "bf16"):
        return WeightOnlyBF16Linear
    raise ValueError(f"quantize_weight_only: dtype must be qint8 / \"int8\" or \"bfloat16\", got {dtype!r}")


def quantize_weight_only(model, qconfig_spec=None, inplace: bool = False, tied_head: bool = True, dtype=qint8):
    """Replace every nn.Linear with a weight-only layer: float32 activations, weights in ``dtype``
    (the decoder-LLM case). Returns the model (a deep copy unless ``inplace``) in eval mode.

    ``dtype``: qint8 (default; int8 per output channel, symmetric: WeightOnlyInt8Linear, a quarter of
    the bytes, within one weight quantization step) or ``"bfloat16"`` (WeightOnlyBF16Linear: half the
    bytes, and for a model loaded from a bfloat16 checkpoint the checkpoint's own weights, so the outputs
    are the float32 model's bit for bit).

    ``tied_head``: a Hugging Face decoder whose LM head is its token embedding (GPT-2, Qwen2.5-0.5B,
    Llama 3.2 1B) gets a ``dtype`` copy of that matrix as its head, as torchao's int8 weight-only does to
    a tied ``lm_head``: the lookups keep reading float32 rows, the head (often the largest matrix a token
    reads: 545 MB of Qwen2.5-0.5B's 1.98 GB) streams fewer bytes. False keeps it float32."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"quantize_weight_only: model must be a forgegrad.nn.Module, got {type(model).__name__}")
    layer = _weight_only_type(dtype)
    for t in (qconfig_spec or {nn.Linear}):
        if t is not nn.Linear:
            raise ValueError(f"quantize_weight_only quantizes nn.Linear layers only, got {t!r}")
    if not inplace:
        model = copy.deepcopy(model)
    if type(model) is nn.Linear:
        return layer.from_float(model).eval()
    for name, m in list(model.named_modules()):
        for child_name, child in list(m.named_children()):
            if type(child) is nn.Linear:
                setattr(m, child_name, layer.from_float(child))
    if tied_head and getattr(model, "tied", False) is True and hasattr(model, "tied_embedding"):
        w = np.asarray(model.tied_embedding().weight._data, dtype=np.float32)
        if not np.isfinite(w).all():
            raise ValueError("quantize_weight_only: the tied embedding (the LM head) holds NaN or infinity")
        head = layer(w.shape[1], w.shape[0], bias=False)
        head.set_weight(w, None)
        model.lm_head, model.tied = head, False
    return model.eval()
