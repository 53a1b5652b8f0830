"""BEiT (transformers' ``BeitModel``, ``BeitForImageClassification``; config model_type "beit"), with the parameter
names of its checkpoints.

ViT's patch embedding and CLS token (vit.py), with BEiT's differences:

- positions: a learned table only with ``use_absolute_position_embeddings`` (resized bicubically to every image's
  grid, as transformers always does for BEiT); otherwise relative position biases, per layer
  (``use_relative_position_bias``: ``attention.attention.relative_position_bias``) or one for all layers
  (``use_shared_relative_position_bias``: ``encoder.relative_position_bias``). The table holds one row per (dy, dx)
  of the trained patch grid plus three for CLS -> patch, patch -> CLS and CLS -> CLS; at another grid its (dy, dx)
  part is resized bilinearly (align_corners=False) to the new grid's offsets first, as transformers does (MiDaS 3.1's
  change), each axis a fixed matrix so gradients reach the table;
- the key projection has no bias;
- each layer is x + lambda_1 * attention(LN(x)), then + lambda_2 * mlp(LN(x)) (layer scale; absent when
  ``layer_scale_init_value`` <= 0), with stochastic depth rising linearly over the layers in training;
- ``use_mean_pooling`` (the default): no final LayerNorm on the sequence; ``pooler_output`` = LayerNorm(mean of the
  patch tokens), else the final LayerNorm'd CLS row. The classifier reads ``pooler_output``.

The image's sides need not be multiples of the patch (the Conv2d drops the remainder). ``interpolate_pos_encoding``
is accepted for transformers' signature; its extra bilinear resize of the bias to the sequence length is the identity.
Pixel values come from ``image_processing.load_image_processor(DIR)`` (``BeitImageProcessor``).
"""
from __future__ import annotations

from typing import Dict, Tuple

import numpy as np

from ... import nn
from ...factories import cat
from ...tensor import Tensor
from ._layers import activation, attend, config_probability, merge_heads, split_heads
from .dinov2 import _DropPath, mask_patches
from .vit import ImageClassifierOutput, ViTEmbeddings, ViTOutput, _Dense, _labels, _pair, _pixels

__all__ = ["BeitModel", "BeitForImageClassification", "bilinear_matrix"]

_WHO = "BeitModel"


