"""Swin Transformer (transformers' ``SwinModel``, ``SwinForImageClassification``; config model_type "swin"), with
the parameter names of its checkpoints.

- Patch embedding: a Conv2d whose stride is its kernel, the image first zero-padded on the right and bottom to a
  multiple of the patch; then a LayerNorm (eps 1e-5, as transformers builds it whatever the config says) and, with
  ``use_absolute_embeddings``, a learned position table (``interpolate_pos_encoding=True`` resizes it bicubically as
  ViT's, vit.py).
- Stages of blocks on a (h, w) feature map, each block x + attention(LN(x)), then x + mlp(LN(x)). The attention runs
  inside non-overlapping windows of window_size x window_size patches (the map zero-padded on the right and bottom to
  a multiple of the window, after the LayerNorm; the padded positions are keys like any other, as in transformers),
  every odd block on the map rolled by -window_size // 2 first (shifted windows) with a -100 bias between positions
  that come from different regions of the unrolled map (transformers' shift mask), and every head gets the learned
  relative position bias: a ((2 * ws - 1) ** 2, heads) table indexed by each pair's (dy, dx). A map whose smaller
  side equals the window runs one window without shift (transformers' ``set_shift_and_window_size``); a smaller one
  is refused (transformers fails on it too).
- Between stages, patch merging: the map padded to even sides, each 2x2 neighbourhood's four vectors concatenated
  (order (0,0), (1,0), (0,1), (1,1)), LayerNorm (eps 1e-5), Linear 4C -> 2C without bias.
- A final LayerNorm; ``pooler_output`` is the mean over the positions (transformers' AdaptiveAvgPool1d), the
  classifier's input.

Stochastic depth (``drop_path_rate``, rising linearly over the blocks) applies to the attention branch only, as in
transformers' SwinLayer. transformers' SwinLayer overwrites its shift and window the first time it sees a map as
small as its window and keeps them for later, larger images; this module decides per call (what a fresh
transformers model gives). Pixel values come from ``image_processing.load_image_processor(DIR)`` (Swin's checkpoints
name ``ViTImageProcessor`` / ``ViTFeatureExtractor``).
"""
from __future__ import annotations

from typing import Dict, List, NamedTuple, Optional, Tuple

import numpy as np

from ... import nn
from ...nn import functional as F
from ...tensor import Tensor
from ._layers import activation, attend, config_probability, merge_heads, split_heads
from .dinov2 import _DropPath
from .vit import _Dense, _labels, _pair, _pixels, bicubic_matrix

__all__ = ["SwinModel", "SwinForImageClassification", "SwinModelOutput", "SwinImageClassifierOutput"]

_WHO = "SwinModel"


class SwinModelOutput(NamedTuple):
    last_hidden_state: Tensor  # (B, h * w, num_features) of the last stage
    pooler_output: Optional[Tensor]  # (B, num_features), the mean over positions; None without a pooler
    hidden_states: Optional[Tuple[Tensor, ...]] = None  # the embeddings' output, then each stage's (B, L, C)
    reshaped_hidden_states: Optional[Tuple[Tensor, ...]] = None  # the same as (B, C, h, w)


class SwinImageClassifierOutput(NamedTuple):
    """The classifier's answer with ``output_hidden_states=True`` (transformers' ``return_dict=False`` tuple)."""
    logits: Tensor
    hidden_states: Tuple[Tensor, ...]
    reshaped_hidden_states: Tuple[Tensor, ...]


def _positive_list(cfg: dict, key: str, n: Optional[int] = None) -> List[int]:
    value = cfg.get(key)
    ok = isinstance(value, (list, tuple)) and len(value) > 0 and all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    if not ok or (n is not None and len(value) != n):
        size = f"{n} " if n is not None else ""
        raise ValueError(f"{_WHO}: config {key} must be a list of {size}positive ints, got {value!r}")
    return list(value)


def relative_position_index(window: int) -> np.ndarray:
    """(ws * ws, ws * ws) index into the bias table of each (query, key) pair of a window: (dy + ws - 1) * (2 * ws -
    1) + (dx + ws - 1), positions in row-major order."""
    ys, xs = np.meshgrid(np.arange(window), np.arange(window), indexing="ij")
    ys, xs = ys.reshape(-1), xs.reshape(-1)
    return (ys[:, None] - ys[None, :] + window - 1) * (2 * window - 1) + (xs[:, None] - xs[None, :] + window - 1)


