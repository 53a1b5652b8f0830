"""Qwen2-VL (transformers' ``Qwen2VLForConditionalGeneration``, model_type ``qwen2_vl``: Qwen/Qwen2-VL-*): the vision
tower of qwen2_vl_vision.py and a Qwen2 text decoder with multimodal rotary position embeddings (M-RoPE).

An image comes as the processor's flattened patches (``pixel_values`` (num_patches, C * 2 * 14 * 14)) and its grid
(``image_grid_thw`` (num_images, 3)); the tower gives one row per 2x2 merged patch, and those rows replace the
embeddings of the prompt's image tokens (``image_token_id``), in order. Each run of image tokens is one image.

M-RoPE: each token has a (temporal, height, width) position; the head's rotary frequencies are split by
``mrope_section`` (3 sections of head_dim / 2), each section rotated by one of the three. Text tokens have all three
equal (the plain rope); an image's tokens get (start, start + row, start + column) over its merged grid, and the text
after it continues from the image's largest position + 1 (transformers' ``get_rope_index``, counting real tokens
only under an attention_mask). A prompt with images stores each row's offset (largest position + 1 - real tokens:
``rope_deltas``) on the cache, and later calls add it to their (B, T) text positions, as transformers' decode steps
do; explicit (3, B, T) position_ids are used as given.

Text-only calls are the Qwen2 decoder's (positions from 0, or the given ones). The decode and prefill run the Tensor
forward (not the lean kernels of _decode.py). Checkpoint names: transformers 5's saved (and the released
checkpoints') ``model.*`` / ``visual.*`` / ``lm_head.weight``, and transformers' in-memory ``model.language_model.*``
/ ``model.visual.*``; save_pretrained writes the former.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np

from ...factories import cat
from ...tensor import Tensor
from ._image_text import ImageTextDecoder
from ._layers import RotaryEmbedding, host_array
from .llama import Qwen2ForCausalLM
from .qwen2_vl_vision import Qwen2_5VisionTransformer, Qwen2VisionTransformer, check_grid, check_pixels

__all__ = ["Qwen2VLForConditionalGeneration", "Qwen2_5_VLForConditionalGeneration", "MRopeEmbedding", "rope_index"]

_WHO = "Qwen2VLForConditionalGeneration"

# transformers' Qwen2VLTextConfig defaults, for the keys a config leaves out
_TEXT_DEFAULTS = dict(vocab_size=152064, hidden_size=8192, intermediate_size=29568, num_hidden_layers=80,
                      num_attention_heads=64, num_key_value_heads=8, hidden_act="silu", max_position_embeddings=32768,
                      rms_norm_eps=1e-5, use_sliding_window=False, sliding_window=4096, max_window_layers=80,
                      bos_token_id=151643, eos_token_id=151645)
_NOT_TEXT = ("vision_config", "text_config", "architectures", "model_type", "image_token_id", "video_token_id",
             "vision_start_token_id", "vision_end_token_id", "transformers_version", "dtype", "torch_dtype")


class MRopeEmbedding(RotaryEmbedding):
    """Rope whose frequency i turns with position component ``section(i) % 3`` of (3, B, T) positions; (B, T)
    positions are the plain rope (all three components equal)."""

    def __init__(self, head_dim: int, theta: float, sections, max_positions: int, who: str = _WHO):
        super().__init__(head_dim, theta, max_positions=max_positions)
        if not isinstance(sections, (list, tuple)) or not all(isinstance(s, int) and s >= 0 for s in sections) \
                or sum(sections) != head_dim // 2:
            raise ValueError(f"{who}: mrope_section must be non-negative ints summing to head_dim / 2 "
                             f"({head_dim // 2}), got {sections!r}")
        self.component = np.repeat(np.arange(len(sections)) % 3, sections)  # (D/2,)

    def cos_sin_of(self, position_ids: Tensor):
        """cos_sin on int64 Tensor positions, (3, B, T) or (B, T), as Tensor ops (an exported decoder computes them
        from its position_ids input): each frequency's component picked by a 0/1 weight (an exact selection)."""
        if position_ids.ndim != 3:
            return super().cos_sin_of(position_ids)
        freqs = position_ids.float().unsqueeze(-1) * Tensor._wrap(self.inv_freq)  # (3, B, T, D/2)
        pick = (np.arange(3)[:, None] == self.component[None]).astype(np.float32)[:, None, None]  # (3, 1, 1, D/2)
        freqs = (freqs * Tensor._wrap(pick)).sum(0)
        emb = cat([freqs, freqs], dim=-1).unsqueeze(1)
        return emb.cos(), emb.sin()

    def cos_sin(self, position_ids: np.ndarray):
        pos = np.asarray(position_ids)
        if pos.ndim != 3:
            return super().cos_sin(pos)
        if pos.shape[0] != 3:
            raise ValueError(f"{_WHO}: 3-D position_ids must be (3, batch, length), got {pos.shape}")
        freqs = pos.astype(np.float32)[..., None] * self.inv_freq  # (3, B, T, D/2)
        half = np.arange(len(self.inv_freq))
        freqs = np.moveaxis(freqs[self.component, :, :, half], 0, -1)  # (B, T, D/2): each frequency's component
        emb = np.concatenate([freqs, freqs], axis=-1)[:, None]
        return Tensor._wrap(np.cos(emb).astype(np.float32)), Tensor._wrap(np.sin(emb).astype(np.float32))


