"""The score processors ``generate`` applies before choosing a token, as transformers' logits processors
do (same conditions, same order): ``repetition_penalty`` (the score of every token already in the
sequence, left padding excepted, is divided by the penalty where positive and multiplied where
negative), ``no_repeat_ngram_size`` (a token that would repeat an n-gram of the
sequence so far is banned), ``min_length`` (no end-of-sequence token while the sequence, prompt or
decoder start included, is shorter), and the forced first / last tokens (``forced_bos_token_id`` when the
sequence holds one token, ``forced_eos_token_id`` at ``max_length`` - 1: every other token banned), and the
rest of transformers' in its order: classifier-free guidance (``guidance_scale``, guidance.py: first),
``sequence_bias``, ``encoder_repetition_penalty`` and ``encoder_no_repeat_ngram_size`` (the prompt's tokens /
n-grams; an encoder-decoder's encoder input),
``bad_words_ids``, ``min_new_tokens`` (as ``min_length``), ``remove_invalid_values``,
``exponential_decay_length_penalty``, ``suppress_tokens`` and ``begin_suppress_tokens`` (last, before the caller's
own processors).

Greedy search and sampling apply them to the logits, beam search to the log-probabilities, as
transformers does. Their settings come from ``generate``'s arguments, else the checkpoint's
generation_config.json, else config.json (the forced tokens)."""
from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np


def penalize_repeats(scores: np.ndarray, tokens, penalty: float) -> None:
    """transformers' repetition penalty on the 1-D ``scores`` of one row, in place, for the ids in ``tokens``."""
    seen = np.unique(np.asarray(tokens, np.int64))
    seen = seen[seen < scores.shape[-1]]
    s = scores[seen]
    scores[seen] = np.where(s < 0, s * np.float32(penalty), s / np.float32(penalty))


def _ngrams(tokens: list, n: int) -> Dict[tuple, list]:
    """Each (n-1)-gram of ``tokens`` and the tokens that followed it (transformers' _get_ngrams)."""
    found: Dict[tuple, list] = {}
    for i in range(len(tokens) - n + 1):
        found.setdefault(tuple(tokens[i:i + n - 1]), []).append(tokens[i + n - 1])
    return found


class SequenceBias:
    """transformers' SequenceBiasLogitsProcessor: ``{token sequence (tuple): bias}``, each bias added to the score
    of the sequence's last token where the sequence so far ends with the rest of it (a one-token sequence's
    always). ``bad_words_ids`` is this with the bias -inf (NoBadWordsLogitsProcessor)."""

    def __init__(self, biases: Dict[tuple, float]):
        self.single = {s[0]: b for s, b in biases.items() if len(s) == 1}
        # grouped by prefix length in first-seen order, as transformers adds them
        self.groups: Dict[int, list] = {}
        for s, b in biases.items():
            if len(s) > 1:
                self.groups.setdefault(len(s) - 1, []).append((np.asarray(s[:-1], np.int64), s[-1], b))

    def __call__(self, sequences: np.ndarray, scores: np.ndarray) -> np.ndarray:
        bias = np.zeros(scores.shape, np.float32)
        if self.single:
            bias[:, list(self.single)] = np.asarray(list(self.single.values()), np.float32)
        L = sequences.shape[1]
        for p, group in self.groups.items():
            if p > L:  # longer than the sequence so far: cannot be completed yet
                continue
            tail = sequences[:, L - p:]
            for prefix, last, b in group:
                bias[:, last] += np.where((tail == prefix).all(axis=1), np.float32(b), np.float32(0.0))
        return scores + bias


