"""Image classification over HTTP for a ViT, DeiT, DINOv2, Swin (V1, V2) or BEiT classifier
(``ViTForImageClassification``, ``DeiTForImageClassification``, ``DeiTForImageClassificationWithTeacher``,
``Dinov2ForImageClassification``, ``Dinov2WithRegistersForImageClassification``, ``SwinForImageClassification``,
``Swinv2ForImageClassification``, ``BeitForImageClassification``), in the shape of the text classify API
(classify.py).

    forgegrad serve VIT_DIR   (the app: encoder_app.py)

    POST /v1/classify  (and /classify)
         {"input": {"image": "<base64>" | "data:image/png;base64,..."} | {"array": "<base64 of a .npy file>"}
                   | [any of those, up to 2048], "model": ...}
    -> {"id": "classify-...", "object": "list", "created": ..., "model": ...,
        "data": [{"index": i, "label": ..., "probs": [...], "num_classes": n}, ...], "usage": {...}}

An ``image`` is decoded by Pillow (the ``vision`` extra; PNG, JPEG, WebP, ...), turned by its EXIF orientation and
converted to RGB (transformers' ``load_image``); an ``array`` is a ``.npy`` file (``numpy.save``) of uint8 pixels,
(H, W), (H, W, 1), (H, W, 3) or (H, W, 4), read without Pillow (pickled arrays refused; its header checked before any
pixel is read; gray repeated, RGBA composited onto white). Either is refused past MAX_PIXELS pixels or MAX_SIDE on a
side (and images past image_embeddings.MAX_REQUEST_PIXELS in all), and otherwise made into pixel values by the
directory's ``preprocessor_config.json`` (image_processing.py) and classified: the probabilities are the softmax of
the logits (each logit's sigmoid when config.json's ``problem_type`` is "multi_label_classification"), as
transformers' image-classification pipeline gives them, and ``label`` is config.json's ``id2label`` name of the most
likely class. Decoding and preprocessing run off the event loop, per request, so a bad image is that request's 400;
the model then runs on the images of every request waiting together (``encoder_app.EncoderQueue``), up to
``max_batch`` at a time. ``usage`` counts the tokens the encoder ran: each image's patches and its leading tokens.

The processor must make every image one size (a crop, or a fixed height and width): for ViT and DeiT the size of
their position table, for DINOv2 any (its table is resized to every image's grid: the hub's checkpoints take 224 px
crops with a table trained at 518 px), BEiT (its position biases resized likewise) and Swin V2 (its maps padded to its
windows), for Swin any whose stages' maps are at least a window (the size of its position table where it has one).
``ImageModelWorker`` (the model, its processor and the decoding) is shared with vision_embeddings.py.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import io
import time
import uuid
from typing import List, Tuple

import numpy as np

from ..models.hf.image_processing import to_rgb
from .classify import labels_of
from .completion_request import CompletionError, bad, request_object, served_model
from .embeddings import MAX_INPUTS, checkpoint_kind, load_served_model
from .image_embeddings import MAX_PIXELS, MAX_SIDE, _check_resized, load_image, open_image

ARCHITECTURES = ("ViTForImageClassification", "DeiTForImageClassification", "DeiTForImageClassificationWithTeacher",
                 "Dinov2ForImageClassification", "Dinov2WithRegistersForImageClassification",
                 "SwinForImageClassification", "Swinv2ForImageClassification", "BeitForImageClassification")
_FIELDS = {"model", "input", "user"}
_EXPECTED = (f'{{"image": "<base64 or a data: URL>"}}, {{"array": "<base64 of a .npy file>"}}, or a list of up to '
             f'{MAX_INPUTS} of them')


def is_image_classifier_checkpoint(path: str) -> bool:
    """Whether a checkpoint directory holds a ViT, DeiT or DINOv2 image classifier."""
    return checkpoint_kind(path)[0] in ARCHITECTURES


def _items(value) -> List[Tuple[str, str]]:
    """("image" | "array", base64 string) pairs of the request's ``input``."""
    items = value if isinstance(value, list) else [value]
    if not items or len(items) > MAX_INPUTS:
        raise bad("input", _EXPECTED, value)
    out = []
    for item in items:
        if not (isinstance(item, dict) and len(item) == 1 and next(iter(item)) in ("image", "array")
                and isinstance(next(iter(item.values())), str) and next(iter(item.values()))):
            raise bad("input", _EXPECTED, item)
        out.append(next(iter(item.items())))
    return out


