"""How the completions server picks a completion's tokens beyond the request's sampling fields, one rule for the
one-at-a-time path (``generate``) and the batched engines (each row on its own), so that a request gets the same
tokens batched or alone, and the tokens ``generate`` gives with the checkpoint's settings (greedy: token for token).

The checkpoint's generation_config.json (read once at load, as ``generate`` reads it; a setting it gets wrong fails
the load, naming it): its processors (``no_repeat_ngram_size``, ``min_length``, ``repetition_penalty``, the forced
first / last tokens, ``suppress_tokens``, ``begin_suppress_tokens``, ``bad_words_ids``, ``sequence_bias``,
``min_new_tokens``, ``encoder_repetition_penalty``, ``encoder_no_repeat_ngram_size`` (on the prompt, an
encoder-decoder's source), ``exponential_decay_length_penalty``, ``remove_invalid_values``), its sampling warpers
when the request samples (``typical_p``, ``epsilon_cutoff``, ``eta_cutoff``) and ``renormalize_logits``, and its
stopping: ``stop_strings`` (a row ends, finish_reason "stop", once one ends inside its newest token, the string kept
in the text, as transformers keeps it) and ``max_time`` (a row ends, finish_reason "length", that many seconds after
it started).

The request's vLLM fields: ``stop_token_ids`` (more end tokens: like the model's end-of-sequence token they end the
completion and are not part of its text), ``ignore_eos`` (the model's end tokens do not end it), ``min_tokens``
(no end token, the stop_token_ids included, before that many tokens: ``generate``'s ``min_new_tokens``, which it
replaces; and, as vLLM, no stop string within them: text_stream.py), ``bad_words`` (strings whose tokens are never
completed, each tokenized with and without a leading space as vLLM does, matched against the generated tokens)
and ``allowed_token_ids`` (the only tokens generated).
"""
from __future__ import annotations

import time
import warnings
from typing import List, Optional

import numpy as np

from .completion_request import CompletionError

__all__ = ["ServedGeneration", "RowChoice", "TokenRules"]


class TokenRules:
    """A request's ``allowed_token_ids`` and ``bad_words`` (token sequences) on one row's scores (1, V)."""

    def __init__(self, allowed: Optional[List[int]], bad_words: List[tuple], vocab: int):
        from ..models.hf.logits_processors import SequenceBias
        self.banned = None
        if allowed is not None:
            self.banned = np.ones(vocab, bool)
            self.banned[allowed] = False
        self.bad_words = SequenceBias({w: float("-inf") for w in bad_words}) if bad_words else None

    def apply(self, scores: np.ndarray, output) -> np.ndarray:
        scores = np.array(scores, np.float32)
        if self.banned is not None:
            scores[:, self.banned[:scores.shape[-1]]] = -np.inf
        if self.bad_words is not None:  # vLLM matches a word's first tokens against the generated tokens only
            scores = self.bad_words(np.asarray(output, np.int64).reshape(1, -1), scores)
        return scores


class RowChoice:
    """One row's choice of its next token (``scores`` then ``sampler``) and its stopping (``stopped``)."""

    def __init__(self, process, prefix: List[int], sampler, strings, max_time: Optional[float]):
        self.process, self.prefix, self.sampler = process, list(prefix), sampler
        self.strings, self.max_time, self.start = strings, max_time, time.time()

    def scores(self, logits: np.ndarray, output: List[int]) -> np.ndarray:
        """The checkpoint's processors on the row's logits (1, V), over its prefix (a decoder's prompt, an
        encoder-decoder's start token) and ``output``."""
        if self.process is None:
            return logits
        return self.process(np.array([self.prefix + list(output)], np.int64), logits)

    def stopped(self, output: List[int]) -> Optional[str]:
        """The finish reason when the checkpoint's stopping ends the row after its newest token, else None."""
        if self.max_time is not None and time.time() - self.start > self.max_time:
            return "length"
        if self.strings is not None and output:
            tail = (self.prefix + list(output))[-self.strings.window:]
            if self.strings(np.array([tail], np.int64))[0]:
                return "stop"
        return None


