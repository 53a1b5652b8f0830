"""The prefix cache for chat prompts with images on the paged engine (paged_batch.py), as vLLM keys its blocks with
its multi-modal hashes: a block's key mixes in the content of each image whose first token falls in it, so the key of
every block from an image's first token on stands for that image too (the chain carries it), and two prompts with the
same token ids (an image's tokens are all one id) but other images share no block from that token on.

* Each image (each row group of ``pixel_values`` the model reads as one image: a Gemma 3 pan-and-scan crop, a
  LLaVA-NeXT image's tiles, a Qwen2-VL image's patches) gets a SHA-256 digest of its pixel values (dtype, shape and
  bytes), its per-image arguments (``image_grid_thw``, ``image_sizes``, ``second_per_grid_ts``' row), and the place
  and number of its tokens in the prompt. The digests go into the key (and the verified contents) of the block that
  holds the image's first token (prefix_cache.py: ``marks``); the blocks before it stay plain token blocks, shared
  with text prompts (their keys depend on the tokens before them alone).
* The rule for reading cached blocks: a prompt with images uses its cached blocks only when they cover every image
  token (the cached part ends past the prompt's last image token); then the rest of the prompt is plain text, and
  the model's attention over it is causal (Gemma 3's image blocks, attended both ways, lie wholly inside the cached
  part, so their cached keys are the ones one prefill computes: the digests fix each image's place and length), so it
  is prefilled as a text prompt's rest is, in ``--prefill-chunk`` pieces, at its plain positions (a Qwen2-VL /
  Qwen2.5-VL row at its positions plus the rope delta its images give, ``rope_delta``, computed from the ids and the
  grids without the vision tower). Otherwise (the cached blocks end inside or before an image) it reads none and
  prefills the whole prompt with its images in one call, as before: a rest holding image tokens would need the
  images' rows merged from a later position (not yet).
* PaliGemma reads and keeps none (``why_no_image_prefix``): its whole prompt (images, BOS, text) is one prefix
  attended both ways, so every prompt key depends on every prompt token, the last one included; a cached key is
  valid only for the very same prompt, and its rest would need the prefix's two-way attention over the cached keys.
"""
from __future__ import annotations

import hashlib
from typing import Dict, List, Optional, Tuple

import numpy as np


def why_no_image_prefix(model) -> Optional[str]:
    """None where prompts with images of ``model`` may use the prefix cache, else why not (in words)."""
    from ..models.hf.paligemma import PaliGemmaForConditionalGeneration
    if isinstance(model, PaliGemmaForConditionalGeneration):
        return ("PaliGemma's prompt is one prefix attended both ways: each of its keys depends on the whole prompt, "
                "its last token included")
    return None


def _host(a) -> np.ndarray:
    return np.asarray(a.numpy() if hasattr(a, "numpy") else a)


class ImageKeys:
    """A prompt's images as the prefix cache keys them: ``digests`` [(first token index, digest)], in prompt order;
    ``end`` one past its last image token (0: none); ``delta`` the rope delta its images give (Qwen2-VL's, else 0)."""

    def __init__(self, model, ids: List[int], images: dict):
        self.digests: List[Tuple[int, bytes]] = []
        self.end = 0
        arr = np.asarray(ids, np.int64)
        for kind, token, tokens, rows, pixel_key, per_item in model.media_layout(images):
            where = np.flatnonzero(arr == token)
            if len(where) != sum(tokens):
                raise ValueError(f"the prompt holds {len(where)} {kind} tokens (id {token}) but its {len(tokens)} "
                                 f"{kind}s fill {sum(tokens)}")
            pixels = _host(images[pixel_key])
            extra = {k: _host(images[k]) for k in per_item if images.get(k) is not None}
            t = r = 0
            for i, (n, m) in enumerate(zip(tokens, rows)):
                h = hashlib.sha256()
                part = np.ascontiguousarray(pixels[r:r + m])
                h.update(f"{kind}|{part.dtype.str}|{part.shape}|{int(where[t])}|{n}|".encode())
                h.update(part.tobytes())
                for k in sorted(extra):
                    row = np.ascontiguousarray(extra[k].reshape(len(tokens), -1)[i]) if extra[k].size else extra[k]
                    h.update(f"|{k}|{row.dtype.str}|".encode() + row.tobytes())
                self.digests.append((int(where[t]), h.digest()))
                t, r = t + n, r + m
            if len(where):
                self.end = max(self.end, int(where[-1]) + 1)
        self.digests.sort()
        self.delta = _rope_delta(model, arr, images) if self.digests else 0

    def marks(self, block_tokens: int) -> Dict[int, tuple]:
        """{block index: the digests of the images whose first token is in it}: prefix_cache.py's ``marks``."""
        out: Dict[int, tuple] = {}
        for start, digest in self.digests:
            out[start // block_tokens] = out.get(start // block_tokens, ()) + (digest,)
        return out


def _rope_delta(model, ids: np.ndarray, images: dict) -> int:
    """The rope delta a Qwen2-VL / Qwen2.5-VL prefill of ``ids`` with ``images`` leaves on its cache (its M-RoPE
    positions' largest + 1 - its length: the text after the images runs that far off its index), from the ids and
    grids alone; 0 for the other models (plain positions)."""
    from ..models.hf.qwen2_vl import Qwen2VLForConditionalGeneration, rope_index
    if not isinstance(model, Qwen2VLForConditionalGeneration):
        return 0
    row = ids[None]
    grid = images.get("image_grid_thw")
    video_grid = images.get("video_grid_thw")
    steps = None
    if video_grid is not None:
        video_grid = _host(video_grid).astype(np.int64)
        steps = model._video_steps(images.get("second_per_grid_ts"), len(video_grid))
    _, deltas = rope_index(row == model.image_token_id, None if grid is None else _host(grid).astype(np.int64),
                           model.merge, None, model.architecture,
                           video=None if video_grid is None else row == model.video_token_id, video_grid=video_grid,
                           video_steps=steps)
    return int(deltas[0])
