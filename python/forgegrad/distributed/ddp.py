"""Data parallelism: DistributedDataParallel (torch's shape) and DistributedOptimizer (Horovod's).

Both average gradients with the same bucketed reducer. Parameters are grouped, in reverse
registration order (roughly the order backward produces their gradients), into buckets of about
``bucket_cap_mb``. A post-accumulate-grad hook on every parameter copies its finished gradient into
its bucket's flat buffer; when a bucket is complete, and every earlier bucket has been started, its
non-blocking ``Iallreduce`` starts, so communication overlaps the rest of the backward pass. The
hooks also poke MPI's progress engine (``Testall``), which MPICH needs to move a non-blocking
collective forward without a progress thread. When backward ends, the remaining buckets are
started, all are waited for and scaled by 1/size, and each parameter's ``.grad`` becomes a view of
its slice of the bucket (no copy back).

Ranks whose backward reaches different parameters: every rank must start the same allreduces in the same
order, so the end of every backward pass of its own (``autograd._pass_observers``; which passes are its own:
_passes.py), not only of one that fired a gradient hook, ends a round when one is due: after a
DistributedDataParallel forward (torch's ``prepare_for_backward`` moment), a pass that reached none of the
parameters on this rank reduces zeros for them, and the ranks whose pass did reach them average with those
zeros (torch's ``find_unused_parameters=True``). A rank that runs no backward at all reduces at ``step()``
(a global optimizer step pre-hook; DistributedOptimizer's own step): if no round has ended on this rank
since the optimizer's last step, a round of zeros (or of the locally accumulated ``.grad``) runs there. Each
bucket carries one float32 per parameter after its gradients, 1.0 where this rank has a gradient for it: a
parameter whose sum is 0 (no rank reached it, or no rank ran a backward) keeps ``.grad = None``, which the
optimizers skip (as torch's, AdamW's decay included), instead of a zero gradient. On the common path, where
every rank's backward reaches a parameter, the communication is the same allreduces, a few floats longer.

Reproducibility: buckets are started in the same fixed order on every rank, with fixed sizes, so MPI
picks the same allreduce algorithm, with the same reduction order, in every run: results are
identical bit for bit between runs of the same configuration (the tests check it), and identical on
every rank (MPICH's allreduce algorithms give all ranks the same bits). A different number of ranks
sums in a different order, so its results differ in the last bits.
"""
from __future__ import annotations

import contextlib
import time
import weakref
from typing import Dict, List, Optional

import numpy as np

from .. import autograd
from ..nn.module import Module
from ..optim.optimizer import Optimizer, register_optimizer_step_pre_hook
from ..tensor import Tensor
from . import _passes
from . import comm as _c

__all__ = ["DistributedDataParallel", "DistributedOptimizer", "broadcast_parameters", "broadcast_optimizer_state"]


class _Bucket:
    """A flat float32 buffer: the gradients of ``params`` back to back, then one "reached" flag per
    parameter (1.0 on a rank that has a gradient for it this round, else 0.0), reduced in the same
    allreduce, so that after it a count of 0 tells every rank that no rank had a gradient."""
    __slots__ = ("params", "offsets", "buffer", "reached", "ready", "request")

    def __init__(self, params: List[Tensor]):
        self.params = params
        self.offsets = []
        off = 0
        for p in params:
            self.offsets.append(off)
            off += p._data.size
        self.buffer = np.zeros(off + len(params), np.float32)
        self.reached = self.buffer[off:]  # a view: the flags travel in the gradients' allreduce
        self.ready = 0
        self.request = None


@contextlib.contextmanager
def paused(reducer):
    """A reducer's gradient hooks stand still inside (DDP's and ZeRO-2's ``no_sync``): backward passes
    accumulate locally, and the first one after the context reduces the sum."""
    before = reducer.enabled
    reducer.enabled = False
    try:
        yield
    finally:
        reducer.enabled = before

def _buckets(params: List[Tensor], cap_bytes: int) -> List[List[Tensor]]:
    """``params`` in reverse order (about the order backward finishes them) cut into buckets of at most
    ``cap_bytes`` (a bigger parameter is a bucket of its own)."""
    out, group, nbytes = [], [], 0
    for p in reversed(params):
        if group and nbytes + p._data.nbytes > cap_bytes:
            out.append(group)
            group, nbytes = [], 0
        group.append(p)
        nbytes += p._data.nbytes
    if group:
        out.append(group)
    return out


