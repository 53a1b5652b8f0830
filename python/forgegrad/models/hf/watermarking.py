"""Watermarking as transformers 5 does it (Kirchenbauer et al., https://arxiv.org/abs/2306.04634): ``generate``'s
``watermarking_config`` adds ``bias`` to the scores of a "green list" of ``greenlist_ratio`` of the vocabulary, drawn
afresh at each step from a seed of the tokens before it; ``WatermarkDetector`` counts the green tokens of a text and
gives the z-score of that count.

The green lists are transformers' own: its WatermarkLogitsProcessor seeds a torch CPU generator and takes the first
tokens of ``torch.randperm``. torch's generator is the 32-bit Mersenne Twister seeded with the seed's low 32 bits
(MT19937's init_genrand), and its CPU randperm (below 2**32 / 20 elements) is the Fisher-Yates shuffle that swaps
element i with element i + (next 32-bit draw % (n - i)); numpy's legacy RandomState seeds MT19937 the same way and
its full-range uint32 randint returns the same 32-bit draws, so the same seeds give the same lists, and therefore the
same tokens, without torch.
"""
from __future__ import annotations

import math
import numbers
import threading
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import List, Optional

import numpy as np

__all__ = ["WATERMARK_DEFAULTS", "Watermark", "WatermarkDetector", "WatermarkDetectorOutput", "watermark_settings",
           "torch_randperm", "in_torch_randperm", "torch_sort_head"]

# transformers' WatermarkingConfig defaults (hashing_key: the millionth prime)
WATERMARK_DEFAULTS = {"greenlist_ratio": 0.25, "bias": 2.0, "hashing_key": 15485863, "seeding_scheme": "lefthash",
                      "context_width": 1}
_TABLE_SIZE = 1_000_003  # transformers' fixed table, a permutation the selfhash scheme seeds from
_CANDIDATES = 40  # transformers' selfhash tries the 40 most likely next tokens


def torch_randperm(n: int, seed: int, k: Optional[int] = None,
                   state: Optional[np.random.RandomState] = None) -> np.ndarray:
    """The first ``k`` (default all) elements of ``torch.randperm(n, generator=g)`` for a CPU generator ``g`` just
    seeded with ``seed`` (int64): Fisher-Yates with each swap's offset the next 32-bit draw modulo what is left (the
    first k places are final after k swaps, so only those count). ``state``: a RandomState to reseed (one per thread).

    The swaps are not made one by one but read off their targets, vectorized: swap i puts at place i what place
    t_i held just before it, which is t_i itself unless an earlier swap chose t_i, in which case it is what the last
    such swap j took from its own place j, held[j]; and held[j] is j unless an earlier swap chose place j, and so on
    down a chain that pointer jumping follows (a few rounds)."""
    k = n if k is None else min(int(k), n)
    state = np.random.RandomState() if state is None else state
    state.seed(int(seed) & 0xFFFFFFFF)  # init_genrand, as torch's manual_seed
    swaps = max(min(k, n - 1), 0)
    steps = np.arange(swaps)
    targets = steps + state.randint(0, 2 ** 32, size=swaps, dtype=np.uint32).astype(np.int64) % (n - steps)
    last = np.full(max(n, 1), -1, np.int64)  # the last swap that chose each place (targets[j] >= j: none after it)
    np.maximum.at(last, targets, steps)
    prev = np.full(swaps, -1, np.int64)  # the last swap before i that chose i's target
    shared = np.flatnonzero(np.bincount(targets, minlength=n)[targets] > 1)
    if len(shared):
        order = shared[np.argsort(targets[shared], kind="stable")]
        same = targets[order[1:]] == targets[order[:-1]]
        prev[order[1:][same]] = order[:-1][same]
    # held[i]: the place whose first element place i holds just before swap i (a root holds its own)
    parent = np.where(targets == steps, prev, last[:swaps])
    held = np.where(parent >= 0, parent, steps)
    while True:
        further = held[held]
        if np.array_equal(further, held):
            break
        held = further
    out = np.where(prev >= 0, held[np.maximum(prev, 0)], targets)
    if k > swaps:  # the last place, which no swap chooses (k == n)
        out = np.append(out, held[last[n - 1]] if last[n - 1] >= 0 else n - 1)
    return out


