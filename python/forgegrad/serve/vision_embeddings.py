"""Image embeddings over HTTP for a vision-only encoder (``Dinov2Model``, ``Dinov2WithRegistersModel``): OpenAI's
embeddings API with images as the inputs.

    forgegrad serve DINOV2_DIR   (the app: encoder_app.py)

    POST /v1/embeddings  {"input": {"image": "<base64>" | "data:image/png;base64,..."} | {"array": "<base64 of a
                                   .npy file>"} | [any of those, up to 2048],
                          "encoding_format": "float" | "base64", "model": ..., "dimensions": ..., "user": ...}

Images and ``.npy`` arrays are decoded, checked and preprocessed as image_classify.py does them (the directory's
``preprocessor_config.json``); texts are refused (a 400: the model has no text tower). The vector is the model's
``pooler_output``, as transformers gives it: for DINOv2 the CLS token's final state after the last LayerNorm, not
normalized (normalize it for cosine similarity). The images of every request waiting run together
(``encoder_app.EncoderQueue``), up to ``max_batch`` at a time. ``usage`` counts the tokens the encoder ran: each
image's patches and its CLS token (and register tokens).
"""
from __future__ import annotations

import asyncio
import base64
from typing import List, Tuple

import numpy as np

from .completion_request import CompletionError, bad, request_object, served_model
from .embeddings import checkpoint_kind
from .image_classify import ImageModelWorker, _items

ARCHITECTURES = ("Dinov2Model", "Dinov2WithRegistersModel")
_FIELDS = {"input", "model", "encoding_format", "dimensions", "user"}


def is_vision_embedding_checkpoint(path: str) -> bool:
    """Whether a checkpoint directory holds a vision-only encoder served as image embeddings (DINOv2)."""
    arch, model_type = checkpoint_kind(path)
    return arch in ARCHITECTURES or model_type in ("dinov2", "dinov2_with_registers")


class ImageEmbedder(ImageModelWorker):
    """A vision encoder and its image processor; ``embed`` runs on one thread at a time (the worker)."""

    def __init__(self, path: str, weights: str = "float32", max_batch: int = 32):
        super().__init__(path, weights, max_batch)
        self.dim = int(self.model.config["hidden_size"])

    def describe(self) -> str:
        return f"{self.dim}-dimensional image vectors, {self.image_size[0]}x{self.image_size[1]} images"

    async def answer(self, body: bytes, name: str, run) -> Tuple[dict, int]:
        """The /v1/embeddings answer to ``body`` and the tokens the encoder ran."""
        obj = request_object(body, _FIELDS, {})
        if "input" not in obj:
            raise CompletionError(400, "input is required", "input")
        value = obj["input"]
        if isinstance(value, str) or (isinstance(value, list) and any(isinstance(v, (str, int)) for v in value)):
            raise CompletionError(400, "input: this model embeds images only (no text tower); send "
                                       '{"image": "<base64>"} or {"array": "<base64 of a .npy file>"} items', "input")
        items = _items(value)
        served_model(obj, name)
        fmt = obj.get("encoding_format")
        if fmt not in (None, "float", "base64"):
            raise bad("encoding_format", '"float" or "base64"', fmt)
        dim = obj.get("dimensions")
        if dim is not None and dim != self.dim:
            raise bad("dimensions", f"this model's size, {self.dim} (shortened vectors are not supported)", dim)
        pixels = await asyncio.get_running_loop().run_in_executor(None, self._prepare, items)
        vectors = await run(pixels)
        data = [{"object": "embedding", "index": i, "embedding": base64.b64encode(v.astype("<f4").tobytes()).decode(
            "ascii") if fmt == "base64" else v.tolist()} for i, v in enumerate(vectors)]
        tokens = self.context * len(pixels)
        return {"object": "list", "data": data, "model": name,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}, tokens

    def embed(self, pixels: List[np.ndarray]) -> np.ndarray:
        """(len(pixels), dim) pooler outputs, up to max_batch images per forward."""
        from ..autograd import no_grad
        out = np.empty((len(pixels), self.dim), np.float32)
        with no_grad():
            for start in range(0, len(pixels), self.max_batch):
                out[start:start + self.max_batch] = self.model(
                    np.stack(pixels[start:start + self.max_batch])).pooler_output.numpy()
        return out
