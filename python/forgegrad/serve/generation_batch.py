"""Continuous batching for the completions server: every active completion decodes in one batched step,
and a new request joins at the next step instead of waiting for the others to finish.

A decode step at a few rows costs about what it costs at one (it is bound by reading the weights), so
while several clients are generating, each step serves all of them. Here the rows share one contiguous KV cache,
each row's keys right-aligned at the cache's end and the columns before them masked as padding, as in a
left-padded batch: the layout encoder-decoders are served with (seq2seq_batch.py). Decoder-only models are served
on a paged KV cache instead (paged_batch.py: the same loop, each row's keys in blocks of a shared pool read through
its block table, a prefix cache sharing those blocks), which overrides the prefill's end, the step and membership.

* a request joins with its own prefill (alone, on a cache of its own), which picks its first token;
  the batch cache is then rebuilt with its keys as a new row. A prompt is prefilled ``prefill_chunk``
  tokens at a time, one chunk between two decode steps, so a long prompt delays the others' next token
  by one chunk's prefill, not by its whole prefill (chunked prefill; the chunks attend to the cache of
  the ones before, so the prompt's keys are what one prefill computes, to float32 rounding). It is
  chunked the same way when nobody else is decoding, so a request's numbers do not depend on the load it
  met. A request's n choices of one prompt share its prefill. A chat prompt with images (``Job.images``: Gemma 3,
  LLaVA, LLaVA-NeXT, PaliGemma, Qwen2-VL, Qwen2.5-VL) is prefilled in one call with them, never chunked: the model
  merges the image rows and attends both ways within image blocks (PaliGemma's prefix) over the whole prompt;
* a step feeds every row's last token at that row's own position (a Qwen2-VL row after its images: its key count plus
  its ``rope_delta``, the offset its prefill left on its cache, since its text positions run on from the images' M-RoPE
  positions, all three components equal, which is the plain rope at that position), then each row picks its next token
  as ``generate`` would pick it alone (row_settings.py: the checkpoint's processors on the row's own tokens, the
  request's token rules and penalties, its own sampling settings), with its own random generator (``seed`` gives the
  generator ``forgegrad.manual_seed(seed)`` would); a row whose request streams log-probabilities also gets the
  log-softmax of its own logits (the chosen token's value and the top ones), a best_of candidate the chosen token's
  value (summed to rank the candidates), the others none;
* a row that ends (end of sequence, stop string, max_tokens, client gone) leaves its slot free (its
  columns all masked); a request that joins later takes a free slot, its keys copied in right-aligned
  at the batch's length, so a join or a leave copies no other row's keys. The cache is rebuilt (every
  row copied, columns that are padding in every row dropped) only when a joining row does not fit (no
  free slot, a prompt longer than the batch's keys, not enough room left for its tokens) or when more
  slots are free than taken (free slots still cost their share of each step's attention).

A batched row's logits equal its solo logits to float32 rounding, not bit for bit: the products run on
more rows and the softmax sums over padded lengths, so a near-tie can pick another token than a solo
run would.

Encoder-decoders run the same loop with an encoder in front (seq2seq_batch.py: ``_prefill_step``, ``_decode``,
``_pick`` and the placement methods are what it overrides).
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
from .token_logprobs import entry, log_softmax, step_entry, token_logprob

log = logging.getLogger("forgegrad.serve")


def settle(future: concurrent.futures.Future, result=None, error: Optional[BaseException] = None) -> None:
    """Give a request's future its result or error, unless it is already done: the server's side (an asyncio
    wrapper, another thread) cancels it when the client goes away, at any moment, so a check of ``done()`` before
    ``set_result`` can pass and the set still meet a cancelled future (InvalidStateError, which would fail the
    batch's other rows)."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except concurrent.futures.InvalidStateError:
        pass


@dataclass
class Job:
    """One request: its prompts (one row each), the finished completions by prompt index."""
    req: object  # CompletionRequest
    prompt_ids: List[List[int]]
    on_text: Optional[Callable[[int, str], None]]
    cancelled: threading.Event
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)
    results: dict = field(default_factory=dict)
    constraints: dict = field(default_factory=dict)  # structured outputs: each row's RowConstraint by index
    choices: dict = field(default_factory=dict)  # each row's RowChoice by index (row_settings.py)
    seq: int = 0  # its place in the engine's arrival order (set as it is admitted): first come, first served
    # a chat request's images (chat_images.image_inputs' pixel_values, token_type_ids, image_sizes): the model's
    # arguments for its one prompt's prefill (every row of a job with images is that prompt's: its n choices)
    images: Optional[dict] = None
    # its images' prefix-cache keys (image_prefix.ImageKeys), made by the paged engine on its first lookup
    image_keys: Optional[object] = None


