"""DINOv2 (transformers' ``Dinov2Model``, ``Dinov2ForImageClassification``; config model_type "dinov2"), with the
parameter names of its checkpoints.

ViT's patch embedding, CLS token and attention (vit.py), with DINOv2's differences:

- the position table is always resized to the image's patch grid (transformers' ``interpolate_pos_encoding``, which
  DINOv2 runs on every image: the hub's checkpoints are trained at 518 px and fed 224 px crops), by vit.py's bicubic
  matrices; the image's sides need not be multiples of the patch (the Conv2d drops the remainder, as torch's does);
- each layer is x + lambda1 * attention(norm1(x)), then + lambda2 * mlp(norm2(x)) (layer scale), with stochastic
  depth (``drop_path_rate``) in training;
- the MLP is fc1 -> act -> fc2 of width hidden * mlp_ratio, or with ``use_swiglu_ffn`` SwiGLU: ``weights_in`` (the
  gate's and the up projection's rows stacked, each of width (int(hidden * mlp_ratio * 2 / 3) + 7) // 8 * 8),
  silu(gate) * up, then ``weights_out``;
- ``pooler_output`` is the CLS token's final (layer-normed) state, with no pooler layer;
- ``bool_masked_pos`` (B, patches) replaces the masked patches' embeddings by the learned ``mask_token``;
- the classifier reads the CLS token's state and the mean of the patch tokens', concatenated (2 * hidden inputs).

``output_hidden_states=True`` adds the embeddings' output and every layer's (before the final LayerNorm), as
transformers' ``hidden_states``. Pixel values come from ``image_processing.load_image_processor(DIR)`` (DINOv2's
checkpoints name ``BitImageProcessor``: shortest edge 256 bicubic, 224 center crop, ImageNet mean and std).
"""
from __future__ import annotations

from typing import Dict

import numpy as np

from ... import nn
from ...factories import cat, rand
from ...nn import functional as F
from ...tensor import Tensor
from ._layers import activation, config_probability
from .vit import ImageClassifierOutput, ViTAttention, ViTEmbeddings, ViTOutput, _labels, _pixels

__all__ = ["Dinov2Model", "Dinov2ForImageClassification"]

_WHO = "Dinov2Model"


def mask_patches(x: Tensor, bool_masked_pos, mask_token, who: str) -> Tensor:
    """The patch embeddings x (B, patches, hidden) with those ``bool_masked_pos`` marks replaced by ``mask_token``."""
    if mask_token is None:
        raise ValueError(f"{who}: bool_masked_pos needs a mask token; this config has use_mask_token=false")
    mask = np.asarray(bool_masked_pos.numpy() if isinstance(bool_masked_pos, Tensor) else bool_masked_pos)
    if mask.shape != tuple(x.shape[:2]) or mask.dtype.kind not in "biu":
        raise ValueError(f"{who}: bool_masked_pos must be a boolean array (batch, patches) = "
                         f"{tuple(x.shape[:2])}, got {mask.dtype} {mask.shape}")
    m = Tensor._wrap(mask.astype(bool).astype(np.float32)[..., None])
    return x * (1 - m) + mask_token * m


class Dinov2Embeddings(ViTEmbeddings):
    """ViT's embeddings (CLS token, patches, position table resized to every image's grid) and the mask token."""

    owner = _WHO

    def __init__(self, cfg: dict):
        super().__init__({"patch_size": 14, **cfg}, tokens=1)  # DINOv2's default patch
        E = cfg["hidden_size"]
        self.mask_token = (nn.Parameter(Tensor._wrap(np.zeros((1, E), np.float32)))
                           if cfg.get("use_mask_token", True) else None)

    def forward(self, pixels: Tensor, bool_masked_pos=None) -> Tensor:
        B, _, H, W = pixels.shape
        x = self.patch_embeddings(pixels)
        if bool_masked_pos is not None:
            x = self._masked(x, bool_masked_pos)
        x = cat([self.cls_token.expand(B, 1, x.shape[-1]), x], dim=1)
        return self.dropout(x + self.positions(H, W, True))

    def _masked(self, x: Tensor, bool_masked_pos) -> Tensor:
        return mask_patches(x, bool_masked_pos, self.mask_token, _WHO)


