"""The DPT neck (transformers' ``DPTNeck``, ``DepthAnythingNeck``): what turns a vision transformer's token sequences
from several layers into one dense feature map for a depth or segmentation head, with the parameter names of their
checkpoints (``neck.reassemble_stage``, ``neck.convs``, ``neck.fusion_stage``).

- reassemble: each chosen layer's tokens (B, 1 + h * w, C) lose the readout (CLS) token by ``readout_type``:
  "ignore" drops it, "add" adds it to every patch token, "project" concatenates it to every patch token and maps
  back to C by Linear + activation (``readout_projects.<i>.0``); the patch tokens become a map (B, C, h, w), are
  projected to ``neck_hidden_sizes[i]`` channels by a 1x1 conv and resized by ``reassemble_factors[i]``: a
  factor-by-factor ConvTranspose2d above 1, a 3x3 conv of stride 1 / factor below 1 (a (h + 1) // 2 map at 0.5);
- ``convs``: each map to ``fusion_hidden_size`` channels (3x3, no bias);
- fusion, from the coarsest map up: each layer adds residual conv unit 1 of the stage's map (resized bilinearly,
  align_corners=False, to the running map where their sizes differ), runs residual conv unit 2 (relu -> conv ->
  [batch norm] -> relu -> conv -> [batch norm], + input), upsamples bilinearly with align_corners=True and projects
  (1x1). DPT upsamples by 2 (so with an odd patch grid its maps outgrow the image's: transformers' sizes, kept);
  Depth Anything upsamples to the next stage's map size (``sized_fusion``), the last by 2.

The patch grid (h, w) is the image's, so DPT's neck also takes grids that are not square (transformers' DPT on a ViT
reshapes by the square root of the token count, which raises for them).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

from ... import nn
from ...factories import cat
from ...nn import functional as F
from ...tensor import Tensor
from ._layers import activation

__all__ = ["DPTNeck", "neck_settings"]

READOUTS = ("ignore", "add", "project")


def _positive_ints(value, key: str, who: str) -> List[int]:
    if not isinstance(value, (list, tuple)) or not value or any(
            isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in value):
        raise ValueError(f"{who}: config {key} must be a non-empty list of positive ints, got {value!r}")
    return list(value)


def neck_settings(cfg: dict, who: str, neck_hidden_sizes=(96, 192, 384, 768), fusion_hidden_size: int = 256):
    """(neck_hidden_sizes, reassemble_factors, fusion_hidden_size) of a config, checked as the neck needs them."""
    sizes = _positive_ints(cfg.get("neck_hidden_sizes", neck_hidden_sizes), "neck_hidden_sizes", who)
    factors = cfg.get("reassemble_factors", (4, 2, 1, 0.5))
    if not isinstance(factors, (list, tuple)) or len(factors) != len(sizes) or any(
            isinstance(f, bool) or not isinstance(f, (int, float)) or f <= 0 or (f < 1 and 1 / f != int(1 / f))
            or (f > 1 and f != int(f))
            for f in factors):
        raise ValueError(f"{who}: config reassemble_factors must give one positive number per neck_hidden_sizes entry "
                         f"({len(sizes)}), each an int or 1 / an int, got {factors!r}")
    fusion = cfg.get("fusion_hidden_size", fusion_hidden_size)
    if isinstance(fusion, bool) or not isinstance(fusion, int) or fusion < 2:
        raise ValueError(f"{who}: config fusion_hidden_size must be an int of at least 2, got {fusion!r}")
    return sizes, list(factors), fusion


class DPTReassembleLayer(nn.Module):
    def __init__(self, hidden: int, channels: int, factor):
        super().__init__()
        self.projection = nn.Conv2d(hidden, channels, 1)
        if factor > 1:
            self.resize = nn.ConvTranspose2d(channels, channels, int(factor), stride=int(factor))
        elif factor == 1:
            self.resize = nn.Identity()
        else:
            self.resize = nn.Conv2d(channels, channels, 3, stride=int(1 / factor), padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.resize(self.projection(x))


class DPTReassembleStage(nn.Module):
    def __init__(self, hidden: int, sizes: Sequence[int], factors: Sequence, readout: str, act: str, who: str):
        super().__init__()
        if readout not in READOUTS:
            raise ValueError(f"{who}: config readout_type must be one of {list(READOUTS)}, got {readout!r}")
        self.readout = readout
        self.layers = nn.ModuleList([DPTReassembleLayer(hidden, c, f) for c, f in zip(sizes, factors)])
        if readout == "project":
            # Sequential for the checkpoint's names (readout_projects.<i>.0); the activation holds no weights
            self.readout_projects = nn.ModuleList([nn.Sequential(nn.Linear(2 * hidden, hidden)) for _ in sizes])
            self.act = activation(act, who)

    def forward(self, states: Sequence[Tensor], grid: Tuple[int, int]) -> List[Tensor]:
        """states: (B, 1 + h * w, C) token sequences, readout token first -> maps (B, sizes[i], h', w')."""
        h, w = grid
        out = []
        for i, x in enumerate(states):
            cls, x = x[:, 0:1], x[:, 1:]
            B, C = x.shape[0], x.shape[-1]
            if self.readout == "project":
                x = self.act(self.readout_projects[i](cat([x, cls.expand(B, h * w, C)], dim=-1)))
            elif self.readout == "add":
                x = x + cls
            out.append(self.layers[i](x.reshape(B, h, w, C).permute(0, 3, 1, 2)))
        return out


class DPTPreActResidualLayer(nn.Module):
    """relu -> conv3x3 -> [BN] -> relu -> conv3x3 -> [BN], + the input (the residual conv unit)."""

    def __init__(self, channels: int, batch_norm: bool = False, bias: Optional[bool] = None):
        super().__init__()
        bias = (not batch_norm) if bias is None else bool(bias)
        self.convolution1 = nn.Conv2d(channels, channels, 3, padding=1, bias=bias)
        self.convolution2 = nn.Conv2d(channels, channels, 3, padding=1, bias=bias)
        self.use_batch_norm = bool(batch_norm)
        if self.use_batch_norm:
            self.batch_norm1, self.batch_norm2 = nn.BatchNorm2d(channels), nn.BatchNorm2d(channels)

    def forward(self, x: Tensor) -> Tensor:
        y = self.convolution1(F.relu(x))
        if self.use_batch_norm:
            y = self.batch_norm1(y)
        y = self.convolution2(F.relu(y))
        if self.use_batch_norm:
            y = self.batch_norm2(y)
        return y + x


class DPTFeatureFusionLayer(nn.Module):
    def __init__(self, channels: int, batch_norm: bool = False, bias: Optional[bool] = None):
        super().__init__()
        self.projection = nn.Conv2d(channels, channels, 1)
        self.residual_layer1 = DPTPreActResidualLayer(channels, batch_norm, bias)
        self.residual_layer2 = DPTPreActResidualLayer(channels, batch_norm, bias)

    def forward(self, x: Tensor, residual: Optional[Tensor] = None, size=None) -> Tensor:
        if residual is not None:
            if tuple(x.shape) != tuple(residual.shape):
                residual = F.interpolate(residual, size=tuple(x.shape[2:]), mode="bilinear", align_corners=False)
            x = x + self.residual_layer1(residual)
        x = self.residual_layer2(x)
        if size is None:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        else:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
        return self.projection(x)


class DPTFeatureFusionStage(nn.Module):
    def __init__(self, stages: int, channels: int, batch_norm: bool, bias: Optional[bool], sized: bool):
        super().__init__()
        self.sized = sized
        self.layers = nn.ModuleList([DPTFeatureFusionLayer(channels, batch_norm, bias) for _ in range(stages)])

    def forward(self, maps: Sequence[Tensor]) -> List[Tensor]:
        """maps finest first -> the fused maps, coarsest first (the last is the heads' input)."""
        maps = list(maps)[::-1]
        fused, x = [], None
        for i, (m, layer) in enumerate(zip(maps, self.layers)):
            size = tuple(maps[i + 1].shape[2:]) if self.sized and i + 1 < len(maps) else None
            x = layer(m, size=size) if x is None else layer(x, m, size=size)
            fused.append(x)
        return fused


class DPTNeck(nn.Module):
    """``forward(states, grid)``: the chosen layers' token sequences (B, 1 + h * w, hidden), readout token first,
    and the patch grid (h, w) -> the fused maps (B, fusion_hidden_size, ., .), coarsest first.

    Args:
        cfg: the model's config (neck_hidden_sizes, reassemble_factors, fusion_hidden_size,
            use_batch_norm_in_fusion_residual, use_bias_in_fusion_residual).
        hidden: the tokens' width (the backbone's hidden size).
        readout: readout_type ("ignore", "add", "project").
        act: the readout projection's activation (the config's hidden_act).
        sized_fusion: Depth Anything's fusion (each layer upsamples to the next map's size) instead of DPT's (by 2).
    """

    def __init__(self, cfg: dict, hidden: int, readout: str, act: str, who: str, sized_fusion: bool = False,
                 defaults: Tuple = ((96, 192, 384, 768), 256)):
        super().__init__()
        sizes, factors, fusion = neck_settings(cfg, who, *defaults)
        self.reassemble_stage = DPTReassembleStage(hidden, sizes, factors, readout, act, who)
        self.convs = nn.ModuleList([nn.Conv2d(c, fusion, 3, padding=1, bias=False) for c in sizes])
        batch_norm = bool(cfg.get("use_batch_norm_in_fusion_residual", False))
        self.fusion_stage = DPTFeatureFusionStage(len(sizes), fusion, batch_norm,
                                                  cfg.get("use_bias_in_fusion_residual"), sized_fusion)
        self.stages = len(sizes)

    def forward(self, states: Sequence[Tensor], grid: Tuple[int, int]) -> List[Tensor]:
        if len(states) != self.stages:
            raise ValueError(f"DPTNeck: expected {self.stages} hidden states (one per neck_hidden_sizes entry), got "
                             f"{len(states)}")
        maps = self.reassemble_stage(states, grid)
        return self.fusion_stage([conv(m) for conv, m in zip(self.convs, maps)])
