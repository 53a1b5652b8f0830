"""The graph-free inference forward of CLIP's / SigLIP's encoder layer (clip.py ``CLIPEncoderLayer``; the vision
towers of LLaVA, Gemma 3, PaliGemma): what onnxruntime does with the exported graph, in a handful of kernel calls.

- q, k and v as one GEMM against the three weights concatenated ((3E, E), and their biases), its output split into
  heads by one copy (three projections had cost three GEMM calls and three copies);
- every GEMM against a weight packed once for the kernel (``_C.gemm.PackedWeight``: ~7 % of each GEMM at 197 rows;
  the eager Linear packs its weight at every call unless the model was frozen), the packed copies as large as the
  weights (with the concatenated q|k|v and the scaled fc1 weights, the layers' inference takes about their weights'
  memory again; a frozen model's packed out_proj, fc1 and fc2 are used as they are);
- the MLP's activation as fc1's GEMM epilogue; quick_gelu ``x sigmoid(1.702 x)`` as ``silu(1.702 x) / 1.702``, fc1's
  weight and bias scaled by 1.702 once (SILU is an epilogue, quick_gelu's three elementwise passes are not): equal
  to the composed ops at float32 rounding, not bit for bit;
- the residual adds in place into the fresh GEMM outputs.

The arrays made from the weights are kept in a ``WeightCache`` on the layer (an encoder whose Linear weights pass
FORGEGRAD_PACKED_WEIGHTS_MB, default 1024, keeps none: each call makes them and drops them, as the eager Linear packs
per call, so a large tower does not take its weights' memory again), valid while the weights are the same
arrays with no in-place write counted since (``forgegrad._version_counter``: an optimizer step, ``copy_``,
``load_state_dict``) and no write through ``.data``; a write into a weight's numpy array itself is not seen (as
for ``forgegrad.compile``'s frozen copy). Training, autograd, traces (ONNX export), hooks on the layer's parts, a
replaced activation or non-float32 / device arrays take the layer's composed path, unchanged.
"""
from __future__ import annotations

import os

import numpy as np

from ... import _C, nn
from ... import _version_counter as _vc
from ...grad_mode import graph_free
from ...nn.hooks import has_call_hooks
from ...nn.linear import Linear, packed_weight
from ...tensor import Tensor

QUICK_GELU_SCALE = 1.702

# config hidden_act -> the GEMM epilogue's activation code (the kernel F.gelu & co. run: same results)
_EPILOGUES = {"gelu": _C.activation.GELU, "gelu_new": _C.activation.GELU_TANH,
              "gelu_fast": _C.activation.GELU_TANH, "gelu_pytorch_tanh": _C.activation.GELU_TANH,
              "relu": _C.activation.RELU, "silu": _C.activation.SILU, "swish": _C.activation.SILU,
              "tanh": _C.activation.TANH, "quick_gelu": _C.activation.SILU}


class WeightCache:
    """Values computed from weight arrays, per key, each valid while those arrays are the same objects, none has had a
    counted in-place write since and nothing was written through a ``.data`` tensor. A deep copy or a pickle starts
    empty (the copy's weights are other arrays)."""

    def __init__(self):
        self._entries: dict = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key, arrays: tuple, compute):
        e = self._entries.get(key)
        if e is not None and len(e[0]) == len(arrays) and all(a is b for a, b in zip(e[0], arrays)) \
                and e[3] == _vc.data_writes:
            if e[2] == _vc.clock:
                return e[4]
            if e[1] == [_vc.version_of(a) for a in arrays]:
                e[2] = _vc.clock  # something else was written: still valid
                return e[4]
        value = compute()
        self._entries[key] = [arrays, [_vc.version_of(a) for a in arrays], _vc.clock, _vc.data_writes, value]
        return value

    def __deepcopy__(self, memo):
        return WeightCache()

    def __reduce__(self):
        return WeightCache, ()


class _Transient:
    """A WeightCache that keeps nothing: each get computes (a module past the packed-weights budget)."""

    def get(self, key, arrays: tuple, compute):
        return compute()


_TRANSIENT = _Transient()


def packed_copies_fit(module) -> bool:
    """Whether ``module``'s Linear weights (float32 numpy) come to at most FORGEGRAD_PACKED_WEIGHTS_MB (default 1024)
    megabytes: its graph-free inference then keeps packed (and fused) copies of them, about its weights' memory again;
    a bigger module packs per call (``nn.utils.freeze`` keeps packed copies at any size). The size is measured once
    per module; the variable is read at every call."""
    size = module.__dict__.get("_linear_weight_bytes")
    if size is None:
        size = sum(m.weight._data.nbytes for m in module.modules() if type(m) is nn.Linear
                   and type(m.weight._data) is np.ndarray)
        module.__dict__["_linear_weight_bytes"] = size
    try:
        limit = float(os.environ.get("FORGEGRAD_PACKED_WEIGHTS_MB", 1024))
    except ValueError:
        raise ValueError(f"FORGEGRAD_PACKED_WEIGHTS_MB must be a number of megabytes, got "
                         f"{os.environ['FORGEGRAD_PACKED_WEIGHTS_MB']!r}") from None
    return size <= limit * (1 << 20)


def _arrays(*linears):
    """The weight and bias arrays of ``linears`` (a missing bias as None) when every weight and bias there is a float32
    numpy array, else None."""
    out = []
    for lin in linears:
        w, b = lin._parameters.get("weight"), lin._parameters.get("bias")
        for p in (w, b):
            if p is None and p is b:
                out.append(None)
            elif p is None or type(p._data) is not np.ndarray or p._data.dtype != np.float32:
                return None
            else:
                out.append(p._data)
    return tuple(out)


