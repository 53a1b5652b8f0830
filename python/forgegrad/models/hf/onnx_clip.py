"""ONNX export of CLIP's, SigLIP's and SigLIP 2's towers (clip.py, siglip.py, siglip2.py), one graph per tower, with
the input and output names of Hugging Face optimum's exports and the batch (and the text's sequence) dynamic:

    text     inputs ``input_ids``, ``attention_mask`` (batch, sequence) int64; outputs ``text_embeds``
             (batch, embedding) and ``last_hidden_state`` (batch, sequence, hidden) float32
    vision   input ``pixel_values`` (batch, channels, image_size, image_size) float32; outputs ``image_embeds``
             (batch, embedding) and ``last_hidden_state`` (batch, patches (+ 1 with CLIP's class token), hidden);
             SigLIP 2: inputs ``pixel_values`` (batch, patches, channels * patch * patch) float32,
             ``pixel_attention_mask`` (batch, patches) and ``spatial_shapes`` (batch, 2) int64, the patch count
             dynamic too, the position table's resize weights computed in the graph from ``spatial_shapes``

The embeddings are what ``get_text_features`` / ``get_image_features`` return (not normalised): projected for a
``CLIPModel`` or a ``*WithProjection`` tower, the pooled output for a bare tower and for SigLIP. The text graph
computes its masks (CLIP's causal and padding bias, SigLIP's padding bias) and CLIP's end-of-text pooling from its
inputs; it is verified in onnxruntime against forgegrad at the example's sizes and at others.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ... import nn
from ...tensor import Tensor
from .clip import CLIPModel, CLIPTextModel, CLIPTextModelWithProjection, CLIPVisionModel, CLIPVisionModelWithProjection
from .siglip import SiglipVisionModel
from .siglip2 import Siglip2Model, Siglip2VisionModel

__all__ = ["export_clip_tower"]

_TEXT = (CLIPModel, CLIPTextModel, CLIPTextModelWithProjection)
_VISION = (CLIPModel, CLIPVisionModel, CLIPVisionModelWithProjection, SiglipVisionModel, Siglip2VisionModel)


class _Tower(nn.Module):
    """One tower of ``model`` as a module returning (embeddings, last_hidden_state)."""

    def __init__(self, model, tower: str):
        super().__init__()
        self.model, self.tower = model, tower

    def forward(self, *inputs):
        m = self.model
        if isinstance(m, CLIPModel):
            if self.tower == "text":
                out = m.text_model(*inputs)
                return m.project_text(out.pooler_output), out.last_hidden_state
            out = m.vision_model(*inputs)
            return m.project_image(out.pooler_output), out.last_hidden_state
        out = m(*inputs)
        projected = isinstance(m, (CLIPTextModelWithProjection, CLIPVisionModelWithProjection))
        return (out[0] if projected else out.pooler_output), out.last_hidden_state


def _check(model, tower: str) -> None:
    if tower not in ("text", "vision"):
        raise ValueError(f"export_clip_tower: tower must be \"text\" or \"vision\", got {tower!r}")
    kinds = _TEXT if tower == "text" else _VISION
    if not isinstance(model, kinds):
        raise TypeError(f"export_clip_tower: a {tower} tower is exported from one of "
                        f"{', '.join(k.__name__ for k in kinds)} (or a SigLIP namesake), got {type(model).__name__}")
    if isinstance(model, (SiglipVisionModel, Siglip2VisionModel)) and model.head is None:
        raise ValueError(f"export_clip_tower: this {type(model).__name__} has no head (vision_use_head false), so no "
                         "image embedding to export")


def _text_example(cfg: dict, batch: int, length: int, seed: int):
    """Ids below the end-of-text id, each row ended by it (CLIP pools there), the last row right-padded after its
    third token."""
    rng = np.random.default_rng(seed)
    vocab, eos = int(cfg["vocab_size"]), cfg.get("eos_token_id")
    ids = rng.integers(0, vocab, size=(batch, length), dtype=np.int64)
    mask = np.ones((batch, length), np.int64)
    mask[-1, 3:] = 0
    if isinstance(eos, int) and 0 <= eos < vocab:
        ids[ids == eos] = 0
        ids[:, -1] = eos
        ids[-1, 2] = eos
    return ids, mask


def _naflex(vision, seed: int):
    """SigLIP 2's vision inputs: names, outputs and a batch-2 example of the config's num_patches places (at least 4),
    every place a patch (the verifier draws its masks from the example's values: all patches) and grids of 1 to
    floor(sqrt(places)) rows and columns (so the grids it draws fit the places)."""
    c = vision.config
    length = max(4, int(c["num_patches"]))
    side = int(length ** 0.5)
    rng = np.random.default_rng(seed)
    pixels = rng.standard_normal((2, length, c["num_channels"] * c["patch_size"] ** 2)).astype(np.float32)
    example = (Tensor._stored(pixels), Tensor._stored(np.ones((2, length), np.int64)),
               Tensor._stored(np.array([[1, side], [side, 1]])))
    return (["pixel_values", "pixel_attention_mask", "spatial_shapes"], ["image_embeds", "last_hidden_state"],
            example)


def export_clip_tower(model, path, tower: str, *, opset: int = 17, verify: bool = True, rtol: float = 1e-4,
                      atol: float = 1e-4, verify_sizes: Sequence[dict] = None, seed: int = 0):
    """Export the ``tower`` ("text" or "vision") of ``model`` (a CLIPModel, SiglipModel or Siglip2Model, or one of
    their towers, with or without projection) to ``path`` with dynamic ``batch`` (and ``sequence``; SigLIP 2's
    images: ``patches``) axes and, with ``verify``, check it in onnxruntime against forgegrad at the example's sizes
    (text: batch 2 of 7 tokens, one row padded; vision: batch 2; SigLIP 2: batch 2 of num_patches places) and at
    ``verify_sizes`` (default: batch 1 of 1 token and batch 3 of the position table's length; images: batches 1 and
    3; SigLIP 2: batch 1 and batch 3 of 5 more places). Returns the ExportReport of ``forgegrad.onnx.export``;
    raises TypeError for another model or tower, and as ``export`` does."""
    from ...onnx import export

    _check(model, tower)
    if tower == "text":
        text = model.text_model if isinstance(model, CLIPModel) else model
        cfg = text.config
        names, outs = ["input_ids", "attention_mask"], ["text_embeds", "last_hidden_state"]
        axes = {0: "batch", 1: "sequence"}
        dynamic = {"input_ids": axes, "attention_mask": axes, "text_embeds": {0: "batch"}, "last_hidden_state": axes}
        example = tuple(Tensor._stored(a) for a in _text_example(cfg, 2, min(7, cfg["max_position_embeddings"]), seed))
        if verify_sizes is None:
            verify_sizes = [{"batch": 1, "sequence": 1}, {"batch": 3, "sequence": cfg["max_position_embeddings"]}]
    elif isinstance(model, (Siglip2Model, Siglip2VisionModel)):
        names, outs, example = _naflex(model.vision_model if isinstance(model, Siglip2Model) else model, seed)
        patches = {0: "batch", 1: "patches"}
        dynamic = {"pixel_values": patches, "pixel_attention_mask": patches, "spatial_shapes": {0: "batch"},
                   "image_embeds": {0: "batch"}, "last_hidden_state": patches}
        if verify_sizes is None:
            length = example[0].shape[1]
            verify_sizes = [{"batch": 1, "patches": length}, {"batch": 3, "patches": length + 5}]
    else:
        vision = model.vision_model if isinstance(model, (CLIPModel, CLIPVisionModelWithProjection)) else model
        cfg = vision.config
        names, outs = ["pixel_values"], ["image_embeds", "last_hidden_state"]
        dynamic = {"pixel_values": {0: "batch"}, "image_embeds": {0: "batch"}, "last_hidden_state": {0: "batch"}}
        shape = (2, cfg["num_channels"], cfg["image_size"], cfg["image_size"])
        example = (Tensor._stored(np.random.default_rng(seed).standard_normal(shape).astype(np.float32)),)
        if verify_sizes is None:
            verify_sizes = [{"batch": 1}, {"batch": 3}]
    was_training = model.training
    try:
        return export(_Tower(model.eval(), tower), example, path, opset=opset, dynamic_axes=dynamic,
                      input_names=names, output_names=outs, verify=verify, rtol=rtol, atol=atol,
                      verify_sizes=list(verify_sizes))
    finally:
        model.train(was_training)
