"""ZeRO stage 3: the parameters sharded too (torch's FullyShardedDataParallel and its sharding strategies).

    model = dist.FullyShardedDataParallel(net)                     # shards the parameters
    opt = dist.ZeroRedundancyOptimizer(model.parameters(), optim.Adam, stage=3, lr=1e-3)

``sharding_strategy`` (torch's ShardingStrategy; the groups each one uses: _strategy.py): FULL_SHARD, the
default, is what follows; SHARD_GRAD_OP keeps a unit gathered from its forward to the end of its backward
(no gather in backward); NO_SHARD shards over a group of one rank (every rank holds everything) and
allreduces the gradients across the ranks; HYBRID_SHARD is FULL_SHARD within a shard group (a node) with
the gradient shards allreduced across the ranks that hold the same shard (_HYBRID_SHARD_ZERO2: without
resharding after forward). Below, "the ranks" are the shard group's.

The model's parameters are cut into *units* (fsdp_wrap.py): by default one per block the model declares
(``_no_split_modules``, as forgegrad's Hugging Face models do), else one per module that owns parameters
directly; ``units=`` names them, ``auto_wrap_policy=`` takes torch's policies. Parameters no unit claims, and a
parameter shared by two units that do not nest (tied weights), belong to the root module's unit. A unit is one
flat float32 vector, zero-padded to a multiple of size(); a rank keeps only its slice (the *shard*,
which the ZeRO optimizer updates in place). Its full vector lives in an anonymous memory mapping whose
pages exist only while the unit is *gathered*:

* a forward pre-hook on the unit's module allgathers the shards into it (the parameters are views of
  it, so the module computes as usual); after the module's forward it is freed again: its pages leave
  the mapping, as torch frees the storage with ``resize_(0)``. The arrays the autograd graph saved are
  views of the same addresses (they read zeros while the unit is freed); an op reading a parameter itself
  until the next gather (a module reading it without calling the unit's) is a RuntimeError naming it (numpy
  reads NaN: ``_pages.FreedArray``), not zeros that look like values.
* an identity Function on the module's outputs runs first among the unit's backward nodes: it gathers
  the unit again, so those saved views hold the parameters when the unit's backward reads them.
* once every parameter of the unit has its final gradient (post-accumulate-grad hooks), the unit is
  freed; the ZeRO optimizer's hooks have already reduce-scattered the gradients into the shards.

A freed unit's pages go to a small pool (``_pages.py``: moved with ``mremap``, not copied) that the next
gather of a unit of the same size takes them from, so gathers do not fault and zero fresh pages. The
pool and the gathered units together hold at most one largest unit more than the units in flight
(with units of one size, just those: the peak stays shards + the units in flight); the rest goes back
to the OS (``madvise(MADV_DONTNEED)``, also where ``mremap`` is missing). ``empty_cache()`` empties it.
Prefetch (torch's ``forward_prefetch`` / ``backward_prefetch``) starts the next unit's allgather
(``Iallgather``) before the current unit computes: in forward the next unit of the previous forward's
order, in backward the next unit of the plan below; it only moves data, so the results are the same
bits with it or without it.

So a rank holds its shards, plus the gathered units of the module being computed (and the prefetched
one), plus what autograd keeps (activations). ``state_dict()`` gathers one unit at a time and returns
the plain model's names and full arrays (collective; rank 0 writes); ``load_state_dict`` takes one and
keeps each rank's slices. Collectives are started in the order the modules run, which must therefore
be the same on every rank (no data-dependent choice of modules).

The ranks' losses may reach different units (or none): the gathers of a backward pass follow a plan made
when it starts (``autograd._pass_observers``), the units that forwards since the optimizer's last step
armed, in the reverse of the order their forwards last ended, the same on every rank; every pass until
step() plans them all, so ``l1 = m(x1); l2 = m(x2); l1.backward(); l2.backward()`` pairs the second
pass's gathers too (it reaches units of the second forward's graph that a plan of "the forwards since
the last pass" would have left out). A unit kept with no output Tensor to re-gather on (a dict subclass,
transformers' ModelOutput) is held gathered until step(), for every pass through its forward's graph.
A forward run again inside a backward pass (utils.checkpoint's recomputation) is that pass's: its unit
stays gathered for it and is planned for no later pass; a pass through a graph older than step() (its
_PreBackward nodes carry the step count) is a RuntimeError.
Reaching a unit gathers the planned units before it first; a planned unit this rank's pass does not reach
is gathered (the others may need it) and freed at once, and its gradients count as zeros
(``_ShardReducer.mark_missing``). The gathers use their own communicator, so they pair up across ranks
independently of when each rank's reduce-scatters start (with prefetch all of them are nonblocking: MPI
does not pair a blocking collective with a nonblocking one, and which gathers a rank prefetches depends
on what its pass reaches).
"""
from __future__ import annotations

