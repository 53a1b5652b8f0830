"""Qwen2-VL (transformers' ``Qwen2VLForConditionalGeneration``, model_type ``qwen2_vl``: Qwen/Qwen2-VL-*): the vision
tower of qwen2_vl_vision.py and a Qwen2 text decoder with multimodal rotary position embeddings (M-RoPE).

An image comes as the processor's flattened patches (``pixel_values`` (num_patches, C * 2 * 14 * 14)) and its grid
(``image_grid_thw`` (num_images, 3)); the tower gives one row per 2x2 merged patch, and those rows replace the
embeddings of the prompt's image tokens (``image_token_id``), in order. Each run of image tokens is one image.
A video is the same: its frames' patches (``pixel_values_videos``, the video processor's: qwen2_vl_video.py) and
grid (``video_grid_thw``: (frame groups, rows, columns)) through the same tower, its rows at the video tokens
(``video_token_id``).

M-RoPE: each token has a (temporal, height, width) position; the head's rotary frequencies are split by
``mrope_section`` (3 sections of head_dim / 2), each section rotated by one of the three. Text tokens have all three
equal (the plain rope); an image's tokens get (start, start + row, start + column) over its merged grid (a video's
(start + frame group x step, ...): the step 1, or Qwen2.5-VL's seconds per group x tokens_per_second), and the text
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

from typing import Dict, List, Optional, Tuple

import numpy as np

from ...factories import cat
from ...tensor import Tensor
from ._image_text import ImageTextDecoder
from ._layers import RotaryEmbedding, host_array, ids_array
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


def rope_index(image: np.ndarray, grid: np.ndarray, merge: int, pad: Optional[np.ndarray], who: str = _WHO, *,
               video: Optional[np.ndarray] = None, video_grid: Optional[np.ndarray] = None,
               video_steps: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
    """transformers' get_rope_index: ((3, B, T) positions, (B,) rope deltas) of a prompt whose image tokens are
    ``image`` (B, T) bool and video tokens ``video`` (or None), the images' and the videos' grids each in order over
    the batch, real tokens ``pad`` (None: all). Padding keeps position 0. A video's temporal positions step by
    ``video_steps[v]`` per frame group (truncated; Qwen2.5-VL's tokens_per_second * second_per_grid_ts), else 1."""
    B, T = image.shape
    kinds_all = image.astype(np.int8) + (0 if video is None else 2 * video.astype(np.int8))
    grids = {1: (grid, "image", "image_grid_thw"), 2: (video_grid, "video", "video_grid_thw")}
    used = {1: 0, 2: 0}
    out = np.zeros((3, B, T), np.int64)
    deltas = np.zeros(B, np.int64)
    for b in range(B):
        real = np.ones(T, bool) if pad is None else pad[b].astype(bool)
        kinds = kinds_all[b][real]
        parts, cur, i = [], 0, 0
        while i < len(kinds):
            j = i
            while j < len(kinds) and kinds[j] == kinds[i]:
                j += 1
            kind = int(kinds[i])
            if kind == 0:
                parts.append(np.broadcast_to(np.arange(j - i) + cur, (3, j - i)))
                cur += j - i
            else:
                table, name, arg = grids[kind]
                g = used[kind]
                if table is None or g >= len(table):
                    raise ValueError(f"{who}: the prompt has more {name}-token runs than {arg}'s "
                                     f"{0 if table is None else len(table)} {name}s")
                t, h, w = int(table[g][0]), int(table[g][1]) // merge, int(table[g][2]) // merge
                if j - i != t * h * w:
                    raise ValueError(f"{who}: {name} {g}'s run of {name} tokens has {j - i} tokens but its "
                                     f"{arg} {table[g].tolist()} gives {t * h * w} (one per merged patch; "
                                     f"each {name}'s tokens one run, as the processor writes them)")
                step = 1.0 if kind == 1 or video_steps is None else float(video_steps[g])
                tt, hh, ww = np.meshgrid((np.arange(t) * step).astype(np.int64), np.arange(h), np.arange(w),
                                         indexing="ij")
                parts.append(np.stack([tt, hh, ww]).reshape(3, -1) + cur)
                cur += max(h, w)
                used[kind] += 1
            i = j
        if parts:
            row = np.concatenate(parts, axis=1)
            out[:, b, real] = row
            deltas[b] = row.max() + 1 - len(kinds)
    for kind, (table, name, arg) in grids.items():
        if table is not None and used[kind] != len(table):
            raise ValueError(f"{who}: {arg} lists {len(table)} {name}s but the prompt has {used[kind]} runs of "
                             f"{name} tokens")
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
        self.video_token_id = int(config.get("video_token_id", 151656))

    # ---- images ----------------------------------------------------------------------------------------------
    def image_features(self, pixel_values, image_grid_thw) -> Tensor:
        """(merged patches of all images, hidden): the rows for the prompt's image tokens, in order."""
        return self._features(pixel_values, image_grid_thw)[0]

    def video_features(self, pixel_values_videos, video_grid_thw) -> Tensor:
        """(merged patches of all videos, hidden): the rows for the prompt's video tokens, in order (the image
        tower's, each group of temporal_patch_size frames one frame of patches)."""
        return self._features(pixel_values_videos, video_grid_thw, "video")[0]

    def _features(self, pixel_values, grid_thw, kind: str = "image") -> Tuple[Tensor, np.ndarray]:
        who, pixels = self.architecture, "pixel_values" if kind == "image" else "pixel_values_videos"
        if grid_thw is None:
            raise ValueError(f"{who}: {pixels} need {kind}_grid_thw (num_{kind}s, 3), as the processor returns")
        x = check_pixels(pixel_values, self.visual.patch_dim, who, pixels)
        grid = check_grid(grid_thw, x.shape[0], self.merge, who, kind)
        return self.visual(x, grid), grid

    def _video_steps(self, second_per_grid_ts, n_videos: int) -> Optional[np.ndarray]:
        """Each video's temporal position step per frame group: Qwen2-VL's 1 (no second_per_grid_ts)."""
        if second_per_grid_ts is not None:
            raise TypeError(f"{self.architecture}: second_per_grid_ts is Qwen2.5-VL's (Qwen2-VL's video positions "
                            "step by one per frame group)")
        return None

    def _ids(self, input_ids, who: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ids, where the image tokens are, the ids the embedding reads: image and video tokens past the text
        vocabulary as id 0, as transformers)."""
        top = max(self.vocab_size, self.image_token_id + 1, self.video_token_id + 1)
        ids = ids_array(input_ids, who, top)
        image = ids == self.image_token_id
        past = (ids >= self.vocab_size) & (image | (ids == self.video_token_id))
        return ids, image, (np.where(past, 0, ids) if past.any() else ids)

    def image_layout(self, images: dict) -> Tuple[List[int], List[int]]:
        """(each image's merged tokens in the prompt, its rows of patches in pixel_values), from image_grid_thw."""
        if images.get("image_grid_thw") is None:
            raise ValueError(f"{self.architecture}: pixel_values need image_grid_thw (num_images, 3), as the "
                             "processor returns")
        patches = check_grid(images["image_grid_thw"], int(images["pixel_values"].shape[0]), self.merge,
                             self.architecture).prod(axis=1)
        return (patches // (self.merge * self.merge)).tolist(), patches.tolist()

    def media_layout(self, images: dict) -> list:
        out = super().media_layout(images)
        if images.get("pixel_values_videos") is not None:
            if images.get("video_grid_thw") is None:
                raise ValueError(f"{self.architecture}: pixel_values_videos need video_grid_thw (num_videos, 3), as "
                                 "the processor returns")
            patches = check_grid(images["video_grid_thw"], int(images["pixel_values_videos"].shape[0]), self.merge,
                                 self.architecture, "video").prod(axis=1)
            out.append(("video", self.video_token_id, (patches // (self.merge * self.merge)).tolist(),
                        patches.tolist(), "pixel_values_videos", ("video_grid_thw", "second_per_grid_ts")))
        return out

    def text_modules(self):
        """The modules a text step runs: all but the vision tower."""
        vision = {id(m) for m in self.visual.modules()}
        return [m for m in self.modules() if id(m) not in vision]

    def forward(self, input_ids, attention_mask=None, position_ids=None, cache=None, logits_to_keep: int = 0,
                pixel_values=None, image_grid_thw=None, pixel_values_videos=None, video_grid_thw=None,
                second_per_grid_ts=None):
        who = self.architecture
        if pixel_values is None and image_grid_thw is not None:
            raise ValueError(f"{who}: image_grid_thw was given without pixel_values")
        if pixel_values_videos is None and (video_grid_thw is not None or second_per_grid_ts is not None):
            raise ValueError(f"{who}: video_grid_thw / second_per_grid_ts were given without pixel_values_videos")
        if pixel_values is None and pixel_values_videos is None:
            return super().forward(input_ids, attention_mask, self._text_positions(input_ids, position_ids, cache),
                                   cache, logits_to_keep)
        ids, image, text_ids, past, pad = self._prompt(input_ids, attention_mask, cache, who)
        if past:
            raise ValueError(f"{who}: pixel values go with a prompt from position 0 (the cache holds {past} tokens)")
        video = ids == self.video_token_id
        x = self._embed(text_ids)
        grid = video_grid = steps = None
        for kind, mask, pixels, grid_thw in (("image", image, pixel_values, image_grid_thw),
                                             ("video", video, pixel_values_videos, video_grid_thw)):
            if pixels is None:
                continue
            features, g = self._features(pixels, grid_thw, kind)
            count = int(mask.sum())
            token = self.image_token_id if kind == "image" else self.video_token_id
            if count != features.shape[0]:
                raise ValueError(f"{who}: input_ids hold {count} {kind} tokens (id {token}) but the {len(g)} {kind}s "
                                 f"({kind}_grid_thw) give {features.shape[0]} rows")
            x = self._merge_images(x, mask, features[None], who, features.shape[0])
            if kind == "image":
                grid = g
            else:
                video_grid, steps = g, self._video_steps(second_per_grid_ts, len(g))
        positions, deltas = rope_index(image, grid, self.merge, pad, who, video=video, video_grid=video_grid,
                                       video_steps=steps)
        if position_ids is not None and np.ndim(host_array(position_ids)) == 3:
            positions = np.asarray(host_array(position_ids), np.int64)
        if cache is not None:
            cache.rope_deltas = deltas
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
    A video's temporal positions step by vision_config tokens_per_second (default 4) x its second_per_grid_ts (the
    seconds each group of temporal_patch_size frames spans; default 1) per frame group, truncated, as transformers'
    get_rope_index; a still image's are not scaled."""

    architecture = "Qwen2_5_VLForConditionalGeneration"
    model_type = "qwen2_5_vl"
    vision_tower_class = Qwen2_5VisionTransformer

    def _video_steps(self, second_per_grid_ts, n_videos: int) -> np.ndarray:
        rate = self.visual.config.get("tokens_per_second", 4)
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not rate > 0:
            raise ValueError(f"{self.architecture}: vision_config tokens_per_second must be a positive number, got "
                             f"{rate!r}")
        if second_per_grid_ts is None:
            return np.full(n_videos, float(rate))
        seconds = np.asarray(host_array(second_per_grid_ts), np.float64).reshape(-1)
        if seconds.shape != (n_videos,) or not np.isfinite(seconds).all() or (seconds < 0).any():
            raise ValueError(f"{self.architecture}: second_per_grid_ts must be {n_videos} non-negative numbers (one "
                             f"per video of video_grid_thw), got {seconds.shape[0]}: {seconds.tolist()[:4]}")
        return rate * seconds