def rope_index(image: np.ndarray, grid: np.ndarray, merge: int, pad: Optional[np.ndarray],
               who: str = _WHO) -> Tuple[np.ndarray, np.ndarray]:
    """transformers' get_rope_index for images: ((3, B, T) positions, (B,) rope deltas) of a prompt whose image
    tokens are ``image`` (B, T) bool, the images' grids in order over the batch, real tokens ``pad`` (None: all).
    Padding keeps position 0."""
    B, T = image.shape
    out = np.zeros((3, B, T), np.int64)
    deltas = np.zeros(B, np.int64)
    g = 0
    for b in range(B):
        real = np.ones(T, bool) if pad is None else pad[b].astype(bool)
        kinds = image[b][real]
        parts, cur, i = [], 0, 0
        while i < len(kinds):
            j = i
            while j < len(kinds) and kinds[j] == kinds[i]:
                j += 1
            if not kinds[i]:
                parts.append(np.broadcast_to(np.arange(j - i) + cur, (3, j - i)))
                cur += j - i
            else:
                if g >= len(grid):
                    raise ValueError(f"{who}: the prompt has more image-token runs than image_grid_thw's "
                                     f"{len(grid)} images")
                t, h, w = int(grid[g][0]), int(grid[g][1]) // merge, int(grid[g][2]) // merge
                if j - i != t * h * w:
                    raise ValueError(f"{who}: image {g}'s run of image tokens has {j - i} tokens but its "
                                     f"image_grid_thw {grid[g].tolist()} gives {t * h * w} (one per merged patch; "
                                     "each image's tokens one run, as the processor writes them)")
                tt, hh, ww = np.meshgrid(np.arange(t), np.arange(h), np.arange(w), indexing="ij")
                parts.append(np.stack([tt, hh, ww]).reshape(3, -1) + cur)
                cur += max(h, w)
                g += 1
            i = j
        if parts:
            row = np.concatenate(parts, axis=1)
            out[:, b, real] = row
            deltas[b] = row.max() + 1 - len(kinds)
    if g != len(grid):
        raise ValueError(f"{who}: image_grid_thw lists {len(grid)} images but the prompt has {g} runs of image tokens")
    return out, deltas


