"""forgegrad.data: TensorDataset, DataLoader (batching, shuffling, collation, fast path), random_split."""
import numpy as np
import pytest

import forgegrad as fg
from forgegrad.data import (ConcatDataset, DataLoader, Dataset, Subset, TensorDataset, default_collate,
                            random_split)


def _xy(n=10, d=3):
    X = np.arange(n * d, dtype=np.float64).reshape(n, d)
    y = np.arange(n, dtype=np.int32)
    return X, y


def test_tensor_dataset_items_and_dtypes():
    X, y = _xy()
    ds = TensorDataset(X, y)
    assert len(ds) == 10
    xi, yi = ds[3]
    assert isinstance(xi, fg.Tensor) and xi.dtype == np.float32 and yi.dtype == np.int64
    np.testing.assert_array_equal(xi._data, X[3])
    assert yi.item() == 3
    ds2 = TensorDataset(fg.tensor(X), fg.tensor(y))
    np.testing.assert_array_equal(ds2[9][0]._data, X[9])
    torch = pytest.importorskip("torch")
    ref = torch.utils.data.TensorDataset(torch.tensor(X), torch.tensor(y))  # Tensors keep their dtypes
    names = [[str(t.dtype).split(".")[-1] for t in sample] for sample in (ds2[9], ref[9])]
    assert names[0] == names[1] == ["float64", "int32"]
    xb, yb = next(iter(DataLoader(ds2, batch_size=4)))
    assert (xb.dtype, yb.dtype) == (fg.float64, fg.int32)
    assert len(ds.tensors) == 2


def test_tensor_dataset_errors():
    with pytest.raises(ValueError, match="size mismatch.*\\[10, 9\\]"):
        TensorDataset(np.zeros((10, 2)), np.zeros(9))
    with pytest.raises(ValueError, match="at least one"):
        TensorDataset()
    with pytest.raises(ValueError, match="0-dimensional"):
        TensorDataset(np.float32(1.0))


def test_loader_batches_in_order_with_last_partial():
    X, y = _xy(10)
    dl = DataLoader(TensorDataset(X, y), batch_size=4)
    batches = list(dl)
    assert len(dl) == 3 and len(batches) == 3
    assert [b[0].shape for b in batches] == [(4, 3), (4, 3), (2, 3)]
    np.testing.assert_array_equal(np.concatenate([b[1]._data for b in batches]), np.arange(10))
    xb, yb = batches[0]
    assert xb.dtype == np.float32 and yb.dtype == np.int64
    assert not xb.requires_grad


def test_drop_last():
    X, y = _xy(10)
    dl = DataLoader(TensorDataset(X, y), batch_size=4, drop_last=True)
    assert len(dl) == 2
    assert [b[0].shape[0] for b in dl] == [4, 4]
    assert len(DataLoader(TensorDataset(X, y), batch_size=11, drop_last=True)) == 0
    assert list(DataLoader(TensorDataset(X, y), batch_size=11, drop_last=True)) == []


def test_batches_do_not_alias_dataset():
    X, y = _xy(6)
    ds = TensorDataset(X.astype(np.float32), y)
    xb, _ = next(iter(DataLoader(ds, batch_size=3)))
    xb._data[...] = -1
    assert ds.arrays[0].min() >= 0


def test_shuffle_is_a_permutation_and_seeded():
    X, y = _xy(50)
    ds = TensorDataset(X, y)
    order = lambda dl: np.concatenate([b[1]._data for b in dl])  # noqa: E731
    dl = DataLoader(ds, batch_size=7, shuffle=True, seed=3)
    e1, e2 = order(dl), order(dl)
    assert sorted(e1) == list(range(50)) and sorted(e2) == list(range(50))
    assert not np.array_equal(e1, np.arange(50))
    assert not np.array_equal(e1, e2)  # a new order every epoch
    dl_again = DataLoader(ds, batch_size=7, shuffle=True, seed=3)
    np.testing.assert_array_equal(order(dl_again), e1)
    np.testing.assert_array_equal(order(dl_again), e2)
    # generator= behaves like seed=
    np.testing.assert_array_equal(order(DataLoader(ds, batch_size=7, shuffle=True,
                                                   generator=np.random.default_rng(3))), e1)


def test_shuffle_uses_global_seed():
    X, y = _xy(30)
    ds = TensorDataset(X, y)
    fg.manual_seed(11)
    a = np.concatenate([b[1]._data for b in DataLoader(ds, batch_size=8, shuffle=True)])
    fg.manual_seed(11)
    b = np.concatenate([b[1]._data for b in DataLoader(ds, batch_size=8, shuffle=True)])
    np.testing.assert_array_equal(a, b)
    assert sorted(a) == list(range(30))


