"""Dynamic batching: one queue and one worker thread per served model version.

Requests wait in a bounded queue; the batch loop takes the oldest, adds whatever else is queued (same
shapes past the batch axis) until ``max_batch`` rows, or until the oldest has waited ``max_delay``,
and runs the batch as one model call on the version's worker thread, so the event loop keeps
accepting and decoding requests meanwhile (forgegrad's kernels and onnxruntime release the GIL
while they compute). A full queue answers 503 with Retry-After instead of growing without bound.

Batching does not change what a request gets back beyond float rounding: each request's rows are
sliced from the batch's output. (forgegrad's GEMM takes a different kernel path for a batch of 1
than for 16 rows, so the last bit of a float32 can differ from an unbatched call; so does
onnxruntime's.) If a batch fails, its requests are rerun one by one so a request the model rejects
gets its own error and the others their results.
"""
from __future__ import annotations

import asyncio
import collections
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

from ._errors import ServeError
from .models import LoadedModel, batch_rows, same_trailing_shapes, split_outputs


@dataclass
class _Item:
    feeds: Dict[str, np.ndarray]
    future: asyncio.Future
    enqueued: float = field(default_factory=time.monotonic)

    @property
    def rows(self) -> int:
        return batch_rows(self.feeds)


def _model_error(e: Exception) -> ServeError:
    """A model's own refusal of an input is the client's problem (400); anything else is ours (500)."""
    msg = (str(e).splitlines() or [type(e).__name__])[0][:300]
    if isinstance(e, (ValueError, TypeError, IndexError)) or type(e).__name__ in ("InvalidArgument", "InvalidGraph"):
        return ServeError(400, f"the model rejected the input: {msg}")
    return ServeError(500, f"model error ({type(e).__name__}): {msg}")


class Batcher:
    def __init__(self, model: LoadedModel, label: str, max_batch: int, max_delay_s: float, max_queue: int,
                 metrics=None):
        if max_batch < 1 or max_queue < 1 or max_delay_s < 0:
            raise ValueError(f"max_batch ({max_batch}) and max_queue ({max_queue}) must be >= 1 and max_delay "
                             f"({max_delay_s}) >= 0")
        self.model, self.label, self.metrics = model, label, metrics
        # a graph with a fixed batch size runs each request alone (its batch must be exactly that size)
        self.max_batch = 1 if model.fixed_batch is not None else max_batch
        self.max_delay_s, self.max_queue = max_delay_s, max_queue
        self._queue: collections.deque = collections.deque()
        self._ready: Optional[asyncio.Event] = None
        self._task: Optional[asyncio.Task] = None
        self._closing = False
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"forgegrad-serve-{label}")

    def start(self) -> None:
        self._ready = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run_forever(), name=f"batcher-{self.label}")

    @property
    def depth(self) -> int:
        return len(self._queue)

    async def submit(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        if self._closing or self._task is None:
            raise ServeError(503, f"model {self.label} is being unloaded", {"Retry-After": "1"})
        fixed = self.model.fixed_batch
        if fixed is not None and batch_rows(feeds) != fixed:
            raise ServeError(400, f"this model takes batches of exactly {fixed} rows, got {batch_rows(feeds)}")
        if len(self._queue) >= self.max_queue:
            raise ServeError(503, f"model {self.label}: queue full ({self.max_queue} requests waiting); retry later",
                             {"Retry-After": "1"})
        item = _Item(feeds, asyncio.get_running_loop().create_future())
        self._queue.append(item)
        self._gauge()
        self._ready.set()
        return await item.future

    def _gauge(self):
        if self.metrics is not None:
            self.metrics.queue_depth(self.label, len(self._queue))

    async def _next(self, timeout: Optional[float]) -> Optional[_Item]:
        """The oldest queued item, waiting at most ``timeout`` seconds (None: until one comes)."""
        while not self._queue:
            if self._closing:
                return None
            self._ready.clear()
            if timeout is None:
                await self._ready.wait()
            else:
                if timeout <= 0:
                    return None
                try:
                    await asyncio.wait_for(self._ready.wait(), timeout)
                except asyncio.TimeoutError:
                    return None
        return self._queue.popleft()

    async def _run_forever(self):
        held: Optional[_Item] = None  # an item that did not fit the last batch starts the next one
        while True:
            if held is None and self._closing and not self._queue:
                return
            first = held or await self._next(None)
            held = None
            if first is None:  # closing
                continue
            if first.future.done():  # the client went away
                self._gauge()
                continue
            items, rows = [first], first.rows
            deadline = first.enqueued + self.max_delay_s
            while rows < self.max_batch:
                item = await self._next(deadline - time.monotonic())
                if item is None:
                    break
                if item.future.done():
                    continue
                if rows + item.rows > self.max_batch or not same_trailing_shapes(first.feeds, item.feeds):
                    held = item
                    break
                items.append(item)
                rows += item.rows
            self._gauge()
            await self._run_batch(items, rows)

    async def _call(self, feeds):
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        out = await loop.run_in_executor(self._executor, self.model.run, feeds)
        return out, time.perf_counter() - t0

    async def _run_batch(self, items: List[_Item], rows: int):
        if len(items) == 1:
            feeds = items[0].feeds
        else:
            feeds = {k: np.concatenate([it.feeds[k] for it in items]) for k in items[0].feeds}
        try:
            outputs, seconds = await self._call(feeds)
            parts = split_outputs(outputs, [it.rows for it in items])
        except Exception as e:
            if len(items) > 1:  # find which request the model refuses; the others still get answers
                for it in items:
                    await self._run_batch([it], it.rows)
                return
            if not items[0].future.done():
                items[0].future.set_exception(_model_error(e))
            return
        if self.metrics is not None:
            self.metrics.batch(self.label, rows, seconds)
        for it, part in zip(items, parts):
            if not it.future.done():
                it.future.set_result(part)

    async def close(self):
        """Stop taking requests, answer the queued ones, then stop the worker thread."""
        self._closing = True
        if self._ready is not None:
            self._ready.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), 30)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                self._task.cancel()
        for it in self._queue:
            if not it.future.done():
                it.future.set_exception(ServeError(503, f"model {self.label} was unloaded", {"Retry-After": "1"}))
        self._queue.clear()
        self._executor.shutdown(wait=False)
        self.model.close()
