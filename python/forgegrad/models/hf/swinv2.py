"""Swin Transformer V2 (transformers' ``Swinv2Model``, ``Swinv2ForImageClassification``; config model_type "swinv2"),
with the parameter names of its checkpoints. Swin's patch embedding, window partition, shift and shift mask and 2x2
patch gathering (swin.py) with V2's changes:

- Cosine attention: softmax(cos(q, k) * exp(min(logit_scale, log 100)) + bias + mask) v, ``logit_scale`` learned per
  head; the key projection has no bias.
- The relative position bias comes from a 2 -> 512 -> heads MLP (``continuous_position_bias_mlp``, ReLU between)
  over each (dy, dx) of the window, the offsets divided by (pretrained_window - 1) (the stage's
  ``pretrained_window_sizes`` entry; 0: the window's own), times 8, then sign(t) * log2(1 + |t|) / 3; the bias is
  16 * sigmoid(MLP output).
- Residual post-norm: x + LN(attention(x)), then x + LN(mlp(x)).
- Patch merging reduces 4C -> 2C first, then a LayerNorm over 2C.
- Each stage's window and shift are fixed when the model is built from the config's image_size (transformers'
  ``_compute_window_shift``): the window is min(window_size, the stage's map height at image_size) and the odd blocks
  shift by window_size // 2 unless that height is at most the window. Any image size then runs, each stage's map
  padded to a multiple of the window. transformers adds the shift mask twice (-200 between regions): so does this.
- ``use_absolute_embeddings`` is refused: transformers' Swinv2Embeddings builds a table one row longer than the
  patches and cannot run such a model either.

Stochastic depth (``drop_path_rate``, rising linearly over the blocks) applies to both residual branches in training.
Pixel values come from ``image_processing.load_image_processor(DIR)`` (the hub's Swin V2 checkpoints name
``ViTImageProcessor`` / ``AutoImageProcessor`` settings).
"""
from __future__ import annotations

import math
from typing import Dict, List, Tuple

import numpy as np

from ... import nn
from ...nn import functional as F
from ...tensor import Tensor
from ._layers import activation, attend, config_probability, merge_heads, split_heads
from .dinov2 import _DropPath
from .swin import (SwinEmbeddings, SwinImageClassifierOutput, SwinModelOutput, _positive_list, gather_2x2,
                   relative_position_index, shifted_window_attention)
from .vit import _Dense, _labels, _pair, _pixels

__all__ = ["Swinv2Model", "Swinv2ForImageClassification", "stage_windows"]

_WHO = "Swinv2Model"
_MAX_LOGIT_SCALE = math.log(1.0 / 0.01)


def log_spaced_offsets(window: int, pretrained: int) -> np.ndarray:
    """((2 * ws - 1) ** 2, 2) float32: each (dy, dx) offset of a window, row-major, normalised to [-8, 8] by the
    pretrained window (or this one) and log-spaced: sign(t) * log2(1 + |t|) / log2(8) (transformers'
    create_coords_table_and_index, in float32 as torch computes it)."""
    r = np.arange(-(window - 1), window, dtype=np.float32)
    table = np.stack(np.meshgrid(r, r, indexing="ij"), axis=-1)  # (2ws-1, 2ws-1, 2): (dy, dx)
    if pretrained > 0:
        table = table / np.float32(pretrained - 1)
    elif window > 1:
        table = table / np.float32(window - 1)
    table = table * np.float32(8)
    table = np.sign(table) * np.log2(np.abs(table) + np.float32(1)) / np.float32(math.log2(8))
    return table.reshape(-1, 2).astype(np.float32)