class _LayerScale(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        value = float(cfg.get("layerscale_value", 1.0))
        self.lambda1 = nn.Parameter(Tensor._wrap(np.full(cfg["hidden_size"], value, np.float32)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.lambda1


class _DropPath(nn.Module):
    """Stochastic depth: in training, a sample's residual branch is zeroed with probability p (else scaled by
    1 / (1 - p)); the identity in eval."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        kept = (rand(x.shape[0], *([1] * (len(x.shape) - 1))).numpy() < keep).astype(np.float32) / np.float32(keep)
        return x * Tensor._wrap(kept)


class _MLP(nn.Module):
    def __init__(self, cfg: dict, hidden: int):
        super().__init__()
        E = cfg["hidden_size"]
        self.fc1, self.fc2 = nn.Linear(E, hidden), nn.Linear(hidden, E)
        self.act = activation(cfg.get("hidden_act", "gelu"), _WHO)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class _SwiGLU(nn.Module):
    def __init__(self, cfg: dict, hidden: int):
        super().__init__()
        E = cfg["hidden_size"]
        self.hidden = (int(hidden * 2 / 3) + 7) // 8 * 8  # two thirds, rounded up to a multiple of 8
        self.weights_in = nn.Linear(E, 2 * self.hidden)
        self.weights_out = nn.Linear(self.hidden, E)

    def forward(self, x: Tensor) -> Tensor:
        both = self.weights_in(x)
        return self.weights_out(F.silu(both[..., :self.hidden]) * both[..., self.hidden:])


class Dinov2Layer(nn.Module):
    def __init__(self, cfg: dict, drop_path: float):
        super().__init__()
        E, eps = cfg["hidden_size"], float(cfg.get("layer_norm_eps", 1e-6))
        ratio = cfg.get("mlp_ratio", 4)
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or int(E * ratio) <= 0:
            raise ValueError(f"{_WHO}: config mlp_ratio must be a positive number, got {ratio!r}")
        self.norm1 = nn.LayerNorm(E, eps=eps)
        self.attention = ViTAttention(cfg, _WHO)
        self.layer_scale1 = _LayerScale(cfg)
        self.norm2 = nn.LayerNorm(E, eps=eps)
        self.mlp = (_SwiGLU if cfg.get("use_swiglu_ffn") else _MLP)(cfg, int(E * ratio))
        self.layer_scale2 = _LayerScale(cfg)
        self.drop_path = _DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.layer_scale1(self.attention(self.norm1(x))))
        return x + self.drop_path(self.layer_scale2(self.mlp(self.norm2(x))))


class Dinov2Encoder(nn.Module):
    _no_split_modules = ["Dinov2Layer"]

    def __init__(self, cfg: dict):
        super().__init__()
        p = config_probability(cfg, "drop_path_rate", _WHO)  # every layer's, as transformers' Dinov2Layer
        self.layer = nn.ModuleList([Dinov2Layer(cfg, p) for _ in range(cfg["num_hidden_layers"])])

    def forward(self, x: Tensor, output_hidden_states: bool = False):
        states = [x] if output_hidden_states else None
        for layer in self.layer:
            x = layer(x)
            if states is not None:
                states.append(x)
        return x, tuple(states) if states is not None else None


class Dinov2Model(nn.Module):
    """DINOv2's encoder. ``forward(pixel_values, bool_masked_pos=None, output_hidden_states=False)`` with
    pixel_values (B, C, H, W) of any size of at least one patch returns ``ViTOutput(last_hidden_state (B, 1 +
    patches, hidden), pooler_output (B, hidden): the CLS row of it, hidden_states or None)``. Loaded from a
    classifier's checkpoint, it reads the weights under ``dinov2.``."""

    architecture = "Dinov2Model"
    model_type = "dinov2"
    prefix = "dinov2."
    tokens = 1
    embeddings_class = Dinov2Embeddings

    def __init__(self, config: dict):
        super().__init__()
        self.config = dict(config)
        self.embeddings = self.embeddings_class(self.config)
        self.encoder = Dinov2Encoder(self.config)
        self.layernorm = nn.LayerNorm(self.config["hidden_size"], eps=float(self.config.get("layer_norm_eps", 1e-6)))

    def forward(self, pixel_values, bool_masked_pos=None, output_hidden_states: bool = False) -> ViTOutput:
        patches = self.embeddings.patch_embeddings
        x = self.embeddings(_pixels(pixel_values, self.embeddings.owner, patches.num_channels, patches.patch_size),
                            bool_masked_pos)
        x, states = self.encoder(x, bool(output_hidden_states))
        x = self.layernorm(x)
        return ViTOutput(x, x[:, 0], states)

    def from_hf(self, tensors: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """The checkpoint's tensors under this model's names (a classifier's ``dinov2.`` weights without its
        head)."""
        if not any(k.startswith("embeddings.") for k in tensors):
            n = len(self.prefix)
            tensors = {k[n:]: v for k, v in tensors.items() if k.startswith(self.prefix)}
        return tensors

    def to_hf(self) -> Dict[str, np.ndarray]:
        return {k: t.numpy() for k, t in self.state_dict().items()}


class Dinov2ForImageClassification(nn.Module):
    """DINOv2 + a linear classifier on [CLS state, mean of the patch states] (2 * hidden features);
    ``forward(pixel_values, output_hidden_states=False)`` returns the logits (B, num_labels) (with
    ``output_hidden_states``: ``ImageClassifierOutput(logits, hidden_states)``)."""

    architecture = "Dinov2ForImageClassification"
    model_type = "dinov2"
    base = "dinov2"

    def __init__(self, config: dict):
        super().__init__()
        self.config = dict(config)
        self.dinov2 = Dinov2Model(self.config)
        labels = _labels(self.config)
        self.classifier = nn.Linear(2 * self.config["hidden_size"], labels) if labels > 0 else nn.Identity()

    @property
    def encoder(self) -> Dinov2Model:
        return self.dinov2

    def forward(self, pixel_values, output_hidden_states: bool = False):
        out = self.dinov2(pixel_values, output_hidden_states=output_hidden_states)
        x = out.last_hidden_state
        logits = self.classifier(cat([x[:, 0], x[:, 1:].mean(dim=1)], dim=1))
        return ImageClassifierOutput(logits, out.hidden_states) if output_hidden_states else logits

    def from_hf(self, tensors: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        return tensors

    def to_hf(self) -> Dict[str, np.ndarray]:
        return {k: t.numpy() for k, t in self.state_dict().items()}