class _Row:
    def __init__(self, job: Job, index: int, stream, rng: np.random.Generator, cache, n: int, token: int,
                 rope_delta: int = 0):
        self.job, self.index, self.stream, self.rng = job, index, stream, rng
        # (KVCache, row) holding its n keys (its own prefill's until it joins the batch); the token to feed next
        self.cache, self.n, self.token = cache, n, token
        # what its rotary position runs ahead of (or behind) its key count n: Qwen2-VL's rope delta after a prompt
        # with images (its text positions go on from the images' M-RoPE positions, all three components equal);
        # 0 for every other row
        self.rope_delta = rope_delta


class _Prefill:
    """One prompt of a job being prefilled on a cache of its own, and the choices (index, stream, rng) that
    continue it once it is done."""

    def __init__(self, job: Job, ids: List[int], cache):
        self.job, self.ids, self.cache = job, ids, cache
        self.done = 0  # prompt tokens in the cache so far
        # a prompt with images: its first image_tokens tokens are prefilled in one call from position 0 with the
        # images (the model merges the image rows and masks the image blocks over the whole prompt), never chunked;
        # 0 where the paged engine read every image token's keys from the prefix cache (the rest is text)
        self.image_tokens = len(ids) if job.images else 0
        self.choices: List[tuple] = []

    @property
    def rows(self) -> int:
        """Rows it will put in the batch (what it counts against max_batch while it waits)."""
        return len(self.choices)


def batching_applies(model) -> bool:
    """The lean decode step runs the model (see models/hf/_decode.py), and no row ever needs its cache
    recomputed (Phi-3's longrope switches frequencies past the original context). An encoder-decoder: its lean
    step runs it (seq2seq_batch.py)."""
    if getattr(model, "is_encoder_decoder", False):
        from .seq2seq_batch import seq2seq_batching_applies
        return seq2seq_batching_applies(model)
    from ..models.hf._decode import lean_path_applies
    return lean_path_applies(model) and getattr(model, "recompute_cache_at", None) is None


def image_batching_applies(model) -> bool:
    """Whether the engine decodes this image-text model's prompts with images (Gemma 3, LLaVA, LLaVA-NeXT,
    PaliGemma, Qwen2-VL, Qwen2.5-VL): their decode steps are text steps, at plain positions or, for Qwen2-VL's, at
    each row's own offset (``rope_delta``: after an image its text positions run on from the image's M-RoPE
    positions, which the prompt's prefill leaves on its cache as ``rope_deltas``)."""
    return bool(getattr(model, "takes_images", False))


def rope_delta(cache) -> int:
    """The rope delta a one-row prefill left on its cache (Qwen2-VL's prompt with images), else 0."""
    deltas = getattr(cache, "rope_deltas", None)
    return 0 if deltas is None else int(np.asarray(deltas).reshape(-1)[0])


