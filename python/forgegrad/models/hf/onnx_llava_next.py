"""LLaVA-NeXT's graphs for ``export_image_text`` (onnx_image_text.py) and the any-resolution packing the host does.

- ``vision_encoder.onnx``: ``pixel_values`` (tiles, 3, S, S) float32, any number of tiles of any images ->
  ``image_features`` (tiles, patches per tile, hidden), LLaVA's tower and projector per tile, and ``image_newline``
  (hidden,), the learned row that ends each packed row of an image.
- ``embed_tokens.onnx`` and ``decoder_model_merged.onnx``: LLaVA's (causal; positions from the mask).

The packing (transformers' pack_image_features: each image's tiles laid into its best pinpoint's grid, the grid's
padding cropped back to the image's aspect ratio, image_newline after each row, the base tile's rows first) runs on
the host (``pack_tiles``), from ``image_sizes``: which pinpoint an image takes and where its crop falls are
comparisons and roundings of its size (select_best_resolution, unpad_image) that would make the graph's shapes
follow the values of an input; on the host they are the eager model's own functions, and the packing only moves
rows (no arithmetic), so the graph stays one dynamic tiles axis and the packed rows equal the eager model's for
every image size. The decoder graph's metadata records the pinpoints, the tile and the patch size for it.
"""
from __future__ import annotations

import json

import numpy as np

from ... import nn
from ...tensor import Tensor
from .llava_next import checked_sizes, image_tile_rows, image_tiles, unpadded_grid

__all__ = ["ANYRES_KEY", "AnyresVisionEncoder", "anyres_metadata", "is_anyres_model", "pack_tiles"]

ANYRES_KEY = "forgegrad.anyres"  # the decoder graph's metadata: {"pinpoints", "tile", "patch"} as JSON


def is_anyres_model(model) -> bool:
    return getattr(model, "architecture", "") == "LlavaNextForConditionalGeneration"


def anyres_metadata(model) -> str:
    return json.dumps({"pinpoints": model.pinpoints, "tile": int(model.tile), "patch": int(model.patch)})


class AnyresVisionEncoder(nn.Module):
    """``forward(pixel_values (tiles, 3, S, S))`` -> (image_features (tiles, patches, hidden), image_newline)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: Tensor):
        return self.model.image_features(pixel_values), self.model.image_newline.reshape(-1)


def split_tiles(pixel_values: np.ndarray, image_sizes, layout: dict, who: str):
    """(the tiles (total, 3, S, S), each image's tile count, the checked sizes) of a 5-D (num_images, num_tiles, 3, S,
    S) or 4-D (total tiles, 3, S, S) pixel_values, as the model takes them."""
    if image_sizes is None:
        raise ValueError(f"{who}: image_sizes: LLaVA-NeXT's pixel_values need each image's original (height, width) "
                         "(num_images, 2), as the processor returns them")
    sizes = checked_sizes(image_sizes, pixel_values.shape[0] if pixel_values.ndim == 5 else None, who)
    tiles, counts = image_tile_rows(pixel_values, sizes, layout["pinpoints"], layout["tile"], who)
    return tiles, counts, sizes


def pack_tiles(features: np.ndarray, newline: np.ndarray, sizes: np.ndarray, counts, layout: dict) -> np.ndarray:
    """(image tokens, hidden): the vision graph's tile rows (total tiles, side * side, hidden) packed per image as
    LlavaNextForConditionalGeneration.packed_features packs them."""
    tile, side = layout["tile"], layout["tile"] // layout["patch"]
    hidden = features.shape[-1]
    out, start = [], 0
    for size, n in zip(sizes, counts):
        rows, cols = image_tiles(size, layout["pinpoints"], tile)
        grid = features[start + 1:start + n].reshape(rows, cols, side, side, hidden)
        grid = grid.transpose(0, 2, 1, 3, 4).reshape(rows * side, cols * side, hidden)
        top, bottom, left, right = unpadded_grid(size, rows * side, cols * side)
        grid = grid[top:bottom, left:right]
        ends = np.broadcast_to(newline.reshape(1, 1, hidden), (bottom - top, 1, hidden))
        out += [features[start], np.concatenate([grid, ends], axis=1).reshape(-1, hidden)]
        start += n
    return np.concatenate(out, axis=0)