def decode_array(data: str, index: int) -> np.ndarray:
    """The uint8 pixels of input ``index``'s base64 ``.npy`` file; 400 when it is not one, not uint8, not an image's
    shape, more than MAX_PIXELS pixels or MAX_SIDE on a side. The header is checked before any pixel is read, so a
    header claiming a huge shape allocates nothing."""
    try:
        raw = base64.b64decode("".join(data.split()), validate=True)
    except (binascii.Error, ValueError):
        raise CompletionError(400, f"input {index}: the array is not valid base64", "input") from None
    buf = io.BytesIO(raw)
    try:
        version = np.lib.format.read_magic(buf)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, fortran, dtype = read_header(buf)
    except Exception as e:  # numpy raises ValueError, OSError, EOFError, ... for what is not a .npy file
        raise CompletionError(400, f"input {index}: not a .npy array ({type(e).__name__})", "input") from None
    if dtype != np.uint8 or len(shape) not in (2, 3) or (len(shape) == 3 and shape[-1] not in (1, 3, 4)) or (
            0 in shape):
        raise CompletionError(400, f"input {index}: the array must be uint8 pixels of shape (H, W) or (H, W, C) with "
                                   f"C 1, 3 or 4, got {dtype} {shape}", "input")
    _check_size(shape[1], shape[0], index)
    size = int(np.prod(shape))
    pixels = raw[buf.tell():]
    if len(pixels) != size:
        raise CompletionError(400, f"input {index}: the .npy array's header says {shape} ({size} bytes) but "
                                   f"{len(pixels)} bytes follow it", "input")
    return np.frombuffer(pixels, np.uint8).reshape(shape, order="F" if fortran else "C")


def _check_size(width: int, height: int, index: int) -> None:
    if width * height > MAX_PIXELS or max(width, height) > MAX_SIDE:
        raise CompletionError(400, f"input {index}: the image is {width} x {height} pixels; this server takes up to "
                                   f"{MAX_PIXELS} pixels, {MAX_SIDE} on a side", "input")


