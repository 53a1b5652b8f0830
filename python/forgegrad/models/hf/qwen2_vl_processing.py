"""Qwen2-VL's image preprocessing (transformers' ``Qwen2VLImageProcessor``, its Pil backend's steps) in numpy: each
image resized (Pillow's bicubic by default) to ``smart_resize``'s size, sides multiples of patch_size * merge_size
(28) with the pixel count within [min_pixels, max_pixels] keeping the aspect ratio, rescaled and normalized (CLIP's
mean and std) as image_processing.py's processors, then cut into patches: the merge_size x merge_size blocks of
patches row-major, the patches within a block row-major, each patch repeated temporal_patch_size times (an image is
one frame) and flattened in (channel, frame, row, column) order.

``processor(images) -> {"pixel_values": (total patches, C * temporal_patch_size * patch_size**2) float32,
"image_grid_thw": (num_images, 3) int64}`` (each image's (1, rows, columns) of patches; the model's image tokens per
image are rows * columns / merge_size**2). ``load_image_processor(DIR)`` returns it for a preprocessor_config.json
naming ``Qwen2VLImageProcessor`` (or its Fast / Pil variants).
"""
from __future__ import annotations

import math
from typing import Dict, Tuple

import numpy as np

from .image_processing import BICUBIC, OPENAI_CLIP, ImageProcessor, resize_uint8

__all__ = ["Qwen2VLImageProcessor", "smart_resize", "settings"]

_KEYS = ("do_resize", "resample", "do_rescale", "rescale_factor", "do_normalize", "image_mean", "image_std",
         "do_convert_rgb", "size", "min_pixels", "max_pixels", "patch_size", "temporal_patch_size", "merge_size")


def settings(cfg: dict) -> dict:
    """The keys of a preprocessor_config.json this processor reads (null ones left to the defaults)."""
    return {k: cfg[k] for k in _KEYS if cfg.get(k) is not None}


def smart_resize(height: int, width: int, factor: int = 28, min_pixels: int = 56 * 56,
                 max_pixels: int = 28 * 28 * 1280) -> Tuple[int, int]:
    """transformers' smart_resize: (height, width) rounded to multiples of ``factor`` (Python's round: half to
    even), scaled down (floor) or up (ceil) by the same ratio where the pixel count leaves [min_pixels, max_pixels]."""
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"Qwen2VLImageProcessor: the aspect ratio must be under 200, got "
                         f"{max(height, width) / min(height, width)}")
    h_bar, w_bar = round(height / factor) * factor, round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def _positive_int(value, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"Qwen2VLImageProcessor: {key} must be a positive int, got {value!r}")
    return value


class Qwen2VLImageProcessor(ImageProcessor):
    """See the module docstring. Settings are preprocessor_config.json's, over transformers' defaults (bicubic, CLIP's
    mean and std, min_pixels 3136, max_pixels 1003520, patch 14, temporal patch 2, merge 2); ``min_pixels`` /
    ``max_pixels`` override ``size``'s ``shortest_edge`` / ``longest_edge``, as transformers'."""

    def __init__(self, use_pillow=None, **config):
        cfg = dict(do_resize=True, resample=BICUBIC, do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
                   image_mean=OPENAI_CLIP[0], image_std=OPENAI_CLIP[1], do_convert_rgb=True, patch_size=14,
                   temporal_patch_size=2, merge_size=2)
        cfg.update({k: v for k, v in config.items() if v is not None})
        super().__init__("ViTImageProcessor", use_pillow=use_pillow,
                         **{k: cfg[k] for k in ("do_resize", "resample", "do_rescale", "rescale_factor",
                                                "do_normalize", "image_mean", "image_std", "do_convert_rgb")})
        size = dict(cfg.get("size") or {})
        if not isinstance(cfg.get("size", {}), dict):
            raise ValueError(f"Qwen2VLImageProcessor: size must be a dict with shortest_edge and longest_edge, got "
                             f"{cfg['size']!r}")
        self.min_pixels = _positive_int(cfg.get("min_pixels", size.get("shortest_edge", 56 * 56)), "min_pixels")
        self.max_pixels = _positive_int(cfg.get("max_pixels", size.get("longest_edge", 28 * 28 * 1280)),
                                        "max_pixels")
        # no edge-based ``size`` (min / max pixels bound the resize instead), so the checks that read a size as
        # edges (the server's resized-area check) do not apply it
        self.kind, self.size = "Qwen2VLImageProcessor", None
        self.patch_size = _positive_int(cfg["patch_size"], "patch_size")
        self.temporal_patch_size = _positive_int(cfg["temporal_patch_size"], "temporal_patch_size")
        self.merge_size = _positive_int(cfg["merge_size"], "merge_size")

    def __repr__(self) -> str:
        return (f"Qwen2VLImageProcessor(min_pixels={self.min_pixels}, max_pixels={self.max_pixels}, "
                f"patch_size={self.patch_size}, merge_size={self.merge_size}, resample={self.resample})")

    def patches(self, image, i: int = 0) -> Tuple[np.ndarray, Tuple[int, int, int]]:
        """One image's (rows * columns, C * T * P * P) float32 patches and its (1, rows, columns) grid."""
        x = self._array(image, i)
        p, m, t = self.patch_size, self.merge_size, self.temporal_patch_size
        if self.do_resize:
            x = resize_uint8(x, *smart_resize(x.shape[0], x.shape[1], p * m, self.min_pixels, self.max_pixels),
                             resample=self.resample, use_pillow=self.use_pillow)
        H, W = x.shape[:2]
        if H % (p * m) or W % (p * m):
            raise ValueError(f"Qwen2VLImageProcessor: images[{i}] is {H}x{W}: without do_resize its sides must be "
                             f"multiples of patch_size * merge_size ({p * m})")
        x = self.to_float(x)  # (C, H, W)
        C, gh, gw = x.shape[0], H // p, W // p
        x = x.reshape(C, gh // m, m, p, gw // m, m, p).transpose(1, 4, 2, 5, 0, 3, 6)  # (gh/m, gw/m, m, m, C, p, p)
        x = np.broadcast_to(x[:, :, :, :, :, None], (*x.shape[:5], t, p, p))
        return np.ascontiguousarray(x.reshape(gh * gw, C * t * p * p), np.float32), (1, gh, gw)

    def __call__(self, images) -> Dict[str, np.ndarray]:
        stacked = isinstance(images, np.ndarray) and images.ndim == 4
        batch = list(images) if isinstance(images, (list, tuple)) or stacked else [images]
        if not batch:
            raise ValueError("Qwen2VLImageProcessor: images must hold at least one image")
        done = [self.patches(im, i) for i, im in enumerate(batch)]
        return {"pixel_values": np.concatenate([x for x, _ in done]),
                "image_grid_thw": np.array([grid for _, grid in done], np.int64)}
