"""Beam search for ``generate(..., num_beams=K)``, step for step as transformers' ``_beam_search``
(vectorised over the batch): each step keeps the top ``max(2, 1 + #eos) * K`` continuations of all K
beams by accumulated log-probability; of those, ones that end (end-of-sequence token or the length
limit) and rank among the top K become finished hypotheses, scored by log-probability / length **
``length_penalty``, and the best K unfinished ones run on. Stops when no running beam can beat the
worst finished one (``early_stopping`` False: at the current length; "never": at the longest length when
``length_penalty`` > 0; True: as soon as K hypotheses are finished), or nothing can run on.

The model side is two callables: the first step's logits for the B*K rows, and the next step's logits
for each row's new token after the KV cache rows were reordered to follow their source beams.
"""
from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np

from .sampling import draw_without_replacement
from .topk_order import topk_indices

_NEG = np.float32(-1.0e9)


class BeamRun:
    """The beam search running in this context, as its logits processors and its caller see it. ``beams``: rows
    per prompt (rows b*K to b*K + K - 1 are prompt b's). A processor that finds a row's beam cannot go on (a grammar's
    dead end) sets the row's scores to -inf and calls ``drop(row, error)``: like a banned continuation in
    transformers, the beam is then never chosen while another can run on, and ``error`` is raised only if its prompt
    ends with no hypothesis at all. ``found`` (B,), once the search is done: how many of each prompt's returned
    hypotheses are real ones (the rest are placeholders, of length 0, where fewer continuations were allowed)."""

    def __init__(self, beams: int):
        self.beams = int(beams)
        self.dead: Dict[int, Exception] = {}  # prompt -> the first error of one of its beams
        self.found: Optional[np.ndarray] = None

    def drop(self, row: int, error: Exception) -> None:
        self.dead.setdefault(int(row) // self.beams, error)


_RUN: ContextVar = ContextVar("forgegrad_beam_run", default=None)
_RECORD: ContextVar = ContextVar("forgegrad_beam_record", default=None)


def running() -> Optional[BeamRun]:
    """The beam search running in this context (thread, task), or None: greedy search and sampling."""
    return _RUN.get()


@contextmanager
def recorded():
    """``with recorded() as runs: generate(...)``: ``runs`` gets the BeamRun of each beam search run inside."""
    runs: List[BeamRun] = []
    token = _RECORD.set(runs)
    try:
        yield runs
    finally:
        _RECORD.reset(token)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float32, copy=False)
    y = x - x.max(axis=-1, keepdims=True)
    return y - np.log(np.exp(y).sum(axis=-1, keepdims=True))


