"""``forgegrad depth IMAGE --model DIR --out depth.png``: monocular depth estimation with a Depth Anything or DPT
checkpoint directory (as transformers' save_pretrained writes it, with its preprocessor_config.json).

The image is read with Pillow (any format it opens; the vision extra) or from a ``.npy`` file holding an (H, W, 3)
uint8 array, preprocessed by the checkpoint's processor (image_processing.load_image_processor), run through the
model, and the prediction resized back to the image's size (``post_process_depth_estimation``: bicubic). ``--out``
ending in ``.npy`` gets the depth itself, (H, W) float32; any other name gets an 8-bit grayscale image (Pillow
picks the format by the extension), the depth's minimum black and its maximum white as transformers' depth-estimation
pipeline draws it: bright is near for relative (inverse) depth models, far for metric ones.
"""
from __future__ import annotations

import os

import numpy as np

from ._argtypes import positive_int
from ._errors import CLIError, UsageError, require

_DEPTH_MODELS = ("DepthAnythingForDepthEstimation", "DPTForDepthEstimation")


def add_parser(sub):
    p = sub.add_parser("depth", help="estimate an image's depth with a Depth Anything or DPT checkpoint",
                       description="Estimate the depth of an image with a Depth Anything or DPT checkpoint directory "
                                   "(config.json, safetensors, preprocessor_config.json). Writes the depth map at the "
                                   "image's size: .npy gets the float32 depth, another extension an 8-bit grayscale "
                                   "image (minimum black, maximum white, as transformers' depth-estimation "
                                   "pipeline draws it).")
    p.add_argument("image", metavar="IMAGE", help="an image Pillow reads, or a .npy (H, W, 3) uint8 array")
    p.add_argument("--model", required=True, metavar="DIR", help="the checkpoint directory")
    p.add_argument("--out", "-o", required=True, metavar="FILE", help="the depth map: FILE.npy or an image file")
    p.add_argument("--threads", type=positive_int, default=None, help="forgegrad kernel threads")
    p.set_defaults(run=run)
    return p


def _read_image(path: str) -> np.ndarray:
    if not os.path.isfile(path):
        raise UsageError(f"IMAGE {path!r}: " + ("is a directory" if os.path.isdir(path) else "no such file"))
    if path.endswith(".npy"):
        try:
            image = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise UsageError(f"IMAGE {path!r} is not a numpy array file: {e}") from None
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
            raise UsageError(f"IMAGE {path!r} must hold an (H, W, 3) uint8 array, got {image.dtype} {image.shape}")
        return image
    pil = require("PIL.Image", "vision", "reading an image")
    try:
        with pil.open(path) as im:
            return np.array(im.convert("RGB"))
    except (OSError, ValueError) as e:
        raise UsageError(f"IMAGE {path!r} is not an image Pillow reads: {e}") from None


def _load(model_dir: str):
    from ..models.hf import CheckpointError, from_pretrained, load_image_processor
    from ..models.hf._files import read_config
    if not os.path.isdir(model_dir):
        raise UsageError(f"--model {model_dir!r} is not a directory (a checkpoint, as transformers' save_pretrained "
                         "writes it)")
    try:
        names = read_config(model_dir).get("architectures") or []
        if not any(n in _DEPTH_MODELS for n in names):
            raise UsageError(f"--model {model_dir!r} holds {', '.join(map(str, names)) or 'no architecture'}, not a "
                             f"depth model ({', '.join(_DEPTH_MODELS)})")
        return from_pretrained(model_dir), load_image_processor(model_dir)
    except (CheckpointError, ValueError, FileNotFoundError) as e:
        raise UsageError(f"--model {model_dir!r}: {e}") from None


def run(args):
    if args.threads is not None:
        from .._runtime import set_num_threads
        set_num_threads(args.threads)
    image = _read_image(args.image)
    model, processor = _load(args.model)
    pixels = processor(image)["pixel_values"]
    depth = processor.post_process_depth_estimation(model(pixels), [image.shape[:2]])[0]["predicted_depth"]
    out = args.out
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise UsageError(f"--out {out!r}: no such directory {parent!r}")
    if out.endswith(".npy"):
        np.save(out, depth.astype(np.float32))
        return 0
    pil = require("PIL.Image", "vision", "writing an image")
    low, span = depth.min(), depth.max() - depth.min()
    # transformers' pipeline: min to 0, max to 255, truncated (a constant map: all 0)
    gray = ((depth - low) / span * 255 if span > 0 else np.zeros_like(depth)).astype(np.uint8)
    try:
        pil.fromarray(gray).save(out)
    except (OSError, ValueError, KeyError) as e:
        raise CLIError(f"--out {out!r}: Pillow could not write it: {e}") from None
    return 0
