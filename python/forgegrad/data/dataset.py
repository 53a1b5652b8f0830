"""Datasets with torch.utils.data's names: Dataset, TensorDataset, Subset, ConcatDataset, random_split."""
from __future__ import annotations

import bisect
import math
from typing import List, Sequence, Union

import numpy as np

from .. import random as _random
from ..tensor import Tensor, _to_storage

__all__ = ["Dataset", "TensorDataset", "Subset", "ConcatDataset", "random_split"]


class Dataset:
    """A map-style dataset: subclasses define ``__getitem__(index)`` and ``__len__()``.

    Samples are usually ``(input, target)`` tuples of arrays, Tensors or numbers; DataLoader's
    collation stacks them into batch Tensors.
    """

    def __getitem__(self, index):  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} must implement __getitem__")

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} must implement __len__")

    def __add__(self, other: "Dataset") -> "ConcatDataset":
        return ConcatDataset([self, other])

    # Batched fetch used by DataLoader's fast path: a tuple of arrays, one per field, each indexed
    # by `indices` (an int64 array). None means "not supported, collate item by item".
    def _get_batch(self, indices: np.ndarray):
        return None


class TensorDataset(Dataset):
    """Samples are rows of the given arrays: ``TensorDataset(X, y)[i] == (X[i], y[i])``.

    Args:
        *tensors: forgegrad Tensors or numpy arrays sharing their first dimension. A Tensor keeps its dtype
            (as torch's TensorDataset); a numpy array is stored as ``Tensor`` data was before (float -> float32,
            integers -> int64, no copy when already so), the dtypes models and losses take.
    """

    def __init__(self, *tensors):
        if not tensors:
            raise ValueError("TensorDataset: at least one array is required")
        arrays = []
        for i, t in enumerate(tensors):
            arr = t._data if isinstance(t, Tensor) else _to_storage(t)
            if arr.ndim == 0:
                raise ValueError(f"TensorDataset: array {i} is 0-dimensional; arrays need a first (sample) dimension")
            arrays.append(arr)
        sizes = [a.shape[0] for a in arrays]
        if any(s != sizes[0] for s in sizes):
            raise ValueError(f"TensorDataset: size mismatch between arrays: first dimensions are {sizes}; "
                             "all arrays must have the same number of samples")
        self.arrays = tuple(arrays)

    @property
    def tensors(self):
        """The stored arrays as Tensors (sharing storage), like torch's ``.tensors``."""
        return tuple(Tensor._wrap_exact(a) for a in self.arrays)

    def __getitem__(self, index):
        return tuple(Tensor._wrap_exact(a[index]) for a in self.arrays)  # stored in their final dtype

    def __len__(self) -> int:
        return self.arrays[0].shape[0]

    def _get_batch(self, indices):
        # One fancy-index per array per batch (a copy: batches never alias the dataset).
        return tuple(a[indices] for a in self.arrays)


class Subset(Dataset):
    """The samples of ``dataset`` at ``indices`` (in that order)."""

    def __init__(self, dataset: Dataset, indices: Sequence[int]):
        self.dataset = dataset
        self.indices = np.asarray(indices, dtype=np.int64).reshape(-1)

    def __getitem__(self, idx):
        if isinstance(idx, (list, np.ndarray)):
            return [self.dataset[int(self.indices[i])] for i in idx]
        return self.dataset[int(self.indices[idx])]

    def __len__(self) -> int:
        return len(self.indices)

    def _get_batch(self, indices):
        fetch = _batch_fetcher(self.dataset)
        return None if fetch is None else fetch(self.indices[indices])


class ConcatDataset(Dataset):
    """Datasets one after another."""

    def __init__(self, datasets):
        self.datasets = list(datasets)
        if not self.datasets:
            raise ValueError("ConcatDataset: datasets should not be an empty iterable")
        self.cumulative_sizes = list(np.cumsum([len(d) for d in self.datasets]))

    def __len__(self) -> int:
        return int(self.cumulative_sizes[-1])

    def __getitem__(self, idx):
        if idx < 0:
            if -idx > len(self):
                raise IndexError("ConcatDataset: index out of range")
            idx = len(self) + idx
        d = bisect.bisect_right(self.cumulative_sizes, idx)
        start = 0 if d == 0 else self.cumulative_sizes[d - 1]
        return self.datasets[d][idx - start]


def _batch_fetcher(dataset):
    """dataset._get_batch when it is usable: a subclass overriding __getitem__ (say, to augment)
    must go through __getitem__, so the fast path is only taken for the unmodified classes."""
    if isinstance(dataset, TensorDataset) and type(dataset).__getitem__ is TensorDataset.__getitem__:
        return dataset._get_batch
    if isinstance(dataset, Subset) and type(dataset).__getitem__ is Subset.__getitem__:
        return dataset._get_batch if _batch_fetcher(dataset.dataset) is not None else None
    return None


def _resolve_generator(generator, where: str) -> np.random.Generator:
    """None -> forgegrad's global generator (forgegrad.manual_seed), int -> a fresh seeded one."""
    if generator is None:
        return _random.generator()
    if isinstance(generator, np.random.Generator):
        return generator
    if isinstance(generator, (int, np.integer)) and not isinstance(generator, bool):
        return np.random.default_rng(int(generator))
    raise TypeError(f"{where}: generator must be None, an int seed or a numpy.random.Generator, "
                    f"got {type(generator).__name__}")


def random_split(dataset: Dataset, lengths: Sequence[Union[int, float]], generator=None) -> List[Subset]:
    """Randomly split ``dataset`` into non-overlapping Subsets of the given lengths.

    Args:
        lengths: sizes summing to ``len(dataset)``, or fractions summing to 1 (each split gets
            ``floor(frac * n)`` samples and the remainder is dealt one by one round-robin, as torch does).
        generator: None (forgegrad's global generator, see ``forgegrad.manual_seed``), an int seed,
            or a numpy Generator.
    """
    n = len(dataset)
    lengths = list(lengths)
    if not lengths:
        raise ValueError("random_split: lengths must not be empty")
    if all(isinstance(x, float) for x in lengths) and math.isclose(sum(lengths), 1.0, abs_tol=1e-6) \
            and sum(lengths) <= 1 + 1e-6:
        if any(f < 0 or f > 1 for f in lengths):
            raise ValueError(f"random_split: fractions must be in [0, 1], got {lengths}")
        sizes = [int(math.floor(n * f)) for f in lengths]
        for i in range(n - sum(sizes)):
            sizes[i % len(sizes)] += 1
    else:
        if any(isinstance(x, float) for x in lengths):
            raise ValueError(f"random_split: fractions must all be floats summing to 1, got {lengths} "
                             f"(sum {sum(lengths)})")
        if any(isinstance(x, bool) or not isinstance(x, (int, np.integer)) or x < 0 for x in lengths):
            raise ValueError(f"random_split: lengths must be non-negative ints or fractions, got {lengths}")
        sizes = [int(x) for x in lengths]
        if sum(sizes) != n:
            raise ValueError(f"random_split: sum of input lengths ({sum(sizes)}) does not equal the length of "
                             f"the input dataset ({n})")
    perm = _resolve_generator(generator, "random_split").permutation(n)
    out, start = [], 0
    for size in sizes:
        out.append(Subset(dataset, perm[start:start + size]))
        start += size
    return out
