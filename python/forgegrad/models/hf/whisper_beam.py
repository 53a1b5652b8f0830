"""Beam search for Whisper's generate (``num_beams`` > 1), as transformers' Whisper generate runs it: each window's
tokens come from the generic beam search (beam_search.search, the one forgegrad's ``generate`` uses, transformers'
``_beam_search`` step for step) after the window's decoder prompt, with Whisper's logits processors applied to the
log-probabilities in transformers' order (begin-suppressed tokens at the first new place, suppressed tokens, the
timestamp rules); ``length_penalty`` divides a finished hypothesis' log-probability by its number of new tokens to
that power, and the best hypothesis is the window's tokens, padded as transformers pads them.

The model side: the B prompts' encoder states and decoder prompts repeated K times (rows prompt-major), one KV
cache of B x K rows reordered to follow each step's source beams; a left-padded prompt's mask (previous tokens of
different lengths) grows by one column a step and, shared by a prompt's beams, needs no reordering.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from ...tensor import Tensor
from .beam_search import fill_token, search

__all__ = ["beam_window", "cross_states"]


def cross_states(model, states: Tensor) -> list:
    """Each decoder layer's encoder keys and values, (B, heads, positions, head_dim) C-contiguous: the attention
    kernel takes them so, and the heads' split otherwise leaves a view that every step would copy again (a quarter
    of a whisper-tiny decode step). Inference only: the copies leave the autograd graph."""
    return [tuple(Tensor._wrap(np.ascontiguousarray(t.numpy())) for t in kv) for kv in model.cross_kv(states)]


class _WhisperProcessors:
    """Whisper's processors on a step's log-probabilities (B*K, V), as ``_decode_window`` applies them to logits."""

    active = True

    def __init__(self, run, prompt_length: int):
        self.run, self.prompt_length = run, prompt_length

    def __call__(self, sequences: np.ndarray, logp: np.ndarray) -> np.ndarray:
        run, new = self.run, sequences[:, self.prompt_length:]
        if new.shape[1] == 0 and run.begin:
            logp[:, run.begin] = -np.inf
        if run.suppress:
            logp[:, run.suppress] = -np.inf
        if run.rules is not None:
            run.rules(logp, new)
        return logp


def beam_window(run, states, prompt: np.ndarray, padding: Optional[np.ndarray], max_new_tokens: int,
                beams: Tuple[int, float, object]) -> np.ndarray:
    """One window's new tokens (B, n) by beam search after ``prompt`` (B, P): each row's best hypothesis (its end
    token kept), the shorter ones padded with the pad token. ``beams``: (num_beams, length_penalty,
    early_stopping). ``padding`` (B, P): False where the prompt is left padding."""
    steps = run.steps
    K, length_penalty, early_stopping = beams
    B, P = prompt.shape
    rows_states = steps.rows(states, np.repeat(np.arange(B), K))
    cross = steps.cross(rows_states)
    ids = np.repeat(prompt, K, axis=0)
    mask = {"rows": None if padding is None else np.repeat(padding, K, axis=0)}
    cache = steps.new_cache(B * K, P + max_new_tokens)
    first = steps.decode(ids, rows_states, cross=cross, cache=cache, decoder_attention_mask=mask["rows"])[:, -1]

    def next_logits(tokens: np.ndarray, rows: np.ndarray) -> np.ndarray:
        steps.reorder(cache, rows)  # the beams of one prompt share its states, cross keys and padding
        if mask["rows"] is not None:
            mask["rows"] = np.concatenate([mask["rows"], np.ones((B * K, 1), bool)], axis=1)
        return steps.decode(tokens[:, None], rows_states, cross=cross, cache=cache,
                            decoder_attention_mask=mask["rows"])[:, -1]

    sequences, lengths = search(first, next_logits, B, K, max_new_tokens, run.eos, fill_token(run.pad, run.eos),
                                length_penalty, early_stopping, _WhisperProcessors(run, P), ids)
    return sequences[:, 0, :int(lengths[:, 0].max())]
