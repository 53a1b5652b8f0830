"""DataLoader worker processes (``num_workers > 0``), with torch.utils.data's semantics.

Batch i goes to worker ``i % num_workers``; at most ``prefetch_factor * num_workers`` batches are in
flight; results come back in any order and are handed out in order. Each worker seeds Python's
``random``, numpy's global generator and forgegrad's global generator with ``base_seed + worker_id``
(``base_seed`` is drawn from the loader's generator once per worker start), runs kernels on one
thread, and calls ``worker_init_fn(worker_id)``. An exception in a worker comes back to the main
process as the same exception type with the worker's traceback text in its message. Workers exit
when told to, when the main process goes away, or when the loader is garbage collected; none is
left behind (each is joined, and terminated if it does not stop in time).
"""
from __future__ import annotations

import itertools
import multiprocessing as mp
import os
import pickle
import queue
import random
import time
import traceback
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

__all__ = ["WorkerInfo", "get_worker_info"]

_POLL_S = 1.0  # how often a waiting worker checks its parent, and the main process its workers
_JOIN_S = 5.0  # how long shutdown waits for an idle worker (end of an epoch) before terminating it
_ABORT_S = 0.5  # the same after an error or an abandoned epoch, when a worker may be mid-batch


@dataclass(frozen=True)
class WorkerInfo:
    """What ``get_worker_info()`` returns inside a worker process (torch's fields)."""
    id: int
    num_workers: int
    seed: int
    dataset: Any


_worker_info: Optional[WorkerInfo] = None


def get_worker_info() -> Optional[WorkerInfo]:
    """In a DataLoader worker process: its WorkerInfo (id, num_workers, seed, dataset); else None."""
    return _worker_info


class _WorkerError:
    """An exception raised in a worker, carried back as its type and traceback text."""

    def __init__(self, worker_id: int, where: str):
        self.worker_id = worker_id
        self.where = where
        self.exc_type = None
        exc = __import__("sys").exc_info()[1]
        try:  # the type itself when it can travel (a class defined at module level)
            pickle.dumps(type(exc))
            self.exc_type = type(exc)
        except Exception:
            pass
        self.type_name = type(exc).__qualname__
        self.text = "".join(traceback.format_exc())

    def reraise(self):
        msg = (f"Caught {self.type_name} in DataLoader worker process {self.worker_id} {self.where}.\n"
               f"Original {self.text}")
        if self.exc_type is KeyError:  # KeyError's str() shows the repr of its argument
            msg = KeyError(msg)
        exc = None
        if self.exc_type is not None:
            try:
                exc = self.exc_type(msg)
            except Exception:  # a constructor with other required arguments
                exc = None
        raise exc if exc is not None else RuntimeError(msg)


def _worker_loop(dataset, collate_fn, transform, use_fetcher, index_q, result_q, worker_id, num_workers, seed,
                 worker_init_fn, parent_pid):
    """Runs in a worker process: tasks (epoch, batch index, sample indices) in, pickled results out."""
    global _worker_info
    from .. import random as fg_random
    from .._runtime import set_num_threads
    from ..tensor import Tensor
    from .dataloader import _apply_transform, default_collate
    from .dataset import _batch_fetcher

    # Results are pickled here, not by the queue's feeder thread: a batch that cannot be pickled is
    # then an error the main process sees, not a message printed by a background thread.
    set_num_threads(1)  # num_workers processes already share the cores
    random.seed(seed)
    np.random.seed(seed % 2**32)
    fg_random.manual_seed(seed)
    _worker_info = WorkerInfo(worker_id, num_workers, seed, dataset)
    init_failed = False
    if worker_init_fn is not None:
        try:
            worker_init_fn(worker_id)
        except Exception:
            # Reported once; the worker then waits to be stopped (exiting now could race the main
            # process's liveness check and hide the error behind "exited unexpectedly").
            result_q.put(pickle.dumps(("err", None, None, _WorkerError(worker_id, "in worker_init_fn"))))
            init_failed = True
    fetch = _batch_fetcher(dataset) if use_fetcher else None
    collate = collate_fn or default_collate
    while True:
        try:
            task = index_q.get(timeout=_POLL_S)
        except queue.Empty:
            if os.getppid() != parent_pid:  # the main process is gone: exit without flushing results
                result_q.cancel_join_thread()
                return
            continue
        if task is None:
            return
        if init_failed:
            continue
        epoch, i, idx = task
        try:
            if fetch is not None:
                batch = tuple(Tensor._wrap_exact(a) for a in fetch(idx))  # the dataset's dtypes
            else:
                batch = collate([dataset[int(j)] for j in idx])
            payload = pickle.dumps(("ok", epoch, i, _apply_transform(transform, batch)))
        except Exception:
            payload = pickle.dumps(("err", epoch, i, _WorkerError(worker_id, f"while loading batch {i}")))
        result_q.put(payload)