def shift_mask(height: int, width: int, window: int, shift: int) -> np.ndarray:
    """(windows, ws * ws, ws * ws) float32: 0 between positions of the same region of the rolled (height, width) map,
    -100 between others (transformers' get_attn_mask)."""
    def region(n):
        i = np.arange(n)
        return (i >= n - window).astype(np.int64) + (i >= n - shift)

    labels = (region(height)[:, None] * 3 + region(width)[None, :]).astype(np.float32)
    labels = labels.reshape(height // window, window, width // window, window).transpose(0, 2, 1, 3)
    labels = labels.reshape(-1, window * window)
    diff = labels[:, None, :] - labels[:, :, None]
    return np.where(diff != 0, np.float32(-100.0), np.float32(0.0)).astype(np.float32)


def shifted_window_attention(y: Tensor, window: int, shift: int, attention) -> Tensor:
    """Window attention over the map y (B, h, w, C): y zero-padded on the right and bottom to a multiple of
    ``window``, rolled by -shift, cut into (B * windows, ws * ws, C) windows in the map's row-major order, which
    ``attention(windows, mask)`` maps (``mask``: shift_mask's (windows, n, n) float32 array, or None unshifted), put
    back, rolled back and cropped: (B, h * w, C). Swin's and Swin V2's layers (swinv2.py)."""
    B, h, w, C = y.shape
    ws = window
    hp, wp = h + (-h % ws), w + (-w % ws)
    if (hp, wp) != (h, w):
        y = F.pad(y, (0, 0, 0, wp - w, 0, hp - h))
    if shift:
        y = y.roll((-shift, -shift), (1, 2))
    windows = y.reshape(B, hp // ws, ws, wp // ws, ws, C).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws, C)
    out = attention(windows, shift_mask(hp, wp, ws, shift) if shift else None)
    out = out.reshape(B, hp // ws, wp // ws, ws, ws, C).permute(0, 1, 3, 2, 4, 5).reshape(B, hp, wp, C)
    if shift:
        out = out.roll((shift, shift), (1, 2))
    if (hp, wp) != (h, w):
        out = out[:, :h, :w]
    return out.reshape(B, h * w, C)


def gather_2x2(x: Tensor, grid: Tuple[int, int]) -> Tensor:
    """Patch merging's input: x (B, h * w, C) as a map padded to even sides, each 2x2 neighbourhood's four vectors
    concatenated in transformers' order (0,0), (1,0), (0,1), (1,1): (B, ceil(h/2) * ceil(w/2), 4C)."""
    h, w = grid
    B, _, C = x.shape
    x = x.reshape(B, h, w, C)
    if h % 2 or w % 2:
        x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
    h2, w2 = (h + 1) // 2, (w + 1) // 2
    # (B, h2, row, w2, col, C) -> (B, h2, w2, col, row, C)
    return x.reshape(B, h2, 2, w2, 2, C).permute(0, 1, 3, 4, 2, 5).reshape(B, h2 * w2, 4 * C)


class SwinPatchEmbeddings(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        self.patch_size = _pair(cfg.get("patch_size", 4), "patch_size", f"{_WHO}: config")
        self.num_channels = int(cfg.get("num_channels", 3))
        self.projection = nn.Conv2d(self.num_channels, cfg["embed_dim"], self.patch_size, stride=self.patch_size)

    def forward(self, pixels: Tensor) -> Tuple[Tensor, Tuple[int, int]]:
        ph, pw = self.patch_size
        H, W = pixels.shape[2], pixels.shape[3]
        if H % ph or W % pw:
            pixels = F.pad(pixels, (0, -W % pw, 0, -H % ph))
        x = self.projection(pixels)
        B, E, h, w = x.shape
        return x.reshape(B, E, h * w).transpose(1, 2), (h, w)


class SwinEmbeddings(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        E = cfg["embed_dim"]
        self.image_size = _pair(cfg.get("image_size", 224), "image_size", f"{_WHO}: config")
        self.patch_embeddings = SwinPatchEmbeddings(cfg)
        ph, pw = self.patch_embeddings.patch_size
        self.grid = (self.image_size[0] // ph, self.image_size[1] // pw)
        self.position_embeddings = (nn.Parameter(Tensor._wrap(np.zeros((1, self.grid[0] * self.grid[1], E),
                                                                       np.float32)))
                                    if cfg.get("use_absolute_embeddings", False) else None)
        self.norm = nn.LayerNorm(E)
        self.dropout = nn.Dropout(config_probability(cfg, "hidden_dropout_prob", _WHO))

    def positions(self, height: int, width: int, grid: Tuple[int, int], interpolate: bool) -> Tensor:
        table = self.position_embeddings
        n = table.shape[1]
        if interpolate and not (grid[0] * grid[1] == n and height == width):
            side = int(n ** 0.5)
            if side * side != n:
                raise ValueError(f"{_WHO}: interpolate_pos_encoding needs a square grid of positions, the table "
                                 f"has {n}")
            E = table.shape[-1]
            rows = Tensor._wrap(bicubic_matrix(side, grid[0]).astype(np.float32))
            cols = Tensor._wrap(bicubic_matrix(side, grid[1]).astype(np.float32).T.copy())
            g = (rows @ table[0].reshape(side, side * E)).reshape(grid[0], side, E).permute(0, 2, 1)
            return (g @ cols).permute(0, 2, 1).reshape(1, grid[0] * grid[1], E)
        if grid != self.grid:
            raise ValueError(f"{_WHO}: the image is {height}x{width} but this model's absolute position table "
                             f"takes {self.image_size[0]}x{self.image_size[1]}; pass interpolate_pos_encoding=True "
                             "to resize it")
        return table

    def forward(self, pixels: Tensor, interpolate: bool = False) -> Tuple[Tensor, Tuple[int, int]]:
        x, grid = self.patch_embeddings(pixels)
        x = self.norm(x)
        if self.position_embeddings is not None:
            x = x + self.positions(pixels.shape[2], pixels.shape[3], grid, interpolate)
        return self.dropout(x), grid


class SwinSelfAttention(nn.Module):
    """Query, key, value and the relative position bias table (transformers' ``attention.self``)."""

    def __init__(self, cfg: dict, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"{_WHO}: a stage's width {dim} must be a multiple of its num_heads {heads}")
        self.heads, self.window = heads, int(cfg["window_size"])
        bias = bool(cfg.get("qkv_bias", True))
        self.query, self.key, self.value = (nn.Linear(dim, dim, bias=bias) for _ in range(3))
        self.relative_position_bias_table = nn.Parameter(Tensor._wrap(
            np.zeros(((2 * self.window - 1) ** 2, heads), np.float32)))
        self._index = relative_position_index(self.window).reshape(-1)
        self.dropout_p = config_probability(cfg, "attention_probs_dropout_prob", _WHO)

    def bias(self) -> Tensor:
        """(1, heads, ws * ws, ws * ws): the table's rows for every pair of a window."""
        n = self.window * self.window
        rows = self.relative_position_bias_table[Tensor._wrap(self._index)]  # (n * n, heads)
        return rows.reshape(n, n, self.heads).permute(2, 0, 1).reshape(1, self.heads, n, n)

    def forward(self, x: Tensor, shifted: Optional[np.ndarray]) -> Tensor:
        """x (B * windows, ws * ws, C), windows in the map's row-major order; ``shifted``: shift_mask's (windows,
        n, n) or None."""
        q, k, v = (split_heads(layer(x), self.heads) for layer in (self.query, self.key, self.value))
        mask, p = self.bias(), self.dropout_p if self.training else 0.0
        if shifted is None:
            return merge_heads(attend(q, k, v, mask, dropout_p=p))
        # every window's heads as heads of one image, so that the mask (windows * heads, n, n) does not depend on
        # the batch (an exported graph's batch is dynamic)
        nw, n, d = shifted.shape[0], q.shape[2], q.shape[3]
        mask = (mask + Tensor._wrap(shifted[:, None])).reshape(1, nw * self.heads, n, n)
        q, k, v = (t.reshape(-1, nw * self.heads, n, d) for t in (q, k, v))
        out = attend(q, k, v, mask, dropout_p=p).reshape(-1, self.heads, n, d)
        return merge_heads(out)


class SwinAttention(nn.Module):
    def __init__(self, cfg: dict, dim: int, heads: int):
        super().__init__()
        self.self = SwinSelfAttention(cfg, dim, heads)
        self.output = _Dense(dim, dim)

    def forward(self, x: Tensor, shifted: Optional[np.ndarray]) -> Tensor:
        return self.output(self.self(x, shifted))


class SwinLayer(nn.Module):
    def __init__(self, cfg: dict, dim: int, heads: int, shift: int, drop_path: float):
        super().__init__()
        eps = float(cfg.get("layer_norm_eps", 1e-5))
        ratio = cfg.get("mlp_ratio", 4.0)
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or int(dim * ratio) <= 0:
            raise ValueError(f"{_WHO}: config mlp_ratio must be a positive number, got {ratio!r}")
        self.window, self.shift = int(cfg["window_size"]), shift
        self.layernorm_before = nn.LayerNorm(dim, eps=eps)
        self.attention = SwinAttention(cfg, dim, heads)
        self.drop_path = _DropPath(drop_path)
        self.layernorm_after = nn.LayerNorm(dim, eps=eps)
        self.intermediate = _Dense(dim, int(dim * ratio))
        self.output = _Dense(int(dim * ratio), dim)
        self.act = activation(cfg.get("hidden_act", "gelu"), _WHO)
        self.dropout = nn.Dropout(config_probability(cfg, "hidden_dropout_prob", _WHO))

    def forward(self, x: Tensor, grid: Tuple[int, int], always_partition: bool = False) -> Tensor:
        """``always_partition`` (transformers' SwinBackbone): the window and shift as configured whatever the map's
        size, a map smaller than the window padded up to it."""
        h, w = grid
        ws, shift = self.window, self.shift
        if not always_partition and min(h, w) < ws:
            raise ValueError(f"{_WHO}: a stage's feature map is {h}x{w} patches, smaller than the window "
                             f"({ws}x{ws}); give larger images")
        if not always_partition and min(h, w) == ws:
            shift = 0  # one window: nothing to shift (transformers' set_shift_and_window_size)
        B, _, C = x.shape
        out = shifted_window_attention(self.layernorm_before(x).reshape(B, h, w, C), ws, shift, self.attention)
        x = x + self.drop_path(self.dropout(out))
        return x + self.dropout(self.output(self.act(self.intermediate(self.layernorm_after(x)))))


class SwinPatchMerging(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: Tensor, grid: Tuple[int, int]) -> Tensor:
        return self.reduction(self.norm(gather_2x2(x, grid)))


class SwinStage(nn.Module):
    def __init__(self, cfg: dict, dim: int, depth: int, heads: int, drop_paths: List[float], merge: bool):
        super().__init__()
        shift = int(cfg["window_size"]) // 2
        self.blocks = nn.ModuleList([SwinLayer(cfg, dim, heads, 0 if i % 2 == 0 else shift, drop_paths[i])
                                     for i in range(depth)])
        self.downsample = SwinPatchMerging(dim) if merge else None

    def forward(self, x: Tensor, grid: Tuple[int, int]) -> Tuple[Tensor, Tuple[int, int]]:
        for block in self.blocks:
            x = block(x, grid)
        if self.downsample is None:
            return x, grid
        return self.downsample(x, grid), ((grid[0] + 1) // 2, (grid[1] + 1) // 2)


class SwinEncoder(nn.Module):
    _no_split_modules = ["SwinStage"]

    def __init__(self, cfg: dict):
        super().__init__()
        depths = _positive_list(cfg, "depths")
        heads = _positive_list(cfg, "num_heads", len(depths))
        rate = config_probability(cfg, "drop_path_rate", _WHO, default=0.1)
        total = sum(depths)
        dpr = [rate * i / max(total - 1, 1) for i in range(total)]
        E = cfg["embed_dim"]
        self.layers = nn.ModuleList([
            SwinStage(cfg, E * 2 ** i, depths[i], heads[i], dpr[sum(depths[:i]):sum(depths[:i + 1])],
                      i < len(depths) - 1) for i in range(len(depths))])

    def forward(self, x: Tensor, grid: Tuple[int, int], output_hidden_states: bool = False):
        states = [(x, grid)] if output_hidden_states else None
        for stage in self.layers:
            x, grid = stage(x, grid)
            if states is not None:
                states.append((x, grid))
        return x, states


class SwinModel(nn.Module):
    """Swin's encoder. ``forward(pixel_values, interpolate_pos_encoding=False, output_hidden_states=False)`` with
    pixel_values (B, C, H, W) of any size whose stages' maps are at least a window returns ``SwinModelOutput``.
    Loaded from a classifier's checkpoint, it reads the weights under ``swin.``."""

    architecture = "SwinModel"
    model_type = "swin"
    prefix = "swin."
    tokens = 0  # no CLS token: only the patches

    def __init__(self, config: dict, add_pooling_layer: bool = True):
        super().__init__()
        self.config = dict(config)
        cfg = self.config
        for key in ("embed_dim", "window_size"):
            v = cfg.get(key, {"embed_dim": 96, "window_size": 7}[key])
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"{_WHO}: config {key} must be a positive int, got {v!r}")
            cfg[key] = v
        self.embeddings = SwinEmbeddings(cfg)
        self.encoder = SwinEncoder(cfg)
        self.num_features = cfg["embed_dim"] * 2 ** (len(cfg["depths"]) - 1)
        self.layernorm = nn.LayerNorm(self.num_features, eps=float(cfg.get("layer_norm_eps", 1e-5)))
        self.pooled = bool(add_pooling_layer)

    def feature_maps(self, height: int, width: int) -> List[Tuple[int, int]]:
        """Each stage's (h, w) map for an image of height x width pixels; ValueError (as forward raises it) when one
        is smaller than the window."""
        ph, pw = self.embeddings.patch_embeddings.patch_size
        grid, ws, out = (-(-height // ph), -(-width // pw)), int(self.config["window_size"]), []
        for _ in self.encoder.layers:
            if min(grid) < ws:
                raise ValueError(f"{_WHO}: a stage's feature map is {grid[0]}x{grid[1]} patches, smaller than the "
                                 f"window ({ws}x{ws}); give larger images")
            out.append(grid)
            grid = ((grid[0] + 1) // 2, (grid[1] + 1) // 2)
        return out

    def forward(self, pixel_values, interpolate_pos_encoding: bool = False,
                output_hidden_states: bool = False) -> SwinModelOutput:
        patches = self.embeddings.patch_embeddings
        pixels = _pixels(pixel_values, _WHO, patches.num_channels, (1, 1))
        self.feature_maps(pixels.shape[2], pixels.shape[3])  # before any work: a map under the window is refused
        x, grid = self.embeddings(pixels, bool(interpolate_pos_encoding))
        x, states = self.encoder(x, grid, bool(output_hidden_states))
        x = self.layernorm(x)
        pooled = x.mean(dim=1) if self.pooled else None
        if states is None:
            return SwinModelOutput(x, pooled)
        flat = tuple(s for s, _ in states)
        maps = tuple(s.reshape(s.shape[0], g[0], g[1], s.shape[-1]).permute(0, 3, 1, 2) for s, g in states)
        return SwinModelOutput(x, pooled, flat, maps)

    def from_hf(self, tensors: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """The checkpoint's tensors under this model's names: a classifier's ``swin.`` weights without its head;
        the relative position index buffers older checkpoints hold (recomputed from the window) and the masked
        image modeling mask token dropped."""
        if not any(k.startswith("embeddings.") for k in tensors):
            n = len(self.prefix)
            tensors = {k[n:]: v for k, v in tensors.items() if k.startswith(self.prefix)}
        return {k: v for k, v in tensors.items()
                if not k.endswith("relative_position_index") and k != "embeddings.mask_token"}

    def to_hf(self) -> Dict[str, np.ndarray]:
        return {k: t.numpy() for k, t in self.state_dict().items()}


class SwinForImageClassification(nn.Module):
    """Swin + a linear classifier on the pooled output (the mean of the last stage's positions);
    ``forward(pixel_values, interpolate_pos_encoding=False, output_hidden_states=False)`` returns the logits
    (B, num_labels) (with ``output_hidden_states``: ``SwinImageClassifierOutput``)."""

    architecture = "SwinForImageClassification"
    model_type = "swin"
    base = "swin"

    def __init__(self, config: dict):
        super().__init__()
        self.config = dict(config)
        self.swin = SwinModel(self.config)
        labels = _labels(self.config)
        self.classifier = nn.Linear(self.swin.num_features, labels) if labels > 0 else nn.Identity()

    @property
    def encoder(self) -> SwinModel:
        return self.swin

    def forward(self, pixel_values, interpolate_pos_encoding: bool = False, output_hidden_states: bool = False):
        out = self.swin(pixel_values, interpolate_pos_encoding, output_hidden_states)
        logits = self.classifier(out.pooler_output)
        if output_hidden_states:
            return SwinImageClassifierOutput(logits, out.hidden_states, out.reshaped_hidden_states)
        return logits

    def from_hf(self, tensors: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        return {k: v for k, v in tensors.items()
                if not k.endswith("relative_position_index") and not k.endswith("embeddings.mask_token")}

    def to_hf(self) -> Dict[str, np.ndarray]:
        return {k: t.numpy() for k, t in self.state_dict().items()}
