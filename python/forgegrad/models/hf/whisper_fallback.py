"""transformers' Whisper temperature fallback checks (``_need_fallback``): a window's tokens are decoded again at
the next temperature when they compress too well (repetition: ``compression_ratio_threshold``) or their mean
log-probability is too low (``logprob_threshold``); a window whose mean log-probability is too low while
<|nocaptions|> is likely enough after the start token (``no_speech_threshold``) is skipped as silence instead.
"""
from __future__ import annotations

import math
import zlib
from typing import Optional, Tuple

import numpy as np

__all__ = ["compression_ratio", "log_softmax", "mean_logprob", "verdict"]


def compression_ratio(tokens: np.ndarray, vocab: int) -> float:
    """The tokens' bytes (each little-endian in just enough bytes for the vocabulary) over their zlib size."""
    width = int(math.log2(vocab) / 8) + 1
    raw = b"".join(int(t).to_bytes(width, "little") for t in tokens)
    return len(raw) / len(zlib.compress(raw))


def log_softmax(x: np.ndarray) -> np.ndarray:
    """float32 log-softmax over the last axis (-inf entries stay -inf)."""
    x = np.asarray(x, np.float32)
    shifted = x - x.max(-1, keepdims=True)
    with np.errstate(divide="ignore"):
        return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def mean_logprob(step_logprobs: np.ndarray, count: int) -> np.float32:
    """transformers' ``_retrieve_avg_logprobs``: the first ``count`` steps' log-probabilities of their chosen
    tokens (the end token included), summed in float32 one by one, over ``count``."""
    total = np.float32(0)
    for value in step_logprobs[:count]:
        total = np.float32(total + value)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.float32(total / np.float32(count)) if count else np.float32(np.nan)


def verdict(tokens: np.ndarray, step_logprobs: Optional[np.ndarray], no_speech: Optional[float], vocab: int,
            compression_threshold: Optional[float], logprob_threshold: Optional[float],
            no_speech_threshold: Optional[float]) -> Tuple[bool, bool]:
    """(decode again at the next temperature, skip the window as silence) for one row's window ``tokens`` (its
    end token kept)."""
    again = skip = False
    if compression_threshold is not None and compression_ratio(tokens, vocab) > compression_threshold:
        again = True
    if logprob_threshold is not None:
        mean = mean_logprob(step_logprobs, min(len(tokens), len(step_logprobs)))
        if mean < logprob_threshold:
            again = True
        if no_speech_threshold is not None and mean < logprob_threshold and no_speech > no_speech_threshold:
            again, skip = False, True
    return again, skip
