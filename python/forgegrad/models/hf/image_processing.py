"""Image preprocessing of Hugging Face vision checkpoints (transformers' ``ViTImageProcessor``,
``DeiTImageProcessor``, ``CLIPImageProcessor``, ``SiglipImageProcessor``, ``BitImageProcessor``: DINOv2's,
``BeitImageProcessor``, ``DPTImageProcessor``: DPT's and Depth Anything's; SigLIP 2's ``Siglip2ImageProcessor`` in
siglip2_processing.py; Qwen2-VL's ``Qwen2VLImageProcessor`` in qwen2_vl_processing.py; LLaVA-NeXT's
``LlavaNextImageProcessor`` in llava_next_processing.py; Gemma 3's ``Gemma3ImageProcessor`` with its pan-and-scan
crops in gemma3_processing.py) in numpy (a BEiT or DPT
processor's ``do_reduce_labels`` concerns segmentation maps: not read). DPT's resize fits ``size`` (height and
width) keeping the aspect ratio where ``keep_aspect_ratio`` (the side that changes least fits), each side rounded
to a multiple of ``ensure_multiple_of``; with ``do_pad`` the normalized image is zero-padded to multiples of
``size_divisor`` (centered). ``post_process_depth_estimation`` resizes a depth model's prediction to the images' sizes,
``post_process_semantic_segmentation`` a segmentation model's logits before their argmax.

``load_image_processor(DIR)`` reads the checkpoint's ``preprocessor_config.json``; the processor turns images
(numpy ``(H, W, C)`` or ``(H, W)`` uint8 arrays, or PIL images when Pillow is installed) into
``{"pixel_values": (B, 3, height, width) float32}`` by the steps transformers runs, in its order: convert to RGB
(``do_convert_rgb``: gray repeated, RGBA composited onto white), resize (``size``: ``height``/``width``, or
``shortest_edge`` keeping the aspect ratio, optionally capped by ``longest_edge``), center crop (``crop_size``,
zero-padded when the image is smaller), rescale (``rescale_factor``, in float64 then float32) and normalize
(``(x - mean) / std`` in float32).

The resize is Pillow's: with Pillow installed (the ``vision`` extra) it is Pillow's own ``Image.resize``, the call
transformers' PIL backend makes (what transformers runs when torchvision is not installed, or given
``backend="pil"``), so the pixel values equal transformers' bit for bit. Without Pillow, ``resize_uint8`` runs
Pillow's resampling reimplemented in numpy: the same filters (nearest, box, bilinear, hamming, bicubic with a =
-0.5, lanczos), the support widened by the downscale factor (antialiasing), coefficients rounded to 22-bit fixed
point, two passes each rounded to uint8, the sums exact in float64, in Pillow 13's order: the vertical pass first
where the height shrinks by more than twice as many pixels as the width does, else the horizontal one (tested equal,
every filter, any sizes). Pillow before 13 always runs the horizontal pass first: where the orders differ, the
rounded intermediate image moves pixels (measured on random noise: by up to 10 levels of 255 with bicubic, 36 with
lanczos, whose overshoots are clipped in between; 1 with bilinear, box or hamming). transformers' torchvision
backend (its default when torchvision is installed) resizes with torch's antialiased interpolation, which differs
from Pillow's either way: on four noisy 300-640 px pictures resized to about 224, torch's uint8 path moved under 1%
of pixels by 1-2 levels, its float path (then rounded) about 20% by up to 8 levels (bicubic upscaling).
"""
from __future__ import annotations

import json
import math
import numbers
import os
from typing import Dict, List, Optional, Tuple

import numpy as np

__all__ = ["ImageProcessor", "load_image_processor", "resize_uint8", "to_rgb", "PROCESSORS"]

NEAREST, LANCZOS, BILINEAR, BICUBIC, BOX, HAMMING = 0, 1, 2, 3, 4, 5  # PIL's Image.Resampling values
IMAGENET_STANDARD = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
OPENAI_CLIP = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))