class LogitsProcessors:
    def __init__(self, no_repeat_ngram_size: int = 0, min_length: int = 0, eos: Sequence[int] = (),
                 forced_bos: Optional[int] = None, forced_eos: Optional[int] = None, max_length: Optional[int] = None,
                 repetition_penalty: float = 1.0, padding: Optional[np.ndarray] = None,
                 extra: Sequence[Callable[[np.ndarray, np.ndarray], np.ndarray]] = (), *,
                 sequence_bias: Optional[Dict[tuple, float]] = None, bad_words_ids: Sequence[Sequence[int]] = (),
                 encoder_ids: Optional[np.ndarray] = None, encoder_repetition_penalty: float = 1.0,
                 encoder_no_repeat_ngram_size: int = 0, remove_invalid_values: bool = False,
                 exponential_decay: Optional[Tuple[int, float]] = None, suppress_tokens: Sequence[int] = (),
                 begin_suppress_tokens: Sequence[int] = (), begin_index: Optional[int] = None,
                 guidance: Optional[Callable[[np.ndarray, np.ndarray], np.ndarray]] = None):
        """``padding``: each prompt's count of left padding (not penalized); ``extra``: the caller's own
        processors, ``f(sequences, scores) -> scores``, run after these. ``encoder_ids`` (B, S): the prompts (an
        encoder-decoder's encoder input), padding included as transformers takes them, for
        ``encoder_repetition_penalty`` (> 1 favours their tokens) and ``encoder_no_repeat_ngram_size`` (no n-gram of
        theirs repeated); ``exponential_decay``: (sequence length after which, factor): the end tokens' scores
        grow by |score| * (factor ** steps - 1); ``begin_suppress_tokens`` are banned when the sequence is
        ``begin_index`` long; ``guidance``: guidance.ClassifierFreeGuidance, first."""
        self.guidance = guidance
        self.repetition = float(repetition_penalty)
        self.padding = padding
        self.extra = list(extra)
        self.ngram = int(no_repeat_ngram_size or 0)
        self.min_length = int(min_length or 0)
        self.eos = [int(e) for e in eos]
        self.forced_bos, self.forced_eos, self.max_length = forced_bos, forced_eos, max_length
        self.sequence_bias = SequenceBias(sequence_bias) if sequence_bias else None
        # an end token alone is never a bad word (transformers filters it out)
        bad = {tuple(int(t) for t in w): float("-inf") for w in bad_words_ids if list(w) not in [[e] for e in self.eos]}
        self.bad_words = SequenceBias(bad) if bad else None
        self.encoder_penalty = float(encoder_repetition_penalty)
        self.encoder_ngram = int(encoder_no_repeat_ngram_size or 0)
        self.encoder_ids = None if encoder_ids is None else np.asarray(encoder_ids, np.int64)
        self.encoder_ngrams = ([_ngrams(row, self.encoder_ngram) for row in self.encoder_ids.tolist()]
                               if self.encoder_ngram and self.encoder_ids is not None else None)
        self.remove_invalid = bool(remove_invalid_values)
        self.decay = exponential_decay if self.eos else None
        self.suppress = [int(t) for t in suppress_tokens]
        self.begin_suppress, self.begin_index = [int(t) for t in begin_suppress_tokens], begin_index

    @property
    def active(self) -> bool:
        return bool(self.guidance is not None or self.ngram or (self.min_length and self.eos)
                    or self.forced_bos is not None
                    or (self.forced_eos is not None and self.max_length is not None) or self.repetition != 1.0
                    or self.extra or self.sequence_bias or self.bad_words or self.encoder_ngrams
                    or (self.encoder_penalty != 1.0 and self.encoder_ids is not None) or self.remove_invalid
                    or self.decay or self.suppress or (self.begin_suppress and self.begin_index is not None))

    def __call__(self, sequences: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """``scores`` (rows, V) for the token after ``sequences`` (rows, L), processed (a new array), in
        transformers' order (its ``_get_logits_processor``)."""
        scores = np.array(scores, dtype=np.float32)
        rows, L = sequences.shape
        V = scores.shape[-1]
        if self.guidance is not None:
            scores = self.guidance(sequences, scores)
        if self.sequence_bias is not None:
            scores = self.sequence_bias(sequences, scores)
        if self.encoder_penalty != 1.0 and self.encoder_ids is not None:
            enc = np.repeat(self.encoder_ids, max(rows // len(self.encoder_ids), 1), axis=0)
            for r in range(rows):  # the inverse of the repetition penalty: > 1 favours the prompt's tokens
                penalize_repeats(scores[r], enc[r], 1.0 / self.encoder_penalty)
        if self.repetition != 1.0:
            pad = np.zeros(len(sequences), np.int64) if self.padding is None else self.padding
            pad = np.repeat(pad, len(sequences) // len(pad))  # beam search: K rows per prompt
            for r in range(len(sequences)):
                penalize_repeats(scores[r], sequences[r, pad[r]:], self.repetition)
        if self.ngram and L + 1 >= self.ngram:
            n = self.ngram
            for r, seq in enumerate(sequences.tolist()):
                hit = _ngrams(seq, n).get(tuple(seq[L + 1 - n:L]), [])
                if hit:
                    scores[r, hit] = -np.inf
        if self.encoder_ngrams is not None:
            n, per = self.encoder_ngram, max(rows // len(self.encoder_ngrams), 1)
            for r, seq in enumerate(sequences.tolist()):
                # python slicing as transformers' (a start before 0 counts from the end)
                hit = self.encoder_ngrams[r // per].get(tuple(seq[L + 1 - n:L]), [])
                if hit:
                    scores[r, hit] = -np.inf
        if self.bad_words is not None:
            scores = self.bad_words(sequences, scores)
        if self.min_length and self.eos and L < self.min_length:
            scores[:, self.eos] = -np.inf
        for token, when in ((self.forced_bos, L == 1),
                            (self.forced_eos, self.max_length is not None and L == self.max_length - 1)):
            if token is not None and when:
                scores[:] = -np.inf
                scores[:, token] = 0.0
        if self.remove_invalid:  # transformers' InfNanRemoveLogitsProcessor
            big = np.finfo(np.float32).max
            scores = np.nan_to_num(scores, nan=0.0, posinf=big, neginf=-big)
        if self.decay is not None and L > self.decay[0]:
            ends = scores[:, self.eos]
            # float32 as transformers': an end token at float32's min (remove_invalid_values' banned one) grows
            # past float32's max to +inf, which then ranks first (beam search: as torch.topk orders the ties)
            with np.errstate(over="ignore"):
                grow = np.abs(ends) * np.float32(self.decay[1] ** (L - self.decay[0]) - 1)
            penalties = np.zeros_like(scores)
            penalties[:, self.eos] = np.where(np.isfinite(ends), grow, np.float32(0.0))
            scores = scores + penalties
        if self.suppress:
            scores[:, [t for t in self.suppress if t < V]] = -np.inf
        if self.begin_suppress and L == self.begin_index:
            scores[:, [t for t in self.begin_suppress if t < V]] = -np.inf
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
    """Where transformers' generate takes the end, pad and forced tokens from: the model's generation config
    (``from_pretrained``'s: the checkpoint's generation_config.json, else the one transformers builds from config.json,
    generation_settings.from_model_config), or config.json for a model built from a config (no generation config)."""
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
    """A token id (forced_bos_token_id, forced_eos_token_id) of ``generation_source``, None where it has none (or one
    outside the vocabulary): a generation_config.json without it forces nothing, whatever config.json says, as in
    transformers."""
    t = generation_source(model).get(name)
    return t if isinstance(t, int) and not isinstance(t, bool) and 0 <= t < output_vocab_size(model) else None