def bilinear_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out_size, in_size) float64 matrix M with M @ x = torch's ``interpolate(x, out_size, mode="bilinear",
    align_corners=False)`` along one axis: source (i + 0.5) * in / out - 0.5, clamped at 0, between two neighbours."""
    scale = float(np.float32(in_size) / np.float32(out_size))
    src = np.maximum((np.arange(out_size) + 0.5) * scale - 0.5, 0.0)
    lo = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    hi = np.minimum(lo + 1, in_size - 1)
    t = src - lo
    m = np.zeros((out_size, in_size))
    np.add.at(m, (np.arange(out_size), lo), 1.0 - t)
    np.add.at(m, (np.arange(out_size), hi), t)
    return m


def relative_index(grid: Tuple[int, int]) -> np.ndarray:
    """(N + 1, N + 1) rows of the bias table for a (h, w) patch grid with a CLS token first (transformers'
    generate_relative_position_index)."""
    h, w = grid
    ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    ys, xs = ys.reshape(-1), xs.reshape(-1)
    n = (2 * h - 1) * (2 * w - 1) + 3
    index = np.empty((h * w + 1,) * 2, np.int64)
    index[1:, 1:] = (ys[:, None] - ys[None, :] + h - 1) * (2 * w - 1) + (xs[:, None] - xs[None, :] + w - 1)
    index[0, :] = n - 3  # CLS -> patch
    index[:, 0] = n - 2  # patch -> CLS
    index[0, 0] = n - 1
    return index


class BeitRelativePositionBias(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        image = _pair(cfg.get("image_size", 224), "image_size", f"{_WHO}: config")
        patch = _pair(cfg.get("patch_size", 16), "patch_size", f"{_WHO}: config")
        self.grid = (image[0] // patch[0], image[1] // patch[1])
        self.heads = cfg["num_attention_heads"]
        rows = (2 * self.grid[0] - 1) * (2 * self.grid[1] - 1) + 3
        self.relative_position_bias_table = nn.Parameter(Tensor._wrap(np.zeros((rows, self.heads), np.float32)))

    # set while export_vit traces a graph with dynamic image sizes: the resize and the index are Tensor ops whose sizes
    # follow the grid (an ONNX Resize, and the index computed from a grid of ones), not constants of one grid
    in_graph = False

    def forward(self, grid: Tuple[int, int]) -> Tensor:
        """(1, heads, N + 1, N + 1) for a (h, w) patch grid."""
        if self.in_graph:
            return self._graph_forward(grid)
        table = self.relative_position_bias_table
        # transformers reads the (dy, dx) rows as (2 * w - 1, 2 * h - 1) and resizes them to (2 * h' - 1, 2 * w' - 1)
        old = (2 * self.grid[1] - 1, 2 * self.grid[0] - 1)
        new = (2 * grid[0] - 1, 2 * grid[1] - 1)
        if old != new:
            H = self.heads
            sub = table[:old[0] * old[1]].reshape(old[0], old[1] * H)
            sub = Tensor._wrap(bilinear_matrix(old[0], new[0]).astype(np.float32)) @ sub  # (new0, old1 * H)
            sub = sub.reshape(new[0], old[1], H).permute(0, 2, 1)  # (new0, H, old1)
            sub = sub @ Tensor._wrap(bilinear_matrix(old[1], new[1]).astype(np.float32).T.copy())  # (new0, H, new1)
            table = cat([sub.permute(0, 2, 1).reshape(new[0] * new[1], H), table[old[0] * old[1]:]], dim=0)
        index = relative_index(grid)
        n = index.shape[0]
        rows = table[Tensor._wrap(index.reshape(-1))]  # (n * n, heads)
        return rows.reshape(n, n, self.heads).permute(2, 0, 1).reshape(1, self.heads, n, n)

    def _graph_forward(self, grid: Tuple[int, int]) -> Tensor:
        """forward as ops a graph with a dynamic grid holds: the (dy, dx) rows resized by F.interpolate (bilinear,
        the identity at the trained grid) and relative_index computed from the cumulative sums of a (h, w) grid of
        ones (exact in float32 below 2**24 rows)."""
        from ...ops.resample import interpolate
        table, H = self.relative_position_bias_table, self.heads
        old = (2 * self.grid[1] - 1, 2 * self.grid[0] - 1)
        sub = table[:old[0] * old[1]].reshape(1, old[0], old[1], H).permute(0, 3, 1, 2)
        sub = interpolate(sub, size=(2 * grid[0] - 1, 2 * grid[1] - 1), mode="bilinear", align_corners=False)
        table = cat([sub.permute(0, 2, 3, 1).reshape(-1, H), table[old[0] * old[1]:]], dim=0)
        ones = Tensor._wrap(np.ones((1, 1), np.float32)).expand(grid[0], grid[1])
        ys, xs = (ones.cumsum(0) - 1).reshape(-1), (ones.cumsum(1) - 1).reshape(-1)  # each patch's row and column
        h, w = ones.sum(0)[:1], ones.sum(1)[:1]  # (1,): the grid's sides
        width = 2 * w - 1
        index = (ys.unsqueeze(1) - ys.unsqueeze(0) + h - 1) * width + (xs.unsqueeze(1) - xs.unsqueeze(0) + w - 1)
        n = (2 * h - 1) * width + 3  # the table's rows; its last three: CLS -> patch, patch -> CLS, CLS -> CLS
        flat = ones.reshape(1, -1)
        top = cat([(n - 1).reshape(1, 1), flat * (n - 3)], dim=1)
        index = cat([top, cat([flat.reshape(-1, 1) * (n - 2), index], dim=1)], dim=0)
        k = index.shape[0]
        rows = table[index.reshape(-1).long()]  # (k * k, heads)
        return rows.reshape(k, k, H).permute(2, 0, 1).reshape(1, H, k, k)


class BeitSelfAttention(nn.Module):
    def __init__(self, cfg: dict, own_bias: bool):
        super().__init__()
        E = cfg["hidden_size"]
        self.heads = cfg["num_attention_heads"]
        if E % self.heads:
            raise ValueError(f"{_WHO}: hidden_size {E} must be a multiple of num_attention_heads {self.heads}")
        self.query, self.key, self.value = nn.Linear(E, E), nn.Linear(E, E, bias=False), nn.Linear(E, E)
        self.relative_position_bias = BeitRelativePositionBias(cfg) if own_bias else None
        self.dropout_p = config_probability(cfg, "attention_probs_dropout_prob", _WHO)

    def forward(self, x: Tensor, bias, grid: Tuple[int, int]) -> Tensor:
        if self.relative_position_bias is not None:
            own = self.relative_position_bias(grid)
            bias = own if bias is None else bias + own
        q, k, v = (split_heads(layer(x), self.heads) for layer in (self.query, self.key, self.value))
        return merge_heads(attend(q, k, v, bias, dropout_p=self.dropout_p if self.training else 0.0))


class BeitAttention(nn.Module):
    def __init__(self, cfg: dict, own_bias: bool):
        super().__init__()
        self.attention = BeitSelfAttention(cfg, own_bias)
        self.output = _Dense(cfg["hidden_size"], cfg["hidden_size"])

    def forward(self, x: Tensor, bias, grid) -> Tensor:
        return self.output(self.attention(x, bias, grid))


class BeitLayer(nn.Module):
    def __init__(self, cfg: dict, drop_path: float):
        super().__init__()
        E, eps = cfg["hidden_size"], float(cfg.get("layer_norm_eps", 1e-12))
        self.attention = BeitAttention(cfg, bool(cfg.get("use_relative_position_bias", False)))
        self.intermediate = _Dense(E, cfg["intermediate_size"])
        self.output = _Dense(cfg["intermediate_size"], E)
        self.layernorm_before = nn.LayerNorm(E, eps=eps)
        self.layernorm_after = nn.LayerNorm(E, eps=eps)
        self.act = activation(cfg.get("hidden_act", "gelu"), _WHO)
        self.dropout = nn.Dropout(config_probability(cfg, "hidden_dropout_prob", _WHO))
        self.drop_path = _DropPath(drop_path)
        scale = cfg.get("layer_scale_init_value", 0.1)
        if isinstance(scale, bool) or not isinstance(scale, (int, float)):
            raise ValueError(f"{_WHO}: config layer_scale_init_value must be a number, got {scale!r}")
        if scale > 0:
            self.lambda_1 = nn.Parameter(Tensor._wrap(np.full(E, scale, np.float32)))
            self.lambda_2 = nn.Parameter(Tensor._wrap(np.full(E, scale, np.float32)))
        else:
            self.lambda_1 = self.lambda_2 = None

    def _scaled(self, x: Tensor, lam) -> Tensor:
        return x * lam if lam is not None else x

    def forward(self, x: Tensor, bias, grid) -> Tensor:
        y = self.dropout(self.attention(self.layernorm_before(x), bias, grid))
        x = x + self.drop_path(self._scaled(y, self.lambda_1))
        y = self.dropout(self.output(self.act(self.intermediate(self.layernorm_after(x)))))
        return x + self.drop_path(self._scaled(y, self.lambda_2))


class BeitEncoder(nn.Module):
    _no_split_modules = ["BeitLayer"]

    def __init__(self, cfg: dict):
        super().__init__()
        self.relative_position_bias = (BeitRelativePositionBias(cfg)
                                       if cfg.get("use_shared_relative_position_bias", False) else None)
        n = cfg["num_hidden_layers"]
        rate = config_probability(cfg, "drop_path_rate", _WHO, default=0.1)
        self.layer = nn.ModuleList([BeitLayer(cfg, rate * i / max(n - 1, 1)) for i in range(n)])

    def forward(self, x: Tensor, grid: Tuple[int, int], output_hidden_states: bool = False):
        bias = self.relative_position_bias(grid) if self.relative_position_bias is not None else None
        states = [x] if output_hidden_states else None
        for layer in self.layer:
            x = layer(x, bias, grid)
            if states is not None:
                states.append(x)
        return x, tuple(states) if states is not None else None


class BeitEmbeddings(ViTEmbeddings):
    """CLS token, patches and (with ``use_absolute_position_embeddings``) the position table resized to every
    image's grid; the mask token with ``use_mask_token``."""

    owner = _WHO

    def __init__(self, cfg: dict):
        super().__init__(cfg, tokens=1)
        if not cfg.get("use_absolute_position_embeddings", False):
            self.position_embeddings = None
        E = cfg["hidden_size"]
        self.mask_token = (nn.Parameter(Tensor._wrap(np.zeros((1, 1, E), np.float32)))
                           if cfg.get("use_mask_token", False) else None)

    def forward(self, pixels: Tensor, bool_masked_pos=None) -> Tensor:
        B, _, H, W = pixels.shape
        x = self.patch_embeddings(pixels)
        if bool_masked_pos is not None:
            x = mask_patches(x, bool_masked_pos, self.mask_token, _WHO)
        x = cat([self.cls_token.expand(B, 1, x.shape[-1]), x], dim=1)
        if self.position_embeddings is not None:
            x = x + self.positions(H, W, True)
        return self.dropout(x)