# each processor's defaults for the keys its preprocessor_config.json leaves out (transformers' class attributes);
# default_to_square: how an int ``size`` reads (a square, or the shortest edge)
PROCESSORS: Dict[str, dict] = {
    "ViTImageProcessor": dict(resample=BILINEAR, image_mean=IMAGENET_STANDARD[0], image_std=IMAGENET_STANDARD[1],
                              size={"height": 224, "width": 224}, do_resize=True, do_rescale=True,
                              do_normalize=True, do_center_crop=False, crop_size=None, do_convert_rgb=False,
                              default_to_square=True),
    "DeiTImageProcessor": dict(resample=BICUBIC, image_mean=IMAGENET_STANDARD[0], image_std=IMAGENET_STANDARD[1],
                               size={"height": 256, "width": 256}, crop_size={"height": 224, "width": 224},
                               do_resize=True, do_center_crop=True, do_rescale=True, do_normalize=True,
                               do_convert_rgb=False, default_to_square=True),
    "CLIPImageProcessor": dict(resample=BICUBIC, image_mean=OPENAI_CLIP[0], image_std=OPENAI_CLIP[1],
                               size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224},
                               do_resize=True, do_center_crop=True, do_rescale=True, do_normalize=True,
                               do_convert_rgb=True, default_to_square=False),
    "SiglipImageProcessor": dict(resample=BICUBIC, image_mean=IMAGENET_STANDARD[0], image_std=IMAGENET_STANDARD[1],
                                 size={"height": 224, "width": 224}, do_resize=True, do_rescale=True,
                                 do_normalize=True, do_center_crop=False, crop_size=None, do_convert_rgb=True,
                                 default_to_square=False),
    # Gemma 3's image-text model: SigLIP's settings with bilinear resizing, an int size a square (its pan-and-scan
    # crops: gemma3_processing.py)
    "Gemma3ImageProcessor": dict(resample=BILINEAR, image_mean=IMAGENET_STANDARD[0], image_std=IMAGENET_STANDARD[1],
                                 size={"height": 224, "width": 224}, do_resize=True, do_rescale=True,
                                 do_normalize=True, do_center_crop=False, crop_size=None, do_convert_rgb=True,
                                 default_to_square=True),
    # BEiT's (transformers' class attributes; its checkpoints give size 224 and bilinear)
    "BeitImageProcessor": dict(resample=BICUBIC, image_mean=IMAGENET_STANDARD[0], image_std=IMAGENET_STANDARD[1],
                               size={"height": 224, "width": 224}, crop_size={"height": 224, "width": 224},
                               do_resize=True, do_center_crop=False, do_rescale=True, do_normalize=True,
                               do_convert_rgb=False, default_to_square=True),
    # DINOv2's checkpoints name it, their preprocessor_config.json giving shortest edge 256, a 224 crop, ImageNet's
    # mean and std; its own defaults are CLIP's
    "BitImageProcessor": dict(resample=BICUBIC, image_mean=OPENAI_CLIP[0], image_std=OPENAI_CLIP[1],
                              size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224},
                              do_resize=True, do_center_crop=True, do_rescale=True, do_normalize=True,
                              do_convert_rgb=True, default_to_square=False),
    # DPT's and Depth Anything's (whose checkpoints name it with keep_aspect_ratio, ensure_multiple_of 14, 518 px,
    # ImageNet's mean and std): the size fitted by _dpt_output_size, then optionally padded (do_pad, size_divisor)
    "DPTImageProcessor": dict(resample=BICUBIC, image_mean=IMAGENET_STANDARD[0], image_std=IMAGENET_STANDARD[1],
                              size={"height": 384, "width": 384}, do_resize=True, do_rescale=True, do_normalize=True,
                              do_center_crop=False, crop_size=None, do_convert_rgb=False, default_to_square=True,
                              keep_aspect_ratio=False, ensure_multiple_of=1, do_pad=False, size_divisor=None),
}
# older configs name a feature extractor; the fast and PIL variants share the slow one's settings
_ALIASES = {"ViTFeatureExtractor": "ViTImageProcessor", "DeiTFeatureExtractor": "DeiTImageProcessor",
            "CLIPFeatureExtractor": "CLIPImageProcessor", "BeitFeatureExtractor": "BeitImageProcessor",
            "DPTFeatureExtractor": "DPTImageProcessor"}


# --- Pillow's resampling (libImaging/Resample.c), in numpy ---
def _bicubic(x):
    a = -0.5
    x = np.abs(x)
    return np.where(x < 1.0, ((a + 2.0) * x - (a + 3.0)) * x * x + 1,
                    np.where(x < 2.0, (((x - 5) * x + 8) * x - 4) * a, 0.0))


