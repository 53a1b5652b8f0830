"""Qwen2-VL's vision tower (transformers' ``Qwen2VisionTransformerPretrainedModel``, weights ``visual.*``) and
Qwen2.5-VL's (``Qwen2_5_VisionTransformerPretrainedModel``: RMSNorms, SwiGLU MLPs with biases, window attention;
see Qwen2_5VisionTransformer).

Input: the processor's flattened patches ``pixel_values`` (num_patches, C * temporal_patch_size * patch_size**2),
each row one patch in (channel, frame, row, column) order, the patches of each image in its merge-block order
(image_processing's Qwen2-VL processor), and ``image_grid_thw`` (num_images, 3): each image's (frames, rows,
columns) of patches. Steps, as transformers':

- ``patch_embed``: a Conv3d whose kernel is its stride (temporal_patch_size, patch_size, patch_size), i.e. one
  matrix product per patch (the weight kept in the Conv3d's shape, flattened for the product);
- ``blocks``: pre-LayerNorm (eps 1e-6) attention and a fc1 / QuickGELU / fc2 MLP; the attention's query and key
  rotated by a 2-D rotary embedding (the first half of each head's frequencies by the patch's row, the second by its
  column), each frame attending within itself only (transformers' cu_seqlens);
- ``merger``: LayerNorm, the 2x2 neighbouring patches (consecutive rows in merge-block order) concatenated, Linear,
  GELU, Linear into the text decoder's hidden size: one row per merged patch.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

from ... import nn
from ...factories import cat
from ...nn import functional as F
from ...tensor import Tensor
from ._layers import RotaryEmbedding, activation, attend
from .clip import quick_gelu

__all__ = ["Qwen2VisionTransformer", "Qwen2_5VisionTransformer", "check_grid", "vision_positions", "frame_lengths",
           "window_index"]

def check_grid(image_grid_thw, n_patches: int, merge: int, who: str, kind: str = "image") -> np.ndarray:
    """image_grid_thw (``kind`` "video": video_grid_thw) as an int64 (num_images, 3) array, checked: positive, rows
    and columns multiples of the merge size, and as many patches in all as pixel_values has rows."""
    name, pixels = (f"{kind}_grid_thw", "pixel_values" if kind == "image" else "pixel_values_videos")
    grid = np.asarray(image_grid_thw.numpy() if isinstance(image_grid_thw, Tensor) else image_grid_thw)
    if grid.ndim != 2 or grid.shape[1] != 3 or grid.dtype.kind not in "iu" or grid.size == 0 or (grid <= 0).any():
        raise ValueError(f"{who}: {name} must be positive integers (num_{kind}s, 3): (frames, rows, columns) "
                         f"of patches per {kind}, got {grid.dtype} {grid.shape}")
    if (grid[:, 1:] % merge).any():
        raise ValueError(f"{who}: {name}'s rows and columns must be multiples of spatial_merge_size "
                         f"({merge}), got {grid.tolist()}")
    total = int(grid.prod(axis=1).sum())
    if total != n_patches:
        raise ValueError(f"{who}: {name} gives {total} patches but {pixels} has {n_patches} rows")
    return grid.astype(np.int64)


def vision_positions(grid: np.ndarray, merge: int) -> np.ndarray:
    """(num_patches, 2): each patch's (row, column) in the processor's merge-block order, every frame alike."""
    out = []
    for t, h, w in grid.tolist():
        rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        shape = (h // merge, merge, w // merge, merge)
        block = [a.reshape(shape).transpose(0, 2, 1, 3).reshape(-1) for a in (rows, cols)]
        out.append(np.tile(np.stack(block, axis=-1), (t, 1)))
    return np.concatenate(out)


def frame_lengths(grid: np.ndarray) -> np.ndarray:
    """The patches of each frame of each image, in order (the attention's independent segments)."""
    return np.repeat(grid[:, 1] * grid[:, 2], grid[:, 0])


class PatchEmbed(nn.Module):
    """Conv3d with kernel = stride = (temporal_patch_size, patch_size, patch_size), no bias, on flattened patches."""

    def __init__(self, channels: int, temporal: int, patch: int, width: int):
        super().__init__()
        self.proj = nn.Conv3d(channels, width, (temporal, patch, patch), stride=(temporal, patch, patch), bias=False)
        self.width = width

    def forward(self, x: Tensor) -> Tensor:  # (N, C*T*P*P) -> (N, width)
        return F.linear(x, self.proj.weight.reshape(self.width, -1))


class VisionAttention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads, self.head_dim = heads, width // heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, segments) -> Tensor:
        """``segments``: the lengths of the consecutive runs of patches that attend within themselves (frames or
        windows), each attended on its own (transformers' per-cu_seqlens chunks: no N x N mask); or a Tensor
        additive bias (1, 1, N, N) that masks the pairs of different runs (the exported graph's, whose runs follow
        its grid input: onnx_qwen2_vl.py)."""
        n = x.shape[0]
        qkv = self.qkv(x).reshape(n, 3, self.heads, self.head_dim).permute(1, 2, 0, 3)  # (3, H, N, D)
        q, k, v = (qkv[i].unsqueeze(0) for i in range(3))  # (1, H, N, D)
        q, k = RotaryEmbedding.apply(q, cos, sin), RotaryEmbedding.apply(k, cos, sin)
        if isinstance(segments, Tensor):
            out = attend(q, k, v, segments)
        elif len(segments) == 1:
            out = attend(q, k, v, None)  # (1, H, N, D)
        else:
            ends = np.cumsum(segments).tolist()
            out = cat([attend(q[:, :, a:b], k[:, :, a:b], v[:, :, a:b], None)
                       for a, b in zip([0] + ends[:-1], ends)], dim=2)
        return self.proj(out[0].permute(1, 0, 2).reshape(n, -1))


class VisionMlp(nn.Module):
    def __init__(self, width: int, inner: int, act: str, who: str):
        super().__init__()
        self.fc1 = nn.Linear(width, inner)
        self.fc2 = nn.Linear(inner, width)
        self.act = quick_gelu if act == "quick_gelu" else activation(act, who)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class VisionSwiGLU(nn.Module):
    """Qwen2.5-VL's block MLP: down(act(gate(x)) * up(x)), with biases."""

    def __init__(self, width: int, inner: int, act: str, who: str):
        super().__init__()
        self.gate_proj = nn.Linear(width, inner)
        self.up_proj = nn.Linear(width, inner)
        self.down_proj = nn.Linear(inner, width)
        self.act = activation(act, who)

    def forward(self, x):
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


class VisionBlock(nn.Module):
    """Qwen2-VL's (LayerNorms, fc1 / fc2 MLP) or, with ``swiglu``, Qwen2.5-VL's (RMSNorms, SwiGLU MLP)."""

    def __init__(self, width: int, heads: int, inner: int, act: str, who: str, swiglu: bool = False):
        super().__init__()
        norm = nn.RMSNorm if swiglu else nn.LayerNorm
        self.norm1 = norm(width, eps=1e-6)
        self.norm2 = norm(width, eps=1e-6)
        self.attn = VisionAttention(width, heads)
        self.mlp = (VisionSwiGLU if swiglu else VisionMlp)(width, inner, act, who)

    def forward(self, x, cos, sin, segments):
        x = x + self.attn(self.norm1(x), cos, sin, segments)
        return x + self.mlp(self.norm2(x))


class PatchMerger(nn.Module):
    """LayerNorm, merge**2 consecutive patches concatenated, Linear, GELU, Linear (``mlp.0``, ``mlp.2``)."""

    def __init__(self, out_dim: int, width: int, merge: int, rms: bool = False):
        super().__init__()
        self.hidden = width * merge * merge
        self.ln_q = (nn.RMSNorm if rms else nn.LayerNorm)(width, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(self.hidden, self.hidden), nn.GELU(), nn.Linear(self.hidden, out_dim))

    def forward(self, x):
        return self.mlp(self.ln_q(x).reshape(-1, self.hidden))


def vision_config(vision: dict, who: str, v2_5: bool = False) -> dict:
    """The vision config with transformers' defaults (``in_chans``: older checkpoints' name of in_channels), and the
    tower's width, output width and MLP width under ``width`` / ``out`` / ``inner`` (Qwen2-VL: embed_dim,
    hidden_size, embed_dim * mlp_ratio; Qwen2.5-VL: hidden_size, out_hidden_size, intermediate_size)."""
    common = dict(num_heads=16, in_channels=vision.get("in_chans", 3), patch_size=14, spatial_merge_size=2,
                  temporal_patch_size=2)
    if v2_5:
        c = dict(common, depth=32, hidden_size=3584, hidden_act="silu", intermediate_size=3420, window_size=112,
                 out_hidden_size=3584, fullatt_block_indexes=[7, 15, 23, 31])
    else:
        c = dict(common, depth=32, embed_dim=1280, hidden_size=3584, hidden_act="quick_gelu", mlp_ratio=4)
    c.update({k: v for k, v in vision.items() if v is not None})
    names = ("hidden_size", "out_hidden_size", "intermediate_size") if v2_5 else ("embed_dim", "hidden_size", None)
    for key in ("depth", "num_heads", "in_channels", "patch_size", "spatial_merge_size", "temporal_patch_size",
                *(n for n in names if n), *(("window_size",) if v2_5 else ())):
        v = c[key]
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"{who}: vision_config {key} must be a positive integer, got {v!r}")
    c["width"], c["out"] = c[names[0]], c[names[1]]
    c["inner"] = c[names[2]] if v2_5 else int(c["width"] * c["mlp_ratio"])
    if c["width"] % c["num_heads"] or (c["width"] // c["num_heads"]) % 4:
        raise ValueError(f"{who}: the vision width ({c['width']}) over num_heads ({c['num_heads']}) must be a "
                         "multiple of 4 (the 2-D rotary embedding's row and column halves)")
    return c


class Qwen2VisionTransformer(nn.Module):
    """``forward(pixel_values (N, C*T*P*P), grid (num_images, 3) int array)`` -> (N / merge**2, text hidden)."""

    v2_5 = False

    def __init__(self, config: dict, who: str):
        super().__init__()
        c = self.config = vision_config(config, who, self.v2_5)
        width, heads = c["width"], c["num_heads"]
        self.merge = c["spatial_merge_size"]
        self.patch_dim = c["in_channels"] * c["temporal_patch_size"] * c["patch_size"] ** 2
        self.patch_embed = PatchEmbed(c["in_channels"], c["temporal_patch_size"], c["patch_size"], width)
        self.blocks = nn.ModuleList([VisionBlock(width, heads, c["inner"], c["hidden_act"], who, self.v2_5)
                                     for _ in range(c["depth"])])
        self.merger = PatchMerger(c["out"], width, self.merge, self.v2_5)
        theta = float((c.get("rope_parameters") or {}).get("rope_theta", 10000.0))
        quarter = width // heads // 2  # the frequencies of one axis: theta^(-2i / (head_dim / 2))
        self.inv_freq = (1.0 / theta ** (np.arange(0, quarter, 2).astype(np.float32) / quarter)).astype(np.float32)

    def rotary(self, grid: np.ndarray, order=None) -> Tuple[Tensor, Tensor]:
        """cos and sin (1, 1, N, head_dim): [row freqs, column freqs] twice (rotate_half's layout); ``order``: the
        patches' order (default the processor's)."""
        pos = vision_positions(grid, self.merge).astype(np.float32)
        if order is not None:
            pos = pos[order]
        freqs = (pos[:, :, None] * self.inv_freq).reshape(len(pos), -1)  # (N, head_dim / 2): rows', then columns'
        emb = np.concatenate([freqs, freqs], axis=-1)[None, None]
        return Tensor._wrap(np.cos(emb).astype(np.float32)), Tensor._wrap(np.sin(emb).astype(np.float32))

    def forward(self, pixel_values, grid: np.ndarray) -> Tensor:
        x = pixel_values if isinstance(pixel_values, Tensor) else Tensor._wrap(np.asarray(pixel_values, np.float32))
        x = self.patch_embed(x)
        cos, sin = self.rotary(grid)
        frames = frame_lengths(grid)
        for block in self.blocks:
            x = block(x, cos, sin, frames)
        return self.merger(x)


def window_index(grid: np.ndarray, merge: int, window: int, patch: int) -> Tuple[np.ndarray, np.ndarray]:
    """transformers' get_vision_window_index: (the merge units (merge**2 consecutive patches) in window order,
    each window's patch count). Each frame's merged grid is cut into windows of window // merge // patch units a
    side (the last ones smaller), taken row-major, their units row-major."""
    side = window // merge // patch
    if side <= 0:
        raise ValueError(f"vision_config window_size ({window}) must be at least spatial_merge_size * patch_size "
                         f"({merge * patch})")
    order, lengths, base = [], [], 0
    for t, h, w in grid.tolist():
        gh, gw = h // merge, w // merge
        units = np.arange(t * gh * gw).reshape(t, gh, gw)
        for f in range(t):
            for r in range(0, gh, side):
                for c in range(0, gw, side):
                    block = units[f, r:r + side, c:c + side].reshape(-1)
                    order.append(block + base)
                    lengths.append(len(block) * merge * merge)
        base += t * gh * gw
    return np.concatenate(order), np.array(lengths)


class Qwen2_5VisionTransformer(Qwen2VisionTransformer):
    """Qwen2.5-VL's tower: RMSNorms and SwiGLU MLPs; the patches reordered window by window (merge units kept
    whole), the blocks of ``fullatt_block_indexes`` attending within each frame, the others within each window; the
    merged rows put back in the processor's order."""

    v2_5 = True

    def forward(self, pixel_values, grid: np.ndarray) -> Tensor:
        c = self.config
        x = pixel_values if isinstance(pixel_values, Tensor) else Tensor._wrap(np.asarray(pixel_values, np.float32))
        x = self.patch_embed(x)
        units, windows = window_index(grid, self.merge, c["window_size"], c["patch_size"])
        unit = self.merge * self.merge
        order = (units[:, None] * unit + np.arange(unit)).reshape(-1)  # each patch's place, window by window
        x = x[order]
        cos, sin = self.rotary(grid, order)
        frames = frame_lengths(grid)
        every = set(c["fullatt_block_indexes"])
        for i, block in enumerate(self.blocks):
            x = block(x, cos, sin, frames if i in every else windows)
        return self.merger(x)[np.argsort(units)]


def check_pixels(pixel_values, patch_dim: int, who: str, name: str = "pixel_values"):
    """pixel_values (or pixel_values_videos: ``name``) as a float32 (N, patch_dim) array or Tensor, checked."""
    shape = tuple(pixel_values.shape) if hasattr(pixel_values, "shape") else np.asarray(pixel_values).shape
    if len(shape) != 2 or shape[1] != patch_dim:
        raise ValueError(f"{who}: {name} must be the processor's flattened patches (num_patches, {patch_dim}), "
                         f"got shape {shape}")
    if isinstance(pixel_values, Tensor):
        return pixel_values
    return Tensor._wrap(np.ascontiguousarray(np.asarray(pixel_values, np.float32)))

