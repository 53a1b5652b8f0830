"""A text prompt and N images as an image-text model's token ids, as transformers' processors expand them:

- Gemma 3 (``Gemma3Processor``): each ``<start_of_image>`` in the text (none: the images first, separated by spaces)
  becomes "\\n\\n", BOI, ``mm_tokens_per_image`` image tokens, EOI, "\\n\\n"; token types 1 on the image tokens.
  An image with pan-and-scan crops (``num_crops[i]``, the processor's) becomes "Here is the original image ", its
  block, " and here are some crops to help you see better ", then one block per crop, a space between them.
- LLaVA (``LlavaProcessor``): each ``<image>`` (none: the images first, then "\\n") becomes the image's patch count
  of image tokens (plus the class token's with the "full" strategy).
- LLaVA-NeXT (``LlavaNextProcessor``): as LLaVA's, each image's count from its original size (``image_sizes``:
  the base tile's patches, then its unpadded tile grid's rows, each with a newline token; llava_next.py).
- PaliGemma (``PaliGemmaProcessor``): the image tokens of every image, BOS, the text, "\\n"; token types 0 (the
  prefix).
- Qwen2-VL and Qwen2.5-VL (``Qwen2VLProcessor``, ``Qwen2_5_VLProcessor``): each ``<|image_pad|>`` (the chat
  template writes ``<|vision_start|><|image_pad|><|vision_end|>``; one per image, in order) becomes the image's
  merged patch count (``image_grid_thw``'s rows * columns / merge_size**2) of image tokens; the vision start / end
  marks beside it go in as their ids. A text without marks gets each image's ``<|vision_start|>``, tokens and
  ``<|vision_end|>`` first (transformers' processor refuses such a text). Each ``<|video_pad|>`` becomes its video's
  merged patch count (``video_grid_thw``) of video tokens, the same way (a text without them gets the videos after
  the images, before the text).

The text between placeholders is tokenized piece by piece (the special tokens go in as ids, so a tokenizer without
them, such as forgegrad's byte tokenizer, works too).
"""
from __future__ import annotations

from typing import List, Optional, Tuple

__all__ = ["image_prompt", "image_inputs", "PLACEHOLDERS"]

PLACEHOLDERS = {"Gemma3ForConditionalGeneration": "<start_of_image>", "LlavaForConditionalGeneration": "<image>",
                "LlavaNextForConditionalGeneration": "<image>",
                "PaliGemmaForConditionalGeneration": None, "Qwen2VLForConditionalGeneration": "<|image_pad|>",
                "Qwen2_5_VLForConditionalGeneration": "<|image_pad|>"}
_VISION_START, _VISION_END = "<|vision_start|>", "<|vision_end|>"


def _pieces(text: str, placeholder: str, n_images: int, who: str) -> List[str]:
    """The text around its ``placeholder`` marks (none: the images first, a space between them, then the text,
    as transformers writes an empty text's marks): n_images + 1 pieces."""
    count = text.count(placeholder)
    if count == 0:
        return [""] + [" "] * (n_images - 1) + [" " + text if text else ""] if n_images else [text]
    if count != n_images:
        raise ValueError(f"{who}: the prompt marks {count} images ({placeholder}) but {n_images} were given")
    return text.split(placeholder)


