"""DataLoader: batches of Tensors from a Dataset (torch.utils.data.DataLoader's arguments)."""
from __future__ import annotations

import numbers
from typing import Callable, Optional

import numpy as np

from ..tensor import Tensor, _to_storage
from .dataset import _batch_fetcher, _resolve_generator

__all__ = ["DataLoader", "default_collate"]


def _stack(items) -> Tensor:
    first = items[0]
    if isinstance(first, Tensor):
        arr = np.stack([t.data for t in items])
    elif isinstance(first, (np.ndarray, np.generic, numbers.Number)):
        arr = np.asarray(np.stack([np.asarray(x) for x in items]))
    else:
        raise TypeError(f"default_collate: cannot batch samples of type {type(first).__name__}; "
                        "samples must be Tensors, numpy arrays, numbers, or tuples/lists/dicts of them")
    return Tensor._wrap(_to_storage(arr))  # float -> float32, ints -> int64, bool stays


def default_collate(batch):
    """Stack a list of samples into batch Tensors, keeping the samples' structure.

    ``[(x0, y0), (x1, y1)] -> (Tensor[x0, x1], Tensor[y0, y1])``; dicts are collated per key. Float
    data becomes float32 and integer data int64.
    """
    if not batch:
        raise ValueError("default_collate: empty batch")
    first = batch[0]
    if isinstance(first, dict):
        return {k: default_collate([s[k] for s in batch]) for k in first}
    if isinstance(first, (tuple, list)):
        sizes = {len(s) for s in batch}
        if len(sizes) != 1:
            raise ValueError(f"default_collate: samples have different numbers of fields: {sorted(sizes)}")
        return tuple(default_collate([s[i] for s in batch]) for i in range(len(first)))
    return _stack(batch)


class DataLoader:
    """Iterates over ``dataset`` in batches of Tensors.

    Args:
        dataset: a Dataset (anything with ``__getitem__`` and ``__len__``).
        batch_size: samples per batch (positive int; default 1 as in torch).
        shuffle: visit the samples in a new random order every epoch.
        drop_last: drop the last batch when it is smaller than batch_size.
        collate_fn: list of samples -> batch (default: ``default_collate``).
        generator: randomness for shuffling: None uses forgegrad's global generator (so
            ``forgegrad.manual_seed`` makes the order repeatable), a numpy Generator is used as is.
        seed: shorthand for ``generator=numpy.random.default_rng(seed)``: repeatable epochs that are
            still different from each other.

    For a TensorDataset (or a random_split Subset of one) with the default collate_fn, each batch is
    gathered with one fancy-index per array instead of item-by-item collation.
    """

    def __init__(self, dataset, batch_size: int = 1, shuffle: bool = False, drop_last: bool = False,
                 collate_fn: Optional[Callable] = None, generator: Optional[np.random.Generator] = None,
                 seed: Optional[int] = None):
        if not (hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")):
            raise TypeError(f"DataLoader: dataset must define __getitem__ and __len__, got {type(dataset).__name__}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
            raise ValueError("DataLoader: batch_size should be a positive integer value, but got "
                             f"batch_size={batch_size!r}")
        if generator is not None and seed is not None:
            raise ValueError("DataLoader: pass either generator or seed, not both")
        if generator is not None and not isinstance(generator, np.random.Generator):
            raise TypeError(f"DataLoader: generator must be a numpy.random.Generator, got {type(generator).__name__}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.collate_fn = collate_fn
        self._generator = generator if seed is None else _resolve_generator(int(seed), "DataLoader")

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _order(self) -> np.ndarray:
        n = len(self.dataset)
        if not self.shuffle:
            return np.arange(n, dtype=np.int64)
        gen = self._generator if self._generator is not None else _resolve_generator(None, "DataLoader")
        return gen.permutation(n).astype(np.int64, copy=False)

    def __iter__(self):
        order = self._order()
        fetch = _batch_fetcher(self.dataset) if self.collate_fn is None else None
        collate = self.collate_fn or default_collate
        bs, n = self.batch_size, len(order)
        stop = (n // bs) * bs if self.drop_last else n
        for start in range(0, stop, bs):
            idx = order[start:start + bs]
            if fetch is not None:
                arrays = fetch(idx)
                yield tuple(Tensor._wrap(a) for a in arrays)
            else:
                yield collate([self.dataset[int(i)] for i in idx])

    def __repr__(self) -> str:
        return (f"DataLoader(dataset={type(self.dataset).__name__}(len={len(self.dataset)}), "
                f"batch_size={self.batch_size}, "
                f"shuffle={self.shuffle}, drop_last={self.drop_last})")
