"""Image and text embeddings over HTTP for a CLIP, SigLIP or SigLIP 2 checkpoint (``CLIPModel``, ``SiglipModel``,
``Siglip2Model``): OpenAI's embeddings API with images among the inputs, in one vector space.

    forgegrad serve CLIP_DIR   (the app: encoder_app.py)

    POST /v1/embeddings  {"input": "text" | {"text": "..."} | {"image": "<base64>" | "data:image/png;base64,..."}
                                  | [any of those, texts and images mixed, up to 2048],
                          "encoding_format": "float" | "base64", "model": ..., "dimensions": ..., "user": ...}

A text is tokenized with the directory's tokenizer.json and embedded by the text tower (``get_text_features``), an
image decoded by Pillow (the ``vision`` extra; PNG, JPEG, WebP, ...), made into pixel values by the directory's
``preprocessor_config.json`` (image_processing.py; SigLIP 2's: patches of each image's own aspect ratio padded to
``max_num_patches``, siglip2_processing.py) and embedded by the image tower (``get_image_features``). Every
vector has unit length (the embeddings whose dot products the model's logits scale), so a text's and an image's
compare by their dot product. Images come inline, base64-encoded (a ``data:`` URL or the bare base64); URLs are not
fetched. Decoding and preprocessing run off the event loop, per request, so a bad image is that request's 400; the
towers then run on the inputs of every request waiting together (``encoder_app.EncoderQueue``), up to ``max_batch``
of each kind at a time.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import io
from typing import List, Tuple

import numpy as np

from .completion_request import CompletionError, bad, request_object, served_model
from .embeddings import MAX_INPUTS, checked_length, checkpoint_kind, encode_checked, load_served_model

_ARCHITECTURES = ("CLIPModel", "SiglipModel", "Siglip2Model")
_FIELDS = {"input", "model", "encoding_format", "dimensions", "user"}
MAX_PIXELS = 50_000_000  # a decoded image past this many pixels is refused (decompression bombs)
# the images of one request together: decoding and preprocessing take about 12 million pixels a second of one core
# (a 160 KB PNG of 7000 x 7000 took 4 s), so a 16 MB body of such images would hold a thread for minutes
MAX_REQUEST_PIXELS = 4 * MAX_PIXELS
# the longest image side taken (JPEG's limit): Pillow's resize builds a coefficient table of about 2 x support x the
# input side doubles, so a 48 KB PNG of 49,000,000 x 1 pixels (under MAX_PIXELS) took 1.9 GB and 16 s to resize to
# 32 x 32 (bicubic) and raised MemoryError with lanczos
MAX_SIDE = 65_535
# the formats decoded: raster formats Pillow decodes itself (EPS and PDF-like formats would hand the bytes to
# Ghostscript, an external program, so they are never opened)
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF", "ICO", "PPM")
_EXPECTED = (f'a string (a text), {{"text": "..."}}, {{"image": "<base64 or a data: URL>"}}, or a list of up to '
             f'{MAX_INPUTS} of them')


def is_image_text_checkpoint(path: str) -> bool:
    """Whether a checkpoint directory holds a CLIP or SigLIP dual encoder."""
    arch, model_type = checkpoint_kind(path)
    return arch in _ARCHITECTURES or model_type in ("clip", "siglip", "siglip2")


def _items(value) -> list:
    """("text", str) and ("image", str) pairs of the request's ``input``."""
    items = value if isinstance(value, list) else [value]
    if not items or len(items) > MAX_INPUTS:
        raise bad("input", _EXPECTED, value)
    out = []
    for item in items:
        if isinstance(item, str) and item:
            out.append(("text", item))
        elif isinstance(item, dict) and len(item) == 1 and next(iter(item)) in ("text", "image") and isinstance(
                next(iter(item.values())), str) and next(iter(item.values())):
            out.append(next(iter(item.items())))
        else:
            raise bad("input", _EXPECTED, item)
    return out


def data_url_bytes(data: str, where: str, what: str, no_urls: str, example: str, param: str) -> bytes:
    """The bytes of a request's base64 file (bare or a ``data:...;base64,`` URL): a 400 naming ``param`` for a URL
    (never fetched: ``no_urls`` says so), a data: URL that is not base64 (``example`` shows one) or bad base64."""
    if data.startswith(("http://", "https://")):
        raise CompletionError(400, f"{where}: {no_urls}", param)
    if data.startswith("data:"):
        head, sep, data = data.partition(",")
        if not sep or not head.endswith(";base64"):
            raise CompletionError(400, f"{where}: a data: URL must be base64 ({example})", param)
    try:
        return base64.b64decode("".join(data.split()), validate=True)
    except (binascii.Error, ValueError):
        raise CompletionError(400, f"{where}: the {what} is not valid base64", param) from None