def image_prompt(model, tokenizer, text: str, n_images: int, image_grid_thw=None,
                 image_sizes=None, num_crops=None) -> Tuple[List[int], Optional[List[int]]]:
    """(token ids, token types or None) of ``text`` with ``n_images`` images for ``model`` (Gemma 3, LLaVA, PaliGemma,
    Qwen2-VL, which needs the images' ``image_grid_thw``, or LLaVA-NeXT, which needs their ``image_sizes``: their
    image token counts). ``num_crops``: Gemma 3's pan-and-scan crops of each image (its processor's ``num_crops``;
    None: none)."""
    name = getattr(model, "architecture", type(model).__name__)
    if name not in PLACEHOLDERS:
        raise TypeError(f"image_prompt: {name} takes no images (image-text models: {', '.join(PLACEHOLDERS)})")
    if isinstance(n_images, bool) or not isinstance(n_images, int) or n_images < 0:
        raise ValueError(f"image_prompt: n_images must be a non-negative int, got {n_images!r}")

    def encode(piece: str) -> List[int]:
        return list(tokenizer.encode(piece)) if piece else []

    crops = _crop_counts(num_crops, n_images, name)
    if PLACEHOLDERS[name] == "<|image_pad|>":  # Qwen2-VL, Qwen2.5-VL
        return _qwen2_vl_prompt(model, encode, text, n_images, image_grid_thw), None
    image, per_image = model.image_token_id, model.tokens_per_image
    counts = [per_image] * n_images
    if name == "LlavaNextForConditionalGeneration":
        if image_sizes is None:
            raise ValueError(f"image_prompt: {name} needs image_sizes (the processor's) for its image token counts")
        counts = model.image_token_counts(image_sizes)
        if len(counts) != n_images:
            raise ValueError(f"image_prompt: image_sizes must give ({n_images}, 2) for {n_images} images, got "
                             f"{len(counts)} rows")
    if name == "PaliGemmaForConditionalGeneration":
        ids = [image] * (per_image * n_images) + [model.config.get("bos_token_id", 2)] + encode(text + "\n")
        return ids, [0] * len(ids)
    gemma3 = name == "Gemma3ForConditionalGeneration"
    blocks = [[image] * n for n in counts]
    if gemma3:
        cfg = model.hf_config
        blocks = [[cfg.get("boi_token_index", cfg.get("boi_token_id"))] + b + [
            cfg.get("eoi_token_index", cfg.get("eoi_token_id"))] for b in blocks]
    around = "\n\n" if gemma3 else ""  # Gemma 3's image sequence starts and ends with a blank line
    pieces = _pieces(text, PLACEHOLDERS[name], n_images, name)
    parts: List = [pieces[0]]  # text (str) and image blocks (lists of ids), as transformers' expanded text reads
    for i in range(n_images):
        block = blocks[i]
        if crops[i]:  # Gemma3Processor.replace_image_token with pan-and-scan crops (Gemma 3's blocks are equal)
            parts += ["Here is the original image " + around, block,
                      around + " and here are some crops to help you see better " + around, block]
            for _ in range(crops[i] - 1):
                parts += [around + " " + around, block]
        else:
            parts += [around, block]
        parts.append(around + pieces[i + 1])
    ids: List[int] = []
    text_run = ""
    for part in parts:  # the text between two blocks tokenized as one piece, as the tokenizer splits at them
        if isinstance(part, str):
            text_run += part
        else:
            ids += encode(text_run) + part
            text_run = ""
    ids += encode(text_run)
    return ids, ([int(t == image) for t in ids] if gemma3 else None)


def _crop_counts(num_crops, n_images: int, name: str) -> List[int]:
    """Each image's pan-and-scan crop count (Gemma 3's only), checked."""
    if num_crops is None:
        return [0] * n_images
    try:
        counts = [int(c) for c in num_crops]
        ok = len(counts) == n_images and all(c >= 0 and c == float(v) for c, v in zip(counts, num_crops))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"image_prompt: num_crops must give each of the {n_images} images' crop count (ints >= 0, "
                         f"the processor's num_crops), got {num_crops!r}")
    if any(counts) and name != "Gemma3ForConditionalGeneration":
        raise ValueError(f"image_prompt: pan-and-scan crops (num_crops) are Gemma 3's; {name} takes none")
    return counts


_VIDEO_PAD = "<|video_pad|>"


