"""Beam search in the completions APIs: vLLM's ``use_beam_search`` (and ``length_penalty``) on completions and chat,
with or without structured outputs.

A request with ``use_beam_search: true`` is decoded by ``generate(..., num_beams=K, num_return_sequences=n,
do_sample=False)`` in Python (transformers' beam search), alone on the server's worker thread (the batched
engines decode one beam per row): K, the beam width, is ``best_of`` where given (vLLM's older API), else ``n`` (its
current one); the n best hypotheses come back as the n choices, best first. The request's grammar
(``response_format``, ``guided_*``, a forcing ``tool_choice``: structured.py) constrains every beam, each beam's
grammar state following it as beams move and split (models/hf/constrained.py); a beam whose grammar reaches a dead end
(a character the tokenizer cannot spell) is dropped, and the request fails (a 400 naming the field, code
"grammar_failed") only when no beam is left. The request's penalties, ``logit_bias``, ``allowed_token_ids`` and
``bad_words`` apply to each beam's own tokens (on the log-probabilities, where beam search applies its processors),
the checkpoint's generation settings as ``generate`` reads them (its ``max_time`` ends the search, every beam, as
transformers' MaxTimeCriteria). ``stop`` strings (the request's, the checkpoint's) end each returned hypothesis's
text where they occur, as in a completion decoded one beam at a time; they do not end beams during the search.

Beam search is deterministic: ``temperature`` (0 or 1 only, vLLM's defaults, neither rescales), ``top_p``, ``top_k``
and ``min_p`` do not apply, and other values are a 400 naming the field; ``length_penalty`` needs
``use_beam_search``, and its magnitude is bounded by ``max_tokens``: the hypotheses' float32 scores are divided by
their length ** length_penalty, which must neither overflow (a banned continuation's -inf / inf is NaN, and a NaN
ranks first) nor underflow to 0 (|length_penalty| * ln(max_tokens + 1) <= 80). A client that goes away (a streamed
request's connection closed) stops the search at its next step, as it stops a completion decoded one token at a
time. Streamed, each choice's text comes once the search is done (the hypotheses are known only then), in one piece
or a few, then the closing chunks; its ``logprobs`` too (from one scoring forward over the tokens it reports, as a
non-streamed answer's: the same numbers; a chat prompt with images is prefilled with them for it).
"""
from __future__ import annotations

import math
import threading
from typing import Callable, List, Optional

import numpy as np

from .completion_request import CompletionError, CompletionRequest, bad, flag, is_number
from .text_stream import Completion

MAX_PENALTY_EXPONENT = 80.0  # |length_penalty| * ln(max_tokens + 1): length ** length_penalty within float32's range


class _Cancelled(Exception):
    """Raised in the search when the request was cancelled (its client went away)."""


def beam_settings(obj: dict, req: CompletionRequest) -> None:
    """``use_beam_search`` and ``length_penalty`` of a request body (completions or chat, after its other fields):
    sets ``req.num_beams`` (None: one beam) and ``req.length_penalty``; a beam width of ``best_of`` takes the place
    of best_of's candidates."""
    beams = flag(obj, "use_beam_search")
    v = obj.get("length_penalty")
    if v is not None:
        if not is_number(v):
            raise bad("length_penalty", "a number (1: the log-probability per token; 0: the sum)", v)
        if not beams:
            raise CompletionError(400, "length_penalty needs use_beam_search: true", "length_penalty")
        req.length_penalty = float(v)
    if not beams or req.max_tokens == 0:  # echo with max_tokens 0 scores a text: nothing searched
        return
    if req.length_penalty is not None and abs(req.length_penalty) * math.log(req.max_tokens + 1) > \
            MAX_PENALTY_EXPONENT:
        raise CompletionError(400, f"length_penalty {req.length_penalty:g} is too large in magnitude for max_tokens "
                                   f"{req.max_tokens}: beam search divides each hypothesis's score by its length ** "
                                   "length_penalty, which must stay within float32's range (|length_penalty| * "
                                   f"ln(max_tokens + 1) <= {MAX_PENALTY_EXPONENT:g})", "length_penalty")
    if req.temperature not in (0.0, 1.0):
        raise CompletionError(400, f"temperature {req.temperature:g} does not apply to beam search, which is "
                                   "deterministic: give 0 or 1, or leave it out", "temperature")
    for name, given in (("top_p", req.top_p < 1), ("top_k", req.top_k is not None),
                        ("min_p", req.min_p is not None)):
        if given:
            raise CompletionError(400, f"{name} does not apply to beam search, which is deterministic: leave it out",
                                  name)
    req.num_beams = req.best_of or req.n
    req.best_of = None  # the beams are the candidates: no sampled ones to rank


def _rowwise(req: CompletionRequest, ids: List[int], start: int):
    """The request's own processors (allowed_token_ids, bad_words, penalties, logit_bias) on each beam's row."""
    def process(sequences, scores):
        scores = np.array(scores, np.float32)
        for r in range(len(scores)):
            out = sequences[r, start:]
            row = scores[r:r + 1]
            if req.token_rules is not None:
                row = req.token_rules.apply(row, out)
            if req.penalties.active:
                row = req.penalties.apply(row, ids, out)
            scores[r] = np.asarray(row, np.float32).reshape(-1)
        return scores
    return process


def _watch(cancelled: threading.Event):
    """A processor that changes nothing and ends the search (``_Cancelled``) once the request is cancelled: checked
    at every step, as the one-at-a-time path checks at every token."""
    def process(sequences, scores):
        if cancelled.is_set():
            raise _Cancelled
        return scores
    return process


