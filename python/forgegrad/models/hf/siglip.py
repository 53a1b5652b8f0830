"""SigLIP's dual encoders (transformers' ``SiglipModel``, ``SiglipTextModel``, ``SiglipVisionModel``) with
transformers' parameter names. CLIP's encoder layers (clip.py) with SigLIP's differences: the text attends both
ways and is pooled at its last place (the padding, when the processor pads to ``max_length`` as SigLIP was trained)
through a biased ``head``; the image has no class token, a biased patch convolution, and is pooled by multi-head
attention from a learned ``probe`` (the MAP head); pairs are scored by a sigmoid, each on its own:
``logits_per_text = exp(logit_scale) * cos + logit_bias``.
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np

from ... import nn
from ...tensor import Tensor
from ._layers import padding_bias
from .clip import (CLIPEncoder, CLIPMLP, CLIPModel, CLIPTextModel, EncoderOutput, pixel_tensor,
                   strip_prefix, sub_config)

__all__ = ["SiglipModel", "SiglipTextModel", "SiglipVisionModel", "siglip_loss"]

# transformers' SiglipTextConfig / SiglipVisionConfig defaults
TEXT_DEFAULTS = dict(vocab_size=32000, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                     num_attention_heads=12, max_position_embeddings=64, hidden_act="gelu_pytorch_tanh",
                     layer_norm_eps=1e-6, attention_dropout=0.0, pad_token_id=1, bos_token_id=49406,
                     eos_token_id=49407, projection_size=None)
VISION_DEFAULTS = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                       num_channels=3, image_size=224, patch_size=16, hidden_act="gelu_pytorch_tanh",
                       layer_norm_eps=1e-6, attention_dropout=0.0, vision_use_head=True)


class SiglipTextModel(CLIPTextModel):
    """SigLIP's text tower: CLIP's without the causal mask, pooled at the last place through ``head`` (a biased
    Linear to ``projection_size``, default hidden_size). ``forward(input_ids, attention_mask=None)`` returns
    ``EncoderOutput(last_hidden_state, pooler_output (B, projection_size))``. SigLIP's processor pads every text
    to 64 tokens and passes no mask: the pooled place is then padding, as the model was trained."""

    architecture = "SiglipTextModel"
    model_type = "siglip_text_model"
    defaults = TEXT_DEFAULTS
    causal = False

    def __init__(self, config: dict):
        super().__init__(config)
        c = self.config
        self.head = nn.Linear(c["hidden_size"], c["projection_size"] or c["hidden_size"])

    def graph_bias(self, m: Tensor) -> Tensor:
        return padding_bias(m)

    def pool(self, x: Tensor, ids: Tensor) -> Tensor:
        return self.head(x[:, -1])


class VisionEmbeddings(nn.Module):
    """Patches (a stride-``patch_size`` convolution with bias) plus positions; no class token."""

    def __init__(self, cfg: dict):
        super().__init__()
        E, p = cfg["hidden_size"], cfg["patch_size"]
        if not isinstance(p, int) or isinstance(p, bool) or p <= 0 or cfg["image_size"] < p:
            raise ValueError(f"SiglipVisionModel: config patch_size must be a positive integer at most image_size "
                             f"({cfg['image_size']}), got {p!r}")
        self.patch_embedding = nn.Conv2d(cfg["num_channels"], E, p, stride=p)
        self.position_embedding = nn.Embedding((cfg["image_size"] // p) ** 2, E)

    def forward(self, pixels: Tensor) -> Tensor:
        return self.patch_embedding(pixels).flatten(2).transpose(1, 2) + self.position_embedding.weight


class SiglipMultiheadAttentionPoolingHead(nn.Module):
    """MAP: a learned ``probe`` query attends over every patch (torch's MultiheadAttention: ``in_proj_weight``
    packs q, k, v), then probe + mlp(layernorm(probe)); the pooled (B, hidden) row."""

    def __init__(self, cfg: dict):
        super().__init__()
        E = cfg["hidden_size"]
        self.probe = nn.Parameter(Tensor._stored(np.zeros((1, 1, E), np.float32)))
        self.attention = nn.MultiheadAttention(E, cfg["num_attention_heads"], batch_first=True)
        self.layernorm = nn.LayerNorm(E, eps=cfg["layer_norm_eps"])
        self.mlp = CLIPMLP(cfg, "SiglipVisionModel")

    def forward(self, x: Tensor, key_padding_mask: Optional[Tensor] = None) -> Tensor:
        """``key_padding_mask``: bool (B, L), True at padding places (SigLIP 2's), or None."""
        probe = x[:, :1] * 0 + self.probe  # (B, 1, E): the batch taken from the graph's input
        h = self.attention(probe, x, x, key_padding_mask=key_padding_mask, need_weights=False)[0]
        return (h + self.mlp(self.layernorm(h)))[:, 0]


class SiglipVisionModel(nn.Module):
    """SigLIP's vision tower: patch embeddings, the layers, ``post_layernorm`` over every patch, and (with the
    config's ``vision_use_head``, the default) the MAP ``head``. ``forward(pixel_values)`` returns
    ``EncoderOutput(last_hidden_state (normed), pooler_output (B, hidden) or None without the head)``."""

    architecture = "SiglipVisionModel"
    model_type = "siglip_vision_model"
    defaults = VISION_DEFAULTS

    def __init__(self, config: dict):
        super().__init__()
        who = type(self).__name__
        self.config = sub_config(config, None, self.defaults, who)
        c = self.config
        self.embeddings = VisionEmbeddings(c)
        self.encoder = CLIPEncoder(c, who)
        self.post_layernorm = nn.LayerNorm(c["hidden_size"], eps=c["layer_norm_eps"])
        self.head = SiglipMultiheadAttentionPoolingHead(c) if c["vision_use_head"] else None

    def forward(self, pixel_values) -> EncoderOutput:
        x = self.embeddings(pixel_tensor(pixel_values, self.config, type(self).__name__))
        x = self.post_layernorm(self.encoder(x, None))
        return EncoderOutput(x, self.head(x) if self.head is not None else None)

    def from_hf(self, tensors: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        return strip_prefix(tensors, "vision_model.")

    to_hf = CLIPTextModel.to_hf


def log_sigmoid(z: Tensor) -> Tensor:
    """log(sigmoid(z)) = min(z, 0) - log(1 + exp(-|z|)), finite for any z."""
    return z.clamp(max=0.0) - ((-z.abs()).exp() + 1).log()


def siglip_loss(logits_per_text: Tensor) -> Tensor:
    """SigLIP's pairwise sigmoid loss (transformers' and big_vision's): -sum log sigmoid(+-logit) over each text's
    row (+ for its own image, the diagonal, - for the others), averaged over texts."""
    n = logits_per_text.shape[0]
    if logits_per_text.shape != (n, n):
        raise ValueError(f"siglip_loss: logits_per_text must be square (texts == images), got "
                         f"{logits_per_text.shape}")
    sign = Tensor._wrap((2 * np.eye(n) - 1).astype(np.float32))
    return -log_sigmoid(logits_per_text * sign).sum(-1).mean()


class SiglipModel(CLIPModel):
    """SigLIP: both towers (their own heads project; no separate projections), ``logit_scale`` and ``logit_bias``
    (shape (1,)). ``get_text_features`` / ``get_image_features`` return the towers' pooled outputs;
    ``forward(input_ids, pixel_values, attention_mask=None, return_loss=False)`` returns ``CLIPOutput`` with
    ``logits_per_text = exp(logit_scale) * text_embeds @ image_embeds.T + logit_bias`` (sigmoid of it: the
    probability that a pair matches) and, with ``return_loss``, ``siglip_loss``."""

    architecture = "SiglipModel"
    model_type = "siglip"
    text_class, vision_class = SiglipTextModel, SiglipVisionModel

    def __init__(self, config: dict):
        vision = config.get("vision_config") or {}
        if isinstance(vision, dict) and vision.get("vision_use_head") is False:
            raise ValueError("SiglipModel: vision_config vision_use_head must be true (the image embedding is the "
                             "attention-pooled head's)")
        super().__init__(config)

    def build_heads(self, text: dict, vision: dict) -> None:
        self.logit_scale = nn.Parameter(Tensor._stored(np.zeros(1, np.float32)))
        self.logit_bias = nn.Parameter(Tensor._stored(np.zeros(1, np.float32)))

    def project_text(self, pooled: Tensor) -> Tensor:
        return pooled

    def project_image(self, pooled: Tensor) -> Tensor:
        return pooled

    def logits(self, text_embeds: Tensor, image_embeds: Tensor) -> Tensor:
        return (text_embeds @ image_embeds.t()) * self.logit_scale.exp() + self.logit_bias

    def loss(self, logits_per_text: Tensor) -> Tensor:
        return siglip_loss(logits_per_text)

