"""Depth Anything V1 / V2 (transformers' ``DepthAnythingForDepthEstimation``; config model_type "depth_anything"),
with the parameter names of its checkpoints: a DINOv2 backbone (``backbone.``, backbones.Dinov2Backbone from the
config's ``backbone_config``: its chosen layers' tokens, layer-normed, not reshaped), the DPT neck (dpt_neck.py:
readout token dropped, each fusion layer upsampling to the next stage's size) and the depth head:

    conv3x3 (fusion -> fusion / 2) -> bilinear resize (align_corners=True) to (h * patch, w * patch)
    -> conv3x3 (-> head_hidden_size) -> relu -> conv1x1 (-> 1) -> relu ("relative") or sigmoid ("metric") * max_depth

``forward(pixel_values, output_hidden_states=False)`` with pixel_values (B, 3, H, W) returns ``predicted_depth``
(B, h * patch, w * patch) for the patch grid h = H // patch, w = W // patch (the image itself when its sides are
multiples of the patch, as the processors make them); with ``output_hidden_states``:
``DepthEstimatorOutput(predicted_depth, hidden_states)``, the backbone's embeddings' and every layer's tokens.
Relative depth is an affine-invariant inverse depth (larger is nearer); metric depth is in metres up to max_depth.
"""
from __future__ import annotations

from typing import Dict, NamedTuple, Optional, Tuple

import numpy as np

from ... import nn
from ...nn import functional as F
from ...tensor import Tensor
from .backbones import Dinov2Backbone
from .dpt_neck import DPTNeck
from .vit import _pair, _pixels

__all__ = ["DepthAnythingForDepthEstimation", "DepthEstimatorOutput"]

_WHO = "DepthAnythingForDepthEstimation"


class DepthEstimatorOutput(NamedTuple):
    """A depth model's answer with ``output_hidden_states=True`` (transformers' tuple: predicted_depth,
    hidden_states)."""
    predicted_depth: Tensor
    hidden_states: Optional[Tuple[Tensor, ...]] = None


def backbone_config(cfg: dict, who: str) -> dict:
    """The config's ``backbone_config`` (a DINOv2 one), checked: forgegrad builds DINOv2 backbones only."""
    sub = cfg.get("backbone_config")
    if not isinstance(sub, dict):
        raise ValueError(f"{who}: config backbone_config must be a DINOv2 backbone's config (a dict), got {sub!r}")
    kind = sub.get("model_type", "dinov2")
    if kind != "dinov2":
        raise ValueError(f"{who}: config backbone_config has model_type {kind!r}; only \"dinov2\" backbones are "
                         "supported")
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads"):
        v = sub.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"{who}: config backbone_config.{key} must be a positive int, got {v!r}")
    return sub


class DepthAnythingDepthEstimationHead(nn.Module):
    def __init__(self, cfg: dict, fusion: int):
        super().__init__()
        hidden = cfg.get("head_hidden_size", 32)
        if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden <= 0:
            raise ValueError(f"{_WHO}: config head_hidden_size must be a positive int, got {hidden!r}")
        kind = cfg.get("depth_estimation_type", "relative")
        if kind not in ("relative", "metric"):
            raise ValueError(f"{_WHO}: config depth_estimation_type must be \"relative\" or \"metric\", got {kind!r}")
        max_depth = cfg.get("max_depth", 1)
        max_depth = 1 if max_depth is None else max_depth
        if isinstance(max_depth, bool) or not isinstance(max_depth, (int, float)) or max_depth <= 0:
            raise ValueError(f"{_WHO}: config max_depth must be a positive number, got {max_depth!r}")
        self.metric, self.max_depth = kind == "metric", float(max_depth)
        self.head_in_index = int(cfg.get("head_in_index", -1))
        self.conv1 = nn.Conv2d(fusion, fusion // 2, 3, padding=1)
        self.conv2 = nn.Conv2d(fusion // 2, hidden, 3, padding=1)
        self.conv3 = nn.Conv2d(hidden, 1, 1)

    def forward(self, maps, size: Tuple[int, int]) -> Tensor:
        x = self.conv1(maps[self.head_in_index])
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
        x = self.conv3(F.relu(self.conv2(x)))
        x = (x.sigmoid() if self.metric else F.relu(x)) * self.max_depth
        return x.squeeze(1)


class DepthAnythingForDepthEstimation(nn.Module):
    """Depth Anything: see the module's docstring."""

    architecture = "DepthAnythingForDepthEstimation"
    model_type = "depth_anything"

    def __init__(self, config: dict):
        super().__init__()
        self.config = dict(config)
        cfg = self.config
        sub = backbone_config(cfg, _WHO)
        if sub.get("reshape_hidden_states", True) is not False:
            raise ValueError(f"{_WHO}: config backbone_config.reshape_hidden_states must be false (the neck reads "
                             "token sequences)")
        self.patch_size = _pair(cfg.get("patch_size", 14), "patch_size", f"{_WHO}: config")
        self.backbone = Dinov2Backbone(sub)
        cfg["backbone_config"] = self.backbone.config
        hidden = cfg.get("reassemble_hidden_size", 384)
        if hidden != sub["hidden_size"]:
            raise ValueError(f"{_WHO}: config reassemble_hidden_size {hidden!r} must equal the backbone's hidden_size "
                             f"{sub['hidden_size']}")
        self.neck = DPTNeck(cfg, hidden, "ignore", "relu", _WHO, sized_fusion=True,
                            defaults=((48, 96, 192, 384), 64))
        if len(self.backbone.out_indices) != self.neck.stages:
            raise ValueError(f"{_WHO}: the backbone gives {len(self.backbone.out_indices)} feature maps (its "
                             f"out_indices) but neck_hidden_sizes has {self.neck.stages} entries")
        self.head = DepthAnythingDepthEstimationHead(cfg, self.neck.convs[0].out_channels)

    def forward(self, pixel_values, output_hidden_states: bool = False):
        patches = self.backbone.embeddings.patch_embeddings
        pixels = _pixels(pixel_values, _WHO, patches.num_channels, patches.patch_size)
        out = self.backbone(pixels, output_hidden_states=bool(output_hidden_states))
        (H, W), (ph, pw) = pixels.shape[2:], self.patch_size
        grid = (H // patches.patch_size[0], W // patches.patch_size[1])
        depth = self.head(self.neck(out.feature_maps, grid), (H // ph * ph, W // pw * pw))
        return DepthEstimatorOutput(depth, out.hidden_states) if output_hidden_states else depth

    def from_hf(self, tensors: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        return tensors

    def to_hf(self) -> Dict[str, np.ndarray]:
        return {k: t.numpy() for k, t in self.state_dict().items()}
