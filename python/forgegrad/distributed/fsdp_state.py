"""FullyShardedDataParallel's checkpoints: ``state_dict()`` gathers one unit at a time and returns the plain
model's names and full arrays; ``load_state_dict`` takes one (from any number of ranks, or the unwrapped model)
and keeps each rank's slices. Both are collective (fsdp.py has the units, gathers and shards they use)."""
from __future__ import annotations

import numpy as np

from ..tensor import Tensor

__all__ = ["ShardedStateDict"]


class ShardedStateDict:
    """The state_dict methods of FullyShardedDataParallel (it comes before Module in the wrapper's bases)."""

    def state_dict(self, destination=None, prefix: str = "", keep_vars: bool = False):
        """The plain module's state_dict (its own names, full arrays, copies), gathered one unit at a
        time. Collective: call it on every rank."""
        own = self.module.state_dict(keep_vars=True)
        out = self.module.state_dict(destination, prefix)
        for unit in self.units:
            was = unit.gathered
            self._gather(unit)
            ids = {id(p) for p in unit.params}
            for k, v in own.items():
                if id(v) in ids:
                    out[prefix + k] = Tensor._wrap(v._data.copy())
            if not was:
                self._free(unit)
        return out

    def load_state_dict(self, state_dict, strict: bool = True):
        """Load the plain module's state_dict (e.g. from :meth:`state_dict` at any number of ranks, or
        from the unwrapped model); each rank keeps its slices. Collective."""
        if not hasattr(state_dict, "items"):
            raise TypeError(f"Expected state_dict to be dict-like, got {type(state_dict).__name__}")
        own = self.module.state_dict(keep_vars=True)
        sharded = {k for k, v in own.items() if id(v) in self._unit_of}
        rest = {k: v for k, v in state_dict.items() if k not in sharded}
        if strict:
            missing = [k for k in own if k not in state_dict]
            unexpected = [k for k in state_dict if k not in own]
            if missing or unexpected:
                raise RuntimeError(f"Error(s) in loading state_dict for {type(self.module).__name__}: missing keys "
                                   f"{missing}, unexpected keys {unexpected}")
        for k in sharded & set(state_dict):
            v = state_dict[k]
            shape = np.shape(v._data if isinstance(v, Tensor) else v)
            if shape != own[k].shape:
                raise RuntimeError(f"size mismatch for {k}: copying a param with shape {shape} from checkpoint, "
                                   f"the shape in current model is {own[k].shape}.")
        for unit in self.units:
            given = []
            for p in unit.params:
                key = next((k for k, v in own.items() if v is p and k in state_dict), None)
                given.append(None if key is None else state_dict[key])
            needs_current = any(v is None for v in given)
            if needs_current or unit.gathered:  # a key absent (strict=False): keep the parameter's current values
                self._gather(unit)  # (a gather in flight is waited for: it would overwrite what is written here)
            values = [p._data if v is None else np.asarray(v._data if isinstance(v, Tensor) else v)
                      for p, v in zip(unit.params, given)]
            flat = unit.pack(values)
            unit.shard[...] = flat[unit.lo:unit.hi]
            if unit.gathered:
                unit.full[...] = flat
            if needs_current and not self._in_backward:
                self._free(unit)
        if rest:
            self.module.load_state_dict(rest, strict=False)
