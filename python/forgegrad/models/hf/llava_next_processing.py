"""LLaVA-NeXT's image preprocessing (transformers' ``LlavaNextImageProcessor``, its Pil backend's steps) in numpy:
for each image (converted to RGB), the ``image_grid_pinpoints`` resolution that ``select_best_resolution`` picks for
its (height, width); the image resized (Pillow's bicubic by default) to fit that resolution keeping its aspect ratio
(the fitted side exact, the other ``ceil``), zero-padded to it (centered, the odd pixel after) and cut into
crop-size tiles row-major; the whole image resized to ``size`` as a square first. Each of those tiles then goes
through CLIP's steps (image_processing.py: resize by ``size``, center crop, rescale, normalize).

``processor(images) -> {"pixel_values": (num_images, most tiles, 3, S, S) float32, "image_sizes": (num_images, 2)
int64}`` (an image with fewer tiles padded with zero tiles, as transformers' ``do_pad``; with ``do_pad`` false and
different tile counts: the tiles back to back, (total tiles, 3, S, S), which the model reads too).
``load_image_processor(DIR)`` returns it for a preprocessor_config.json naming ``LlavaNextImageProcessor`` (or its
Fast / Pil variants).
"""
from __future__ import annotations

import math
from typing import Dict, List

import numpy as np

from .image_processing import _size_dict, ImageProcessor, resize_uint8
from .llava_next import DEFAULT_PINPOINTS, _checked_pinpoints, select_best_resolution

__all__ = ["LlavaNextImageProcessor", "settings"]

_KEYS = ("do_resize", "size", "resample", "do_center_crop", "crop_size", "do_rescale", "rescale_factor",
         "do_normalize", "image_mean", "image_std", "do_convert_rgb", "do_pad", "image_grid_pinpoints")
_WHO = "LlavaNextImageProcessor"


def settings(cfg: dict) -> dict:
    """The keys of a preprocessor_config.json this processor reads (null ones left to the defaults)."""
    return {k: cfg[k] for k in _KEYS if cfg.get(k) is not None}


class LlavaNextImageProcessor(ImageProcessor):
    """See the module docstring. Settings are preprocessor_config.json's, over transformers' defaults (CLIP's:
    shortest edge 224, a 224 crop, bicubic, CLIP's mean and std; pinpoints 336 x 672, 672 x 336, 672 x 672,
    1008 x 336, 336 x 1008; do_pad)."""

    def __init__(self, use_pillow=None, **config):
        config = {k: v for k, v in config.items() if v is not None}
        self.pinpoints = _checked_pinpoints(config.pop("image_grid_pinpoints", DEFAULT_PINPOINTS), _WHO)
        self.pad_batch = bool(config.pop("do_pad", True))
        super().__init__("CLIPImageProcessor", use_pillow=use_pillow, **config)
        self.kind = _WHO
        size = _size_dict(config.get("size", {"shortest_edge": 224}), "size", False)
        crop = _size_dict(config.get("crop_size", {"height": 224, "width": 224}), "crop_size", True)
        # transformers': the base image resized to size (height, width) or a shortest_edge square; the tiles the
        # crop's height (else size's) on a side
        self.base_size = (size["height"], size["width"]) if "height" in size else (size["shortest_edge"],) * 2
        self.tile = crop["height"] if crop else size.get("height", size.get("shortest_edge"))

    def __repr__(self) -> str:
        return (f"LlavaNextImageProcessor(size={self.size}, crop_size={self.crop_size}, tile={self.tile}, "
                f"pinpoints={self.pinpoints}, resample={self.resample})")

    def tiles(self, image, i: int = 0) -> np.ndarray:
        """One image's (1 + rows * columns, 3, S, S) float32 tiles: the base image, then the grid row-major."""
        x = self._array(image, i)
        H, W = x.shape[:2]
        th, tw = select_best_resolution((H, W), self.pinpoints)
        if tw / W < th / H:  # transformers' get_patch_output_size
            nh, nw = min(math.ceil(H * tw / W), th), tw
        else:
            nh, nw = th, min(math.ceil(W * th / H), tw)
        fitted = resize_uint8(x, nh, nw, resample=self.resample, use_pillow=self.use_pillow)
        top, left = (th - nh) // 2, (tw - nw) // 2
        padded = np.zeros((th, tw, x.shape[2]), np.uint8)
        padded[top:top + nh, left:left + nw] = fitted
        t = self.tile
        pieces = [resize_uint8(x, *self.base_size, resample=self.resample, use_pillow=self.use_pillow)]
        pieces += [padded[r:r + t, c:c + t] for r in range(0, th, t) for c in range(0, tw, t)]
        return np.stack([self._clip_steps(p) for p in pieces])

    def _clip_steps(self, x: np.ndarray) -> np.ndarray:
        return ImageProcessor.process_one(self, x)

    def __call__(self, images) -> Dict[str, np.ndarray]:
        stacked = isinstance(images, np.ndarray) and images.ndim == 4
        batch = list(images) if isinstance(images, (list, tuple)) or stacked else [images]
        if not batch:
            raise ValueError(f"{_WHO}: images must hold at least one image")
        arrays = [self._array(im, i) for i, im in enumerate(batch)]
        done: List[np.ndarray] = [self.tiles(x, i) for i, x in enumerate(arrays)]
        sizes = np.array([x.shape[:2] for x in arrays], np.int64)
        most = max(len(t) for t in done)
        if self.pad_batch or all(len(t) == most for t in done):
            pixels = np.stack([np.concatenate([t, np.zeros((most - len(t),) + t.shape[1:], np.float32)])
                               for t in done])
        else:
            pixels = np.concatenate(done)
        return {"pixel_values": np.ascontiguousarray(pixels, np.float32), "image_sizes": sizes}