class BeitPooler(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        self.layernorm = (nn.LayerNorm(cfg["hidden_size"], eps=float(cfg.get("layer_norm_eps", 1e-12)))
                          if cfg.get("use_mean_pooling", True) else None)

    def forward(self, x: Tensor) -> Tensor:
        return self.layernorm(x[:, 1:].mean(dim=1)) if self.layernorm is not None else x[:, 0]


class BeitModel(nn.Module):
    """BEiT's encoder. ``forward(pixel_values, bool_masked_pos=None, interpolate_pos_encoding=False,
    output_hidden_states=False)`` with pixel_values (B, C, H, W) of any size of at least one patch returns
    ``ViTOutput(last_hidden_state (B, 1 + patches, hidden), pooler_output or None, hidden_states or None)``.
    Loaded from a classifier's checkpoint, it reads the weights under ``beit.``."""

    architecture = "BeitModel"
    model_type = "beit"
    prefix = "beit."
    tokens = 1

    def __init__(self, config: dict, add_pooling_layer: bool = True):
        super().__init__()
        self.config = dict(config)
        cfg = self.config
        self.embeddings = BeitEmbeddings(cfg)
        self.encoder = BeitEncoder(cfg)
        mean = bool(cfg.get("use_mean_pooling", True))
        self.layernorm = (nn.Identity() if mean
                          else nn.LayerNorm(cfg["hidden_size"], eps=float(cfg.get("layer_norm_eps", 1e-12))))
        self.pooler = BeitPooler(cfg) if add_pooling_layer else None

    def forward(self, pixel_values, bool_masked_pos=None, interpolate_pos_encoding: bool = False,
                output_hidden_states: bool = False) -> ViTOutput:
        patches = self.embeddings.patch_embeddings
        pixels = _pixels(pixel_values, _WHO, patches.num_channels, patches.patch_size)
        x = self.embeddings(pixels, bool_masked_pos)
        ph, pw = patches.patch_size
        x, states = self.encoder(x, (pixels.shape[2] // ph, pixels.shape[3] // pw), bool(output_hidden_states))
        x = self.layernorm(x)
        return ViTOutput(x, self.pooler(x) if self.pooler is not None else None, states)

    def from_hf(self, tensors: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """The checkpoint's tensors under this model's names: a classifier's ``beit.`` weights without its head; no
        pooler LayerNorm where the checkpoint has none (saved with add_pooling_layer=False); the relative position
        index buffers older checkpoints hold (recomputed from the grid) dropped."""
        if not any(k.startswith("embeddings.") for k in tensors):
            n = len(self.prefix)
            tensors = {k[n:]: v for k, v in tensors.items() if k.startswith(self.prefix)}
        if (self.pooler is not None and self.pooler.layernorm is not None
                and not any(k.startswith("pooler.") for k in tensors)):
            self.pooler = None
        return {k: v for k, v in tensors.items() if not k.endswith("relative_position_index")}

    def to_hf(self) -> Dict[str, np.ndarray]:
        return {k: t.numpy() for k, t in self.state_dict().items()}


class BeitForImageClassification(nn.Module):
    """BEiT + a linear classifier on its pooled output; ``forward(pixel_values, interpolate_pos_encoding=False,
    output_hidden_states=False)`` returns the logits (B, num_labels) (with ``output_hidden_states``:
    ``ImageClassifierOutput(logits, hidden_states)``)."""

    architecture = "BeitForImageClassification"
    model_type = "beit"
    base = "beit"

    def __init__(self, config: dict):
        super().__init__()
        self.config = dict(config)
        self.beit = BeitModel(self.config, add_pooling_layer=True)
        labels = _labels(self.config)
        self.classifier = nn.Linear(self.config["hidden_size"], labels) if labels > 0 else nn.Identity()

    @property
    def encoder(self) -> BeitModel:
        return self.beit

    def forward(self, pixel_values, interpolate_pos_encoding: bool = False, output_hidden_states: bool = False):
        out = self.beit(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding,
                        output_hidden_states=output_hidden_states)
        logits = self.classifier(out.pooler_output)
        return ImageClassifierOutput(logits, out.hidden_states) if output_hidden_states else logits

    def from_hf(self, tensors: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        return {k: v for k, v in tensors.items() if not k.endswith("relative_position_index")}

    def to_hf(self) -> Dict[str, np.ndarray]:
        return {k: t.numpy() for k, t in self.state_dict().items()}
