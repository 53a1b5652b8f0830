"""DPT, the Dense Prediction Transformer (transformers' ``DPTModel``, ``DPTForDepthEstimation``,
``DPTForSemanticSegmentation``; config model_type "dpt"), with the parameter names of its checkpoints.

The encoder is ViT's (vit.py: its layers, final LayerNorm and pooler) with DPT's embeddings: the position table
resized to every image's patch grid by bilinear interpolation (align_corners=False; the identity at the trained
grid), so any image of at least one patch runs. The task models read the layers ``backbone_out_indices`` (counted
from the first layer's output) before the final LayerNorm, through the DPT neck (dpt_neck.py: ``readout_type``
handling, fusion upsampling by 2) and a head on the finest fused map:

- depth (``DPTForDepthEstimation``): [``add_projection``: conv3x3 256 -> 256, relu] conv3x3 (fusion -> fusion / 2)
  -> upsample x2 (bilinear, align_corners=True) -> conv3x3 (-> 32) -> relu -> conv1x1 (-> 1) -> relu, giving
  ``predicted_depth`` (B, 2 * m, 2 * m') for the finest fused map m x m' (with the default reassemble factors 16
  times the patch grid rounded up to even: the image's size for patch 16 and an even grid);
- segmentation (``DPTForSemanticSegmentation``): conv3x3 (no bias) -> BatchNorm -> relu -> dropout -> conv1x1
  (-> num_labels) -> upsample x2, giving ``logits`` (B, num_labels, ., .) (the auxiliary head's weights are read and
  kept: transformers uses it only for the training loss).

``DPTForDepthEstimation`` also builds from a config with a DINOv2 ``backbone_config`` (the "dpt-dinov2" checkpoints:
``backbone.`` a backbones.Dinov2Backbone, its patch size setting the grid). Refused with a ValueError naming the
config key: the hybrid ViT (``is_hybrid``: a BiT ResNet stem) and other backbones (BEiT, Swin v2).

``forward(pixel_values, output_hidden_states=False)`` returns ``predicted_depth`` / ``logits``; with
``output_hidden_states``: ``DepthEstimatorOutput(predicted_depth, hidden_states)`` /
``SemanticSegmenterOutput(logits, hidden_states)``, the encoder's embeddings' and every layer's tokens. Unlike
transformers (which reshapes the tokens by the square root of their count and so raises on them), images whose patch
grid is not square work.
"""
from __future__ import annotations

from typing import Dict, NamedTuple, Optional, Tuple

import numpy as np

from ... import nn
from ...nn import functional as F
from ...tensor import Tensor
from ._layers import config_probability
from .backbones import Dinov2Backbone
from .beit import bilinear_matrix
from .depth_anything import DepthEstimatorOutput, backbone_config
from .dpt_neck import DPTNeck
from .vit import ViTEmbeddings, ViTModel, _labels, _pixels

__all__ = ["DPTModel", "DPTForDepthEstimation", "DPTForSemanticSegmentation", "SemanticSegmenterOutput"]


class SemanticSegmenterOutput(NamedTuple):
    """A segmentation model's answer with ``output_hidden_states=True`` (transformers' tuple: logits,
    hidden_states)."""
    logits: Tensor
    hidden_states: Optional[Tuple[Tensor, ...]] = None


def _refuse_hybrid(cfg: dict, who: str) -> None:
    if cfg.get("is_hybrid"):
        raise ValueError(f"{who}: config is_hybrid=true (DPT-Hybrid: a BiT ResNet stem before the ViT) is not "
                         "supported; DPT on a plain ViT (is_hybrid false) or a DINOv2 backbone is")


class DPTViTEmbeddings(ViTEmbeddings):
    """ViT's embeddings with the position table resized bilinearly to every image's grid."""

    owner = "DPTModel"
    resize_matrix = staticmethod(bilinear_matrix)
    resize_mode = "bilinear"

    def forward(self, pixels: Tensor, interpolate: bool = True) -> Tensor:
        return super().forward(pixels, True)


class DPTModel(ViTModel):
    """DPT's encoder (ViT with DPT's embeddings): ``forward(pixel_values, output_hidden_states=False)`` returns
    ``ViTOutput(last_hidden_state, pooler_output or None, hidden_states or None)`` for images of any size; loaded
    from a task model's checkpoint it reads the weights under ``dpt.``."""

    architecture = "DPTModel"
    model_type = "dpt"
    prefix = "dpt."
    embeddings_class = DPTViTEmbeddings

    def __init__(self, config: dict, add_pooling_layer: bool = True):
        _refuse_hybrid(config, type(self).__name__)
        super().__init__(config, add_pooling_layer)

    def forward(self, pixel_values, interpolate_pos_encoding: bool = True, output_hidden_states: bool = False):
        return super().forward(pixel_values, True, output_hidden_states)