def test_loader_argument_errors():
    ds = TensorDataset(*_xy())
    for bad in (0, -1, 2.5, True, None):
        with pytest.raises(ValueError, match="batch_size should be a positive integer"):
            DataLoader(ds, batch_size=bad)
    with pytest.raises(TypeError, match="__getitem__ and __len__"):
        DataLoader(object())
    with pytest.raises(ValueError, match="either generator or seed"):
        DataLoader(ds, shuffle=True, seed=1, generator=np.random.default_rng(1))
    with pytest.raises(TypeError, match="numpy.random.Generator"):
        DataLoader(ds, shuffle=True, generator=1)


class Squares(Dataset):
    """A map-style dataset that is not a TensorDataset: item-by-item collation."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return np.array([i, i * i], dtype=np.float64), i % 3


def test_generic_dataset_collation():
    batches = list(DataLoader(Squares(5), batch_size=2))
    assert len(batches) == 3
    xb, yb = batches[1]
    assert xb.dtype == np.float64 and yb.dtype == np.int64  # torch's: the arrays' dtype, Python ints int64
    np.testing.assert_array_equal(xb._data, [[2, 4], [3, 9]])
    np.testing.assert_array_equal(yb._data, [2, 0])


_COLLATE_SAMPLES = {
    "python ints": [1, 2], "python floats": [1.0, 2.5], "bools": [True, False], "int then float": [1, 2.5],
    "np.int8": [np.int8(1), np.int8(2)], "np.uint8": [np.uint8(1), np.uint8(2)], "np.int32": [np.int32(1)] * 2,
    "np.float16": [np.float16(1)] * 2, "np.float32": [np.float32(1), np.float32(2)], "np.float64": [np.float64(1)] * 2,
    "np.bool_": [np.bool_(True), np.bool_(False)], "np.int8 then np.int16": [np.int8(1), np.int16(300)],
    "int8 arrays": [np.arange(2, dtype=np.int8)] * 2, "int32 arrays": [np.arange(3, dtype=np.int32)] * 3,
    "float16 arrays": [np.ones(2, np.float16)] * 2, "float64 arrays": [np.ones((2, 3))] * 2,
    "bool arrays": [np.array([True])] * 2, "0-d uint8 arrays": [np.array(3, np.uint8)] * 2,
    "complex64 scalars": [np.complex64(1 + 2j)] * 2,
    "tuples": [(1, 2.0, np.int16(3), np.ones(2, np.float32))] * 2,
    "dicts": [{"a": np.float32(1), "b": 2, "c": 0.5}] * 2,
    "int8 tensors": "int8 tensors", "float64 tensors": "float64 tensors",
}


@pytest.mark.parametrize("name", list(_COLLATE_SAMPLES))
def test_default_collate_dtypes_match_torch(name):
    torch = pytest.importorskip("torch")
    from torch.utils.data import default_collate as torch_collate
    samples = _COLLATE_SAMPLES[name]
    if name == "int8 tensors":
        ours, theirs = ([lib.tensor(np.arange(3, dtype=np.int8) + i) for i in range(2)] for lib in (fg, torch))
    elif name == "float64 tensors":
        ours, theirs = ([lib.tensor(np.ones((2, 2)) * i) for i in range(3)] for lib in (fg, torch))
    else:
        ours = theirs = samples

    def flat(out):
        if isinstance(out, dict):
            return [x for k in sorted(out) for x in flat(out[k])]
        if isinstance(out, (tuple, list)):
            return [x for o in out for x in flat(o)]
        return [(str(out.dtype).split(".")[-1], tuple(out.shape), out.numpy().tolist())]
    assert flat(default_collate(ours)) == flat(torch_collate(theirs))


def test_default_collate_structures():
    out = default_collate([(fg.tensor([1.0]), True), (fg.tensor([2.0]), False)])
    assert out[0].shape == (2, 1) and out[1].dtype == bool
    assert default_collate(["a", "b"]) == ["a", "b"]  # torch keeps strings as a list
    with pytest.raises(TypeError, match="batch must contain tensors, numpy arrays, numbers, dicts or lists"):
        default_collate([np.array(["a"]), np.array(["b"])])
    with pytest.raises(ValueError, match="different numbers of fields"):
        default_collate([(1, 2), (1,)])


def test_custom_collate_fn():
    ds = TensorDataset(*_xy(4))
    dl = DataLoader(ds, batch_size=2, collate_fn=lambda samples: len(samples))
    assert list(dl) == [2, 2]


def test_fast_path_matches_item_collation():
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((23, 4)), rng.integers(0, 5, 23)
    ds = TensorDataset(X, y)

    class Slow(TensorDataset):  # overriding __getitem__ disables the fast path
        calls = 0

        def __getitem__(self, i):
            Slow.calls += 1
            return super().__getitem__(i)

    fast = list(DataLoader(ds, batch_size=5, shuffle=True, seed=1))
    slow = list(DataLoader(Slow(X, y), batch_size=5, shuffle=True, seed=1))
    assert Slow.calls == 23
    for (xf, yf), (xs, ys) in zip(fast, slow):
        np.testing.assert_array_equal(xf._data, xs._data)
        np.testing.assert_array_equal(yf._data, ys._data)
        assert xf.dtype == xs.dtype and yf.dtype == ys.dtype


def test_fast_path_does_one_fancy_index_per_batch(monkeypatch):
    ds = TensorDataset(*_xy(20))
    calls = []
    real = TensorDataset._get_batch
    monkeypatch.setattr(TensorDataset, "_get_batch", lambda self, idx: calls.append(len(idx)) or real(self, idx))
    # any per-item access would fail (patched on the class itself, so the fast path stays enabled)
    monkeypatch.setattr(TensorDataset, "__getitem__", lambda self, i: pytest.fail("per-item access"))
    assert [b[0].shape[0] for b in DataLoader(ds, batch_size=8, shuffle=True, seed=0)] == [8, 8, 4]
    assert calls == [8, 8, 4]


def test_random_split_lengths_and_fractions():
    ds = TensorDataset(*_xy(10))
    a, b = random_split(ds, [7, 3], generator=0)
    assert isinstance(a, Subset) and (len(a), len(b)) == (7, 3)
    ids = sorted(int(a[i][1].item()) for i in range(7)) + sorted(int(b[i][1].item()) for i in range(3))
    assert sorted(ids) == list(range(10))
    assert set(ids[:7]).isdisjoint(ids[7:])
    parts = random_split(ds, [0.5, 0.3, 0.2], generator=0)
    assert [len(p) for p in parts] == [5, 3, 2]
    parts = random_split(TensorDataset(*_xy(11)), [0.34, 0.33, 0.33], generator=0)
    assert sum(len(p) for p in parts) == 11 and [len(p) for p in parts] == [4, 4, 3]


def test_random_split_seeded():
    ds = TensorDataset(*_xy(20))
    idx = lambda s: s.indices.tolist()  # noqa: E731
    assert idx(random_split(ds, [15, 5], generator=4)[0]) == idx(random_split(ds, [15, 5], generator=4)[0])
    fg.manual_seed(2)
    first = idx(random_split(ds, [0.5, 0.5])[1])
    fg.manual_seed(2)
    assert idx(random_split(ds, [0.5, 0.5])[1]) == first


def test_random_split_errors():
    ds = TensorDataset(*_xy(10))
    with pytest.raises(ValueError, match="does not equal the length"):
        random_split(ds, [5, 4])
    with pytest.raises(ValueError, match="fractions"):
        random_split(ds, [0.5, 0.2])
    with pytest.raises(ValueError, match="non-negative"):
        random_split(ds, [11, -1])
    with pytest.raises(TypeError, match="generator"):
        random_split(ds, [5, 5], generator="seed")


def test_subset_of_tensor_dataset_uses_batched_fetch():
    X, y = _xy(12)
    train, _ = random_split(TensorDataset(X, y), [8, 4], generator=0)
    batches = list(DataLoader(train, batch_size=3))
    got = np.concatenate([b[1]._data for b in batches])
    np.testing.assert_array_equal(got, train.indices)
    np.testing.assert_array_equal(np.concatenate([b[0]._data for b in batches]), X[train.indices])


def test_concat_dataset():
    a, b = TensorDataset(*_xy(3)), TensorDataset(*_xy(2))
    c = a + b
    assert isinstance(c, ConcatDataset) and len(c) == 5
    assert c[3][1].item() == 0 and c[-1][1].item() == 1
    ys = np.concatenate([yb._data for _, yb in DataLoader(c, batch_size=2)])
    np.testing.assert_array_equal(ys, [0, 1, 2, 0, 1])
