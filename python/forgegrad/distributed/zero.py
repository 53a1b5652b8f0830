"""ZeRO stages 1, 2 (and 3): the optimizer state, the gradients (and the parameters) sharded over ranks.

torch's ZeroRedundancyOptimizer API with DeepSpeed's ``stage``. The parameters of each group are cut
into *units*, each laid out as one flat float32 vector zero-padded to a multiple of size(); rank r
owns the r-th of its size() equal slices. The wrapped optimizer (Adam, AdamW, SGD, ...: elementwise
update rules) works on one flat tensor per group, the concatenation of this rank's slices of the
group's units, so its state takes 1/size of the memory.

The units are buckets of about ``bucket_cap_mb`` (reverse registration order, as DDP's), or (stage 3)
FullyShardedDataParallel's units (fsdp.py).

* **Stage 1**: ``step()`` packs one bucket's full local gradients at a time and
  ``Reduce_scatter_block`` (sum, then x 1/size) gives each rank the averaged gradient of its slice.
* **Stage 2**: a post-accumulate-grad hook copies each finished gradient into its bucket's staging
  vector and drops ``.grad``; a complete bucket (every earlier one started) starts a non-blocking reduce-scatter while
  backward runs on, and the result is added into this rank's gradient shard (zero_grad zeroes it).
  After the step's reduction a rank holds 1/size of the gradients; in flight, a few buckets.

Then the optional global-norm clipping (one allreduce of the shards' sums of squares) and the wrapped
optimizer's update of this rank's slices; stages 1 and 2 then ``Allgather`` each unit, which gives
every rank the whole new parameters (stage 3 stops there: the next forward gathers). The rule is
elementwise, so the result equals DDP + the plain optimizer up to the order in which the gradients
are summed (identical bits for 2 ranks, which add one pair).

``state_dict()`` (collective: call it on every rank) gathers the shards into the plain optimizer's
layout (torch's: per-parameter ``step``/``exp_avg``/...), so a checkpoint loads back into a plain
optimizer at 1 rank or into a ZeroRedundancyOptimizer of any stage at any number of ranks.
"""
from __future__ import annotations

import contextlib
import math
from typing import Any, Dict, List, Optional

import numpy as np

from .. import _version_counter as _vc
from ..optim.optimizer import _SCALAR_STATE_KEYS, Optimizer
from ..tensor import Tensor
from . import comm as _c
from .ddp import _buckets, paused

__all__ = ["ZeroRedundancyOptimizer"]


def _elementwise_optimizers():
    """The optimizers whose update of an element reads only that element's parameter, gradient and
    state: those can update any slice of a flat vector and get what they would on the whole."""
    from ..optim import SGD, Adadelta, Adagrad, Adam, AdamW, RMSprop
    return (SGD, Adam, AdamW, Adagrad, RMSprop, Adadelta)


