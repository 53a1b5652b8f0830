"""ZeRO stage 1: the optimizer state sharded over ranks (torch's ZeroRedundancyOptimizer, by element ranges).

Each parameter group is laid out as one flat float32 vector (its parameters in order), zero-padded
to a multiple of size(); rank r owns elements ``[r*S, (r+1)*S)``. A step:

1. the gradients are packed into the flat vector and ``Reduce_scatter_block`` (sum, then x 1/size)
   gives each rank the averaged gradient of its own range;
2. the wrapped optimizer (e.g. Adam) updates that range only, so its state (exp_avg, exp_avg_sq)
   takes 1/size of the memory it would take on one process;
3. ``Allgather`` of the updated ranges gives every rank the whole new parameters.

The update rule is elementwise, so the result equals DDP + the plain optimizer (up to the order of
the gradient sum, identical for 2 ranks). Do not wrap the model in DistributedDataParallel too: the
reduce-scatter already averages the gradients.

``state_dict()`` (collective: call it on every rank) gathers the shards into the plain optimizer's
layout (torch's: per-parameter ``step``/``exp_avg``/...), so a checkpoint loads back into a plain
optimizer at 1 rank or into a ZeroRedundancyOptimizer at any number of ranks.
"""
from __future__ import annotations

from typing import Any, Dict, List

import numpy as np

from ..optim.optimizer import _SCALAR_STATE_KEYS, Optimizer
from ..tensor import Tensor
from . import comm as _c

__all__ = ["ZeroRedundancyOptimizer"]


