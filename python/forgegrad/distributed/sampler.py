"""DistributedSampler: each rank's share of a data set's indices, with torch's semantics."""
from __future__ import annotations

import math
from typing import Iterator, Optional

import numpy as np

__all__ = ["DistributedSampler"]


class DistributedSampler:
    """The indices of rank ``rank``'s shard of ``dataset`` (torch.utils.data.DistributedSampler's rules).

    Every epoch the indices ``0 .. len(dataset) - 1`` are shuffled (when ``shuffle``) with a generator
    seeded by ``seed + epoch`` (the same order on every rank: call ``set_epoch(epoch)`` on every rank
    before each epoch, as with torch; ``fit`` does it for loaders that have a sampler), then either
    padded by repeating indices from the start so that every rank gets ``ceil(N / num_replicas)``
    (``drop_last=False``), or cut to ``floor(N / num_replicas)`` per rank (``drop_last=True``). Rank r
    takes every num_replicas-th index starting at r. The order is numpy's permutation, not torch's
    randperm, so shuffled shards differ from torch's; unshuffled shards are identical.

    Args:
        dataset: anything with ``__len__``.
        num_replicas, rank: default to forgegrad.distributed.size() / rank() (which need init()). A model
            trained by a process group ``g`` (or a device mesh's dimension) takes the group's:
            ``num_replicas=get_world_size(g), rank=get_rank(g)`` (torch's way: its sampler has no ``group=``),
            so that the group's ranks split the whole data set between them.
        shuffle, seed, drop_last: as torch.
    """

    def __init__(self, dataset, num_replicas: Optional[int] = None, rank: Optional[int] = None, shuffle: bool = True,
                 seed: int = 0, drop_last: bool = False):
        if not hasattr(dataset, "__len__"):
            raise TypeError(f"DistributedSampler: dataset must have __len__, got {type(dataset).__name__}")
        if num_replicas is None or rank is None:
            from . import comm
            num_replicas = comm.size() if num_replicas is None else num_replicas
            rank = comm.rank() if rank is None else rank
        for name, v in (("num_replicas", num_replicas), ("rank", rank), ("seed", seed)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"DistributedSampler: {name} must be an int, got {type(v).__name__}")
        if num_replicas < 1:
            raise ValueError(f"DistributedSampler: num_replicas must be >= 1, got {num_replicas}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"Invalid rank {rank}, rank should be in the interval [0, {num_replicas - 1}]")
        self.dataset = dataset
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.epoch = 0
        n = len(dataset)
        if self.drop_last and n % self.num_replicas:
            self.num_samples = math.ceil((n - self.num_replicas) / self.num_replicas)
        else:
            self.num_samples = math.ceil(n / self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle for ``epoch`` (the same on every rank)."""
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)):
            raise TypeError(f"DistributedSampler.set_epoch: epoch must be an int, got {type(epoch).__name__}")
        self.epoch = int(epoch)

    def indices(self) -> np.ndarray:
        """This rank's indices for the current epoch, as an int64 array."""
        n = len(self.dataset)
        if self.shuffle:
            order = np.random.default_rng(self.seed + self.epoch).permutation(n).astype(np.int64)
        else:
            order = np.arange(n, dtype=np.int64)
        if not self.drop_last:
            padding = self.total_size - n
            if padding > 0 and n > 0:
                order = np.concatenate([order, np.resize(order, padding)])
        else:
            order = order[:self.total_size]
        return order[self.rank:self.total_size:self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices().tolist())

    def __len__(self) -> int:
        return self.num_samples

    def __repr__(self) -> str:
        return (f"DistributedSampler(len(dataset)={len(self.dataset)}, num_replicas={self.num_replicas}, "
                f"rank={self.rank}, shuffle={self.shuffle}, seed={self.seed}, drop_last={self.drop_last})")