def _sinc(x):
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(x == 0.0, 1.0, np.sin(x * math.pi) / (x * math.pi))


_F32_054, _F32_046 = float(np.float32(0.54)), float(np.float32(0.46))  # Pillow writes 0.54f, 0.46f


def _hamming(x):
    x = np.abs(x)
    with np.errstate(invalid="ignore", divide="ignore"):
        xp = x * math.pi
        w = np.sin(xp) / xp * (_F32_054 + _F32_046 * np.cos(xp))
    return np.where(x == 0.0, 1.0, np.where(x >= 1.0, 0.0, w))


_FILTERS = {  # resample -> (filter, support)
    BOX: (lambda x: np.where((x > -0.5) & (x <= 0.5), 1.0, 0.0), 0.5),
    BILINEAR: (lambda x: np.maximum(1.0 - np.abs(x), 0.0), 1.0),
    HAMMING: (_hamming, 1.0),
    BICUBIC: (_bicubic, 2.0),
    LANCZOS: (lambda x: np.where((x >= -3.0) & (x < 3.0), _sinc(x) * _sinc(x / 3), 0.0), 3.0),
}
_PRECISION_BITS = 32 - 8 - 2


def _weights(in_size: int, out_size: int, resample: int) -> Tuple[np.ndarray, np.ndarray]:
    """Pillow's fixed-point coefficients (integers, as float64) for one axis: (taps, weights), both (out_size,
    ksize): output i is the sum over k of input[taps[i, k]] * weights[i, k] (unused taps: index 0, weight 0)."""
    filt, support = _FILTERS[resample]
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = support * filterscale
    centers = (np.arange(out_size) + 0.5) * scale
    xmin = np.maximum((centers - support + 0.5).astype(np.int64), 0)
    xmax = np.minimum((centers + support + 0.5).astype(np.int64), in_size)
    ksize = int(math.ceil(support)) * 2 + 1
    taps = xmin[:, None] + np.arange(ksize)[None, :]  # (out, ksize)
    used = taps < xmax[:, None]
    w = np.where(used, filt((taps - centers[:, None] + 0.5) * (1.0 / filterscale)), 0.0)
    total = np.cumsum(w, axis=1)[:, -1:]  # summed left to right, as Pillow's loop
    w = np.where(total != 0.0, w / np.where(total != 0.0, total, 1.0), w)
    # C's (int)(0.5 + w * 2^22) (negative: (int)(-0.5 + ...)): round half away from zero, then truncate
    fixed = np.trunc(w * (1 << _PRECISION_BITS) + np.where(w < 0, -0.5, 0.5))
    return np.where(used, taps, 0), np.where(used, fixed, 0.0)


def _resample_axis(x: np.ndarray, in_size: int, out_size: int, resample: int, axis: int) -> np.ndarray:
    """One pass of Pillow's resize along ``axis`` (0: rows, 1: columns) of an (H, W, C) uint8 image, rounded to
    uint8. The sums of 8-bit pixels times 23-bit weights are integers below 2^35: exact in float64 in any order."""
    taps, weights = _weights(in_size, out_size, resample)
    shape = (-1, 1, 1) if axis == 0 else (1, -1, 1)
    acc = np.full(x.shape[:axis] + (out_size,) + x.shape[axis + 1:], float(1 << (_PRECISION_BITS - 1)))
    for k in range(taps.shape[1]):
        acc += np.take(x, taps[:, k], axis=axis) * weights[:, k].reshape(shape)
    return _clip8(acc)


def _nearest(in_size: int, out_size: int) -> np.ndarray:
    """Pillow's nearest source index of each output pixel: a running sum from scale / 2 in steps of scale."""
    scale = in_size / out_size
    steps = np.full(out_size, scale)
    steps[0] = scale * 0.5
    return np.minimum(np.cumsum(steps).astype(np.int64), in_size - 1)


def _clip8(acc: np.ndarray) -> np.ndarray:
    """Pillow's clip8 of the fixed-point sums (rounding bias included): >> 22, saturated to 0..255."""
    return np.clip(np.floor(acc / (1 << _PRECISION_BITS)), 0, 255).astype(np.uint8)


def _pillow():
    try:
        from PIL import Image
    except ImportError:
        return None
    return Image


