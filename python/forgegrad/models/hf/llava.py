"""LLaVA (transformers' ``LlavaForConditionalGeneration``, model_type ``llava``: llava-hf/llava-1.5-*, BakLLaVA): a
CLIP vision tower, a two-layer projector and a Llama or Mistral text decoder.

An image (``pixel_values`` (N, 3, S, S), CLIP's preprocessing) goes through the vision tower; the hidden states of
``vision_feature_layer`` (-2: the second-to-last layer's output; a list: those layers' states concatenated) without
the class token (``vision_feature_select_strategy`` "default"; "full" keeps it) go through ``linear_1``, the
projector's activation and ``linear_2``; those rows replace the embeddings of the prompt's image tokens
(``image_token_index``), in order. Attention stays causal. Text-only calls are the text decoder's (the lean prefill
and decode steps included); ``generate(model, ids, pixel_values=...)`` feeds the images to the prefill. The
checkpoint names are those of _image_text.py.
"""
from __future__ import annotations

from typing import Dict, List

import numpy as np

from ... import nn
from ...factories import cat
from ._image_text import TEXT_PREFIXES, ImageTextDecoder
from ._layers import activation
from .clip import CLIPVisionModel, pixel_tensor
from .llama import MistralForCausalLM

__all__ = ["LlavaForConditionalGeneration", "LlavaMultiModalProjector"]

_WHO = "LlavaForConditionalGeneration"


class LlavaMultiModalProjector(nn.Module):
    """linear_1 (vision hidden x feature layers -> text hidden), the activation, linear_2."""

    def __init__(self, vision_width: int, text_hidden: int, act: str, bias: bool):
        super().__init__()
        self.linear_1 = nn.Linear(vision_width, text_hidden, bias=bias)
        self.act = activation(act, _WHO)
        self.linear_2 = nn.Linear(text_hidden, text_hidden, bias=bias)

    def forward(self, x):
        return self.linear_2(self.act(self.linear_1(x)))


def _feature_layers(value, n_layers: int) -> List[int]:
    layers = [value] if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(layers, list) or not layers or not all(
            isinstance(v, int) and not isinstance(v, bool) and -(n_layers + 1) <= v <= n_layers for v in layers):
        raise ValueError(f"{_WHO}: config vision_feature_layer must be an int or a list of ints indexing the vision "
                         f"tower's {n_layers + 1} hidden states, got {value!r}")
    return [v % (n_layers + 1) for v in layers]


class LlavaForConditionalGeneration(ImageTextDecoder, MistralForCausalLM):
    """LLaVA: ``forward(input_ids, attention_mask=None, position_ids=None, cache=None, logits_to_keep=0,
    pixel_values=None)`` returns the logits (B, T, vocab_size)."""

    architecture = "LlavaForConditionalGeneration"
    model_type = "llava"

    def __init__(self, config: dict):
        config = dict(config)
        text, vision = self.configs(config, _WHO, ("llama", "mistral"), "llama", ("clip_vision_model",))
        if "tie_word_embeddings" in config:  # the image-text config's own setting wins, as transformers'
            text["tie_word_embeddings"] = config["tie_word_embeddings"]
        super().__init__(text)
        self.vision_tower = CLIPVisionModel(vision)
        n = self.vision_tower.config["num_hidden_layers"]
        self.feature_layers = _feature_layers(config.get("vision_feature_layer", -2), n)
        self.select = config.get("vision_feature_select_strategy", "default")
        if self.select not in ("default", "full"):
            raise ValueError(f"{_WHO}: config vision_feature_select_strategy must be 'default' or 'full', got "
                             f"{self.select!r}")
        vc = self.vision_tower.config
        self.tokens_per_image = (vc["image_size"] // vc["patch_size"]) ** 2 + (self.select == "full")
        self.multi_modal_projector = LlavaMultiModalProjector(
            self.vision_tower.config["hidden_size"] * len(self.feature_layers), self.config["hidden_size"],
            config.get("projector_hidden_act", "gelu"), bool(config.get("multimodal_projector_bias", True)))
        self._set_image_config(config, 32000, _WHO)

    def image_features(self, pixel_values):
        """(N, patches (+ 1 with "full"), hidden): each image's rows for the prompt's image tokens."""
        tower = self.vision_tower
        h = tower.pre_layrnorm(tower.embeddings(pixel_tensor(pixel_values, tower.config, _WHO)))
        states = [h]
        for layer in tower.encoder.layers[:max(self.feature_layers)]:  # the layers past the last one used: skipped
            h = layer(h, None)
            states.append(h)
        picked = [states[i] if self.select == "full" else states[i][:, 1:] for i in self.feature_layers]
        return self.multi_modal_projector(picked[0] if len(picked) == 1 else cat(picked, -1))

    def forward(self, input_ids, attention_mask=None, position_ids=None, cache=None, logits_to_keep: int = 0,
                pixel_values=None, token_type_ids=None):
        if token_type_ids is not None:
            raise TypeError(f"{_WHO}: LLaVA's attention is causal; it takes no token_type_ids")
        if pixel_values is None:
            return super().forward(self._text_ids(input_ids, _WHO), attention_mask, position_ids, cache,
                                   logits_to_keep)
        ids, image, text_ids, past, pad = self._prompt(input_ids, attention_mask, cache, _WHO)
        return self._logits(ids, image, text_ids, pad, past, position_ids, cache, logits_to_keep,
                            self.image_features(pixel_values), None, _WHO)

    def from_hf(self, tensors: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        text, rest = self.split_names(tensors)
        return {**super().from_hf(text), **rest}

    def to_hf(self) -> Dict[str, np.ndarray]:
        return self.joined_names({k: t.numpy() for k, t in self.state_dict().items() if k.startswith(TEXT_PREFIXES)})