def _packed(cache: WeightCache, key: str, linear):
    """(weight, bias, packed weight) of a Linear: freeze's packed copy where it made one, else one kept in the cache."""
    w, b = linear.weight._data, None if linear.bias is None else linear.bias._data
    p = packed_weight(linear)
    if p is None:
        p = cache.get(key, (w,) if b is None else (w, b), lambda: _C.gemm.PackedWeight(w))
    return w, b, p


def _qkv(cache: WeightCache, attn):
    """(weight (3E, E), bias (3E) or None, packed) of q, k and v together."""
    arrays = tuple(a for a in _arrays(attn.q_proj, attn.k_proj, attn.v_proj) if a is not None)

    def concat():
        w = np.ascontiguousarray(np.concatenate([attn.q_proj.weight._data, attn.k_proj.weight._data,
                                                 attn.v_proj.weight._data]))
        biases = [p.bias for p in (attn.q_proj, attn.k_proj, attn.v_proj)]
        b = None
        if any(x is not None for x in biases):
            b = np.concatenate([np.zeros(p.out_features, np.float32) if x is None else x._data
                                for x, p in zip(biases, (attn.q_proj, attn.k_proj, attn.v_proj))])
        return w, b, _C.gemm.PackedWeight(w)
    return cache.get("qkv", arrays, concat)


def _fc1_quick_gelu(cache: WeightCache, fc1):
    """fc1's weight and bias times 1.702, and the packed weight."""
    w, b = fc1.weight._data, None if fc1.bias is None else fc1.bias._data

    def scaled():
        ws = np.ascontiguousarray(w * np.float32(QUICK_GELU_SCALE))
        return ws, None if b is None else b * np.float32(QUICK_GELU_SCALE), _C.gemm.PackedWeight(ws)
    return cache.get("fc1_quick_gelu", (w,) if b is None else (w, b), scaled)


def fast_path_ok(layer, x) -> bool:
    """Whether ``layer`` (a CLIPEncoderLayer) may run ``fast_forward`` on ``x``: eval, graph-free, a float32 numpy
    input and weights, no hooks on its parts, its MLP's activation the configured one."""
    if layer.training or not graph_free() or not isinstance(x, Tensor) or type(x._data) is not np.ndarray \
            or x._data.dtype != np.float32 or x.ndim != 3:
        return False
    attn, mlp = layer.self_attn, layer.mlp
    if mlp.act is not getattr(mlp, "_configured_act", None) or getattr(mlp, "hidden_act", None) not in _EPILOGUES:
        return False
    parts = (attn, attn.q_proj, attn.k_proj, attn.v_proj, attn.out_proj, mlp, mlp.fc1, mlp.fc2)
    if any(has_call_hooks(m) for m in parts):
        return False
    if any(type(m) is not Linear for m in parts[1:5] + parts[6:]):  # a wrapped projection (an adapter, say)
        return False
    return _arrays(attn.q_proj, attn.k_proj, attn.v_proj, attn.out_proj, mlp.fc1, mlp.fc2) is not None


def fast_forward(layer, x: Tensor, mask, causal: bool, attend, keep: bool = True) -> Tensor:
    """``layer(x, mask, causal)`` for a graph-free call (see the module docstring); ``attend``: _layers.attend;
    ``keep``: whether the layer keeps the arrays made from its weights (its encoder within the packed-weights
    budget)."""
    cache = layer.__dict__.get("_weight_cache")
    if not keep:
        if cache is not None:  # kept under a larger budget: dropped
            del layer.__dict__["_weight_cache"]
        cache = _TRANSIENT
    elif cache is None:
        cache = layer.__dict__["_weight_cache"] = WeightCache()
    attn, mlp = layer.self_attn, layer.mlp
    B, T, E = x.shape
    H = attn.heads
    h = layer.layer_norm1(x)._data.reshape(B * T, E)
    w, b, p = _qkv(cache, attn)
    qkv = _C.gemm.linear(h, w, b, -1, 0.0, p)  # (B T, 3E)
    heads = np.ascontiguousarray(qkv.reshape(B, T, 3, H, E // H).transpose(2, 0, 3, 1, 4))  # (3, B, H, T, D)
    q, k, v = (Tensor._wrap(heads[i]) for i in range(3))
    out = attend(q, k, v, mask, causal=causal)._data  # (B, H, T, D)
    merged = np.ascontiguousarray(out.transpose(0, 2, 1, 3)).reshape(B * T, E)
    wo, bo, po = _packed(cache, "out_proj", attn.out_proj)
    y = _C.gemm.linear(merged, wo, bo, -1, 0.0, po)
    y += x._data.reshape(B * T, E)  # x + attention, in the fresh GEMM output
    h = layer.layer_norm2(Tensor._wrap(y.reshape(B, T, E)))._data.reshape(B * T, E)
    if mlp.hidden_act == "quick_gelu":
        w1, b1, p1 = _fc1_quick_gelu(cache, mlp.fc1)
        f = _C.gemm.linear(h, w1, b1, _EPILOGUES["quick_gelu"], 0.0, p1)
        f *= np.float32(1 / QUICK_GELU_SCALE)
    else:
        w1, b1, p1 = _packed(cache, "fc1", mlp.fc1)
        f = _C.gemm.linear(h, w1, b1, _EPILOGUES[mlp.hidden_act], 0.0, p1)
    w2, b2, p2 = _packed(cache, "fc2", mlp.fc2)
    z = _C.gemm.linear(f, w2, b2, -1, 0.0, p2)
    z += y
    return Tensor._wrap(z.reshape(B, T, E))
