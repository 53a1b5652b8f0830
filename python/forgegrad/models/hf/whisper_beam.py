"""Beam search for Whisper's generate (``num_beams`` > 1), as transformers' Whisper generate runs it: each window's
tokens come from the generic beam search (beam_search.search, the one forgegrad's ``generate`` uses, transformers'
``_beam_search`` step for step) after the window's decoder prompt, with Whisper's logits processors applied to the
log-probabilities in transformers' order (begin-suppressed tokens at the first new place, suppressed tokens, the
timestamp rules); ``length_penalty`` divides a finished hypothesis' log-probability by its number of new tokens to
that power, and the best hypothesis is the window's tokens, padded as transformers pads them.

The model side: the B prompts' encoder states and decoder prompts repeated K times (rows prompt-major), one KV
cache of B x K rows reordered to follow each step's source beams; a left-padded prompt's mask (previous tokens of
different lengths) grows by one column a step and, shared by a prompt's beams, needs no reordering.

What transformers' Whisper generate reads of a beam search besides its tokens, kept here as it reads them: each
best hypothesis' length; the tokens fed to the first row (first prompt, first beam) at each step, whose
cross-attention transformers' token timestamps take for the steps after a shorter hypothesis ended (whisper_alignment
``window_times``); the prompt's logits at the <|nocaptions|> place (``no_speech_threshold``); and each hypothesis'
steps' log-probabilities under Whisper's processors (``beam_logprobs``: ``logprob_threshold``).
"""
from __future__ import annotations

from typing import List, NamedTuple, Optional, Tuple

import numpy as np

from ...tensor import Tensor
from .beam_search import fill_token, search
from .whisper_fallback import log_softmax

__all__ = ["BeamWindow", "beam_window", "beam_logprobs", "cross_states"]


def cross_states(model, states: Tensor) -> list:
    """Each decoder layer's encoder keys and values, (B, heads, positions, head_dim) C-contiguous: the attention
    kernel takes them so, and the heads' split otherwise leaves a view that every step would copy again (a quarter
    of a whisper-tiny decode step). Inference only: the copies leave the autograd graph."""
    return [tuple(Tensor._wrap(np.ascontiguousarray(t.numpy())) for t in kv) for kv in model.cross_kv(states)]


class _WhisperProcessors:
    """Whisper's processors on a step's log-probabilities (B*K, V), as ``_decode_window`` applies them to logits:
    transformers' generic ones of the call's settings first (whisper_settings.py; ``padding`` (B, P): the prompts'
    left padding; ``max_new_tokens``: the window's limit), then Whisper's."""

    active = True

    def __init__(self, run, prompt_length: int, padding: Optional[np.ndarray], max_new_tokens: int):
        self.run, self.prompt_length = run, prompt_length
        self.generic = run.processors(prompt_length, padding, max_new_tokens)
        self.grammar = None if run.grammar is None else run.grammar.window()  # after Whisper's processors

    def __call__(self, sequences: np.ndarray, logp: np.ndarray) -> np.ndarray:
        run, new = self.run, sequences[:, self.prompt_length:]
        if self.generic is not None:
            logp = self.generic(sequences, logp)
        if new.shape[1] == 0 and run.begin:
            logp[:, run.begin] = -np.inf
        if run.suppress:
            logp[:, run.suppress] = -np.inf
        if run.rules is not None:
            run.rules(logp, new)
        if self.grammar is not None:
            self.grammar(new, logp)
        return logp


class BeamWindow(NamedTuple):
    """One window's beam search: ``tokens`` (B, n) each prompt's best hypothesis (its end token kept, the shorter ones
    padded with the fill token), ``lengths`` (B,) their lengths, ``first_row`` (with ``trace``) the new tokens fed to
    row 0 of the B x K rows at steps 1, 2, ... (step t: t tokens), ``no_speech`` (with ``no_speech_at``) the logits
    (B, vocab) transformers' no-speech detection reads, else None."""
    tokens: np.ndarray
    lengths: np.ndarray
    first_row: Optional[List[np.ndarray]]
    no_speech: Optional[np.ndarray]


