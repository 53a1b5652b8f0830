"""Sampling for ``generate``: transformers' logits warpers (temperature, top-h, top-k, top-p, min-p, typical-p, epsilon
and eta cutoffs, in that order; then the watermark (watermarking.py) and ``renormalize_logits``' log-softmax, which
apply when not sampling too) and the draw from forgegrad's generator.

``Sampler`` holds one request's settings. ``select_next`` draws one token per row (or takes the argmax);
beam sampling (``generate(..., num_beams=K, do_sample=True)``) warps the beams' log-probabilities with the same
filters, keeping at least 1 + #eos tokens per row as transformers does, and draws its continuations without
replacement (``draw_without_replacement``).
"""
from __future__ import annotations

import numbers
from typing import Optional

import numpy as np

from ..._topk_kernel import sort_along, topk_along
from ...random import generator
from .topk_order import topk_indices

__all__ = ["Sampler", "select_next", "check_sampling", "draw_without_replacement", "typical_filter", "cutoff_filter",
           "top_h_filter", "log_softmax"]


def _real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def check_sampling(do_sample, temperature, top_k, top_p, min_p=None, typical_p=None, epsilon_cutoff=None,
                   eta_cutoff=None, top_h=None) -> None:
    """generate's checks of the sampling settings, naming the one that is wrong."""
    if not isinstance(do_sample, bool):
        raise TypeError(f"generate: do_sample must be a bool, got {type(do_sample).__name__}")
    if not isinstance(temperature, numbers.Real) or isinstance(temperature, bool) or not temperature > 0:
        raise ValueError(f"generate: temperature must be a number > 0, got {temperature!r}")
    if top_k is not None and (not isinstance(top_k, numbers.Integral) or isinstance(top_k, bool) or top_k < 0):
        raise ValueError(f"generate: top_k must be an int >= 0 (0 or None: no top-k filter), got {top_k!r}")
    if top_p is not None and (not isinstance(top_p, numbers.Real) or isinstance(top_p, bool) or not 0 < top_p <= 1):
        raise ValueError(f"generate: top_p must be a number in (0, 1], got {top_p!r}")
    if min_p is not None and (not isinstance(min_p, numbers.Real) or isinstance(min_p, bool) or not 0 <= min_p <= 1):
        raise ValueError(f"generate: min_p must be a number in [0, 1] (None or 0: no min-p filter), got {min_p!r}")
    if typical_p is not None and (not _real(typical_p) or not 0 < typical_p <= 1):
        raise ValueError(f"generate: typical_p must be a number in (0, 1] (None or 1: no typical-p filter), "
                         f"got {typical_p!r}")
    if top_h is not None and (not _real(top_h) or not 0 < top_h <= 1):
        raise ValueError(f"generate: top_h must be a number in (0, 1] (None: no top-h filter), got {top_h!r}")
    for name, value in (("epsilon_cutoff", epsilon_cutoff), ("eta_cutoff", eta_cutoff)):
        if value is not None and (not _real(value) or not 0 <= value < 1):
            raise ValueError(f"generate: {name} must be a number in [0, 1) (None or 0: no cutoff), got {value!r}")