def in_torch_randperm(n: int, seed: int, k: int, token: int, state: Optional[np.random.RandomState] = None) -> bool:
    """Whether ``token`` is among the first ``k`` elements of torch_randperm(n, seed) (the selfhash scheme's and the
    detector's question), without making the shuffle: the token's place is followed through the swaps, vectorized.
    Places before swap i are final, so the token (at place p >= i) ends in the prefix when a swap i < p picks p
    (it lands at i < k), or when swap p leaves it where it is; swap p sends it on to p + offset otherwise."""
    k = min(int(k), n)
    swaps = min(k, n - 1)
    state = np.random.RandomState() if state is None else state
    state.seed(int(seed) & 0xFFFFFFFF)
    steps = np.arange(max(swaps, 0))
    targets = steps + state.randint(0, 2 ** 32, size=max(swaps, 0), dtype=np.uint32).astype(np.int64) % (n - steps)
    i, p = 0, int(token)
    while True:
        if min(p, swaps) > i and (targets[i:min(p, swaps)] == p).any():
            return True
        if p >= swaps:  # no swap moves it again: the last place is the prefix's only where k == n
            return p < k
        i, p = p + 1, int(targets[p])
        if p == i - 1:
            return True


_THREAD = threading.local()


@lru_cache(maxsize=128)  # lefthash seeds by the last token alone, and frequent tokens come back (int32: 50 KB each)
def _green_prefix(n: int, seed: int, k: int) -> np.ndarray:
    """torch_randperm(n, seed, k), read-only, remembered for the 128 latest seeds (each thread its own RandomState)."""
    state = getattr(_THREAD, "state", None)
    if state is None:
        state = _THREAD.state = np.random.RandomState()
    out = torch_randperm(n, seed, k, state).astype(np.int32 if n <= 2 ** 31 else np.int64)
    out.flags.writeable = False
    return out


def torch_sort_head(row: np.ndarray, m: int) -> np.ndarray:
    """The tokens among the first ``m`` of ``row.sort(descending=True)`` for float32 scores ``row`` on the CPU (the
    selfhash scheme's candidates), in no particular order. Torch sorts with libstdc++'s std::sort (introsort, not
    stable; NaN first), so where the m-th and (m+1)-th scores tie at a finite value, which of the tied tokens are
    candidates is what that sort leaves: it is replayed (topk_order.py's steps) on the ranges that reach the first m
    places. A tie at -inf is not replayed: such a candidate's score stays -inf, green or not."""
    row = np.asarray(row, np.float32)
    n = row.shape[-1]
    order = np.argsort(-row, kind="stable")
    if m >= n:
        return order
    edge = row[order[m - 1]]
    if not ((np.isfinite(edge) and edge == row[order[m]]) or np.isnan(row).any()):
        return order[:m]
    from .topk_order import _THRESHOLD, _heap_select, _insertion_sort, _lg, _sort_heap, _unguarded_linear_insert, \
        _unguarded_partition_pivot
    q = [(float(v), i) for i, v in enumerate(row.tolist())]
    end = n  # the start of the first range left unsorted at or past m: nothing after it moves before it

    def introsort(first, last, depth):
        nonlocal end
        while last - first > _THRESHOLD:
            if depth == 0:
                _heap_select(q, first, last, last)
                _sort_heap(q, first, last)
                return
            depth -= 1
            cut = _unguarded_partition_pivot(q, first, last)
            if cut < m:
                introsort(cut, last, depth)
            else:
                end = min(end, cut)
            last = cut

    introsort(0, n, 2 * _lg(n))
    _insertion_sort(q, 0, min(_THRESHOLD, end))  # std::sort's final insertion sort, up to ``end``
    for i in range(_THRESHOLD, end):
        _unguarded_linear_insert(q, i)
    return np.array([i for _, i in q[:m]], np.int64)


@lru_cache(maxsize=8)
def _fixed_table(hashing_key: int, length: int) -> np.ndarray:
    """The first ``length`` entries of transformers' fixed table, randperm(1_000_003) seeded with the hashing key."""
    return np.array(torch_randperm(_TABLE_SIZE, hashing_key, length), np.int64)