def _top(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest of each row, largest first, in torch.topk's order (transformers' beam search
    chooses with it): NaN first, ties as torch's CPU selection leaves them (topk_order.py), which decides the
    hypotheses kept where scores tie (the end tokens of every beam at +inf, equal placeholder scores)."""
    return topk_indices(values, k)


def search(first_logits: np.ndarray, next_logits: Callable[[np.ndarray, np.ndarray], np.ndarray], batch: int,
           num_beams: int, *args, **kwargs):
    """``_search`` (below) as the BeamRun of this context: a beam a processor drops is -inf from then on; a prompt
    left with no hypothesis raises the error of its first dropped beam."""
    run = BeamRun(num_beams)
    token = _RUN.set(run)
    try:
        sequences, lengths, finished = _search(first_logits, next_logits, batch, num_beams, *args, **kwargs)
    finally:
        _RUN.reset(token)
    run.found = finished.sum(axis=1)
    for b in np.flatnonzero(~finished.any(axis=1)).tolist():
        if b in run.dead:  # every beam of this prompt died: nothing to return
            raise run.dead[b]
    if _RECORD.get() is not None:
        _RECORD.get().append(run)
    return sequences, lengths


def _search(first_logits: np.ndarray, next_logits: Callable[[np.ndarray, np.ndarray], np.ndarray], batch: int,
            num_beams: int, max_new_tokens: int, eos: Sequence[int], fill: int, length_penalty: float,
            early_stopping: Union[bool, str], process, prefix: np.ndarray, num_return: int = 1, sampler=None,
            stop=None):
    """(tokens (B, R, max_new_tokens), lengths (B, R), finished (B, R): a real hypothesis, not a placeholder) of
    each batch item's R = ``num_return`` best hypotheses, best first (transformers' ``num_return_sequences``).

    ``next_logits(tokens (B*K,), rows (B*K,))``: reorder the cache so that row r holds what row rows[r] held,
    feed token r to row r, return the logits (B*K, V). ``process``: the LogitsProcessors, given each row's
    sequence so far (``prefix`` (B*K, P), the prompt or the decoder start, then the row's new tokens).
    ``sampler`` (a sampling.Sampler) with do_sample: beam sampling, as transformers' ``_beam_search`` with
    do_sample: its warpers on the log-probabilities (keeping 1 + #eos tokens a row), then the continuations drawn
    without replacement from softmax of the accumulated scores, best first, instead of the top ones; with
    ``renormalize`` (renormalize_logits), the processed and warped scores' log-softmax. ``stop`` (a
    stopping.Stopping): transformers' other stopping criteria (stop strings, max_time) on each continuation's
    whole sequence: one that meets them ends, as one ending with an end token does."""
    B, K = batch, num_beams
    keep = max(2, 1 + len(eos)) * K
    top_mask = np.arange(keep) < K
    running = np.full((B, K, max_new_tokens), fill, np.int64)
    sequences = running.copy()
    run_scores = np.zeros((B, K), np.float32)
    run_scores[:, 1:] = _NEG
    scores = np.full((B, K), _NEG, np.float32)
    lengths = np.zeros((B, K), np.int64)
    finished = np.zeros((B, K), bool)
    unsatisfied = np.ones((B, 1), bool)
    eos_ids = np.asarray(list(eos), np.int64)
    b_index = np.arange(B)[:, None]
    logits, n = first_logits, 0
    while True:
        logp = _log_softmax(logits)
        if process.active:  # on the log-probabilities, as transformers' beam search applies them
            logp = process(np.concatenate([prefix, running.reshape(B * K, -1)[:, :n]], axis=1), logp)
        if sampler is not None and sampler.do_sample:
            logp = sampler.warp(logp, min_keep=1 + max(1, len(eos))).astype(np.float32)
        if sampler is not None and sampler.watermark is not None:  # transformers' watermark: after the warpers
            logp = sampler.watermark(np.concatenate([prefix, running.reshape(B * K, -1)[:, :n]], axis=1), logp)
        if sampler is not None and sampler.renormalize:  # a dropped beam's row (all -inf) stays so, not NaN
            with np.errstate(invalid="ignore"):
                logp = np.where(np.isneginf(logp).all(axis=-1, keepdims=True), logp, _log_softmax(logp))
        V = logp.shape[-1]
        acc = (logp.reshape(B, K, V) + run_scores[:, :, None]).reshape(B, K * V)
        if sampler is None or not sampler.do_sample:
            idx = _top(acc, keep)
        else:  # drawn, then ordered best first as transformers sorts them (torch.sort: stable at these sizes)
            idx = draw_without_replacement(acc, keep, sampler.rng)
            idx = np.take_along_axis(idx, np.argsort(-np.take_along_axis(acc, idx, axis=1), axis=-1, kind="stable"),
                                     axis=1)
        top_lp = np.take_along_axis(acc, idx, axis=1)
        src, tok = idx // V, idx % V
        top_seqs = running[b_index, src]  # (B, keep, max_new) copies
        top_seqs[:, :, n] = tok
        hits = np.isin(tok, eos_ids) | (n + 1 >= max_new_tokens)
        if stop is not None and stop.active:
            whole = np.concatenate([np.broadcast_to(prefix.reshape(B, K, -1)[:, :1], (B, keep, prefix.shape[1])),
                                    top_seqs[:, :, :n + 1]], axis=2)
            hits |= stop(whole.reshape(B * keep, -1)).reshape(B, keep)
        # the best K that did not end run on
        run_lp = (top_lp + hits.astype(np.float32) * _NEG).astype(np.float32)
        nxt = _top(run_lp, K)
        running = np.take_along_axis(top_seqs, nxt[:, :, None], axis=1)
        run_scores = np.take_along_axis(run_lp, nxt, axis=1)
        run_src = np.take_along_axis(src, nxt, axis=1)
        # the ones that ended among the top K join the finished hypotheses if they score higher
        just = hits & top_mask[None, :]
        cand = top_lp / np.float32((n + 1) ** length_penalty)
        full = finished.all(axis=-1, keepdims=True) & (early_stopping is True)
        cand = cand + full.astype(np.float32) * _NEG + (~unsatisfied).astype(np.float32) * _NEG
        cand = (cand + (~just).astype(np.float32) * _NEG).astype(np.float32)
        merged = np.concatenate([scores, cand], axis=1)
        sel = _top(merged, K)
        sequences = np.take_along_axis(np.concatenate([sequences, top_seqs], axis=1), sel[:, :, None], axis=1)
        lengths = np.take_along_axis(np.concatenate([lengths, np.full((B, keep), n + 1)], axis=1), sel, axis=1)
        finished = np.take_along_axis(np.concatenate([finished, just], axis=1), sel, axis=1)
        scores = np.take_along_axis(merged, sel, axis=1)
        n += 1
        best_length = max_new_tokens if (early_stopping == "never" and length_penalty > 0.0) else n
        best_running = run_scores[:, :1] / np.float32(best_length ** length_penalty)
        worst_finished = np.where(finished, scores.min(axis=1, keepdims=True), _NEG)
        unsatisfied = unsatisfied & (best_running > worst_finished).any(axis=-1, keepdims=True)
        if not (unsatisfied.any() and not (finished.all() and early_stopping is True) and not hits.all()):
            break
        rows = (b_index * K + run_src).reshape(-1)
        logits = next_logits(running[:, :, n - 1].reshape(-1), rows)
    return sequences[:, :num_return], lengths[:, :num_return], finished[:, :num_return]


def reorder(cache, rows: np.ndarray) -> None:
    """Every layer's cached keys and values gathered by batch row (rows[r]: the source of row r)."""
    if np.array_equal(rows, np.arange(len(rows))):
        return
    for layer in range(len(cache.keys)):
        cache.keys[layer] = cache.keys[layer][rows]
        cache.values[layer] = cache.values[layer][rows]


def eos_list(eos) -> List[int]:
    return [] if eos is None else ([int(eos)] if np.isscalar(eos) else [int(e) for e in eos])


def fill_token(pad, eos: List[int]) -> int:
    """What pads a hypothesis shorter than the longest returned, as transformers' beam search picks it
    (``pad or eos[0]``): the pad token, but the first eos where the pad id is None or 0 (T5's), else 0."""
    return int(pad) if pad else (eos[0] if eos else int(pad or 0))


def beam_decoder(model, ids: np.ndarray, mask: np.ndarray, num_beams: int, max_new_tokens: int, eos: List[int],
                 pad, length_penalty: float, early_stopping, process, num_return: int = 1, sampler=None,
                 stop=None, images=None) -> np.ndarray:
    """Beam search after left-padded prompts ids (B, T): (B * R, T + n), each prompt's R = ``num_return`` best
    hypotheses (prompt-major, best first), n the longest returned hypothesis. ``images``: an image-text model's
    image arguments for the prefill of the B * K rows (_image_text.repeat_images)."""
    from ...autograd import no_grad
    from ._decode import LeanDecoder, lean_path_applies
    if getattr(model, "recompute_cache_at", None) is not None:
        raise ValueError("generate: num_beams > 1 is not supported for models whose cache is recomputed past the "
                         "original context (Phi-3's longrope)")
    B, T = ids.shape
    K = num_beams
    rows_mask = np.repeat(mask, K, axis=0)
    positions = np.where(rows_mask, np.cumsum(rows_mask, axis=1) - 1, 1)
    state = {"mask": rows_mask, "last": positions[:, -1].copy()}
    cache = model.new_cache(B * K, T + max_new_tokens)
    lean = LeanDecoder(model) if lean_path_applies(model) else None
    with no_grad():
        first = model(np.repeat(ids, K, axis=0), rows_mask, positions, cache=cache, logits_to_keep=1,
                      **(images or {})).numpy()[:, -1]

    def next_logits(tokens, rows):
        reorder(cache, rows)  # within each prompt's beams: the prompt's mask and positions stay the same
        state["mask"] = np.concatenate([state["mask"], np.ones((B * K, 1), bool)], axis=1)
        state["last"] = state["last"] + 1
        with no_grad():
            if lean is not None:
                return lean.step(tokens, state["last"], state["mask"], cache)
            return model(tokens[:, None], state["mask"], state["last"][:, None], cache=cache).numpy()[:, -1]

    seqs, lengths = search(first, next_logits, B, K, max_new_tokens, eos, fill_token(pad, eos), length_penalty,
                           early_stopping, process, np.repeat(ids, K, axis=0), num_return, sampler, stop)
    seqs = seqs.reshape(B * num_return, max_new_tokens)
    return np.concatenate([np.repeat(ids, num_return, axis=0), seqs[:, :lengths.max()]], axis=1)


def beam_seq2seq(model, ids: np.ndarray, mask: Optional[np.ndarray], num_beams: int, max_new_tokens: int,
                 eos: List[int], pad, length_penalty: float, early_stopping, process,
                 num_return: int = 1, sampler=None, stop=None) -> np.ndarray:
    """Beam search of an encoder-decoder: (B * R, 1 + n), the decoder start token first; each prompt's
    R = ``num_return`` best hypotheses (prompt-major, best first)."""
    from ...autograd import no_grad
    from ...tensor import Tensor
    from ._decode_seq2seq import lean_seq2seq_step
    B, K = ids.shape[0], num_beams
    start = model.decoder_start_token_id
    with no_grad():
        states = Tensor._wrap(np.repeat(model.encode(ids, mask).numpy(), K, axis=0))
        rows_mask = None if mask is None else np.repeat(mask, K, axis=0)
        cross = model.cross_kv(states)
        cache = model.new_cache(B * K, 1 + max_new_tokens)
        lean = lean_seq2seq_step(model, cross, rows_mask, cache)  # direct kernel calls where they apply

        def step(tokens):
            if lean is not None:
                return lean(tokens)
            return model.decode(tokens[:, None], states, rows_mask, cross=cross, cache=cache).numpy()[:, -1]

        first = step(np.full(B * K, start, np.int64))

    def next_logits(tokens, rows):
        reorder(cache, rows)  # each prompt's beams share its encoder states: no reorder needed there
        with no_grad():
            return step(tokens)

    seqs, lengths = search(first, next_logits, B, K, max_new_tokens, eos, fill_token(pad, eos), length_penalty,
                           early_stopping, process, np.full((B * K, 1), start, np.int64), num_return, sampler, stop)
    seqs = seqs.reshape(B * num_return, max_new_tokens)
    return np.concatenate([np.full((B * num_return, 1), start, np.int64), seqs[:, :lengths.max()]], axis=1)
