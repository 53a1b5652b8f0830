"""DataLoader: batches of Tensors from a Dataset (torch.utils.data.DataLoader's arguments)."""
from __future__ import annotations

import numbers
from typing import Callable, Optional

import numpy as np

from ..dtypes import float64
from ..factories import as_tensor
from ..tensor import Tensor, _to_storage
from ._workers import _MultiWorkerIterator, get_worker_info
from .dataset import _batch_fetcher, _resolve_generator

__all__ = ["DataLoader", "default_collate", "get_worker_info"]


# torch's message (torch/utils/data/_utils/collate.py), for a sample of a type it cannot batch
_COLLATE_ERROR = "default_collate: batch must contain tensors, numpy arrays, numbers, dicts or lists; found {}"


def _stack(items):
    """One field of the samples as a batch, with torch's default_collate dtypes: Tensors and numpy arrays keep
    their dtype (torch.stack, torch.as_tensor), numpy scalars take torch.as_tensor's dtype of the list (their
    promotion), Python ints (and bools) give int64 (bool), Python floats float64; strings stay a list."""
    first = items[0]
    if isinstance(first, Tensor):
        return Tensor._wrap_exact(np.stack([t._data for t in items]))
    if isinstance(first, np.ndarray):
        if first.dtype.kind in "SaUO":  # strings, objects: torch refuses them
            raise TypeError(_COLLATE_ERROR.format(first.dtype))
        return Tensor._wrap_exact(np.stack([_to_storage(a, a.dtype) for a in items]))
    if isinstance(first, np.generic):  # a numpy scalar (torch.as_tensor(batch))
        if first.dtype.kind in "SaUO":
            raise TypeError(_COLLATE_ERROR.format(first.dtype))
        return as_tensor(list(items))
    if isinstance(first, float):
        return as_tensor(list(items), dtype=float64)
    if isinstance(first, int):  # (bool included: torch.tensor(batch) gives bool, or int64 for ints)
        return as_tensor(list(items))
    if isinstance(first, str):
        return list(items)
    raise TypeError(_COLLATE_ERROR.format(type(first)))


