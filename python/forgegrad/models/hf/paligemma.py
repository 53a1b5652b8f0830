"""PaliGemma (transformers' ``PaliGemmaForConditionalGeneration``, model_type ``paligemma``: google/paligemma-3b-* with
a Gemma decoder, google/paligemma2-* with a Gemma 2 decoder): a SigLIP vision tower, one Linear projector and the
text decoder.

An image (``pixel_values``, SigLIP's preprocessing) goes through the vision tower; its normed patch states go through
``multi_modal_projector.linear`` and replace the (scaled) embeddings of the prompt's image tokens
(``image_token_index``), in order. Positions count from 1 (transformers' PaliGemma adds 1 to every position). With
``token_type_ids`` (0 on the prefix: the image tokens, BOS and the prompt; 1 on the suffix) the prefix attends to
itself both ways, the suffix causally (a prefix-LM; on a Gemma 2 decoder's sliding layers the window bounds the
causal part, not the prefix, as transformers' masks); without them the masks are causal (pass zeros for a prompt to
attend as a prefix: transformers' PaliGemma 1 decoder, marked bidirectional, builds no mask for a prompt without
padding and so attends it both ways). generate gives the images and token types to the prefill; its new tokens are
suffix. The checkpoint names are those of _image_text.py (the
SigLIP tower's unused pooling head loads too).
"""
from __future__ import annotations

from typing import Dict

import numpy as np

from ... import nn
from ._image_text import TEXT_PREFIXES, ImageTextDecoder
from ._layers import _NEG
from .gemma2 import Gemma2ForCausalLM, GemmaForCausalLM
from .siglip import SiglipVisionModel

__all__ = ["PaliGemmaForConditionalGeneration"]

_WHO = "PaliGemmaForConditionalGeneration"


class PaliGemmaMultiModalProjector(nn.Module):
    def __init__(self, vision_hidden: int, projection_dim: int):
        super().__init__()
        self.linear = nn.Linear(vision_hidden, projection_dim)

    def forward(self, x):
        return self.linear(x)


class PaliGemmaForConditionalGeneration(ImageTextDecoder, Gemma2ForCausalLM):
    """PaliGemma: ``forward(input_ids, attention_mask=None, position_ids=None, cache=None, logits_to_keep=0,
    pixel_values=None, token_type_ids=None)`` returns the logits (B, T, vocab_size). A config whose text decoder is
    Gemma (1) builds the Gemma-decoder variant of this class."""

    architecture = "PaliGemmaForConditionalGeneration"
    model_type = "paligemma"
    position_offset = 1  # rotary positions count from 1 (the lean decode step reads it too)

    def __new__(cls, config: dict = None, *args, **kwargs):
        text = (config or {}).get("text_config") if isinstance(config, dict) else None
        if cls is PaliGemmaForConditionalGeneration and isinstance(text, dict) and text.get("model_type") == "gemma":
            cls = PaliGemmaGemma1
        return super().__new__(cls)

    def __init__(self, config: dict):
        config = dict(config)
        text, vision = self.configs(config, _WHO, ("gemma", "gemma2"), "gemma2")
        # transformers sets it for PaliGemma's decoder, whose masks PaliGemma builds itself (prefix-LM or causal)
        text.pop("use_bidirectional_attention", None)
        if "tie_word_embeddings" in config:  # the image-text config's own setting wins, as transformers'
            text["tie_word_embeddings"] = config["tie_word_embeddings"]
        super().__init__(text)
        self.vision_tower = SiglipVisionModel(vision)
        width = config.get("projection_dim", vision.get("projection_dim", self.config["hidden_size"]))
        if width != self.config["hidden_size"]:
            raise ValueError(f"{_WHO}: config projection_dim ({width}) must be the text decoder's hidden_size "
                             f"({self.config['hidden_size']})")
        vc = self.vision_tower.config
        self.tokens_per_image = (vc["image_size"] // vc["patch_size"]) ** 2
        self.multi_modal_projector = PaliGemmaMultiModalProjector(self.vision_tower.config["hidden_size"], width)
        self._set_image_config(config, 257152, _WHO)

    def image_features(self, pixel_values):
        """(N, patches, hidden): each image's rows for the prompt's image tokens."""
        return self.multi_modal_projector(self.vision_tower(pixel_values).last_hidden_state)

    def forward(self, input_ids, attention_mask=None, position_ids=None, cache=None, logits_to_keep: int = 0,
                pixel_values=None, token_type_ids=None):
        ids, image, text_ids, past, pad = self._prompt(input_ids, attention_mask, cache, _WHO)
        B, T = ids.shape
        # positions from 1 (transformers' PaliGemma shifts every position, given or not)
        positions = (np.arange(past, past + T)[None] if position_ids is None else np.asarray(
            position_ids.numpy() if hasattr(position_ids, "numpy") else position_ids)) + self.position_offset
        if pixel_values is None and token_type_ids is None:
            return super().forward(text_ids, attention_mask, positions, cache, logits_to_keep)
        features = None if pixel_values is None else self.image_features(pixel_values)
        masks = None if token_type_ids is None else self._prefix_masks(token_type_ids, pad, past, B, T)
        return self._logits(ids, image, text_ids, pad, past, np.broadcast_to(positions, (B, T)), cache,
                            logits_to_keep, features, masks, _WHO)

    def _prefix_masks(self, token_type_ids, pad, past: int, B: int, T: int) -> dict:
        """Per sliding window the additive mask (B, 1, T, past + T): (causal, within the window on a sliding layer,
        or both in the prefix) and not padding."""
        kinds = self._token_types(token_type_ids, B, T, past, _WHO, "0: the prefix, 1: the suffix")
        prefix = kinds == 0
        both = prefix[:, :, None] & prefix[:, None, :]
        q, k = np.arange(T)[:, None], np.arange(T)[None, :]
        masks = {}
        for w in set(self.sliding_windows):  # (the window bounds the causal part only, as transformers')
            allowed = ((k <= q) if w is None else (k <= q) & (q - k < w))[None] | both
            if pad is not None:
                allowed = allowed & pad[:, None, :]
            masks[w] = np.where(allowed, np.float32(0), np.float32(_NEG))[:, None]
        return masks

    def from_hf(self, tensors: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        text, rest = self.split_names(tensors)
        return {**super().from_hf(text), **rest}

    def to_hf(self) -> Dict[str, np.ndarray]:
        text = {k: t.numpy() for k, t in self.state_dict().items() if k.startswith(TEXT_PREFIXES)}
        return self.joined_names({k: (v - np.float32(1)) if self._norm_key(k) else v for k, v in text.items()})


class PaliGemmaGemma1(PaliGemmaForConditionalGeneration, GemmaForCausalLM):
    """PaliGemma (1) with its Gemma decoder (no sliding windows or soft caps)."""
