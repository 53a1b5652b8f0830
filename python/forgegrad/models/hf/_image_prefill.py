"""The graph-free decoder forward of an image-text prompt (Gemma 3, LLaVA, LLaVA-NeXT, PaliGemma with their images):
the input rows with the images' rows merged in, through the text decoder's layers as direct kernel calls (the lean
prefill's, models/hf/_decode.py, given the rows, the masks and the positions), every Linear's GEMM against a weight
packed once for the kernel.

Why: the prompt's decoder forward is GEMMs by ~90 %; through the Tensor layer (or the lean prefill as a text prompt
runs it) each Linear packs its weight again at every call, ~7 % of a GEMM at 216 rows and ~20 % at 69 (LLaVA's and
Gemma 3's prompts in ``forgegrad bench image-text``), where onnxruntime packs its MatMul weights once at load. The
packed copies are kept in a ``WeightCache`` on each Linear (and on a tied LM head's embedding), valid while the
weights are the same arrays with no counted in-place write (_encoder_fast.py says what that follows): they take as
much memory as the decoder's weights again, as the vision towers' do, so only decoders of at most
FORGEGRAD_PACKED_WEIGHTS_MB (default 1024) of Linear weights keep them; a bigger one packs per call as a text
prompt's prefill (``nn.utils.freeze``'s packed copies are used where a frozen model has them, at any size, and then
nothing more is kept).

The results equal the Tensor path's bit for bit (the same kernels: GEMM, norms, the fused attention with the same
masks, the rotary tables). Training, autograd, traces (ONNX export), a cache already holding tokens, hooks, wrapped
or non-float32 layers and devices take the Tensor path (``lean_path_applies``)."""
from __future__ import annotations

from typing import Optional

import numpy as np

from ... import _C
from ... import nn
from ...grad_mode import graph_free
from ...nn.linear import packed_weight
from ._decode import LeanDecoder, lean_linear, lean_path_applies
from ._encoder_fast import WeightCache, packed_copies_fit
from ._layers import additive_mask

__all__ = ["image_prefill_applies", "image_prefill_logits"]


def _cache_of(module) -> WeightCache:
    cache = module.__dict__.get("_weight_cache")
    if cache is None:
        cache = module.__dict__["_weight_cache"] = WeightCache()
    return cache


def _packed_of(module) -> Optional[object]:
    """A Linear's (or a tied head's Embedding's) weight packed for the GEMM: freeze's copy, else the cached one;
    None where the weight is not a float32 numpy array (a weight-only layer: lean_linear runs it)."""
    w = module._parameters.get("weight")
    if w is None or type(w._data) is not np.ndarray or w._data.dtype != np.float32 or w._data.ndim != 2:
        return None
    p = packed_weight(module)
    return p if p is not None else _cache_of(module).get("packed", (w._data,), lambda: _C.gemm.PackedWeight(w._data))


def _packed_linear(layer, x: np.ndarray, act: int = -1) -> np.ndarray:
    """lean_linear with the weight packed once (a plain float32 Linear)."""
    if type(layer) is not nn.Linear:
        return lean_linear(layer, x, act)
    p = _packed_of(layer)
    if p is None:
        return lean_linear(layer, x, act)
    bias = layer._parameters.get("bias")
    return _C.gemm.linear(x, layer.weight._data, None if bias is None else bias._data, act, 0.0, p)


class _PackedPrefill(LeanDecoder):
    """The lean prefill with packed weights (the LM head's too)."""

    _linear = staticmethod(_packed_linear)

    def _tied_logits(self, x: np.ndarray) -> np.ndarray:
        emb = self.model.model.embed_tokens
        p = _packed_of(emb)
        return _C.gemm.linear(x, emb.weight.numpy(), None, -1, 0.0, p) if p is not None else \
            super()._tied_logits(x)


def image_prefill_applies(model, past: int, device: str) -> bool:
    """Whether ``image_prefill_logits`` computes this forward: a prompt from position 0 on the CPU, graph-free (no
    grad, no trace), a Llama-style text decoder the lean steps run (``lean_path_applies``)."""
    return past == 0 and device == "cpu" and graph_free() and hasattr(model, "model") \
        and hasattr(model.model, "layers") and lean_path_applies(model)


def _keeps_packed_copies(model) -> bool:
    """Whether this model's decoder keeps packed weight copies: at most FORGEGRAD_PACKED_WEIGHTS_MB (default 1024) of
    Linear weights, so a multi-GB decoder does not double its memory on its first image prompt (its prefill packs per
    call, as a text prompt's; ``nn.utils.freeze`` keeps packed copies at any size)."""
    return packed_copies_fit(model.model)


def image_prefill_logits(model, ids: np.ndarray, x: np.ndarray, pad, position_ids, cache, logits_to_keep: int,
                         masks) -> np.ndarray:
    """The logits (B, T or logits_to_keep, V) of the decoder on input rows ``x`` (B, T, E) for ``ids``: ``pad``
    (B, T) bool or None, ``position_ids`` (B, T) or None (0..T-1), ``masks`` {window: additive mask} or None (the
    causal masks with the padding, as the Tensor path's ``_stack`` makes them); fills ``cache`` (empty) when given."""
    T = ids.shape[1]
    if masks is None:
        masks = {w: additive_mask(pad, 0, T, causal=True, window=w) for w in set(model.sliding_windows)}
    positions = None if position_ids is None else np.asarray(position_ids, dtype=np.int64)
    steps = _PackedPrefill(model) if _keeps_packed_copies(model) else LeanDecoder(model)
    return steps.prefill(ids, cache, logits_to_keep, embeds=np.ascontiguousarray(x, np.float32), masks=masks,
                         positions=positions)