def beam_window(run, states, prompt: np.ndarray, padding: Optional[np.ndarray], max_new_tokens: int,
                beams: Tuple[int, float, object], trace: bool = False, no_speech_at: Optional[int] = None,
                sampler=None) -> BeamWindow:
    """One window's beam search after ``prompt`` (B, P). ``beams``: (num_beams, length_penalty, early_stopping).
    ``padding`` (B, P): False where the prompt is left padding. ``trace``: keep the tokens fed to row 0 at each step
    (token timestamps). ``no_speech_at``: the prompt place whose logits give <|nocaptions|>'s probability.
    ``sampler``: a greedy Sampler whose watermark marks each beam's log-probabilities after Whisper's processors
    and whose ``renormalize`` (renormalize_logits) takes their log-softmax then, as transformers' beam search
    applies them."""
    steps = run.steps
    K, length_penalty, early_stopping = beams
    B, P = prompt.shape
    rows_states = steps.rows(states, np.repeat(np.arange(B), K))
    cross = steps.cross(rows_states)
    ids = np.repeat(prompt, K, axis=0)
    mask = {"rows": None if padding is None else np.repeat(padding, K, axis=0)}
    cache = steps.new_cache(B * K, P + max_new_tokens)
    logits = steps.decode(ids, rows_states, cross=cross, cache=cache, decoder_attention_mask=mask["rows"])
    no_speech = None
    if no_speech_at is not None:
        # transformers runs the model again on the B prompts (one row each) when the start tokens are several, else
        # reads the first step's scores of the B x K rows by place: rows 0..B-1, the prompts' beams in turn (a
        # prompt's K rows are alike at the first step)
        no_speech = np.array(logits[::K] if run.start_tokens > 1 else logits[:B], np.float32)[:, no_speech_at]
    fed = {"rows": np.zeros((B * K, 0), np.int64), "first": [] if trace else None}

    def next_logits(tokens: np.ndarray, rows: np.ndarray) -> np.ndarray:
        steps.reorder(cache, rows)  # the beams of one prompt share its states, cross keys and padding
        if trace:
            fed["rows"] = np.concatenate([fed["rows"][rows], tokens[:, None]], axis=1)
            fed["first"].append(fed["rows"][0].copy())
        if mask["rows"] is not None:
            mask["rows"] = np.concatenate([mask["rows"], np.ones((B * K, 1), bool)], axis=1)
        return steps.decode(tokens[:, None], rows_states, cross=cross, cache=cache,
                            decoder_attention_mask=mask["rows"])[:, -1]

    sequences, lengths = search(logits[:, -1], next_logits, B, K, max_new_tokens, run.eos,
                                fill_token(run.pad, run.eos), length_penalty, early_stopping,
                                _WhisperProcessors(run, P, padding, max_new_tokens), ids, sampler=sampler)
    lengths = lengths[:, 0]
    return BeamWindow(sequences[:, 0, :int(lengths.max())], lengths, fed["first"], no_speech)


def beam_logprobs(run, states, prompt: np.ndarray, padding: Optional[np.ndarray], tokens: np.ndarray,
                  max_new_tokens: int, watermark=None, budget: int = 1 << 26) -> np.ndarray:
    """Each step's log-probability of its token (B, n) for beam search's hypotheses ``tokens`` (B, n) after
    ``prompt`` (B, P) in a window of up to ``max_new_tokens``, as transformers' fallback reads a beam's: the step's
    log-softmax under Whisper's processors and the ``watermark`` (a watermarking.Watermark, or None) (the scores
    beam search ranked), normalised again. transformers takes them from the decoding steps of the beam that made
    each token; a step's scores depend on its prefix only, so one decoder pass over the prompt and the tokens gives
    them (rows in groups of at most ``budget`` logits)."""
    steps = run.steps
    B, P = prompt.shape
    n = tokens.shape[1]
    ids = np.concatenate([prompt, tokens[:, :-1]], axis=1)
    if padding is not None:
        padding = np.concatenate([padding, np.ones((B, n - 1), bool)], axis=1)
    process = _WhisperProcessors(run, P, padding, max_new_tokens)
    out = np.zeros((B, n), np.float32)
    group = max(1, budget // (ids.shape[1] * run.model.vocab_size))
    for lo in range(0, B, group):
        part = np.arange(lo, min(B, lo + group))
        rows_states = steps.rows(states, part)
        logits = steps.decode(ids[part], rows_states, cross=steps.cross(rows_states),
                              decoder_attention_mask=None if padding is None else padding[part])
        for t in range(n):
            logp = process(ids[part, :P + t], log_softmax(logits[:, P - 1 + t]))
            if watermark is not None:
                logp = watermark(ids[part, :P + t], logp)
            out[part, t] = np.take_along_axis(log_softmax(logp), tokens[part, t:t + 1], -1)[:, 0]
    return out
