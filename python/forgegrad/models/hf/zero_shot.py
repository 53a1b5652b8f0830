"""Texts and images into CLIP's and SigLIP's (SigLIP 2's) inputs, and zero-shot image classification.

``ImageTextProcessor.from_pretrained(DIR)`` pairs a checkpoint's ``tokenizer.json`` (forgegrad's tokenizer, the
``tokenizers`` extra) with its ``preprocessor_config.json`` (image_processing.py), as transformers' ``CLIPProcessor``
and ``SiglipProcessor`` do: CLIP's texts are padded to the longest with an attention mask, SigLIP's to the text
tower's length (64) without one, as SigLIP's tokenizer gives them and the model was trained. SigLIP 2's images come
as patches with ``pixel_attention_mask`` and ``spatial_shapes`` (siglip2_processing.py).

    >>> model = forgegrad.models.from_pretrained(DIR)
    >>> processor = ImageTextProcessor.from_pretrained(DIR)
    >>> zero_shot_image_classification(model, processor, images, ["cat", "dog"])
    [[{'score': 0.93, 'label': 'cat'}, {'score': 0.07, 'label': 'dog'}]]
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence

import numpy as np

from ._files import read_config
from .clip import CLIPModel

__all__ = ["ImageTextProcessor", "zero_shot_image_classification"]


def _text_config(cfg: dict) -> dict:
    return cfg.get("text_config") or cfg


class ImageTextProcessor:
    """``processor(text=None, images=None) -> dict`` of numpy arrays: ``input_ids`` (B, T) int64 and, for CLIP,
    ``attention_mask`` (B, T); ``pixel_values`` (N, 3, H, W) float32. ``siglip``: pad every text to ``max_length``
    and give no mask (SigLIP's way), else pad to the longest text with a mask (CLIP's). Texts longer than
    ``max_length`` tokens (the text tower's position table) are refused, not cut."""

    def __init__(self, tokenizer, image_processor, max_length: int, pad_token_id: int, siglip: bool):
        self.tokenizer, self.image_processor = tokenizer, image_processor
        self.max_length, self.pad_token_id, self.siglip = int(max_length), int(pad_token_id), bool(siglip)

    @classmethod
    def from_pretrained(cls, path) -> "ImageTextProcessor":
        """The processor of a CLIP or SigLIP checkpoint directory: its ``config.json`` (the text tower's length and
        padding id, which family), ``tokenizer.json`` and, where present, ``preprocessor_config.json``.

        Raises FileNotFoundError without tokenizer.json (SigLIP checkpoints that ship only ``spiece.model`` need it
        converted, e.g. by transformers' ``AutoTokenizer(...).save_pretrained``)."""
        from .image_processing import load_image_processor
        from .tokenizer import HFTokenizer, _json_object
        path = os.fspath(path)
        cfg = read_config(path)
        text = _text_config(cfg)
        file = os.path.join(path, "tokenizer.json")
        if not os.path.isfile(file):
            raise FileNotFoundError(f"ImageTextProcessor: {path!r} has no tokenizer.json")
        tok = HFTokenizer(file)
        siglip = str(cfg.get("model_type", "")).startswith("siglip")
        pad = text.get("pad_token_id")
        tok_cfg = os.path.join(path, "tokenizer_config.json")
        named = _json_object(tok_cfg).get("pad_token") if os.path.isfile(tok_cfg) else None
        named = named.get("content") if isinstance(named, dict) else named
        if isinstance(named, str) and tok.token_id(named) is not None:
            pad = tok.token_id(named)  # the tokenizer's own padding token, as transformers pads
        if not isinstance(pad, int):
            pad = text.get("eos_token_id", 0)
        images = os.path.join(path, "preprocessor_config.json")
        processor = load_image_processor(path) if os.path.isfile(images) else None
        return cls(tok, processor, text.get("max_position_embeddings", 64 if siglip else 77), pad, siglip)

    def tokenize(self, text) -> Dict[str, np.ndarray]:
        texts = [text] if isinstance(text, str) else list(text)
        if not texts or not all(isinstance(t, str) for t in texts):
            raise TypeError("ImageTextProcessor: text must be a string or a non-empty list of strings")
        rows = [self.tokenizer.encode(t, add_special_tokens=True) for t in texts]
        for i, row in enumerate(rows):
            if len(row) > self.max_length:
                raise ValueError(f"ImageTextProcessor: text {i} is {len(row)} tokens, past the {self.max_length} "
                                 "the text tower takes")
        return self.pad(rows)

    def pad(self, rows: Sequence[Sequence[int]]) -> Dict[str, np.ndarray]:
        """Token-id rows (each at most ``max_length``) as the model's text inputs: padded on the right with
        ``pad_token_id`` to the longest with an ``attention_mask`` (CLIP), or to ``max_length`` without (SigLIP)."""
        T = self.max_length if self.siglip else max(len(r) for r in rows)
        ids = np.full((len(rows), T), self.pad_token_id, np.int64)
        mask = np.zeros((len(rows), T), np.int64)
        for i, row in enumerate(rows):
            ids[i, :len(row)], mask[i, :len(row)] = row, 1
        return {"input_ids": ids} if self.siglip else {"input_ids": ids, "attention_mask": mask}

    def __call__(self, text=None, images=None) -> Dict[str, np.ndarray]:
        if text is None and images is None:
            raise ValueError("ImageTextProcessor: give text, images or both")
        out = {} if text is None else self.tokenize(text)
        if images is not None:
            if self.image_processor is None:
                raise ValueError("ImageTextProcessor: the checkpoint has no preprocessor_config.json to make "
                                 "pixel_values from images")
            out.update(self.image_processor(images))
        return out


def zero_shot_image_classification(model, processor: ImageTextProcessor, images, candidate_labels: Sequence[str],
                                   hypothesis_template: str = "This is a photo of {}.",
                                   top_k: Optional[int] = None) -> List[List[dict]]:
    """Score each image against ``candidate_labels`` put into ``hypothesis_template``, as transformers'
    zero-shot-image-classification pipeline: a softmax over the labels for CLIP, each label's own sigmoid
    probability for SigLIP and SigLIP 2. Returns, per image, ``[{"score": float, "label": str}, ...]`` best first (the
    first ``top_k``). ``model``: a CLIPModel, SiglipModel or Siglip2Model; ``images``: one image or a list, as the
    processor takes."""
    from ...autograd import no_grad
    if not isinstance(model, CLIPModel):
        raise TypeError(f"zero_shot_image_classification: model must be a CLIPModel, SiglipModel or Siglip2Model, got "
                        f"{type(model).__name__}")
    labels = [candidate_labels] if isinstance(candidate_labels, str) else list(candidate_labels)
    if not labels:
        raise ValueError("zero_shot_image_classification: candidate_labels must hold at least one label")
    if "{}" not in hypothesis_template:
        raise ValueError(f"zero_shot_image_classification: hypothesis_template must hold {{}} where the label goes, "
                         f"got {hypothesis_template!r}")
    inputs = processor([hypothesis_template.format(label) for label in labels], images)
    # SigLIP 2's patchified images come with their mask and patch grids
    patches = {k: inputs[k] for k in ("pixel_attention_mask", "spatial_shapes") if k in inputs}
    with no_grad():
        logits = model(inputs["input_ids"], inputs["pixel_values"], inputs.get("attention_mask"),
                       **patches).logits_per_image
    logits = logits.numpy().astype(np.float64)
    if model.model_type in ("siglip", "siglip2"):
        scores = 1 / (1 + np.exp(-logits))
    else:
        e = np.exp(logits - logits.max(-1, keepdims=True))
        scores = e / e.sum(-1, keepdims=True)
    k = len(labels) if top_k is None else max(0, int(top_k))
    return [[{"score": float(row[j]), "label": labels[j]} for j in np.argsort(-row, kind="stable")[:k]]
            for row in scores]