def _text_config(config: dict, who: str = _WHO) -> Tuple[dict, float, list]:
    """(the Qwen2 decoder's config, rope theta, mrope_section) of a Qwen2-VL config (nested text_config, or the
    released checkpoints' flat one)."""
    text = config.get("text_config")
    if text is None:
        text = {k: v for k, v in config.items() if k not in _NOT_TEXT}
    if not isinstance(text, dict):
        raise ValueError(f"{who}: config text_config must be a dict, got {type(text).__name__}")
    text = {**_TEXT_DEFAULTS, **{k: v for k, v in text.items() if v is not None or k == "sliding_window"}}
    params = dict(text.pop("rope_parameters", None) or text.pop("rope_scaling", None) or {})
    kind = params.get("rope_type", params.get("type", "default"))
    if kind not in ("default", "mrope"):
        raise ValueError(f"{who}: rope type {kind!r} is not supported (default / mrope)")
    theta = float(params.get("rope_theta", text.get("rope_theta", 1000000.0)))
    sections = params.get("mrope_section", [16, 24, 24])
    if not text.get("use_sliding_window"):
        text["sliding_window"] = None
    if "layer_types" not in text:
        text["layer_types"] = ["sliding_attention" if text["sliding_window"] is not None and i >= text[
            "max_window_layers"] else "full_attention" for i in range(text["num_hidden_layers"])]
    text.pop("head_dim", None)  # transformers' Qwen2-VL attention takes hidden_size / heads
    text["rope_parameters"] = {"rope_type": "default", "rope_theta": theta}
    tie = config.get("tie_word_embeddings", False) or text.get("tie_word_embeddings", False)
    text["tie_word_embeddings"] = bool(tie)
    text["model_type"] = "qwen2"
    return text, theta, sections