class _Reducer(_passes.ParameterReducer):
    """Averages the gradients of ``params`` over all ranks in buckets, overlapped with backward.

    ``wait()`` finishes the current round (started by the first gradient of a backward pass and
    finished by the pass's end callback, or by ``wait()`` when called earlier). ``armed``: a round is
    due at the end of the next backward pass even if it reaches none of the parameters on this rank
    (set by DistributedDataParallel's forward and cleared by the round; ``sticky``: set from
    construction and ``arm()`` until ``before_step()``, for DistributedOptimizer, which sees no forward).
    """

    def __init__(self, params: List[Tensor], bucket_cap_mb: float, sticky: bool = False, group=None):
        if not isinstance(bucket_cap_mb, (int, float)) or isinstance(bucket_cap_mb, bool) or bucket_cap_mb <= 0:
            raise ValueError(f"bucket_cap_mb must be a positive number, got {bucket_cap_mb!r}")
        self.process_group = group or _c.GroupMember.WORLD
        self.comm = self.process_group.comm
        self.MPI = _c._mpi()
        self.size = self.comm.Get_size()
        cap = int(bucket_cap_mb * 1024 * 1024)
        self.buckets: List[_Bucket] = []
        self.where: Dict[int, tuple] = {}
        for group in _buckets(params, cap):
            self._add_bucket(group)
        self.enabled = True
        self.active = False  # a round has started (some gradient arrived) and is not finished yet
        self.sticky = sticky
        self.armed = sticky
        self.rounds = 0  # rounds finished on this rank
        self._rounds_at_step: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # optimizer -> rounds
        self.next_launch = 0
        self.wait_seconds = 0.0  # time spent blocked in the final wait (what overlap did not hide)
        self.launched_in_backward = 0  # buckets whose allreduce started from a hook, before backward ended
        self.bytes_reduced = 0  # gradient bytes averaged so far ...
        self.bytes_done_early = 0  # ... and those whose allreduce had completed when backward ended
        self.observe(params)

    def _add_bucket(self, group):
        b = len(self.buckets)
        bucket = _Bucket(group)
        for i, p in enumerate(group):
            self.where[id(p)] = (b, i)
        self.buckets.append(bucket)

    def _on_pass(self, nodes) -> None:
        """One of its backward passes starts (_passes): its end finishes the round its hooks start, or, when
        armed, runs one."""
        if self.enabled:
            autograd.queue_callback(self._end_of_pass)

    def _end_of_pass(self) -> None:
        if self.active:
            self.wait()
        elif self.armed and self.enabled:
            self.zero_round()

    def zero_round(self) -> None:
        """A round in which this rank has no new gradient: every parameter contributes its .grad
        (accumulated under no_sync, or last round's average) or zeros. The other ranks' round pairs with it."""
        self.active = True
        self.wait()

    def before_step(self, optimizer) -> None:
        """Before ``optimizer`` steps: finish a round still open, and run one when none has ended on this
        rank since the optimizer's last step (this rank ran no backward; the others may have)."""
        if self.active:
            self.wait()
        elif self.enabled and self.rounds == self._rounds_at_step.get(optimizer, 0):
            self.zero_round()
        self._rounds_at_step[optimizer] = self.rounds
        if self.sticky:
            self.armed = False

    def _on_grad(self, p: Tensor) -> None:
        if not self.enabled:
            return
        if not self.active:
            self.active = True
            if autograd._pass_state.depth and self._end_of_pass not in autograd._pass_state.callbacks:
                autograd.queue_callback(self._end_of_pass)  # a pass that started paused (no_sync)
            autograd._pass_state.node_callbacks.append(self._progress)
        b, i = self.where[id(p)]
        bucket = self.buckets[b]
        n = p._data.size
        dst = bucket.buffer[bucket.offsets[i]:bucket.offsets[i] + n]
        g = p.grad._data
        if not np.may_share_memory(g, dst):  # a .grad that is still last round's view needs no copy
            dst[...] = g.reshape(-1)
        bucket.reached[i] = 1.0
        bucket.ready += 1
        while self.next_launch < len(self.buckets) and \
                self.buckets[self.next_launch].ready == len(self.buckets[self.next_launch].params):
            self._launch(self.buckets[self.next_launch])
            self.next_launch += 1
            self.launched_in_backward += 1
        self._progress()

    def _launch(self, bucket: _Bucket) -> None:
        bucket.request = self.comm.Iallreduce(self.MPI.IN_PLACE, bucket.buffer, op=self.MPI.SUM)

    def _progress(self) -> None:
        reqs = [b.request for b in self.buckets[:self.next_launch] if b.request is not None]
        if reqs:
            self.MPI.Request.Testall(reqs)

    def wait(self) -> None:
        """Start the buckets not started yet (parameters without a gradient this round count as
        zeros, or as their existing .grad), wait for all, and install the averaged gradients."""
        if not self.active:
            return
        if self._progress in autograd._pass_state.node_callbacks:
            autograd._pass_state.node_callbacks.remove(self._progress)
        for bucket in self.buckets[:self.next_launch]:  # how much overlap achieved, for the benchmark
            if bucket.request.Test():
                self.bytes_done_early += bucket.buffer.nbytes
        for bucket in self.buckets[self.next_launch:]:
            if bucket.ready < len(bucket.params):
                self._fill_missing(bucket)
            self._launch(bucket)
        self.next_launch = len(self.buckets)
        t0 = time.perf_counter()
        self.MPI.Request.Waitall([b.request for b in self.buckets])
        self.wait_seconds += time.perf_counter() - t0
        scale = np.float32(1.0 / self.size)
        for bucket in self.buckets:
            self.bytes_reduced += bucket.buffer.nbytes
            bucket.request = None
            bucket.ready = 0
            if self.size > 1:
                bucket.buffer *= scale
            for p, off, count in zip(bucket.params, bucket.offsets, bucket.reached):
                if count == 0:  # no rank had a gradient: .grad stays None (the optimizer skips it, as torch)
                    continue
                view = bucket.buffer[off:off + p._data.size].reshape(p._data.shape)
                if p.grad is None:
                    p.grad = Tensor._wrap(view)
                else:
                    p.grad._data = view
        self.active = False
        self.next_launch = 0
        self.rounds += 1
        if not self.sticky:
            self.armed = False

    def _fill_missing(self, bucket: _Bucket) -> None:
        # which parameters of the bucket have not reported: recompute from scratch (rare path)
        for i, (p, off) in enumerate(zip(bucket.params, bucket.offsets)):
            dst = bucket.buffer[off:off + p._data.size]
            bucket.reached[i] = p.grad is not None
            if p.grad is None:
                dst[...] = 0.0
            elif not np.may_share_memory(p.grad._data, dst):
                dst[...] = p.grad._data.reshape(-1)
        # parameters that did report copied their gradient already; one that reported and has a
        # view of dst is unchanged. Mark the bucket complete.
        bucket.ready = len(bucket.params)