def _real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def watermark_settings(value, who: str = "generate") -> Optional[dict]:
    """``watermarking_config`` checked as transformers checks it (WatermarkingConfig.validate and the processor's
    own checks), with transformers' defaults for the keys left out; None: no watermark. ``value``: a dict (what
    generation_config.json holds) or a transformers WatermarkingConfig."""
    if value is None:
        return None
    if hasattr(value, "to_dict") and not isinstance(value, dict):
        value = value.to_dict()
    if not isinstance(value, dict):
        raise TypeError(f"{who}: watermarking_config must be a dict of {', '.join(WATERMARK_DEFAULTS)} (or a "
                        f"transformers WatermarkingConfig), got {type(value).__name__}")
    unknown = sorted(set(value) - set(WATERMARK_DEFAULTS))
    if unknown:  # transformers' WatermarkingConfig(**dict) refuses them too
        raise ValueError(f"{who}: watermarking_config has unknown keys {unknown} (it takes "
                         f"{', '.join(WATERMARK_DEFAULTS)})")
    out = dict(WATERMARK_DEFAULTS, **value)
    if out["seeding_scheme"] not in ("lefthash", "selfhash"):
        raise ValueError(f"{who}: watermarking_config's seeding_scheme must be \"lefthash\" or \"selfhash\", "
                         f"got {out['seeding_scheme']!r}")
    if not _real(out["greenlist_ratio"]) or not 0 < out["greenlist_ratio"] < 1:
        raise ValueError(f"{who}: watermarking_config's greenlist_ratio must be a number in (0, 1), "
                         f"got {out['greenlist_ratio']!r}")
    if not _real(out["bias"]) or not math.isfinite(out["bias"]):
        raise ValueError(f"{who}: watermarking_config's bias must be a finite number, got {out['bias']!r}")
    for name in ("hashing_key", "context_width"):
        if not isinstance(out[name], numbers.Integral) or isinstance(out[name], bool) or out[name] < (
                1 if name == "context_width" else 0):
            raise ValueError(f"{who}: watermarking_config's {name} must be an int "
                             f"{'>= 1' if name == 'context_width' else '>= 0'}, got {out[name]!r}")
    out.update(greenlist_ratio=float(out["greenlist_ratio"]), bias=float(out["bias"]),
               hashing_key=int(out["hashing_key"]), context_width=int(out["context_width"]))
    return out


class Watermark:
    """transformers' WatermarkLogitsProcessor: ``(sequences (rows, L), scores (rows, V)) -> scores`` with ``bias``
    added to each row's green list. "lefthash": the list seeded by hashing_key times the last token; "selfhash": of
    the 40 most likely next tokens, those in the list seeded by themselves and the ``context_width`` - 1 tokens
    before them (through the fixed table). Sequences shorter than ``context_width`` are left as they are.
    ``vocab_size``: the size the lists are drawn from (config.json's vocab_size, as transformers takes it; None:
    the scores' width, where there is no config.json: an exported graph)."""

    def __init__(self, settings: dict, vocab_size: Optional[int] = None):
        self.bias = settings["bias"]
        self.key = settings["hashing_key"]
        self.scheme = settings["seeding_scheme"]
        self.width = settings["context_width"]
        self.ratio = settings["greenlist_ratio"]
        self.state = np.random.RandomState()  # reseeded for each green list
        self.vocab_size = None
        if vocab_size is not None:
            self._set_vocab(int(vocab_size))

    def _set_vocab(self, vocab_size: int) -> None:
        if self.scheme == "selfhash" and vocab_size < _CANDIDATES:
            raise ValueError(f"generate: watermarking_config's seeding_scheme \"selfhash\" tries the {_CANDIDATES} "
                             f"most likely tokens and needs a vocabulary of at least {_CANDIDATES}, got {vocab_size}")
        self.vocab_size = vocab_size
        self.green_size = int(vocab_size * self.ratio)

    def _seed(self, tokens: np.ndarray) -> int:
        tokens = tokens[-self.width:]
        if self.scheme == "selfhash":
            index = tokens % _TABLE_SIZE
            table = _fixed_table(self.key, max(int(index.max()) + 1, min(self.vocab_size, _TABLE_SIZE)))
            b = int(table[index[-1]]) + 1
            # int64 products, wrapping as torch's do
            seed = min((self.key * (int(t) + 1) * b + 2 ** 63) % 2 ** 64 - 2 ** 63 for t in table[index])
        else:
            seed = self.key * int(tokens[-1])
        return seed % (2 ** 64 - 1)

    def green_list(self, tokens) -> np.ndarray:
        """The green list of the token after ``tokens`` (1-D), as transformers' ``_get_greenlist_ids`` (read-only)."""
        return _green_prefix(self.vocab_size, self._seed(np.asarray(tokens, np.int64)), self.green_size)

    def is_green(self, tokens, token: int) -> bool:
        """Whether ``token`` is in the green list of the token after ``tokens`` (1-D)."""
        return in_torch_randperm(self.vocab_size, self._seed(np.asarray(tokens, np.int64)), self.green_size, token,
                                 self.state)

    def _self_green(self, tokens: np.ndarray, row: np.ndarray) -> List[int]:
        return [int(t) for t in torch_sort_head(row, _CANDIDATES) if self.is_green(np.append(tokens, t), int(t))]

    def __call__(self, sequences: np.ndarray, scores: np.ndarray) -> np.ndarray:
        if self.vocab_size is None:
            self._set_vocab(scores.shape[-1])
        if sequences.shape[1] < self.width:
            return scores
        out = np.array(scores)
        bias = out.dtype.type(self.bias)
        for r, tokens in enumerate(np.asarray(sequences, np.int64)):
            green = self._self_green(tokens, scores[r]) if self.scheme == "selfhash" else self.green_list(tokens)
            out[r, green] += bias
        return out