def resize_uint8(image: np.ndarray, height: int, width: int, resample: int = BILINEAR,
                 use_pillow: Optional[bool] = None) -> np.ndarray:
    """An (H, W, C) uint8 image (C 1 or 3) resized to (height, width, C) as Pillow's ``Image.resize`` does.
    ``use_pillow``: None uses Pillow where it is installed, else the numpy reimplementation (two passes, each
    rounded to uint8, in Pillow 13's order); True requires Pillow; False always runs numpy."""
    if resample not in _FILTERS and resample != NEAREST:
        raise ValueError(f"resize_uint8: resample must be one of 0..5 (PIL's resampling filters), got {resample!r}")
    # Pillow resizes RGBA (and LA) with the alpha premultiplied, which the numpy passes do not: refused on both paths
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] not in (1, 3):
        raise ValueError(f"resize_uint8: image must be a uint8 array (H, W, 1) or (H, W, 3), got "
                         f"{getattr(image, 'dtype', type(image).__name__)} {getattr(image, 'shape', '')}")
    if height <= 0 or width <= 0 or 0 in image.shape:
        raise ValueError(f"resize_uint8: sizes must be positive, got {image.shape[:2]} -> {(height, width)}")
    H, W = image.shape[:2]
    if (H, W) == (height, width):
        return image
    pil = _pillow() if use_pillow is not False else None
    if use_pillow and pil is None:
        raise ImportError("resize_uint8: use_pillow=True needs Pillow (pip install 'forgegrad[vision]')")
    if pil is not None:  # transformers' to_pil_image: one channel as mode L, three as RGB
        im = pil.fromarray(np.ascontiguousarray(image[..., 0] if image.shape[-1] == 1 else image))
        return np.array(im.resize((width, height), resample=resample)).reshape(height, width, image.shape[-1])
    if resample == NEAREST:  # Pillow's affine nearest: source pixel floor of scale / 2 + i * scale, summed
        rows, cols = _nearest(H, height), _nearest(W, width)
        return np.ascontiguousarray(image[rows][:, cols])

    def horizontal(x):
        return _resample_axis(x, W, width, resample, axis=1)

    def vertical(x):
        return _resample_axis(x, H, height, resample, axis=0)

    passes = ([horizontal] if width != W else []) + ([vertical] if height != H else [])
    if height < H and H - height > 2 * (W - width):  # Pillow 13 (ImagingResampleInner): a much shorter image is
        passes.reverse()  # resized vertically first, fewer rows for the horizontal pass
    out = image
    for one in passes:
        out = one(out)
    return np.ascontiguousarray(out)


# --- the processor ---
def _size_dict(value, key: str, default_to_square: bool) -> Optional[Dict[str, int]]:
    """A ``size``/``crop_size`` entry as transformers' get_size_dict reads it (an int, [h, w], or a dict)."""
    if value is None:
        return None
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = {"height": int(value), "width": int(value)} if default_to_square else {"shortest_edge": int(value)}
    elif isinstance(value, (list, tuple)) and len(value) == 2:
        value = {"height": value[0], "width": value[1]}
    if not isinstance(value, dict):
        raise ValueError(f"load_image_processor: {key} must be an int, [height, width] or a dict, got {value!r}")
    keys = set(value)
    if keys not in ({"height", "width"}, {"shortest_edge"}, {"shortest_edge", "longest_edge"}):
        raise ValueError(f"load_image_processor: {key} must have the keys height and width, or shortest_edge "
                         f"(and optionally longest_edge), got {sorted(keys)}")
    for k, v in value.items():
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v <= 0:
            raise ValueError(f"load_image_processor: {key}[{k!r}] must be a positive int, got {v!r}")
    return {k: int(v) for k, v in value.items()}


def _output_size(h: int, w: int, size: Dict[str, int]) -> Tuple[int, int]:
    """The resized (height, width): transformers' get_resize_output_image_size / get_size_with_aspect_ratio."""
    if "height" in size:
        return size["height"], size["width"]
    short_target = size["shortest_edge"]
    if "longest_edge" not in size:
        short, long = (w, h) if w <= h else (h, w)
        new_short, new_long = short_target, int(short_target * long / short)
        return (new_long, new_short) if w <= h else (new_short, new_long)
    max_size, raw = size["longest_edge"], None
    lo, hi = float(min(h, w)), float(max(h, w))
    if hi / lo * short_target > max_size:
        raw = max_size * lo / hi
        short_target = int(round(raw))
    if (h <= w and h == short_target) or (w <= h and w == short_target):
        return h, w
    if w < h:
        return int((raw if raw is not None else short_target) * h / w), short_target
    return short_target, int((raw if raw is not None else short_target) * w / h)