class DistributedDataParallel(Module):
    """Wraps ``module`` so that backward() averages its gradients over all ranks.

    At wrap time every rank checks that all ranks hold the same parameter names and shapes (a clear
    ValueError on every rank otherwise) and rank 0's parameters and buffers are broadcast to all.
    Use it like the module; give each rank its own shard of the data (DistributedSampler).

    Args:
        module: the model.
        bucket_cap_mb: gradient bytes per allreduce bucket (torch's default 25).
        broadcast_buffers: also broadcast rank 0's buffers (e.g. BatchNorm running stats), at wrap
            and before every training-mode forward (as torch).
        process_group: average over the ranks of this group (from ``new_group``) instead of the whole
            job; "rank 0" above is then the group's first rank. Wrap on the group's ranks only.
        device_mesh: a 1-D :class:`DeviceMesh` instead of ``process_group`` (its group), as torch's.

    ``no_sync()`` skips the averaging for gradient accumulation: backward passes inside it only
    accumulate locally; the first backward after it averages the accumulated gradients.
    """

    def __init__(self, module: Module, bucket_cap_mb: float = 25, broadcast_buffers: bool = True,
                 process_group=None, device_mesh=None):
        super().__init__()
        if not isinstance(module, Module):
            raise TypeError(f"DistributedDataParallel: module must be a forgegrad.nn.Module, got "
                            f"{type(module).__name__}")
        from .device_mesh import groups_for_wrapper
        process_group, _ = groups_for_wrapper("DistributedDataParallel", device_mesh, process_group, hybrid=False)
        group = _c._member_group(process_group, "DistributedDataParallel")
        self.module = module
        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        if not named:
            raise ValueError("DistributedDataParallel: the module has no parameters that require gradients")
        _check_same_everywhere([(n, tuple(p.shape), str(p._data.dtype)) for n, p in named], "DistributedDataParallel",
                               group)
        object.__setattr__(self, "process_group", group)
        broadcast_parameters(module.state_dict() if broadcast_buffers else dict(module.named_parameters()),
                             group.ranks[0], group)
        object.__setattr__(self, "_reducer", _Reducer([p for _, p in named], bucket_cap_mb, group=group))
        _watch_optimizer_steps(self._reducer)
        object.__setattr__(self, "_buffers_to_sync",
                           [b for b in module.buffers() if b is not None and b._data.size] if broadcast_buffers else [])

    def forward(self, *args, **kwargs):
        if self.training and self._buffers_to_sync and autograd.is_grad_enabled():
            # as torch: rank 0's buffers (BatchNorm running statistics) before every training forward,
            # so that every rank normalises and tracks the same statistics
            for b in self._buffers_to_sync:
                _c.broadcast(b, group=self.process_group, group_src=0)
        if autograd.is_grad_enabled() and self._reducer.enabled:
            # the next backward pass reduces even if it reaches no parameter on this rank (see _Reducer)
            self._reducer.armed = True
        return self.module(*args, **kwargs)

    def no_sync(self):
        """Backward passes inside accumulate gradients locally, without communication."""
        return paused(self._reducer)

    @property
    def communication_wait_seconds(self) -> float:
        """Total time backward passes spent blocked waiting for allreduces (not hidden by overlap)."""
        return self._reducer.wait_seconds

    def __repr__(self) -> str:
        return f"DistributedDataParallel(\n  {self.module!r}\n)"


