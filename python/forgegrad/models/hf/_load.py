"""Putting a checkpoint's tensors into a model built on the meta device (``from_pretrained``).

The model is built with parameters that take no memory; each parameter then takes the checkpoint's array
itself (no random initialisation, no second copy), so loading peaks at about the checkpoint's float32 size
rather than three times it. With ``dtype="bfloat16"`` every ``nn.Linear`` becomes a WeightOnlyBF16Linear
holding the checkpoint's bfloat16 weights as they are in the file, and the token embedding a BF16Embedding
(a tied LM head shares its bits): half the memory of float32, and the same outputs as the float32 model, bit
for bit (the kernels widen each weight as they read it).
"""
from __future__ import annotations

from typing import Dict

import numpy as np

from ... import nn
from ._files import CheckpointError, as_float32, is_bfloat16

FLOAT32, BFLOAT16 = "float32", "bfloat16"


def weights_dtype(dtype) -> str:
    """"float32" or "bfloat16" from what from_pretrained's ``dtype`` takes: those names, "bf16", numpy's
    float32, or torch's dtypes by name."""
    if dtype is None:
        return FLOAT32
    try:
        if np.dtype(dtype) == np.float32:
            return FLOAT32
    except TypeError:
        pass
    text = str(dtype).rsplit(".", 1)[-1]
    if text in (FLOAT32, BFLOAT16, "bf16"):
        return BFLOAT16 if text != FLOAT32 else FLOAT32
    raise ValueError(f"from_pretrained: dtype must be \"float32\" or \"bfloat16\", got {dtype!r}")


def widen_unless_linear_weights(tensors: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Before the architecture's renaming (``from_hf``): every tensor widened to float32 except 2-D
    bfloat16 ones, which may be Linear weights (the renaming only slices and transposes those; 1-D ones, e.g.
    Gemma's norm offsets, may get arithmetic)."""
    return {k: v if (v.ndim == 2 and is_bfloat16(v)) else as_float32(v) for k, v in tensors.items()}


def _bfloat16_bits(key: str, a: np.ndarray, path: str) -> np.ndarray:
    if is_bfloat16(a):
        return np.ascontiguousarray(a).view(np.uint16)
    from ...quantization.bf16 import from_bfloat16_bits, to_bfloat16_bits
    bits = to_bfloat16_bits(as_float32(a))  # a float32 or float16 checkpoint: rounded to nearest
    if not np.isfinite(from_bfloat16_bits(bits)).all():
        raise CheckpointError(f"from_pretrained: {path!r}: tensor {key!r} holds NaN, infinity or a value past "
                              "bfloat16's largest, which dtype=\"bfloat16\" cannot hold")
    return bits


def _replace(model, name: str, module) -> None:
    owner = model
    *parents, child = name.split(".")
    for part in parents:
        owner = owner._modules[part]
    setattr(owner, child, module)


def materialize(model, arrays: Dict[str, np.ndarray], dtype: str, path: str) -> None:
    """Give each parameter and buffer of ``model`` (built on the meta device) its checked array from
    ``arrays`` (the model's state_dict keys). With bfloat16: every nn.Linear becomes a WeightOnlyBF16Linear
    on the checkpoint's weights and the token embedding a BF16Embedding; a tied LM head becomes a
    WeightOnlyBF16Linear sharing the embedding's bit patterns (no copy)."""
    state = model.state_dict(keep_vars=True)
    names = {id(m): name for name, m in model.named_modules()}
    linears, embed, others = {}, None, []
    if dtype == BFLOAT16:
        linears = {name: m for name, m in model.named_modules() if type(m) is nn.Linear}
        if hasattr(model, "tied_embedding") and type(model.tied_embedding()) is nn.Embedding:
            embed = model.tied_embedding()
        # Marian's separate source vocabulary: the encoder's own token table, a BF16Embedding too
        source = model.encoder_embedding() if hasattr(model, "encoder_embedding") else None
        if type(source) is nn.Embedding and source is not embed:
            others.append(source)
    skip = {name + ".weight" for name in linears}
    skip |= {names[id(e)] + ".weight" for e in [embed] + others if e is not None}
    for key, t in state.items():
        if key not in skip:
            if np.dtype(t._data.dtype).kind in "iu":  # an integer buffer (BatchNorm's num_batches_tracked) stays one
                a = np.asarray(arrays[key], dtype=t._data.dtype)
            else:
                a = as_float32(arrays[key])
            t._data = np.ascontiguousarray(a).reshape(a.shape)  # ascontiguousarray alone makes a 0-d array 1-d
    if dtype != BFLOAT16:
        return
    from ...quantization.bf16 import BF16Embedding, WeightOnlyBF16Linear
    for name, m in linears.items():
        q = WeightOnlyBF16Linear(m.in_features, m.out_features, bias=m.bias is not None)
        q.weight._data = _bfloat16_bits(name + ".weight", arrays[name + ".weight"], path)
        if m.bias is not None:
            q.bias._data = m.bias._data
        _replace(model, name, q)
    for other in others:
        key = names[id(other)] + ".weight"
        table = BF16Embedding(other.num_embeddings, other.embedding_dim)
        table.weight._data = _bfloat16_bits(key, arrays[key], path)
        _replace(model, names[id(other)], table)
    if embed is not None:
        key = names[id(embed)] + ".weight"
        table = BF16Embedding(embed.num_embeddings, embed.embedding_dim)
        table.weight._data = _bfloat16_bits(key, arrays[key], path)
        _replace(model, names[id(embed)], table)
        if getattr(model, "tied", False) is True:
            head = WeightOnlyBF16Linear(embed.embedding_dim, embed.num_embeddings, bias=False)
            head.weight._data = table.weight._data  # the same bits: the tied head reads the table
            model.lm_head, model.tied = head, False