class ImageModelWorker:
    """A ViT / DeiT / DINOv2 model and its image processor, and the decoding of a request's images (``_prepare``)."""

    def __init__(self, path: str, weights: str = "float32", max_batch: int = 32):
        from ..models.hf.beit import BeitModel
        from ..models.hf.dinov2 import Dinov2Model
        from ..models.hf.image_processing import load_image_processor
        from ..models.hf.swin import SwinModel
        from ..models.hf.swinv2 import Swinv2Model
        self.model = load_served_model(path, weights)
        self.processor = load_image_processor(path)
        # a classifier's encoder, or the model itself
        base = self.model if hasattr(self.model, "embeddings") else self.model.encoder
        emb = base.embeddings
        # every image must come out one size (to be stacked), and for ViT / DeiT the size they were trained at (their
        # position table); DINOv2 resizes its table to any image
        size = self.processor.crop_size if self.processor.do_center_crop else self.processor.size
        want = tuple(emb.image_size)
        got = (size["height"], size["width"]) if size is not None and "height" in size else None
        if isinstance(base, (Dinov2Model, BeitModel, Swinv2Model)):  # any one size of at least a patch
            patch = emb.patch_embeddings.patch_size
            if got is None or got[0] < patch[0] or got[1] < patch[1]:
                raise ValueError(f"{path!r}: preprocessor_config.json makes images of size {size}, but the model "
                                 f"takes images of one size (a crop_size, or a size with height and width) of at "
                                 f"least one {patch[0]}x{patch[1]} patch")
        elif isinstance(base, SwinModel) and emb.position_embeddings is None:
            # any one size whose stages' maps are at least a window (the image padded to a multiple of the patch)
            if got is None:
                raise ValueError(f"{path!r}: preprocessor_config.json makes images of size {size}, but the model "
                                 "takes images of one size (a crop_size, or a size with height and width)")
            try:
                base.feature_maps(*got)
            except ValueError as e:
                raise ValueError(f"{path!r}: preprocessor_config.json makes images of size {size}: {e}") from None
        elif got != want:
            raise ValueError(f"{path!r}: preprocessor_config.json makes images of size {size}, but the model takes "
                             f"{want[0]}x{want[1]}")
        self.image_size = got
        patch = emb.patch_embeddings.patch_size
        if isinstance(base, (SwinModel, Swinv2Model)):  # the image padded to whole patches
            self.context = -(-got[0] // patch[0]) * -(-got[1] // patch[1])
        else:
            self.context = (got[0] // patch[0]) * (got[1] // patch[1]) + base.tokens  # tokens per image
        self.max_batch = max_batch

    def _prepare(self, items: List[Tuple[str, str]]) -> List[np.ndarray]:
        """(3, H, W) pixel values per item (decoding and preprocessing, on the event loop's executor). Every image's
        header is checked first (image_embeddings.open_image: MAX_PIXELS, MAX_REQUEST_PIXELS for the request's
        images together; MAX_SIDE), so a request past a limit costs no decoding."""
        opened, pixels = {}, 0
        for i, (kind, value) in enumerate(items):
            if kind == "image":
                opened[i] = open_image(value, i, self.processor, pixels)
                pixels += opened[i].width * opened[i].height
        out = []
        for i, (kind, value) in enumerate(items):
            if kind == "image":  # as transformers' pipeline loads an image (load_image): turned upright by its EXIF
                # orientation (a phone's photo), then converted to RGB (alpha dropped)
                decoded = load_image(opened.pop(i), i)
                try:
                    image = np.asarray(decoded.convert("RGB"))
                except Exception as e:  # a mode Pillow cannot convert: Pillow raises several types
                    raise CompletionError(400, f"input {i}: a {decoded.mode} image Pillow cannot convert to RGB "
                                               f"({type(e).__name__})", "input") from None
            else:  # gray repeated, RGBA composited onto white (do_convert_rgb's), for every processor; the body's
                # size bounds the arrays' pixels
                image = decode_array(value, i)
                # as open_image checks an image's header: a thin array resized by its shortest edge would be huge
                _check_resized(image.shape[1], image.shape[0], self.processor, i)
                image = to_rgb(image)
            try:
                out.append(self.processor(image)["pixel_values"][0])
            except (TypeError, ValueError) as e:
                raise CompletionError(400, f"input {i}: {e}", "input") from None
        return out


class ImageClassifier(ImageModelWorker):
    """An image classifier and its image processor; ``embed`` runs on one thread at a time (the worker)."""

    def __init__(self, path: str, weights: str = "float32", max_batch: int = 32):
        super().__init__(path, weights, max_batch)
        cfg = self.model.config
        self.num_classes = labels_of(cfg)
        names = cfg.get("id2label") or {}
        self.names = [str(names.get(str(i), names.get(i, f"LABEL_{i}"))) for i in range(self.num_classes)]
        self.multi_label = cfg.get("problem_type") == "multi_label_classification"

    def describe(self) -> str:
        return f"{self.num_classes} classes, {self.image_size[0]}x{self.image_size[1]} images"

    async def answer(self, body: bytes, name: str, run) -> Tuple[dict, int]:
        obj = request_object(body, _FIELDS, {})
        if "input" not in obj:
            raise CompletionError(400, "input is required", "input")
        items = _items(obj["input"])
        served_model(obj, name)
        pixels = await asyncio.get_running_loop().run_in_executor(None, self._prepare, items)
        probs = await run(pixels)
        data = [{"index": i, "label": self.names[int(np.argmax(p))], "probs": [float(x) for x in p],
                 "num_classes": self.num_classes} for i, p in enumerate(probs)]
        tokens = self.context * len(pixels)
        return {"id": "classify-" + uuid.uuid4().hex, "object": "list", "created": int(time.time()), "model": name,
                "data": data, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}, tokens

    def embed(self, pixels: List[np.ndarray]) -> np.ndarray:
        """(len(pixels), num_classes) probabilities, up to max_batch images per forward."""
        from ..autograd import no_grad
        out = np.empty((len(pixels), self.num_classes), np.float64)
        with no_grad():
            for start in range(0, len(pixels), self.max_batch):
                z = self.model(np.stack(pixels[start:start + self.max_batch])).numpy().astype(np.float64)
                if self.multi_label:
                    out[start:start + len(z)] = 1.0 / (1.0 + np.exp(-z))
                else:
                    e = np.exp(z - z.max(axis=1, keepdims=True))
                    out[start:start + len(z)] = e / e.sum(axis=1, keepdims=True)
        return out

