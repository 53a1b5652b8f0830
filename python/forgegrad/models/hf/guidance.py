"""Classifier-free guidance for a decoder's ``generate`` (``guidance_scale``), as transformers 5's
UnbatchedClassifierFreeGuidanceLogitsProcessor does it (https://arxiv.org/abs/2306.17806): the model runs a second
time on an unconditional input, ``negative_prompt_ids`` (with ``negative_prompt_attention_mask``) or, without one,
each row's last prompt token, fed every new token on its own KV cache; each step's scores become
``scale * (log_softmax(scores) - log_softmax(uncond)) + log_softmax(uncond)``, first of the processors.

As transformers', the unconditional rows follow the rows of the call in order: in beam search its cache is not
reordered when beams move (transformers' is not), and its positions count from 0 over the whole unconditional input,
left padding included (transformers calls the model's forward, which does not skip padding as generate does).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from ...autograd import no_grad

__all__ = ["ClassifierFreeGuidance", "guidance"]


def _log_softmax32(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    shifted = x - x.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


class ClassifierFreeGuidance:
    """The processor ``f(sequences, scores) -> scores`` of one generate call. ``ids``/``mask`` (rows, S): the
    unconditional input (None: each row's last token when first called); ``max_new_tokens`` sizes its cache."""

    def __init__(self, model, scale: float, max_new_tokens: int, ids: Optional[np.ndarray] = None,
                 mask: Optional[np.ndarray] = None):
        self.model, self.scale, self.max_new_tokens = model, np.float32(scale), int(max_new_tokens)
        self.ids, self.mask = ids, mask
        self.cache = None

    def _unconditional(self, sequences: np.ndarray) -> np.ndarray:
        if self.cache is None:
            ids = sequences[:, -1:] if self.ids is None else self.ids
            self.mask = np.ones(ids.shape, bool) if self.mask is None else self.mask.astype(bool)
            rows, S = ids.shape
            if rows != len(sequences):
                raise ValueError(f"generate: negative_prompt_ids has {rows} rows but generate decodes "
                                 f"{len(sequences)} (transformers' guidance runs it unbatched: one row per row)")
            self.cache = self.model.new_cache(rows, S + self.max_new_tokens)
            positions = np.broadcast_to(np.arange(S), (rows, S))
            return self.model(ids, self.mask, positions, cache=self.cache, logits_to_keep=1).numpy()[:, -1]
        self.mask = np.concatenate([self.mask, np.ones((len(self.mask), 1), bool)], axis=1)
        L = self.mask.shape[1]
        positions = np.full((len(self.mask), 1), L - 1)
        return self.model(sequences[:, -1:], self.mask, positions, cache=self.cache).numpy()[:, -1]

    def __call__(self, sequences: np.ndarray, scores: np.ndarray) -> np.ndarray:
        scores = _log_softmax32(scores)
        with no_grad():
            uncond = _log_softmax32(self._unconditional(np.asarray(sequences, np.int64)))
        return self.scale * (scores - uncond) + uncond


def guidance(model, scale: Optional[float], max_new_tokens: int, negative_prompt_ids=None,
             negative_prompt_attention_mask=None, rows: int = 1) -> Optional[ClassifierFreeGuidance]:
    """generate's guidance processor of ``scale`` (read_settings': None is none), checked: a decoder-only model,
    ``negative_prompt_ids`` (B, S) token ids and its mask of that shape, ``rows`` (the rows generate decodes: the
    prompts, times the beams or the sequences returned) one per negative prompt row."""
    if scale is None:
        return None
    if getattr(model, "is_encoder_decoder", False):
        raise ValueError("generate: guidance_scale needs a decoder-only model (transformers' guidance runs the "
                         "model's forward on the unconditional tokens alone); give guidance_scale=None")
    ids = mask = None
    if negative_prompt_ids is not None:
        ids = np.asarray(negative_prompt_ids)
        if ids.ndim == 1:
            ids = ids[None]
        if (ids.ndim != 2 or ids.shape[1] == 0 or not np.issubdtype(ids.dtype, np.integer) or (ids < 0).any()
                or (ids >= model.vocab_size).any()):
            raise ValueError(f"generate: negative_prompt_ids must be (batch, tokens) token ids in [0, "
                             f"{model.vocab_size}), got {negative_prompt_ids!r}")
        ids = ids.astype(np.int64)
        if ids.shape[0] != rows:
            raise ValueError(f"generate: negative_prompt_ids has {ids.shape[0]} rows but generate decodes {rows} "
                             "(transformers' guidance is unbatched: one negative prompt row per decoded row, so "
                             "one per prompt with num_beams=1 and num_return_sequences=1)")
        if ids.shape[1] + max_new_tokens > model.max_positions:
            raise ValueError(f"generate: negative_prompt_ids ({ids.shape[1]} tokens) + max_new_tokens "
                             f"({max_new_tokens}) exceed the model's {model.max_positions} positions")
    if negative_prompt_attention_mask is not None:
        if ids is None:
            raise ValueError("generate: negative_prompt_attention_mask needs negative_prompt_ids")
        mask = np.asarray(negative_prompt_attention_mask)
        mask = mask[None] if mask.ndim == 1 else mask
        if mask.shape != ids.shape:
            raise ValueError(f"generate: negative_prompt_attention_mask must have negative_prompt_ids' shape "
                             f"{ids.shape}, got {mask.shape}")
        mask = mask != 0
    return ClassifierFreeGuidance(model, scale, max_new_tokens, ids, mask)
