"""DataLoader(num_workers > 0): worker processes with torch.utils.data's semantics. Kept small: every
loader starts real processes."""
import os
import time

import numpy as np
import pytest

import forgegrad as fg
from forgegrad.data import DataLoader, Dataset, TensorDataset, get_worker_info


class Squares(Dataset):
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return np.float32(i * i), i


class FailsAt(Squares):
    def __init__(self, n, bad):
        super().__init__(n)
        self.bad = bad

    def __getitem__(self, i):
        if i == self.bad:
            raise KeyError(f"no sample {i}")
        return super().__getitem__(i)


class NeedsArgs(Exception):
    def __init__(self, a, b):
        super().__init__(a, b)


class RaisesOdd(Squares):
    def __getitem__(self, i):
        raise NeedsArgs(1, 2)


class WhoLoads(Squares):
    def __getitem__(self, i):
        info = get_worker_info()
        return np.int64(-1 if info is None else info.id), np.int64(os.getpid())


class Slow(Squares):
    def __getitem__(self, i):
        time.sleep(5)
        return super().__getitem__(i)


class Dies(Squares):
    def __getitem__(self, i):
        os._exit(7)


def _init_fail(worker_id):
    raise ValueError(f"init of {worker_id} failed")


def _record_init(worker_id):
    np.random.seed(1000 + worker_id)  # visible in the samples below


class Noise(Squares):
    def __getitem__(self, i):
        return np.float32(np.random.random())


def _as_lists(loader):
    return [[b.numpy().tolist() for b in batch] for batch in loader]


def _children():
    import multiprocessing as mp
    return [p for p in mp.active_children()]


@pytest.mark.parametrize("num_workers", [1, 3])
def test_workers_give_the_same_batches_in_order(num_workers):
    ds = Squares(23)
    ref = _as_lists(DataLoader(ds, batch_size=4))
    assert _as_lists(DataLoader(ds, batch_size=4, num_workers=num_workers, prefetch_factor=1)) == ref
    x = np.arange(40, dtype=np.float32).reshape(20, 2)
    fast = TensorDataset(x, np.arange(20))
    got = _as_lists(DataLoader(fast, batch_size=6, shuffle=True, seed=3, num_workers=2))
    assert got == _as_lists(DataLoader(fast, batch_size=6, shuffle=True, seed=3))
    assert not _children()


def test_batches_are_loaded_in_workers_round_robin():
    batches = list(DataLoader(WhoLoads(8), batch_size=2, num_workers=2))
    ids = [int(b[0].numpy()[0]) for b in batches]
    pids = {int(b[1].numpy()[0]) for b in batches}
    assert ids == [0, 1, 0, 1]
    assert os.getpid() not in pids and len(pids) == 2


def test_worker_exception_is_reraised_with_its_traceback():
    loader = DataLoader(FailsAt(10, 5), batch_size=2, num_workers=2)
    with pytest.raises(KeyError) as info:
        list(loader)
    text = str(info.value)
    assert "Caught KeyError in DataLoader worker process 0 while loading batch 2" in text
    assert "Traceback" in text and "no sample 5" in text and "__getitem__" in text
    assert not _children()


def test_worker_exception_type_that_cannot_be_rebuilt_becomes_runtimeerror():
    with pytest.raises(RuntimeError, match="Caught NeedsArgs in DataLoader worker process"):
        list(DataLoader(RaisesOdd(4), batch_size=2, num_workers=1))
    assert not _children()


def test_worker_init_fn_runs_in_each_worker_and_its_errors_surface():
    got = [b.numpy().tolist() for b in DataLoader(Noise(4), batch_size=1, num_workers=2, worker_init_fn=_record_init)]
    # batch i loads in worker i % 2, whose numpy generator worker_init_fn seeded with 1000 + id
    r0, r1 = np.random.RandomState(1000), np.random.RandomState(1001)
    want = [[np.float32(r0.random_sample())], [np.float32(r1.random_sample())],
            [np.float32(r0.random_sample())], [np.float32(r1.random_sample())]]
    assert got == [[float(w[0])] for w in want]
    with pytest.raises(ValueError, match="init of 0 failed|init of 1 failed"):
        list(DataLoader(Squares(4), num_workers=2, worker_init_fn=_init_fail))
    assert not _children()


