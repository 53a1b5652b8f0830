"""Gemma 3's image-text model (transformers' ``Gemma3ForConditionalGeneration``, model_type ``gemma3``): a SigLIP
vision tower, a multimodal projector and Gemma 3's text decoder.

An image (``pixel_values`` (N, 3, S, S), SigLIP's preprocessing) goes through the vision tower (no pooling head)
to (N, (S / patch)^2, C) patch states; the projector average-pools the patch grid to ``mm_tokens_per_image``
tokens (a sqrt(mm_tokens) side), normalizes them (Gemma's (1 + w) RMSNorm) and multiplies by
``mm_input_projection_weight`` (C, hidden). Those rows replace the (scaled) embeddings of the prompt's image
tokens (``image_token_id``; as many as the images' tokens), in order. With ``token_type_ids`` (1 on image tokens,
as transformers' processor gives them) the tokens of one image attend to each other both ways: each mask is
(causal or the same image) and the padding, and on a sliding-window layer also within the window, as
transformers' ``create_masks_for_vision_model``. Without ``token_type_ids`` the masks are causal, as transformers'.
Text-only calls are Gemma3ForCausalLM's (the lean prefill and decode steps included); ``generate(model, ids,
pixel_values=..., token_type_ids=...)`` feeds the images to the prefill.

Checkpoint names: transformers 5's ``language_model.model.*`` / ``vision_tower.*`` / ``multi_modal_projector.*``,
the released checkpoints' ``language_model.model.*``, ``language_model.lm_head.weight`` and
``vision_tower.vision_model.*``, and transformers' in-memory ``model.language_model.*`` all load;
``save_pretrained`` writes transformers 5's.
"""
from __future__ import annotations

import math
from typing import Dict

import numpy as np

from ... import nn
from ...nn import functional as F
from ...tensor import Tensor
from ._image_text import TEXT_PREFIXES, ImageTextDecoder
from ._layers import _NEG
from .gemma2 import Gemma3ForCausalLM
from .siglip import SiglipVisionModel

__all__ = ["Gemma3ForConditionalGeneration", "Gemma3MultiModalProjector"]

_WHO = "Gemma3ForConditionalGeneration"


class Gemma3MultiModalProjector(nn.Module):
    """Average pool of the patch grid to ``tokens`` tokens, (1 + w) RMSNorm, then ``mm_input_projection_weight``
    (vision hidden, text hidden)."""

    def __init__(self, vision: dict, text_hidden: int, tokens: int):
        super().__init__()
        C = vision["hidden_size"]
        self.patches_per_side = vision["image_size"] // vision["patch_size"]
        side = math.isqrt(tokens)
        if side * side != tokens or side < 1 or self.patches_per_side % side:
            raise ValueError(f"{_WHO}: mm_tokens_per_image must be a square whose side divides the image's "
                             f"{self.patches_per_side} patches per side, got {tokens}")
        self.kernel = self.patches_per_side // side
        self.mm_input_projection_weight = nn.Parameter(Tensor._stored(np.zeros((C, text_hidden), np.float32)))
        self.mm_soft_emb_norm = nn.RMSNorm(C, eps=vision.get("layer_norm_eps", 1e-6))

    def forward(self, patches: Tensor) -> Tensor:
        N, P, C = patches.shape
        side = self.patches_per_side
        grid = patches.transpose(1, 2).reshape(N, C, side, side)
        pooled = F.avg_pool2d(grid, self.kernel, self.kernel).flatten(2).transpose(1, 2)
        return self.mm_soft_emb_norm(pooled) @ self.mm_input_projection_weight


class Gemma3ForConditionalGeneration(ImageTextDecoder, Gemma3ForCausalLM):
    """Gemma 3 with images: ``forward(input_ids, attention_mask=None, position_ids=None, cache=None,
    logits_to_keep=0, pixel_values=None, token_type_ids=None)`` returns the logits (B, T, vocab_size)."""

    architecture = "Gemma3ForConditionalGeneration"
    model_type = "gemma3"

    def __init__(self, config: dict):
        config = dict(config)
        text, vision = self.configs(config, _WHO, ("gemma3_text",), "gemma3_text", ("siglip_vision_model",))
        if "tie_word_embeddings" in config:
            text["tie_word_embeddings"] = config["tie_word_embeddings"]
        super().__init__(text)
        self.vision_tower = SiglipVisionModel({**vision, "vision_use_head": False})
        self.mm_tokens_per_image = self.tokens_per_image = int(config.get("mm_tokens_per_image", 256))
        self.multi_modal_projector = Gemma3MultiModalProjector(self.vision_tower.config, self.config["hidden_size"],
                                                               self.mm_tokens_per_image)
        self._set_image_config(config, 262144, _WHO)

    # ---- images ----------------------------------------------------------------------------------------------
    def image_features(self, pixel_values) -> Tensor:
        """(N, mm_tokens_per_image, hidden): each image's rows for the prompt's image tokens."""
        return self.multi_modal_projector(self.vision_tower(pixel_values).last_hidden_state)

    def forward(self, input_ids, attention_mask=None, position_ids=None, cache=None, logits_to_keep: int = 0,
                pixel_values=None, token_type_ids=None):
        if pixel_values is None and token_type_ids is None:
            return super().forward(self._text_ids(input_ids, _WHO), attention_mask, position_ids, cache,
                                   logits_to_keep)
        ids, image, text_ids, past, pad = self._prompt(input_ids, attention_mask, cache, _WHO)
        masks = None if token_type_ids is None else self._image_masks(token_type_ids, pad, past, *ids.shape)
        features = None if pixel_values is None else self.image_features(pixel_values)
        return self._logits(ids, image, text_ids, pad, past, position_ids, cache, logits_to_keep, features, masks,
                            _WHO)

    def _image_masks(self, token_type_ids, pad, past: int, B: int, T: int) -> dict:
        """Per sliding window (None: the global layers) the additive mask (B, 1, T, past + T): (causal or the same
        image block) and not padding, and within the window on the sliding layers."""
        kinds = self._token_types(token_type_ids, B, T, past, _WHO, "1: an image token")
        is_image = kinds == 1
        start = is_image & ~np.concatenate([np.zeros((B, 1), bool), is_image[:, :-1]], 1)
        block = np.where(is_image, np.cumsum(start, 1) - 1, -1)
        q, k = np.arange(T)[:, None], np.arange(T)[None, :]
        allowed = (k <= q)[None] | ((block[:, :, None] == block[:, None, :]) & (block[:, :, None] >= 0))
        if pad is not None:
            allowed = allowed & pad[:, None, :]
        masks = {}
        for w in set(self.sliding_windows):
            ok = allowed if w is None else allowed & (q - k < w)[None]
            masks[w] = np.where(ok, np.float32(0), np.float32(_NEG))[:, None]
        return masks

    # ---- checkpoints ---------------------------------------------------------------------------------------------
    def from_hf(self, tensors: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        text, rest = self.split_names(tensors)
        norm = "multi_modal_projector.mm_soft_emb_norm.weight"
        if norm in rest:
            rest[norm] = np.asarray(rest[norm], np.float32) + np.float32(1)  # Gemma's (1 + w)
        return {**super().from_hf(text), **rest}

    def to_hf(self) -> Dict[str, np.ndarray]:
        text = {k: t.numpy() for k, t in self.state_dict().items() if k.startswith(TEXT_PREFIXES)}
        out = self.joined_names({k: (v - np.float32(1)) if self._norm_key(k) else v for k, v in text.items()})
        norm = "multi_modal_projector.mm_soft_emb_norm.weight"
        out[norm] = out[norm] - np.float32(1)
        return out