@dataclass
class WatermarkDetectorOutput:
    """transformers' WatermarkDetectorOutput: per row, the tokens scored, the green ones, their fraction, the
    z-score, its one-sided p-value, ``z_score > z_threshold`` and 1 - p-value."""
    num_tokens_scored: np.ndarray
    num_green_tokens: np.ndarray
    green_fraction: np.ndarray
    z_score: np.ndarray
    p_value: np.ndarray
    prediction: np.ndarray
    confidence: np.ndarray


class WatermarkDetector:
    """transformers' WatermarkDetector: whether texts carry the watermark of ``watermarking_config`` (the settings
    they were generated with).

    Args:
        model_config: a model from ``from_pretrained``, its config.json's contents (a dict) or a transformers
            config: its ``vocab_size`` and leading token (``bos_token_id``, an encoder-decoder's
            ``decoder_start_token_id``), dropped from texts that start with it.
        watermarking_config: a dict as generate takes it (or a transformers WatermarkingConfig).
        ignore_repeated_ngrams: count each distinct (context, token) once.

    Calling it on ``input_ids`` (B, T), the generated tokens (best without the prompt), gives ``z_score >
    z_threshold`` per row, or with ``return_dict`` the WatermarkDetectorOutput."""

    def __init__(self, model_config, watermarking_config, ignore_repeated_ngrams: bool = False):
        config = getattr(model_config, "config", model_config)
        if hasattr(config, "to_dict") and not isinstance(config, dict):  # a transformers config
            config = config.to_dict()
        if not isinstance(config, dict) or not isinstance(config.get("vocab_size"), numbers.Integral):
            raise TypeError("WatermarkDetector: model_config must be a model from from_pretrained or a config.json "
                            "dict with its vocab_size")
        self.settings = watermark_settings(watermarking_config, "WatermarkDetector")
        if self.settings is None:
            raise ValueError("WatermarkDetector: watermarking_config must be the settings the texts were generated "
                             "with, got None")
        self.bos_token_id = config.get("decoder_start_token_id" if config.get("is_encoder_decoder") else
                                       "bos_token_id")
        self.ratio = self.settings["greenlist_ratio"]
        self.ignore_repeated_ngrams = bool(ignore_repeated_ngrams)
        self.watermark = Watermark(self.settings, config["vocab_size"])
        self._green = lru_cache(maxsize=4096)(self._is_green)

    def _is_green(self, prefix: tuple, target: int) -> bool:
        return self.watermark.is_green(np.array(prefix, np.int64), target)

    def _count(self, ids: np.ndarray):
        selfhash = self.watermark.scheme == "selfhash"
        n = self.watermark.width + 1 - selfhash
        scored, green = np.zeros(len(ids)), np.zeros(len(ids))
        for b, row in enumerate(ids.tolist()):
            counts = Counter(tuple(row[i:i + n]) for i in range(len(row) - n + 1))
            hits = {g: self._green(g if selfhash else g[:-1], g[-1]) for g in counts}
            if self.ignore_repeated_ngrams:
                scored[b], green[b] = len(counts), sum(hits.values())
            else:
                scored[b], green[b] = sum(counts.values()), sum(f * hits[g] for g, f in counts.items())
        return scored, green

    def __call__(self, input_ids, z_threshold: float = 3.0, return_dict: bool = False):
        ids = np.asarray(input_ids, np.int64)
        if ids.ndim != 2:
            raise ValueError(f"WatermarkDetector: input_ids must be (batch, tokens), got shape {ids.shape}")
        has_bos = ids[:, 0] == self.bos_token_id if self.bos_token_id is not None else np.zeros(len(ids), bool)
        if has_bos.any() != has_bos.all():
            raise ValueError("WatermarkDetector: some rows start with the bos token and some do not (tokenize them "
                             "alike)")
        if has_bos.any():
            ids = ids[:, 1:]
        if ids.shape[1] - self.watermark.width < 1:
            raise ValueError(f"WatermarkDetector: input_ids need at least one token after the first "
                             f"context_width={self.watermark.width} (the bos token aside), got {ids.shape[1]}")
        scored, green = self._count(ids)
        expected = self.ratio
        z = (green - expected * scored) / np.sqrt(scored * expected * (1 - expected))
        prediction = z > z_threshold
        if not return_dict:
            return prediction
        p = np.array([0.5 * math.erfc(v / math.sqrt(2)) for v in z.tolist()])
        return WatermarkDetectorOutput(scored, green, green / scored, z, p, prediction, 1 - p)
