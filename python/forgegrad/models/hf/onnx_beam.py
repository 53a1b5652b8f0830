"""Beam search in onnxruntime on the graphs ``export_with_past`` and ``export_seq2seq`` write
(``generate_onnx(..., num_beams=K)``, ``generate_onnx_seq2seq(..., num_beams=K)``).

The search itself is ``beam_search.search``, the one ``generate(model, ..., num_beams=K)`` runs; onnxruntime
only supplies the logits. A decoder's prompt runs once on its B rows (no past), and its last position's
logits and its ``present.*`` outputs are repeated K times (each prompt's beams start from the same cache).
Every later step feeds each of the B * K rows its new token, with the past gathered along the batch axis so
that row r holds what its source beam's row held (``present.<...>`` -> ``past_key_values.<...>``, by name).
An encoder-decoder's encoder runs once on the B inputs; its cross-attention keys and values
(``present.<i>.encoder.*``) and the encoder mask are repeated K times and never reordered (each prompt's
beams share them); only the decoder's own cache is gathered.
"""
from __future__ import annotations

import numbers

import numpy as np

from .beam_search import eos_list, fill_token, search
from .logits_processors import LogitsProcessors

__all__ = ["beam_settings", "beam_onnx", "beam_onnx_seq2seq", "beam_result"]


def beam_settings(who: str, num_beams, length_penalty, early_stopping, num_return_sequences, do_sample):
    """(num_beams, length_penalty, early_stopping, num_return_sequences), checked as ``generate`` checks them
    (``do_sample`` with ``num_beams`` > 1: beam sampling); R = ``num_return_sequences`` is at most
    ``num_beams`` in beam search, and more than 1 with one beam only when sampling (R draws per prompt)."""
    if not isinstance(num_beams, numbers.Integral) or isinstance(num_beams, bool) or num_beams < 1:
        raise ValueError(f"{who}: num_beams must be a positive int, got {num_beams!r}")
    R = num_return_sequences
    if not isinstance(R, numbers.Integral) or isinstance(R, bool) or R < 1:
        raise ValueError(f"{who}: num_return_sequences must be an int >= 1, got {R!r}")
    if not isinstance(do_sample, bool):
        raise TypeError(f"{who}: do_sample must be a bool, got {type(do_sample).__name__}")
    if num_beams == 1:
        if R > 1 and not do_sample:
            raise ValueError(f"{who}: greedy decoding gives one sequence per prompt: num_return_sequences={R} needs "
                             "do_sample=True or num_beams >= num_return_sequences")
        return 1, 1.0, False, int(R)
    if R > num_beams:
        raise ValueError(f"{who}: num_return_sequences ({R}) must be <= num_beams ({num_beams})")
    if (not isinstance(length_penalty, numbers.Real) or isinstance(length_penalty, bool)
            or not np.isfinite(length_penalty)):
        raise ValueError(f"{who}: length_penalty must be a number, got {length_penalty!r}")
    if not (early_stopping is True or early_stopping is False or early_stopping == "never"):
        raise ValueError(f"{who}: early_stopping must be True, False or \"never\", got {early_stopping!r}")
    return int(num_beams), float(length_penalty), early_stopping, int(R)


def _past_name(output_name: str) -> str:
    """The input a graph's ``present.<...>`` output feeds on the next call: ``past_key_values.<...>``."""
    return "past_key_values." + output_name[len("present."):]


class _Cache:
    """The B * K rows' past, by input name, gathered by source row before each step."""

    def __init__(self, past: dict):
        self.past = past

    def reorder(self, rows: np.ndarray) -> dict:
        if not np.array_equal(rows, np.arange(len(rows))):
            self.past = {name: a[rows] for name, a in self.past.items()}
        return self.past

    def update(self, session, present) -> None:
        names = [o.name for o in session.get_outputs()[1:]]
        self.past = {_past_name(n): a for n, a in zip(names, present)}


def beam_result(first_tokens: np.ndarray, seqs: np.ndarray, lengths: np.ndarray, R: int) -> np.ndarray:
    """(B * R, P + n): each row's first tokens (the prompt, or the decoder start) and its hypothesis, n the
    longest returned hypothesis (shorter ones filled as the search fills them)."""
    seqs = seqs.reshape(-1, seqs.shape[-1])
    return np.concatenate([np.repeat(first_tokens, R, axis=0), seqs[:, :lengths.max()]], axis=1)


