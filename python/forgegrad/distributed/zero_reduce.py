"""ZeRO stage 2's gradient reduction: buckets reduce-scattered into each rank's shard during backward.

Every unit (bucket) of every group is reduced in one fixed order, the same on every rank: the last
group's units first, each group's in the order of its buckets (reverse registration order, about the
order backward finishes the gradients). A post-accumulate-grad hook copies a finished gradient into
its bucket's staging vector (allocated at the bucket's first gradient) and sets ``.grad`` to None, so
the full gradient is freed as soon as it is copied. When a bucket is complete, and every earlier one
has started, its ``Ireduce_scatter_block`` starts; the hooks and every backward node poke MPI's
progress engine (as DDP's reducer does), and a completed reduction is added into the rank's gradient
shard (x 1/size) and its staging freed at once. At most ``MAX_IN_FLIGHT`` buckets are in flight: one
more waits for the oldest, which bounds the full-size gradient memory during backward to a few buckets
(2, as DeepSpeed's double-buffered reduce bucket; 3 had cost 8-10 MB more peak memory on a 4-bucket model).
At the end of backward the buckets not started yet (parameters without a gradient count as zeros, or
as the ``.grad`` no_sync accumulated) are started and all are waited for.

Ranks whose backward reaches different parameters start the same reductions in the same order all the same:
the end of every backward pass of its own (``autograd._pass_observers``; see _passes.py) between
``zero_grad()`` and ``step()`` ends a round, one of zeros when the pass reached no parameter on this rank;
``step()`` runs one when no round ended on this rank since the last step (it ran no backward); stage 3's
FullyShardedDataParallel marks the units a pass does not reach (``mark_missing``) in the order the other
ranks gather them.
"""
from __future__ import annotations

import weakref
from typing import List

import numpy as np

from .. import autograd
from . import _passes

MAX_IN_FLIGHT = 2
# id(parameter) -> the reducer whose hook takes its gradients; a newer ZeroRedundancyOptimizer over the
# same parameter (one rebuilt on resume) takes them over, so that no two reducers race for one .grad
_OWNER: "weakref.WeakValueDictionary[int, _ShardReducer]" = weakref.WeakValueDictionary()