class _WorkerPool:
    """The worker processes of one DataLoader: started per iterator, or once (persistent_workers)."""

    def __init__(self, loader, ctx, base_seed: int):
        self.num_workers = loader.num_workers
        self.result_q = ctx.Queue()
        self.index_qs = []
        self.procs = []
        self.epochs = itertools.count()
        use_fetcher = loader.collate_fn is None
        try:
            for w in range(self.num_workers):
                iq = ctx.Queue()
                iq.cancel_join_thread()
                p = ctx.Process(target=_worker_loop, daemon=True,
                                args=(loader.dataset, loader.collate_fn, loader.transform, use_fetcher, iq,
                                      self.result_q, w, self.num_workers, base_seed + w, loader.worker_init_fn,
                                      os.getpid()))
                p.start()
                self.index_qs.append(iq)
                self.procs.append(p)
        except BaseException:
            self.shutdown()
            raise

    def check_alive(self):
        for w, p in enumerate(self.procs):
            if p.exitcode is not None:
                self.shutdown(_ABORT_S)
                raise RuntimeError(f"DataLoader worker {w} (pid {p.pid}) exited unexpectedly with exit code "
                                   f"{p.exitcode}")

    def shutdown(self, wait: float = _JOIN_S):
        for iq in self.index_qs:
            try:
                iq.put(None)
            except Exception:  # a closed or broken queue: the worker is gone anyway
                pass
        deadline = time.monotonic() + wait
        for p in self.procs:
            p.join(max(0.0, deadline - time.monotonic()))
            if p.exitcode is None:
                p.terminate()
                p.join(_JOIN_S)
            if p.exitcode is None:
                p.kill()
                p.join()
        for q in self.index_qs + [self.result_q]:
            q.cancel_join_thread()
            q.close()
        self.procs = []
        self.index_qs = []


class _MultiWorkerIterator:
    """Iterator over one epoch's batches produced by a _WorkerPool, in order."""

    def __init__(self, loader, batches):
        self.loader = loader
        self.batches = batches
        if loader.persistent_workers and loader._pool is not None:
            self.pool, self.owns_pool = loader._pool, False
        else:
            ctx = loader.multiprocessing_context
            if ctx is None:
                ctx = mp.get_context()
            elif isinstance(ctx, str):
                ctx = mp.get_context(ctx)
            base_seed = int(loader._seed_generator().integers(0, 2**62))
            self.pool = _WorkerPool(loader, ctx, base_seed)
            self.owns_pool = not loader.persistent_workers
            if loader.persistent_workers:
                loader._pool = self.pool
        self.epoch = next(self.pool.epochs)
        self.sent = 0
        self.received = 0
        self.buffer = {}
        self.done = False
        for _ in range(loader.prefetch_factor * self.pool.num_workers):
            self._send()

    def _send(self):
        if self.sent < len(self.batches):
            w = self.sent % self.pool.num_workers
            self.pool.index_qs[w].put((self.epoch, self.sent, self.batches[self.sent]))
            self.sent += 1

    def __iter__(self):
        return self

    def __next__(self):
        if self.done or self.received >= len(self.batches):
            self.close(aborted=False)
            raise StopIteration
        try:
            result = self._wait(self.received)
        except BaseException:
            self.close(aborted=True, discard_pool=True)
            raise
        self.received += 1
        self._send()
        return result

    def _wait(self, i):
        timeout = self.loader.timeout
        start = time.monotonic()
        while i not in self.buffer:
            wait = _POLL_S if timeout <= 0 else min(_POLL_S, max(0.0, start + timeout - time.monotonic()))
            try:
                kind, epoch, j, value = pickle.loads(self.pool.result_q.get(timeout=wait))
            except queue.Empty:
                self.pool.check_alive()
                if timeout > 0 and time.monotonic() - start >= timeout:
                    raise RuntimeError(f"DataLoader timed out after {timeout} seconds") from None
                continue
            if kind == "err" and epoch is None:  # worker_init_fn failed
                value.reraise()
            if epoch != self.epoch:  # left over from an abandoned epoch of persistent workers
                continue
            self.buffer[j] = (kind, value)
        kind, value = self.buffer.pop(i)
        if kind == "err":
            value.reraise()
        return value

    def close(self, aborted: bool = True, discard_pool: bool = False):
        """Stops the workers this iterator started (persistent ones stay, unless discard_pool).
        aborted: the epoch did not run to its end, so workers may be busy: stop them quickly."""
        if self.done:
            return
        self.done = True
        wait = _ABORT_S if aborted else _JOIN_S
        if self.owns_pool:
            self.pool.shutdown(wait)
        elif discard_pool:
            self.pool.shutdown(wait)
            if self.loader._pool is self.pool:
                self.loader._pool = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