def open_image(data: str, index: int, processor=None, used: int = 0):
    """The PIL image of input ``index``'s base64 (a bare string or a ``data:`` URL; line breaks and spaces, as MIME
    base64 wraps its lines, are ignored), its header read, not yet decoded; 400 when it is not base64 or not an
    image of one of IMAGE_FORMATS, when it has more than MAX_PIXELS pixels or MAX_SIDE on a side (or more than
    MAX_REQUEST_PIXELS with the ``used``
    pixels of the request's images before it), or when ``processor`` (an image_processing.ImageProcessor) would
    resize it to more (a thin image resized by its shortest edge: a 225-byte 50000 x 1 PNG would become
    11,200,000 x 224)."""
    try:
        from PIL import Image
    except ImportError:
        raise CompletionError(501, "images need Pillow on the server: pip install \"forgegrad[vision]\"",
                              "input") from None
    raw = data_url_bytes(data, f"input {index}", "image", "image URLs are not fetched; send the image file's bytes in "
                         "base64, bare or as a data:image/...;base64, URL", "data:image/...;base64,...", "input")
    try:
        image = Image.open(io.BytesIO(raw), formats=IMAGE_FORMATS)
        if image.width * image.height > MAX_PIXELS or max(image.width, image.height) > MAX_SIDE:
            raise CompletionError(400, f"input {index}: the image is {image.width} x {image.height} pixels; this "
                                       f"server takes up to {MAX_PIXELS} pixels, {MAX_SIDE} on a side", "input")
        if used + image.width * image.height > MAX_REQUEST_PIXELS:
            raise CompletionError(400, f"input {index}: the request's images come to more than the "
                                       f"{MAX_REQUEST_PIXELS} pixels this server decodes per request; send them in "
                                       "several requests", "input")
        # (the resized size's area is the same turned a quarter round by an EXIF orientation; reading that here would
        # decode a PNG, whose EXIF may follow its pixels)
        _check_resized(image.width, image.height, processor, index)
    except CompletionError:
        raise
    except Exception as e:  # Pillow raises many types (UnidentifiedImageError, OSError, DecompressionBombError, ...)
        raise CompletionError(400, f"input {index}: not an image Pillow reads ({type(e).__name__}; the formats "
                                   f"taken: {', '.join(IMAGE_FORMATS)})", "input") from None
    return image


def load_image(image, index: int):
    """``open_image``'s image decoded and turned upright by its EXIF orientation, as transformers' load_image turns
    it (a phone's photo); 400 when its data is broken."""
    from PIL import ImageOps
    try:
        image.load()
        return ImageOps.exif_transpose(image)
    except Exception as e:  # a truncated file, a broken stream (OSError, SyntaxError, ...)
        raise CompletionError(400, f"input {index}: not an image Pillow reads ({type(e).__name__})", "input") from None


def decode_image(data: str, index: int, processor=None):
    """``open_image`` then ``load_image``: input ``index``'s image, checked, decoded and upright."""
    return load_image(open_image(data, index, processor), index)


def _check_resized(width: int, height: int, processor, index: int) -> None:
    """400 when ``processor`` would resize a ``width`` x ``height`` image to more than MAX_PIXELS pixels (checked
    from the header, before the image is decoded)."""
    size = getattr(processor, "size", None) if getattr(processor, "do_resize", False) else None
    if not size:
        return
    from ..models.hf.image_processing import _output_size
    h, w = _output_size(height, width, size)
    if h * w > MAX_PIXELS:
        raise CompletionError(400, f"input {index}: the image is {width} x {height} pixels, which the model's image "
                                   f"processor would resize to {w} x {h}, more than the {MAX_PIXELS} pixels this "
                                   "server processes (its sides are too unequal)", "input")