# the reducers of live DistributedDataParallel models; one global optimizer step pre-hook serves them all
_DDP_REDUCERS: "weakref.WeakSet[_Reducer]" = weakref.WeakSet()
_STEP_HOOK: list = []


def _watch_optimizer_steps(reducer: _Reducer) -> None:
    _DDP_REDUCERS.add(reducer)
    if not _STEP_HOOK:
        _STEP_HOOK.append(register_optimizer_step_pre_hook(_before_optimizer_step))


def _before_optimizer_step(optimizer, args, kwargs) -> None:
    """Any optimizer's step(): a DistributedDataParallel whose parameters it updates finishes its round
    first, or runs one if this rank ran no backward since that optimizer's last step."""
    closure = args[0] if args else kwargs.get("closure")
    for reducer in list(_DDP_REDUCERS):
        if any(id(p) in reducer.where for g in optimizer.param_groups for p in g["params"]):
            if closure is None:
                reducer.before_step(optimizer)
            else:  # the closure's backward passes reduce at their ends
                reducer.wait()


def _check_same_everywhere(signature, who: str, group=None) -> None:
    """Raise ValueError on every rank of ``group`` (None: the job) when its ranks disagree on ``signature``
    (names, shapes, dtypes). The message names global ranks."""
    group = group or _c.GroupMember.WORLD
    everyone = _c.allgather_object(signature, group=group)
    ref, first = everyone[0], group.ranks[0]
    for r, sig in zip(group.ranks[1:], everyone[1:]):
        if sig == ref:
            continue
        if len(sig) != len(ref):
            detail = f"rank {first} has {len(ref)} parameters, rank {r} has {len(sig)}"
        else:
            a, b = next((a, b) for a, b in zip(ref, sig) if a != b)
            detail = f"rank {first} has {a[0]} {a[1]} {a[2]}, rank {r} has {b[0]} {b[1]} {b[2]}"
        raise ValueError(f"{who}: the model differs between ranks ({detail}); every rank must build the same model")