class ServedGeneration:
    """A served model's generation settings (generation_config.json's, read once) and each request's rows."""

    def __init__(self, model, tokenizer, eos, seq2seq: bool):
        from ..models.hf.generation import UNSET, _forced, _repetition_penalty
        from ..models.hf.generation_settings import read_settings, warn_unread_settings
        from ..models.hf.logits_processors import output_vocab_size, resolve
        from ..models.hf.stopping import StopStrings
        self.model, self.tokenizer, self.eos, self.seq2seq = model, tokenizer, sorted(eos), seq2seq
        self.vocab = output_vocab_size(model)
        warn_unread_settings(model)  # the settings generate does not read, named once in the log
        self.extra = read_settings(model, {}, self.vocab)
        if self.extra["guidance_scale"] is not None:  # a second model run per row: not in the served loops
            warnings.warn(f"generation_config.json sets guidance_scale={self.extra['guidance_scale']}, which the "
                          "server does not apply (generate does)", UserWarning, stacklevel=2)
            self.extra["guidance_scale"] = None
        settings = [resolve(model, "no_repeat_ngram_size", None, 0), resolve(model, "min_length", None, 0)]
        for name, value in zip(("no_repeat_ngram_size", "min_length"), settings):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"generation_config.json: {name} must be an int >= 0, got {value!r}")
        self.settings = (*settings, _repetition_penalty(resolve(model, "repetition_penalty", None, 1.0)), [],
                         _forced(model, "forced_bos_token_id", UNSET), _forced(model, "forced_eos_token_id", UNSET))
        # the stop strings need this tokenizer's token bytes: a tokenizer that cannot give them fails the load
        strings = self.extra["stop_strings"]
        self.strings = StopStrings(strings, tokenizer) if strings else None
        self.max_time = self.extra["max_time"]

    # ---- a request --------------------------------------------------------------------------------------------
    def end_ids(self, req) -> List[int]:
        """The tokens that end the request's completions (not part of their text)."""
        return sorted(set([] if req.ignore_eos else self.eos) | set(req.stop_token_ids))

    def check(self, req) -> None:
        """The request's token fields checked against the vocabulary (CompletionError 400 naming the field), its
        ``bad_words`` tokenized; sets ``req.token_rules``."""
        for name in ("stop_token_ids", "allowed_token_ids"):
            bad = [t for t in getattr(req, name) or () if t >= self.vocab]
            if bad:
                raise CompletionError(400, f"{name}: token id {bad[0]} is outside the vocabulary [0, {self.vocab})",
                                      name)
        words = []
        for word in req.bad_words:
            plain = tuple(self.tokenizer.encode(word.lstrip(), add_special_tokens=False))
            if not plain:
                raise CompletionError(400, f"bad_words: {word!r} gives no tokens", "bad_words")
            words.append(plain)
            # vLLM's rule: the spaced spelling too, where it is another word of as many tokens
            spaced = tuple(self.tokenizer.encode(" " + word.lstrip(), add_special_tokens=False))
            if spaced and spaced[0] != plain[0] and len(spaced) == len(plain):
                words.append(spaced)
        bad = [t for w in words for t in w if t >= self.vocab]
        if bad:
            raise CompletionError(400, f"bad_words: token id {bad[0]} is outside the generated vocabulary "
                                       f"[0, {self.vocab})", "bad_words")
        if req.allowed_token_ids is not None:  # the sampler would draw from scores that are all -inf (garbage)
            left = set(req.allowed_token_ids) - {w[0] for w in words if len(w) == 1}
            if not left:
                raise CompletionError(400, "allowed_token_ids: bad_words rule out every allowed token",
                                      "allowed_token_ids")
            if req.min_tokens and left <= set(self.end_ids(req)):
                raise CompletionError(400, f"allowed_token_ids: every allowed token ends the completion, which "
                                           f"min_tokens ({req.min_tokens}) rules out for its first tokens",
                                      "allowed_token_ids")
        rules = req.allowed_token_ids is not None or words
        req.token_rules = TokenRules(req.allowed_token_ids, words, self.vocab) if rules else None

    def _extra(self, req) -> dict:
        return self.extra if req.min_tokens is None else dict(self.extra, min_new_tokens=req.min_tokens or None)

    def generate_kwargs(self, req) -> dict:
        """``generate``'s arguments for the one-at-a-time path beyond the sampling fields: the end tokens, the
        request's min_tokens; the stopping is the stream's (``row`` gives it)."""
        kw = {"eos_token_id": self.end_ids(req), "stop_strings": None, "max_time": None, "guidance_scale": None}
        if req.min_tokens is not None:
            kw["min_new_tokens"] = req.min_tokens
        return kw

    def row(self, req, prompt: List[int], rng=None) -> RowChoice:
        """A row of the request continuing ``prompt`` (an encoder-decoder's source): the processors, sampler and
        stopping ``generate`` gives it alone (``rng``: the row's generator; None: forgegrad's)."""
        from ..models.hf.generation import _processors, _sampler
        greedy = req.greedy
        extra = self._extra(req)
        sampler = _sampler(self.model, not greedy, 1.0 if greedy else req.temperature, req.top_k,
                           req.top_p if req.top_p < 1 else None, req.min_p, extra)
        if rng is not None:
            sampler.rng = rng
        eos = self.end_ids(req)
        if self.seq2seq:
            prefix = [int(self.model.decoder_start_token_id)]
            process = _processors(self.model, self.settings, eos, 1 + req.max_tokens, extra=extra,
                                  encoder_ids=np.array([prompt], np.int64))
        else:
            prefix = list(prompt)
            process = _processors(self.model, self.settings, eos, len(prompt) + req.max_tokens, extra=extra,
                                  prompt_length=len(prompt), encoder_ids=np.array([prompt], np.int64))
        return RowChoice(process if process.active else None, prefix, sampler, self.strings, self.max_time)
