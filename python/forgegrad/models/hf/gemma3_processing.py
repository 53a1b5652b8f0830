"""Gemma 3's image processor (transformers' ``Gemma3ImageProcessor``): SigLIP's steps with bilinear resizing, plus
pan-and-scan. With ``do_pan_and_scan`` an image whose longer side is at least ``pan_and_scan_min_ratio_to_activate``
times its shorter one is also cut into 2..``pan_and_scan_max_num_crops`` crops along the longer side (about as many
as the aspect ratio, rounded half up, but none narrower than ``pan_and_scan_min_crop_size``; no crops at all where
they would be), left to right or top to bottom, each ``ceil(side / n)`` wide (the last one what is left). The
original image and then its crops are each resized and normalized like any image: ``pixel_values`` holds
``1 + num_crops[i]`` rows per image, in the images' order, and ``num_crops`` (one int per image) says how many.

The settings come from ``preprocessor_config.json`` (the released checkpoints write them as null: off) and may be
given per call (``processor(images, do_pan_and_scan=True)``). Settings left null take the defaults of transformers'
``Gemma3Processor`` (off; 256 px, 4 crops, ratio 1.2). transformers' own ``Gemma3Processor`` (5.24) passes those
defaults to its image processor on every call, so it ignores the config's pan-and-scan keys (its
``Gemma3ImageProcessor`` alone reads them); forgegrad reads them, so a checkpoint that turns pan-and-scan on gets it
in ``forgegrad generate --image`` and the server; per call the two agree.
"""
from __future__ import annotations

import math
import numbers
from typing import Dict, List

import numpy as np

from .image_processing import ImageProcessor, _output_size, resize_uint8

__all__ = ["Gemma3ImageProcessor", "pan_and_scan", "PAN_AND_SCAN_DEFAULTS"]

# transformers' Gemma3Processor.images_kwargs: what a null (or missing) setting means
PAN_AND_SCAN_DEFAULTS = {"do_pan_and_scan": False, "pan_and_scan_min_crop_size": 256,
                         "pan_and_scan_max_num_crops": 4, "pan_and_scan_min_ratio_to_activate": 1.2}


def _checked(settings: dict, who: str) -> dict:
    """The pan-and-scan settings with clear ValueErrors for bad ones (None: the default)."""
    out = dict(PAN_AND_SCAN_DEFAULTS)
    out.update({k: v for k, v in settings.items() if v is not None})
    if not isinstance(out["do_pan_and_scan"], (bool, np.bool_)):
        raise ValueError(f"{who}: do_pan_and_scan must be true or false, got {out['do_pan_and_scan']!r}")
    out["do_pan_and_scan"] = bool(out["do_pan_and_scan"])
    for key, least in (("pan_and_scan_min_crop_size", "a positive number of pixels"),
                       ("pan_and_scan_max_num_crops", "a positive number of crops")):
        v = out[key]
        whole = isinstance(v, numbers.Integral) or (isinstance(v, float) and v.is_integer())
        if isinstance(v, (bool, np.bool_)) or not whole or v <= 0:
            raise ValueError(f"{who}: {key} must be {least} (an int >= 1), got {v!r}")
        out[key] = int(v)
    ratio = out["pan_and_scan_min_ratio_to_activate"]
    if isinstance(ratio, (bool, np.bool_)) or not isinstance(ratio, numbers.Real) or not math.isfinite(ratio) \
            or ratio <= 0:
        raise ValueError(f"{who}: pan_and_scan_min_ratio_to_activate must be a positive finite number (the aspect "
                         f"ratio, longer side / shorter side, from which images are cropped), got {ratio!r}")
    return out