class DistributedOptimizer(Optimizer):
    """Horovod's ``hvd.DistributedOptimizer``: wraps an optimizer so that gradients are averaged over all
    ranks (bucketed and overlapped with backward, as DistributedDataParallel) before ``step()``.

    ``param_groups``, ``state``, ``defaults``, ``zero_grad``, ``state_dict`` and ``load_state_dict``
    are the wrapped optimizer's (lr schedulers work on the wrapper). Start from equal weights:
    ``broadcast_parameters(model.state_dict(), 0)``. ``process_group``: average over that group's ranks
    only (Horovod's ``process_set``).
    """

    def __init__(self, optimizer, bucket_cap_mb: float = 25, process_group=None):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"DistributedOptimizer: expected a forgegrad optimizer, got {type(optimizer).__name__}")
        group = _c._member_group(process_group, "DistributedOptimizer")
        self._optimizer = optimizer  # Optimizer.__init__ is not called: everything is the wrapped one's
        params = [p for g in optimizer.param_groups for p in g["params"]]
        _check_same_everywhere([(str(i), tuple(p.shape), str(p._data.dtype)) for i, p in enumerate(params)],
                               "DistributedOptimizer", group)
        self.process_group = group  # what it averages over (torch's name)
        self._reducer = _Reducer(params, bucket_cap_mb, sticky=True, group=group)

    def synchronize(self) -> None:
        """Finish averaging now (backward's end does it already)."""
        self._reducer.wait()

    def step(self, closure=None):
        if closure is None:
            self._reducer.before_step(self)
        else:  # the closure's backward passes reduce at their ends
            self._reducer.wait()
        return self._optimizer.step(closure)

    param_groups = property(lambda self: self._optimizer.param_groups)
    state = property(lambda self: self._optimizer.state)
    defaults = property(lambda self: self._optimizer.defaults)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self._reducer.wait()  # a round still open must not land in the next step's gradients
        self._optimizer.zero_grad(set_to_none)
        self._reducer.armed = True  # from here to step(), a backward pass that reaches no parameter reduces

    def add_param_group(self, param_group) -> None:
        raise NotImplementedError("DistributedOptimizer: add the group to the wrapped optimizer before wrapping it")

    def state_dict(self):
        return self._optimizer.state_dict()

    def load_state_dict(self, state_dict) -> None:
        self._optimizer.load_state_dict(state_dict)

    def __repr__(self) -> str:
        return f"DistributedOptimizer({self._optimizer!r})"


def broadcast_parameters(params, root_rank: int = 0, group=None) -> None:
    """Overwrite, in place, every rank's tensors with root_rank's: ``params`` is a state_dict, a Module,
    or an iterable of Tensors / (name, Tensor) pairs (Horovod's ``broadcast_parameters``). ``group``:
    only among its ranks (``root_rank`` is a global rank)."""
    group = _c._member_group(group, "broadcast_parameters", "group", "call it on the group's ranks only")
    if isinstance(params, Module):
        params = params.state_dict()
    items = list(params.items()) if isinstance(params, dict) else list(params)
    for i, item in enumerate(items):
        t = item[1] if isinstance(item, tuple) else item
        if t is None:
            continue
        if not isinstance(t, (Tensor, np.ndarray)):
            raise TypeError(f"broadcast_parameters: entry {i} is a {type(t).__name__}, expected a Tensor or array")
        _c.broadcast(t, root_rank, group=group)


def broadcast_optimizer_state(optimizer, root_rank: int = 0, group=None) -> None:
    """Give every rank (of ``group``) root_rank's optimizer state (Horovod's ``broadcast_optimizer_state``):
    its state_dict is broadcast (pickled numpy arrays) and loaded on the other ranks."""
    group = _c._member_group(group, "broadcast_optimizer_state", "group", "call it on the group's ranks only")
    sd: Optional[dict] = None
    if _c.rank() == root_rank:
        sd = _numpy_state(optimizer.state_dict())
    sd = _c.broadcast_object(sd, root_rank, group=group)
    if _c.rank() != root_rank:
        optimizer.load_state_dict(sd)


def _numpy_state(obj):
    if isinstance(obj, Tensor):
        return np.array(obj._data)
    if isinstance(obj, dict):
        return {k: _numpy_state(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_numpy_state(v) for v in obj)
    return obj