class Sampler:
    """One request's sampling settings, checked. ``warp(scores)``: the scores divided by the temperature, the
    tokens the filters drop at -inf; ``__call__(logits)``: the next token of each row (argmax when not
    sampling). ``typical_p`` (1: none), ``epsilon_cutoff`` and ``eta_cutoff`` (0: none) and ``top_h`` are
    transformers' TypicalLogitsWarper, EpsilonLogitsWarper, EtaLogitsWarper and TopHLogitsWarper; ``watermark`` (a
    watermarking.Watermark, greedy or sampling): its bias on the green lists after the warpers, as transformers
    places it; ``renormalize`` (``renormalize_logits``): the warped scores' log-softmax, as transformers'
    LogitNormalization, last (beam search then scores the log-probabilities the processors and warpers left,
    renormalized). The watermark needs the sequences: ``__call__(logits, sequences)``."""

    def __init__(self, do_sample: bool, temperature: float = 1.0, top_k: Optional[int] = None,
                 top_p: Optional[float] = None, min_p: Optional[float] = None,
                 rng: Optional[np.random.Generator] = None, typical_p: Optional[float] = None,
                 epsilon_cutoff: Optional[float] = None, eta_cutoff: Optional[float] = None,
                 renormalize: bool = False, top_h: Optional[float] = None, watermark=None):
        check_sampling(do_sample, temperature, top_k, top_p, min_p, typical_p, epsilon_cutoff, eta_cutoff, top_h)
        if not isinstance(renormalize, bool):
            raise TypeError(f"generate: renormalize_logits must be a bool, got {renormalize!r}")
        self.do_sample, self.temperature = do_sample, float(temperature)
        self.top_k, self.top_p, self.min_p = top_k or None, top_p, min_p or None
        self.typical_p = None if typical_p is None or typical_p >= 1 else float(typical_p)
        self.epsilon, self.eta = epsilon_cutoff or None, eta_cutoff or None
        self.renormalize = renormalize
        self.top_h = None if top_h is None else float(top_h)
        self.watermark = watermark
        self.rng = generator() if rng is None else rng

    def warp(self, scores: np.ndarray, min_keep: int = 1) -> np.ndarray:
        """transformers' warpers in their order on (rows, V) scores (float64 here): temperature, then top-h (which
        keeps at least one token), top-k, top-p and min-p, each keeping at least ``min_keep`` tokens per row."""
        given = scores
        scores = scores.astype(np.float64) / self.temperature
        V = scores.shape[-1]
        if self.top_h is not None:
            scores = top_h_filter(scores, self.top_h)
        if self.top_k is not None and max(self.top_k, min_keep) < V:
            k = max(self.top_k, min_keep)
            # float32 logits: the k-th largest found by the top-k kernel; dividing by the temperature in float64
            # keeps the order, so it is the k-th largest of the scores, as np.partition would find it
            fast = topk_along(given, -1, k, True) if self.top_h is None and given.ndim == 2 else None
            if fast is not None:
                kth = fast[0][:, -1:].astype(np.float64) / self.temperature
            else:
                kth = np.partition(scores, -k, axis=-1)[:, -k][:, None]
            scores = np.where(scores < kth, -np.inf, scores)
        if self.top_p is not None and self.top_p < 1:
            proxy = None
            if given.dtype == np.float32 and given.shape == scores.shape:  # the same order as scores, but -inf
                proxy = np.where(np.isneginf(scores), np.float32(-np.inf), given)
            order = stable_order(scores, proxy)  # ascending, as transformers sorts
            sorted_scores = np.take_along_axis(scores, order, axis=-1)
            probs = np.exp(sorted_scores - sorted_scores[:, -1:])
            cum = np.cumsum(probs / probs.sum(-1, keepdims=True), axis=-1)
            drop_sorted = cum <= 1 - self.top_p
            drop_sorted[:, -min_keep:] = False  # always keep the most likely tokens
            drop = np.zeros_like(drop_sorted)
            np.put_along_axis(drop, order, drop_sorted, axis=-1)
            scores = np.where(drop, -np.inf, scores)
        if self.min_p is not None:
            # tokens less likely than min_p times the most likely one are dropped (transformers' MinPLogitsWarper)
            probs = np.exp(scores - scores.max(-1, keepdims=True))
            probs /= probs.sum(-1, keepdims=True)
            drop = probs < self.min_p * probs.max(-1, keepdims=True)
            if min_keep > 1:
                top = np.argsort(-scores, axis=-1, kind="stable")[:, :min_keep]
                np.put_along_axis(drop, top, False, axis=-1)
            scores = np.where(drop, -np.inf, scores)
        if self.typical_p is not None:
            scores = typical_filter(scores, self.typical_p, min_keep)
        for epsilon, eta in ((self.epsilon, False), (self.eta, True)):
            if epsilon is not None:
                scores = cutoff_filter(scores, epsilon, eta, min_keep)
        return scores

    def finish(self, scores: np.ndarray, sequences: Optional[np.ndarray] = None) -> np.ndarray:
        """What transformers does after the warpers: the watermark (on the rows' ``sequences`` so far), then
        renormalize_logits' log-softmax."""
        if self.watermark is not None:
            if sequences is None:
                raise ValueError("generate: watermarking_config needs each row's tokens so far (the sequences)")
            scores = self.watermark(sequences, scores)
        return log_softmax(scores) if self.renormalize else scores

    def __call__(self, logits: np.ndarray, sequences: Optional[np.ndarray] = None) -> np.ndarray:
        """The next token of each row of ``logits`` (rows, V); ``sequences`` (rows, L): the tokens before it (the
        watermark's seeds)."""
        if not self.do_sample:
            return self.finish(logits, sequences).argmax(axis=-1).astype(np.int64)
        return self.draw(self.finish(self.warp(logits), sequences))

    def draw(self, scores: np.ndarray) -> np.ndarray:
        """One token of each row drawn from softmax(``scores``) (rows, V): scores already warped and finished, for
        a caller that reads them too (Whisper's fallback reads their log-probabilities)."""
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        cum = np.cumsum(probs, axis=-1)
        draws = self.rng.random(scores.shape[0]) * cum[:, -1]
        picks = np.array([np.searchsorted(c, d, side="right") for c, d in zip(cum, draws)], dtype=np.int64)
        return np.minimum(picks, scores.shape[-1] - 1)