class _DPTTask(nn.Module):
    """The encoder (DPTModel, or a DINOv2 backbone), the chosen layers and the neck both heads share."""

    model_type = "dpt"

    def __init__(self, config: dict, allow_backbone: bool):
        super().__init__()
        self.config = dict(config)
        cfg, who = self.config, type(self).__name__
        _refuse_hybrid(cfg, who)
        if cfg.get("backbone_config") is not None:
            if not allow_backbone:
                raise ValueError(f"{who}: a config with backbone_config is not supported (transformers builds "
                                 "this model on its own ViT)")
            self.backbone = Dinov2Backbone(backbone_config(cfg, who))
            cfg["backbone_config"] = self.backbone.config
            hidden, n = self.backbone.config["hidden_size"], len(self.backbone.out_indices)
        else:
            for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"):
                v = cfg.get(key)
                if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                    raise ValueError(f"{who}: config {key} must be a positive int (the ViT's size; or give a DINOv2 "
                                     f"backbone_config), got {v!r}")
            self.dpt = DPTModel(cfg, add_pooling_layer=False)
            layers = cfg["num_hidden_layers"]
            self.out_indices = list(cfg.get("backbone_out_indices") or (2, 5, 8, 11))
            if any(isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < layers for i in self.out_indices):
                raise ValueError(f"{who}: config backbone_out_indices must be layer indices in [0, {layers - 1}], got "
                                 f"{cfg.get('backbone_out_indices')!r}")
            # transformers keeps the layers whose index is in the list, in layer order (not the list's)
            self.out_indices = sorted(set(self.out_indices))
            hidden, n = cfg["hidden_size"], len(self.out_indices)
        self.neck = DPTNeck(cfg, hidden, cfg.get("readout_type", "project"), cfg.get("hidden_act", "gelu"), who)
        if n != self.neck.stages:
            raise ValueError(f"{who}: the encoder gives {n} hidden states (backbone_out_indices / the backbone's "
                             f"out_indices) but neck_hidden_sizes has {self.neck.stages} entries")
        self.head_in_index = int(cfg.get("head_in_index", -1))

    def _fused(self, pixel_values, output_hidden_states: bool):
        """(the fused maps, coarsest first; the encoder's hidden states or None)."""
        if hasattr(self, "backbone"):
            patches = self.backbone.embeddings.patch_embeddings
            pixels = _pixels(pixel_values, type(self).__name__, patches.num_channels, patches.patch_size)
            out = self.backbone(pixels, output_hidden_states=output_hidden_states)
            chosen, states = out.feature_maps, out.hidden_states
        else:
            patches = self.dpt.embeddings.patch_embeddings
            pixels = _pixels(pixel_values, type(self).__name__, patches.num_channels, patches.patch_size)
            states = self.dpt(pixels, output_hidden_states=True).hidden_states
            chosen = [states[1 + i] for i in self.out_indices]
            states = states if output_hidden_states else None
        (H, W), (ph, pw) = pixels.shape[2:], patches.patch_size
        return self.neck(chosen, (H // ph, W // pw)), states

    def from_hf(self, tensors: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        return tensors

    def to_hf(self) -> Dict[str, np.ndarray]:
        return {k: t.numpy() for k, t in self.state_dict().items()}


class DPTDepthEstimationHead(nn.Module):
    def __init__(self, cfg: dict, fusion: int):
        super().__init__()
        # transformers' projection is 256 -> 256 whatever fusion_hidden_size is (its checkpoints' width)
        self.projection = nn.Conv2d(256, 256, 3, padding=1) if cfg.get("add_projection") else None
        self.head = nn.Sequential(nn.Conv2d(fusion, fusion // 2, 3, padding=1),
                                  nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
                                  nn.Conv2d(fusion // 2, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 1, 1),
                                  nn.ReLU())

    def forward(self, x: Tensor) -> Tensor:
        if self.projection is not None:
            x = F.relu(self.projection(x))
        return self.head(x).squeeze(1)


class DPTForDepthEstimation(_DPTTask):
    """DPT with its depth head (see the module's docstring)."""

    architecture = "DPTForDepthEstimation"

    def __init__(self, config: dict):
        super().__init__(config, allow_backbone=True)
        fusion = self.neck.convs[0].out_channels
        if self.config.get("add_projection") and fusion != 256:
            raise ValueError(f"DPTForDepthEstimation: config add_projection needs fusion_hidden_size 256 (the "
                             f"projection is 256 -> 256), got {fusion}")
        self.head = DPTDepthEstimationHead(self.config, fusion)

    def forward(self, pixel_values, output_hidden_states: bool = False):
        fused, states = self._fused(pixel_values, bool(output_hidden_states))
        depth = self.head(fused[self.head_in_index])
        return DepthEstimatorOutput(depth, states) if output_hidden_states else depth


class _SegmentationHead(nn.Module):
    def __init__(self, fusion: int, labels: int, p: float, upsample: bool):
        super().__init__()
        layers = [nn.Conv2d(fusion, fusion, 3, padding=1, bias=False), nn.BatchNorm2d(fusion), nn.ReLU(),
                  nn.Dropout(p), nn.Conv2d(fusion, labels, 1)]
        if upsample:
            layers.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True))
        self.head = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(x)


class DPTForSemanticSegmentation(_DPTTask):
    """DPT with its segmentation head (see the module's docstring); ``auxiliary_logits(pixel_values)`` runs the
    auxiliary head on the coarsest fused map (transformers' training-only head)."""

    architecture = "DPTForSemanticSegmentation"

    def __init__(self, config: dict):
        super().__init__(config, allow_backbone=False)
        fusion, labels = self.neck.convs[0].out_channels, _labels(self.config)
        if labels <= 0:
            raise ValueError(f"DPTForSemanticSegmentation: config needs at least one label, got {labels}")
        p = config_probability(self.config, "semantic_classifier_dropout", self.architecture)
        self.head = _SegmentationHead(fusion, labels, p, upsample=True)
        self.auxiliary_head = (_SegmentationHead(fusion, labels, 0.1, upsample=False)
                               if self.config.get("use_auxiliary_head", True) else None)

    def forward(self, pixel_values, output_hidden_states: bool = False):
        fused, states = self._fused(pixel_values, bool(output_hidden_states))
        logits = self.head(fused[self.head_in_index])
        return SemanticSegmenterOutput(logits, states) if output_hidden_states else logits

    def auxiliary_logits(self, pixel_values) -> Tensor:
        if self.auxiliary_head is None:
            raise ValueError("DPTForSemanticSegmentation: this config has use_auxiliary_head=false")
        return self.auxiliary_head(self._fused(pixel_values, False)[0][-1])
