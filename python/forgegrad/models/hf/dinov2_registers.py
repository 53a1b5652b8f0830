"""DINOv2 with registers (transformers' ``Dinov2WithRegistersModel``, ``Dinov2WithRegistersForImageClassification``;
config model_type "dinov2_with_registers"), with the parameter names of its checkpoints.

DINOv2 (dinov2.py) with ``num_register_tokens`` learned register tokens, inserted after the CLS token once the
position table has been added (registers get no position), so the sequence is [CLS, registers, patches]. The
classifier reads the CLS token's state and the mean of the patch tokens' (registers left out). The position table is
resized to every image's patch grid as DINOv2's is, but by torch's antialiased bicubic interpolation (transformers
passes ``antialias=True`` here): a = -0.5, the kernel widened by the downscale factor, the weights of the taps inside
the table normalised to sum to one (``antialiased_bicubic_matrix``). The mask token is always in the checkpoint.
"""
from __future__ import annotations

from typing import Dict

import numpy as np

from ... import nn
from ...factories import cat
from ...tensor import Tensor
from .dinov2 import Dinov2Embeddings, Dinov2Model
from .vit import ImageClassifierOutput, _labels

__all__ = ["Dinov2WithRegistersModel", "Dinov2WithRegistersForImageClassification", "antialiased_bicubic_matrix"]

_WHO = "Dinov2WithRegistersModel"


def antialiased_bicubic_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out_size, in_size) float64 matrix M with M @ x = torch's ``interpolate(x, out_size, mode="bicubic",
    align_corners=False, antialias=True)`` along one axis: centre (i + 0.5) * scale, scale = in / out; the cubic
    kernel with a = -0.5 stretched by the scale when shrinking; taps outside the input dropped and the rest
    normalised."""
    a = -0.5

    def cubic(x):
        x = np.abs(x)
        return np.where(x < 1, ((a + 2) * x - (a + 3)) * x * x + 1,
                        np.where(x < 2, (((x - 5) * x + 8) * x - 4) * a, 0.0))

    scale = in_size / out_size
    support, inv = (2.0 * scale, 1.0 / scale) if scale >= 1.0 else (2.0, 1.0)
    m = np.zeros((out_size, in_size))
    for i in range(out_size):
        center = scale * (i + 0.5)
        lo, hi = max(int(center - support + 0.5), 0), min(int(center + support + 0.5), in_size)
        w = cubic((np.arange(lo, hi) - center + 0.5) * inv)
        m[i, lo:hi] = w / w.sum()
    return m


class Dinov2WithRegistersEmbeddings(Dinov2Embeddings):
    owner = _WHO
    resize_matrix = staticmethod(antialiased_bicubic_matrix)
    resize_antialias = True

    def __init__(self, cfg: dict):
        super().__init__(dict(cfg, use_mask_token=True))  # the checkpoints always carry it
        n = cfg.get("num_register_tokens", 4)
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"{_WHO}: config num_register_tokens must be a non-negative int, got {n!r}")
        self.registers = n
        self.register_tokens = nn.Parameter(Tensor._wrap(np.zeros((1, n, cfg["hidden_size"]), np.float32)))

    def forward(self, pixels: Tensor, bool_masked_pos=None) -> Tensor:
        B, _, H, W = pixels.shape
        x = self.patch_embeddings(pixels)
        if bool_masked_pos is not None:
            x = self._masked(x, bool_masked_pos)
        E = x.shape[-1]
        x = cat([self.cls_token.expand(B, 1, E), x], dim=1) + self.positions(H, W, True)
        if self.registers:
            x = cat([x[:, :1], self.register_tokens.expand(B, self.registers, E), x[:, 1:]], dim=1)
        return self.dropout(x)


class Dinov2WithRegistersModel(Dinov2Model):
    """DINOv2 with registers' encoder: ``forward(pixel_values, bool_masked_pos=None, output_hidden_states=False)``
    returns ``ViTOutput(last_hidden_state (B, 1 + registers + patches, hidden), pooler_output (B, hidden): the CLS
    row, hidden_states or None)``. Loaded from a classifier's checkpoint, it reads the weights under
    ``dinov2_with_registers.``."""

    architecture = "Dinov2WithRegistersModel"
    model_type = "dinov2_with_registers"
    prefix = "dinov2_with_registers."
    embeddings_class = Dinov2WithRegistersEmbeddings

    def __init__(self, config: dict):
        super().__init__(config)
        self.tokens = 1 + self.embeddings.registers  # the leading tokens before the patches


class Dinov2WithRegistersForImageClassification(nn.Module):
    """DINOv2 with registers + a linear classifier on [CLS state, mean of the patch states] (registers left out);
    ``forward(pixel_values, output_hidden_states=False)`` returns the logits (B, num_labels) (with
    ``output_hidden_states``: ``ImageClassifierOutput(logits, hidden_states)``)."""

    architecture = "Dinov2WithRegistersForImageClassification"
    model_type = "dinov2_with_registers"
    base = "dinov2_with_registers"

    def __init__(self, config: dict):
        super().__init__()
        self.config = dict(config)
        self.dinov2_with_registers = Dinov2WithRegistersModel(self.config)
        labels = _labels(self.config)
        self.classifier = nn.Linear(2 * self.config["hidden_size"], labels) if labels > 0 else nn.Identity()

    @property
    def encoder(self) -> Dinov2WithRegistersModel:
        return self.dinov2_with_registers

    def forward(self, pixel_values, output_hidden_states: bool = False):
        out = self.dinov2_with_registers(pixel_values, output_hidden_states=output_hidden_states)
        x = out.last_hidden_state
        patches = x[:, self.dinov2_with_registers.tokens:]
        logits = self.classifier(cat([x[:, 0], patches.mean(dim=1)], dim=1))
        return ImageClassifierOutput(logits, out.hidden_states) if output_hidden_states else logits

    def from_hf(self, tensors: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        return tensors

    def to_hf(self) -> Dict[str, np.ndarray]:
        return {k: t.numpy() for k, t in self.state_dict().items()}