def stable_order(scores: np.ndarray, proxy: Optional[np.ndarray] = None) -> np.ndarray:
    """``np.argsort(scores, axis=-1, kind="stable")`` of (rows, V) ``scores``, found by the float32 sort kernel on
    ``proxy`` (float32 values in the scores' order; default: the scores rounded to float32) and checked: the stable
    order is the one permutation that sorts a row with equal scores in index order, so a row that passes the check
    is exact; the others (rounding that merged or swapped values, NaN) are sorted by numpy."""
    if proxy is None:
        with np.errstate(over="ignore"):
            proxy = scores.astype(np.float32)
    fast = sort_along(proxy, -1, False) if scores.ndim == 2 and proxy.shape == scores.shape else None
    if fast is None:
        return np.argsort(scores, axis=-1, kind="stable")
    order = fast[1]
    s = np.take_along_axis(scores, order, axis=-1)
    ok = ((s[:, 1:] > s[:, :-1]) | ((s[:, 1:] == s[:, :-1]) & (order[:, 1:] > order[:, :-1]))).all(axis=-1)
    if not ok.all():
        order[~ok] = np.argsort(scores[~ok], axis=-1, kind="stable")
    return order


def log_softmax(scores: np.ndarray) -> np.ndarray:
    """Each row's log-softmax (a row of -inf but one finite score keeps its -inf)."""
    shifted = scores - scores.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def _keep_top(drop: np.ndarray, scores: np.ndarray, min_keep: int) -> np.ndarray:
    """``drop`` less the ``min_keep`` highest scores of each row: transformers keeps every score at least the
    ``min_keep``-th highest (``scores < topk(scores, min_keep)[-1]`` is what it may drop)."""
    k = min(min_keep, scores.shape[-1])
    kth = np.partition(scores, -k, axis=-1)[:, -k][:, None]
    return drop & (scores < kth)


def typical_filter(scores: np.ndarray, mass: float, min_keep: int = 1) -> np.ndarray:
    """transformers' TypicalLogitsWarper: the tokens ordered by how far their surprise (-log p) is from the
    entropy, the closest kept until their probability reaches ``mass`` (each row keeps at least ``min_keep``)."""
    logp = log_softmax(scores)
    p = np.exp(logp)
    with np.errstate(invalid="ignore"):
        ent = -np.nansum(logp * p, axis=-1, keepdims=True)
    shifted = np.abs(-logp - ent)
    order = np.argsort(shifted, axis=-1, kind="stable")
    sorted_shifted = np.take_along_axis(shifted, order, axis=-1)
    sorted_scores = np.take_along_axis(scores, order, axis=-1)
    cum = np.cumsum(np.exp(log_softmax(sorted_scores)), axis=-1)
    last = np.minimum((cum < mass).sum(axis=-1), scores.shape[-1] - 1)
    drop_sorted = sorted_shifted > np.take_along_axis(sorted_shifted, last[:, None], axis=-1)
    drop_sorted[:, :min_keep] = False
    drop = np.zeros_like(drop_sorted)
    np.put_along_axis(drop, order, drop_sorted, axis=-1)
    return np.where(drop, -np.inf, scores)