def stage_windows(cfg: dict) -> List[Tuple[int, int]]:
    """Each stage's (window, shift) as transformers fixes them from the config's image_size: the stage's map at that
    size is (grid_h // 2 ** i, grid_w // 2 ** i); its height alone decides (transformers keeps the first entry)."""
    image = _pair(cfg.get("image_size", 224), "image_size", f"{_WHO}: config")
    patch = _pair(cfg.get("patch_size", 4), "patch_size", f"{_WHO}: config")
    ws = int(cfg["window_size"])
    out = []
    for i in range(len(cfg["depths"])):
        height = (image[0] // patch[0]) // 2 ** i
        window = min(height, ws)
        out.append((window, 0 if height <= window else ws // 2))
    return out


class Swinv2SelfAttention(nn.Module):
    """Query (bias per qkv_bias), key (no bias), value, the per-head ``logit_scale`` and the continuous position bias
    MLP (transformers' ``attention.self``)."""

    def __init__(self, cfg: dict, dim: int, heads: int, window: int, pretrained: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"{_WHO}: a stage's width {dim} must be a multiple of its num_heads {heads}")
        self.heads, self.window = heads, window
        bias = bool(cfg.get("qkv_bias", True))
        self.logit_scale = nn.Parameter(Tensor._wrap(np.full((heads, 1, 1), math.log(10), np.float32)))
        self.continuous_position_bias_mlp = nn.Sequential(nn.Linear(2, 512), nn.ReLU(),
                                                          nn.Linear(512, heads, bias=False))
        self.query = nn.Linear(dim, dim, bias=bias)
        self.key = nn.Linear(dim, dim, bias=False)
        self.value = nn.Linear(dim, dim, bias=bias)
        self._offsets = log_spaced_offsets(window, pretrained)
        self._index = relative_position_index(window).reshape(-1)
        self.dropout_p = config_probability(cfg, "attention_probs_dropout_prob", _WHO)

    def bias(self) -> Tensor:
        """(1, heads, ws * ws, ws * ws): 16 * sigmoid of the MLP's output for every pair of a window."""
        n = self.window * self.window
        table = self.continuous_position_bias_mlp(Tensor._wrap(self._offsets))  # ((2ws-1)^2, heads)
        rows = table[Tensor._wrap(self._index)]  # (n * n, heads)
        return F.sigmoid(rows.reshape(n, n, self.heads).permute(2, 0, 1)).reshape(1, self.heads, n, n) * 16

    def forward(self, x: Tensor, shifted) -> Tensor:
        """x (B * windows, ws * ws, C); ``shifted``: shift_mask's (windows, n, n) or None."""
        q, k, v = (split_heads(layer(x), self.heads) for layer in (self.query, self.key, self.value))
        scale = self.logit_scale.clamp(max=_MAX_LOGIT_SCALE).exp()  # (heads, 1, 1)
        q, k = F.normalize(q, dim=-1) * scale, F.normalize(k, dim=-1)
        mask, p = self.bias(), self.dropout_p if self.training else 0.0
        if shifted is None:
            return merge_heads(attend(q, k, v, mask, scale=1.0, dropout_p=p))
        # the mask added twice, as transformers' Swinv2SelfAttention does; every window's heads as heads of one image
        # (the mask then does not depend on the batch)
        nw, n, d = shifted.shape[0], q.shape[2], q.shape[3]
        mask = (mask + Tensor._wrap(2 * shifted[:, None])).reshape(1, nw * self.heads, n, n)
        q, k, v = (t.reshape(-1, nw * self.heads, n, d) for t in (q, k, v))
        return merge_heads(attend(q, k, v, mask, scale=1.0, dropout_p=p).reshape(-1, self.heads, n, d))


class Swinv2Attention(nn.Module):
    def __init__(self, cfg: dict, dim: int, heads: int, window: int, pretrained: int):
        super().__init__()
        self.self = Swinv2SelfAttention(cfg, dim, heads, window, pretrained)
        self.output = _Dense(dim, dim)
        self.dropout = nn.Dropout(config_probability(cfg, "attention_probs_dropout_prob", _WHO))

    def forward(self, x: Tensor, shifted) -> Tensor:
        return self.dropout(self.output(self.self(x, shifted)))


class Swinv2Layer(nn.Module):
    def __init__(self, cfg: dict, dim: int, heads: int, window: int, shift: int, pretrained: int, drop_path: float):
        super().__init__()
        eps = float(cfg.get("layer_norm_eps", 1e-5))
        ratio = cfg.get("mlp_ratio", 4.0)
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or int(dim * ratio) <= 0:
            raise ValueError(f"{_WHO}: config mlp_ratio must be a positive number, got {ratio!r}")
        self.window, self.shift = window, shift
        self.attention = Swinv2Attention(cfg, dim, heads, window, pretrained)
        self.layernorm_before = nn.LayerNorm(dim, eps=eps)
        self.drop_path = _DropPath(drop_path)
        self.intermediate = _Dense(dim, int(dim * ratio))
        self.output = _Dense(int(dim * ratio), dim)
        self.layernorm_after = nn.LayerNorm(dim, eps=eps)
        self.act = activation(cfg.get("hidden_act", "gelu"), _WHO)
        self.dropout = nn.Dropout(config_probability(cfg, "hidden_dropout_prob", _WHO))

    def forward(self, x: Tensor, grid: Tuple[int, int]) -> Tensor:
        B, _, C = x.shape
        out = shifted_window_attention(x.reshape(B, grid[0], grid[1], C), self.window, self.shift, self.attention)
        x = x + self.drop_path(self.layernorm_before(out))
        mlp = self.dropout(self.output(self.act(self.intermediate(x))))
        return x + self.drop_path(self.layernorm_after(mlp))


class Swinv2PatchMerging(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(2 * dim)

    def forward(self, x: Tensor, grid: Tuple[int, int]) -> Tensor:
        return self.norm(self.reduction(gather_2x2(x, grid)))


class Swinv2Stage(nn.Module):
    def __init__(self, cfg: dict, dim: int, depth: int, heads: int, window: Tuple[int, int], pretrained: int,
                 drop_paths: List[float], merge: bool):
        super().__init__()
        ws, shift = window
        self.blocks = nn.ModuleList([Swinv2Layer(cfg, dim, heads, ws, 0 if i % 2 == 0 else shift, pretrained,
                                                 drop_paths[i]) for i in range(depth)])
        self.downsample = Swinv2PatchMerging(dim) if merge else None

    def forward(self, x: Tensor, grid: Tuple[int, int]) -> Tuple[Tensor, Tensor, Tuple[int, int]]:
        """(the stage's output, its map before the patch merging, the output's grid)."""
        for block in self.blocks:
            x = block(x, grid)
        if self.downsample is None:
            return x, x, grid
        return self.downsample(x, grid), x, ((grid[0] + 1) // 2, (grid[1] + 1) // 2)


def check_config(cfg: dict, who: str) -> None:
    """The keys every Swin V2 model reads, checked (and defaulted as transformers' Swinv2Config) in place."""
    for key, default in (("embed_dim", 96), ("window_size", 7)):
        v = cfg.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"{who}: config {key} must be a positive int, got {v!r}")
        cfg[key] = v
    cfg.setdefault("depths", [2, 2, 6, 2])
    cfg.setdefault("num_heads", [3, 6, 12, 24])
    if cfg.get("use_absolute_embeddings", False):
        raise ValueError(f"{who}: config use_absolute_embeddings is not supported (transformers' Swinv2 builds a "
                         "position table one row longer than the patches and cannot run such a model either)")


class Swinv2Encoder(nn.Module):
    _no_split_modules = ["Swinv2Stage"]

    def __init__(self, cfg: dict):
        super().__init__()
        depths = _positive_list(cfg, "depths")
        heads = _positive_list(cfg, "num_heads", len(depths))
        pretrained = cfg.get("pretrained_window_sizes")
        pretrained = [0] * len(depths) if pretrained is None else pretrained
        if not isinstance(pretrained, (list, tuple)) or len(pretrained) < len(depths) or not all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in pretrained[:len(depths)]):
            raise ValueError(f"{_WHO}: config pretrained_window_sizes must be a list of {len(depths)} ints >= 0 (one "
                             f"per stage), got {pretrained!r}")
        rate = config_probability(cfg, "drop_path_rate", _WHO, default=0.1)
        total = sum(depths)
        dpr = [rate * i / max(total - 1, 1) for i in range(total)]
        E, windows = cfg["embed_dim"], stage_windows(cfg)
        self.layers = nn.ModuleList([
            Swinv2Stage(cfg, E * 2 ** i, depths[i], heads[i], windows[i], pretrained[i],
                        dpr[sum(depths[:i]):sum(depths[:i + 1])], i < len(depths) - 1) for i in range(len(depths))])

    def forward(self, x: Tensor, grid: Tuple[int, int], before_downsampling: bool = False):
        """(the last stage's output, the states): the embeddings' output then each stage's (output, or its map before
        the patch merging with ``before_downsampling``: the backbone's), as (tensor, grid) pairs."""
        states = [(x, grid)]
        for stage in self.layers:
            stage_grid = grid
            x, before, grid = stage(x, grid)
            states.append((before, stage_grid) if before_downsampling else (x, grid))
        return x, states


def as_map(t: Tensor, grid: Tuple[int, int]) -> Tensor:
    """(B, h * w, C) -> (B, C, h, w)."""
    return t.reshape(t.shape[0], grid[0], grid[1], t.shape[-1]).permute(0, 3, 1, 2)


class Swinv2Model(nn.Module):
    """Swin V2's encoder. ``forward(pixel_values, interpolate_pos_encoding=False, output_hidden_states=False)`` with
    pixel_values (B, C, H, W) of any size of at least one patch returns ``SwinModelOutput`` (swin.py). Loaded from a
    classifier's checkpoint, it reads the weights under ``swinv2.``."""

    architecture = "Swinv2Model"
    model_type = "swinv2"
    prefix = "swinv2."
    tokens = 0  # no CLS token: only the patches

    def __init__(self, config: dict, add_pooling_layer: bool = True):
        super().__init__()
        self.config = dict(config)
        cfg = self.config
        check_config(cfg, _WHO)
        self.embeddings = SwinEmbeddings(cfg)
        self.encoder = Swinv2Encoder(cfg)
        self.num_features = cfg["embed_dim"] * 2 ** (len(cfg["depths"]) - 1)
        self.layernorm = nn.LayerNorm(self.num_features, eps=float(cfg.get("layer_norm_eps", 1e-5)))
        self.pooled = bool(add_pooling_layer)

    def forward(self, pixel_values, interpolate_pos_encoding: bool = False,
                output_hidden_states: bool = False) -> SwinModelOutput:
        """``interpolate_pos_encoding`` is taken for transformers' signature and changes nothing (no position
        table)."""
        patches = self.embeddings.patch_embeddings
        x, grid = self.embeddings(_pixels(pixel_values, _WHO, patches.num_channels, (1, 1)))
        x, states = self.encoder(x, grid)
        x = self.layernorm(x)
        pooled = x.mean(dim=1) if self.pooled else None
        if not output_hidden_states:
            return SwinModelOutput(x, pooled)
        return SwinModelOutput(x, pooled, tuple(s for s, _ in states), tuple(as_map(s, g) for s, g in states))

    def from_hf(self, tensors: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """The checkpoint's tensors under this model's names: a classifier's ``swinv2.`` weights without its head;
        the coordinate table / index buffers some checkpoints hold (recomputed from the config) and the masked
        image modeling mask token dropped."""
        if not any(k.startswith("embeddings.") for k in tensors):
            n = len(self.prefix)
            tensors = {k[n:]: v for k, v in tensors.items() if k.startswith(self.prefix)}
        return drop_buffers(tensors)

    def to_hf(self) -> Dict[str, np.ndarray]:
        return {k: t.numpy() for k, t in self.state_dict().items()}


def drop_buffers(tensors: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    return {k: v for k, v in tensors.items() if not k.endswith(("relative_position_index", "relative_coords_table"))
            and not k.endswith("embeddings.mask_token")}


class Swinv2ForImageClassification(nn.Module):
    """Swin V2 + a linear classifier on the pooled output (the mean of the last stage's positions);
    ``forward(pixel_values, interpolate_pos_encoding=False, output_hidden_states=False)`` returns the logits
    (B, num_labels) (with
    ``output_hidden_states``: ``SwinImageClassifierOutput``)."""

    architecture = "Swinv2ForImageClassification"
    model_type = "swinv2"
    base = "swinv2"

    def __init__(self, config: dict):
        super().__init__()
        self.config = dict(config)
        self.swinv2 = Swinv2Model(self.config)
        labels = _labels(self.config)
        self.classifier = nn.Linear(self.swinv2.num_features, labels) if labels > 0 else nn.Identity()

    @property
    def encoder(self) -> Swinv2Model:
        return self.swinv2

    def forward(self, pixel_values, interpolate_pos_encoding: bool = False, output_hidden_states: bool = False):
        out = self.swinv2(pixel_values, output_hidden_states=output_hidden_states)
        logits = self.classifier(out.pooler_output)
        if output_hidden_states:
            return SwinImageClassifierOutput(logits, out.hidden_states, out.reshaped_hidden_states)
        return logits

    def from_hf(self, tensors: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        return drop_buffers(tensors)

    def to_hf(self) -> Dict[str, np.ndarray]:
        return {k: t.numpy() for k, t in self.state_dict().items()}
