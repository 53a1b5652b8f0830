"""Continuous batching for the completions server: every active completion decodes in one batched step,
and a new request joins at the next step instead of waiting for the others to finish.

A decode step at a few rows costs about what it costs at one (it is bound by reading the weights), so
while several clients are generating, each step serves all of them. The rows share one KV cache, each
row's keys right-aligned at the cache's end and the columns before them masked as padding, as in a
left-padded batch:

* a request joins with its own prefill (alone, on a cache of its own), which picks its first token;
  the batch cache is then rebuilt with its keys as a new row;
* a step feeds every row's last token at that row's own position, then each row picks its next token
  with its own sampling settings and random generator (``seed`` gives the generator
  ``forgegrad.manual_seed(seed)`` would);
* a row that ends (end of sequence, stop string, max_tokens, client gone) leaves the batch, and columns
  that are padding in every remaining row are dropped.

The rebuilds copy the cache (once per join and per leave). A batched row's logits equal its solo
logits to float32 rounding, not bit for bit: the products run on more rows and the softmax sums over
padded lengths, so a near-tie can pick another token than a solo run would.
"""
from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional

import numpy as np

from ..autograd import no_grad

log = logging.getLogger("forgegrad.serve")


@dataclass
class Job:
    """One request: its prompts (one row each), the finished completions by prompt index."""
    req: object  # CompletionRequest
    prompt_ids: List[List[int]]
    on_text: Optional[Callable[[int, str], None]]
    cancelled: threading.Event
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)
    results: dict = field(default_factory=dict)


class _Row:
    def __init__(self, job: Job, index: int, stream, rng: np.random.Generator, cache, n: int, token: int):
        self.job, self.index, self.stream, self.rng = job, index, stream, rng
        # (KVCache, row) holding its n keys (its own prefill's until it joins the batch); the token to feed next
        self.cache, self.n, self.token = cache, n, token


def batching_applies(model) -> bool:
    """The lean decode step runs the model (see models/hf/_decode.py), and no row ever needs its cache
    recomputed (Phi-3's longrope switches frequencies past the original context)."""
    from ..models.hf._decode import lean_path_applies
    return lean_path_applies(model) and getattr(model, "recompute_cache_at", None) is None