def default_collate(batch):
    """Stack a list of samples into batch Tensors, keeping the samples' structure.

    ``[(x0, y0), (x1, y1)] -> (Tensor[x0, x1], Tensor[y0, y1])``; dicts are collated per key. The dtypes are
    torch's default_collate's: a Tensor's or numpy array's own dtype (int8 stays int8, float64 float64), numpy
    scalars as ``as_tensor`` of their list, Python ints int64, Python floats float64, bools bool; strings are
    kept as a list.
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
        sampler: an iterable of sample indices with ``__len__`` that sets the order instead (e.g.
            ``forgegrad.distributed.DistributedSampler``); excludes ``shuffle``.
        drop_last: drop the last batch when it is smaller than batch_size.
        collate_fn: list of samples -> batch (default: ``default_collate``).
        generator: randomness for shuffling: None uses forgegrad's global generator (so
            ``forgegrad.manual_seed`` makes the order repeatable), a numpy Generator is used as is.
        seed: shorthand for ``generator=numpy.random.default_rng(seed)``: repeatable epochs that are
            still different from each other.
        transform: batch-level augmentation ``x -> x`` applied to each collated batch's inputs (the
            first field of a tuple batch, or the whole batch otherwise), e.g. a
            ``forgegrad.data.transforms.Compose``; targets pass through unchanged. It runs after
            collation, so one call handles the whole batch.

        num_workers: 0 (default) loads batches in the main process; N > 0 starts N worker
            processes (the default multiprocessing start method, or ``multiprocessing_context``)
            that load, collate and transform batches ahead; batches still come in order. Each
            worker runs forgegrad's kernels on one thread and is seeded as in torch (Python's
            ``random``, numpy's global generator and forgegrad's with ``base_seed + worker_id``;
            see ``get_worker_info()``), so random transforms differ from a num_workers=0 run.
        prefetch_factor: batches loaded ahead per worker (default 2; only with num_workers > 0).
        worker_init_fn: called as ``worker_init_fn(worker_id)`` in each worker before loading.
        persistent_workers: keep the workers between epochs (only with num_workers > 0).
        timeout: seconds to wait for a batch from the workers before RuntimeError (0: forever).
        multiprocessing_context: a start method name ("fork", "spawn", "forkserver") or a
            multiprocessing context. With "spawn" the dataset, collate_fn, transform and
            worker_init_fn must be picklable (defined at module level).

    An exception in a worker is raised in the main process with the same type and the worker's
    traceback in its message; a worker that dies raises RuntimeError. Workers stop when the epoch
    ends, on an error, or when the iterator is garbage collected.

    For a TensorDataset (or a random_split Subset of one) with the default collate_fn, each batch is
    gathered with one fancy-index per array instead of item-by-item collation.
    """

    def __init__(self, dataset, batch_size: int = 1, shuffle: bool = False, drop_last: bool = False,
                 collate_fn: Optional[Callable] = None, generator: Optional[np.random.Generator] = None,
                 seed: Optional[int] = None, transform: Optional[Callable] = None, num_workers: int = 0,
                 prefetch_factor: Optional[int] = None, worker_init_fn: Optional[Callable] = None,
                 persistent_workers: bool = False, timeout: float = 0,
                 multiprocessing_context=None, sampler=None):
        if not (hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")):
            raise TypeError(f"DataLoader: dataset must define __getitem__ and __len__, got {type(dataset).__name__}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
            raise ValueError("DataLoader: batch_size should be a positive integer value, but got "
                             f"batch_size={batch_size!r}")
        if generator is not None and seed is not None:
            raise ValueError("DataLoader: pass either generator or seed, not both")
        if generator is not None and not isinstance(generator, np.random.Generator):
            raise TypeError(f"DataLoader: generator must be a numpy.random.Generator, got {type(generator).__name__}")
        if sampler is not None:
            if shuffle:
                raise ValueError("DataLoader: sampler option is mutually exclusive with shuffle")
            if not (hasattr(sampler, "__iter__") and hasattr(sampler, "__len__")):
                raise TypeError(f"DataLoader: sampler must be an iterable of indices with __len__, got "
                                f"{type(sampler).__name__}")
        self.sampler = sampler
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.collate_fn = collate_fn
        if transform is not None and not callable(transform):
            raise TypeError(f"DataLoader: transform must be callable, got {type(transform).__name__}")
        self.transform = transform
        self._generator = generator if seed is None else _resolve_generator(int(seed), "DataLoader")
        self._set_worker_options(num_workers, prefetch_factor, worker_init_fn, persistent_workers, timeout,
                                 multiprocessing_context)

    def _set_worker_options(self, num_workers, prefetch_factor, worker_init_fn, persistent_workers, timeout,
                            multiprocessing_context):
        if isinstance(num_workers, bool) or not isinstance(num_workers, (int, np.integer)) or num_workers < 0:
            raise ValueError("DataLoader: num_workers option should be a non-negative integer, but got "
                             f"num_workers={num_workers!r}")
        if num_workers == 0 and prefetch_factor is not None:
            raise ValueError("DataLoader: prefetch_factor option could only be specified in multiprocessing; "
                             "let num_workers > 0 to enable multiprocessing, otherwise set prefetch_factor to None")
        if prefetch_factor is None:
            prefetch_factor = 2 if num_workers > 0 else None
        elif isinstance(prefetch_factor, bool) or not isinstance(prefetch_factor, (int, np.integer)) \
                or prefetch_factor < 1:
            raise ValueError(f"DataLoader: prefetch_factor must be a positive integer, got {prefetch_factor!r}")
        if not isinstance(persistent_workers, (bool, np.bool_)):
            raise TypeError(f"DataLoader: persistent_workers must be a bool, got {type(persistent_workers).__name__}")
        if persistent_workers and num_workers == 0:
            raise ValueError("DataLoader: persistent_workers option needs num_workers > 0")
        if worker_init_fn is not None and not callable(worker_init_fn):
            raise TypeError(f"DataLoader: worker_init_fn must be callable, got {type(worker_init_fn).__name__}")
        if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real) or not timeout >= 0:
            raise ValueError(f"DataLoader: timeout option should be non-negative, got {timeout!r}")
        if multiprocessing_context is not None:
            if num_workers == 0:
                raise ValueError("DataLoader: multiprocessing_context can only be used with multi-process loading "
                                 "(num_workers > 0)")
            import multiprocessing as mp
            if isinstance(multiprocessing_context, str):
                if multiprocessing_context not in mp.get_all_start_methods():
                    raise ValueError(f"DataLoader: multiprocessing_context relies on start method "
                                     f"{multiprocessing_context!r}, which is not one of "
                                     f"{mp.get_all_start_methods()}")
            elif not isinstance(multiprocessing_context, mp.context.BaseContext):
                raise TypeError("DataLoader: multiprocessing_context must be a start method name or a "
                                f"multiprocessing context, got {type(multiprocessing_context).__name__}")
        self.num_workers = int(num_workers)
        self.prefetch_factor = None if prefetch_factor is None else int(prefetch_factor)
        self.worker_init_fn = worker_init_fn
        self.persistent_workers = bool(persistent_workers)
        self.timeout = float(timeout)
        self.multiprocessing_context = multiprocessing_context
        self._pool = None  # the persistent workers, once started

    def _seed_generator(self) -> np.random.Generator:
        return self._generator if self._generator is not None else _resolve_generator(None, "DataLoader")

    def __len__(self) -> int:
        n = len(self.dataset) if self.sampler is None else len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _order(self) -> np.ndarray:
        if self.sampler is not None:
            return np.fromiter(self.sampler, dtype=np.int64, count=len(self.sampler))
        n = len(self.dataset)
        if not self.shuffle:
            return np.arange(n, dtype=np.int64)
        gen = self._generator if self._generator is not None else _resolve_generator(None, "DataLoader")
        return gen.permutation(n).astype(np.int64, copy=False)

    def _batches(self):
        order = self._order()
        bs, n = self.batch_size, len(order)
        stop = (n // bs) * bs if self.drop_last else n
        return [order[start:start + bs] for start in range(0, stop, bs)]

    def __iter__(self):
        if self.num_workers > 0:
            return _MultiWorkerIterator(self, self._batches())
        return self._single_process_iter()

    def _single_process_iter(self):
        fetch = _batch_fetcher(self.dataset) if self.collate_fn is None else None
        collate = self.collate_fn or default_collate
        for idx in self._batches():
            if fetch is not None:
                batch = tuple(Tensor._wrap_exact(a) for a in fetch(idx))  # the dataset's dtypes
            else:
                batch = collate([self.dataset[int(i)] for i in idx])
            yield _apply_transform(self.transform, batch)

    def __del__(self):
        pool = getattr(self, "_pool", None)
        if pool is not None:
            self._pool = None
            try:
                pool.shutdown()
            except Exception:
                pass

    def __getstate__(self):  # a loader can be pickled (e.g. into a spawned process) without its workers
        state = dict(self.__dict__)
        state["_pool"] = None
        return state

    def __repr__(self) -> str:
        return (f"DataLoader(dataset={type(self.dataset).__name__}(len={len(self.dataset)}), "
                f"batch_size={self.batch_size}, "
                f"shuffle={self.shuffle}, drop_last={self.drop_last})")


def _apply_transform(transform, batch):
    """The loader's batch-level transform on a collated batch's inputs (its first field)."""
    if transform is None:
        return batch
    if isinstance(batch, (tuple, list)) and batch:
        return (transform(batch[0]),) + tuple(batch[1:])
    return transform(batch)