def pan_and_scan(image: np.ndarray, min_crop_size: int, max_num_crops: int, min_ratio_to_activate: float
                 ) -> List[np.ndarray]:
    """An (H, W, C) image's pan-and-scan crops (views), as transformers' ``Gemma3ImageProcessor.pan_and_scan``
    computes them (in Python's float arithmetic, as it does); [] where the image is not cropped."""
    height, width = image.shape[:2]
    long_side, short_side = (width, height) if width >= height else (height, width)
    if long_side / short_side < min_ratio_to_activate:  # not elongated enough
        return []
    n = int(math.floor(long_side / short_side + 0.5))  # about the aspect ratio, half rounded up
    n = min(int(math.floor(long_side / min_crop_size)), n)  # but crops at least min_crop_size long
    n = min(max_num_crops, max(2, n))
    num_w, num_h = (n, 1) if width >= height else (1, n)
    crop_w, crop_h = int(math.ceil(width / num_w)), int(math.ceil(height / num_h))
    if min(crop_w, crop_h) < min_crop_size:
        return []
    return [image[top:top + crop_h, left:left + crop_w]
            for top in range(0, crop_h * num_h, crop_h) for left in range(0, crop_w * num_w, crop_w)]


class Gemma3ImageProcessor(ImageProcessor):
    """``processor(images, **pan_and_scan_settings) -> {"pixel_values": (N, 3, height, width) float32,
    "num_crops": (B,) int64}``: ``ImageProcessor`` with Gemma 3's defaults and pan-and-scan (module docstring).

    Args:
        use_pillow: how to resize (``resize_uint8``'s argument).
        do_pan_and_scan, pan_and_scan_min_crop_size, pan_and_scan_max_num_crops,
        pan_and_scan_min_ratio_to_activate: the crops' settings (None: transformers' Gemma3Processor's default).
        **settings: the other ``preprocessor_config.json`` keys, as ``ImageProcessor`` reads them.
    """

    def __init__(self, use_pillow=None, do_pan_and_scan=None, pan_and_scan_min_crop_size=None,
                 pan_and_scan_max_num_crops=None, pan_and_scan_min_ratio_to_activate=None, **settings):
        super().__init__("Gemma3ImageProcessor", use_pillow=use_pillow, **settings)
        self.pan_and_scan = _checked(dict(
            do_pan_and_scan=do_pan_and_scan, pan_and_scan_min_crop_size=pan_and_scan_min_crop_size,
            pan_and_scan_max_num_crops=pan_and_scan_max_num_crops,
            pan_and_scan_min_ratio_to_activate=pan_and_scan_min_ratio_to_activate), "Gemma3ImageProcessor")

    def __repr__(self) -> str:
        return f"Gemma3ImageProcessor(size={self.size}, resample={self.resample}, {self.pan_and_scan})"

    def __call__(self, images, do_pan_and_scan=None, pan_and_scan_min_crop_size=None, pan_and_scan_max_num_crops=None,
                 pan_and_scan_min_ratio_to_activate=None) -> Dict[str, np.ndarray]:
        given = dict(do_pan_and_scan=do_pan_and_scan, pan_and_scan_min_crop_size=pan_and_scan_min_crop_size,
                     pan_and_scan_max_num_crops=pan_and_scan_max_num_crops,
                     pan_and_scan_min_ratio_to_activate=pan_and_scan_min_ratio_to_activate)
        pas = _checked({**self.pan_and_scan, **{k: v for k, v in given.items() if v is not None}},
                       "Gemma3ImageProcessor")
        stacked = isinstance(images, np.ndarray) and images.ndim == 4
        batch = list(images) if isinstance(images, (list, tuple)) or stacked else [images]
        if not batch:
            raise ValueError("Gemma3ImageProcessor: images must hold at least one image")
        out, num_crops = [], []
        for i, image in enumerate(batch):
            x = self._array(image, i)
            crops = pan_and_scan(x, pas["pan_and_scan_min_crop_size"], pas["pan_and_scan_max_num_crops"],
                                 pas["pan_and_scan_min_ratio_to_activate"]) if pas["do_pan_and_scan"] else []
            num_crops.append(len(crops))
            for one in [x] + crops:  # the original first, then its crops, each processed as an image
                if self.do_resize:
                    one = resize_uint8(one, *_output_size(one.shape[0], one.shape[1], self.size),
                                       resample=self.resample, use_pillow=self.use_pillow)
                out.append(self.to_float(one))
        shapes = {o.shape for o in out}
        if len(shapes) > 1:
            raise ValueError(f"Gemma3ImageProcessor: the images came out in different sizes {sorted(shapes)}; a "
                             "batch needs do_resize with a size (height and width)")
        return {"pixel_values": np.ascontiguousarray(np.stack(out)), "num_crops": np.array(num_crops, np.int64)}
