"""A text prompt and N images as an image-text model's token ids, as transformers' processors expand them:

- Gemma 3 (``Gemma3Processor``): each ``<start_of_image>`` in the text (none: the images first, separated by spaces)
  becomes "\\n\\n", BOI, ``mm_tokens_per_image`` image tokens, EOI, "\\n\\n"; token types 1 on the image tokens.
- LLaVA (``LlavaProcessor``): each ``<image>`` (none: the images first, then "\\n") becomes the image's patch count
  of image tokens (plus the class token's with the "full" strategy).
- PaliGemma (``PaliGemmaProcessor``): the image tokens of every image, BOS, the text, "\\n"; token types 0 (the
  prefix).

The text between placeholders is tokenized piece by piece (the special tokens go in as ids, so a tokenizer without
them, such as forgegrad's byte tokenizer, works too).
"""
from __future__ import annotations

from typing import List, Optional, Tuple

__all__ = ["image_prompt", "image_inputs", "PLACEHOLDERS"]

PLACEHOLDERS = {"Gemma3ForConditionalGeneration": "<start_of_image>", "LlavaForConditionalGeneration": "<image>",
                "PaliGemmaForConditionalGeneration": None}


def _pieces(text: str, placeholder: str, n_images: int, who: str) -> List[str]:
    """The text around its ``placeholder`` marks (none: the images first, a space between them, then the text):
    n_images + 1 pieces."""
    count = text.count(placeholder)
    if count == 0:
        return [""] + [" "] * (n_images - 1) + [" " + text] if n_images else [text]
    if count != n_images:
        raise ValueError(f"{who}: the prompt marks {count} images ({placeholder}) but {n_images} were given")
    return text.split(placeholder)


def image_prompt(model, tokenizer, text: str, n_images: int) -> Tuple[List[int], Optional[List[int]]]:
    """(token ids, token types or None) of ``text`` with ``n_images`` images for ``model`` (Gemma 3, LLaVA or
    PaliGemma)."""
    name = getattr(model, "architecture", type(model).__name__)
    if name not in PLACEHOLDERS:
        raise TypeError(f"image_prompt: {name} takes no images (image-text models: {', '.join(PLACEHOLDERS)})")
    if isinstance(n_images, bool) or not isinstance(n_images, int) or n_images < 0:
        raise ValueError(f"image_prompt: n_images must be a non-negative int, got {n_images!r}")
    image, per_image = model.image_token_id, model.tokens_per_image

    def encode(piece: str) -> List[int]:
        return list(tokenizer.encode(piece)) if piece else []

    if name == "PaliGemmaForConditionalGeneration":
        ids = [image] * (per_image * n_images) + [model.config.get("bos_token_id", 2)] + encode(text + "\n")
        return ids, [0] * len(ids)
    gemma3 = name == "Gemma3ForConditionalGeneration"
    block = [image] * per_image
    if gemma3:
        cfg = model.hf_config
        block = [cfg.get("boi_token_index", cfg.get("boi_token_id"))] + block + [
            cfg.get("eoi_token_index", cfg.get("eoi_token_id"))]
    around = "\n\n" if gemma3 else ""  # Gemma 3's image sequence starts and ends with a blank line
    pieces = _pieces(text, PLACEHOLDERS[name], n_images, name)
    ids: List[int] = []
    for i, piece in enumerate(pieces):  # the newlines tokenized with the text beside them
        ids += encode((around if i else "") + piece + (around if i < n_images else ""))
        if i < n_images:
            ids += block
    return ids, ([int(t == image) for t in ids] if gemma3 else None)


def image_inputs(model, tokenizer, text: str, images, processor) -> Tuple[List[int], dict]:
    """(the prompt's token ids with each image's tokens, generate's pixel_values and, where the model reads them,
    token_type_ids) for ``images`` (PIL images or uint8 arrays) made into pixel values by ``processor``."""
    import numpy as np
    ids, kinds = image_prompt(model, tokenizer, text, len(images))
    extra = {"pixel_values": processor(list(images))["pixel_values"]}
    if kinds is not None:
        extra["token_type_ids"] = np.array([kinds], np.int64)
    return ids, extra