def top_h_filter(scores: np.ndarray, top_h: float) -> np.ndarray:
    """transformers' TopHLogitsWarper: of each row's 100 most likely tokens (most likely first), those while the
    running sum of -p log p (p their probabilities among the 100) stays within ``top_h`` times the 100's entropy,
    the first always. Decided in float32 as transformers' scores are; a zero probability's term is NaN there (0 *
    -inf), which ends the run, as it does here."""
    s32 = scores.astype(np.float32)
    n = min(100, s32.shape[-1])
    top_idx = topk_indices(s32, n)  # torch.topk's order, ties included (which of them the cut keeps)
    top = np.take_along_axis(s32, top_idx, axis=-1)
    # torch's Categorical(logits=top): logits less their logsumexp, probs their softmax
    shifted = top - top.max(-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        logits = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
        probs = np.exp(logits)
        probs = probs / probs.sum(-1, keepdims=True)
        tiny = np.finfo(np.float32).min
        tau = -(np.maximum(logits, tiny) * probs).sum(-1, keepdims=True) * np.float32(top_h)
        # torch's CPU cumsum of float32 adds in float64 (a float32 sum stalls on a long tail of tiny terms)
        cum = np.cumsum((-probs * np.log(probs)).astype(np.float64), axis=-1).astype(np.float32)
    keep_sorted = cum <= tau
    keep_sorted[:, 0] = True
    keep = np.zeros(s32.shape, bool)
    np.put_along_axis(keep, top_idx, keep_sorted, axis=-1)
    return np.where(keep, scores, -np.inf)


def cutoff_filter(scores: np.ndarray, epsilon: float, eta: bool = False, min_keep: int = 1) -> np.ndarray:
    """transformers' EpsilonLogitsWarper (tokens of probability below ``epsilon`` dropped) or, ``eta``, its
    EtaLogitsWarper (below min(epsilon, sqrt(epsilon) * exp(-entropy))); the ``min_keep`` most likely stay."""
    logp = log_softmax(scores)
    p = np.exp(logp)
    cut = epsilon
    if eta:  # the entropy as torch's Categorical takes it: -inf scores add nothing
        entropy = -(np.where(np.isneginf(logp), 0.0, logp) * p).sum(-1, keepdims=True)
        cut = np.minimum(epsilon, np.sqrt(epsilon) * np.exp(-entropy))
    drop = _keep_top(p < cut, scores, min_keep)
    return np.where(drop, -np.inf, scores)


def select_next(logits: np.ndarray, do_sample: bool = False, temperature: float = 1.0, top_k: Optional[int] = None,
                top_p: Optional[float] = None, rng: Optional[np.random.Generator] = None,
                min_p: Optional[float] = None) -> np.ndarray:
    """The next token of each row of ``logits`` (B, V): the argmax, or a draw after transformers'
    warpers in their order (temperature, then top-k, top-p and min-p)."""
    return Sampler(do_sample, temperature, top_k, top_p, min_p, rng)(logits)


def draw_without_replacement(scores: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """(rows, k) indices drawn without replacement with probabilities softmax(scores) of each row (the
    distribution of torch.multinomial(softmax(scores), k) without replacement), by the Gumbel-top-k trick:
    the k largest of scores + Gumbel noise. Tokens at -inf come last (lowest index first) when fewer than
    k have a chance."""
    noise = -np.log(-np.log(rng.random(scores.shape)))
    keyed = np.where(np.isneginf(scores), -np.inf, scores + noise)
    return np.argsort(-keyed, axis=-1, kind="stable")[:, :k]