def _grid_counts(model, grid, n: int, kind: str, arg: str) -> List[int]:
    import numpy as np
    if n and grid is None:
        raise ValueError(f"image_prompt: {model.architecture} needs {arg} (the processor's) for its {kind} token "
                         "counts")
    grid = np.zeros((0, 3), np.int64) if grid is None else np.asarray(grid)
    if grid.shape != (n, 3):
        raise ValueError(f"image_prompt: {arg} must be ({n}, 3) for {n} {kind}s, got {grid.shape}")
    return (grid.prod(axis=1) // model.merge ** 2).tolist()


def _qwen2_vl_prompt(model, encode, text: str, n_images: int, image_grid_thw, n_videos: int = 0,
                     video_grid_thw=None) -> List[int]:
    """Qwen2-VL's ids: each <|image_pad|> (<|video_pad|>) expanded to its image's (video's) tokens, in order, the
    vision marks beside them as ids."""
    import re
    name = model.architecture
    pad = PLACEHOLDERS[name]
    marks = {pad: (model.image_token_id, _grid_counts(model, image_grid_thw, n_images, "image", "image_grid_thw")),
             _VIDEO_PAD: (getattr(model, "video_token_id", None),
                          _grid_counts(model, video_grid_thw, n_videos, "video", "video_grid_thw"))}
    # (forgegrad's convenience: transformers' processor refuses it) unmarked images, then videos, before the text
    if n_videos and _VIDEO_PAD not in text:
        text = f"{_VISION_START}{_VIDEO_PAD}{_VISION_END}" * n_videos + text
    if n_images and pad not in text:
        text = f"{_VISION_START}{pad}{_VISION_END}" * n_images + text
    for mark, n, kind in ((pad, n_images, "images"), (_VIDEO_PAD, n_videos, "videos")):
        if text.count(mark) != n:
            raise ValueError(f"image_prompt: the prompt marks {text.count(mark)} {kind} ({mark}, as the chat "
                             f"template writes them inside {_VISION_START}...{_VISION_END}) but {n} were given")
    parts = re.split("(" + "|".join(re.escape(m) for m in marks) + ")", text)
    used = {m: 0 for m in marks}
    ids: List[int] = []
    for k, piece in enumerate(parts):
        if piece in marks:
            token, counts = marks[piece]
            ids += [token] * int(counts[used[piece]])
            used[piece] += 1
            continue
        end = k > 0 and piece.startswith(_VISION_END)
        start = k + 1 < len(parts) and piece.endswith(_VISION_START) and (
            len(piece) >= len(_VISION_START) + end * len(_VISION_END))
        inner = piece[len(_VISION_END) if end else 0:len(piece) - (len(_VISION_START) if start else 0)]
        ids += ([model.vision_end_token_id] if end else []) + encode(inner) + (
            [model.vision_start_token_id] if start else [])
    return ids


def image_inputs(model, tokenizer, text: str, images, processor, videos=None, video_processor=None, fps=None,
                 **processor_kwargs) -> Tuple[List[int], dict]:
    """(the prompt's token ids with each image's tokens, generate's pixel_values and, where the model reads them,
    token_type_ids / image_grid_thw / image_sizes) for ``images`` (PIL images or uint8 arrays) made into pixel values
    by ``processor`` (called with ``processor_kwargs``, e.g. Gemma 3's ``do_pan_and_scan=True``; its ``num_crops``,
    where it gives them, expand the prompt as transformers' Gemma3Processor does). Qwen2-VL / Qwen2.5-VL: ``videos``
    (each a (frames, H, W, C) uint8 array or a list of frames) made by ``video_processor`` (qwen2_vl_video.py; ``fps``:
    the frames per second given, for Qwen2.5-VL's second_per_grid_ts) fill the prompt's ``<|video_pad|>`` marks."""
    import numpy as np
    extra, shapes, kinds = {}, {}, None
    if videos is not None and PLACEHOLDERS.get(getattr(model, "architecture", None)) != "<|image_pad|>":
        raise TypeError(f"image_inputs: videos are Qwen2-VL's / Qwen2.5-VL's; {type(model).__name__} takes images "
                        "only")
    if videos is not None and video_processor is None:
        raise ValueError("image_inputs: videos need a video_processor (qwen2_vl_video.Qwen2VLVideoProcessor)")
    processed = processor(list(images), **processor_kwargs) if len(images) else {}
    shapes = {k: processed[k] for k in ("image_grid_thw", "image_sizes") if processed.get(k) is not None}
    if videos is not None:
        clips = video_processor(list(videos), fps=fps)
        extra.update(clips)
        ids = _qwen2_vl_prompt(model, lambda piece: list(tokenizer.encode(piece)) if piece else [], text,
                               len(images), shapes.get("image_grid_thw"), len(clips["video_grid_thw"]),
                               clips["video_grid_thw"])
    else:
        ids, kinds = image_prompt(model, tokenizer, text, len(images), num_crops=processed.get("num_crops"),
                                  **shapes)
    if len(images):
        extra.update({"pixel_values": processed["pixel_values"], **shapes})
    if kinds is not None:
        extra["token_type_ids"] = np.array([kinds], np.int64)
    return ids, extra
