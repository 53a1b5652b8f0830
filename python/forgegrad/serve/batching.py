"""Dynamic batching: one queue and one worker thread per served model version.

The event loop only enqueues: a request is checked, appended to the version's bounded queue, and its
handler awaits a future. The worker thread forms the batches itself: it takes the oldest request,
adds the queued ones behind it (same shapes past the batch axis) until ``max_batch`` rows, or until
the oldest has waited ``max_delay``, runs the batch as one model call, and hands each request its
rows back on the event loop (one callback per batch). Forming batches on the worker rather than on
the event loop matters under load: a busy loop (parsing dozens of JSON bodies) would otherwise delay
the start of every next batch by however long it takes to get back to the batcher. forgegrad's
kernels and onnxruntime release the GIL while they compute, so the loop keeps accepting and decoding
requests meanwhile. A full queue answers 503 with Retry-After instead of growing without bound.

Batching does not change what a request gets back beyond float rounding: each request's rows are
sliced from the batch's output. (forgegrad's GEMM takes a different kernel path for a batch of 1
than for 16 rows, so the last bit of a float32 can differ from an unbatched call; so does
onnxruntime's.) If a batch fails, its requests are rerun one by one so a request the model rejects
gets its own error and the others their results.
"""
from __future__ import annotations

import asyncio
import collections
import threading
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

from ._errors import ServeError
from .models import LoadedModel, batch_rows, same_trailing_shapes, split_outputs


@dataclass
class _Item:
    feeds: Dict[str, np.ndarray]
    future: asyncio.Future
    rows: int
    enqueued: float = field(default_factory=time.monotonic)


def _model_error(e: Exception) -> ServeError:
    """A model's own refusal of an input is the client's problem (400); anything else is ours (500)."""
    msg = (str(e).splitlines() or [type(e).__name__])[0][:300]
    if isinstance(e, (ValueError, TypeError, IndexError)) or type(e).__name__ in ("InvalidArgument", "InvalidGraph"):
        return ServeError(400, f"the model rejected the input: {msg}")
    return ServeError(500, f"model error ({type(e).__name__}): {msg}")


def _deliver(items: List[_Item], results: List[object]) -> None:
    """On the event loop: each request's rows, or its error (clients that went away are skipped)."""
    for it, res in zip(items, results):
        if it.future.done():
            continue
        if isinstance(res, BaseException):
            it.future.set_exception(res)
        else:
            it.future.set_result(res)


POLICIES = ("auto", "full", "eager")
# auto: after full-policy waits kept running out (FILL_STRIKES in a row: (under half full, any), see
# _after_wait), eager for this long (doubling while each retry of full batches runs out again, reset
# when one fills)
FILL_BACKOFF_S = (0.05, 1.0)
FILL_STRIKES = (3, 8)


class _CostFit:
    """A batch's compute time as fixed + per-row cost, fitted by least squares over exponentially
    weighted sums of the recent batches, to predict a full batch from smaller ones. Scaling the mean
    per-row cost up to max_batch instead counts the fixed part (a worker waking on a cold core: ~0.3 ms
    of CPU on a 2-vCPU VM, more than the MLP's rows cost) max_batch / rows times, which let eager
    batches of half the clients keep auto eager for the MLP. Where the batches have had about one size
    (a lone client), the fit falls back to that proportional estimate."""

    __slots__ = ("w", "r", "c", "rr", "rc")
    DECAY = 0.8  # weight of a batch one batch later (about the last 5 batches count)

    def __init__(self):
        self.w = self.r = self.c = self.rr = self.rc = 0.0

    def add(self, rows: int, seconds: float) -> None:
        d = self.DECAY
        self.w = d * self.w + 1.0
        self.r = d * self.r + rows
        self.c = d * self.c + seconds
        self.rr = d * self.rr + rows * rows
        self.rc = d * self.rc + rows * seconds

    def predict(self, rows: int) -> float:
        spread = self.w * self.rr - self.r * self.r  # w^2 x the weighted variance of the batch sizes
        if spread < self.w * self.w:  # sizes within about one row of each other: no slope to fit
            return self.c / max(self.r, 1e-30) * rows
        slope = (self.w * self.rc - self.r * self.c) / spread
        if slope < 0:  # noise: cost does not grow with rows
            return self.c / self.w
        fixed = max((self.c - slope * self.r) / self.w, 0.0)
        return fixed + slope * rows


class _Arrival:
    """Batcher.arriving's context manager (a class: contextlib's generator costs a few us a request)."""

    __slots__ = ("batcher", "ticket")

    def __init__(self, batcher: "Batcher"):
        self.batcher = batcher

    def __enter__(self) -> list:
        b = self.batcher
        self.ticket = [True]
        with b._cond:
            b._arriving += 1
        return self.ticket

    def __exit__(self, *exc) -> None:
        if self.ticket[0]:
            b = self.batcher
            with b._cond:
                self.ticket[0] = False
                b._arriving -= 1
                if b.eager and b._arriving == 0:  # the batch need not wait for it any more
                    b._cond.notify()