def test_workers_are_seeded_per_worker_and_per_epoch():
    loader = DataLoader(Noise(4), batch_size=1, num_workers=2, seed=0)
    e1 = [float(b.numpy()[0]) for b in loader]
    e2 = [float(b.numpy()[0]) for b in loader]
    assert e1[0] != e1[1]  # different workers, different streams
    assert e1 != e2  # a new base seed per epoch
    again = DataLoader(Noise(4), batch_size=1, num_workers=2, seed=0)
    assert [float(b.numpy()[0]) for b in again] == e1


def test_persistent_workers_survive_epochs_and_early_exit():
    loader = DataLoader(WhoLoads(6), batch_size=2, num_workers=2, persistent_workers=True)
    p1 = {int(b[1].numpy()[0]) for b in loader}
    it = iter(loader)
    next(it)  # abandon this epoch half-way
    del it
    p2 = {int(b[1].numpy()[0]) for b in loader}
    assert p1 == p2 and len(p1) == 2
    assert len(_children()) == 2
    del loader
    import gc
    gc.collect()
    assert not _children()


def test_abandoned_iterator_stops_its_workers():
    it = iter(DataLoader(Squares(100), batch_size=2, num_workers=2))
    next(it)
    assert len(_children()) == 2
    del it
    import gc
    gc.collect()
    assert not _children()


def test_timeout_and_dead_worker_raise():
    with pytest.raises(RuntimeError, match="timed out after 0.5 seconds"):
        list(DataLoader(Slow(2), num_workers=1, timeout=0.5))
    with pytest.raises(RuntimeError, match=r"exited unexpectedly with exit code 7"):
        list(DataLoader(Dies(2), num_workers=1))
    assert not _children()


def test_spawn_context():
    ds = Squares(6)
    got = _as_lists(DataLoader(ds, batch_size=4, num_workers=1, multiprocessing_context="spawn"))
    assert got == _as_lists(DataLoader(ds, batch_size=4))


def test_kernels_run_in_forked_workers():
    # forgegrad's thread pool does not survive fork(): the workers must build their own.
    fg.set_num_threads(2)
    x = np.random.default_rng(0).standard_normal((8, 64, 64)).astype(np.float32)

    def mm(batch):
        return batch @ batch

    loader = DataLoader(TensorDataset(x), batch_size=4, num_workers=2, transform=mm,
                        multiprocessing_context="fork")
    got = np.concatenate([b[0].numpy() for b in loader])
    np.testing.assert_array_equal(got, np.concatenate([(fg.Tensor(x[i:i + 4]) @ fg.Tensor(x[i:i + 4])).numpy()
                                                       for i in (0, 4)]))


def test_worker_argument_errors():
    ds = Squares(4)
    with pytest.raises(ValueError, match="num_workers option should be a non-negative integer"):
        DataLoader(ds, num_workers=-1)
    with pytest.raises(ValueError, match="num_workers"):
        DataLoader(ds, num_workers=1.5)
    with pytest.raises(ValueError, match="prefetch_factor option could only be specified"):
        DataLoader(ds, prefetch_factor=2)
    with pytest.raises(ValueError, match="prefetch_factor must be a positive integer"):
        DataLoader(ds, num_workers=1, prefetch_factor=0)
    with pytest.raises(ValueError, match="persistent_workers option needs num_workers > 0"):
        DataLoader(ds, persistent_workers=True)
    with pytest.raises(TypeError, match="persistent_workers must be a bool"):
        DataLoader(ds, num_workers=1, persistent_workers="yes")
    with pytest.raises(TypeError, match="worker_init_fn must be callable"):
        DataLoader(ds, num_workers=1, worker_init_fn=3)
    with pytest.raises(ValueError, match="timeout option should be non-negative"):
        DataLoader(ds, num_workers=1, timeout=-1)
    with pytest.raises(ValueError, match="not one of"):
        DataLoader(ds, num_workers=1, multiprocessing_context="threads")
    with pytest.raises(ValueError, match="multiprocessing_context can only be used"):
        DataLoader(ds, multiprocessing_context="spawn")
    assert DataLoader(ds, num_workers=2).prefetch_factor == 2
    assert DataLoader(ds).prefetch_factor is None