class _ShardReducer(_passes.ParameterReducer):
    def __init__(self, groups, comm, MPI, process_group=None):
        self.comm, self.MPI = comm, MPI
        self.process_group = process_group
        self.size = comm.Get_size()
        self.scale = np.float32(1.0 / self.size)
        # (group, unit) in launch order
        self.order = [(g, u) for g in reversed(groups) for u in g.units]
        self.where = {}
        for k, (g, u) in enumerate(self.order):
            for i, p in enumerate(u.params):
                self.where[id(p)] = (k, int(u.offsets[i]))
        self.enabled = True
        self.active = False
        self.armed = True  # from construction / zero_grad() to step(): every backward pass ends a round
        self.rounds_since_step = 0
        self.next_launch = 0
        self.in_flight: List[int] = []
        self.launched_in_backward = 0  # buckets whose reduce-scatter started from a hook
        self.peak_staging_bytes = 0  # the most full-size gradient bytes held at once during a round
        self._staging_bytes = 0
        params = [p for g in groups for p in g.params]
        for p in params:
            old = _OWNER.get(id(p))
            if old is not None and old is not self:
                old.detach()
            _OWNER[id(p)] = self
        self.observe(params)

    def detach(self) -> None:
        """Stop taking gradients (a newer optimizer over these parameters has taken them over)."""
        for h in self.handles:
            h.remove()
        del self.handles[:]
        self.enabled = False

    def _on_pass(self, nodes) -> None:
        """One of its backward passes starts (_passes): its end ends a round."""
        if self.enabled:
            autograd.queue_callback(self._end_of_pass)

    def _end_of_pass(self) -> None:
        if self.active:
            self.finish()
        elif self.armed and self.enabled:
            self.zero_round()

    def zero_round(self) -> None:
        """A round in which this rank has no new gradient (zeros, or what no_sync accumulated)."""
        self._begin()
        self.finish()

    def before_step(self) -> None:
        """Finish the open round; run one if none ended on this rank since the last step."""
        if self.active:
            self.finish()
        elif self.rounds_since_step == 0:
            self.zero_round()

    def after_step(self) -> None:
        self.rounds_since_step = 0
        self.armed = False

    def _begin(self) -> None:
        self.active = True
        if autograd._pass_state.depth and self._end_of_pass not in autograd._pass_state.callbacks:
            autograd.queue_callback(self._end_of_pass)  # a pass that started paused (no_sync)
        autograd._pass_state.node_callbacks.append(self._progress)

    def mark_missing(self, unit) -> None:
        """Stage 3: this pass does not reach ``unit`` on this rank; its gradients count as zeros (or as what
        no_sync accumulated) and its reduction starts as soon as every earlier one has."""
        if not self.enabled:
            return
        if not self.active:
            self._begin()
        k = self.where[id(unit.params[0])][0]
        if k < self.next_launch or unit.ready == len(unit.params):
            return
        self._fill_missing(unit)
        self._launch_ready()

    def _launch_ready(self) -> None:
        while self.next_launch < len(self.order) and \
                self.order[self.next_launch][1].ready == len(self.order[self.next_launch][1].params):
            self._launch(self.next_launch)
            self.launched_in_backward += 1

    def _on_grad(self, p) -> None:
        if not self.enabled:
            return
        if not self.active:
            self._begin()
        k, off = self.where[id(p)]
        _, unit = self.order[k]
        if unit.staging is None:
            self._stage(unit)
        g = p.grad._data
        unit.staging[off:off + g.size] = g.reshape(-1)
        p.grad = None  # the full gradient is in the staging vector: free it now
        unit.ready += 1
        self._launch_ready()
        self._progress()

    def _stage(self, unit) -> None:
        unit.staging = np.zeros(unit.padded, np.float32)
        self._staging_bytes += unit.staging.nbytes
        self.peak_staging_bytes = max(self.peak_staging_bytes, self._staging_bytes)

    def _launch(self, k: int) -> None:
        while len(self.in_flight) >= MAX_IN_FLIGHT:
            oldest = self.in_flight[0]
            self.order[oldest][1].request.Wait()
            self._fold(oldest)
        _, unit = self.order[k]
        unit.received = np.empty(unit.per_rank, np.float32)
        unit.request = self.comm.Ireduce_scatter_block(unit.staging, unit.received, op=self.MPI.SUM)
        self.in_flight.append(k)
        self.next_launch = k + 1

    def _fold(self, k: int) -> None:
        """Bucket k's reduction has completed: add it into the shard, free its staging."""
        g, unit = self.order[k]
        received = unit.received
        if self.size > 1:
            received *= self.scale
        g.local_slice(unit, g.grad)[...] += received
        self._staging_bytes -= unit.staging.nbytes
        unit.staging = unit.received = unit.request = None
        unit.ready = 0
        self.in_flight.remove(k)

    def _progress(self) -> None:
        if not self.in_flight:
            return
        for k in list(self.in_flight):
            if self.order[k][1].request.Test():
                self._fold(k)

    def finish(self) -> None:
        """End the round: start what is left, wait for everything, fold it into the shards."""
        if not self.active:
            return
        if self._progress in autograd._pass_state.node_callbacks:
            autograd._pass_state.node_callbacks.remove(self._progress)
        for k in range(self.next_launch, len(self.order)):
            _, unit = self.order[k]
            if unit.ready < len(unit.params):
                self._fill_missing(unit)
            self._launch(k)
        for k in list(self.in_flight):
            self.order[k][1].request.Wait()
            self._fold(k)
        self.active = False
        self.next_launch = 0
        self.rounds_since_step += 1

    def _fill_missing(self, unit) -> None:
        # parameters that did not report this round: their no_sync-accumulated .grad, else zeros
        if unit.staging is None:
            self._stage(unit)
        for p, lo, hi in zip(unit.params, unit.offsets[:-1], unit.offsets[1:]):
            if p.grad is not None:
                unit.staging[lo:hi] = p.grad._data.reshape(-1)
                p.grad = None
        unit.ready = len(unit.params)