class _Shard:
    """One parameter group's flat layout and this rank's range of it.

    Only the rank's range is kept between steps (``local``, 1/size of the group); the packed gradient
    and the gathered parameters are step-time temporaries.
    """

    def __init__(self, params: List[Tensor], nranks: int, rank: int):
        self.params = params
        sizes = [p._data.size for p in params]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.total = int(self.offsets[-1])
        self.per_rank = -(-self.total // nranks)
        self.padded = self.per_rank * nranks
        self.lo = rank * self.per_rank
        self.hi = self.lo + self.per_rank
        # this rank's range of the group's parameters: what the wrapped optimizer updates
        self.local = Tensor._wrap(np.zeros(self.per_rank, np.float32))
        self.local.requires_grad = True

    def pack(self, arrays) -> np.ndarray:
        """The group's arrays (None: zeros) as one flat, zero-padded vector."""
        out = np.empty(self.padded, np.float32)
        for a, lo, hi in zip(arrays, self.offsets[:-1], self.offsets[1:]):
            if a is None:
                out[lo:hi] = 0.0
            else:
                out[lo:hi] = a.reshape(-1)
        out[self.total:] = 0.0
        return out

    def read_local_params(self) -> None:
        """Copy this rank's range of the current parameters into ``local`` (they may have been loaded)."""
        dst = self.local._data
        for p, lo, hi in zip(self.params, self.offsets[:-1], self.offsets[1:]):
            a, b = max(lo, self.lo), min(hi, self.hi)
            if a < b:
                dst[a - self.lo:b - self.lo] = p._data.reshape(-1)[a - lo:b - lo]

    def unpack_params(self, flat: np.ndarray) -> None:
        for p, lo, hi in zip(self.params, self.offsets[:-1], self.offsets[1:]):
            p._data[...] = flat[lo:hi].reshape(p._data.shape)


class ZeroRedundancyOptimizer(Optimizer):
    """An optimizer whose state is split over the ranks (ZeRO stage 1). It is a forgegrad Optimizer, so
    lr schedulers and fit take it.

    Args:
        params: the parameters (or parameter groups, as for any optimizer), the same on every rank.
        optimizer_class: the optimizer to shard, e.g. ``forgegrad.optim.Adam`` (elementwise update
            rules only: Adam, AdamW, SGD).
        **defaults: its arguments (lr, betas, ...).

    Parameters are broadcast from rank 0 at construction. A parameter without a gradient on a rank
    counts as a zero gradient there (its moments still decay, unlike a plain optimizer's skip).
    Memory per rank besides the model: the state of 1/size of the parameters plus that range of the
    parameters themselves; during ``step()``, one packed gradient and one gathered parameter vector
    of a group at a time.
    """

    def __init__(self, params, optimizer_class, **defaults):
        if not (isinstance(optimizer_class, type) and issubclass(optimizer_class, Optimizer)):
            raise TypeError(f"ZeroRedundancyOptimizer: optimizer_class must be a forgegrad.optim optimizer class, got "
                            f"{optimizer_class!r}")
        self.comm = _c._comm()
        self.MPI = _c._mpi()
        n, r = self.comm.Get_size(), self.comm.Get_rank()
        # a throwaway instance validates params and groups exactly as the plain optimizer would
        reference = optimizer_class(params, **defaults)
        self.optimizer_class = optimizer_class
        self.defaults = dict(reference.defaults)  # Optimizer.__init__ is not called: the groups live in the shards
        from .ddp import _check_same_everywhere, broadcast_parameters
        all_params = [p for g in reference.param_groups for p in g["params"]]
        _check_same_everywhere([(str(i), tuple(p.shape), str(p.dtype)) for i, p in enumerate(all_params)],
                               "ZeroRedundancyOptimizer")
        broadcast_parameters(all_params, 0)
        self.shards = [_Shard(g["params"], n, r) for g in reference.param_groups]
        self._groups_meta = [{k: v for k, v in g.items() if k != "params"} for g in reference.param_groups]
        self.local_optimizer = optimizer_class(
            [dict(meta, params=[s.local]) for meta, s in zip(self._groups_meta, self.shards)], **defaults)

    # ---- the torch.optim surface ----------------------------------------------------------------
    @property
    def param_groups(self) -> List[Dict[str, Any]]:
        """The wrapped optimizer's groups (hyper-parameters as given; "params" holds this rank's flat
        range of the group): lr schedulers work on them unchanged."""
        return self.local_optimizer.param_groups

    @property
    def state(self):
        """This rank's shard state (the wrapped optimizer's, keyed by the shard tensor)."""
        return self.local_optimizer.state

    def add_param_group(self, param_group) -> None:
        raise NotImplementedError("ZeroRedundancyOptimizer: parameter groups are fixed at construction "
                                  "(build a new one with all groups)")

    def zero_grad(self, set_to_none: bool = True) -> None:
        for s in self.shards:
            for p in s.params:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad._data[...] = 0

    def step(self, closure=None):
        loss = None
        if closure is not None:
            from ..autograd import enable_grad
            with enable_grad():
                loss = closure()
        MPI = self.MPI
        n = self.comm.Get_size()
        for s in self.shards:
            flat_grad = s.pack([None if p.grad is None else p.grad._data for p in s.params])
            local_grad = np.empty(s.per_rank, np.float32)
            self.comm.Reduce_scatter_block(flat_grad, local_grad, op=MPI.SUM)
            del flat_grad
            if n > 1:
                local_grad *= np.float32(1.0 / n)
            s.local.grad = Tensor._wrap(local_grad)
            s.read_local_params()
        self.local_optimizer.step()
        for s in self.shards:
            s.local.grad = None
            flat_param = np.empty(s.padded, np.float32)
            self.comm.Allgather(s.local._data, flat_param)
            s.unpack_params(flat_param)
        return loss

    def local_state_bytes(self) -> int:
        """Bytes of optimizer state this rank holds (about 1/size of the plain optimizer's)."""
        total = 0
        for st in self.local_optimizer.state.values():
            for v in st.values():
                if isinstance(v, Tensor):
                    total += v._data.nbytes
        return total

    # ---- consolidated checkpoints -----------------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        """The plain optimizer's state_dict of all parameters, gathered from every rank (collective)."""
        local = self.local_optimizer.state_dict()
        state: Dict[int, Dict[str, Any]] = {}
        groups = []
        index = 0
        for gi, (s, lg) in enumerate(zip(self.shards, local["param_groups"])):
            shard_state = local["state"].get(lg["params"][0], {})
            # the keys are the same on every rank (all ranks step together); gather each buffer
            per_element, scalars = {}, {}
            for key in sorted(shard_state):
                v = shard_state[key]
                if key in _SCALAR_STATE_KEYS or not isinstance(v, Tensor):
                    scalars[key] = v
                else:
                    full = np.empty(s.padded, np.float32)
                    self.comm.Allgather(np.ascontiguousarray(v._data, np.float32), full)
                    per_element[key] = full
            ids = []
            for p, lo, hi in zip(s.params, s.offsets[:-1], s.offsets[1:]):
                if shard_state:
                    entry = {k: Tensor._wrap(v[lo:hi].reshape(p._data.shape).copy()) for k, v in per_element.items()}
                    for k, v in scalars.items():
                        entry[k] = Tensor._wrap(np.array(v._data)) if isinstance(v, Tensor) else v
                    state[index] = entry
                ids.append(index)
                index += 1
            groups.append(dict({k: v for k, v in lg.items() if k != "params"}, params=ids))
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Load a plain optimizer's state_dict (from :meth:`state_dict`, at any number of ranks, or from
        a plain optimizer); every rank keeps its own range."""
        if not isinstance(state_dict, dict) or "state" not in state_dict or "param_groups" not in state_dict:
            raise ValueError("state_dict must be a dict with 'state' and 'param_groups' entries")
        saved = state_dict["param_groups"]
        if len(saved) != len(self.shards):
            raise ValueError(f"loaded state dict has {len(saved)} parameter groups, this optimizer has "
                             f"{len(self.shards)}")
        local_groups, local_state = [], {}
        for gi, (s, g) in enumerate(zip(self.shards, saved)):
            if len(g["params"]) != len(s.params):
                raise ValueError(f"loaded state dict's group {gi} has {len(g['params'])} parameters, this "
                                 f"optimizer's has {len(s.params)}")
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
                if key not in _SCALAR_STATE_KEYS:
                    for i, (a, p) in enumerate(zip(arrays, s.params)):
                        if a.shape != p._data.shape:
                            raise ValueError(f"group {gi}: state[{g['params'][i]}][{key!r}] has shape {a.shape}, "
                                             f"its parameter has shape {p._data.shape}")
                    out[key] = s.pack(arrays)[s.lo:s.hi].copy()
                else:  # a scalar such as step: one value for the whole group
                    firsts = {float(a.reshape(-1)[0]) for a in arrays}
                    if len(firsts) != 1 or any(a.size != 1 for a in arrays):
                        raise ValueError(f"group {gi}: state {key!r} differs between parameters; "
                                         "ZeroRedundancyOptimizer keeps one per group")
                    out[key] = arrays[0].reshape(())
            local_state[gi] = out
        self.local_optimizer.load_state_dict({"state": local_state, "param_groups": local_groups})

    def __repr__(self) -> str:
        return (f"ZeroRedundancyOptimizer({self.optimizer_class.__name__}, ranks={self.comm.Get_size()}, "
                f"rank={self.comm.Get_rank()})")

