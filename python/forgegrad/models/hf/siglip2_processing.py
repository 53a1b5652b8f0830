"""SigLIP 2's NaFlex image preprocessing (transformers' ``Siglip2ImageProcessor``) in numpy: each image resized,
keeping its aspect ratio, to the largest multiple of ``patch_size`` on each side whose patch count is at most
``max_num_patches`` (transformers' binary search over the scale, ``get_image_size_for_max_num_patches``), rescaled
and normalized as image_processing.py's processors (Pillow's resize, bilinear by default), cut into patches (row-major,
each patch's pixels in (row, column, channel) order) and zero-padded to ``max_num_patches`` places.

``load_image_processor(DIR)`` returns it for a ``preprocessor_config.json`` naming ``Siglip2ImageProcessor`` (or its
Fast / Pil variants).
"""
from __future__ import annotations

import math
from typing import Dict, Tuple

import numpy as np

from .image_processing import BILINEAR, IMAGENET_STANDARD, ImageProcessor, resize_uint8

__all__ = ["Siglip2ImageProcessor", "size_for_max_patches", "settings"]

_KEYS = ("do_resize", "resample", "do_rescale", "rescale_factor", "do_normalize", "image_mean", "image_std",
         "do_convert_rgb", "patch_size", "max_num_patches")


def settings(cfg: dict) -> dict:
    """The keys of a preprocessor_config.json this processor reads (null ones left to the defaults)."""
    return {k: cfg[k] for k in _KEYS if cfg.get(k) is not None}


def size_for_max_patches(height: int, width: int, patch: int, max_patches: int,
                         eps: float = 1e-5) -> Tuple[int, int]:
    """(target height, target width): multiples of ``patch`` (at least one) of the image scaled by the largest scale
    whose patch count stays within ``max_patches``, found by transformers' bisection of the scale over
    [eps / 10, 100]."""
    def scaled(scale: float, size: int) -> int:
        return int(max(patch, math.ceil(size * scale / patch) * patch))

    lo, hi = eps / 10, 100.0
    while hi - lo >= eps:
        mid = (lo + hi) / 2
        if (scaled(mid, height) / patch) * (scaled(mid, width) / patch) <= max_patches:
            lo = mid
        else:
            hi = mid
    return scaled(lo, height), scaled(lo, width)


def _positive_int(value, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"Siglip2ImageProcessor: {key} must be a positive int, got {value!r}")
    return value


class Siglip2ImageProcessor(ImageProcessor):
    """``processor(images) -> {"pixel_values": (B, max_num_patches, patch * patch * 3) float32,
    "pixel_attention_mask": (B, max_num_patches) int32, "spatial_shapes": (B, 2) int64}`` for one image or a list
    (of any sizes): numpy uint8 ``(H, W, 3)`` arrays or PIL images (``ImageProcessor``'s inputs). Settings are
    ``preprocessor_config.json``'s, over transformers' defaults (bilinear, mean and std 0.5, patch 16, 256
    patches)."""

    def __init__(self, use_pillow=None, **config):
        cfg = dict(do_resize=True, resample=BILINEAR, do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
                   image_mean=IMAGENET_STANDARD[0], image_std=IMAGENET_STANDARD[1], do_convert_rgb=False,
                   patch_size=16, max_num_patches=256)
        cfg.update({k: v for k, v in config.items() if v is not None})
        super().__init__("ViTImageProcessor", use_pillow=use_pillow,
                         **{k: cfg[k] for k in ("do_resize", "resample", "do_rescale", "rescale_factor",
                                                "do_normalize", "image_mean", "image_std", "do_convert_rgb")})
        self.kind, self.size = "Siglip2ImageProcessor", None
        self.patch_size = _positive_int(cfg["patch_size"], "patch_size")
        self.max_num_patches = _positive_int(cfg["max_num_patches"], "max_num_patches")

    def __repr__(self) -> str:
        return (f"Siglip2ImageProcessor(patch_size={self.patch_size}, max_num_patches={self.max_num_patches}, "
                f"resample={self.resample})")

    def patches(self, image, i: int = 0) -> Tuple[np.ndarray, Tuple[int, int]]:
        """One image's (rows * columns, patch * patch * C) float32 patches and its (rows, columns) grid."""
        x = self._array(image, i)
        p = self.patch_size
        if self.do_resize:
            x = resize_uint8(x, *size_for_max_patches(x.shape[0], x.shape[1], p, self.max_num_patches),
                             resample=self.resample, use_pillow=self.use_pillow)
        H, W = x.shape[:2]
        rows, cols = H // p, W // p
        if rows * cols == 0 or rows * cols > self.max_num_patches or H % p or W % p:
            raise ValueError(f"Siglip2ImageProcessor: images[{i}] is {H}x{W}: without do_resize its sides must be "
                             f"multiples of patch_size {p} holding at most max_num_patches {self.max_num_patches} "
                             "patches")
        x = self.to_float(x)  # (C, H, W)
        C = x.shape[0]
        x = x.reshape(C, rows, p, cols, p).transpose(1, 3, 2, 4, 0).reshape(rows * cols, p * p * C)
        return x, (rows, cols)

    def __call__(self, images) -> Dict[str, np.ndarray]:
        stacked = isinstance(images, np.ndarray) and images.ndim == 4
        batch = list(images) if isinstance(images, (list, tuple)) or stacked else [images]
        if not batch:
            raise ValueError("Siglip2ImageProcessor: images must hold at least one image")
        done = [self.patches(im, i) for i, im in enumerate(batch)]
        width = done[0][0].shape[1]
        pixels = np.zeros((len(batch), self.max_num_patches, width), np.float32)
        mask = np.zeros((len(batch), self.max_num_patches), np.int32)
        for b, (x, _) in enumerate(done):
            pixels[b, :len(x)], mask[b, :len(x)] = x, 1
        shapes = np.array([grid for _, grid in done], np.int64)
        return {"pixel_values": pixels, "pixel_attention_mask": mask, "spatial_shapes": shapes}