def rope_reads_call_length(model) -> bool:
    """Whether a rotary embedding picks its frequencies by a call's longest position (dynamic NTK, longrope): then a
    key depends on the call that computed it, so a prompt is prefilled in one call, as ``generate`` prefills it (not
    in chunks, which would rotate its keys by each chunk's end), and the paged engine never recomputes a row's keys
    (paged_batch.py: it reserves every block a row can take instead of preempting it)."""
    from ..models.hf._layers import LengthScaledRope
    return any(isinstance(m, LengthScaledRope) for m in model.modules())


class BatchEngine:
    """Runs on its own thread: ``submit(job)``; ``close()`` ends it."""

    SPARE_COLUMNS = 256  # cache columns a rebuild adds beyond what its rows need (room for later rows)

    def __init__(self, gen, max_batch: int, on_step: Optional[Callable[[int, float], None]] = None,
                 prefill_chunk: int = 128, on_prefill: Optional[Callable[[], None]] = None):
        self.gen, self.model, self.max_batch = gen, gen.model, int(max_batch)
        # 0: a prompt's whole prefill at once (always, where the keys depend on the call: rope_reads_call_length)
        self.prefill_chunk = 0 if rope_reads_call_length(self.model) else int(prefill_chunk)
        self.on_prefill = on_prefill  # called after every prefill call (the server's metrics)
        self.prefills: List[_Prefill] = []  # admitted, not yet decoding (first in, first prefilled)
        self.on_step = on_step  # (rows, seconds) of every batched decode step: the server's metrics
        self.lean = self._decoder_step()
        self.rows: List[_Row] = []  # the decoding rows
        self.slots: List[Optional[_Row]] = []  # the row in each batch row of the cache (None: free)
        self.cache = None
        self.mask: Optional[np.ndarray] = None  # (slots, cache.length) bool: True where a row has a key
        self._queue: "queue.Queue[Optional[Job]]" = queue.Queue()
        self._arrivals = 0  # jobs admitted so far: the next one's seq
        self._thread = threading.Thread(target=self._run, name="forgegrad-generate-batch", daemon=True)
        self._thread.start()

    def _decoder_step(self):
        from ..models.hf._decode import LeanDecoder
        return LeanDecoder(self.model, rows_apart=True)  # each row a request of its own

    def _prefill_cache(self, ids: List[int]):
        """The cache a prompt is prefilled on (its own, one row)."""
        return self.model.new_cache(1, len(ids))

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
            if self.prefills:
                job = self.prefills[0].job
                try:
                    self._prefill_step()
                except Exception as e:  # its rows' join broke (the batch may be half rebuilt): fail them, not the
                    log.exception("joining the batch failed")  # engine's thread (every request would then wait)
                    self._drop(job, e)
                    self._fail(e)
            if not self.rows:
                continue
            try:
                self._step()
            except Exception as e:  # a broken step fails the requests in it, not the server
                log.exception("batched decode step failed")
                self._fail(e)

    def _admit(self) -> None:
        """Take the requests that arrived, up to max_batch rows in all (blocking while there is nothing to do)."""
        waiting = sum(p.rows for p in self.prefills)
        while len(self.rows) + waiting < self.max_batch:
            try:
                job = self._queue.get(block=not (self.rows or self.prefills))
            except queue.Empty:
                break
            if job is None:
                raise _Closed
            try:
                waiting += self._admit_job(job)
            except Exception as e:
                log.exception("admitting a request failed")
                self._drop(job, e)

    def _admit_job(self, job: Job) -> int:
        """Queue a job's prompts for prefill (one per distinct prompt); the number of rows it will take."""
        from ..random import generator
        from .completion_request import choice_seed
        req, by_prompt = job.req, {}
        job.seq, self._arrivals = self._arrivals, self._arrivals + 1
        for i, ids in enumerate(job.prompt_ids):
            on_text = None if job.on_text is None else (lambda t, lp, i=i: job.on_text(i, t, lp))
            seed = choice_seed(req, i)
            rng = np.random.default_rng(seed if seed is not None else int(generator().integers(2 ** 63)))
            if tuple(ids) not in by_prompt:
                by_prompt[tuple(ids)] = _Prefill(job, ids, self._prefill_cache(ids))
                self.prefills.append(by_prompt[tuple(ids)])
            by_prompt[tuple(ids)].choices.append((i, self.gen.stream(req, ids, on_text), rng))
            job.choices[i] = self.gen.generation.row(req, ids, rng)
            if getattr(req, "grammar", None) is not None:
                job.constraints[i] = self.gen.constraint(req)
        return len(job.prompt_ids)

    def _prefill_step(self) -> None:
        """The next chunk of the first waiting prompt (all of it when nobody is decoding); a prompt that is
        done picks its choices' first tokens and they join the batch (or end there)."""
        p = self.prefills[0]
        if self._cancel_prefill(p):
            return
        try:
            logits = self._prefill_chunk(p)
            if logits is None:
                return
            self.prefills.pop(0)
            joined = self._first_rows(p, logits, (p.cache, 0))
        except Exception as e:
            log.exception("prefill failed")
            self._drop(p.job, e)
            return
        if joined:
            self._join(joined)

    def _cancel_prefill(self, p: _Prefill) -> bool:
        """End a waiting prompt whose request was cancelled or has failed (True), or leave it (False)."""
        job = p.job
        if not (job.cancelled.is_set() or job.future.done()):
            return False
        self.prefills.pop(0)
        for index, stream, rng in p.choices:
            stream.cancel()
            self._finish(_Row(job, index, stream, rng, None, 0, 0))
        return True

    def _prefill_chunk(self, p: _Prefill) -> Optional[np.ndarray]:
        """Prefill the prompt's next chunk on its own cache; the logits (1, V) of its last token once the whole
        prompt is in, else None. Chunked also when nobody is decoding: a prompt's chunks (and so the rounding of its
        keys and logits) never depend on what else the server was doing when it arrived."""
        P, images = len(p.ids), {}
        if p.done < p.image_tokens:  # the prompt with its images: one call (the cache holds nothing before it)
            if p.done:
                raise RuntimeError(f"a prompt with images is prefilled from position 0, not {p.done}")
            end, images = p.image_tokens, p.job.images
        else:  # text: a preempted image row's answer tokens run after its prompt's keys as text chunks
            end = P if self.prefill_chunk <= 0 else min(P, p.done + self.prefill_chunk)
        with no_grad():
            logits = self.model(np.array([p.ids[p.done:end]]), np.ones((1, end), bool),
                                np.arange(p.done, end)[None], cache=p.cache, logits_to_keep=1,
                                **images).numpy()[:, -1]
        p.done = end
        if self.on_prefill is not None:
            self.on_prefill()
        return logits if end == P else None

    def _first_rows(self, p: _Prefill, logits: np.ndarray, cache) -> List[_Row]:
        """The prefilled prompt's choices as rows holding ``cache``, each with its first token picked from
        ``logits``; those that end there are finished, the others returned (to join the batch)."""
        job, joined, logp = p.job, [], None
        delta = rope_delta(p.cache)  # the choices share their prompt's positions
        for index, stream, rng in p.choices:
            row = _Row(job, index, stream, rng, cache, len(p.ids), 0, delta)
            row.token = int(self._select(job.req, logits, job.choices[index], p.ids, [],
                                         job.constraints.get(index)))
            lp = value = None
            if stream.top is not None or stream.ranked:  # the choices share the distribution
                logp = log_softmax(logits[0]) if logp is None else logp
                lp = None if stream.top is None else entry(logp, row.token, stream.top)
                value = float(logp[row.token])
            if self._push(row, lp, value):
                self._finish(row)
            else:
                joined.append(row)
        return joined

    def _drop(self, job: Job, error: Exception) -> None:
        """Fail a job whose prefill or admission broke: its waiting prompts go, its future gets the error."""
        self.prefills = [p for p in self.prefills if p.job is not job]
        if not job.future.done():
            from .structured import row_failed
            settle(job.future, error=row_failed(job.req, error))

    @staticmethod
    def _select(req, logits, choice, prompt, output, constraint=None):
        """The next token after ``logits`` (1, V), in generate's order: the checkpoint's processors (``choice``, a
        RowChoice), the request's token rules and penalties, then its sampler; a constrained row (structured
        outputs) picks among the tokens its grammar allows, and its matcher takes the token."""
        logits = choice.scores(logits, output)
        if req.token_rules is not None:
            logits = req.token_rules.apply(logits, output)
        if req.penalties.active:
            logits = req.penalties.apply(logits, prompt, output)
        if constraint is not None:
            logits = constraint.mask(np.array(logits, np.float32))
        token = choice.sampler(logits, np.array([choice.prefix + list(output)], np.int64))[0]  # the watermark's seeds
        if constraint is not None:
            constraint.advance(token)
        return token

    @staticmethod
    def _push(row: "_Row", lp, value) -> bool:
        """The row's new token into its stream; True when the row has ended (its stream's rules, or the
        checkpoint's stop strings and time limit)."""
        if row.stream.push(row.token, lp, value):
            return True
        reason = row.job.choices[row.index].stopped(row.stream.tokens)
        if reason is not None:
            row.stream.end(reason)
            return True
        return False

    def _step(self) -> None:
        slots = self.slots
        B = len(slots)
        tokens = np.array([r.token if r else 0 for r in slots], np.int64)
        # the rotary positions (the new key's column is the cache's length, whatever its position)
        positions = np.array([r.n + r.rope_delta if r else 0 for r in slots], np.int64)
        mask = np.concatenate([self.mask, np.ones((B, 1), bool)], axis=1)
        t0 = time.perf_counter()
        with no_grad():
            logits = self._decode(tokens, positions, mask)
        if self.on_step is not None:
            self.on_step(len(self.rows), time.perf_counter() - t0)
        self.mask = mask
        ended = self._advance(slots, logits)
        for row in ended:
            self._finish(row)
        if ended:
            self._leave(ended)

    def _advance(self, slots: List[Optional[_Row]], logits: np.ndarray) -> List[_Row]:
        """After a step: each row (``slots[b]``, None for a free slot) one key longer and its next token picked from
        ``logits[b]`` and pushed to its stream; the rows that ended (not yet finished)."""
        ended = []
        for b, row in enumerate(slots):
            if row is None:
                continue
            row.n += 1
            if row.job.cancelled.is_set() or row.job.future.done():
                row.stream.cancel()
                ended.append(row)
                continue
            try:
                row.token = int(self._pick(row, logits[b:b + 1]))
            except Exception as e:  # this row's pick failed (its grammar cannot go on): its request alone fails
                self._fail_row(row, e)
                ended.append(row)
                continue
            # the log-softmax of this row's own logits (before penalties), only for a row that streams them, and the
            # chosen token's value for a best_of candidate (ranked by their sum)
            lp = None if row.stream.top is None else step_entry(logits[b], row.token, row.stream.top)
            value = None
            if row.stream.ranked:
                value = lp.logprob if lp is not None else token_logprob(logits[b], row.token)
            if self._push(row, lp, value):
                ended.append(row)
        return ended

    @staticmethod
    def _fail_row(row: _Row, error: Exception) -> None:
        """Fail a row's request (a 400 where its grammar cannot go on: structured.row_failed); its other rows leave
        at the next step, the other requests decode on."""
        from .structured import row_failed
        failed = row_failed(row.job.req, error)
        if failed is error:
            log.error("picking a row's next token failed", exc_info=error)
        row.stream.cancel()
        settle(row.job.future, error=failed)

    def _decode(self, tokens: np.ndarray, positions: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """One batched decode step: every slot's next-token logits (slots, V); ``positions``: each slot's rotary
        position (its key count plus its rope delta)."""
        return self.lean.step(tokens, positions, mask, self.cache)

    def _pick(self, row: _Row, logits: np.ndarray) -> int:
        """The row's next token after its logits (1, V), with its request's settings."""
        return self._select(row.job.req, logits, row.job.choices[row.index], row.job.prompt_ids[row.index],
                            row.stream.tokens,
                            row.job.constraints.get(row.index))

    # ---- membership -----------------------------------------------------------------------------
    @staticmethod
    def _room(row: _Row) -> int:
        """Tokens the row may still feed (its cache needs that many more columns)."""
        return row.stream.max_tokens - len(row.stream.tokens)

    def _join(self, joined: List[_Row]) -> None:
        """New rows into free slots when they fit, else a rebuild with everyone."""
        free = [b for b, r in enumerate(self.slots) if r is None]
        cache = self.cache
        fits = cache is not None and len(joined) <= len(free) and all(
            r.n <= cache.length and cache.length + self._room(r) + 1 <= cache.max_length for r in joined)
        if not fits:
            self._rebuild(self.rows + joined)
            return
        for row, b in zip(joined, free):
            self._place(row, cache, b, cache.length)
            self.mask[b] = False
            self.mask[b, cache.length - row.n:] = True
            self.slots[b] = row
        self.rows = [r for r in self.slots if r is not None]

    def _leave(self, ended: List[_Row]) -> None:
        """Free the slots of ended rows; compact when more slots are free than taken."""
        for row in ended:
            _, b = row.cache
            self.slots[b] = None
            self.mask[b] = False
        self.rows = [r for r in self.slots if r is not None]
        if len(self.slots) - len(self.rows) > len(self.rows):
            self._rebuild(self.rows)

    @staticmethod
    def _place(row: _Row, cache, b: int, length: int) -> None:
        """Copy the row's n keys and values into batch row b of ``cache``, ending at column ``length``."""
        src, src_b = row.cache
        end = src.length
        for layer in range(len(cache.keys)):
            cache.keys[layer][b, :, length - row.n:length] = src.keys[layer][src_b, :, end - row.n:end]
            cache.values[layer][b, :, length - row.n:length] = src.values[layer][src_b, :, end - row.n:end]
        row.cache = (cache, b)

    def _rebuild(self, rows: List[_Row]) -> None:
        """A new batch cache for ``rows``, one slot each: each row's ``n`` keys right-aligned at the end,
        padding before."""
        self.rows, self.slots = list(rows), list(rows)
        if not rows:
            self.cache, self.mask = None, None
            return
        length = max(r.n for r in rows)
        # Spare columns past the rows' own room, so that rows joining later still fit: unused columns
        # cost no step time (a step reads cache.length of them) and no memory until written (np.zeros).
        cache = self.model.new_cache(len(rows), length + max(self._room(r) for r in rows) + 1 + self.SPARE_COLUMNS)
        mask = np.zeros((len(rows), length), bool)
        for b, row in enumerate(rows):
            self._place(row, cache, b, length)
            mask[b, length - row.n:] = True
        cache.length = length
        self.cache, self.mask = cache, mask

    def _finish(self, row: _Row) -> None:
        job = row.job
        job.results[row.index] = row.stream.result()
        if len(job.results) == len(job.prompt_ids):
            settle(job.future, [job.results[i] for i in range(len(job.prompt_ids))])

    def _fail(self, error: Exception, drain: bool = False) -> None:
        """Fail the requests in the batch (and, on close, those still waiting)."""
        for row in self.rows:
            settle(row.job.future, error=error)
        self.rows, self.slots, self.cache, self.mask = [], [], None, None
        if drain:  # closing: the prompts waiting for their prefill too
            for p in self.prefills:
                settle(p.job.future, error=error)
            self.prefills = []
        while drain:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return
            if job is not None:
                settle(job.future, error=error)


class _Closed(Exception):
    pass