class Batcher:
    """Batches of one model version. ``policy``: "full" waits for max_batch rows or max_delay; "eager"
    also stops waiting once no other request for this model is being received (its body read or
    decoded: waiting longer could only catch requests not yet sent); "auto" is eager while a full
    batch of this model computes for at least ``auto_eager_s`` (measured, see _measure), and while
    full batches do not fill (see _after_wait), else full."""

    def __init__(self, model: LoadedModel, label: str, max_batch: int, max_delay_s: float, max_queue: int,
                 metrics=None, policy: str = "auto", auto_eager_s: float = 1e-3):
        if max_batch < 1 or max_queue < 1 or max_delay_s < 0:
            raise ValueError(f"max_batch ({max_batch}) and max_queue ({max_queue}) must be >= 1 and max_delay "
                             f"({max_delay_s}) >= 0")
        if policy not in POLICIES:
            raise ValueError(f"batching policy must be one of {', '.join(POLICIES)}, got {policy!r}")
        self.model, self.label, self.metrics = model, label, metrics
        # a graph with a fixed batch size runs each request alone (its batch must be exactly that size)
        self.max_batch = 1 if model.fixed_batch is not None else max_batch
        self.max_delay_s, self.max_queue = max_delay_s, max_queue
        self.policy, self.auto_eager_s = policy, auto_eager_s
        # auto starts eager (nothing measured yet: a first lone request need not wait)
        self.eager = policy != "full"
        self._cost = _CostFit()  # auto: batch compute time against rows
        self._compute_eager = self.eager  # auto: what the batch compute time alone says (see _measure)
        self._fill_eager_until = 0.0  # auto: eager until this time (monotonic), see _after_wait
        self._fill_backoff_s = FILL_BACKOFF_S[0]
        self._short_waits = 0  # auto: full-policy waits in a row that ran out
        self._arriving = 0  # requests between arriving() and their enqueueing (guarded by _cond)
        self._queue: collections.deque = collections.deque()
        # The worker is woken only when it can act: waking it for every arrival while it waits out
        # max_delay would make it take the GIL from the event loop once per request, for nothing.
        # _idle: it waits for a first request; _need_rows: it waits for that many more rows (or the
        # deadline); _queued_rows: rows in the queue (all guarded by _cond).
        self._idle = False
        self._need_rows = 0
        self._queued_rows = 0
        self._cond = threading.Condition()
        self._closing = False
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._work, name=f"forgegrad-serve-{self.label}", daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        return len(self._queue)

    def arriving(self) -> "_Arrival":
        """Mark a request as on its way in (reading and decoding its body) until it is submitted
        with the yielded ticket or the block ends (a bad request that is never submitted)."""
        return _Arrival(self)

    async def submit(self, feeds: Dict[str, np.ndarray], ticket: Optional[list] = None) -> Dict[str, np.ndarray]:
        if self._closing or self._thread is None:
            raise ServeError(503, f"model {self.label} is being unloaded", {"Retry-After": "1"})
        rows = batch_rows(feeds)
        fixed = self.model.fixed_batch
        if fixed is not None and rows != fixed:
            raise ServeError(400, f"this model takes batches of exactly {fixed} rows, got {rows}")
        item = _Item(feeds, self._loop.create_future(), rows)
        with self._cond:
            if len(self._queue) >= self.max_queue:
                raise ServeError(503, f"model {self.label}: queue full ({self.max_queue} requests waiting); "
                                      "retry later", {"Retry-After": "1"})
            self._queue.append(item)
            self._queued_rows += rows
            if ticket is not None and ticket[0]:
                ticket[0] = False
                self._arriving -= 1
            depth = len(self._queue)
            if self._idle or 0 < self._need_rows <= self._queued_rows or (self.eager and self._arriving == 0):
                self._cond.notify()
        self._gauge(depth)
        return await item.future

    def _gauge(self, depth: int) -> None:
        if self.metrics is not None:
            self.metrics.queue_depth(self.label, depth)

    # ---- the worker thread -----------------------------------------------------------------------
    def _next_batch(self) -> Optional[List[_Item]]:
        """The next batch (None: closing and nothing left). Waits for the first request, then until
        the batch is full or the oldest request has waited max_delay."""
        with self._cond:
            while not self._queue:
                if self._closing:
                    return None
                self._idle = True
                self._cond.wait()
                self._idle = False
            first = self._queue.popleft()
            self._queued_rows -= first.rows
            items, rows = [first], first.rows
            if self.policy == "auto":
                self._refresh_eager()
            deadline = first.enqueued + self.max_delay_s
            ran_out = False
            while rows < self.max_batch:
                if not self._queue:
                    remaining = deadline - time.monotonic()
                    ran_out = remaining <= 0
                    if ran_out or self._closing or (self.eager and self._arriving == 0):
                        break
                    self._need_rows = self.max_batch - rows
                    self._cond.wait(remaining)
                    self._need_rows = 0
                    continue
                nxt = self._queue[0]
                if rows + nxt.rows > self.max_batch or not same_trailing_shapes(first.feeds, nxt.feeds):
                    break  # it heads the next batch
                items.append(self._queue.popleft())
                self._queued_rows -= nxt.rows
                rows += nxt.rows
            if self.policy == "auto" and not self.eager:
                self._after_wait(rows, ran_out)
            depth = len(self._queue)
        self._gauge(depth)
        return items

    def _after_wait(self, rows: int, ran_out: bool) -> None:
        """auto, after a full-policy batch was formed: waiting for a full batch pays only when one
        comes. When waits keep running out (fewer clients than max_batch, or a lull), waiting longer
        would only have delayed these requests: be eager for a while, then try full batches again,
        backing off while they keep running out (a closed loop of 8 clients with max-batch 32 otherwise
        waited out max-delay on every batch, 16 clients too). It takes FILL_STRIKES waits in a row that
        ran out (later retries: one more): 3 under half full, 8 otherwise. On a busy 2-vCPU machine a
        single short wait is mostly a hiccup of the clients or the machine (backing off on each kept 32
        clients eager, in half-size batches, 80 % of the time), and with as many clients as max_batch a
        full batch fills only once every client is back, so a wait that falls a few rows short on the
        way there is no sign that full batches will not come."""
        if not ran_out or rows >= self.max_batch:
            self._short_waits = 0
            if rows >= self.max_batch:
                self._fill_backoff_s = FILL_BACKOFF_S[0]
            return
        self._short_waits += 1
        if self._short_waits >= FILL_STRIKES[0 if 2 * rows < self.max_batch else 1]:
            self._fill_eager_until = time.monotonic() + self._fill_backoff_s
            self._fill_backoff_s = min(2 * self._fill_backoff_s, FILL_BACKOFF_S[1])
            self.eager = True

    def _run(self, items: List[_Item]) -> List[object]:
        """Per-request results (output dicts, or ServeErrors) of one batch."""
        if len(items) == 1:
            feeds = items[0].feeds
        else:
            feeds = {k: np.concatenate([it.feeds[k] for it in items]) for k in items[0].feeds}
        t0, cpu0 = time.perf_counter(), time.thread_time()
        try:
            parts = split_outputs(self.model.run(feeds), [it.rows for it in items])
        except Exception as e:
            if len(items) > 1:  # find which request the model refuses; the others still get answers
                return [self._run([it])[0] for it in items]
            return [_model_error(e)]
        seconds, rows = time.perf_counter() - t0, sum(it.rows for it in items)
        if self.policy == "auto":
            self._measure(time.thread_time() - cpu0, rows)
        if self.metrics is not None:
            self.metrics.batch(self.label, rows, seconds)
        return parts

    def _measure(self, seconds: float, rows: int) -> None:
        """auto: eager while a full batch (predicted by _CostFit) computes for auto_eager_s or more.
        ``seconds`` is the worker thread's CPU time for the batch: under load its wall time also counts
        waits for the GIL (held by the event loop while it parses requests) and for a core, which are
        not compute the loop could overlap; counted, they made the MLP's ~0.1 ms batches look like
        1-1.6 ms and turned auto eager.
        In a closed loop, clients wait while their batch computes; eager batches (about half of them
        at a time under load) let the event loop read the next requests meanwhile, which pays when
        that compute time is well above what each extra batch costs the event loop (delivering its
        results, ~0.1 ms): it does for LeNet (~4 ms a batch of 32 on one core), not for the MLP
        (~0.2 ms). A lightly loaded server (batches of one size) predicts a full batch as that size's
        cost scaled up, which overstates it: it is eager, and a lone request is answered at once."""
        self._cost.add(rows, seconds)
        self._compute_eager = self._cost.predict(self.max_batch) >= self.auto_eager_s
        self._refresh_eager()

    def _refresh_eager(self) -> None:
        """auto: eager while the compute measure says so or a back-off from unfilled waits lasts."""
        self.eager = self._compute_eager or time.monotonic() < self._fill_eager_until

    def _work(self) -> None:
        while True:
            items = self._next_batch()
            if items is None:
                return
            try:
                results = self._run(items)
            except BaseException as e:  # never leave a request waiting forever
                results = [ServeError(500, f"model error ({type(e).__name__})")] * len(items)
            try:
                self._loop.call_soon_threadsafe(_deliver, items, results)
            except RuntimeError:  # the event loop is closed: nobody is waiting any more
                return

    async def close(self):
        """Stop taking requests, answer the queued ones, then stop the worker thread."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 60)
        with self._cond:
            left, self._queue, self._queued_rows = list(self._queue), collections.deque(), 0
        _deliver(left, [ServeError(503, f"model {self.label} was unloaded", {"Retry-After": "1"})] * len(left))
        self.model.close()