class _Unit:
    """Some parameters of one group as one flat, zero-padded vector, and this rank's slice of it.

    ``local_off`` is where the slice sits in the group's local flat tensor.
    """

    def __init__(self, params: List[Tensor], nranks: int, rank: int, local_off: int):
        self.params = params
        sizes = [p._data.size for p in params]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.total = int(self.offsets[-1])
        self.per_rank = -(-self.total // nranks)
        self.padded = self.per_rank * nranks
        self.lo = rank * self.per_rank
        self.hi = self.lo + self.per_rank
        self.local_off = local_off
        # stage 2's reduction round: the staging vector, how many gradients it has, the request
        self.staging: Optional[np.ndarray] = None
        self.received: Optional[np.ndarray] = None
        self.ready = 0
        self.request = None

    def pack(self, arrays) -> np.ndarray:
        """The unit's arrays (None: zeros) as one flat, zero-padded vector."""
        out = np.empty(self.padded, np.float32)
        for a, lo, hi in zip(arrays, self.offsets[:-1], self.offsets[1:]):
            if a is None:
                out[lo:hi] = 0.0
            else:
                out[lo:hi] = a.reshape(-1)
        out[self.total:] = 0.0
        return out

    def read_params(self, dst: np.ndarray) -> None:
        """Copy this rank's slice of the current parameters into ``dst`` (they may have been loaded)."""
        for p, lo, hi in zip(self.params, self.offsets[:-1], self.offsets[1:]):
            a, b = max(lo, self.lo), min(hi, self.hi)
            if a < b:
                dst[a - self.lo:b - self.lo] = p._data.reshape(-1)[a - lo:b - lo]

    def write_params(self, flat: np.ndarray) -> None:
        for p, lo, hi in zip(self.params, self.offsets[:-1], self.offsets[1:]):
            p._data[...] = flat[lo:hi].reshape(p._data.shape)
        _vc.bump_arrays([p._data for p in self.params])  # the step's in-place write, counted (p._version)


class _Group:
    """One parameter group: its units, this rank's flat parameters (what the wrapped optimizer
    updates) and this rank's flat averaged gradient, both the concatenation of the units' slices.

    ``units``: lists of parameters, or (stage 3) FullyShardedDataParallel's units, whose shards become
    views of ``local`` (the optimizer then updates the slices the wrapper gathers from)."""

    def __init__(self, params: List[Tensor], units, nranks: int, rank: int):
        self.params = params
        self.units, off = [], 0
        for members in units:
            unit = members if isinstance(members, _Unit) else _Unit(members, nranks, rank, 0)
            unit.local_off = off
            self.units.append(unit)
            off += unit.per_rank
        self.local = Tensor._wrap(np.zeros(off, np.float32))
        self.local.requires_grad = True
        self.grad = np.zeros(off, np.float32)
        for unit in self.units:
            if getattr(unit, "shard", None) is not None:
                view = self.local_slice(unit, self.local._data)
                view[...] = unit.shard
                unit.shard = view
        # where each parameter lives: (unit, its offset in the unit)
        self.where = {id(p): (u, int(u.offsets[i])) for u in self.units for i, p in enumerate(u.params)}

    def local_slice(self, unit: _Unit, flat: np.ndarray) -> np.ndarray:
        return flat[unit.local_off:unit.local_off + unit.per_rank]


def _fsdp_units(params: List[Tensor], gi: int) -> list:
    """Stage 3: the FullyShardedDataParallel units of a group's parameters, last first (about the order
    backward finishes them). A unit must lie in one group."""
    from .fsdp import owner_of
    ids = {id(p) for p in params}
    units, seen = [], set()
    for p in params:
        unit = owner_of(p)._unit_of[id(p)]
        if id(unit) in seen:
            continue
        if any(id(q) not in ids for q in unit.params):
            raise ValueError(f"ZeroRedundancyOptimizer: parameter group {gi} holds part of a FullyShardedDataParallel "
                             f"unit ({type(unit.module).__name__}); a unit's parameters must be in one group")
        seen.add(id(unit))
        units.append(unit)
    return units[::-1]


class ZeroRedundancyOptimizer(Optimizer):
    """An optimizer whose state (stage 1), gradients (stage 2) and parameters (stage 3) are split over the
    ranks. It is a forgegrad Optimizer, so lr schedulers and fit take it.

    Args:
        params: the parameters (or parameter groups, as for any optimizer), the same on every rank.
        optimizer_class: the optimizer to shard: ``forgegrad.optim`` SGD, Adam, AdamW, Adagrad, RMSprop,
            Adadelta or a subclass (elementwise update rules; LBFGS is refused).
        stage: 1 (optimizer state sharded), 2 (also the gradients, reduce-scattered in buckets
            during backward) or 3 (also the parameters: ``params`` must be those of a
            FullyShardedDataParallel, whose units are then the buckets; see fsdp.py).
        bucket_cap_mb: gradient bytes per reduce-scatter bucket (torch DDP's default 25); stage 1 packs
            and gathers one bucket at a time in ``step()``, stage 2 reduces them during backward.
        max_grad_norm: clip the gradients to this global 2-norm in every ``step()`` (DeepSpeed's
            ``gradient_clipping``; what makes clipping work under ``fit``). None: no clipping.
        process_group: shard over the ranks of this group (from ``new_group``; torch's argument) instead
            of the whole job. Stage 3 takes FullyShardedDataParallel's group (passing another is an error)
            and its sharding strategy's: it reduce-scatters in the shard group and, under NO_SHARD and
            HYBRID_SHARD, allreduces the gradient shards across the replicate group in ``step()``.
        **defaults: the optimizer's arguments (lr, betas, ...).

    Parameters are broadcast from rank 0 at construction. A parameter without a gradient on a rank
    counts as a zero gradient there (its moments still decay, unlike a plain optimizer's skip). Do not
    wrap the model in DistributedDataParallel too: the reduce-scatter already averages.

    Stages 2 and 3: after backward ``p.grad`` is None; the averaged gradient lives in this rank's
    shard (``clip_grad_norm_`` clips it). Backward passes between two ``zero_grad()`` calls accumulate
    in the shard (one reduce-scatter each); inside ``no_sync()`` they accumulate in the full local
    ``.grad`` instead, and the first backward after it reduces the sum. A newer ZeroRedundancyOptimizer
    over the same parameters (one rebuilt to resume) takes their gradients over; the older one then
    gets none.
    """

    def __init__(self, params, optimizer_class, stage: int = 1, bucket_cap_mb: float = 25,
                 max_grad_norm: Optional[float] = None, process_group=None, **defaults):
        if not (isinstance(optimizer_class, type) and issubclass(optimizer_class, Optimizer)):
            raise TypeError(f"ZeroRedundancyOptimizer: optimizer_class must be a forgegrad.optim optimizer class, got "
                            f"{optimizer_class!r}")
        if not issubclass(optimizer_class, _elementwise_optimizers()):
            names = ", ".join(c.__name__ for c in _elementwise_optimizers())
            raise ValueError(f"ZeroRedundancyOptimizer: {optimizer_class.__name__} is not supported: each rank "
                             f"updates a slice of the flat parameters, which needs an elementwise update rule "
                             f"({names})")
        if stage not in (1, 2, 3) or isinstance(stage, bool):
            raise ValueError(f"ZeroRedundancyOptimizer: stage must be 1, 2 or 3, got {stage!r}")
        if not isinstance(bucket_cap_mb, (int, float)) or isinstance(bucket_cap_mb, bool) or bucket_cap_mb <= 0:
            raise ValueError(f"ZeroRedundancyOptimizer: bucket_cap_mb must be a positive number, got {bucket_cap_mb!r}")
        if max_grad_norm is not None and (isinstance(max_grad_norm, bool) or not isinstance(
                max_grad_norm, (int, float)) or not max_grad_norm > 0):
            raise ValueError(f"ZeroRedundancyOptimizer: max_grad_norm must be a positive number or None, got "
                             f"{max_grad_norm!r}")
        group = _c._member_group(process_group, "ZeroRedundancyOptimizer")
        self.MPI = _c._mpi()
        # a throwaway instance validates params and groups exactly as the plain optimizer would
        reference = optimizer_class(params, **defaults)
        self.optimizer_class = optimizer_class
        self.stage = int(stage)
        self.max_grad_norm = max_grad_norm
        self.defaults = dict(reference.defaults)  # Optimizer.__init__ is not called: the groups live in the shards
        from .ddp import _check_same_everywhere, broadcast_parameters
        all_params = [p for g in reference.param_groups for p in g["params"]]
        for i, p in enumerate(all_params):
            if p._data.dtype != np.float32:
                raise TypeError(f"ZeroRedundancyOptimizer: parameter {i} has dtype {p._data.dtype}; the flat shards "
                                "are float32")
        from .fsdp import owner_of
        owners = [owner_of(p) for p in all_params]
        if stage == 3:
            missing = next((i for i, o in enumerate(owners) if o is None), None)
            if missing is not None:
                raise ValueError("ZeroRedundancyOptimizer: stage 3 needs parameters sharded by "
                                 f"FullyShardedDataParallel (parameter {missing} is not): wrap the model first, "
                                 "model = dist.FullyShardedDataParallel(net), and pass model.parameters()")
        elif any(o is not None for o in owners):
            raise ValueError("ZeroRedundancyOptimizer: the parameters are sharded by FullyShardedDataParallel: use "
                             "stage=3")
        shard_group, self._replicate = group, None
        if stage == 3:  # the shards are FullyShardedDataParallel's: its group's ranks hold them
            fsdp_groups = {id(o.process_group): o.process_group for o in owners}
            layouts = {(id(o.shard_group), id(o.replicate_group)) for o in owners}
            if len(fsdp_groups) > 1 or len(layouts) > 1 or (process_group is not None and id(group) not in fsdp_groups):
                raise ValueError("ZeroRedundancyOptimizer: stage 3 shards over FullyShardedDataParallel's "
                                 f"process_group ({', '.join(repr(g) for g in fsdp_groups.values())}); got "
                                 f"process_group={process_group!r}: leave it None or pass the same group (and wrap "
                                 "every model of one optimizer with the same groups and sharding strategy)")
            group = next(iter(fsdp_groups.values()))
            # its sharding strategy's groups: reduce-scatter in the shard group, then (NO_SHARD, HYBRID_SHARD)
            # allreduce the gradient shards across the replicate group in step()
            shard_group, replicate = owners[0].shard_group, owners[0].replicate_group
            if replicate is not None and replicate.size() > 1:
                self._replicate = replicate
        self.process_group = group  # every rank training the model (fit averages over it)
        self._shard_group = shard_group
        self.comm = shard_group.comm
        n, r = self.comm.Get_size(), self.comm.Get_rank()
        # the shapes and the layout settings: ranks that disagree would wait for each other's collectives forever
        signature = [(f"parameter {i}", tuple(p.shape), str(p._data.dtype)) for i, p in enumerate(all_params)]
        signature.append(("settings", f"stage={stage}", f"bucket_cap_mb={bucket_cap_mb}"))
        _check_same_everywhere(signature, "ZeroRedundancyOptimizer", group)
        if stage != 3:  # FullyShardedDataParallel has broadcast rank 0's parameters
            broadcast_parameters(all_params, group.ranks[0], group)
        cap = int(bucket_cap_mb * 1024 * 1024)
        self.groups = [_Group(g["params"], _buckets(g["params"], cap) if stage < 3 else _fsdp_units(g["params"], gi),
                              n, r)
                       for gi, g in enumerate(reference.param_groups)]
        self._fsdp = list({id(o): o for o in owners if o is not None}.values())
        for fsdp in self._fsdp:
            fsdp.__dict__["optimizer_attached"] = True
        self._groups_meta = [{k: v for k, v in g.items() if k != "params"} for g in reference.param_groups]
        self.local_optimizer = optimizer_class(
            [dict(meta, params=[g.local]) for meta, g in zip(self._groups_meta, self.groups)], **defaults)
        # stage 1: this step's gradients are already in the shards (clip_grad_norm_ did it); stage 3 with a
        # replicate group: they are already averaged across it
        self._reduced = False
        self._reducer = None
        if stage >= 2:
            from .zero_reduce import _ShardReducer
            self._reducer = _ShardReducer(self.groups, self.comm, self.MPI, self.process_group)
        for fsdp in self._fsdp:  # it marks the units a backward pass does not reach on this rank
            fsdp.__dict__["_reducer"] = self._reducer

    # ---- the torch.optim surface ----------------------------------------------------------------
    @property
    def param_groups(self) -> List[Dict[str, Any]]:
        """The wrapped optimizer's groups (hyper-parameters as given; "params" holds this rank's flat
        slice of the group): lr schedulers work on them unchanged."""
        return self.local_optimizer.param_groups

    @property
    def state(self):
        """This rank's shard state (the wrapped optimizer's, keyed by the shard tensor)."""
        return self.local_optimizer.state

    def add_param_group(self, param_group) -> None:
        raise NotImplementedError("ZeroRedundancyOptimizer: parameter groups are fixed at construction "
                                  "(build a new one with all groups)")

    def zero_grad(self, set_to_none: bool = True) -> None:
        if self._reducer is not None:
            self._reducer.finish()  # a round still in flight must not land in the next step's shard
        for g in self.groups:
            g.grad[...] = 0.0
            for p in g.params:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad._data[...] = 0
        self._reduced = False
        if self._reducer is not None:
            self._reducer.armed = True  # to step(), a backward pass that reaches no parameter reduces zeros

    @contextlib.contextmanager
    def no_sync(self):
        """Stage 2: backward passes inside accumulate the full gradients locally, without communication;
        the first backward after it reduce-scatters the sum. Stage 1 reduces in ``step()`` only, so
        there the context changes nothing."""
        if self._reducer is None:
            yield
            return
        with paused(self._reducer):
            yield

    def _reduce_grads(self) -> None:
        """Bring this step's averaged gradients into the shards (``g.grad``)."""
        if self._reducer is not None:
            for fsdp in self._fsdp:  # stage 3: a forward whose backward did not run here still gathers
                fsdp.backward_not_run()
            self._reducer.before_step()  # a rank that ran no backward reduces zeros with the others' round
            if self._replicate is not None and not self._reduced:  # the mean over the ranks holding each shard
                scale = np.float32(1.0 / self._replicate.size())
                for g in self.groups:
                    self._replicate.comm.Allreduce(self.MPI.IN_PLACE, g.grad, op=self.MPI.SUM)
                    g.grad *= scale
                self._reduced = True
            return
        if self._reduced:
            return
        n = self.comm.Get_size()
        for g in self.groups:
            for unit in g.units:  # one bucket's full gradients packed at a time
                flat = unit.pack([None if p.grad is None else p.grad._data for p in unit.params])
                self.comm.Reduce_scatter_block(flat, g.local_slice(unit, g.grad), op=self.MPI.SUM)
                del flat
            if n > 1:
                g.grad *= np.float32(1.0 / n)
        self._reduced = True

    def clip_grad_norm_(self, max_norm: float, norm_type: float = 2.0, error_if_nonfinite: bool = False) -> Tensor:
        """Clip the averaged gradients (all ranks' shards together) to ``max_norm`` in place, as
        ``nn.utils.clip_grad_norm_`` on the full gradients; returns the total norm before clipping
        (the same on every rank). Collective: call it on every rank, between backward and ``step()``.

        Each rank sums its shard in float64, one allreduce adds the ranks' sums (max for norm_type inf).
        """
        norm_type = float(norm_type)
        if not norm_type > 0:
            raise ValueError(f"clip_grad_norm_: norm_type must be positive, got {norm_type}")
        self._reduce_grads()
        shards = [g.grad for g in self.groups]
        if norm_type == math.inf:
            local = max((float(np.abs(s).max()) if s.size else 0.0) for s in shards)
            total = float(_c.allreduce(np.array([local]), op="max", group=self._shard_group)[0])
        else:
            local = sum(float(np.sum(np.abs(s.astype(np.float64)) ** norm_type)) for s in shards)
            total = float(_c.allreduce(np.array([local]), op="sum", group=self._shard_group)[0]) ** (1.0 / norm_type)
        total32 = np.float32(total)
        if error_if_nonfinite and not np.isfinite(total32):
            raise RuntimeError(f"The total norm of order {norm_type} for gradients is non-finite, so it cannot be "
                               "clipped. To disable this error and scale the gradients by the non-finite norm anyway, "
                               "set `error_if_nonfinite=False`")
        with np.errstate(invalid="ignore", over="ignore"):
            coef = np.float32(max_norm) / (total32 + np.float32(1e-6))
            if coef < 1 or np.isnan(coef):
                for s in shards:
                    s *= coef
        return Tensor._wrap(np.array(total32))

    def step(self, closure=None):
        loss = None
        if closure is not None:
            from ..autograd import enable_grad
            with enable_grad():
                loss = closure()
        self._reduce_grads()
        if self.max_grad_norm is not None:
            self.clip_grad_norm_(self.max_grad_norm)
        for g in self.groups:
            if self.stage < 3:  # stage 3's shards are the parameters (FullyShardedDataParallel gathers them)
                for unit in g.units:
                    unit.read_params(g.local_slice(unit, g.local._data))
            g.local.grad = Tensor._wrap(g.grad)
        self.local_optimizer.step()
        for fsdp in self._fsdp:  # stage 3: the next forward gathers the updated shards
            fsdp.release()
        for g in self.groups:
            g.local.grad = None
            if self.stage == 3:
                continue
            for unit in g.units:
                flat = np.empty(unit.padded, np.float32)
                self.comm.Allgather(g.local_slice(unit, g.local._data), flat)
                unit.write_params(flat)
        self._reduced = False
        if self._reducer is not None:
            self._reducer.after_step()
        return loss

    def local_state_bytes(self) -> int:
        """Bytes of optimizer state this rank holds (about 1/size of the plain optimizer's)."""
        total = 0
        for st in self.local_optimizer.state.values():
            for v in st.values():
                if isinstance(v, Tensor):
                    total += v._data.nbytes
        return total

    def memory_bytes(self) -> Dict[str, int]:
        """What this rank holds between steps, in bytes: ``params`` (the model's full parameters plus
        this rank's flat master slice), ``grads`` (the full local ``.grad`` arrays present now plus the
        gradient shard) and ``optimizer_state``; stage 3 adds ``pooled_params``, the freed units' pages
        FullyShardedDataParallel keeps for its next gathers (a few units; ``empty_cache()`` frees them)."""
        if self.stage == 3:  # the shards, and the units gathered now
            params = sum(f.gathered_bytes() for f in self._fsdp)
        else:
            params = sum(p._data.nbytes for g in self.groups for p in g.params)
        grads = sum(p.grad._data.nbytes for g in self.groups for p in g.params if p.grad is not None)
        out = {"params": params + sum(g.local._data.nbytes for g in self.groups),
               "grads": grads + sum(g.grad.nbytes for g in self.groups),
               "optimizer_state": self.local_state_bytes()}
        if self.stage == 3:
            out["pooled_params"] = sum(f.pooled_bytes() for f in self._fsdp)
        return out

    # ---- consolidated checkpoints -----------------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        """The plain optimizer's state_dict of all parameters, gathered from every rank (collective)."""
        local = self.local_optimizer.state_dict()
        state: Dict[int, Dict[str, Any]] = {}
        groups = []
        index = 0
        for g, lg in zip(self.groups, local["param_groups"]):
            shard_state = local["state"].get(lg["params"][0], {})
            # the keys are the same on every rank (all ranks step together); gather each buffer per unit
            per_param: Dict[int, Dict[str, np.ndarray]] = {id(p): {} for p in g.params}
            scalars = {}
            for key in sorted(shard_state):
                v = shard_state[key]
                if key in _SCALAR_STATE_KEYS or not isinstance(v, Tensor):
                    scalars[key] = v
                    continue
                flat_local = np.ascontiguousarray(v._data, np.float32)
                for unit in g.units:
                    full = np.empty(unit.padded, np.float32)
                    self.comm.Allgather(np.ascontiguousarray(g.local_slice(unit, flat_local)), full)
                    for p, lo, hi in zip(unit.params, unit.offsets[:-1], unit.offsets[1:]):
                        per_param[id(p)][key] = full[lo:hi].reshape(p._data.shape).copy()
            ids = []
            for p in g.params:
                if shard_state:
                    entry = {k: Tensor._wrap(a) for k, a in per_param[id(p)].items()}
                    for k, v in scalars.items():
                        entry[k] = Tensor._wrap(np.array(v._data)) if isinstance(v, Tensor) else v
                    state[index] = entry
                ids.append(index)
                index += 1
            groups.append(dict({k: v for k, v in lg.items() if k != "params"}, params=ids))
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Load a plain optimizer's state_dict (from :meth:`state_dict`, at any stage and number of ranks,
        or from a plain optimizer); every rank keeps its own slices."""
        if not isinstance(state_dict, dict) or "state" not in state_dict or "param_groups" not in state_dict:
            raise ValueError("state_dict must be a dict with 'state' and 'param_groups' entries")
        saved = state_dict["param_groups"]
        if len(saved) != len(self.groups):
            raise ValueError(f"loaded state dict has {len(saved)} parameter groups, this optimizer has "
                             f"{len(self.groups)}")
        local_groups, local_state = [], {}
        for gi, (grp, g) in enumerate(zip(self.groups, saved)):
            if len(g["params"]) != len(grp.params):
                raise ValueError(f"loaded state dict's group {gi} has {len(g['params'])} parameters, this "
                                 f"optimizer's has {len(grp.params)}")
            entries = [state_dict["state"].get(i) for i in g["params"]]
            local_groups.append(dict({k: v for k, v in g.items() if k != "params"}, params=[gi]))
            present = [e for e in entries if e]
            if not present:
                continue
            if len(present) != len(entries):
                raise ValueError(f"group {gi}: some parameters have optimizer state and some not; "
                                 "ZeroRedundancyOptimizer keeps one state per group")
            out = {}
            for key in present[0]:
                values = [e.get(key) for e in entries]
                if any(v is None for v in values):
                    raise ValueError(f"group {gi}: state {key!r} is missing for some parameters")
                if not all(isinstance(v, (Tensor, np.ndarray, float, int)) for v in values):
                    out[key] = values[0]  # a non-array entry: kept as it is
                    continue
                arrays = [np.asarray(v._data if isinstance(v, Tensor) else v, np.float32) for v in values]
                if key in _SCALAR_STATE_KEYS:  # a scalar such as step: one value for the whole group
                    firsts = {float(a.reshape(-1)[0]) for a in arrays}
                    if len(firsts) != 1 or any(a.size != 1 for a in arrays):
                        raise ValueError(f"group {gi}: state {key!r} differs between parameters; "
                                         "ZeroRedundancyOptimizer keeps one per group")
                    out[key] = arrays[0].reshape(())
                    continue
                by_id = {}
                for i, (a, p) in enumerate(zip(arrays, grp.params)):
                    if a.shape != p._data.shape:
                        raise ValueError(f"group {gi}: state[{g['params'][i]}][{key!r}] has shape {a.shape}, "
                                         f"its parameter has shape {p._data.shape}")
                    by_id[id(p)] = a
                flat = np.empty(grp.local._data.size, np.float32)
                for unit in grp.units:
                    grp.local_slice(unit, flat)[...] = unit.pack([by_id[id(p)] for p in unit.params])[unit.lo:unit.hi]
                out[key] = flat
            local_state[gi] = out
        self.local_optimizer.load_state_dict({"state": local_state, "param_groups": local_groups})

    def __repr__(self) -> str:
        return (f"ZeroRedundancyOptimizer({self.optimizer_class.__name__}, stage={self.stage}, "
                f"ranks={self.comm.Get_size()}, rank={self.comm.Get_rank()})")