class Qwen2VLForConditionalGeneration(ImageTextDecoder, Qwen2ForCausalLM):
    """Qwen2-VL: ``forward(input_ids, attention_mask=None, position_ids=None, cache=None, logits_to_keep=0,
    pixel_values=None, image_grid_thw=None)`` returns the logits (B, T, vocab_size). With images, the positions are
    get_rope_index's from the ids, grids and mask (a (B, T) position_ids, the text positions generate passes, is not
    read; a (3, B, T) one is used as given)."""

    architecture = "Qwen2VLForConditionalGeneration"
    model_type = "qwen2_vl"
    vision_tower_class = Qwen2VisionTransformer

    def __init__(self, config: dict):
        config = dict(config)
        text, theta, sections = _text_config(config, self.architecture)
        vision = config.get("vision_config", {})
        if not isinstance(vision, dict):
            raise ValueError(f"{self.architecture}: config vision_config must be a dict")
        super().__init__(text)
        self.rotary = MRopeEmbedding(self.head_dim, theta, sections, self.max_positions, self.architecture)
        self.visual = self.vision_tower_class(vision, self.architecture)
        if self.visual.config["out"] != self.config["hidden_size"]:
            raise ValueError(f"{self.architecture}: the vision tower's output width ({self.visual.config['out']}) "
                             f"must be the text decoder's hidden_size ({self.config['hidden_size']})")
        self.merge = self.visual.merge
        self._set_image_config(config, 151655, self.architecture)
        self.vision_start_token_id = int(config.get("vision_start_token_id", 151652))
        self.vision_end_token_id = int(config.get("vision_end_token_id", 151653))

    # ---- images ----------------------------------------------------------------------------------------------
    def image_features(self, pixel_values, image_grid_thw) -> Tensor:
        """(merged patches of all images, hidden): the rows for the prompt's image tokens, in order."""
        return self._features(pixel_values, image_grid_thw)[0]

    def _features(self, pixel_values, image_grid_thw) -> Tuple[Tensor, np.ndarray]:
        who = self.architecture
        if image_grid_thw is None:
            raise ValueError(f"{who}: pixel_values need image_grid_thw (num_images, 3), as the processor returns")
        x = check_pixels(pixel_values, self.visual.patch_dim, who)
        grid = check_grid(image_grid_thw, x.shape[0], self.merge, who)
        return self.visual(x, grid), grid

    def text_modules(self):
        """The modules a text step runs: all but the vision tower."""
        vision = {id(m) for m in self.visual.modules()}
        return [m for m in self.modules() if id(m) not in vision]

    def forward(self, input_ids, attention_mask=None, position_ids=None, cache=None, logits_to_keep: int = 0,
                pixel_values=None, image_grid_thw=None):
        if pixel_values is None and image_grid_thw is not None:
            raise ValueError(f"{self.architecture}: image_grid_thw was given without pixel_values")
        if pixel_values is None:
            return super().forward(input_ids, attention_mask, self._text_positions(input_ids, position_ids, cache),
                                   cache, logits_to_keep)
        who = self.architecture
        ids, image, text_ids, past, pad = self._prompt(input_ids, attention_mask, cache, who)
        if past:
            raise ValueError(f"{who}: pixel_values go with a prompt from position 0 (the cache holds {past} tokens)")
        features, grid = self._features(pixel_values, image_grid_thw)
        count = int(image.sum())
        if count != features.shape[0]:
            raise ValueError(f"{who}: input_ids hold {count} image tokens (id {self.image_token_id}) but the "
                             f"{len(grid)} images (image_grid_thw) give {features.shape[0]} rows")
        positions, deltas = rope_index(image, grid, self.merge, pad, self.architecture)
        if position_ids is not None and np.ndim(host_array(position_ids)) == 3:
            positions = np.asarray(host_array(position_ids), np.int64)
        if cache is not None:
            cache.rope_deltas = deltas
        x = self._merge_images(self._embed(text_ids), image, features[None], self.architecture, features.shape[0])
        return self._head(self._stack(ids, pad, 0, positions, cache, embeds=x), logits_to_keep)

    def _text_positions(self, input_ids, position_ids, cache):
        """A text call's positions: after a prompt with images (the cache's rope_deltas), the (B, T) text positions
        (default: from the cache's length) plus each row's delta, for all three components."""
        deltas = getattr(cache, "rope_deltas", None) if cache is not None else None
        if deltas is None or cache.length == 0:
            return position_ids
        if position_ids is None:
            T = np.asarray(input_ids.numpy() if isinstance(input_ids, Tensor) else input_ids).shape[-1]
            return np.arange(cache.length, cache.length + T)[None] + deltas[:, None]
        pos = np.asarray(host_array(position_ids), np.int64)
        return pos if pos.ndim == 3 else pos + deltas[:, None]

    # ---- checkpoints ---------------------------------------------------------------------------------------------
    def from_hf(self, tensors: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        out = {}
        for key, value in tensors.items():
            if key.startswith("model.language_model."):
                key = "model." + key[len("model.language_model."):]
            elif key.startswith("model.visual."):
                key = key[len("model."):]
            if key == "lm_head.weight" and self.tied:
                continue
            out[key] = value
        return super().from_hf(out)

    def to_hf(self) -> Dict[str, np.ndarray]:
        return {k: t.numpy() for k, t in self.state_dict().items()}


class Qwen2_5_VLForConditionalGeneration(Qwen2VLForConditionalGeneration):
    """Qwen2.5-VL (model_type ``qwen2_5_vl``: Qwen/Qwen2.5-VL-*): Qwen2-VL's text decoder, M-RoPE and inputs with
    Qwen2.5-VL's vision tower (window attention, RMSNorms, SwiGLU MLPs: qwen2_vl_vision.Qwen2_5VisionTransformer).
    Images only: a still image's temporal positions are not scaled (transformers' tokens_per_second applies to
    videos, which are not supported)."""

    architecture = "Qwen2_5_VLForConditionalGeneration"
    model_type = "qwen2_5_vl"
    vision_tower_class = Qwen2_5VisionTransformer
