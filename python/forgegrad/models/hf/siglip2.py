"""SigLIP 2's dual encoders (transformers' ``Siglip2Model``, ``Siglip2TextModel``, ``Siglip2VisionModel``,
``Siglip2ForImageClassification``) with transformers' parameter names: SigLIP's towers (siglip.py) with NaFlex
vision inputs, images of any aspect ratio as a variable number of patches.

- ``pixel_values`` (B, max_num_patches, channels * patch * patch) float32: each image's patches, row-major, each
  patch's pixels in (row, column, channel) order, padded with zeros after its last patch (what
  ``Siglip2ImageProcessor``, siglip2_processing.py, makes); ``pixel_attention_mask`` (B, max_num_patches), 1 for a
  patch and 0 for padding (None: every place is a patch); ``spatial_shapes`` (B, 2) int, each image's patch grid
  (rows, columns).
- The patches go through a Linear (``patch_embedding``), plus the learned (sqrt(num_patches))^2 position table
  resized to each image's grid by transformers' bilinear, antialiased interpolation (``F.interpolate(mode="bilinear",
  align_corners=False, antialias=True)``'s weights): the weights depend only on ``spatial_shapes``, a (B, L, G * G)
  float32 matrix computed in Tensor ops (an exported graph computes it from its ``spatial_shapes`` input), the table's
  gradient flowing through one matmul. A padding place gets the first patch's position.
- The encoder and the MAP head attend only to patches (padding keys masked); ``last_hidden_state`` holds the padding
  places too (as transformers computes them). Siglip2ForImageClassification averages the patches' final states (the
  mask's places) into its ``classifier``.
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np

from ... import grad_mode, nn
from ...tensor import Tensor
from ._layers import FLOAT32_MAX, key_places, padding_bias
from .clip import CLIPEncoder, CLIPOutput, EncoderOutput, strip_prefix, sub_config, unit
from .siglip import SiglipModel, SiglipMultiheadAttentionPoolingHead, SiglipTextModel, siglip_loss
from .vit import _labels

__all__ = ["Siglip2Model", "Siglip2TextModel", "Siglip2VisionModel", "Siglip2ForImageClassification",
           "resize_weights"]

# transformers' Siglip2VisionConfig defaults
VISION_DEFAULTS = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                       num_channels=3, patch_size=16, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6,
                       attention_dropout=0.0, vision_use_head=True, num_patches=256)


class Siglip2TextModel(SiglipTextModel):
    """SigLIP 2's text tower: SigLIP's (``forward(input_ids, attention_mask=None)``; the processor pads to 64
    tokens; transformers' Siglip2TextConfig defaults are SigLIP's)."""

    architecture = "Siglip2TextModel"
    model_type = "siglip2_text_model"


def resize_weights(places: Tensor, spatial_shapes: Tensor, grid: int) -> Tensor:
    """(B, L, grid * grid): row p of image b weights the (grid, grid) position table into the position of its patch
    p (row p // w, column p % w of its (h, w) grid; a place past h * w takes patch 0), by bilinear interpolation with
    antialiasing as transformers' resize_positional_embeddings computes it (float32): along each axis the triangle
    filter widened by max(grid / size, 1) around the source centre (i + 0.5) * grid / size - 0.5, normalised to sum
    1. ``places``: a float (B, L) tensor (its values unused: L comes from its shape, which an exported graph keeps
    dynamic); ``spatial_shapes``: float (B, 2)."""
    positions = key_places(places)  # (B, L): 0 .. L - 1
    h, w = spatial_shapes[:, :1], spatial_shapes[:, 1:]  # (B, 1)
    rows = (positions / w).floor()
    inside = (positions < h * w).float()
    rows, cols = rows * inside, (positions - rows * w) * inside
    source = Tensor._wrap(np.arange(grid, dtype=np.float32))

    def axis(index: Tensor, size: Tensor) -> Tensor:  # (B, L, grid)
        scale = float(grid) / size  # (B, 1)
        support = scale.clamp(min=1.0).unsqueeze(-1)
        center = ((index + 0.5) * scale - 0.5).unsqueeze(-1)
        weights = (1 - (source - center).abs() / support).clamp(min=0.0)
        return weights / weights.sum(-1, keepdim=True)

    return (axis(rows, h).unsqueeze(-1) * axis(cols, w).unsqueeze(-2)).flatten(2)


class Siglip2VisionEmbeddings(nn.Module):
    def __init__(self, cfg: dict, who: str):
        super().__init__()
        E, p, n = cfg["hidden_size"], cfg["patch_size"], cfg["num_patches"]
        if isinstance(p, bool) or not isinstance(p, int) or p <= 0:
            raise ValueError(f"{who}: config patch_size must be a positive int, got {p!r}")
        side = int(n ** 0.5) if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 0
        if side * side != n or side == 0:
            raise ValueError(f"{who}: config num_patches must be a positive square (the position table is a square "
                             f"grid), got {n!r}")
        self.patch_size, self.grid, self.num_channels = p, side, cfg["num_channels"]
        self.patch_embedding = nn.Linear(cfg["num_channels"] * p * p, E)
        self.position_embedding = nn.Embedding(n, E)

    def forward(self, patches: Tensor, mask: Tensor, shapes: Tensor) -> Tensor:
        """patches (B, L, C * p * p); mask float (B, L); shapes float (B, 2)."""
        weights = resize_weights(mask, shapes, self.grid)
        return self.patch_embedding(patches) + weights @ self.position_embedding.weight


def _host(t) -> Optional[np.ndarray]:
    """A Tensor's or array's values to check on the host; None for a traced graph input (the exported graph checks
    nothing: its values are the graph's) or a meta tensor."""
    if isinstance(t, Tensor):
        return t._data if isinstance(t._data, np.ndarray) and grad_mode.recorder() is None else None
    return np.asarray(t)


def vision_inputs(pixel_values, pixel_attention_mask, spatial_shapes, cfg: dict, who: str):
    """(pixel_values float32 (B, L, C * p * p), the mask float (B, L), spatial_shapes float (B, 2), whether to mask:
    some place is padding, or a graph is traced), checked; a graph's input Tensors are used as they are."""
    x = pixel_values if isinstance(pixel_values, Tensor) else Tensor._wrap(
        np.ascontiguousarray(np.asarray(pixel_values, dtype=np.float32)))
    width = cfg["num_channels"] * cfg["patch_size"] ** 2
    if x.ndim != 3 or x.shape[2] != width or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{who}: pixel_values must have shape (batch, patches, {width}) (num_channels * patch_size "
                         f"** 2: patchified images, as Siglip2ImageProcessor makes them), got {tuple(x.shape)}")
    B, L = x.shape[0], x.shape[1]
    if spatial_shapes is None:
        raise ValueError(f"{who}: spatial_shapes (batch, 2) is required: each image's patch grid (rows, columns), "
                         "as Siglip2ImageProcessor gives it")
    shapes = spatial_shapes if isinstance(spatial_shapes, Tensor) else Tensor._wrap(np.asarray(spatial_shapes))
    if tuple(shapes.shape) != (B, 2) or np.dtype(shapes.dtype).kind not in "iu":
        raise ValueError(f"{who}: spatial_shapes must be an int array of shape ({B}, 2) (rows, columns of each "
                         f"image's patches), got {np.dtype(shapes.dtype)} {tuple(shapes.shape)}")
    values = _host(shapes)
    if values is not None and ((values <= 0).any() or (values.prod(-1) > L).any()):
        raise ValueError(f"{who}: every spatial_shapes row must be positive with rows * columns at most the {L} "
                         f"patch places of pixel_values, got {values.tolist()}")
    traced = grad_mode.recorder() is not None
    if pixel_attention_mask is None:
        return x, x[..., 0] * 0 + 1, shapes.float(), traced
    mask = pixel_attention_mask if isinstance(pixel_attention_mask, Tensor) else Tensor._wrap(
        np.asarray(pixel_attention_mask))
    values = _host(mask)
    if tuple(mask.shape) != (B, L) or (values is not None and values.size and not np.isin(values, (0, 1)).all()):
        raise ValueError(f"{who}: pixel_attention_mask must be a 0/1 array of shape {(B, L)} (1 for a patch, 0 for "
                         f"padding), got {np.dtype(mask.dtype)} {tuple(mask.shape)}")
    if values is not None and not values.astype(bool).any(-1).all():
        raise ValueError(f"{who}: every image needs at least one patch (a pixel_attention_mask row is all 0)")
    return x, mask.float(), shapes.float(), traced or values is None or not values.all()


class Siglip2VisionModel(nn.Module):
    """SigLIP 2's vision tower: NaFlex patch and position embeddings, the layers, ``post_layernorm``, and (with
    ``vision_use_head``, the default) the MAP ``head`` over the patches. ``forward(pixel_values,
    pixel_attention_mask=None, spatial_shapes)`` returns ``EncoderOutput(last_hidden_state (B, L, hidden),
    pooler_output (B, hidden) or None)``."""

    architecture = "Siglip2VisionModel"
    model_type = "siglip2_vision_model"
    defaults = VISION_DEFAULTS

    def __init__(self, config: dict):
        super().__init__()
        who = type(self).__name__
        self.config = sub_config(config, None, self.defaults, who)
        c = self.config
        self.embeddings = Siglip2VisionEmbeddings(c, who)
        self.encoder = CLIPEncoder(c, who)
        self.post_layernorm = nn.LayerNorm(c["hidden_size"], eps=c["layer_norm_eps"])
        self.head = SiglipMultiheadAttentionPoolingHead(c) if c["vision_use_head"] else None

    def forward(self, pixel_values, pixel_attention_mask=None, spatial_shapes=None) -> EncoderOutput:
        return self.run(pixel_values, pixel_attention_mask, spatial_shapes)[0]

    def run(self, pixel_values, pixel_attention_mask, spatial_shapes):
        """(EncoderOutput, the float (B, L) mask, whether it masks anything)."""
        x, mask, shapes, masked = vision_inputs(pixel_values, pixel_attention_mask, spatial_shapes, self.config,
                                                type(self).__name__)
        x = self.post_layernorm(self.encoder(self.embeddings(x, mask, shapes), padding_bias(mask) if masked else None))
        pooled = None
        if self.head is not None:  # padding keys get minus float32's max, as the encoder's bias
            pooled = self.head(x, key_padding_mask=(mask - 1) * FLOAT32_MAX if masked else None)
        return EncoderOutput(x, pooled), mask, masked

    def from_hf(self, tensors: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        return strip_prefix(tensors, "vision_model.")

    to_hf = SiglipTextModel.to_hf


class Siglip2Model(SiglipModel):
    """SigLIP 2: both towers, ``logit_scale`` and ``logit_bias``. ``get_text_features(input_ids,
    attention_mask=None)`` and ``get_image_features(pixel_values, pixel_attention_mask=None, spatial_shapes)``
    return the towers' pooled outputs; ``forward(input_ids, pixel_values, attention_mask=None,
    pixel_attention_mask=None, spatial_shapes, return_loss=False)`` returns ``CLIPOutput`` with ``logits_per_text =
    exp(logit_scale) * text_embeds @ image_embeds.T + logit_bias`` of the normalised embeddings."""

    architecture = "Siglip2Model"
    model_type = "siglip2"
    text_class, vision_class = Siglip2TextModel, Siglip2VisionModel

    def get_image_features(self, pixel_values, pixel_attention_mask=None, spatial_shapes=None) -> Tensor:
        return self.vision_model(pixel_values, pixel_attention_mask, spatial_shapes).pooler_output

    def forward(self, input_ids, pixel_values, attention_mask=None, pixel_attention_mask=None, spatial_shapes=None,
                return_loss: bool = False) -> CLIPOutput:
        image_embeds = unit(self.get_image_features(pixel_values, pixel_attention_mask, spatial_shapes))
        text_embeds = unit(self.get_text_features(input_ids, attention_mask))
        per_text = self.logits(text_embeds, image_embeds)
        return CLIPOutput(per_text.t(), per_text, text_embeds, image_embeds,
                          siglip_loss(per_text) if return_loss else None)


class Siglip2ForImageClassification(nn.Module):
    """The vision tower and a ``classifier`` Linear on the mean of the patches' final states (the head, when the
    checkpoint has one, is loaded and unused, as in transformers). ``forward(pixel_values, pixel_attention_mask=None,
    spatial_shapes)`` returns the logits (B, num_labels)."""

    architecture = "Siglip2ForImageClassification"
    model_type = "siglip2"

    def __init__(self, config: dict):
        super().__init__()
        self.config = dict(config)
        vision = sub_config(self.config, "vision_config", VISION_DEFAULTS, type(self).__name__)
        self.vision_model = Siglip2VisionModel(vision)
        labels = _labels(self.config)
        self.classifier = nn.Linear(vision["hidden_size"], labels) if labels > 0 else nn.Identity()

    def forward(self, pixel_values, pixel_attention_mask=None, spatial_shapes=None) -> Tensor:
        out, mask, masked = self.vision_model.run(pixel_values, pixel_attention_mask, spatial_shapes)
        x = out.last_hidden_state
        if pixel_attention_mask is None and not masked:
            return self.classifier(x.mean(dim=1))
        m = mask.unsqueeze(-1)
        return self.classifier((x * m).sum(1) / m.sum(1))

    def from_hf(self, tensors: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        return {k: v for k, v in tensors.items() if not k.endswith("position_ids")}

    to_hf = SiglipTextModel.to_hf