class ImageTextEmbedder:
    """A CLIP, SigLIP or SigLIP 2 model and its ImageTextProcessor; ``embed`` runs on one thread at a time (the
    worker)."""

    def __init__(self, path: str, weights: str = "float32", max_batch: int = 32):
        from ..models.hf.zero_shot import ImageTextProcessor
        self.model = load_served_model(path, weights)
        self.processor = ImageTextProcessor.from_pretrained(path)
        improc = self.processor.image_processor
        if improc is None:
            raise ValueError(f"{path!r} has no preprocessor_config.json: images could not be embedded")
        from ..models.hf.siglip2_processing import Siglip2ImageProcessor
        vision = self.model.vision_model.config
        naflex = isinstance(improc, Siglip2ImageProcessor)  # SigLIP 2: patches, their mask and grid
        if naflex:
            if improc.patch_size != vision["patch_size"]:
                raise ValueError(f"{path!r}: preprocessor_config.json cuts {improc.patch_size} px patches, but the "
                                 f"vision tower takes {vision['patch_size']} px ones")
        else:
            # every image must come out at the vision tower's size: otherwise each batch holding an image (texts of
            # other requests run with it) would fail in the model
            size = improc.crop_size if improc.do_center_crop else improc.size
            want = int(vision["image_size"])
            if size is None or "height" not in size or (size["height"], size["width"]) != (want, want):
                raise ValueError(f"{path!r}: preprocessor_config.json makes images of size {size}, but the vision "
                                 f"tower takes {want}x{want}")
        self.context = self.processor.max_length
        self.vocab = int(self.model.text_model.config["vocab_size"])
        project = getattr(self.model, "text_projection", None)  # CLIP's; SigLIP's vectors are its towers' own
        self.dim = int(project.out_features if project is not None else self.model.vision_model.config["hidden_size"])
        self.max_batch = max_batch

    def describe(self) -> str:
        return f"{self.dim}-dimensional text and image vectors, texts up to {self.context} tokens"

    def _prepare(self, items: List[Tuple[str, str]]) -> Tuple[list, int]:
        """(("text", ids) or ("image", the processor's arrays of it: (3, H, W) pixel_values, SigLIP 2's patches,
        mask and grid) per item, the text tokens): tokenizing, decoding and preprocessing, on a thread of the event
        loop's executor."""
        improc, out, tokens, pixels = self.processor.image_processor, [], 0, 0
        opened = {}  # every image's header is checked before any is decoded: a request past a limit costs no decoding
        for i, (kind, value) in enumerate(items):
            if kind == "image":
                opened[i] = open_image(value, i, improc, pixels)
                pixels += opened[i].width * opened[i].height
        for i, (kind, value) in enumerate(items):
            if kind == "text":
                ids = checked_length(encode_checked(self.processor.tokenizer, value, i, self.context), i,
                                     self.context)
                bad_id = next((t for t in ids if not 0 <= t < self.vocab), None)
                if not ids or bad_id is not None:
                    raise CompletionError(400, f"input {i} gives {'no tokens' if not ids else f'token {bad_id}'} "
                                               f"the model's vocabulary of {self.vocab} does not hold", "input")
                out.append(("text", ids))
                tokens += len(ids)
            else:
                made = improc(load_image(opened.pop(i), i))
                out.append(("image", {k: v[0] for k, v in made.items()}))
        return out, tokens

    async def answer(self, body: bytes, name: str, run) -> Tuple[dict, int]:
        """The /v1/embeddings answer to ``body`` and the text tokens it embedded."""
        obj = request_object(body, _FIELDS, {})
        if "input" not in obj:
            raise CompletionError(400, "input is required", "input")
        items = _items(obj["input"])
        served_model(obj, name)
        fmt = obj.get("encoding_format")
        if fmt not in (None, "float", "base64"):
            raise bad("encoding_format", '"float" or "base64"', fmt)
        dim = obj.get("dimensions")
        if dim is not None and dim != self.dim:
            raise bad("dimensions", f"this model's size, {self.dim} (shortened vectors are not supported)", dim)
        prepared, tokens = await asyncio.get_running_loop().run_in_executor(None, self._prepare, items)
        vectors = await run(prepared)
        data = [{"object": "embedding", "index": i, "embedding": base64.b64encode(v.astype("<f4").tobytes()).decode(
            "ascii") if fmt == "base64" else v.tolist()} for i, v in enumerate(vectors)]
        return {"object": "list", "data": data, "model": name,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}, tokens

    def embed(self, items: list) -> np.ndarray:
        """(len(items), dim) unit vectors of ("text", ids) and ("image", pixel values) items, each tower run on up
        to max_batch of its items at a time."""
        from ..autograd import no_grad
        out = np.empty((len(items), self.dim), np.float32)
        texts = [i for i, (kind, _) in enumerate(items) if kind == "text"]
        images = [i for i, (kind, _) in enumerate(items) if kind == "image"]
        with no_grad():
            for start in range(0, len(texts), self.max_batch):
                rows = texts[start:start + self.max_batch]
                inputs = self.processor.pad([items[i][1] for i in rows])
                out[rows] = self.model.get_text_features(inputs["input_ids"], inputs.get("attention_mask")).numpy()
            for start in range(0, len(images), self.max_batch):
                rows = images[start:start + self.max_batch]
                inputs = {k: np.stack([items[i][1][k] for i in rows]) for k in items[rows[0]][1]}
                out[rows] = self.model.get_image_features(**inputs).numpy()
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), np.float32(1e-12))