def _dpt_output_size(h: int, w: int, height: int, width: int, keep_aspect_ratio: bool,
                     multiple: int) -> Tuple[int, int]:
    """DPT's resized (height, width) (transformers' dpt get_resize_output_image_size): with ``keep_aspect_ratio``
    both sides scaled by the factor nearer 1 (the side that changes least fits its target), each side then rounded to
    a multiple of ``multiple`` (Python's round, half to even)."""
    scale_h, scale_w = height / h, width / w
    if keep_aspect_ratio:
        if abs(1 - scale_w) < abs(1 - scale_h):
            scale_h = scale_w
        else:
            scale_w = scale_h

    def constrain(v: float) -> int:
        x = round(v / multiple) * multiple
        return x if x > 0 else math.ceil(v / multiple) * multiple

    return constrain(scale_h * h), constrain(scale_w * w)


def _center_pad(x: np.ndarray, divisor: int) -> np.ndarray:
    """(C, H, W) zero-padded to multiples of ``divisor``, the odd pixel at the bottom / right (DPT's pad_image)."""
    pads = [(0, 0)]
    for n in x.shape[1:]:
        extra = math.ceil(n / divisor) * divisor - n
        pads.append((extra // 2, extra - extra // 2))
    return np.pad(x, pads)


def _center_crop(image: np.ndarray, ch: int, cw: int) -> np.ndarray:
    """(H, W, C) -> (ch, cw, C), zero-padded around an image smaller than the crop (transformers' center_crop)."""
    h, w = image.shape[:2]
    top, left = (h - ch) // 2, (w - cw) // 2
    if top >= 0 and left >= 0:
        return image[top:top + ch, left:left + cw]
    nh, nw = max(ch, h), max(cw, w)
    padded = np.zeros((nh, nw) + image.shape[2:], image.dtype)
    tp, lp = math.ceil((nh - h) / 2), math.ceil((nw - w) / 2)
    padded[tp:tp + h, lp:lp + w] = image
    top, left = top + tp, left + lp
    return padded[max(0, top):min(nh, top + ch), max(0, left):min(nw, left + cw)]


def to_rgb(image: np.ndarray) -> np.ndarray:
    """(H, W, C) or (H, W) uint8 with C in 1, 3, 4 -> (H, W, 3): gray repeated, RGBA composited onto white and
    rounded (transformers' convert_to_rgb on arrays)."""
    if image.ndim == 2:
        image = image[..., None]
    c = image.shape[-1]
    if c == 1:
        return np.repeat(image, 3, axis=-1)
    if c == 4:
        alpha = image[..., 3:4] / 255
        return np.round(alpha * image[..., :3] + (1 - alpha) * 255).astype(np.uint8)
    return image


def _pil_array(image, convert_rgb: bool) -> np.ndarray:
    """A PIL image's pixels as transformers reads them (``convert_to_rgb`` with PIL's own conversions)."""
    if not convert_rgb:
        return np.array(image)
    from PIL import Image
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.array(Image.alpha_composite(white, rgba).convert("RGB"))
    return np.array(image.convert("RGB"))


class ImageProcessor:
    """``processor(images) -> {"pixel_values": (B, 3, height, width) float32}`` for one image, a list of them or a
    stacked (B, H, W, C) array: numpy uint8 arrays ``(H, W, 3)`` (``(H, W)``, ``(H, W, 1)`` and ``(H, W, 4)`` too
    where ``do_convert_rgb``) or PIL images. Every image must come out the same size (a fixed ``size``, or a
    ``crop_size``) to be stacked.

    Args:
        kind: the processor's class name (``ViTImageProcessor``, ``DeiTImageProcessor``, ``CLIPImageProcessor``,
            ``SiglipImageProcessor``, ``BitImageProcessor``), which picks the defaults of the settings not given.
        **settings: ``preprocessor_config.json``'s keys (``do_resize``, ``size``, ``resample``, ``do_center_crop``,
            ``crop_size``, ``do_rescale``, ``rescale_factor``, ``do_normalize``, ``image_mean``, ``image_std``,
            ``do_convert_rgb``); others are ignored.
        use_pillow: how to resize (``resize_uint8``'s argument): None, Pillow where it is installed.
    """

    def __init__(self, kind: str = "ViTImageProcessor", use_pillow: Optional[bool] = None, **settings):
        base = _ALIASES.get(kind, kind)
        for suffix in ("Pil", "Fast"):
            base = base[:-len(suffix)] if base.endswith(suffix) and base[:-len(suffix)] in PROCESSORS else base
        if base not in PROCESSORS:
            raise ValueError(f"ImageProcessor: image processor {kind!r} is not supported (supported: "
                             f"{', '.join(PROCESSORS)})")
        self.kind, self.use_pillow = base, use_pillow
        cfg = dict(PROCESSORS[base])
        cfg.update({k: v for k, v in settings.items() if v is not None})
        square = bool(cfg.pop("default_to_square"))
        if base == "CLIPImageProcessor" and cfg.get("use_square_size"):  # Kosmos-2's CLIP processors
            cfg["size"] = _size_dict(cfg["size"], "size", False)["shortest_edge"]
            square = True
        self.do_resize, self.do_center_crop = bool(cfg["do_resize"]), bool(cfg["do_center_crop"])
        self.do_rescale, self.do_normalize = bool(cfg["do_rescale"]), bool(cfg["do_normalize"])
        self.do_convert_rgb = bool(cfg["do_convert_rgb"])
        self.size = _size_dict(cfg["size"], "size", square) if self.do_resize else None
        self.crop_size = _size_dict(cfg["crop_size"], "crop_size", True) if self.do_center_crop else None
        if (self.do_resize and self.size is None) or (self.do_center_crop and self.crop_size is None):
            raise ValueError("ImageProcessor: do_resize needs a size and do_center_crop a crop_size")
        self.resample = cfg["resample"]
        if isinstance(self.resample, bool) or self.resample not in (NEAREST, LANCZOS, BILINEAR, BICUBIC, BOX,
                                                                     HAMMING):
            raise ValueError(f"ImageProcessor: resample must be one of PIL's filters 0..5, got {self.resample!r}")
        self.rescale_factor = float(cfg.get("rescale_factor", 1 / 255))
        self.keep_aspect_ratio = bool(cfg.get("keep_aspect_ratio", False))
        self.ensure_multiple_of = cfg.get("ensure_multiple_of", 1)
        self.do_pad, self.size_divisor = bool(cfg.get("do_pad", False)), cfg.get("size_divisor")
        for key in ("ensure_multiple_of", "size_divisor"):
            v = getattr(self, key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v <= 0):
                raise ValueError(f"ImageProcessor: {key} must be a positive int, got {v!r}")
        if base == "DPTImageProcessor" and self.do_resize and "height" not in self.size:
            raise ValueError(f"ImageProcessor: DPTImageProcessor's size must have height and width, got {self.size}")
        self.image_mean = np.asarray(cfg["image_mean"], np.float32).reshape(-1)
        self.image_std = np.asarray(cfg["image_std"], np.float32).reshape(-1)
        if self.do_normalize and (self.image_mean.size not in (1, 3) or self.image_std.size not in (1, 3)):
            raise ValueError(f"ImageProcessor: image_mean and image_std must give 1 or 3 values, got "
                             f"{cfg['image_mean']!r} and {cfg['image_std']!r}")

    def __repr__(self) -> str:
        return (f"ImageProcessor({self.kind}, size={self.size}, crop_size={self.crop_size}, "
                f"resample={self.resample})")

    def __call__(self, images) -> Dict[str, np.ndarray]:
        stacked = isinstance(images, np.ndarray) and images.ndim == 4  # a batch (B, H, W, C), as transformers reads it
        batch = list(images) if isinstance(images, (list, tuple)) or stacked else [images]
        if not batch:
            raise ValueError("ImageProcessor: images must hold at least one image")
        out = [self.process_one(im, i) for i, im in enumerate(batch)]
        shapes = {o.shape for o in out}
        if len(shapes) > 1:
            raise ValueError(f"ImageProcessor: the images came out in different sizes {sorted(shapes)}; a batch "
                             "needs a fixed size (height and width) or a crop_size")
        return {"pixel_values": np.ascontiguousarray(np.stack(out))}

    def _array(self, image, i: int) -> np.ndarray:
        """Image i as an (H, W, C) uint8 array, converted to RGB where the processor does."""
        if type(image).__module__.startswith("PIL."):
            image = _pil_array(image, self.do_convert_rgb)
        if not isinstance(image, np.ndarray):
            raise TypeError(f"ImageProcessor: images[{i}] must be a numpy uint8 array (H, W, C) or a PIL image, got "
                            f"{type(image).__name__}")
        if image.dtype != np.uint8:  # transformers' PIL backend would scale floats in [0, 1] by 1/255 twice
            hint = " (floats in [0, 1]: pass (x * 255).round().astype(np.uint8))" if image.dtype.kind == "f" else ""
            raise TypeError(f"ImageProcessor: images[{i}] must be uint8 (pixel values 0..255), got "
                            f"{image.dtype}{hint}")
        if image.ndim == 2:
            image = image[..., None]
        if image.ndim != 3 or image.shape[-1] not in (1, 3, 4) or 0 in image.shape:
            hint = (" (channels first? pass image.transpose(1, 2, 0))"
                    if image.ndim == 3 and image.shape[0] in (1, 3, 4) else "")
            raise ValueError(f"ImageProcessor: images[{i}] must have shape (H, W), (H, W, 1), (H, W, 3) or "
                             f"(H, W, 4), got {image.shape}{hint}")
        if self.do_convert_rgb:
            image = to_rgb(image)
        elif image.shape[-1] != 3:
            raise ValueError(f"ImageProcessor: images[{i}] has {image.shape[-1]} channels and this processor's "
                             "do_convert_rgb is off; pass (H, W, 3) RGB")
        return image

    def process_one(self, image, i: int = 0) -> np.ndarray:
        """One image's (3, height, width) float32 pixel values."""
        x = self._array(image, i)
        if self.do_resize:
            if self.kind == "DPTImageProcessor":
                size = _dpt_output_size(x.shape[0], x.shape[1], self.size["height"], self.size["width"],
                                        self.keep_aspect_ratio, self.ensure_multiple_of)
            else:
                size = _output_size(x.shape[0], x.shape[1], self.size)
            x = resize_uint8(x, *size, resample=self.resample, use_pillow=self.use_pillow)
        if self.do_center_crop:
            x = _center_crop(x, self.crop_size["height"], self.crop_size["width"])
        return self.to_float(x)

    def to_float(self, x: np.ndarray) -> np.ndarray:
        """A resized (H, W, C) uint8 image as (C, H, W) float32: rescaled, then normalized, where the processor
        does."""
        x = np.moveaxis(x, -1, 0)  # (C, H, W)
        if self.do_rescale:
            x = (x.astype(np.float64) * self.rescale_factor).astype(np.float32)
        if self.do_normalize:
            x = x.astype(np.float32)
            mean, std = (np.broadcast_to(v, (x.shape[0],))[:, None, None] for v in (self.image_mean, self.image_std))
            x = (x - mean) / std
        if self.do_pad and self.size_divisor is not None:  # after normalizing: the padding is 0 there
            x = _center_pad(x, self.size_divisor)
        return x.astype(np.float32)

    def post_process_depth_estimation(self, predicted_depth, target_sizes=None) -> List[Dict[str, np.ndarray]]:
        """A depth model's ``predicted_depth`` (B, h, w) (or an output holding it) as transformers' processor
        returns it: one ``{"predicted_depth": (height, width) float32}`` per image, resized to ``target_sizes[i]``
        (an image's original (height, width), e.g. ``image.shape[:2]``) by bicubic interpolation (align_corners=False,
        torch's a = -0.75) where given, else as it is."""
        from ...ops.resample import interpolate
        from ...tensor import Tensor
        depth = getattr(predicted_depth, "predicted_depth", predicted_depth)
        depth = np.asarray(depth.numpy() if isinstance(depth, Tensor) else depth, dtype=np.float32)
        if depth.ndim != 3:
            raise ValueError(f"post_process_depth_estimation: predicted_depth must be (batch, height, width), got "
                             f"shape {depth.shape}")
        sizes = [None] * len(depth) if target_sizes is None else list(target_sizes)
        if len(sizes) != len(depth):
            raise ValueError(f"post_process_depth_estimation: target_sizes must give one (height, width) per image "
                             f"({len(depth)}), got {len(sizes)}")
        out = []
        for d, size in zip(depth, sizes):
            if size is not None:
                size = tuple(int(v) for v in size)
                if len(size) != 2 or min(size) <= 0:
                    raise ValueError(f"post_process_depth_estimation: a target size must be a positive (height, "
                                     f"width), got {size}")
                d = interpolate(Tensor._wrap(np.ascontiguousarray(d[None, None])), size=size, mode="bicubic",
                                align_corners=False).numpy()[0, 0]
            out.append({"predicted_depth": d})
        return out

    def post_process_semantic_segmentation(self, logits, target_sizes=None) -> List[np.ndarray]:
        """A segmentation model's ``logits`` (B, num_labels, h, w) (or an output holding them) as transformers'
        processor returns them: one (height, width) int64 map of class ids per image, the logits first resized to
        ``target_sizes[i]`` bilinearly (align_corners=False) where given."""
        from ...ops.resample import interpolate
        from ...tensor import Tensor
        x = getattr(logits, "logits", logits)
        x = np.asarray(x.numpy() if isinstance(x, Tensor) else x, dtype=np.float32)
        if x.ndim != 4:
            raise ValueError(f"post_process_semantic_segmentation: logits must be (batch, num_labels, height, width), "
                             f"got shape {x.shape}")
        sizes = [None] * len(x) if target_sizes is None else list(target_sizes)
        if len(sizes) != len(x):
            raise ValueError(f"post_process_semantic_segmentation: target_sizes must give one (height, width) per "
                             f"image ({len(x)}), got {len(sizes)}")
        out = []
        for one, size in zip(x, sizes):
            if size is not None:
                one = interpolate(Tensor._wrap(np.ascontiguousarray(one[None])), size=tuple(int(v) for v in size),
                                  mode="bilinear", align_corners=False).numpy()[0]
            out.append(one.argmax(axis=0).astype(np.int64))
        return out


def load_image_processor(path_or_dir, use_pillow: Optional[bool] = None) -> ImageProcessor:
    """The image processor of a checkpoint directory (its ``preprocessor_config.json``) or of that file's path
    (``use_pillow``: see ``ImageProcessor``)."""
    path = os.fspath(path_or_dir)
    file = os.path.join(path, "preprocessor_config.json") if os.path.isdir(path) else path
    if not os.path.isfile(file):
        raise FileNotFoundError(f"load_image_processor: no preprocessor_config.json at {path!r}")
    with open(file, encoding="utf-8") as f:
        try:
            cfg = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"load_image_processor: {file!r} is not valid JSON: {e}") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"load_image_processor: {file!r} must hold a JSON object")
    kind = cfg.get("image_processor_type") or cfg.get("feature_extractor_type")
    if not kind:
        raise ValueError(f"load_image_processor: {file!r} names no image_processor_type")
    if kind.startswith("Siglip2ImageProcessor"):
        from .siglip2_processing import Siglip2ImageProcessor, settings
        return Siglip2ImageProcessor(use_pillow=use_pillow, **settings(cfg))
    if kind.startswith("Qwen2VLImageProcessor"):
        from .qwen2_vl_processing import Qwen2VLImageProcessor, settings as qwen2_vl_settings
        return Qwen2VLImageProcessor(use_pillow=use_pillow, **qwen2_vl_settings(cfg))
    if kind.startswith("LlavaNextImageProcessor"):
        from .llava_next_processing import LlavaNextImageProcessor, settings as llava_next_settings
        return LlavaNextImageProcessor(use_pillow=use_pillow, **llava_next_settings(cfg))
    keys = ("do_resize", "size", "resample", "do_center_crop", "crop_size", "do_rescale", "rescale_factor",
            "do_normalize", "image_mean", "image_std", "do_convert_rgb", "use_square_size", "keep_aspect_ratio",
            "ensure_multiple_of", "do_pad", "size_divisor")
    settings = {k: cfg[k] for k in keys if k in cfg}
    if kind.startswith("Gemma3ImageProcessor"):  # with its pan-and-scan settings (gemma3_processing.py)
        from .gemma3_processing import PAN_AND_SCAN_DEFAULTS, Gemma3ImageProcessor
        try:
            return Gemma3ImageProcessor(use_pillow=use_pillow, **settings,
                                        **{k: cfg.get(k) for k in PAN_AND_SCAN_DEFAULTS})
        except ValueError as e:
            raise ValueError(f"load_image_processor: {file!r}: {e}") from None
    return ImageProcessor(kind, use_pillow=use_pillow, **settings)