import mmap
import threading
import weakref
from typing import Optional

import numpy as np

from .. import autograd
from ..autograd import Function
from ..nn.module import Module
from ..tensor import Tensor
from . import _pages, _passes, fsdp_wrap
from .device_mesh import groups_for_wrapper
from .fsdp_state import ShardedStateDict
from ._strategy import _HYBRID, WHO, BackwardPrefetch, ShardingStrategy, backward_prefetch_of, groups_for, strategy_of
from . import comm as _c

__all__ = ["FullyShardedDataParallel", "BackwardPrefetch", "ShardingStrategy"]


# id(parameter) -> the FullyShardedDataParallel that shards it (ZeroRedundancyOptimizer(stage=3) looks here)
_OWNERS: "weakref.WeakValueDictionary[int, FullyShardedDataParallel]" = weakref.WeakValueDictionary()


def owner_of(p: Tensor) -> Optional["FullyShardedDataParallel"]:
    fsdp = _OWNERS.get(id(p))
    return fsdp if fsdp is not None and id(p) in fsdp._unit_of else None


class _PreBackward(Function):
    """Identity on a unit's output; its backward (run before the unit's own backward nodes) gathers the unit."""

    @staticmethod
    def forward(ctx, x, owner, unit):
        ctx.owner, ctx.unit, ctx.steps = owner, unit, owner._steps  # the parameters' version (see _on_pass)
        return x.view()

    @staticmethod
    def backward(ctx, grad):
        ctx.owner._pre_backward(ctx.unit)
        return grad, None, None