class BatchEngine:
    """Runs on its own thread: ``submit(job)``; ``close()`` ends it."""

    def __init__(self, gen, max_batch: int, on_step: Optional[Callable[[int, float], None]] = None):
        from ..models.hf._decode import LeanDecoder
        self.gen, self.model, self.max_batch = gen, gen.model, int(max_batch)
        self.on_step = on_step  # (rows, seconds) of every batched decode step: the server's metrics
        self.lean = LeanDecoder(self.model)
        self.rows: List[_Row] = []
        self.cache = None
        self.mask: Optional[np.ndarray] = None  # (rows, cache.length) bool: True where a row has a key
        self._queue: "queue.Queue[Optional[Job]]" = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="forgegrad-generate-batch", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> concurrent.futures.Future:
        self._queue.put(job)
        return job.future

    def close(self) -> None:
        self._queue.put(None)

    # ---- the loop -------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            try:
                self._admit()
            except _Closed:
                self._fail(RuntimeError("the server is shutting down"), drain=True)
                return
            if not self.rows:
                continue
            try:
                self._step()
            except Exception as e:  # a broken step fails the requests in it, not the server
                log.exception("batched decode step failed")
                self._fail(e)

    def _admit(self) -> None:
        """Prefill the requests that arrived (blocking while there is nothing to do)."""
        joined = []
        while len(self.rows) + len(joined) < self.max_batch:
            try:
                job = self._queue.get(block=not (self.rows or joined))
            except queue.Empty:
                break
            if job is None:
                raise _Closed
            joined += self._start(job)
        if joined:
            self._rebuild(self.rows + joined)

    def _start(self, job: Job) -> List[_Row]:
        """Prefill each prompt of a job alone; rows that end at their first token finish here."""
        from ..random import generator
        from .completion_request import choice_seed
        req, rows = job.req, []
        prefilled = {}  # a prompt's (cache, logits): its n choices share one prefill
        try:
            for i, ids in enumerate(job.prompt_ids):
                on_text = None if job.on_text is None else (lambda t, i=i: job.on_text(i, t))
                stream = self.gen.stream(req, ids, on_text)
                seed = choice_seed(req, i)
                rng = np.random.default_rng(seed if seed is not None else int(generator().integers(2 ** 63)))
                P = len(ids)
                if tuple(ids) not in prefilled:
                    cache = self.model.new_cache(1, P)
                    with no_grad():
                        logits = self.model(np.array([ids]), np.ones((1, P), bool), np.arange(P)[None],
                                            cache=cache, logits_to_keep=1).numpy()[:, -1]
                    prefilled[tuple(ids)] = cache, logits
                cache, logits = prefilled[tuple(ids)]
                token = int(self._select(req, logits, rng, ids, []))
                row = _Row(job, i, stream, rng, (cache, 0), P, token)
                if job.cancelled.is_set():
                    stream.cancel()
                    self._finish(row)
                elif stream.push(token):
                    self._finish(row)
                else:
                    rows.append(row)
        except Exception as e:
            log.exception("prefill failed")
            for row in rows:
                row.stream.cancel()
            if not job.future.done():
                job.future.set_exception(e)
            return []
        return rows

    @staticmethod
    def _select(req, logits, rng, prompt, output):
        from ..models.hf.generation import select_next
        if req.penalties.active:
            logits = req.penalties.apply(logits, prompt, output)
        return select_next(logits, not req.greedy, req.temperature if not req.greedy else 1.0, req.top_k,
                           req.top_p if req.top_p < 1 else None, rng)[0]

    def _step(self) -> None:
        rows = self.rows
        B = len(rows)
        tokens = np.array([r.token for r in rows], np.int64)
        positions = np.array([r.n for r in rows], np.int64)
        mask = np.concatenate([self.mask, np.ones((B, 1), bool)], axis=1)
        t0 = time.perf_counter()
        with no_grad():
            logits = self.lean.step(tokens, positions, mask, self.cache)
        if self.on_step is not None:
            self.on_step(B, time.perf_counter() - t0)
        self.mask = mask
        ended = []
        for b, row in enumerate(rows):
            row.n += 1
            if row.job.cancelled.is_set() or row.job.future.done():
                row.stream.cancel()
                ended.append(row)
                continue
            row.token = int(self._select(row.job.req, logits[b:b + 1], row.rng, row.job.prompt_ids[row.index],
                                         row.stream.tokens))
            if row.stream.push(row.token):
                ended.append(row)
        for row in ended:
            self._finish(row)
        if ended:
            self._rebuild([r for r in rows if r not in ended])

    # ---- membership -----------------------------------------------------------------------------
    def _rebuild(self, rows: List[_Row]) -> None:
        """The batch cache for ``rows``: each row's ``n`` keys right-aligned at the end, padding before."""
        self.rows = rows
        if not rows:
            self.cache, self.mask = None, None
            return
        length = max(r.n for r in rows)
        room = max(r.stream.max_tokens - len(r.stream.tokens) for r in rows)
        cache = self.model.new_cache(len(rows), length + room + 1)
        mask = np.zeros((len(rows), length), bool)
        for b, row in enumerate(rows):
            src, src_b = row.cache
            end = src.length
            for layer in range(len(cache.keys)):
                cache.keys[layer][b, :, length - row.n:length] = src.keys[layer][src_b, :, end - row.n:end]
                cache.values[layer][b, :, length - row.n:length] = src.values[layer][src_b, :, end - row.n:end]
            mask[b, length - row.n:] = True
        cache.length = length
        for b, row in enumerate(rows):
            row.cache = (cache, b)
        self.cache, self.mask = cache, mask

    def _finish(self, row: _Row) -> None:
        job = row.job
        job.results[row.index] = row.stream.result()
        if len(job.results) == len(job.prompt_ids) and not job.future.done():
            job.future.set_result([job.results[i] for i in range(len(job.prompt_ids))])

    def _fail(self, error: Exception, drain: bool = False) -> None:
        """Fail the requests in the batch (and, on close, those still waiting)."""
        for row in self.rows:
            if not row.job.future.done():
                row.job.future.set_exception(error)
        self.rows, self.cache, self.mask = [], None, None
        while drain:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return
            if job is not None and not job.future.done():
                job.future.set_exception(error)


class _Closed(Exception):
    pass
