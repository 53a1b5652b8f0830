"""The score processors ``generate`` applies before choosing a token, as transformers' logits processors
do (same conditions, same order): ``repetition_penalty`` (the score of every token already in the
sequence, left padding excepted, is divided by the penalty where positive and multiplied where
negative), ``no_repeat_ngram_size`` (a token that would repeat an n-gram of the
sequence so far is banned), ``min_length`` (no end-of-sequence token while the sequence, prompt or
decoder start included, is shorter), and the forced first / last tokens (``forced_bos_token_id`` when the
sequence holds one token, ``forced_eos_token_id`` at ``max_length`` - 1: every other token banned).

Greedy search and sampling apply them to the logits, beam search to the log-probabilities, as
transformers does. Their settings come from ``generate``'s arguments, else the checkpoint's
generation_config.json, else config.json (the forced tokens)."""
from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence

import numpy as np


def penalize_repeats(scores: np.ndarray, tokens, penalty: float) -> None:
    """transformers' repetition penalty on the 1-D ``scores`` of one row, in place, for the ids in ``tokens``."""
    seen = np.unique(np.asarray(tokens, np.int64))
    seen = seen[seen < scores.shape[-1]]
    s = scores[seen]
    scores[seen] = np.where(s < 0, s * np.float32(penalty), s / np.float32(penalty))


class LogitsProcessors:
    def __init__(self, no_repeat_ngram_size: int = 0, min_length: int = 0, eos: Sequence[int] = (),
                 forced_bos: Optional[int] = None, forced_eos: Optional[int] = None, max_length: Optional[int] = None,
                 repetition_penalty: float = 1.0, padding: Optional[np.ndarray] = None,
                 extra: Sequence[Callable[[np.ndarray, np.ndarray], np.ndarray]] = ()):
        """``padding``: each prompt's count of left padding (not penalized); ``extra``: the caller's own
        processors, ``f(sequences, scores) -> scores``, run after these."""
        self.repetition = float(repetition_penalty)
        self.padding = padding
        self.extra = list(extra)
        self.ngram = int(no_repeat_ngram_size or 0)
        self.min_length = int(min_length or 0)
        self.eos = [int(e) for e in eos]
        self.forced_bos, self.forced_eos, self.max_length = forced_bos, forced_eos, max_length

    @property
    def active(self) -> bool:
        return bool(self.ngram or (self.min_length and self.eos) or self.forced_bos is not None
                    or (self.forced_eos is not None and self.max_length is not None) or self.repetition != 1.0
                    or self.extra)

    def __call__(self, sequences: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """``scores`` (rows, V) for the token after ``sequences`` (rows, L), processed (a new array)."""
        scores = np.array(scores, dtype=np.float32)
        L = sequences.shape[1]
        if self.repetition != 1.0:
            pad = np.zeros(len(sequences), np.int64) if self.padding is None else self.padding
            pad = np.repeat(pad, len(sequences) // len(pad))  # beam search: K rows per prompt
            for r in range(len(sequences)):
                penalize_repeats(scores[r], sequences[r, pad[r]:], self.repetition)
        if self.ngram and L + 1 >= self.ngram:
            n = self.ngram
            for r, seq in enumerate(sequences.tolist()):
                banned: Dict[tuple, list] = {}
                for i in range(L - n + 1):
                    banned.setdefault(tuple(seq[i:i + n - 1]), []).append(seq[i + n - 1])
                hit = banned.get(tuple(seq[L + 1 - n:L]), [])
                if hit:
                    scores[r, hit] = -np.inf
        if self.min_length and self.eos and L < self.min_length:
            scores[:, self.eos] = -np.inf
        for token, when in ((self.forced_bos, L == 1),
                            (self.forced_eos, self.max_length is not None and L == self.max_length - 1)):
            if token is not None and when:
                scores[:] = -np.inf
                scores[:, token] = 0.0
        for f in self.extra:
            scores = np.asarray(f(sequences, scores), dtype=np.float32)
        return scores


class RequestPenalties:
    """A request's ``presence_penalty``, ``frequency_penalty`` (OpenAI: in [-2, 2]), ``repetition_penalty``
    (> 0; 1 is none) and ``logit_bias`` ({token id: bias}), applied to one row's logits."""

    def __init__(self, presence: float = 0.0, frequency: float = 0.0, repetition: float = 1.0,
                 logit_bias: Optional[Dict[int, float]] = None):
        self.presence, self.frequency, self.repetition = float(presence), float(frequency), float(repetition)
        self.bias = dict(logit_bias or {})

    @property
    def active(self) -> bool:
        return bool(self.presence or self.frequency or self.repetition != 1.0 or self.bias)

    def apply(self, logits: np.ndarray, prompt: Sequence[int], output: Sequence[int]) -> np.ndarray:
        """``logits`` (V,) or (1, V) for the token after ``prompt`` + ``output``, processed (a new array)."""
        scores = np.array(logits, dtype=np.float32)
        row = scores.reshape(-1)
        if self.bias:
            ids = np.fromiter(self.bias, np.int64, len(self.bias))
            row[ids] += np.fromiter(self.bias.values(), np.float32, len(self.bias))
        if self.repetition != 1.0:
            penalize_repeats(row, list(prompt) + list(output), self.repetition)
        if (self.presence or self.frequency) and len(output):
            counts = np.bincount(np.asarray(output, np.int64), minlength=row.shape[0])[:row.shape[0]]
            row -= (np.float32(self.frequency) * counts + np.float32(self.presence) * (counts > 0)).astype(np.float32)
        return scores


def generation_source(model) -> dict:
    """Where transformers' generate takes the end and pad tokens from: the checkpoint's generation_config.json,
    or config.json where there is none (``from_pretrained`` then leaves ``model.generation_config`` None, and a
    model built from a config has none): transformers builds its generation config from config.json then."""
    config = getattr(model, "generation_config", None)
    return model.config if config is None else config


def resolve(model, name: str, given, default):
    """``generate``'s setting ``name``: as given, else the checkpoint's generation_config.json, else ``default``."""
    if given is not None:
        return given
    value = (getattr(model, "generation_config", None) or {}).get(name)
    return default if value is None else value


def output_vocab_size(model) -> int:
    """The vocabulary of the tokens ``model`` generates (an encoder-decoder's decoder's: Marian's separate target
    vocabulary may differ from its source's)."""
    return model.decoder_vocab_size if hasattr(model, "decoder_vocab_size") else model.vocab_size


def token_setting(model, name: str) -> Optional[int]:
    """A token id (forced_bos_token_id, forced_eos_token_id) from generation_config.json, else config.json."""
    for source in (getattr(model, "generation_config", None) or {}, model.config):
        t = source.get(name)
        if isinstance(t, int) and not isinstance(t, bool) and 0 <= t < output_vocab_size(model):
            return t
    return None