class FullyShardedDataParallel(ShardedStateDict, Module):
    """Wraps ``module`` so that each rank stores only its shard of the parameters (ZeRO stage 3).

    Args:
        module: the model, the same on every rank (checked; rank 0's values are broadcast first).
        units: modules of ``module`` whose parameters (less those of units inside them) are gathered
            and freed together; default: the blocks ``module`` declares (``_no_split_modules``, forgegrad's
            Hugging Face models: the embeddings, a tied head and the final norm in the root's unit), else
            every module that owns parameters directly. Fewer, larger units mean fewer collectives and more
            memory while one is gathered. A module must not read another unit's parameters (a RuntimeError).
        broadcast_buffers: broadcast rank 0's buffers (BatchNorm statistics) before every training-mode
            forward, as DistributedDataParallel.
        reshard_after_forward: free a unit after its forward and gather it again for its backward
            (FULL_SHARD, HYBRID_SHARD), or keep it gathered until its backward is done (the others):
            half the allgathers, but the whole model gathered at the end of the forward. None (the
            default): as ``sharding_strategy`` says; False with no strategy means SHARD_GRAD_OP. A value
            contradicting the strategy is a ValueError. Graph-free forwards always free.
        forward_prefetch: in a forward, start gathering the unit that came next in the previous forward
            before the current one computes (torch's name and default, False: it assumes the modules
            run in the same order every step; when they do not, the wrong unit was gathered for nothing).
        backward_prefetch: a :class:`BackwardPrefetch` (or its name), or None: no prefetch in backward.
            Default ``BACKWARD_PRE``, torch's. The order of backward's gathers is known when it starts
            (the reverse of the forwards), so the prefetched unit is always the one needed next.
        process_group: shard over the ranks of this group (from ``new_group``) instead of the whole job;
            wrap on the group's ranks only. NO_SHARD: the ranks that replicate the model. HYBRID_SHARD:
            None (torch's node groups: see _strategy.py) or torch's pair ``(shard_group, replicate_group)``,
            which must tile the job's ranks (every rank wraps the model).
        sharding_strategy: a :class:`ShardingStrategy` (or its name), or None: FULL_SHARD (torch's default).
        device_mesh: a :class:`DeviceMesh` instead of ``process_group``: 1-D, its group; 2-D with HYBRID_SHARD,
            replicate over dimension 0 and shard over dimension 1 (torch's layout), over the mesh's ranks only.
        auto_wrap_policy: instead of ``units``, torch's policy callable, e.g. ``functools.partial(
            transformer_auto_wrap_policy, transformer_layer_cls={Block})`` or ``ModuleWrapPolicy({Block})``.

    ``process_group`` is then the group of every rank training the model (the job's, under HYBRID_SHARD;
    fit averages over it), ``shard_group`` and ``replicate_group`` (None without one) the two groups above.

    Prefetch keeps one more unit gathered while the current one computes; its allgather progresses when MPI is
    entered (the ZeRO reducer polls after every backward node), else at the wait.
    Train it with ``ZeroRedundancyOptimizer(model.parameters(), cls, stage=3, ...)`` (created before the
    first backward: a plain optimizer would update freed parameters). Parameters that do not require
    gradients are not sharded. Wrap the outermost model, and do not move or cast it afterwards: its
    parameters are views of the units' mappings (a module holding the wrapper would see copies in its
    ``state_dict(keep_vars=True)``).
    """

    def __init__(self, module: Module, units=None, broadcast_buffers: bool = True,
                 reshard_after_forward: Optional[bool] = None, forward_prefetch: bool = False,
                 backward_prefetch=BackwardPrefetch.BACKWARD_PRE, process_group=None, sharding_strategy=None,
                 device_mesh=None, auto_wrap_policy=None):
        super().__init__()
        if not isinstance(module, Module):
            raise TypeError(f"FullyShardedDataParallel: module must be a forgegrad.nn.Module, got "
                            f"{type(module).__name__}")
        if not isinstance(forward_prefetch, bool):
            raise TypeError(f"FullyShardedDataParallel: forward_prefetch must be a bool, got {forward_prefetch!r}")
        backward_prefetch = backward_prefetch_of(backward_prefetch)
        strategy, reshard_after_forward = strategy_of(sharding_strategy, reshard_after_forward)
        process_group, over = groups_for_wrapper(WHO, device_mesh, process_group, strategy in _HYBRID)
        group, shard_group, replicate_group = groups_for(strategy, process_group, over)
        from .ddp import _check_same_everywhere, broadcast_parameters
        from .zero import _Unit
        self.module = module
        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        if not named:
            raise ValueError("FullyShardedDataParallel: the module has no parameters that require gradients")
        for n, p in named:
            if not isinstance(p._data, np.ndarray) or p._data.dtype != np.float32:
                raise TypeError(f"FullyShardedDataParallel: parameter {n} is not a float32 CPU array; the flat "
                                "shards are float32")
            if owner_of(p) is not None:
                raise ValueError(f"FullyShardedDataParallel: parameter {n} is already sharded by another "
                                 "FullyShardedDataParallel")
        groups = fsdp_wrap.assign(module, units, auto_wrap_policy, named)
        # the shapes, the units and the settings: ranks that disagree would wait in unpaired collectives forever
        name_of = {id(p): n for n, p in named}
        signature = [(n, tuple(p.shape), str(p._data.dtype)) for n, p in named]
        signature.append(("units", len(groups), "; ".join(f"{type(m).__name__}: {', '.join(name_of[id(p)] for p in ps)}"
                                                           for m, ps in groups)))
        signature.append(("settings", f"sharding_strategy={strategy.name}, "
                          f"reshard_after_forward={reshard_after_forward}",
                          f"broadcast_buffers={bool(broadcast_buffers)}"))
        signature.append(("prefetch", f"forward_prefetch={forward_prefetch}",  # nonblocking gathers
                          f"backward_prefetch={backward_prefetch and backward_prefetch.name}"))  # (MPI: like with like)
        _check_same_everywhere(signature, "FullyShardedDataParallel", group)
        broadcast_parameters(module.state_dict() if broadcast_buffers else dict(module.named_parameters()),
                             group.ranks[0], group)
        comm = shard_group.comm
        n, r = comm.Get_size(), comm.Get_rank()
        d = self.__dict__
        d["process_group"], d["shard_group"], d["replicate_group"] = group, shard_group, replicate_group
        d["_name_of"] = name_of
        d["sharding_strategy"] = strategy
        # a communicator of its own: the gathers pair up whatever the order of the ZeRO reduce-scatters
        d["_comm"], d["_MPI"] = comm.Dup(), _c._mpi()
        # given back when the wrapper is collected (MPI has few communicators: 2048 in MPICH); at exit MPI frees it
        weakref.finalize(self, _free_comm, d["_comm"], d["_MPI"]).atexit = False
        d["units"] = []
        d["_unit_of"] = {}
        # the hooks hold the wrapper weakly (no cycle through its parameters and modules: dropped, it goes at once)
        handles, on_grad = [], _passes.weak_hook(self._on_grad)
        module_names = {id(x): k for k, x in module.named_modules()}
        for m, params in groups:
            unit = _Unit(params, n, r, 0)
            unit.module, unit.gathered, unit.pending, unit.gather_request = m, False, None, None
            unit.kept = False  # gathered by a forward with a graph and kept for its backward (see _sharded_forward)
            unit.held = False  # kept, with no output to re-gather on: until step() (see _sharded_forward)
            # private: MADV_DONTNEED then drops the pages (a shared mapping, mmap's default, would keep them),
            # and mremap may move them (the pool); whole pages, so that a pooled run covers the mapping
            unit.mapped = _pages.rounded(unit.padded * 4)
            unit.map = mmap.mmap(-1, unit.mapped, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            unit.full = np.frombuffer(unit.map, np.float32, count=unit.padded)
            unit.addr = unit.full.__array_interface__["data"][0]
            unit.full[:unit.total] = unit.pack([p._data for p in params])[:unit.total]
            unit.shard = unit.full[unit.lo:unit.hi].copy()
            # each parameter's view of the mapping (its ._data while the unit is gathered) and, while it is freed,
            # a FreedArray (NaNs, no memory) that an op reading it raises as an error naming it: a read outside
            # the unit's module (torch's freed storage has size 0: an error too)
            unit.views, unit.freed = [], []
            where = module_names.get(id(m)) or "the root"
            for p, lo, hi in zip(params, unit.offsets[:-1], unit.offsets[1:]):
                unit.views.append(unit.full[lo:hi].reshape(p._data.shape))
                unit.freed.append(_pages.freed_array(p._data.shape, (
                    f"parameter {name_of[id(p)]} is not gathered: FullyShardedDataParallel gathers it only for the "
                    f"forward and backward of its unit's module ({type(m).__name__}, {where}), and a module read "
                    "it without calling that one (a tied head, an embedding's weight read directly). Make the "
                    "module that reads it hold its unit (units=[...] or auto_wrap_policy=, e.g. one unit per "
                    "transformer block, the embeddings in the root's; see forgegrad.distributed.fsdp_wrap)")))
                p._data = unit.freed[-1]
                self._unit_of[id(p)] = unit
                _OWNERS[id(p)] = self
                handles.append(p.register_post_accumulate_grad_hook(on_grad))
            self.units.append(unit)
            unit.map.madvise(mmap.MADV_DONTNEED)
            handles.append(m.register_forward_pre_hook(_passes.weak_hook(self._gather_for)))
            object.__setattr__(m, "forward", _sharded_forward(weakref.ref(self), m, unit))
        _passes.remove_hooks_with(self, handles)
        autograd._add_pass_observer(self._on_pass)
        _passes.register(self)
        d["_unit_by_module"] = {id(u.module): u for u in self.units}
        d["forward_prefetch"], d["backward_prefetch"] = forward_prefetch, backward_prefetch
        # with prefetch every gather is an Iallgather (see the module docstring)
        d["_nonblocking"] = forward_prefetch or backward_prefetch is not None
        in_flight = 2 if d["_nonblocking"] else 1  # units gathered at once (more only with nested units)
        pool = _pages.PagePool((in_flight + 1) * max(u.mapped for u in self.units))
        d["_pool"] = pool if pool.available else None
        d["_prefetched"] = {}  # id -> unit: gathers started ahead that nothing has waited for yet
        d["_in_forward"] = False
        d["_armed_in"] = None  # the thread of the forwards that armed it (see _passes)
        d["_fwd_order"], d["_fwd_seq"], d["_fwd_follow"] = [], [], False
        d["_gathered"] = 0
        d["peak_gathered_bytes"] = 0  # the most full-parameter bytes gathered at once since construction
        d["_in_backward"] = False
        # units a forward left for its backward (freed, to gather again; or kept gathered, without resharding):
        # id -> unit, in the order their forwards last ended (a module run twice moves to the end)
        d["_armed"] = {}
        d["_live"] = {}  # the same, for the forwards since the optimizer's last step (every pass plans these)
        d["_steps"] = 0  # optimizer steps so far (release()): a graph made before the last one is stale
        d["_plan"], d["_plan_index"], d["_pos"], d["_reached"] = [], {}, 0, set()
        d["_reducer"] = None  # set by ZeroRedundancyOptimizer(stage=3)
        d["reshard_after_forward"] = bool(reshard_after_forward)
        d["optimizer_attached"] = False  # set by ZeroRedundancyOptimizer(stage=3)
        d["_buffers_to_sync"] = [b for b in module.buffers() if b is not None and b._data.size] \
            if broadcast_buffers else []

    # ---- gather / free ------------------------------------------------------------------------
    def _start(self, unit) -> None:
        """Give the unit pages (pooled ones when there are) and start its allgather."""
        if self._pool is not None:
            self._pool.take(unit.addr, unit.mapped)
        if self._nonblocking:
            unit.gather_request = self._comm.Iallgather(unit.shard, unit.full)
        else:
            self._comm.Allgather(unit.shard, unit.full)
        for p, view in zip(unit.params, unit.views):
            p._data = view
        unit.gathered = True
        self._gathered += unit.full.nbytes
        self.peak_gathered_bytes = max(self.peak_gathered_bytes, self._gathered)

    def _gather(self, unit) -> None:
        """The unit's full parameters, here now (started if need be, waited for if in flight)."""
        if not unit.gathered:
            self._start(unit)
        self._prefetched.pop(id(unit), None)
        if unit.gather_request is not None:
            unit.gather_request.Wait()
            unit.gather_request = None

    def _prefetch(self, unit) -> None:
        if not unit.gathered:
            self._start(unit)
            self._prefetched[id(unit)] = unit

    def _free(self, unit, held: bool = False) -> None:
        """Free the unit's pages; a held unit only with ``held=True`` (step(): its graph's passes are over)."""
        if unit.gathered and (held or not unit.held):
            if unit.gather_request is not None:  # MPI may still be writing the pages
                unit.gather_request.Wait()
                unit.gather_request = None
            self._prefetched.pop(id(unit), None)
            if self._pool is not None:  # the pages go to the pool, or back to the OS; reading them gives zeros
                self._pool.give(unit.addr, unit.mapped, unit.map)
            else:
                unit.map.madvise(mmap.MADV_DONTNEED)
            for p, nan in zip(unit.params, unit.freed):
                p._data = nan
            unit.gathered = unit.kept = unit.held = False
            self._gathered -= unit.full.nbytes

    def gathered_bytes(self) -> int:
        """Bytes of full parameters gathered now (between steps: 0)."""
        return self._gathered

    def pooled_bytes(self) -> int:
        """Bytes of freed units' pages kept for the next gathers (at most the in-flight units'; see the
        module docstring). :meth:`empty_cache` returns them to the OS."""
        return self._pool.free_bytes if self._pool is not None else 0

    def empty_cache(self) -> None:
        """Return the pooled pages to the OS (as torch.cuda.empty_cache does for its caching allocator);
        the next gathers fault fresh pages in."""
        if self._pool is not None:
            self._pool.clear()

    def _gather_for(self, module, args) -> None:
        """The forward pre-hook of a unit's module: gather that unit."""
        self._gather(self._unit_by_module[id(module)])

    def _run_sharded(self, m: Module, unit, forward, args, kwargs):
        self._gather(unit)
        if self._in_forward:
            self._forward_prefetch(unit)
        out = forward(m, *args, **kwargs)
        if autograd._pass_state.depth and autograd.is_grad_enabled():
            # recomputed inside a backward pass (utils.checkpoint): the pass in progress computes its
            # gradients right away, so the unit stays gathered for it (torch's FSDP does not reshard
            # there either) and is planned for no later pass (planned, a later pass or step() would
            # gather it again as unreached, its gradients as zeros)
            out, _ = self._attach(out, unit)
            unit.kept = True
            return out
        if autograd.is_grad_enabled():
            self.__dict__["_armed_in"] = threading.get_ident()
            out, attached = self._attach(out, unit)
            if not attached or not self.reshard_after_forward:
                unit.kept = True
                if attached:  # planned as the resharded units are: a rank whose backward does not reach it,
                    self._arm(unit)  # or does not run, frees it and counts zeros in the same reduction
                else:  # round as the ranks whose backward does. No output to hang the re-gather on: gathered
                    unit.held = True  # until step(), for every backward pass through this forward's graph
                return out  # kept until its backward is done (or step(), held), as asked
            self._arm(unit)
        elif unit.kept:  # a graph-free forward before the backward this unit is kept for: it stays gathered
            return out  # (freed, it would be gathered on demand in that backward, by the ranks it reaches only)
        self._free(unit)
        return out

    def _arm(self, unit) -> None:
        """A forward with a graph ran the unit: plan it for the next backward pass (``_armed``) and for every
        pass until the optimizer's step (``_live``: another forward's graph may reach it in a later pass)."""
        for d in (self._armed, self._live):
            d.pop(id(unit), None)
            d[id(unit)] = unit  # in the order the forwards last ended

    def _forward_prefetch(self, unit) -> None:
        """Record the order units run in this forward; while it follows the previous forward's, start
        gathering the unit that came next there (the same decision on every rank: same modules, same order)."""
        seq, order = self._fwd_seq, self._fwd_order
        seq.append(unit)
        if not self._fwd_follow:
            return
        j = len(seq) - 1
        if j >= len(order) or order[j] is not unit:
            self.__dict__["_fwd_follow"] = False  # this forward took another path: no more guesses in it
        elif j + 1 < len(order):
            self._prefetch(order[j + 1])

    def _attach(self, out, unit):
        if isinstance(out, Tensor):
            if out.requires_grad:
                return _PreBackward.apply(out, self, unit), True
            return out, False
        if isinstance(out, (tuple, list)):
            items = [self._attach(o, unit) for o in out]
            values = [v for v, _ in items]
            if isinstance(out, tuple) and hasattr(out, "_fields"):  # a NamedTuple (the HF models' outputs)
                return type(out)(*values), any(a for _, a in items)
            return (type(out)(values) if isinstance(out, list) else tuple(values)), any(a for _, a in items)
        if type(out) is dict:  # a dict of outputs (a subclass may not be rebuilt from its items: left as it is)
            items = {k: self._attach(v, unit) for k, v in out.items()}
            return {k: v for k, (v, _) in items.items()}, any(a for _, a in items.values())
        return out, False

    # ---- backward -------------------------------------------------------------------------------
    def _check_optimizer(self) -> None:
        if not self.optimizer_attached:
            raise RuntimeError("FullyShardedDataParallel: create forgegrad.distributed.ZeroRedundancyOptimizer("
                               "model.parameters(), optimizer_class, stage=3, ...) before the first backward (a plain "
                               "optimizer would update parameters that are freed between uses)")

    def _on_pass(self, nodes) -> None:
        """One of its backward passes starts (_passes: one through its units, or, while forwards since the last
        step armed it, a pass reaching no other model): plan its gathers (see the module docstring)."""
        if any(isinstance(n, _PreBackward) and getattr(n, "owner", None) is self and n.steps != self._steps
               for n in nodes) or (not self._live and not self._gathered and self._reached_by(None, nodes)):
            # a unit's output from a forward that ran before the optimizer's last step(): the graph is older than
            # the update (torch reports it as an in-place modification); its backward would read the updated
            # parameters, and its gathers pair with whatever the other ranks gather
            raise RuntimeError("FullyShardedDataParallel: a backward pass reached this model through a graph "
                               "whose forward ran before the optimizer's last step(); its parameters have "
                               "changed since. Run the forward again after step() (or backward before it)")
        if not self._live and not self._gathered:
            return
        self._make_plan(nodes)
        self.__dict__["_in_backward"] = True
        autograd.queue_callback(self._after_backward)

    def _reached_by(self, leaves, nodes) -> bool:
        return any(isinstance(n, _PreBackward) and getattr(n, "owner", None) is self for n in nodes)

    def _owns_leaf(self, i: int) -> bool:
        return i in self._unit_of

    def _awaits_pass(self) -> bool:
        return bool(self._live or self._gathered)

    def _owns_pass(self, pass_) -> bool:
        return _passes.owns(self, pass_)

    def backward_not_run(self) -> None:
        """ZeroRedundancyOptimizer(stage=3).step() calls it first: after a forward whose backward this rank
        did not run, the units the others' backward gathers are gathered here too, and count as zeros."""
        if self._armed:
            self._make_plan(())
            self._after_backward()

    def _make_plan(self, nodes) -> None:
        # every unit a forward since the last step armed, not just those since the last pass: after
        # ``l1 = m(x1); l2 = m(x2); l1.backward()`` the pass ``l2.backward()`` reaches units on one rank that it
        # does not reach on another, and only a plan the same on every rank pairs their gathers
        plan = list(self._live.values())[::-1]
        d = self.__dict__
        d["_armed"] = {}
        if plan:
            self._check_optimizer()
            d["_reached"] = {id(n.unit) for n in nodes
                             if isinstance(n, _PreBackward) and getattr(n, "owner", None) is self}
        d["_plan"], d["_plan_index"], d["_pos"] = plan, {id(u): i for i, u in enumerate(plan)}, 0

    def _pre_backward(self, unit) -> None:
        self._check_optimizer()
        if not self._in_backward:
            self.__dict__["_in_backward"] = True
            autograd.queue_callback(self._after_backward)
        if self._plan_index.get(id(unit), -1) >= self._pos:
            self._advance(unit)
        self._gather(unit)
        if unit.pending is None:
            unit.pending = len(unit.params)
        if self.backward_prefetch is BackwardPrefetch.BACKWARD_PRE:
            self._prefetch_planned()

    def _prefetch_planned(self) -> None:
        """Start gathering the next planned unit (plan order is the order every rank gathers in)."""
        if self._pos < len(self._plan):
            self._prefetch(self._plan[self._pos])

    def _advance(self, upto=None) -> None:
        """Gather the planned units before ``upto`` (all: None) in plan order, the same on every rank;
        those this rank's pass does not reach are freed at once and their gradients count as zeros."""
        while self._pos < len(self._plan):
            unit = self._plan[self._pos]
            self.__dict__["_pos"] = self._pos + 1
            if unit is upto:
                return
            self._gather(unit)
            if upto is not None and id(unit) in self._reached:
                if unit.pending is None:  # reached later in this pass: freed once its gradients are final
                    unit.pending = len(unit.params)
                continue
            self._free(unit)
            unit.pending = None
            if self._reducer is not None:
                self._reducer.mark_missing(unit)

    def _on_grad(self, p: Tensor) -> None:
        unit = self._unit_of[id(p)]
        if unit.pending is None and not unit.gathered:
            # the pass never reached the unit's module output, yet the parameter has a gradient: something read
            # it outside that module's forward, while the unit was freed (NaN), and backward read zeros
            raise RuntimeError(f"FullyShardedDataParallel: parameter {self._name_of[id(p)]} got a gradient, but "
                               f"the backward pass never reached the output of its unit's module "
                               f"({type(unit.module).__name__}): a module read it without calling that module, "
                               "while it was not gathered (outside forgegrad's ops: NaN; the gradients are wrong). "
                               "Make the module that reads it the unit holding it (units=[...], e.g. the blocks)")
        if unit.pending is not None:
            unit.pending -= 1
            if unit.pending == 0:  # every parameter of the unit has its final gradient: free it
                unit.pending = None
                self._free(unit)
                if self.backward_prefetch is BackwardPrefetch.BACKWARD_POST:
                    self._prefetch_planned()

    def _after_backward(self) -> None:
        self._advance()  # the planned units this pass did not reach here, which other ranks may have gathered
        d = self.__dict__
        d["_plan"], d["_plan_index"], d["_pos"], d["_reached"] = [], {}, 0, set()
        d["_in_backward"] = False
        for unit in self.units:  # every rank frees the same units: the next pass's gathers pair up
            unit.pending = None
            self._free(unit)

    def release(self) -> None:
        """Free every gathered unit (no new communication; a gather in flight is waited for) and end the
        forwards' plans. ZeroRedundancyOptimizer(stage=3).step() calls it after updating the shards: a unit
        still gathered then (its module's output had no Tensor to hang the re-gather on, so it was held for
        every backward pass until now) holds the old parameters, which the next forward would otherwise read."""
        d = self.__dict__
        d["_live"], d["_steps"] = {}, self._steps + 1  # the graphs made until now are stale (see _on_pass)
        for unit in self.units:
            unit.pending = None
            self._free(unit, held=True)

    # ---- the module surface ---------------------------------------------------------------------
    def forward(self, *args, **kwargs):
        if self.training and self._buffers_to_sync and autograd.is_grad_enabled():
            for b in self._buffers_to_sync:
                _c.broadcast(b, group=self.process_group, group_src=0)
        if self._in_forward:  # the wrapper called from inside its own forward
            return self.module(*args, **kwargs)
        d = self.__dict__
        d["_in_forward"], d["_fwd_seq"], d["_fwd_follow"] = True, [], self.forward_prefetch
        try:
            out = self.module(*args, **kwargs)
        finally:  # (after an error the gathers in flight are left for the next wait or release())
            d["_in_forward"], d["_fwd_order"] = False, d["_fwd_seq"]
        for unit in list(self._prefetched.values()):  # gathered for a module this forward did not run
            self._free(unit)
        return out

    def __repr__(self) -> str:
        return (f"FullyShardedDataParallel(units={len(self.units)}, sharding_strategy={self.sharding_strategy.name},"
                f"\n  {self.module!r}\n)")


def _free_comm(comm, MPI) -> None:
    """Free a collected wrapper's communicator. MPI_Comm_free is local in MPICH and Open MPI (a context id is
    reused only once every rank has freed it), so ranks collecting their wrappers at different times is fine."""
    if not MPI.Is_finalized() and comm != MPI.COMM_NULL:
        comm.Free()


def _sharded_forward(owner_ref, m: Module, unit):
    """The forward of a unit's module: gathers the unit around the module's own forward (holding the wrapper
    weakly: it is the module's attribute, and the wrapper holds the module)."""
    forward = type(m).forward

    def sharded_forward(*args, **kwargs):
        owner = owner_ref()
        if owner is None:
            raise RuntimeError(f"FullyShardedDataParallel: the wrapper that sharded this {type(m).__name__} was "
                               "deleted; its parameters are gone with their shards")
        return owner._run_sharded(m, unit, forward, args, kwargs)
    return sharded_forward