def beam_onnx(session, ids: np.ndarray, mask: np.ndarray, max_new_tokens: int, eos_token_id, pad_token_id,
              num_beams: int, length_penalty: float, early_stopping, num_return: int = 1, sampler=None, process=None,
              stopping=None) -> np.ndarray:
    """Beam search (``sampler`` sampling: beam sampling) on an ``export_with_past`` graph (``session``, checked by
    the caller) after left-padded prompts ``ids`` / ``mask`` (B, T) int64: (B * R, T + n), as ``generate(model,
    ..., num_beams=K)`` returns. ``process`` (LogitsProcessors) and ``stopping`` (stopping.Stopping): generate's
    processors and stopping criteria, applied by the search as generate's beam search applies them."""
    from .onnx_export import _recompute_at
    if _recompute_at(session) is not None:
        raise ValueError("generate_onnx: num_beams > 1 is not supported on a graph whose cache is recomputed past "
                         "the original context (Phi-3's longrope), as generate refuses it")
    B, T = ids.shape
    K = num_beams
    inputs = session.get_inputs()
    feed = {"input_ids": ids, "attention_mask": mask}
    for i in inputs[2:]:
        feed[i.name] = np.zeros((B, i.shape[1], 0, i.shape[3]), np.float32)
    logits, *present = session.run(None, feed)
    cache = _Cache({})
    cache.update(session, [np.repeat(p, K, axis=0) for p in present])
    state = {"mask": np.repeat(mask, K, axis=0)}

    def next_logits(tokens, rows):
        # rows stay within each prompt's beams: the prompt's mask is the same for all of them
        state["mask"] = np.concatenate([state["mask"], np.ones((B * K, 1), np.int64)], axis=1)
        step = {"input_ids": tokens[:, None].astype(np.int64), "attention_mask": state["mask"], **cache.reorder(rows)}
        out, *new = session.run(None, step)
        cache.update(session, new)
        return out[:, -1]

    eos = eos_list(eos_token_id)
    seqs, lengths = search(np.repeat(logits[:, -1], K, axis=0), next_logits, B, K, int(max_new_tokens), eos,
                           fill_token(pad_token_id, eos), length_penalty, early_stopping,
                           LogitsProcessors() if process is None else process, np.repeat(ids, K, axis=0), num_return,
                           sampler, stopping)
    return beam_result(ids, seqs, lengths, num_return)


def beam_onnx_seq2seq(encoder, decoder, ids: np.ndarray, mask: np.ndarray, decoder_start_token_id: int,
                      max_new_tokens: int, eos_token_id, pad_token_id, num_beams: int, length_penalty: float,
                      early_stopping, num_return: int = 1, sampler=None, process=None, stopping=None) -> np.ndarray:
    """Beam search on ``export_seq2seq``'s graphs (sessions, checked by the caller): (B * R, 1 + n), the decoder
    start token first, as ``generate(model, ..., num_beams=K)`` returns an encoder-decoder's tokens. ``process``
    (generate's LogitsProcessors: the forced first / last tokens among them) applies to the log-probabilities, as
    transformers' processors do in beam search; ``stopping`` as ``beam_onnx``'s."""
    B, K = ids.shape[0], num_beams
    enc_out = encoder.run(None, {"input_ids": ids, "attention_mask": mask})
    cross = {_past_name(o.name): np.repeat(a, K, axis=0)
             for o, a in zip(encoder.get_outputs()[1:], enc_out[1:])}  # never reordered: one per prompt
    fixed = {"encoder_attention_mask": np.repeat(mask, K, axis=0), **cross}
    cache = _Cache({i.name: np.zeros((B * K, i.shape[1], 0, i.shape[3]), np.float32)
                    for i in decoder.get_inputs()[2:] if ".decoder." in i.name})

    def step(tokens):
        out, *present = decoder.run(None, {"input_ids": tokens[:, None].astype(np.int64), **fixed, **cache.past})
        cache.update(decoder, present)
        return out[:, -1]

    def next_logits(tokens, rows):
        cache.reorder(rows)
        return step(tokens)

    start = int(decoder_start_token_id)
    first = step(np.full(B * K, start, np.int64))
    eos = eos_list(eos_token_id)
    seqs, lengths = search(first, next_logits, B, K, int(max_new_tokens), eos, fill_token(pad_token_id, eos),
                           length_penalty, early_stopping, LogitsProcessors() if process is None else process,
                           np.full((B * K, 1), start, np.int64), num_return, sampler, stopping)
    return beam_result(np.full((B, 1), start, np.int64), seqs, lengths, num_return)