def _beams(gen, req: CompletionRequest, ids: List[int], index: int, cancelled: threading.Event,
           images: Optional[dict] = None) -> np.ndarray:
    """(n, tokens): the prompt's n best hypotheses, best first (each up to its end token, then padding)."""
    from ..models.hf import generate
    from ..models.hf.beam_search import recorded
    from ..models.hf.constrained import GrammarError, GrammarLogitsProcessor
    from ..models.hf.logits_processors import output_vocab_size
    from .structured import row_failed
    start = 1 if gen.seq2seq else len(ids)
    processors: List[Callable] = [_watch(cancelled)]
    if req.token_rules is not None or req.penalties.active:
        processors.append(_rowwise(req, ids, start))
    if req.grammar is not None:  # the grammar last, as the one-at-a-time path masks after the penalties
        processors.append(GrammarLogitsProcessor(gen.tokenizer, req.grammar, sorted(gen.eos),
                                                 output_vocab_size(gen.model)))
    with recorded() as runs:
        try:
            out = generate(gen.model, [ids], max_new_tokens=req.max_tokens, do_sample=False, top_k=None, top_p=None,
                           min_p=None, num_beams=req.num_beams, num_return_sequences=req.n,
                           length_penalty=req.length_penalty, logits_processor=processors,
                           **dict(gen.generation.generate_kwargs(req), max_time=gen.generation.max_time),
                           **(images or {}))
        except GrammarError as e:  # every beam reached a dead end of the grammar
            raise row_failed(req, e) from None
    found = int(runs[-1].found[0]) if runs else req.n
    if found < req.n:  # the rest are placeholders, scored -1e9 (transformers' beam search)
        why = "its constraints allow no more" if not (req.length_penalty or 0) < 0 else \
            "its constraints allow no more, or the negative length_penalty scaled the others' scores below -1e9"
        raise CompletionError(400, f"n: beam search found {found} completion(s) of prompt {index} ({why}), fewer "
                                   f"than the {req.n} asked for", "n")
    return out[:, start:]


def _replay(text, tokens: List[int], entries: Optional[list], choice) -> Completion:
    """``text`` (a TextStream) given a hypothesis's tokens (and their entries) as the one-at-a-time path gives a
    completion's: up to its end token, a stop string (the request's, the checkpoint's) or max_tokens."""
    for k, token in enumerate(tokens):
        if text.push(token, None if entries is None else entries[k]):
            break
        reason = choice.stopped(text.tokens)
        if reason is not None:
            text.end(reason)
            break
    text.end("length")  # (every hypothesis ends with an end token or at max_tokens: already ended)
    return text.result()


def _entries(gen, ids: List[int], tokens: List[int], top: int, images: Optional[dict]) -> list:
    """Each token's log-probability entry, from one scoring forward over the prompt (with its ``images``) and
    ``tokens``."""
    from .token_logprobs import entry
    _, targets, logp = gen._log_softmax(ids, tokens, False, images)
    return [entry(row, t, top) for row, t in zip(logp, targets)]


def _completion(gen, req: CompletionRequest, ids: List[int], tokens, on_text, images: Optional[dict]) -> Completion:
    """One hypothesis's completion, its text as the one-at-a-time path gives its tokens' (stop strings, the end
    token, max_tokens); ``on_text(text, entries)`` gets its pieces (streamed). Streamed log-probabilities are those
    of a non-streamed answer (gen.score's): one scoring forward over the tokens the choice reports, found by
    replaying the hypothesis once without them (not over the padding after its end token: max_tokens positions of
    the vocabulary's float64 log-probabilities for a hypothesis that may have ended after a few)."""
    tokens = [int(t) for t in tokens]
    choice = gen.generation.row(req, ids)  # the checkpoint's stop strings
    choice.max_time = None  # the search kept to the checkpoint's time limit: the replay only reads its tokens
    text = gen.stream(req, ids, on_text)
    if text.top is None:
        return _replay(text, tokens, None, choice)
    dry = _replay(gen.stream(req, ids, None), tokens, None, choice)
    reported, pushed = dry.reported_ids, dry.token_ids
    entries = _entries(gen, ids, reported, text.top, images)
    if len(pushed) > len(reported):  # the tokens of a cutting stop string (held back: not sent, unless one of them
        entries += _entries(gen, ids, pushed, text.top, images)[len(reported):]  # spells nothing)
    entries += [None] * (len(tokens) - len(entries))  # the end token and the padding: pushed without one, unread
    return _replay(text, tokens, entries, choice)


def complete_beams(gen, req: CompletionRequest, prompt_ids: List[List[int]],
                   on_text: Optional[Callable[[int, str, Optional[list]], None]],
                   cancelled: threading.Event, images: Optional[dict] = None) -> List[Completion]:
    """On the server's worker: each prompt's n choices by beam search (``prompt_ids`` holds each prompt n times, as
    the server lays out a request's rows), prompt-major; ``on_text(choice, text, entries)`` gets the streamed
    pieces. A cancelled request (its client went away) ends at the search's next step with the choices done so far.
    ``images``: a chat request's pixel values (and token types), for its one prompt's prefill."""
    results: List[Completion] = []
    n = req.n
    for p in range(0, len(prompt_ids), n):
        if cancelled.is_set():
            break
        ids = prompt_ids[p]
        try:
            hypotheses = _beams(gen, req, ids, p // n, cancelled, images)
        except _Cancelled:
            break
        for j, tokens in enumerate(hypotheses):
            send = None if on_text is None else (lambda t, lp, i=p + j: on_text(i, t, lp))
            results.append(_completion(gen, req, ids, tokens, send, images))
    return results
