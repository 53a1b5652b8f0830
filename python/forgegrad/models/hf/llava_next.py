"""LLaVA-NeXT (transformers' ``LlavaNextForConditionalGeneration``, model_type ``llava_next``: llava-hf/llava-v1.6-*):
LLaVA 1.5's CLIP tower, projector and Llama / Mistral decoder (llava.py) on any-resolution images.

An image comes as tiles (``pixel_values`` (num_images, num_tiles, 3, S, S), S the tower's image_size): the whole
image resized to S x S first, then the tiles of its resized and padded copy at the ``image_grid_pinpoints``
resolution that ``select_best_resolution`` picks for its original size (``image_sizes`` (num_images, 2): height,
width), row-major. The rows past an image's own tile count are the processor's batch padding, dropped (a 4-D
(total tiles, 3, S, S) input holds the images' tiles back to back). Every tile goes through the tower and the
projector (llava.py's ``image_features``: ``vision_feature_layer``, "default" select strategy); transformers'
``pack_image_features`` then arranges each image's tile features into its grid (rows of ``S / patch`` patches per
tile), crops the grid's padding back to the original aspect ratio (``unpad_image``), appends the learned
``image_newline`` after each row and puts the base image's features first. An image's token count thus depends on
its size (``image_token_count``): transformers' processor expands ``<image>`` to it, as image_prompts.py does.

Checkpoint names: llava.py's, plus ``image_newline`` (in memory: ``model.image_newline``).
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import numpy as np

from ... import nn
from ...factories import cat
from ...tensor import Tensor
from .llava import LlavaForConditionalGeneration

__all__ = ["LlavaNextForConditionalGeneration", "select_best_resolution", "unpadded_grid", "image_token_count"]

_WHO = "LlavaNextForConditionalGeneration"
DEFAULT_PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]  # transformers' config default


def select_best_resolution(size: Sequence[int], pinpoints) -> Tuple[int, int]:
    """transformers' select_best_resolution: of the (height, width) ``pinpoints``, the one keeping the most of an
    image of ``size`` (height, width) when fitted inside it, ties to the least wasted area (the first of equals)."""
    h, w = int(size[0]), int(size[1])
    best, most, least = None, 0, float("inf")
    for ph, pw in pinpoints:
        scale = min(pw / w, ph / h)
        effective = min(int(w * scale) * int(h * scale), w * h)
        wasted = pw * ph - effective
        if effective > most or (effective == most and wasted < least):
            best, most, least = (int(ph), int(pw)), effective, wasted
    return best


def unpadded_grid(size: Sequence[int], rows: int, cols: int) -> Tuple[int, int, int, int]:
    """transformers' unpad_image on a (rows, cols) feature grid of an image of ``size`` (height, width): the
    (top, bottom, left, right) bounds of the part that is the image (the padding split evenly, floor)."""
    h, w = int(size[0]), int(size[1])
    if w / h > cols / rows:  # wider than the grid: padding above and below
        new = int(round(h * (cols / w), 7))
        pad = (rows - new) // 2
        return pad, rows - pad, 0, cols
    new = int(round(w * (rows / h), 7))
    pad = (cols - new) // 2
    return 0, rows, pad, cols - pad


def _checked_pinpoints(value, who: str) -> List[List[int]]:
    if not isinstance(value, (list, tuple)) or not value or not all(
            isinstance(p, (list, tuple)) and len(p) == 2 and all(
                isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in p) for p in value):
        raise ValueError(f"{who}: image_grid_pinpoints must be a non-empty list of [height, width] positive ints, "
                         f"got {value!r}")
    return [list(p) for p in value]


def image_tiles(size: Sequence[int], pinpoints, tile: int) -> Tuple[int, int]:
    """(rows, columns) of tiles of an image of ``size`` (height, width): its best pinpoint over the tile size (the
    base image's tile not counted)."""
    ph, pw = select_best_resolution(size, pinpoints)
    return ph // tile, pw // tile


def image_token_count(size: Sequence[int], pinpoints, tile: int, patch: int) -> int:
    """An image's tokens (the "default" strategy): the base tile's patches, then its unpadded grid's rows, each with
    one image_newline (transformers' processor's _get_number_of_features less the class token)."""
    rows, cols = image_tiles(size, pinpoints, tile)
    side = tile // patch
    top, bottom, left, right = unpadded_grid(size, rows * side, cols * side)
    return side * side + (bottom - top) * (right - left + 1)


def checked_sizes(image_sizes, n_images, who: str) -> np.ndarray:
    """image_sizes as a (num_images, 2) integer array of positive (height, width) rows, checked (``n_images``: the
    images of a 5-D pixel_values, or None)."""
    sizes = np.asarray(image_sizes.numpy() if isinstance(image_sizes, Tensor) else image_sizes)
    if sizes.ndim != 2 or sizes.shape[1] != 2 or sizes.dtype.kind not in "iu" or (sizes <= 0).any() or (
            n_images is not None and sizes.shape[0] != n_images):
        want = "(num_images, 2)" if n_images is None else f"({n_images}, 2) (one per image of pixel_values)"
        raise ValueError(f"{who}: image_sizes must be positive integer (height, width) rows {want}, got "
                         f"{sizes.dtype} {sizes.shape}")
    return sizes


def image_tile_rows(pixel_values, sizes: np.ndarray, pinpoints, tile: int, who: str):
    """(every image's tiles (total, 3, S, S), each image's tile count), the batch padding of a 5-D (num_images,
    num_tiles, 3, S, S) pixel_values dropped; a Tensor stays a Tensor."""
    counts = [r * c + 1 for r, c in (image_tiles(s, pinpoints, tile) for s in sizes)]
    shape = tuple(pixel_values.shape)
    if len(shape) == 5:
        if shape[0] != len(sizes) or shape[1] < max(counts):
            raise ValueError(f"{who}: pixel_values (num_images, num_tiles, 3, H, W) {shape} must hold "
                             f"{len(sizes)} images of at least {max(counts)} tiles (image_sizes give {counts} "
                             "tiles: the base image and the best pinpoint's grid)")
        if isinstance(pixel_values, Tensor):
            return cat([pixel_values[i, :n] for i, n in enumerate(counts)], 0), counts
        return np.concatenate([pixel_values[i, :n] for i, n in enumerate(counts)]), counts
    if len(shape) != 4 or shape[0] != sum(counts):
        raise ValueError(f"{who}: pixel_values must be (num_images, num_tiles, 3, H, W), or (total tiles, 3, H, "
                         f"W) with the {sum(counts)} tiles image_sizes give ({counts}), got shape {shape}")
    return pixel_values, counts


class LlavaNextForConditionalGeneration(LlavaForConditionalGeneration):
    """LLaVA-NeXT: ``forward(input_ids, attention_mask=None, position_ids=None, cache=None, logits_to_keep=0,
    pixel_values=None, image_sizes=None)`` returns the logits (B, T, vocab_size)."""

    architecture = "LlavaNextForConditionalGeneration"
    model_type = "llava_next"

    def __init__(self, config: dict):
        config = dict(config)
        if config.get("vision_feature_select_strategy", "default") != "default":
            # transformers' pack_image_features cannot lay the class token's row into the tile grid either
            raise ValueError(f"{_WHO}: config vision_feature_select_strategy must be 'default' (the tiles' patch "
                             f"grid), got {config['vision_feature_select_strategy']!r}")
        super().__init__(config)
        pinpoints = config.get("image_grid_pinpoints")  # null: transformers' default
        self.pinpoints = _checked_pinpoints(DEFAULT_PINPOINTS if pinpoints is None else pinpoints, _WHO)
        vc = self.vision_tower.config
        self.tile, self.patch = vc["image_size"], vc["patch_size"]
        self.image_newline = nn.Parameter(Tensor._stored(np.zeros(self.config["hidden_size"], np.float32)))

    def image_token_counts(self, image_sizes) -> List[int]:
        """Each image's token count from its (height, width)."""
        return [image_token_count(s, self.pinpoints, self.tile, self.patch) for s in self._sizes(image_sizes, None)]

    def image_layout(self, images: dict) -> Tuple[List[int], List[int]]:
        """(each image's tokens from its size, its rows of pixel_values: 1 of (num_images, num_tiles, 3, S, S), its
        tiles of (total tiles, 3, S, S))."""
        if images.get("image_sizes") is None:
            raise ValueError(f"{_WHO}: pixel_values need image_sizes (num_images, 2): each image's original "
                             "(height, width), which the processor returns")
        sizes = self._sizes(images["image_sizes"], None)
        if len(images["pixel_values"].shape) == 5:
            return self.image_token_counts(sizes), [1] * len(sizes)
        return self.image_token_counts(sizes), [r * c + 1 for r, c in (image_tiles(s, self.pinpoints, self.tile)
                                                                      for s in sizes)]

    def _sizes(self, image_sizes, n_images) -> np.ndarray:
        return checked_sizes(image_sizes, n_images, _WHO)

    def _tiles(self, pixel_values, sizes: np.ndarray) -> Tuple[Tensor, List[int]]:
        return image_tile_rows(pixel_values, sizes, self.pinpoints, self.tile, _WHO)

    def packed_features(self, pixel_values, image_sizes) -> Tensor:
        """(total image tokens, hidden): each image's base tile rows, then its unpadded grid rows each followed by
        image_newline (transformers' get_image_features + pack_image_features)."""
        if image_sizes is None:
            raise ValueError(f"{_WHO}: pixel_values need image_sizes (num_images, 2): each image's original "
                             "(height, width), which the processor returns")
        if not isinstance(pixel_values, Tensor):
            pixel_values = np.asarray(pixel_values)
        n_images = pixel_values.shape[0] if pixel_values.ndim == 5 else None
        sizes = self._sizes(image_sizes, n_images)
        tiles, counts = self._tiles(pixel_values, sizes)
        feats = self.image_features(tiles)  # (total tiles, side * side, hidden)
        side, hidden = self.tile // self.patch, feats.shape[-1]
        out, start = [], 0
        for size, n in zip(sizes, counts):
            rows, cols = image_tiles(size, self.pinpoints, self.tile)
            grid = feats[start + 1:start + n].reshape(rows, cols, side, side, hidden)
            grid = grid.permute(0, 2, 1, 3, 4).reshape(rows * side, cols * side, hidden)
            top, bottom, left, right = unpadded_grid(size, rows * side, cols * side)
            grid = grid[top:bottom, left:right]
            newline = self.image_newline.reshape(1, 1, hidden).expand(bottom - top, 1, hidden)
            out += [feats[start], cat([grid, newline], 1).reshape(-1, hidden)]
            start += n
        return cat(out, 0)

    def forward(self, input_ids, attention_mask=None, position_ids=None, cache=None, logits_to_keep: int = 0,
                pixel_values=None, token_type_ids=None, image_sizes=None):
        if token_type_ids is not None:
            raise TypeError(f"{_WHO}: LLaVA-NeXT's attention is causal; it takes no token_type_ids")
        if pixel_values is None:
            if image_sizes is not None:
                raise ValueError(f"{_WHO}: image_sizes were given without pixel_values")
            return super().forward(input_ids, attention_mask, position_ids, cache, logits_to_keep)
        ids, image, text_ids, past, pad = self._prompt(input_ids, attention_mask, cache, _WHO)
        features = self.packed_features(pixel_values, image_sizes)
        if int(image.sum()) != features.shape[0]:
            raise ValueError(f"{_WHO}: the prompt holds {int(image.sum())} image tokens (id {self.image_token_id}) "
                             f"but the images of image_sizes give {features.shape[0]} "
                             f"({self.image_token_counts(image_sizes)}: image_prompt expands <image> to them)")
        return self._logits(ids, image, text_ids, pad, past, position_ids, cache, logits_to_keep,
                            features.reshape(1, *features.shape), None, _WHO)

    def from_hf(self, tensors: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        renamed = {("image_newline" if k == "model.image_newline" else k): v for k, v in tensors.items()}
        return super().from_hf(renamed)
